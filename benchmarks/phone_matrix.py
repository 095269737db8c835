"""Every call's phone export at a small configuration (or some at their published size), on every target and at
every precision, in one table.

Runs `stylert export CALL --random-init ... --target T --precision P` (seeded random weights; each command checks
its files on their own runtime against PyTorch and fails past tolerance) and gathers what each wrote: the error
against PyTorch, the file size, the convolutions XNNPACK runs, ONNX Runtime's NNAPI / Core ML MLProgram
partitions; a refused export keeps its one-line reason. Nothing is asserted.

    python benchmarks/phone_matrix.py --out /tmp/phones --json matrix.json --markdown matrix.md
    python benchmarks/phone_matrix.py --size full --precisions fp32 --out /tmp/phones-full --markdown full.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from stylert.tools.bench import machine, write_json

SMALL = {  # call -> its export options at a small configuration (the test suite's kind)
    "retouch": "retouch --random-init --seed 5 --resolution 32 --channel-base 256 --channel-max 16 --w-dim 16",
    "generator": "generator --random-init --seed 7 --resolution 16 --channel-base 128 --channel-max 16 --w-dim 16 "
                 "--mapping-layers 2 --with-mapping",
    "restore QC": "restore --random-init --seed 3 --resolution 32 --channel-base 256 --channel-max 16 --w-dim 16 "
                  "--q-dim 4",
    "restore VSP": "restore --method vsp --random-init --seed 3 --resolution 32 --channel-base 2048 "
                   "--encoder-units 1,1,1,1 --encoder-size 16",
    "inpaint EXE-GAN": "inpaint --method exe-gan --random-init --seed 5 --resolution 32 --channel-base 1024 "
                       "--channel-max 32 --encoder-units 1,1,1,1 --encoder-size 16",
    "inpaint GRIG": "inpaint --method grig --random-init --seed 5 --resolution 64 --ngf 8 --dim 8 --blocks 1,1,1,1 "
                    "--refinement 1",
    "stylize": "stylize --random-init --seed 4 --style cartoon --with-local --resolution 32 --channel-base 256 "
               "--channel-max 32 --w-dim 32 --encoder-units 1,1,1,1 --encoder-size 32 --local-width 8",
    "edit": "edit --random-init --seed 6 --resolution 32 --bank-resolution 32 --channel-base 1024 "
            "--encoder-units 1,1,1,1 --encoder-size 32 --aggregation-channels 8",
}
FULL = {  # call -> its export options at the published size (the retoucher's: benchmarks/mobile.py)
    "generator": "generator --random-init --seed 7 --resolution 1024 --with-mapping",
    "restore QC": "restore --random-init --seed 3 --resolution 256",
    "restore VSP": "restore --method vsp --random-init --seed 3 --resolution 256",
    "inpaint GRIG": "inpaint --method grig --random-init --seed 5 --resolution 256",
    "inpaint EXE-GAN": "inpaint --method exe-gan --random-init --seed 5 --resolution 256",
    "stylize": "stylize --random-init --seed 4 --style cartoon --with-local --resolution 1024",
    "edit": "edit --random-init --seed 6 --resolution 256 --bank-resolution 1024",
}
SUFFIX = {"ort-mobile": ".ort", "executorch": ".pte", "ncnn": ".ncnn.param"}


def export(options: str, target: str, precision: str, folder: Path) -> dict:
    """One export: its status, seconds, last stderr line, and the report of every file it wrote."""
    where = ["--pack", str(folder)] if options.startswith("stylize") else ["-o", str(folder)]
    command = [sys.executable, "-m", "stylert.cli", "export", *options.split(), *where, "--target", target,
               "--precision", precision]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    row = {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - start, 1), "files": {}}
    if done.returncode:
        row["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    for report in sorted(folder.glob(f"*{SUFFIX[target]}.json")):
        r = json.loads(report.read_text())
        row["files"][report.name[:-5]] = {k: r.get(k) for k in ("rel", "floor", "size_bytes", "convs",
                                                                 "delegated_convs", "partitions")}
    return row


def cell(row: dict, name: str) -> str:
    f = row["files"][name]
    against = f" vs float64 (PyTorch float32: {f['floor']:.1e})" if f.get("floor") is not None else ""
    text = f"{f['rel']:.1e}{against}, {f['size_bytes'] / 2 ** 20:.2f} MiB"
    if f.get("convs") is not None:
        text += f", XNNPACK {f['delegated_convs']}/{f['convs']} convs"
    for ep, p in (f.get("partitions") or {}).items():
        text += f", {'NNAPI' if ep == 'NNAPI' else 'Core ML'} {p['supported']}/{p['nodes']} in {p['partitions']}"
    return text


def markdown(rows: dict, info: dict, size: str) -> str:
    lines = [f"Phone exports at {'small configurations' if size == 'small' else 'published sizes'} (seeded random "
             f"weights) on {info['cpu']}, {info['cores']} cores, "
             f"onnxruntime {info['onnxruntime']}. Each cell: relative error against PyTorch (against PyTorch in "
             "float64 where the model's own float32 round-off is measured, as for the VSP restorer), file size, the "
             "convolutions XNNPACK runs (.pte), the nodes NNAPI and Core ML MLProgram take and their partitions "
             "(.ort, with the conditions ONNX Runtime's tables state checked).", "",
             "| call | target | precision | file | result |", "| --- | --- | --- | --- | --- |"]
    for (call, target, precision), row in rows.items():
        if not row["ok"]:
            lines.append(f"| {call} | {target} | {precision} | | refused: {row['error']} |")
        for name in row["files"]:
            lines.append(f"| {call} | {target} | {precision} | `{name}` | {cell(row, name)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the exported files")
    parser.add_argument("--size", choices=["small", "full"], default="small",
                        help=f"small: every call's test-suite configuration; full: {', '.join(FULL)} at their "
                             "published sizes")
    parser.add_argument("--calls", nargs="*", choices=list(SMALL), metavar="CALL", help="default: every call of --size")
    parser.add_argument("--targets", nargs="*", default=list(SUFFIX), choices=list(SUFFIX))
    parser.add_argument("--precisions", nargs="*", default=["fp32", "fp16", "int8"], choices=["fp32", "fp16", "int8"],
                        help="each where the target offers it")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    from stylert_export.mobile import PRECISIONS

    configs = SMALL if args.size == "small" else FULL
    unknown = set(args.calls or ()) - set(configs)
    if unknown:
        parser.error(f"--size {args.size} has no configuration for {', '.join(sorted(unknown))}")
    rows = {}
    for target in args.targets:
        for precision in [p for p in args.precisions if p in PRECISIONS[target]]:
            for call in args.calls or list(configs):
                folder = Path(args.out) / f"{target}-{precision}" / call.replace(" ", "-")
                rows[(call, target, precision)] = row = export(configs[call], target, precision, folder)
                print(f"{call}, {target} {precision}: {'ok' if row['ok'] else row['error']} ({row['seconds']} s)",
                      flush=True)
    info = machine()
    table = markdown(rows, info, args.size)
    print(table)
    result = {"schema": "stylert.bench.phone_matrix/1", "machine": info, "size": args.size,
              "rows": [{"call": c, "target": t, "precision": p, **row} for (c, t, p), row in rows.items()]}
    if args.json:
        write_json(args.json, result, indent=1)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return result


if __name__ == "__main__":
    main()
