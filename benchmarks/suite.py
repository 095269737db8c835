"""The comparison suite behind the README's performance table, in one command.

For each call (generator = the bare config-F StyleGAN2 synthesis network; retouch, restore =
QC-StyleGAN, stylize; restore-vsp = the visual-style-prompt restorer, public at 512, run at 256 and
512 only; inpaint-exe = EXE-GAN's generator graph; inpaint-grig = one GRIG step at 256, and
inpaint-grig-3steps the same graph run three times per timed iteration, its default; edit = FACEMUG at 256,
untrained) and resolution: export a seeded random-init model at config-F channel counts (cached in
--work), then run `stylert bench` on it --repeats times, each time with the PyTorch reference beside
ONNX Runtime and OpenVINO (when installed) and the whole-photo stages on a real photo per backend.
OpenVINO's output is compared with ONNX Runtime's on the same input (relative L2 error).
A stylize row is its pack's encoder plus one style's generator (their p50s added); its
whole-photo row runs both. Every figure in the table is the median over the repeats; a row is
flagged noisy when its p50s spread more than 10% across repeats or a run's p99 exceeds 1.5x its
p50. The machine (CPU, cores, library versions, GPU when present) is recorded with the results.

    python benchmarks/suite.py [--calls generator,retouch,restore,stylize,restore-vsp,inpaint-exe,inpaint-grig,
                               inpaint-grig-3steps,edit] [--resolutions 256,512,1024] [--repeats 3] [--out DIR] [--photo IMG]

Writes OUT/suite.json (every bench report) and OUT/suite.md (the table). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from stylert.tools.bench import bench, feeds_for, in_child, machine

NOISY_SPREAD = 0.10
NOISY_TAIL = 1.5
VSP_MAX = 512  # the public VSP restorer works at 512; its graph there is already 1.67 GB (ONNX files stop at 2 GB)
ONLY = {"inpaint-grig": (256,), "inpaint-grig-3steps": (256,), "edit": (256,)}  # GRIG's and FACEMUG's size
NO_PHOTO_BATCH = ("generator", "inpaint-exe", "inpaint-grig", "inpaint-grig-3steps", "edit")  # no process_batch row


def export_models(call: str, res: int, work: Path) -> list[Path]:
    """The graphs one row times (exported once, then reused)."""
    from stylert_export import edit_export, generator, inpaint_export, restore_export, retouch_export, stylize_export

    work.mkdir(parents=True, exist_ok=True)
    quiet = dict(log=lambda *_: None)
    if call == "stylize":
        pack = work / f"stylize{res}"
        if not (pack / "stylepack.json").exists():
            stylize_export.export_pack(stylize_export.from_random_init(0, res, ["cartoon"]), pack, **quiet)
        return [pack / "encoder.onnx", pack / "cartoon.onnx"]
    exporters = {
        "generator": lambda p: generator.export_generator(generator.from_random_init(0, res), p, **quiet),
        "retouch": lambda p: retouch_export.export_retoucher(retouch_export.from_random_init(0, res), p, **quiet),
        "restore": lambda p: restore_export.export_restorer(restore_export.from_random_init(0, res), p, **quiet),
        "restore-vsp": lambda p: restore_export.export_restorer(restore_export.vsp_from_random_init(0, res), p, **quiet),
        "inpaint-exe": lambda p: inpaint_export.export_exe_gan(inpaint_export.exe_from_random_init(0, res), p, **quiet),
        "inpaint-grig": lambda p: inpaint_export.export_grig(inpaint_export.grig_from_random_init(0, res), p, **quiet),
        "edit": lambda p: edit_export.export_edit(edit_export.from_random_init(0, res), p, **quiet),
    }
    call = call.removesuffix("-3steps")  # the same GRIG step graph, run three times per timed iteration
    if call not in exporters:
        raise ValueError(f"unknown call {call!r}")
    path = work / f"{call.replace('-', '_')}{res}.onnx"
    if not path.exists():
        exporters[call](path)
    return [path]


def _agreement(models: list[str], out) -> None:
    from stylert.runtime.model import open_model

    errors = []
    for path in models:
        ort = open_model(path, "onnxruntime-cpu")
        feeds = feeds_for(ort.metadata, 1)
        want, got = ort.run(feeds), open_model(path, "openvino").run(feeds)
        errors += [float(np.linalg.norm(got[k] - want[k]) / max(np.linalg.norm(want[k]), 1e-12)) for k in want]
    out.put(max(errors))


def openvino_agreement(models: list[str]) -> float:
    """Largest relative L2 error of OpenVINO's outputs against ONNX Runtime's, one input (in a child process)."""
    return in_child(_agreement, models)


def _photo_throughput(models: list[str], photo: str, batches: list[int], count: int, out) -> None:
    import time

    from stylert.faces.imageio import read_image
    from stylert.calls.restore import Restorer
    from stylert.calls.retouch import Retoucher
    from stylert.runtime.model import open_model
    from stylert.calls.stylize import Stylizer

    meta = open_model(models[-1], "onnxruntime-cpu").metadata
    call = meta["stylert.call"]
    model = (Stylizer(Path(models[-1]).parent, "onnxruntime-cpu") if call == "stylize" else
             {"retouch": Retoucher, "restore": Restorer}[call](models[-1], "onnxruntime-cpu"))
    value = meta["stylert.style"] if call == "stylize" else model.default_value
    rgb = read_image(photo).rgb
    photos = [rgb if i % 2 == 0 else np.ascontiguousarray(rgb[:, ::-1]) for i in range(count)]
    model.process_batch(photos[:max(batches)], value, channels="rgb")  # warm-up at the largest batch
    rates = {}
    for batch in batches:
        start = time.perf_counter()
        for i in range(0, count, batch):
            results = model.process_batch(photos[i:i + batch], value, channels="rgb", max_batch=batch)
            assert all(len(r.faces) == 1 for r in results)
        rates[batch] = count / (time.perf_counter() - start)
    out.put(rates)


def photo_throughput(models: list[str], photo: str, batches: list[int], count: int = 8) -> dict:
    """Whole photos per second on ONNX Runtime CPU, `batch` photos per process_batch call (child process)."""
    return in_child(_photo_throughput, models, photo, batches, count)


def machine_folder(mach: dict) -> str:
    """A results folder name for this machine: cpu-amd-epyc-2core-avx2, cpu-intel-xeon-processor-2core-avx512, ..."""
    name = "".join(c if c.isalnum() else "-" for c in mach["cpu"].lower().replace("(r)", "")).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    isa = "avx512" if "avx512f" in mach.get("cpu_flags", []) else "avx2"
    return f"cpu-{name}-{mach['cores']}core-{isa}"


def summarize(call: str, res: int, reports: list[dict], backends: list[str]) -> dict:
    """Medians over repeats of the summed network p50 per backend and reference, and of the whole-photo stages."""
    def network(report, backend, key="p50_ms"):
        return sum(next(r[key] for r in m["rows"] if r["backend"] == backend) for m in report["models"])

    ref = [network(r, "torch") for r in reports]
    row = {"call": call, "resolution": res, "repeats": len(reports),
           "gflop": sum(m["gflop_per_image"] or 0 for m in reports[0]["models"]),
           "reference_p50_ms": statistics.median(ref), "backends": {}}
    noisy = False
    for backend in backends:
        p50 = [network(r, backend) for r in reports]
        tails = [network(r, backend, "p99_ms") / network(r, backend) for r in reports]
        spread = (max(p50) - min(p50)) / statistics.median(p50)
        photo = [p for r in reports for m in r["models"] if (p := m.get("pipelines", {}).get(backend))]
        stages = {k: statistics.median(p["stages"][k]["p50_ms"] for p in photo) for k in photo[0]["stages"]} \
            if photo else {}
        row["backends"][backend] = {
            "p50_ms": statistics.median(p50), "p99_ms": statistics.median(network(r, backend, "p99_ms") for r in reports),
            "speedup": statistics.median(ref) / statistics.median(p50), "spread": spread,
            "photo_stages_ms": stages,
            "photo_total_ms": statistics.median(p["total"]["p50_ms"] for p in photo) if stages else None}
        noisy = noisy or spread > NOISY_SPREAD or max(tails) > NOISY_TAIL
    row["spread"] = max(b["spread"] for b in row["backends"].values())
    row["noisy"] = noisy
    return row


def table(rows: list[dict], mach: dict) -> str:
    ov = "openvino" in rows[0]["backends"]
    flags = ", ".join(mach.get("cpu_flags", [])) or "?"
    lines = [f"Machine: {mach['cpu']} ({flags}), {mach['cores']} cores, Python {mach['python']}, onnxruntime "
             f"{mach['onnxruntime']}" + (f", OpenVINO {mach['openvino']}" if ov else "") +
             f"; batch 1, random weights at config-F sizes; medians of {rows[0]['repeats']} runs.",
             "",
             "| call | R | GFLOP | PyTorch reference p50 ms | ONNX Runtime CPU p50 / p99 ms | speed-up | "
             + ("OpenVINO p50 / p99 ms | OpenVINO vs ORT | OV rel. error | " if ov else "")
             + "whole photo ms, ORT (detect / align / network / paste) | " + ("whole photo ms, OpenVINO | " if ov else "")
             + "spread |",
             "| --- | ---: | ---: | ---: | ---: | ---: | " + ("---: | ---: | ---: | " if ov else "") + "---: | "
             + ("---: | " if ov else "") + "---: |"]
    for r in rows:
        o = r["backends"]["onnxruntime-cpu"]
        s = o["photo_stages_ms"]
        photo = (f"{o['photo_total_ms']:.0f} ({s.get('detect', 0):.0f} / {s.get('align', 0):.0f} / "
                 f"{s.get('network', 0):.0f} / {s.get('paste', 0):.0f})") if s else "-"
        cells = [r["call"], str(r["resolution"]), f"{r['gflop']:.0f}", f"{r['reference_p50_ms']:.0f}",
                 f"{o['p50_ms']:.0f} / {o['p99_ms']:.0f}", f"{o['speedup']:.2f}x"]
        if ov:
            v = r["backends"]["openvino"]
            cells += [f"{v['p50_ms']:.0f} / {v['p99_ms']:.0f}", f"{o['p50_ms'] / v['p50_ms']:.2f}x",
                      f"{r['openvino_rel_error']:.1e}"]
        cells.append(photo)
        if ov:
            cells.append(f"{r['backends']['openvino']['photo_total_ms']:.0f}" if r["backends"]["openvino"]["photo_stages_ms"] else "-")
        cells.append(f"{r['spread'] * 100:.0f}%" + (" noisy" if r["noisy"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    batched = [r for r in rows if r.get("photos_per_s")]
    if batched:
        sizes = sorted({int(b) for r in batched for b in r["photos_per_s"]})
        lines += ["", "Whole photos per second on ONNX Runtime CPU (the astronaut and its mirror image, one face "
                  "each), `process_batch` with N photos per call:", "",
                  "| call | R | " + " | ".join(f"batch {n}" for n in sizes) + " | gain |",
                  "| --- | ---: | " + " | ".join("---:" for _ in sizes) + " | ---: |"]
        for r in batched:
            rate = {int(k): v for k, v in r["photos_per_s"].items()}
            lines.append(f"| {r['call']} | {r['resolution']} | " + " | ".join(f"{rate[n]:.2f}" for n in sizes)
                         + f" | {rate[sizes[-1]] / rate[sizes[0]]:.2f}x |")
    return "\n".join(lines) + "\n"


def write(out: Path, mach: dict, rows: list[dict], raw: list[dict]) -> None:
    (out / "suite.json").write_text(json.dumps({"schema": "stylert.suite/1", "machine": mach, "rows": rows,
                                                "runs": raw}, indent=1))
    (out / "suite.md").write_text(table(rows, mach))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="generator,retouch,restore,stylize,restore-vsp,inpaint-exe,inpaint-grig,"
                                           "inpaint-grig-3steps,edit")
    parser.add_argument("--resolutions", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo-batch", type=lambda t: [int(v) for v in t.split(",") if v], default=[1, 4],
                        help="whole photos per process_batch call to compare, e.g. 1,4 (empty: skip)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs per bench row")
    parser.add_argument("--photo", help="the whole-photo input (default: scikit-image's astronaut)")
    parser.add_argument("--work", default="out/suite", help="where the exported models are kept")
    parser.add_argument("--out", help="results folder (default: benchmarks/results/<this machine>)")
    args = parser.parse_args(argv)
    photo = args.photo
    if photo is None:
        from skimage import data

        from stylert.faces.imageio import write_image
        photo = str(write_image(Path(args.work) / "astronaut.png", data.astronaut()))
    backends = ["onnxruntime-cpu"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    rows, raw = [], []
    out = Path(args.out or f"benchmarks/results/{machine_folder(machine())}")
    out.mkdir(parents=True, exist_ok=True)
    mach = machine()
    for call in args.calls.split(","):
        for res in (int(r) for r in args.resolutions.split(",")):
            if (call == "restore-vsp" and res > VSP_MAX) or res not in ONLY.get(call, (res,)):
                continue
            loops = 3 if call.endswith("-3steps") else 1
            models = [str(p) for p in export_models(call, res, Path(args.work))]
            reports = []
            for i in range(args.repeats):
                print(f"{call} {res}: run {i + 1}/{args.repeats}", file=sys.stderr, flush=True)
                reports.append(bench(models, backends, [1], reference=True, pipeline=photo, duration=args.duration,
                                     loops=loops))
            rows.append(summarize(call, res, reports, backends))
            if "openvino" in backends:
                rows[-1]["openvino_rel_error"] = openvino_agreement(models)
            if call not in NO_PHOTO_BATCH and args.photo_batch:
                rows[-1]["photos_per_s"] = photo_throughput(models, photo, args.photo_batch)
            raw.append({"call": call, "resolution": res, "reports": reports})
            print(table(rows[-1:], reports[0]["machine"]).splitlines()[4], flush=True)  # this row of the main table
            write(out, mach, rows, raw)  # after every row: an interrupted suite keeps what it measured
    print(table(rows, mach))
    print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
