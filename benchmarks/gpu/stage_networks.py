"""Stage d: whole networks in PyTorch, seeded random weights from the export package's random-init builders.

Networks: retoucher 256, generator 1024 (synthesis from W+), VSP restorer 512, EXE-GAN 256, GRIG 256 (three
reasoning steps), FACEMUG 256. Per network and batch (1 and 8): eager fp32, eager fp16 (the generator in the
export's mixed precision: cast_synthesis_fp16; the others .half() with fp16 inputs), CUDA-graph replay of the
fp16 model; torch.compile (fp16, default mode) for the retoucher and the generator only, run last and only
while the deadline leaves room (compile time counts against the budget). p50/p99 (CUDA events per iteration,
no host synchronisation in between), peak GPU memory of each configuration, relative error of the fp16
image against the fp32 one. --device cpu --quick: tiny configs, wall clock, graphs and compile skipped.
"""
from __future__ import annotations

import copy
import gc
import sys
import time

from check_common import Stage, graph_replay, parse_args, rel_error, time_iters

COMPILED = ("retoucher256", "generator1024")


def builders(quick: bool) -> dict:
    """name -> (build model, make inputs(batch, seed) -> dict, run(model, inputs) -> image, fp16 cast)."""
    import torch

    from stylert_export import edit_export, generator, inpaint_export, restore_export, retouch_export
    from stylert_export.grig import inpaint as grig_inpaint
    from stylert_export.stylegan2 import cast_synthesis_fp16

    def half(m):
        return m.half()

    def retoucher():
        src = (retouch_export.from_random_init(0, 32, channel_base=256, channel_max=16, w_dim=16) if quick
               else retouch_export.from_random_init(0, 256))
        res = src.model.cfg.resolution
        return src.model, retouch_export.make_inputs(res), (lambda m, x: m(x["image"], x["strength"])[0]), half

    def gen():
        src = (generator.from_random_init(0, 32, channel_base=128, channel_max=16, w_dim=16, mapping_layers=2) if quick
               else generator.from_random_init(0, 1024))
        g = src.generator

        def inputs(batch, seed):
            gen_ = torch.Generator().manual_seed(seed)
            return {"ws": g.z_to_ws(torch.randn(batch, g.cfg.z_dim, generator=gen_)).contiguous()}
        return g, inputs, (lambda m, x: m(x["ws"])), cast_synthesis_fp16  # ws stay fp32: the mapping is fp32

    def vsp():
        if quick:
            from stylert_export.vsp_restorer import VSPConfig, random_vsp_restorer

            cfg = VSPConfig(size=32, bank_resolution=64, channels={4: 512, 8: 32, 16: 16, 32: 16, 64: 16},
                            e4e_units=(1, 1, 1, 1), e4e_input=16)
            model = random_vsp_restorer(cfg, 0)
        else:
            model = restore_export.vsp_from_random_init(0, 512).model
        res = model.net.cfg.size
        return model, restore_export.vsp_inputs(model, res), (lambda m, x: m(x["image"], x["fidelity"], x["noise"])), half

    def exe():
        if quick:
            from stylert_export.exe_gan import EXEConfig, random_exe_gan

            graph = random_exe_gan(EXEConfig(32, 512, 2, {4: 32, 8: 32, 16: 16, 32: 16}), 0, (1, 1, 1, 1), 16).graph
        else:
            graph = inpaint_export.exe_from_random_init(0, 256).graph
        return graph.eval(), inpaint_export.exe_inputs(graph), (lambda m, x: m(**x)), half

    def grig():
        step = (inpaint_export.grig_from_random_init(0, 64, ngf=8, dim=8, blocks=(1, 1, 1, 1), refinement=1).step
                if quick else inpaint_export.grig_from_random_init(0, 256).step)
        one = inpaint_export.grig_inputs(step)

        def inputs(batch, seed):
            feeds = one(batch, seed)
            return {"image": feeds["image"], "mask": feeds["mask"],
                    "noise": [feeds["noise"]] + [one(batch, seed + i)["noise"] for i in (1, 2)]}
        return step, inputs, (lambda m, x: grig_inpaint(m, x["image"], x["mask"], x["noise"])[-1]), half

    def facemug():
        if quick:
            from stylert_export.facemug import FACEMUGConfig, random_facemug

            model = random_facemug(FACEMUGConfig(size=32, bank_resolution=32, channels={4: 64, 8: 32, 16: 16, 32: 16},
                                                 encoder_units=(1, 1, 1, 1), encoder_input=32, aggregation_channels=8), 0)
        else:
            model = edit_export.from_random_init(0, 256).model
        return model.eval(), edit_export.edit_inputs(model), (lambda m, x: m(**x)), half

    tag = (lambda n, r: f"{n}{r}")
    if quick:
        return {tag("retoucher", 32): retoucher, tag("generator", 32): gen, tag("vsp", 32): vsp,
                tag("exegan", 32): exe, tag("grig", 64): grig, tag("facemug", 32): facemug}
    return {"retoucher256": retoucher, "generator1024": gen, "vsp512": vsp, "exegan256": exe, "grig256": grig,
            "facemug256": facemug}


