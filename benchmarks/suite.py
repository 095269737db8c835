"""The comparison suite behind the README's performance table, in one command.

For each call (retouch, restore = QC-StyleGAN, stylize; restore-vsp = the visual-style-prompt
restorer, public at 512, run at 256 and 512 only) and resolution: export a seeded random-init model at
config-F channel counts (cached in --work), then run `stylert bench` on it --repeats times, each
time with the PyTorch reference beside ONNX Runtime and the whole-photo stages on a real photo.
A stylize row is its pack's encoder plus one style's generator (their p50s added); its
whole-photo row runs both. Every figure in the table is the median over the repeats; a row is
flagged noisy when its p50s spread more than 10% across repeats or a run's p99 exceeds 1.5x its
p50. The machine (CPU, cores, library versions, GPU when present) is recorded with the results.

    python benchmarks/suite.py [--calls retouch,restore,stylize,restore-vsp] [--resolutions 256,512,1024]
                               [--repeats 3] [--out benchmarks/results/cpu-xeon-2core] [--photo IMG]

Writes OUT/suite.json (every bench report) and OUT/suite.md (the table). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from stylert.bench import bench, machine

NOISY_SPREAD = 0.10
NOISY_TAIL = 1.5
VSP_MAX = 512  # the public VSP restorer works at 512; its graph there is already 1.67 GB (ONNX files stop at 2 GB)


def export_models(call: str, res: int, work: Path) -> list[Path]:
    """The graphs one row times (exported once, then reused)."""
    from stylert_export import restore_export, retouch_export, stylize_export

    work.mkdir(parents=True, exist_ok=True)
    quiet = dict(log=lambda *_: None)
    if call == "stylize":
        pack = work / f"stylize{res}"
        if not (pack / "stylepack.json").exists():
            stylize_export.export_pack(stylize_export.from_random_init(0, res, ["cartoon"]), pack, **quiet)
        return [pack / "encoder.onnx", pack / "cartoon.onnx"]
    exporters = {
        "retouch": lambda p: retouch_export.export_retoucher(retouch_export.from_random_init(0, res), p, **quiet),
        "restore": lambda p: restore_export.export_restorer(restore_export.from_random_init(0, res), p, **quiet),
        "restore-vsp": lambda p: restore_export.export_restorer(restore_export.vsp_from_random_init(0, res), p, **quiet),
    }
    if call not in exporters:
        raise ValueError(f"unknown call {call!r}")
    path = work / f"{call.replace('-', '_')}{res}.onnx"
    if not path.exists():
        exporters[call](path)
    return [path]


def summarize(call: str, res: int, reports: list[dict]) -> dict:
    """Medians over repeats of the summed network p50 (ORT and reference), and of the whole-photo stages."""
    def network(report, backend, key="p50_ms"):
        return sum(next(r[key] for r in m["rows"] if r["backend"] == backend) for m in report["models"])

    ort = [network(r, "onnxruntime-cpu") for r in reports]
    ref = [network(r, "torch") for r in reports]
    tails = [network(r, "onnxruntime-cpu", "p99_ms") / network(r, "onnxruntime-cpu") for r in reports]
    photo = [next(m["pipeline"] for m in r["models"] if m["pipeline"]) for r in reports]
    stages = {k: statistics.median(p["stages"][k]["p50_ms"] for p in photo) for k in photo[0]["stages"]}
    spread = (max(ort) - min(ort)) / statistics.median(ort)
    return {"call": call, "resolution": res, "repeats": len(reports),
            "gflop": sum(m["gflop_per_image"] or 0 for m in reports[0]["models"]),
            "ort_p50_ms": statistics.median(ort), "ort_p99_ms": statistics.median(
                network(r, "onnxruntime-cpu", "p99_ms") for r in reports),
            "reference_p50_ms": statistics.median(ref), "speedup": statistics.median(ref) / statistics.median(ort),
            "spread": spread, "noisy": spread > NOISY_SPREAD or max(tails) > NOISY_TAIL,
            "photo_stages_ms": stages, "photo_total_ms": statistics.median(p["total"]["p50_ms"] for p in photo)}


def table(rows: list[dict], mach: dict) -> str:
    lines = [f"Machine: {mach['cpu']}, {mach['cores']} cores, Python {mach['python']}, onnxruntime "
             f"{mach['onnxruntime']}; batch 1, random weights at config-F sizes; medians of {rows[0]['repeats']} runs.",
             "",
             "| call | R | GFLOP | PyTorch reference p50 ms | ONNX Runtime CPU p50 / p99 ms | speed-up | "
             "whole photo ms (detect / align / network / paste) | spread |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        s = r["photo_stages_ms"]
        flag = " noisy" if r["noisy"] else ""
        lines.append(f"| {r['call']} | {r['resolution']} | {r['gflop']:.0f} | {r['reference_p50_ms']:.0f} | "
                     f"{r['ort_p50_ms']:.0f} / {r['ort_p99_ms']:.0f} | {r['speedup']:.2f}x | "
                     f"{r['photo_total_ms']:.0f} ({s.get('detect', 0):.0f} / {s.get('align', 0):.0f} / "
                     f"{s.get('network', 0):.0f} / {s.get('paste', 0):.0f}) | {r['spread'] * 100:.0f}%{flag} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="retouch,restore,stylize,restore-vsp")
    parser.add_argument("--resolutions", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs per bench row")
    parser.add_argument("--photo", help="the whole-photo input (default: scikit-image's astronaut)")
    parser.add_argument("--work", default="out/suite", help="where the exported models are kept")
    parser.add_argument("--out", default="benchmarks/results/cpu-xeon-2core")
    args = parser.parse_args(argv)
    photo = args.photo
    if photo is None:
        from skimage import data

        from stylert.imageio import write_image
        photo = str(write_image(Path(args.work) / "astronaut.png", data.astronaut()))
    rows, raw = [], []
    for call in args.calls.split(","):
        for res in (int(r) for r in args.resolutions.split(",")):
            if call == "restore-vsp" and res > VSP_MAX:
                continue
            models = [str(p) for p in export_models(call, res, Path(args.work))]
            reports = []
            for i in range(args.repeats):
                print(f"{call} {res}: run {i + 1}/{args.repeats}", file=sys.stderr, flush=True)
                reports.append(bench(models, ["onnxruntime-cpu"], [1], reference=True, pipeline=photo,
                                     duration=args.duration))
            rows.append(summarize(call, res, reports))
            raw.append({"call": call, "resolution": res, "reports": reports})
            print(table(rows[-1:], reports[0]["machine"]).splitlines()[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mach = machine()
    (out / "suite.json").write_text(json.dumps({"schema": "stylert.suite/1", "machine": mach, "rows": rows,
                                                "runs": raw}, indent=1))
    (out / "suite.md").write_text(table(rows, mach))
    print(table(rows, mach))
    print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
