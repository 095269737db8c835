"""`stylert bench`: latency and throughput of exported models, the reference beside them.

For each model x backend x batch, in a fresh child process (so cold start and memory are its own):
cold start (load + first run), warm-up for --warmup seconds, then timed runs for --duration seconds
(at least 5): p50, p90, p99, mean, min, throughput, peak resident memory, and device memory on
CUDA backends. Backends: every name of `stylert.runtime.BACKENDS` (onnxruntime-cpu, onnxruntime-cuda,
openvino, openvino-bf16, tensorrt for .engine files) and torch (the PyTorch reference, from
stylert[export] through the `stylert.references` entry point; --reference adds it). With --pipeline
IMAGE the whole-photo path is timed per stage on that photo, once per runtime backend. The graph's
work (GFLOP per image) and a matmul ceiling on the same backend and precision give the achieved rate.

Each runtime row says the precision it ran in (OpenVINO: f32, bf16, or the one precision=auto chose, with why) and
its output's error against ONNX Runtime f32 on the same inputs, on the 8-bit scale inside the region the call writes
(`runtime/precision.output_error`). Start-up is measured twice, each in its own process, with a stylert cache
folder of the row's own (STYLERT_CACHE): cold (empty: OpenVINO compiles, precision=auto measures) and warm (the
compiled blobs and the precision verdict the cold start left); each as load plus first run, and the load alone.

JSON (schema "stylert.bench/1"): {"schema", "machine", "models": [{"path", "metadata",
"gflop_per_image", "weight_bytes", "rows": [{"backend", "batch", "precision", "precision_reason", "cold_start_ms",
"cold_load_ms", "warm_start_ms", "warm_load_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs", "images_per_s", "peak_rss_mb",
"device_mb", "error_vs_f32": {"max_levels", "psnr_db"} | null, "gflops", "ceiling_fraction", "vs_reference"} |
{"backend", "batch", "error"}], "pipelines": {backend: {"faces", "stages": {stage: {p50_ms, p99_ms, ...}}, "total"}},
"pipeline": the first backend's entry of "pipelines" | null}],
"ceilings": {backend: GFLOP/s; "openvino-bf16": bf16's, null without native bf16}, "loops": runs of each graph per
timed iteration (--loops; GRIG's steps)}.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from ..errors import UntrainedWeightsWarning
from ..runtime.model import BACKENDS as RUNTIME_BACKENDS
from ..runtime.engine import read_sidecar
from ..runtime.feeds import feeds_for
from ..runtime.model import cpu_flags, cpu_name, open_model
from ..runtime.precision import CACHE_ENV, image_output, no_bf16_reason, output_error, written_region

BACKENDS = (*RUNTIME_BACKENDS, "torch")
SCHEMA = "stylert.bench/1"


def machine() -> dict:
    import onnxruntime
    found = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
             "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
             "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})}
    try:
        import openvino
        found["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    return found


def write_json(path: str | Path, result: dict, *, indent: int = 2) -> None:
    """A benchmark's result as JSON at `path`, and a line saying where."""
    Path(path).write_text(json.dumps(result, indent=indent))
    print(f"wrote {path}")


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min()), "runs": len(a)}


def _device_used_mb() -> float | None:
    try:
        from ..runtime.engine import cuda_check, cudart
        free, total = cuda_check(cudart().cudaMemGetInfo())
        return (total - free) / 2 ** 20
    except Exception:  # no CUDA here: device memory is not applicable
        return None


def model_metadata(model_path: str) -> dict:
    """An engine's sidecar, or the graph's stylert metadata (read on ONNX Runtime CPU, always present)."""
    if model_path.endswith(".engine"):
        return read_sidecar(model_path)
    return open_model(model_path, "onnxruntime-cpu").metadata


