"""`make demo`: export a 256x256 retoucher (seeded random weights), retouch a real photo, time every stage beside the
PyTorch reference, and end with what was made and what to try next.

    python benchmarks/demo.py [--out out/demo] [--iters 10]

Writes OUT/astronaut.png (scikit-image's photo), OUT/retouch256.onnx, OUT/retouched/astronaut.png with the BAFS
spatial masks of every level beside it, and OUT/latency.json (benchmarks/latency.py's report).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import latency


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per latency row")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    from skimage import data

    import stylert
    from stylert.faces.imageio import write_image
    from stylert_export import retouch_export as rx

    warnings.simplefilter("ignore", stylert.UntrainedWeightsWarning)
    print("stylert demo: the weights are seeded random (untrained) - no trained face-GAN weights can be downloaded "
          "here - so the face comes out as coloured noise by design. The latency is real.\n", flush=True)
    photo = write_image(out / "astronaut.png", data.astronaut())
    model = out / "retouch256.onnx"
    print(f"1. export: a StyleRetoucher at 256x256, config-F widths -> {model}", flush=True)
    rx.export_retoucher(rx.from_random_init(0, 256), model, with_masks=True, log=lambda line: print(f"   {line}"))

    retouched = out / "retouched" / "astronaut.png"
    print(f"2. retouch: {photo} -> {retouched}", flush=True)
    r = stylert.Retoucher(model)
    result = r.process_file(photo, retouched, 0.8, with_masks=True)
    for k, extras in enumerate(result.extras):
        for name, mask in extras.items():
            if name.startswith("mask_spatial_"):
                gray = np.clip(np.rint(mask[0] * 255), 0, 255).astype(np.uint8)
                write_image(retouched.with_name(f"astronaut.face{k}.{name}.png"), np.repeat(gray[:, :, None], 3, 2),
                            grayscale=True)
    print(f"   {len(result.faces)} face(s) on {r.model.backend}; stages (ms): "
          + ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items()), flush=True)

    print("3. latency: the network beside its PyTorch reference, then the whole photo per stage", flush=True)
    report = latency.main([str(model), "--pipeline", str(photo), "--iters", str(args.iters),
                           "--json", str(out / "latency.json")])
    ref, ort = (report["network"][k].get("p50_ms") for k in ("pytorch weight", "onnxruntime-cpu"))
    total = (report["pipeline"] or {}).get("total", {}).get("p50_ms")
    mach = report["machine"]
    print("\nSummary")
    print(f"  outputs:  {out}/ (retouch256.onnx; retouched/astronaut.png and its BAFS masks; latency.json)")
    if ref and ort:
        print(f"  latency:  network p50 {ort:.0f} ms on ONNX Runtime against {ref:.0f} ms for the PyTorch reference "
              f"({ref / ort:.2f}x)" + (f"; whole photo {total:.0f} ms" if total else "")
              + f" - {mach['cpu']}, {mach['cores']} cores")
    print(f"  next:     stylert retouch YOUR_PHOTO.jpg -o out/ --model {model} --strength 0.8")
    print(f"            stylert serve {model}   (then open http://127.0.0.1:8000/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
