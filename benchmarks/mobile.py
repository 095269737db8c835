"""Phone artifacts of one call beside ONNX Runtime desktop on the same model, in one run, on this CPU.

Exports the call (seeded random weights) as the ONNX graph stylert's runtime reads and for the three phone targets
in fp32 and fp16, and ExecuTorch in int8 (`stylert export --target ort-mobile|executorch|ncnn`, each checked against
PyTorch on its own runtime here), then times every file at batch 1, each in a fresh child process so that cold
start (load + first run) and peak memory are its own: ONNX Runtime desktop on the .onnx (the reference), ONNX
Runtime on the .ort files, ExecuTorch's runtime with XNNPACK on the .pte files, and the ncnn wheel on the ncnn files
in float32 arithmetic, as their export checked them (an --out folder from an earlier run is timed again as it is,
without exporting). Reports p50, p99, cold start, peak RSS, file size, error against
PyTorch, the convolutions XNNPACK takes and ONNX Runtime's NNAPI / Core ML partition estimate. Nothing is asserted.

    python benchmarks/mobile.py retouch --resolution 256 --out /tmp/phone256 --json results.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stylert.tools.bench import in_child, machine, peak_rss_mb, percentiles, write_json


def exporter(call: str, resolution: int, channel_base: int):
    """export(path, target=None, flavor="portable") of the call's model, seeded random weights."""
    if call == "retouch":
        from stylert_export import retouch_export as rx

        src = rx.from_random_init(0, resolution, channel_base=channel_base)

        def export(path, target=None, flavor="portable"):
            return rx.export_retoucher(src, path, target=target, flavor=flavor)
    elif call == "restore":  # QC-StyleGAN
        from stylert_export import restore_export as qx

        src = qx.from_random_init(0, resolution, channel_base=channel_base)

        def export(path, target=None, flavor="portable"):
            return qx.export_restorer(src, path, target=target, flavor=flavor)
    elif call == "edit":  # FACEMUG, its feature bank at the published 1024
        from stylert_export import edit_export as ex

        src = ex.from_random_init(0, resolution, channel_base=channel_base)

        def export(path, target=None, flavor="portable"):
            return ex.export_edit(src, path, target=target, flavor=flavor)
    else:
        from stylert_export.generator import export_generator, from_random_init

        src = from_random_init(0, resolution, channel_base=channel_base)

        def export(path, target=None, flavor="portable"):
            return export_generator(src, path, target=target, flavor=flavor)
    return export


def build(call: str, resolution: int, channel_base: int, out: Path) -> dict[str, Path]:
    """The call's .onnx and its four phone artifacts in `out`: {row name: file}."""
    from stylert_export.mobile import Target, artifact_path

    export = exporter(call, resolution, channel_base)
    files = {"onnxruntime desktop (.onnx)": out / f"{call}.onnx"}
    if not files["onnxruntime desktop (.onnx)"].exists():
        t = time.perf_counter()
        export(files["onnxruntime desktop (.onnx)"])
        print(f"exported the ONNX graph in {time.perf_counter() - t:.0f} s", flush=True)
    for target in (Target("ort-mobile"), Target("ort-mobile", "fp16"), Target("executorch"),
                   Target("executorch", "fp16"), Target("executorch", "int8"), Target("ncnn"), Target("ncnn", "fp16")):
        path = out / f"{target.name}-{target.precision}" / f"{call}.onnx"
        if not artifact_path(path, target).exists():  # a folder from an earlier run is timed again as it is
            t = time.perf_counter()
            export(path, target)
            print(f"exported {target.name} {target.precision} in {time.perf_counter() - t:.0f} s", flush=True)
        runtime = {"ort-mobile": "onnxruntime (.ort", "executorch": "executorch xnnpack (.pte", "ncnn": "ncnn (.ncnn"}
        files[f"{runtime[target.name]} {target.precision})"] = artifact_path(path, target)
    return files


def feeds(path: Path, seed: int = 1) -> dict:
    """Seeded inputs of the file's own names and shapes (its report beside it, or the ONNX graph's)."""
    import numpy as np

    report = path.with_name(path.name + ".json")
    if report.exists():
        spec = [(name, shape) for name, shape, _ in json.loads(report.read_text())["inputs"]]
    else:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        spec = [(i.name, [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]) for i in graph.input]
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1, 1, shape).astype(np.float32) for name, shape in spec}


