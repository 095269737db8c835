"""The 256x256 retoucher's layer kinds one at a time on ONNX Runtime desktop and on ExecuTorch's XNNPACK, from the
same weights in one run: where the fp32 .pte's time goes on this CPU.

Each layer, at its shape in the config-F retoucher (batch 1, seeded random weights, a fixed random style), is
written as an .onnx file (what stylert's runtime reads) and as a .pte (the phone export's XNNPACK lowering), checked
against each other, and each file timed in a fresh child process (benchmarks/mobile.py's: cold start, p50, p99,
peak memory): 3x3 convolutions and upsampling layers (stride-2 transposed conv, then the FIR), as the models write
them. A layer's .pte converts its input and output between NCHW and XNNPACK's NHWC, which a whole network does
once. Nothing is asserted.

    python benchmarks/phone_layers.py --out /tmp/layers --json layers.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from mobile import child
from stylert.tools.bench import in_child, machine, write_json

LAYERS = {  # name -> (in channels, out channels, input side, up)
    "3x3 conv, 128 ch at 256": (128, 128, 256, 1),
    "3x3 conv, 256 ch at 128": (256, 256, 128, 1),
    "3x3 conv, 512 ch at 64": (512, 512, 64, 1),
    "up 512->512 ch, 32->64": (512, 512, 32, 2),
    "up 512->256 ch, 64->128": (512, 256, 64, 2),
    "up 256->128 ch, 128->256": (256, 128, 128, 2),
}


def layer(cin: int, cout: int, up: int, seed: int):
    """One modulated conv layer (modulate, conv, demodulate) as the networks compute it, its style fixed."""
    import torch
    from stylert_export.ops.modconv import modulated_conv2d
    from stylert_export.ops.upfirdn2d import setup_filter

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.weight = torch.nn.Parameter(torch.randn(cout, cin, 3, 3, generator=g) / math.sqrt(cin * 9))
            self.register_buffer("styles", torch.randn(1, cin, generator=g))
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

        def forward(self, x):
            return modulated_conv2d(x, self.weight, self.styles, up=up, padding=1,
                                    resample_filter=self.resample_filter)

    return Layer().eval().requires_grad_(False)


def build(name: str, spec: tuple, folder: Path, seed: int) -> dict:
    """The layer's .onnx and .pte in `folder`, and the .pte's error against the .onnx on a seeded input."""
    import onnxruntime as ort
    import torch
    from stylert_export.mobile import _run_pte, _write_pte
    from stylert_export.onnx_export import export_module

    cin, cout, side, up = spec
    module = layer(cin, cout, up, seed)
    example = {"x": torch.from_numpy(np.random.default_rng(seed).standard_normal((1, cin, side, side),
                                                                                   dtype=np.float32))}
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, pte_path = folder / "layer.onnx", folder / "layer.pte"
    export_module(module, example, ["y"], onnx_path, metadata={"stylert.benchmark": name}, dynamic_batch=False)
    convs, delegated = _write_pte(module, example, pte_path, "fp32")
    pte_path.with_name(pte_path.name + ".json").write_text(json.dumps(
        {"inputs": [["x", list(example["x"].shape), "float32"]], "precision": "fp32"}))  # what mobile.child reads
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": example["x"].numpy()})[0]
    got = _run_pte(pte_path, example)[0]
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    return {"onnx": onnx_path, "pte": pte_path, "rel": rel, "convs": f"{delegated}/{convs}"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the exported files")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    rows = {}
    for k, (name, spec) in enumerate(LAYERS.items()):
        files = build(name, spec, Path(args.out) / f"layer{k}", seed=k)
        rows[name] = {"rel": files["rel"], "convs on XNNPACK": files["convs"],
                      **{runtime: in_child(child, str(files[suffix]), args.iters, args.warmup)
                         for runtime, suffix in (("onnxruntime", "onnx"), ("executorch", "pte"))}}
        print(f"{name}: built, .pte vs .onnx {files['rel']:.1e}", flush=True)
    info = machine()
    print(f"\none layer at a time, batch 1, {args.iters} timed runs after {args.warmup} warm-up, each file in a fresh "
          f"process; machine: {info['cpu']}, {info['cores']} cores, onnxruntime {info['onnxruntime']}")
    header = (f"{'layer':26} {'ORT p50':>8} {'p99':>7} {'cold':>7} {'MB':>5} {'XNN p50':>8} {'p99':>7} {'cold':>7} "
              f"{'MB':>5} {'XNN/ORT':>7} {'rel':>8}")
    print(header + "\n" + "-" * len(header))
    for name, r in rows.items():
        o, x = r["onnxruntime"], r["executorch"]
        if "error" in o or "error" in x:
            print(f"{name:26} error: {o.get('error') or x.get('error')}")
            continue
        print(f"{name:26} {o['p50_ms']:8.1f} {o['p99_ms']:7.1f} {o['cold_start_ms']:7.0f} {o['peak_rss_mb']:5.0f} "
              f"{x['p50_ms']:8.1f} {x['p99_ms']:7.1f} {x['cold_start_ms']:7.0f} {x['peak_rss_mb']:5.0f} "
              f"{x['p50_ms'] / o['p50_ms']:6.2f}x {r['rel']:8.1e}")
    result = {"schema": "stylert.bench.phone_layers/1", "machine": info, "iters": args.iters, "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