def to(value, dev, dtype=None):
    """Move a feed (tensor or list of tensors) to `dev`; floating tensors to `dtype` where given."""
    import torch

    if isinstance(value, (list, tuple)):
        return [to(v, dev, dtype) for v in value]
    if isinstance(value, dict):
        return {k: to(v, dev, dtype) for k, v in value.items()}
    value = value.to(dev)
    return value.to(dtype) if dtype is not None and value.is_floating_point() else value


def _brief(figs: dict) -> str:
    """The summary's cell: batch-1 p50s (ms) and the fp16 error; the JSON has the rest."""
    return " / ".join(f"{k} {v:.3g}" for k, v in figs.items() if k.endswith("b1") or k.endswith("err"))


def fp16_runner(model, model16, run, feeds, feeds16, dev):
    """The fp16 model on fp16 inputs where the network runs so (every conv and matmul in fp16, as an fp16 export
    would be); else, for networks that make fp32 tensors inside forward, the fp32 model under torch.autocast."""
    import torch

    try:
        with torch.no_grad():
            run(model16, feeds16)
        return (lambda: run(model16, feeds16)), "half model"
    except RuntimeError as exc:
        if "type" not in str(exc) and "dtype" not in str(exc):
            raise

    def autocast():
        with torch.autocast(device_type=dev, dtype=torch.float16):
            return run(model, feeds)
    return autocast, "torch.autocast fp16 (the half model mixes dtypes inside forward)"