def _runner(backend: str, model_path: str, args: dict):
    """(load() -> state, step(state), the inputs) for one backend."""
    feeds = feeds_for(model_metadata(model_path), args["batch"], model_path)
    if backend == "torch":
        eps = [ep for ep in entry_points(group="stylert.references") if ep.name == "torch"]
        if not eps:
            raise RuntimeError("the PyTorch reference needs stylert[export] (torch): pip install 'stylert[export]'")
        build = eps[0].load()
        return (lambda: build(model_path, args.get("checkpoint"), args.get("threads"))), (lambda run: run(feeds)), feeds
    precision = args.get("precision") if backend == "openvino" else None  # openvino-bf16 is bf16 by its name
    return ((lambda: open_model(model_path, backend, threads=args.get("threads"), precision=precision)),
            (lambda m: m.run(feeds)), feeds)


def _start(backend: str, model_path: str, args: dict) -> dict:
    """A warm start: load and first run, in a process of its own, with the cache the cold start filled."""
    load, one, _ = _runner(backend, model_path, args)
    start = time.perf_counter()
    state = load()
    loaded = time.perf_counter()
    one(state)
    return {"warm_start_ms": (time.perf_counter() - start) * 1000, "warm_load_ms": (loaded - start) * 1000}


def _measure(backend: str, model_path: str, args: dict) -> dict:
    load, one, feeds = _runner(backend, model_path, args)
    loops = args.get("loops", 1)

    def step(state):  # `loops` runs of the graph per timed iteration (GRIG: its reasoning steps)
        for _ in range(loops):
            one(state)

    before = _device_used_mb() if backend in ("onnxruntime-cuda", "tensorrt") else None
    start = time.perf_counter()
    state = load()
    loaded = time.perf_counter()
    step(state)
    cold = (time.perf_counter() - start) * 1000
    end = time.perf_counter() + args["warmup"]
    while time.perf_counter() < end:
        step(state)
    times: list[float] = []
    end = time.perf_counter() + args["duration"]
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        step(state)
        times.append((time.perf_counter() - t) * 1000)
    row = {"cold_start_ms": cold, "cold_load_ms": (loaded - start) * 1000, **percentiles(times),
           "peak_rss_mb": peak_rss_mb()}
    if backend != "torch":  # what ran, and its output (compared with ONNX Runtime f32's in the parent)
        choice = state.precision_choice
        row.update(precision=choice.precision, precision_reason=choice.reason)
        row["output"] = state.run(feeds)
    row["images_per_s"] = args["batch"] * 1000 / row["p50_ms"]
    after = _device_used_mb() if before is not None else None
    row["device_mb"] = None if before is None or after is None else after - before
    return row


