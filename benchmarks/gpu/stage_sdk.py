"""Stage e: the SDK end to end through ONNX Runtime's CUDA provider.

On the machine (graphs are too big to carry): export the retoucher 256 and EXE-GAN 256 graphs (seeded random
init; this also checks that the export works under the torch there), make fp16 copies (ONNX Runtime's own
float16 converter, fp32 inputs and outputs kept), and then, where `onnxruntime` offers CUDAExecutionProvider:
fp32 and fp16 on CUDA against ORT CPU fp32 on the same inputs, `stylert bench --backend onnxruntime-cuda`,
and `stylert retouch` of the astronaut on the GPU against the CPU output. Without the CUDA provider (the
GPU machine has a CPU-only onnxruntime unless onnxruntime-gpu is brought: benchmarks/gpu/wheel_parts.py) the
exports and the CPU runs still happen and the stage records "skipped: onnxruntime-gpu not installed" with
what it would have run. --device cpu --quick: tiny graphs, every command run on onnxruntime-cpu instead.

Graphs, photos and outputs go to STYLERT_GPU_CHECK_WORK (default /tmp/stylert-gpucheck-work), not OUTDIR:
a run on the GPU machine brings back at most 8 files.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from check_common import Stage, parse_args, percentiles

SKIP = "skipped: onnxruntime-gpu not installed"


def export_graphs(stage: Stage, work: Path, quick: bool) -> dict[str, Path]:
    from stylert_export import inpaint_export, retouch_export

    graphs: dict[str, Path] = {}
    log = (lambda *a: stage.note(" ".join(str(x) for x in a)))
    with stage.case("export retoucher (fp32, random init)") as r:
        t = time.perf_counter()
        src = (retouch_export.from_random_init(0, 32, channel_base=256, channel_max=16, w_dim=16) if quick
               else retouch_export.from_random_init(0, 256))
        path = work / f"retouch{src.model.cfg.resolution}.onnx"
        report = retouch_export.export_retoucher(src, path, log=log)
        r.update(path=str(path), export_s=time.perf_counter() - t, parity_max_abs=report.max_abs,
                 mb=path.stat().st_size / 2 ** 20)
        graphs["retoucher"] = path
    with stage.case("export EXE-GAN (fp32, random init)") as r:
        t = time.perf_counter()
        if quick:
            from stylert_export.exe_gan import EXEConfig, random_exe_gan

            model = random_exe_gan(EXEConfig(32, 512, 2, {4: 32, 8: 32, 16: 16, 32: 16}), 0, (1, 1, 1, 1), 16)
        else:
            model = inpaint_export.exe_from_random_init(0, 256)
        path = work / f"exe{model.resolution}.onnx"
        inpaint_export.export_exe_gan(model, path, log=log)
        r.update(path=str(path), export_s=time.perf_counter() - t, mb=path.stat().st_size / 2 ** 20)
        graphs["exegan"] = path
    for name, path in list(graphs.items()):
        with stage.case(f"fp16 copy of {path.name}") as r:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
            out = path.with_name(f"{path.stem}.fp16.onnx")
            onnx.save(half, str(out))
            r.update(path=str(out), mb=out.stat().st_size / 2 ** 20)
            graphs[f"{name}-fp16"] = out
    return graphs


def feeds_for(path: Path, batch: int, seed: int):
    """The graph's inputs from the export package's own input makers (the ones its parity check uses)."""
    import onnx
    import torch

    from stylert_export import retouch_export
    from stylert_export.onnx_export import read_metadata

    meta = read_metadata(path)
    res = int(meta["stylert.resolution"])
    if meta["stylert.call"] == "retouch":
        feeds = retouch_export.make_inputs(res)(batch, seed)
    else:
        g = torch.Generator().manual_seed(seed)  # inpaint_export.exe_inputs' recipe, from the graph's metadata
        k, sd, n = int(meta["stylert.num_codes"]), int(meta["stylert.code_dim"]), int(meta["stylert.noise_size"])
        mask = (torch.rand(batch, 1, res // 8, res // 8, generator=g) < 0.4).float()
        feeds = {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1,
                 "mask": torch.nn.functional.interpolate(mask, size=(res, res), mode="nearest"),
                 "codes": torch.randn(batch, k, sd, generator=g) * 0.5, "z": torch.randn(batch, sd, generator=g),
                 "psi": torch.rand(batch, generator=g) * 0.5 + 0.5, "noise": torch.randn(batch, n, generator=g)}
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    return {k: feeds[k].numpy() for k in names}


def session_run(path: Path, provider: str, feeds: dict, iters: int):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the fp16 graphs' constant-folding warnings are noise
    sess = ort.InferenceSession(str(path), options, providers=[provider] + (["CPUExecutionProvider"]
                                                                   if provider != "CPUExecutionProvider" else []))
    if provider not in sess.get_providers():
        raise RuntimeError(f"{provider} did not start: session has {sess.get_providers()}")
    out = sess.run(None, feeds)[0]
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1000)
    return np.asarray(out, dtype=np.float64), percentiles(times)


def rel(got, want) -> float:
    import numpy as np

    if not np.isfinite(got).all():
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def photo(work: Path, stage: Stage) -> tuple[Path, list[str]]:
    """The astronaut (skimage), or, where skimage is absent, a deterministic synthetic photo (no face: retouched
    with --aligned)."""
    from PIL import Image

    path = work / "astronaut.png"
    try:
        from skimage import data

        Image.fromarray(data.astronaut()).save(path)
        return path, []
    except ImportError:
        import numpy as np

        stage.note("skimage absent: a deterministic synthetic 512x512 photo is retouched instead (--aligned)")
        y, x = np.mgrid[0:512, 0:512] / 511.0
        img = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], -1)
        path = work / "synthetic.png"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
        return path, ["--aligned"]


def cli(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def main() -> int:
    args = parse_args()
    stage = Stage("sdk", args)
    work = Path(os.environ.get("STYLERT_GPU_CHECK_WORK", "/tmp/stylert-gpucheck-work"))
    work.mkdir(parents=True, exist_ok=True)
    stage.record["work_dir"] = str(work)
    cuda_ep = False
    with stage.case("onnxruntime") as r:
        import onnxruntime as ort

        r.update(version=ort.__version__, providers=ort.get_available_providers())
        cuda_ep = "CUDAExecutionProvider" in r["providers"]
        if cuda_ep and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # cuDNN / cuBLAS of CUDA 13 from the nvidia-* packages PyTorch brings
            r["preload_dlls"] = True
    gpu = cuda_ep and args.device == "cuda"
    would_run = ["retoucher and EXE-GAN, fp32 and fp16, on CUDAExecutionProvider against ORT CPU fp32",
                 "stylert bench --backend onnxruntime-cuda (retoucher, batch 1 and 8)",
                 "stylert retouch --providers onnxruntime-cuda of the astronaut against --providers onnxruntime-cpu"]
    stage.record["would_run"] = would_run
    if args.device == "cuda" and not cuda_ep:
        stage.note(f"{SKIP}: exports and CPU runs only; would run: " + "; ".join(would_run))
    graphs = export_graphs(stage, work, args.quick)
    provider = "CUDAExecutionProvider" if gpu else "CPUExecutionProvider"
    iters = 3 if args.quick else 20
    for name in ("retoucher", "exegan"):
        if name not in graphs:
            continue
        feeds = feeds_for(graphs[name], 1, 11)
        want = None
        with stage.case(f"{name} ORT CPU fp32 (reference)") as r:
            want, timing = session_run(graphs[name], "CPUExecutionProvider", feeds, 1 if not args.quick else 2)
            r.update(timing)
        for precision in ("fp32", "fp16"):
            key = name if precision == "fp32" else f"{name}-fp16"
            label = f"{name} ORT {'CUDA' if gpu else 'CPU'} {precision} b1"
            if key not in graphs or want is None:
                continue
            if args.device == "cuda" and not gpu:
                stage.skip(label, SKIP)
                continue
            with stage.case(label) as r:
                try:
                    got, timing = session_run(graphs[key], provider, feeds, iters)
                except Exception as exc:
                    if not gpu and precision == "fp16" and "NOT_IMPLEMENTED" in str(exc):
                        r["cpu_note"] = f"ORT CPU lacks an fp16 kernel here: {str(exc)[:200]} (the CUDA run is the check)"
                        continue
                    raise
                r.update(timing, rel_err_vs_cpu_fp32=rel(got, want), max_abs_vs_cpu_fp32=float(abs(got - want).max()))
                tol = 1e-3 if precision == "fp32" else 5e-2
                r["pass"] = r["max_abs_vs_cpu_fp32"] <= tol
                r["why"] = f"max abs {r['max_abs_vs_cpu_fp32']:.3g} > {tol:g} against ORT CPU fp32"
                if gpu:
                    stage.figure(f"{name} {precision} b1 p50 ms", r["p50_ms"])
                    stage.figure(f"{name} {precision} err", r["rel_err_vs_cpu_fp32"])
                if gpu and name == "retoucher" and precision == "fp16":
                    best = _best_pytorch(stage.out)
                    if best:
                        r["best_pytorch_b1"] = best
                        r["ratio_to_best_pytorch"] = r["p50_ms"] / best["p50_ms"]
                        stage.figure("retoucher ORT fp16 / best PyTorch b1", r["ratio_to_best_pytorch"])
    backend = "onnxruntime-cuda" if gpu else "onnxruntime-cpu"
    if "retoucher" in graphs:
        if args.device == "cuda" and not gpu:
            stage.skip("stylert bench --backend onnxruntime-cuda", SKIP)
        else:
            with stage.case(f"stylert bench --backend {backend}") as r:
                out = work / "bench.json"
                batches = "1,2" if args.quick else "1,8"
                proc = cli("bench", graphs["retoucher"], "--backend", backend, "--batch", batches, "--warmup",
                           0.2 if args.quick else 1, "--duration", 0.5 if args.quick else 3, "--json", out, "-q",
                           timeout=max(stage.remaining() - 20, 10))
                r["exit"] = proc.returncode
                if proc.returncode != 0:
                    raise RuntimeError(f"stylert bench exit {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
                report = json.loads(out.read_text())
                r["report"] = _bench_rows(report)
                r["stdout_tail"] = proc.stdout[-1200:]
        with stage.case("stylert retouch of the photo") as r:
            src, extra = photo(work, stage)
            r["photo"] = src.name
            outputs = {}
            for prov in (["onnxruntime-cpu", "onnxruntime-cuda"] if gpu else ["onnxruntime-cpu"]):
                dst = work / f"retouched_{prov}.png"
                proc = cli("retouch", src, "-o", dst, "--model", graphs["retoucher"], "--providers", prov, "-q",
                           *extra, timeout=max(stage.remaining() - 10, 10))
                if proc.returncode != 0:
                    raise RuntimeError(f"stylert retouch --providers {prov} exit {proc.returncode}: {proc.stderr[-600:]}")
                outputs[prov] = dst
                r[f"{prov}_sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()[:16]
            if gpu:
                import numpy as np
                from PIL import Image

                a, b = (np.asarray(Image.open(outputs[p]), dtype=np.int16) for p in ("onnxruntime-cpu", "onnxruntime-cuda"))
                diff = np.abs(a - b)
                r.update(max_abs_u8=int(diff.max()), mean_abs_u8=float(diff.mean()))
                r["pass"] = diff.max() <= 8
                r["why"] = f"GPU photo differs from the CPU one by up to {diff.max()} / 255"
                stage.figure("retouch GPU vs CPU max |d| (u8)", r["max_abs_u8"])
            elif args.device == "cuda":
                stage.skip("stylert retouch --providers onnxruntime-cuda", SKIP)
    if args.device == "cuda" and not gpu:
        exported = [c for c in stage.record["cases"] if c["name"].startswith("export")]
        ok = all(c["status"] == "ok" for c in exported)
        failed = [c for c in stage.record["cases"] if c["status"] == "failed"]
        return stage.finish(None if failed else f"{SKIP} (exports {'ok' if ok else 'FAILED'} under this torch)")
    return stage.finish()


def _best_pytorch(out: Path):
    try:
        return json.loads((out / "networks.json").read_text()).get("retoucher_best_b1")
    except (OSError, ValueError):
        return None


def _bench_rows(report: dict) -> list:
    """The bench report without its machine block (stage a has that), cut to 3000 characters."""
    return json.dumps({k: v for k, v in report.items() if k != "machine"}, default=str)[:3000]


if __name__ == "__main__":
    sys.exit(main())