def main() -> int:
    args = parse_args()
    stage = Stage("networks", args)
    import torch

    cuda, dev = args.device == "cuda", args.device
    batches = (1, 2) if args.quick else (1, 8)
    if cuda:
        torch.backends.cudnn.benchmark = True
        stage.note(f"cuDNN TF32 for fp32 convs: {torch.backends.cudnn.allow_tf32} (PyTorch's default); "
                   f"matmul TF32: {torch.backends.cuda.matmul.allow_tf32}")

    def measure(r, fn, batch):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        warmup, iters = (1, 2) if args.quick else ((3, 30) if batch == 1 else (2, 15))
        with torch.no_grad():
            r.update(time_iters(fn, dev, warmup, iters))
        if cuda:
            r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20

    kept = {}  # the fp16 models that torch.compile takes at the end
    figures = {}
    for name, build in builders(args.quick).items():
        with stage.case(f"{name} build") as r:
            t = time.perf_counter()
            model, make_inputs, run, cast16 = build()
            model = model.eval().to(dev)
            model16 = cast16(copy.deepcopy(model)).eval()
            r["build_s"] = time.perf_counter() - t
            r["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        if stage.record["cases"][-1]["status"] != "ok":
            continue
        for batch in batches:
            feeds = to(make_inputs(batch, 7), dev)
            feeds16 = feeds if name.startswith("generator") else to(feeds, dev, torch.float16)
            want = None
            with stage.case(f"{name} b{batch} eager fp32", network=name, batch=batch, config="eager fp32") as r:
                with torch.no_grad():
                    want = run(model, feeds).float()
                measure(r, lambda: run(model, feeds), batch)
                figures.setdefault(name, {})[f"fp32 b{batch}"] = r["p50_ms"]
            with stage.case(f"{name} b{batch} eager fp16", network=name, batch=batch, config="eager fp16") as r:
                run16, mode = fp16_runner(model, model16, run, feeds, feeds16, dev)
                r["fp16_mode"] = mode
                with torch.no_grad():
                    got = run16().float()
                if want is not None:
                    r["rel_err_fp16_vs_fp32"] = rel_error(got, want)
                    r["max_abs_fp16_vs_fp32"] = float((got - want).abs().max())
                measure(r, run16, batch)
                figures[name][f"fp16 b{batch}"] = r["p50_ms"]
                if batch == 1 and want is not None:
                    figures[name]["fp16 err"] = r["rel_err_fp16_vs_fp32"]
            if not cuda:
                stage.skip(f"{name} b{batch} CUDA graph fp16", "skipped on cpu: CUDA graphs need a GPU",
                           network=name, batch=batch, config="cuda graph fp16")
            else:
                with stage.case(f"{name} b{batch} CUDA graph fp16", network=name, batch=batch,
                                config="cuda graph fp16") as r:
                    torch.cuda.reset_peak_memory_stats()
                    with torch.no_grad():
                        out, timing = graph_replay(run16, iters=30 if batch == 1 else 15)
                        ref = run16()
                    r.update(timing)
                    r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
                    r["rel_err_vs_eager_fp16"] = rel_error(out, ref)
                    r["pass"] = r["rel_err_vs_eager_fp16"] < 1e-2
                    figures[name][f"graph b{batch}"] = r["p50_ms"]
            del feeds, feeds16, want
        stage.figure(name, _brief(figures.get(name, {})))
        if name in COMPILED or (args.quick and name.startswith(("retoucher", "generator"))):
            kept[name] = (model16, make_inputs, run)
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    # torch.compile last, retoucher and generator only; each only while the deadline leaves room for it.
    for name, (model16, make_inputs, run) in kept.items():
        compiled = torch.compile(model16)  # built here on the CPU too: the call is what needs the GPU
        for batch in batches:
            label = f"{name} b{batch} torch.compile fp16"
            if not cuda:
                stage.skip(label, "skipped on cpu: torch.compile is timed on the GPU only (built, not run)",
                           network=name, batch=batch, config="torch.compile fp16")
                continue
            if stage.remaining() < 45:
                stage.skip(label, f"skipped: {stage.remaining():.0f}s left of the stage's deadline (a compile needs ~40s)",
                           network=name, batch=batch, config="torch.compile fp16")
                continue
            with stage.case(label, network=name, batch=batch, config="torch.compile fp16") as r:
                feeds16 = to(make_inputs(batch, 7), dev)
                if not name.startswith("generator"):
                    feeds16 = to(feeds16, dev, torch.float16)
                with torch.no_grad():
                    t = time.perf_counter()
                    got = run(compiled, feeds16)
                    torch.cuda.synchronize()
                    r["compile_s"] = time.perf_counter() - t
                    r["rel_err_vs_eager_fp16"] = rel_error(got, run(model16, feeds16))
                measure(r, lambda: run(compiled, feeds16), batch)
                r["pass"] = r["rel_err_vs_eager_fp16"] < 1e-2
                figures[name][f"compile b{batch}"] = r["p50_ms"]
                stage.figure(name, _brief(figures[name]))
    # the best PyTorch configuration of the retoucher at batch 1 (stage e compares ONNX Runtime CUDA with it)
    for name, figs in figures.items():
        if name.startswith("retoucher"):
            best = min((v, k) for k, v in figs.items() if k.endswith("b1"))
            stage.record["retoucher_best_b1"] = {"config": best[1], "p50_ms": best[0]}
    return stage.finish()


if __name__ == "__main__":
    sys.exit(main())
