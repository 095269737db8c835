"""The winograd flavour of a call's graph beside the portable one, on the CPU backends, in one run.

Exports the call (seeded random weights) as `--flavor portable` (the reference) and `--flavor winograd` (3x3 convs of
256+ channels in Winograd's F(4x4,3x3) form: export/stylert_export/ops/winograd.py), each checked against PyTorch
by the export, then times both graphs on ONNX Runtime's CPU and on OpenVINO (where it is installed; f32, and bf16
on a CPU with native bf16) with
`stylert bench`'s measurement: every row in a fresh child process (cold start = load + first run, p50, p99, peak
RSS), each row's output against ONNX Runtime f32 on the same graph, and the two graphs' outputs against each other
on the same seeded inputs. An --out folder from an earlier run is timed again as it is. Nothing is asserted.

`layers` times one 3x3 convolution at a time, direct and in the form, on ONNX Runtime's CPU (both in this process,
--iters runs each after 2 warm-up): the measurement behind the bounds (MIN_CHANNELS, MIN_PIXELS) below which the
flavour leaves a convolution direct, to be taken again on another CPU.

    python benchmarks/winograd.py retouch --resolution 256 --out /tmp/wino256 --json results.json
    python benchmarks/winograd.py layers --out /tmp/winolayers --json layers.json
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from latency import measure
from mobile import exporter
from stylert.runtime.model import cpu_flags
from stylert.runtime.precision import native_bf16
from stylert.tools.bench import bench, feeds_for, machine, write_json

FLAVORS = ("portable", "winograd")
LAYERS = [(16, 16, 512), (32, 32, 512), (64, 64, 256), (128, 128, 256), (128, 128, 128), (128, 128, 64),
          (256, 256, 128), (256, 256, 64), (256, 256, 32), (256, 256, 16), (512, 512, 64), (512, 512, 32),
          (512, 512, 16), (512, 512, 8)]  # (in channels, out channels, side), batch 1, padding 1


def layers(out: Path, iters: int) -> dict:
    """Each of LAYERS as a direct and a Winograd-form graph on ONNX Runtime's CPU: p50s, speed-up, error."""
    import onnxruntime as ort
    import torch
    from stylert_export.onnx_export import export_module
    from stylert_export.ops.winograd import WinogradForm

    rows = []
    for k, (cin, cout, side) in enumerate(LAYERS):
        g = torch.Generator().manual_seed(k)
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1).eval().requires_grad_(False)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (9 * cin) ** 0.5)
        x = {"x": torch.randn(1, cin, side, side, generator=g)}
        outputs, times = [], []
        for name, form in (("direct", None), ("winograd", WinogradForm(min_channels=1, min_pixels=1))):
            path = export_module(conv, x, ["y"], out / f"layer{k}-{name}.onnx", metadata={}, dynamic_batch=False,
                                 form=form)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feed = {"x": x["x"].numpy()}
            times.append(measure(lambda: session, lambda s: s.run(None, feed), 2, iters))
            outputs.append(session.run(None, feed)[0].astype(np.float64))
        rel = float(np.linalg.norm(outputs[1] - outputs[0]) / np.linalg.norm(outputs[0]))
        rows.append({"in": cin, "out": cout, "side": side, "direct": times[0], "winograd": times[1], "rel": rel})
        print(f"{cin:4d} -> {cout:4d} at {side:3d}x{side:<3d}  direct p50 {times[0]['p50_ms']:7.2f} ms  winograd "
              f"{times[1]['p50_ms']:7.2f} ms  {times[0]['p50_ms'] / times[1]['p50_ms']:5.2f}x  rel {rel:.1e}",
              flush=True)
    return {"schema": "stylert.bench.winograd_layers/1", "machine": machine(), "iters": iters, "rows": rows}


def flavours(args: argparse.Namespace) -> dict:
    """The call's two graphs, exported if not in --out already, timed on the CPU backends and compared."""
    import stylert
    from stylert.errors import UntrainedWeightsWarning

    out = Path(args.out)
    files = {flavor: out / f"{args.call}-{flavor}.onnx" for flavor in FLAVORS}
    export = exporter(args.call, args.resolution, args.channel_base)
    for flavor, path in files.items():
        if not path.exists():
            start = time.perf_counter()
            export(path, flavor=flavor)
            print(f"exported the {flavor} graph in {time.perf_counter() - start:.0f} s", flush=True)
    backends = ["onnxruntime-cpu"]
    if "openvino" in stylert.resolve_providers():
        backends += ["openvino"] + (["openvino-bf16"] if native_bf16(cpu_flags()) else [])
    report = bench([str(p) for p in files.values()], backends, [args.batch], threads=args.threads,
                   warmup=args.warmup, duration=args.duration, precision="f32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        models = {flavor: stylert.open_model(str(path), "onnxruntime-cpu") for flavor, path in files.items()}
        feeds = feeds_for(models["portable"].metadata, args.batch)
        ref, got = (next(iter(models[flavor].run(feeds).values())).astype(np.float64) for flavor in FLAVORS)
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))

    info = report["machine"]
    print(f"\n{args.call} {args.resolution}x{args.resolution}, channel base {args.channel_base}, random weights, "
          f"batch {args.batch}, {args.duration:.0f} s of timed runs per row after {args.warmup:.0f} s of warm-up")
    print(f"machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['cpu_flags'])}), onnxruntime "
          f"{info['onnxruntime']}, openvino {info.get('openvino', '-')}")
    header = (f"{'flavor':9} {'backend':16} {'MiB':>6} {'cold ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'runs':>5} "
              f"{'peak MB':>8} {'vs portable':>11} {'vs ORT f32 (8-bit)':>18} {'parity vs PyTorch':>17}")
    print(header + "\n" + "-" * len(header))
    base = {r["backend"]: r.get("p50_ms") for r in report["models"][0]["rows"]}
    for flavor, entry in zip(FLAVORS, report["models"]):
        size, parity = Path(entry["path"]).stat().st_size / 2 ** 20, entry["metadata"]["stylert.parity_rel"]
        for r in entry["rows"]:
            if "error" in r:
                print(f"{flavor:9} {r['backend']:16} error: {r['error']}")
                continue
            speed = f"{base[r['backend']] / r['p50_ms']:.2f}x" if base.get(r["backend"]) else "-"
            err = r.get("error_vs_f32") or {}
            levels = f"{err['max_levels']}/255, {err['psnr_db']:.1f} dB" if err else "-"
            print(f"{flavor:9} {r['backend']:16} {size:6.1f} {r['cold_start_ms']:8.0f} {r['p50_ms']:8.1f} "
                  f"{r['p99_ms']:8.1f} {r['runs']:5d} {r['peak_rss_mb']:8.0f} {speed:>11} {levels:>18} "
                  f"{float(parity):17.1e}")
    print(f"winograd output vs portable output on ONNX Runtime, same inputs: relative {rel:.1e}")
    result = {"schema": "stylert.bench.winograd/1", "call": args.call, "resolution": args.resolution,
              "channel_base": args.channel_base, "bench": report, "winograd_vs_portable_rel": rel}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("call", choices=["retouch", "generator", "edit", "layers"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--channel-base", type=int, default=32768, help="32768: config-F widths")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per row")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of timed runs per row (at least 5)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the backend's)")
    parser.add_argument("--out", required=True, help="folder for the exported graphs")
    parser.add_argument("--iters", type=int, default=20, help="layers: timed runs of each graph")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    result = layers(Path(args.out), args.iters) if args.call == "layers" else flavours(args)
    if args.json:
        write_json(args.json, result)
    return result

if __name__ == "__main__":
    main()
