"""Stage c: every distinct modulated-conv layer of a config-F 1024 generator and of the 256 retoucher (its GP
has the same widths per resolution, so its layers are a subset: each row names the networks it is in),
batch 1 and 4, fp16 activations, channels-last where the implementation takes it.

Per layer and batch, four implementations, each one case:
- portable:  what the exported (portable) graph does, as PyTorch runs it: x * s, cuDNN conv (or transposed
             conv + FIR), demodulation, noise, bias + lrelu x gain + clamp as separate ops; channels-last fp16;
- stylert fused:    stylert_modulated_conv2d (kernels/, direct conv with everything folded in; NCHW);
- stylert composed: stylert_modulate + cuDNN conv (+ FIR) + stylert_demod_coefficients + stylert_demod_bias_act;
- stylert tensor-core: stylert_fused_modulated_conv2d (kernels/, implicit GEMM on WMMA, fp16 operands, fp32
             accumulation, channels-last, up 2 in the phase form; weights prepared once per layer, not timed);
- torch.compile:    of the portable function (dynamic=True: one compile per layer kind and batch, to fit the
             budget), run after all the others so that compile time cannot cost the other rows.
Issue 28's goal for the tensor-core kernel: >= 1.3x portable (cuDNN + pointwise) on every layer from 64^2 to
1024^2, and no slower than torch.compile: the figures give the worst ratio of each over those layers.
Timing: triton.testing.do_bench (median, CUDA events) on the GPU; wall clock on the CPU (--device cpu,
where torch.compile is built but not run). Each implementation's output is compared with the portable one.
"""
from __future__ import annotations

import sys
import time

from check_common import Stage, do_bench, parse_args, rel_error

BATCHES = (1, 4)


