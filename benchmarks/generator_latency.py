"""Latency of an exported StyleGAN2 generator beside its PyTorch reference, in one run.

Rows (each in a fresh child process, so cold start and peak memory are its own):
- pytorch weight form: the research code's arithmetic (grouped conv, per-sample weights) = the reference;
- pytorch activation form: the same model in the form we export;
- onnxruntime-cpu: the exported graph, through the stylert runtime (no torch in that process).

    python benchmarks/generator_latency.py G.onnx [--checkpoint CKPT] [--batch 1] [--iters 30] [--json OUT]

Reports cold start (load + first run), p50, p99, mean, min, throughput and peak RSS, with
the machine. Numbers are what this machine measured; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time

import numpy as np


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def _inputs(meta: dict, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if meta["stylert.with_mapping"] == "true":
        return {"z": rng.standard_normal((batch, int(meta["stylert.z_dim"]))).astype(np.float32),
                "truncation_psi": np.full(batch, 0.7, np.float32)}
    return {"ws": rng.standard_normal((batch, int(meta["stylert.num_ws"]), int(meta["stylert.w_dim"]))).astype(np.float32)}


def _measure(load, step, warmup: int, iters: int) -> dict:
    start = time.perf_counter()
    run = load()
    step(run)
    cold = time.perf_counter() - start
    for _ in range(warmup):
        step(run)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step(run)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {"cold_start_ms": cold * 1000, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "iters": iters,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(backend: str, args: dict, queue) -> None:
    try:
        import stylert
        model_path, batch = args["model"], args["batch"]
        meta = stylert.OnnxModel(model_path, ["cpu"]).metadata
        feeds = _inputs(meta, batch)
        if backend == "onnxruntime-cpu":
            def load():
                return stylert.OnnxModel(model_path, ["cpu"], threads=args["threads"])

            def step(model):
                model.run(feeds)
        else:
            import torch
            from stylert_export.generator import rebuild_reference
            if args["threads"]:
                torch.set_num_threads(args["threads"])
            form = backend.split()[1]
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

            def load():
                return rebuild_reference(model_path, args["checkpoint"]).eval()

            def step(g):
                with torch.no_grad():
                    ws = g.z_to_ws(tensors["z"], tensors["truncation_psi"]) if "z" in tensors else tensors["ws"]
                    g(ws, form=form)
        queue.put(_measure(load, step, args["warmup"], args["iters"]))
    except Exception as exc:  # reported in the table, the other rows still run
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


BACKENDS = ["pytorch weight", "pytorch activation", "onnxruntime-cpu"]
LABELS = {"pytorch weight": "pytorch, weight form (reference)", "pytorch activation": "pytorch, activation form",
          "onnxruntime-cpu": "onnxruntime-cpu (stylert)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--checkpoint", help="the checkpoint the graph was exported from (not needed for --random-init)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = library default)")
    parser.add_argument("--json", help="write the results here")
    args = vars(parser.parse_args())

    import stylert
    meta = stylert.OnnxModel(args["model"], ["cpu"]).metadata
    ctx = mp.get_context("spawn")
    results = {}
    for backend in BACKENDS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(backend, args, queue))
        proc.start()
        results[backend] = queue.get()
        proc.join()

    info = machine()
    res = meta["stylert.resolution"]
    print(f"\nStyleGAN2 generator {res}x{res}, {meta['stylert.source']}, batch {args['batch']}, "
          f"{args['iters']} timed runs after {args['warmup']} warm-up")
    print(f"machine: {info['cpu']}, {info['cores']} cores, onnxruntime {info['onnxruntime']}")
    if meta.get("stylert.trained") == "false":
        print("weights: random (untrained) - latency is meaningful, images are not")
    ref = results["pytorch weight"].get("p50_ms")
    header = f"{'backend':34} {'cold ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'img/s':>8} {'peak MB':>8} {'vs ref':>7}"
    print(header)
    print("-" * len(header))
    for backend, r in results.items():
        if "error" in r:
            print(f"{LABELS[backend]:34} error: {r['error']}")
            continue
        ratio = f"{ref / r['p50_ms']:.2f}x" if ref else "-"
        print(f"{LABELS[backend]:34} {r['cold_start_ms']:9.1f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['mean_ms']:9.2f} "
              f"{args['batch'] * 1000 / r['p50_ms']:8.1f} {r['peak_rss_mb']:8.0f} {ratio:>7}")
    if args["json"]:
        with open(args["json"], "w") as f:
            json.dump({"schema": "stylert.bench.generator/1", "machine": info, "model": meta, "batch": args["batch"],
                       "results": results}, f, indent=2)
        print(f"wrote {args['json']}")


if __name__ == "__main__":
    main()