def child(path: str, iters: int, warmup: int, queue) -> None:
    try:
        path = Path(path)
        inputs = feeds(path)
        if path.suffix == ".pte":
            import torch
            from executorch.runtime import Runtime

            start = time.perf_counter()  # cold start: load + first run, the libraries already imported
            method = Runtime.get().load_program(str(path)).load_method("forward")
            args = [torch.from_numpy(v) for v in inputs.values()]

            def step():
                method.execute(args)
        elif path.suffix == ".param":
            import ncnn
            import numpy as np
            from stylert_export.mobile import batch_index, load_ncnn

            start = time.perf_counter()
            net = load_ncnn(path)  # float32 arithmetic, as checked
            blobs = json.loads(path.with_name(path.name + ".json").read_text())["blobs"]
            mats = {blobs[k]["blob"]: ncnn.Mat(np.ascontiguousarray(v), batch_index=batch_index(blobs[k]["batch_axis"]))
                    for k, v in inputs.items()}

            def step():
                with net.create_extractor() as ex:
                    for blob, mat in mats.items():
                        ex.input(blob, mat)
                    ex.extract("out0")
        else:
            import onnxruntime as ort

            start = time.perf_counter()
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def step():
                session.run(None, inputs)
        step()
        cold = (time.perf_counter() - start) * 1000
        for _ in range(warmup):
            step()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1000)
        queue.put({"cold_start_ms": cold, **percentiles(times), "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # reported in the table; the other rows still run
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("call", choices=["retouch", "restore", "generator"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--channel-base", type=int, default=32768, help="32768: config-F widths")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", required=True, help="folder for the exported files")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    out = Path(args.out)
    files = build(args.call, args.resolution, args.channel_base, out)
    rows = {}
    for name, path in files.items():
        measured = in_child(child, str(path), args.iters, args.warmup)  # each file in a fresh process
        row = {"file": path.name, "size_bytes": path.stat().st_size, **measured}
        report = path.with_name(path.name + ".json")
        if report.exists():
            r = json.loads(report.read_text())
            row.update({k: r[k] for k in ("size_bytes", "rel", "max_abs", "convs", "delegated_convs", "partitions")
                        if r.get(k)})  # an ncnn file's size counts its .bin
        rows[name] = row
    info = machine()
    print(f"\n{args.call} {args.resolution}x{args.resolution}, channel base {args.channel_base}, random weights, "
          f"batch 1, {args.iters} timed runs after {args.warmup} warm-up")
    print(f"machine: {info['cpu']}, {info['cores']} cores, onnxruntime {info['onnxruntime']}")
    ref = rows["onnxruntime desktop (.onnx)"].get("p50_ms")
    header = (f"{'runtime (file)':32} {'MiB':>7} {'cold ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'peak MB':>8} "
              f"{'vs desktop':>10} {'rel err':>8}  convs on XNNPACK")
    print(header + "\n" + "-" * len(header))
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:32} error: {r['error']}")
            continue
        convs = f"{r['delegated_convs']}/{r['convs']}" if "convs" in r else ""
        rel = f"{r['rel']:.1e}" if "rel" in r else "-"
        print(f"{name:32} {r['size_bytes'] / 2 ** 20:7.2f} {r['cold_start_ms']:9.1f} {r['p50_ms']:9.2f} "
              f"{r['p99_ms']:9.2f} {r['peak_rss_mb']:8.0f} {ref / r['p50_ms']:9.2f}x {rel:>8}  {convs}")
    for name, r in rows.items():
        for ep, p in r.get("partitions", {}).items():
            print(f"{name}: {ep} {p['supported']}/{p['nodes']} nodes ({100 * p['supported'] / p['nodes']:.1f}%) "
                  f"in {p['partitions']} partitions; unsupported: {', '.join(p['unsupported_ops']) or 'none'}")
    result = {"schema": "stylert.bench.mobile/1", "machine": info, "call": args.call, "resolution": args.resolution,
              "channel_base": args.channel_base, "batch": 1, "iters": args.iters, "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