def distinct_layers(configs: dict) -> list[dict]:
    """{network: StyleGAN2Config} -> distinct layers (cin, cout, size of input, up, kernel, demod) with where used."""
    layers: dict[tuple, dict] = {}
    for net, cfg in configs.items():
        for res in cfg.block_resolutions:
            ch = cfg.channels[res]
            found = [(f"b{res}.torgb", (ch, 3, res, 1, 1, False)), (f"b{res}.conv1", (ch, ch, res, 1, 3, True))]
            if res > 4:
                found.insert(0, (f"b{res}.conv0", (cfg.channels[res // 2], ch, res // 2, 2, 3, True)))
            for name, key in found:
                entry = layers.setdefault(key, {"key": key, "name": name, "in": []})
                entry["in"].append(f"{net}:{name}")
    return sorted(layers.values(), key=lambda e: (e["key"][2] * e["key"][3], e["key"][4], e["key"][3]))


def make_layer(key, batch: int, dev: str, k):
    """Inputs of one layer, and its implementations (name -> callable returning the output)."""
    import torch
    import torch.nn.functional as F

    from stylert_export.ops import LRELU_GAIN, modulated_conv_bias_act, setup_filter, upfirdn2d
    from stylert_export.ops.modconv import _blur_padding

    cin, cout, size, up, kern, demod = key
    pad = kern // 2
    half = torch.float16
    ho = size * up
    x = torch.randn(batch, cin, size, size, device=dev).to(half)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    s = torch.randn(batch, cin, device=dev) + 1
    w = torch.randn(cout, cin, kern, kern, device=dev) / (cin * kern * kern) ** 0.5  # gain applied, fp32 master
    w16 = w.to(half)
    bias = torch.randn(cout, device=dev) * 0.1
    noise = torch.randn(ho, ho, device=dev) * 0.1 if demod else None
    f = setup_filter([1, 3, 3, 1]).to(dev)
    clamp = 256.0 * LRELU_GAIN if demod else None

    def portable(x=x_cl):
        return modulated_conv_bias_act(x, s, w16, bias, noise, f if up == 2 else None, up=up, padding=pad,
                                       demodulate=demod, lrelu=demod, clamp=clamp)

    stream = (lambda: torch.cuda.current_stream().cuda_stream) if dev == "cuda" else (lambda: None)
    out = torch.empty(batch, cout, ho, ho, device=dev, dtype=half)
    work = torch.empty(max(k.modulated_conv2d_workspace(batch, cin, cout, size, size, kern, up) // 4, 1), device=dev)

    def fused():
        k.modulated_conv2d(x.data_ptr(), s.data_ptr(), w.data_ptr(), bias.data_ptr(),
                           noise.data_ptr() if noise is not None else None, f.data_ptr() if up == 2 else None,
                           out.data_ptr(), work.data_ptr(), batch, cin, cout, size, size, kern, up, pad, 4, int(demod),
                           int(demod), LRELU_GAIN if demod else 1.0, clamp if clamp is not None else -1.0, 1, stream())
        return out

    wsq = w.square().sum(dim=[2, 3]).t().contiguous()  # weight preparation, once per layer
    xm = torch.empty_like(x)
    d = torch.empty(batch, cout, device=dev)
    ones = torch.ones(batch, cout, device=dev)
    p0, p1 = _blur_padding(kern, 4, pad, 2)
    wt = w16.transpose(0, 1)

    def composed():
        k.modulate(x.data_ptr(), s.data_ptr(), xm.data_ptr(), batch, cin, size * size, 1, stream())
        if up == 2:
            y = upfirdn2d(F.conv_transpose2d(xm, wt, stride=2), f, pad=(p0, p1, p0, p1), gain=4)
        else:
            y = F.conv2d(xm, w16, padding=pad)
        y = y.contiguous()
        if demod:
            k.demod_coefficients(s.data_ptr(), wsq.data_ptr(), d.data_ptr(), batch, cin, cout, 1e-8, stream())
        k.demod_bias_act(y.data_ptr(), (d if demod else ones).data_ptr(), noise.data_ptr() if noise is not None else None,
                         bias.data_ptr(), batch, cout, ho * ho, int(demod), LRELU_GAIN if demod else 1.0,
                         clamp if clamp is not None else -1.0, 1, stream())
        return y

    prepared = torch.from_numpy(k.fused_prepare(w.cpu().numpy(), f.cpu().numpy() if up == 2 else None, up,
                                                pad)).to(dev)  # once per layer
    out_cl = torch.empty(batch, cout, ho, ho, device=dev, dtype=half, memory_format=torch.channels_last)  # NHWC
    d_work = torch.empty(max(k.fused_modulated_conv2d_workspace(batch, cout) // 4, 1), device=dev)

    def tensor_core():
        k.fused_modulated_conv2d(x_cl.data_ptr(), s.data_ptr(), prepared.data_ptr(), bias.data_ptr(),
                                 noise.data_ptr() if noise is not None else None, out_cl.data_ptr(), d_work.data_ptr(),
                                 batch, cin, cout, size, size, kern, up, pad, 4, int(demod), int(demod),
                                 LRELU_GAIN if demod else 1.0, clamp if clamp is not None else -1.0, 1, stream())
        return out_cl

    macs = batch * cout * cin * kern * kern * (size * size if up == 2 else ho * ho)
    env = {"x": x_cl, "s": s, "w16": w16, "bias": bias, "noise": noise, "f": f if up == 2 else None, "up": up,
           "pad": pad, "demod": demod, "clamp": clamp}
    impls = {"portable": portable, "stylert fused": fused, "stylert composed": composed,
             "stylert tensor-core": tensor_core}
    return impls, portable, macs, env


def main() -> int:
    args = parse_args()
    stage = Stage("layers", args)
    import torch

    import bindings
    from stylert_export.retoucher import retoucher_config
    from stylert_export.stylegan2 import StyleGAN2Config

    cuda = args.device == "cuda"
    dev = args.device
    k = bindings.load(cuda=cuda)
    if args.quick:
        configs = {"generator32": StyleGAN2Config.from_channel_base(32, 128, 16),
                   "retoucher16": retoucher_config(16, 128, 16).gp}
    else:
        configs = {"generator1024": StyleGAN2Config.from_channel_base(1024), "retoucher256": retoucher_config(256).gp}
    layers = distinct_layers(configs)
    stage.figure("layers", len(layers))
    stage.record["layers"] = [{"layer": _label(e["key"]), "in": e["in"]} for e in layers]
    stage.note("stylert fused and composed take NCHW; portable, stylert tensor-core and torch.compile run "
               "channels-last fp16")
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    best_speedup, compiled_rows, tensor_core_ms = None, [], {}
    for e in layers:
        for batch in BATCHES:
            label = f"{_label(e['key'])} b{batch}"
            try:
                impls, portable, macs, inputs = make_layer(e["key"], batch, dev, k)
                with torch.no_grad():
                    want = portable()
            except Exception as exc:
                with stage.case(f"{label} inputs") as r:
                    raise exc
                continue
            times = {}
            for name, fn in impls.items():
                with stage.case(f"{label} {name}", layer=_label(e["key"]), batch=batch, impl=name,
                                gflop=2 * macs / 1e9) as r:
                    with torch.no_grad():
                        got = fn()
                        r["rel_err_vs_portable"] = rel_error(got, want)
                        r.update(do_bench(fn, dev, args.quick))
                    r["tflops"] = 2 * macs / (r["ms"] * 1e-3) / 1e12
                    times[name] = r["ms"]
                    if name != "portable" and "portable" in times:
                        r["speedup_vs_portable"] = times["portable"] / r["ms"]
                    if name != "portable":
                        r["pass"] = r["rel_err_vs_portable"] < 1e-2
                        r["why"] = f"output differs from portable: {r['rel_err_vs_portable']:.2e}"
            if "portable" in times and "stylert fused" in times:
                ratio = times["portable"] / times["stylert fused"]
                best_speedup = ratio if best_speedup is None else max(best_speedup, ratio)
            if "stylert tensor-core" in times:
                tensor_core_ms[label] = times["stylert tensor-core"]
                if "portable" in times and _in_goal(e["key"]):
                    _worst(stage, "tensor-core worst speed-up over portable (64^2..1024^2)",
                           times["portable"] / times["stylert tensor-core"])
            compiled_rows.append((e, batch, label))
            del impls, portable, inputs, want
    if best_speedup is not None:
        stage.figure("best stylert-fused speed-up over portable", best_speedup)
    # torch.compile last: compile time counts against the stage's deadline, and must not cost the rows above.
    from stylert_export.ops import modulated_conv_bias_act

    if hasattr(torch, "_dynamo"):
        import torch._dynamo

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 64)

    def portable_fn(x, s, w16, bias, noise, f, up: int, pad: int, demod: bool, clamp):  # make_layer's env
        return modulated_conv_bias_act(x, s, w16, bias, noise, f, up=up, padding=pad, demodulate=demod, lrelu=demod,
                                       clamp=clamp)
    compiled = torch.compile(portable_fn, dynamic=True)
    for e, batch, label in compiled_rows:
        if not cuda:
            stage.skip(f"{label} torch.compile", "skipped on cpu: torch.compile is timed on the GPU only (built, not run)",
                       layer=_label(e["key"]), batch=batch, impl="torch.compile")
            continue
        if stage.remaining() < 12:
            stage.skip(f"{label} torch.compile", f"skipped: {stage.remaining():.0f}s left of the stage's deadline",
                       layer=_label(e["key"]), batch=batch, impl="torch.compile")
            continue
        with stage.case(f"{label} torch.compile", layer=_label(e["key"]), batch=batch, impl="torch.compile") as r:
            _, portable, macs, env = make_layer(e["key"], batch, dev, k)

            def call(env=env):
                return compiled(**env)
            with torch.no_grad():
                t = time.perf_counter()
                got = call()
                torch.cuda.synchronize()
                r["first_call_s"] = time.perf_counter() - t
                r["rel_err_vs_portable"] = rel_error(got, portable())
                r.update(do_bench(call, dev, args.quick))
            r["tflops"] = 2 * macs / (r["ms"] * 1e-3) / 1e12
            r["pass"] = r["rel_err_vs_portable"] < 1e-2
            if label in tensor_core_ms:
                r["tensor_core_speedup"] = r["ms"] / tensor_core_ms[label]
            if label in tensor_core_ms and _in_goal(e["key"]):
                _worst(stage, "tensor-core worst speed-up over torch.compile (64^2..1024^2)",
                       r["ms"] / tensor_core_ms[label])
    return stage.finish()


def _in_goal(key) -> bool:
    """The layers issue 28's speed goal covers: outputs from 64^2 to 1024^2."""
    return 64 <= key[2] * key[3] <= 1024


def _worst(stage: Stage, figure: str, ratio: float) -> None:
    """Keep the smallest ratio seen under `figure`."""
    old = stage.record["figures"].get(figure)
    stage.figure(figure, ratio if old is None else min(old, ratio))


def _label(key) -> str:
    cin, cout, size, up, kern, demod = key
    return f"{cin}->{cout} {size * up}^2 k{kern}{' up2' if up == 2 else ''}{'' if demod else ' no-demod'}"


if __name__ == "__main__":
    sys.exit(main())
