"""OpenVINO f32 against bf16 on one graph, their runs alternated in one process.

On a machine shared with other work, two `stylert bench` rows run minutes apart can see different loads; here both
precisions are opened side by side and run in turns (f32, bf16, f32, ...), so a change of load falls on both alike
and their ratio holds. Also the output's error of bf16 against f32 on the same inputs, on the 8-bit scale inside the
region the call writes (runtime/precision.output_error). Needs a CPU with native bf16 (avx512_bf16 or amx_bf16).

    python benchmarks/precision.py MODEL.onnx [MODEL.onnx ...] [--rounds 8] [--json OUT]

Nothing is asserted.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from stylert import open_model
from stylert.errors import StylertError, UntrainedWeightsWarning
from stylert.runtime.feeds import feeds_for
from stylert.runtime.precision import image_output, output_error, written_region
from stylert.tools.bench import machine, write_json


def alternate(path: str, rounds: int) -> dict:
    """p50 and min of each precision over `rounds` alternated runs (batch 1, after one untimed run of each)."""
    models = {p: open_model(path, "openvino", precision=p) for p in ("f32", "bf16")}
    feeds = feeds_for(models["f32"].metadata, 1, path)
    outputs = {p: m.run(feeds) for p, m in models.items()}
    times: dict[str, list[float]] = {p: [] for p in models}
    for _ in range(rounds):
        for p, m in models.items():
            start = time.perf_counter()
            m.run(feeds)
            times[p].append((time.perf_counter() - start) * 1000)
    index = image_output(models["f32"].outputs)
    name = models["f32"].outputs[index].name if index is not None else None
    error = None if name is None else output_error(outputs["f32"][name], outputs["bf16"][name], written_region(feeds))
    p50 = {p: float(np.median(v)) for p, v in times.items()}
    return {"path": path, "rounds": rounds, "ms": times, "p50_ms": p50, "min_ms": {p: min(v) for p, v in times.items()},
            "bf16_speedup": p50["f32"] / p50["bf16"], "bf16_error": None if error is None else error.__dict__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UntrainedWeightsWarning)
    report = {"machine": machine(), "models": []}
    for path in args.models:
        try:
            row = alternate(path, args.rounds)
        except StylertError as exc:  # no native bf16 here, a file that is not a model
            sys.exit(f"precision.py: error: {exc}")
        report["models"].append(row)
        print(f"{path}: f32 {row['p50_ms']['f32']:.0f} ms, bf16 {row['p50_ms']['bf16']:.0f} ms (p50 of "
              f"{args.rounds}): bf16 {row['bf16_speedup']:.2f}x; bf16 vs f32 {row['bf16_error']}")
    if args.json:
        write_json(args.json, report, indent=1)


if __name__ == "__main__":
    main()