def _child(backend: str, model_path: str, args: dict, queue, measure=_measure) -> None:
    warnings.simplefilter("ignore", UntrainedWeightsWarning)  # the report marks random-weight models itself
    if args.get("cache"):  # the row's own cache folder (cold, then warm), not the user's
        os.environ[CACHE_ENV] = args["cache"]
        os.environ.pop("OV_CACHE_DIR", None)
    try:
        queue.put(measure(backend, model_path, args))
    except Exception as exc:  # reported in its row; the other rows still run
        queue.put({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started, in MiB: VmHWM where /proc has it (getrusage's maxrss
    is carried over exec, so a spawned child would report the parent's peak when that was larger)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(target, *args):
    """Run target(*args, queue) in a fresh spawned process (its own cold start and peak memory) and
    return what it puts on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _start_child(backend: str, model_path: str, args: dict, queue) -> None:
    _child(backend, model_path, args, queue, _start)


def run_isolated(backend: str, model_path: str, args: dict) -> dict:
    """One row: measured in a child, then (runtime backends) started again in another with the cache it left."""
    if backend == "torch":
        return in_child(_child, backend, model_path, args)
    with tempfile.TemporaryDirectory(prefix="stylert-bench-cache-") as cache:
        args = {**args, "cache": cache}
        row = in_child(_child, backend, model_path, args)
        if "error" not in row:
            row.update(in_child(_start_child, backend, model_path, args))
    return row


def error_vs_f32(model_path: str, rows: list[dict], batch: int) -> None:
    """Each row's output against ONNX Runtime f32's on the same inputs (`output_error`, over the region the call
    writes), as row["error_vs_f32"]; None for a graph without an image output. An int8 graph is held against its f32
    source where that is beside it (`stylert quantize` names it), else against itself on ONNX Runtime. Takes the
    rows' "output"."""
    reference = open_model(model_path, "onnxruntime-cpu", precision="f32")
    source = Path(model_path).with_name(Path(reference.metadata.get("stylert.int8_source") or model_path).name)
    if reference.metadata.get("stylert.precision") == "int8" and source.is_file():
        reference = open_model(source, "onnxruntime-cpu", precision="f32")
    feeds = feeds_for(reference.metadata, batch, model_path)
    index = image_output(reference.outputs)
    want = reference.run(feeds)[reference.outputs[index].name] if index is not None else None
    for row in rows:
        output = row.pop("output", None)
        if output is not None:
            row["error_vs_f32"] = None if want is None else output_error(
                want, output[reference.outputs[index].name], written_region(feeds)).__dict__


def has_pipeline(meta: dict) -> bool:
    """Graphs a whole photo runs through by itself: retouch, restore, a style pack's generators (the pipeline
    times the pack's encoder with them; the region-local model needs label maps), inpaint generators and steps."""
    return meta.get("stylert.call") in ("retouch", "restore", "edit") or meta.get("stylert.role") in ("generator", "step")


def pipeline_stages(model_path: str, image: str, runs: int, warmup: int = 1, threads: int | None = None,
                    backend: str = "onnxruntime-cpu") -> dict:
    """Per-stage latency of the whole-photo path (decode ... encode) of a face model on one photo. Inpaint: EXE-GAN
    fills the mouth region (no exemplar), GRIG a centre square of a quarter of the photo in its default 3 steps;
    edit: the mouth region, no guidance."""
    from ..calls.registry import CALLS, open_call
    from ..faces.imageio import read_image, write_image

    model = open_model(model_path, "onnxruntime-cpu")
    call = model.call
    if call not in CALLS:
        raise ValueError(f"--pipeline needs a {', '.join(CALLS)} model, not '{call}'")
    if call == "stylize":
        if model.metadata.get("stylert.role") != "generator":
            raise ValueError(f"--pipeline on a style pack needs a style's generator graph, not its "
                             f"{model.metadata.get('stylert.role')} (the region-local model also needs label maps)")
        face_model, value = open_call(Path(model_path).parent, backend, threads), model.metadata["stylert.style"]
    else:
        face_model = open_call(model_path, backend, threads)
        value = face_model.default_value
    if CALLS[call].masked:
        value = "centre" if face_model.method == "grig" else "mouth"
    stages: dict[str, list[float]] = {}
    faces = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(warmup + runs):
            t = time.perf_counter()
            loaded = read_image(image)
            decode = (time.perf_counter() - t) * 1000
            if isinstance(value, str) and value == "centre":
                h, w = loaded.rgb.shape[:2]
                value = np.zeros((h, w), bool)
                value[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
            result = face_model.process(loaded.rgb, value, channels="rgb")
            t = time.perf_counter()
            write_image(os.path.join(tmp, "out.png"), result.image)
            encode = (time.perf_counter() - t) * 1000
            faces = len(result.faces)
            if i >= warmup:
                for stage, ms in {"decode": decode, **result.timings_ms, "encode": encode}.items():
                    stages.setdefault(stage, []).append(ms)
    totals = [sum(v) for v in zip(*stages.values())]
    return {"faces": faces, "stages": {k: percentiles(v) for k, v in stages.items()}, "total": percentiles(totals)}


def ceiling(backend: str, threads: int | None) -> float | None:
    from .graph_cost import matmul_ceiling, openvino_ceiling
    try:
        if backend == "onnxruntime-cpu":
            return matmul_ceiling(["CPUExecutionProvider"], threads=threads)
        if backend == "onnxruntime-cuda":
            return matmul_ceiling(["CUDAExecutionProvider"])
        if backend in ("openvino", "openvino-bf16"):
            return openvino_ceiling("bf16" if backend == "openvino-bf16" else "f32", threads)
    except Exception:  # provider missing: no ceiling for that backend
        return None
    return None


def ceiling_key(row: dict) -> str:
    """Which ceiling a row is held against: OpenVINO's bf16 one for a row that ran in bf16, else its backend's."""
    return "openvino-bf16" if row.get("precision") == "bf16" else row["backend"]


def plot(report: dict, path: str | Path) -> None:
    """Latency distribution (p50 with p90/p99 whiskers) per backend and batch, and the stage breakdown."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    models = report["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.5 * len(models)), squeeze=False)
    for ax_row, model in zip(axes, models):
        rows = [r for r in model["rows"] if "error" not in r]
        labels = [f"{r['backend']}\nbatch {r['batch']}" for r in rows]
        p50 = [r["p50_ms"] for r in rows]
        low = [r["p50_ms"] - r["min_ms"] for r in rows]
        high = [r["p99_ms"] - r["p50_ms"] for r in rows]
        ax_row[0].bar(range(len(rows)), p50, yerr=[low, high], capsize=4, color="#4C72B0")
        ax_row[0].set_xticks(range(len(rows)), labels, fontsize=7)
        ax_row[0].set_ylabel("ms per batch (p50; min..p99)")
        ax_row[0].set_title(f"{Path(model['path']).name}: {model['metadata'].get('stylert.call')}", fontsize=9)
        pipe = model.get("pipeline")
        if pipe:
            names = list(pipe["stages"])
            values = [pipe["stages"][n]["p50_ms"] for n in names]
            ax_row[1].barh(names, values, color="#DD8452")
            ax_row[1].set_xlabel("ms (p50)")
            ax_row[1].set_title("whole photo, per stage", fontsize=9)
        else:
            ax_row[1].axis("off")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def bench(models: list[str], backends: list[str], batches: list[int], *, threads: int | None = None,
          warmup: float = 1.0, duration: float = 3.0, reference: bool = False, checkpoint: str | None = None,
          pipeline: str | None = None, pipeline_runs: int = 5, loops: int = 1, precision: str | None = None,
          progress=None) -> dict:
    """loops: runs of each graph per timed iteration (a row's latency is theirs together; GRIG's steps).
    precision: of the "openvino" rows (auto, f32, bf16; default f32); the other rows run as their backend names."""
    from .graph_cost import graph_cost

    if reference and "torch" not in backends:
        backends = [*backends, "torch"]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    # Children first: nothing large is loaded here (graph costs, ceilings, pipeline sessions) until every row is
    # measured, so the machine's memory is the rows' own while they run.
    if not isinstance(loops, int) or loops < 1:
        raise ValueError(f"loops must be an integer >= 1, got {loops!r}")
    report: dict = {"schema": SCHEMA, "machine": machine(), "models": [], "ceilings": {}, "loops": loops}
    for path in models:
        entry: dict = {"path": path, "rows": [], "pipeline": None}
        for batch in batches:
            measured = {}
            for backend in backends:
                args = {"batch": batch, "threads": threads, "warmup": warmup, "duration": duration,
                        "checkpoint": checkpoint, "loops": loops, "precision": precision}
                measured[backend] = {"backend": backend, "batch": batch, **run_isolated(backend, path, args)}
                if progress:
                    progress()
            if not path.endswith(".engine"):  # an engine has no graph here to run on ONNX Runtime
                error_vs_f32(path, list(measured.values()), batch)
            for row in measured.values():
                row.pop("output", None)
            ref = measured.get("torch", {}).get("p50_ms")
            for row in measured.values():
                if ref and "p50_ms" in row:
                    row["vs_reference"] = ref / row["p50_ms"]
                entry["rows"].append(row)
        report["models"].append(entry)
    for entry in report["models"]:
        path = entry["path"]
        entry["metadata"] = model_metadata(path)
        cost = graph_cost(path) if not path.endswith(".engine") else None
        entry["gflop_per_image"] = cost.gflops if cost else None
        entry["weight_bytes"] = cost.weight_bytes if cost else None
        for row in entry["rows"]:
            if cost and "p50_ms" in row:
                row["gflops"] = cost.gflops * row["batch"] * loops / (row["p50_ms"] / 1000)
        if pipeline and has_pipeline(entry["metadata"]) and not path.endswith(".engine"):
            entry["pipelines"] = {b: pipeline_stages(path, pipeline, pipeline_runs, threads=threads, backend=b)
                                  for b in backends if b in RUNTIME_BACKENDS and b != "tensorrt"}
            entry["pipeline"] = next(iter(entry["pipelines"].values()), None)
    ran = {ceiling_key(r) for entry in report["models"] for r in entry["rows"] if "p50_ms" in r}
    report["ceilings"] = {b: ceiling(b, threads) for b in dict.fromkeys([*backends, *sorted(ran)])}
    for entry in report["models"]:
        for row in entry["rows"]:
            if "gflops" in row and report["ceilings"].get(ceiling_key(row)):
                row["ceiling_fraction"] = row["gflops"] / report["ceilings"][ceiling_key(row)]
    return report


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}"]
    for model in report["models"]:
        meta = model["metadata"]
        res = meta.get("stylert.resolution")
        untrained = " (random weights: latency only)" if meta.get("stylert.trained") == "false" else ""
        work = f", {model['gflop_per_image']:.1f} GFLOP/image" if model["gflop_per_image"] else ""
        lines.append(f"\n{model['path']}: {meta.get('stylert.call')} {res}x{res}{work}{untrained}")
        header = (f"{'backend':16} {'prec':>4} {'batch':>5} {'cold ms':>8} {'warm ms':>8} {'p50 ms':>9} {'p90 ms':>9} "
                  f"{'p99 ms':>9} {'img/s':>7} {'RSS MB':>6} {'vs f32':>13} {'GFLOP/s':>8} {'ceil':>5} {'vs ref':>7}")
        lines += [header, "-" * len(header)]
        for r in model["rows"]:
            if "error" in r:
                lines.append(f"{r['backend']:16} {'':>4} {r['batch']:>5} unavailable: {r['error']}")
                continue
            ratio = f"{r['vs_reference']:.2f}x" if "vs_reference" in r else "-"
            gf = f"{r['gflops']:.1f}" if "gflops" in r else "-"
            ceil = f"{100 * r['ceiling_fraction']:.0f}%" if "ceiling_fraction" in r else "-"
            warm = f"{r['warm_start_ms']:.0f}" if "warm_start_ms" in r else "-"
            err = r.get("error_vs_f32")
            vs = "-" if not err else "equal" if err["max_levels"] == 0 else (
                f"{err['max_levels']}/255 {err['psnr_db']:.0f}dB")
            lines.append(f"{r['backend']:16} {r.get('precision', '-'):>4} {r['batch']:>5} {r['cold_start_ms']:8.0f} "
                         f"{warm:>8} {r['p50_ms']:9.2f} {r['p90_ms']:9.2f} {r['p99_ms']:9.2f} {r['images_per_s']:7.2f} "
                         f"{r['peak_rss_mb']:6.0f} {vs:>13} {gf:>8} {ceil:>5} {ratio:>7}")
            if r["p99_ms"] > 1.5 * r["p50_ms"]:
                lines.append(f"{'':21} {'':>5} noisy: p99 is {r['p99_ms'] / r['p50_ms']:.1f}x p50, rerun on a quiet machine")
        loads = [f"{r['backend']} {r['cold_load_ms']:.0f} -> {r['warm_load_ms']:.0f} ms" for r in model["rows"]
                 if "warm_load_ms" in r]
        if loads:
            lines.append(f"model load alone, cold -> warm: {', '.join(loads)}")
        chosen = [r for r in model["rows"] if r.get("precision_reason") and r["backend"].startswith("openvino")]
        lines += dict.fromkeys(f"precision, {r['backend']} {r['precision']}: {r['precision_reason']}" for r in chosen)
        for backend, pipe in model.get("pipelines", {}).items():
            stages = ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in pipe["stages"].items())
            lines.append(f"whole photo on {backend} ({pipe['faces']} face(s)), p50 ms: {stages}; "
                         f"total {pipe['total']['p50_ms']:.1f}")
    ceilings = ", ".join(f"{b} {c:.0f} GFLOP/s" for b, c in report["ceilings"].items() if c)
    if ceilings:
        lines.append(f"\nmatmul ceiling (2048^3, float32 inputs; openvino-bf16 computes in bf16; same run): {ceilings}")
    if "openvino-bf16" in report["ceilings"] and not report["ceilings"]["openvino-bf16"]:
        lines.append(f"no bf16 ceiling: {no_bf16_reason()}")
    return "\n".join(lines)
