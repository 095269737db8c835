"""Latency of an exported stylert graph beside its PyTorch reference, in one run.

Rows (each in a fresh child process, so cold start and peak memory are its own):
- pytorch, weight form: the research code's arithmetic (grouped conv, per-sample weights) = the reference;
- pytorch, activation form: the same model in the form we export;
- onnxruntime-cpu: the exported graph, through the stylert runtime (no torch in that process).
With --pipeline IMAGE, the whole-photo path of a retouch or restore model per stage (decode, detect, align,
network, paste, encode) on that photo, in the ONNX Runtime process.

    python benchmarks/latency.py MODEL.onnx [--checkpoint CKPT] [--batch 1] [--iters 30]
                                 [--pipeline photo.jpg] [--json OUT]

Reports cold start (load + first run), p50, p99, mean, min, throughput and peak RSS, with the
machine; the graph's work (GFLOP per image, from the ONNX graph) and the achieved rate against a
matmul ceiling measured on the same backend in the same run. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

from stylert.errors import UntrainedWeightsWarning
from stylert.tools.bench import feeds_for, in_child, machine, peak_rss_mb, percentiles, pipeline_stages


def measure(load, step, warmup: int, iters: int) -> dict:
    start = time.perf_counter()
    state = load()
    step(state)
    cold = time.perf_counter() - start
    for _ in range(warmup):
        step(state)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step(state)
        times.append((time.perf_counter() - t) * 1000)
    return {"cold_start_ms": cold * 1000, **percentiles(times),
            "peak_rss_mb": peak_rss_mb()}


def torch_backend(meta: dict, args: dict, form: str):
    from stylert_export.references import build

    feeds = feeds_for(meta, args["batch"])
    return (lambda: build(args["model"], args["checkpoint"], args["threads"] or None, form=form)), (lambda run: run(feeds))


def child(backend: str, args: dict, queue) -> None:
    warnings.simplefilter("ignore", UntrainedWeightsWarning)  # said once, by main()
    try:
        import stylert
        meta = stylert.open_model(args["model"], "cpu").metadata
        if backend == "pipeline":
            queue.put(pipeline_stages(args["model"], args["pipeline"], args["pipeline_iters"], args["warmup"],
                                      args["threads"] or None))
            return
        if backend == "onnxruntime-cpu":
            feeds = feeds_for(meta, args["batch"])
            load, step = (lambda: stylert.open_model(args["model"], "cpu", threads=args["threads"] or None)), (lambda m: m.run(feeds))
        else:
            load, step = torch_backend(meta, args, backend.split()[1])
        queue.put(measure(load, step, args["warmup"], args["iters"]))
    except Exception as exc:  # reported in the table; the other rows still run
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


BACKENDS = {"pytorch weight": "pytorch, weight form (reference)", "pytorch activation": "pytorch, activation form",
            "onnxruntime-cpu": "onnxruntime-cpu (stylert)"}


def main(argv: list[str] | None = None) -> dict:
    """Measure, print the table, and return what --json would hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--checkpoint", help="the checkpoint the graph was exported from (not needed for --random-init)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = library default)")
    parser.add_argument("--pipeline", metavar="IMAGE", help="also time the whole-photo path on this photo")
    parser.add_argument("--pipeline-iters", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    args = vars(parser.parse_args(argv))

    import stylert
    from stylert.tools.graph_cost import graph_cost, matmul_ceiling

    # children first (each spawned: its own cold start and peak memory), before this process grows
    results = {backend: in_child(child, backend, args) for backend in BACKENDS}
    pipeline = in_child(child, "pipeline", args) if args["pipeline"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        meta = stylert.open_model(args["model"], "cpu").metadata
    cost = graph_cost(args["model"])
    ceiling = matmul_ceiling(threads=args["threads"] or None)

    info = machine()
    res = meta["stylert.resolution"]
    print(f"\n{meta['stylert.call']} {res}x{res}, {meta['stylert.source']}, batch {args['batch']}, "
          f"{args['iters']} timed runs after {args['warmup']} warm-up")
    print(f"machine: {info['cpu']}, {info['cores']} cores, onnxruntime {info['onnxruntime']}")
    if meta.get("stylert.trained") == "false":
        print("weights: random (untrained) - the latency is meaningful, the images are not")
    ort_p50 = results["onnxruntime-cpu"].get("p50_ms")
    achieved = cost.gflops * args["batch"] / (ort_p50 / 1000) if ort_p50 else float("nan")
    print(f"work: {cost.gflops:.2f} GFLOP per image (conv + matmul), {cost.weight_bytes / 1e6:.1f} MB of weights; "
          f"onnxruntime-cpu achieves {achieved:.1f} GFLOP/s against a {ceiling:.1f} GFLOP/s ceiling "
          f"(2048^3 matmul, same backend, same run)")
    ref = results["pytorch weight"].get("p50_ms")
    header = f"{'network':34} {'cold ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'img/s':>8} {'peak MB':>8} {'vs ref':>7}"
    print(header + "\n" + "-" * len(header))
    for backend, r in results.items():
        if "error" in r:
            print(f"{BACKENDS[backend]:34} error: {r['error']}")
            continue
        ratio = f"{ref / r['p50_ms']:.2f}x" if ref else "-"
        print(f"{BACKENDS[backend]:34} {r['cold_start_ms']:9.1f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['mean_ms']:9.2f} "
              f"{args['batch'] * 1000 / r['p50_ms']:8.2f} {r['peak_rss_mb']:8.0f} {ratio:>7}")
    if pipeline:
        if "error" in pipeline:
            print(f"pipeline: error: {pipeline['error']}")
        else:
            print(f"\nwhole photo ({args['pipeline']}, {pipeline['faces']} face(s), onnxruntime-cpu), "
                  f"{pipeline['total']['runs']} runs:")
            for stage, r in {**pipeline["stages"], "total": pipeline["total"]}.items():
                print(f"  {stage:10} p50 {r['p50_ms']:9.2f} ms   p99 {r['p99_ms']:9.2f} ms")
    report = {"schema": "stylert.bench.latency/1", "machine": info, "model": meta, "batch": args["batch"],
              "gflop_per_image": cost.gflops, "weight_bytes": cost.weight_bytes, "ceiling_gflops": ceiling,
              "network": results, "pipeline": pipeline}
    if args["json"]:
        with open(args["json"], "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args['json']}")
    return report


if __name__ == "__main__":
    main()
