"""The documentation's benchmark plots, made from the JSON in benchmarks/results (one command, no measuring):

    python benchmarks/plots.py [--results benchmarks/results] [--out docs/pages/img]

For every suite run (`suite.py`, schema stylert.suite/1) a bar chart of the network's p50 latency per call and
resolution: the PyTorch reference beside ONNX Runtime and OpenVINO, from the same run; for every `serve_load.py`
run (stylert.serve_load/1) requests per second and p50 latency against the number of clients. The machine is in
each title. Writes PNG files named after the results folder; prints what it wrote.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BACKENDS = [("reference", "PyTorch reference", "#999999"), ("onnxruntime-cpu", "ONNX Runtime CPU", "#1f77b4"),
            ("openvino", "OpenVINO", "#ff7f0e")]


def machine_line(mach: dict) -> str:
    isa = "avx512" if "avx512f" in mach.get("cpu_flags", []) else "avx2" if mach.get("cpu_flags") else "?"
    extra = f", OpenVINO {mach['openvino']}" if mach.get("openvino") else ""
    return f"{mach['cpu']}, {mach['cores']} cores ({isa}); onnxruntime {mach['onnxruntime']}{extra}"


def p50(row: dict, key: str) -> float | None:
    """A suite row's p50 for the reference or a backend (older rows hold ONNX Runtime's as ort_p50_ms)."""
    if key == "reference":
        return row["reference_p50_ms"]
    if "backends" in row:
        return row["backends"].get(key, {}).get("p50_ms")
    return row.get("ort_p50_ms") if key == "onnxruntime-cpu" else None


def plot_suite(data: dict, title: str, out: Path) -> None:
    rows = data["rows"]
    labels = [f"{r['call']}\n{r['resolution']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    width = 0.27
    for k, (key, name, color) in enumerate(BACKENDS):
        values = [p50(r, key) for r in rows]
        if all(v is None for v in values):
            continue
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar([x for x, v in zip(xs, values) if v], [v for v in values if v], width, label=name, color=color)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("network p50, ms (batch 1)")
    ax.set_yscale("log")
    ax.set_title(f"{title}\n{machine_line(data['machine'])}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_serve(data: dict, title: str, out: Path) -> None:
    runs = sorted(data["runs"], key=lambda r: r["concurrency"])
    clients = [r["concurrency"] for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(clients, [r["requests_per_s"] for r in runs], "o-", label="stylert serve")
    a.axhline(data["single_call"]["requests_per_s"], color="#999999", ls="--", label="single call in process")
    a.set_xlabel("concurrent clients")
    a.set_ylabel("requests / s")
    a.set_xscale("log", base=2)
    a.legend(fontsize=8)
    b.plot(clients, [r["p50_ms"] for r in runs], "o-", label="p50")
    b.plot(clients, [r["p99_ms"] for r in runs], "s--", label="p99")
    b.set_xlabel("concurrent clients")
    b.set_ylabel("latency, ms")
    b.set_xscale("log", base=2)
    b.legend(fontsize=8)
    fig.suptitle(f"{title}\n{machine_line(data['machine'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "pages" / "img"))
    args = parser.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(results.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        name = "-".join(path.relative_to(results).with_suffix("").parts)
        if data.get("schema") == "stylert.suite/1" and data.get("rows"):
            target = out / f"{name}.png"
            plot_suite(data, f"suite: {path.parent.relative_to(results)}", target)
        elif data.get("schema") == "stylert.serve_load/1" and data.get("runs"):
            target = out / f"{name}.png"
            plot_serve(data, f"stylert serve under load: {path.stem}", target)
        else:
            continue
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
