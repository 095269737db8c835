"""Stage b: every kernel of kernels/ against a float64 PyTorch reference, and a compute-sanitizer memcheck pass.

For each kernel (modulate, demod_coefficients, demod_bias_act, bafs_blend, half_to_float, the whole
modulated_conv2d node: 3x3 up 1, 3x3 up 2 (transposed conv + FIR), 1x1 toRGB without demodulation, and the same
layers on the tensor-core fused_modulated_conv2d, channels-last, up 2 in the phase form), fp32 and fp16,
StyleGAN-sized shapes: outputs are filled with NaN first (an unwritten element cannot pass), inputs
are fresh random values, and the reference is computed in float64 from the very inputs the kernel read (fp16
inputs are fp16-rounded values, so like is compared with like; for the tensor-core kernel, its fp16 operands:
the modulated input rounded to fp16 and the fp16 weights read back from its prepared buffer, `fused_reference`). Pass: fp32 relative error <= 1e-5; fp16
output: within 2x fp16's own rounding of the float64 reference (+1e-5). The memcheck pass reruns every
kernel on tiny shapes in a child process under `compute-sanitizer --tool memcheck` (torch's caching
allocator off, so each tensor is its own allocation); a racecheck pass reruns the tensor-core kernel (two
shared-memory stages, one barrier a step) under `--tool racecheck`, where the deadline leaves 20 s for it.

--device cpu runs the same cases on the CPU reference library (kernels/build/libstylert_kernels_cpu.so),
and the sanitizer children without the sanitizer (the sanitizer is CUDA-only: those cases are skipped).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from check_common import ROOT, Stage, parse_args, rel_error

ELEMENTWISE = [(1, 512, 64 * 64), (4, 256, 128 * 128), (8, 64, 256 * 256)]  # (batch, channels, pixels)
# (batch, in, out, size, up, kernel, demodulate+lrelu)
CONV = [(1, 512, 512, 32, 1, 3, True), (4, 256, 256, 64, 1, 3, True), (1, 512, 256, 32, 2, 3, True),
        (2, 64, 32, 128, 2, 3, True), (2, 64, 3, 256, 1, 1, False)]
TINY_ELEMENTWISE = [(1, 8, 16), (2, 5, 25)]
# the last: I % 8 == 0 (the tensor-core kernel's vector loads), O > 32 (its 64-channel tiles; the others take 32),
# neither O nor the positions whole tiles
TINY_CONV = [(1, 4, 6, 8, 1, 3, True), (2, 4, 3, 5, 2, 3, True), (1, 4, 3, 8, 1, 1, False), (2, 16, 40, 6, 2, 3, True)]


def fused_reference(k, x, s, w, prepared, bias, noise, f, up: int, pad: int, demod: bool, lrelu: bool, gain: float,
                    clamp: float):
    """float64 reference of stylert_fused_modulated_conv2d from the very operands its tensor cores multiply: the
    modulated input rounded to fp16 as the kernel stages it (x * s in float32) and the fp16 weights read back from
    `prepared` (host bytes); demodulation d from the float32 weight, noise, bias, lrelu x gain and clamp in float64.
    x [B, H, W, I] (any dtype and device), weight [O, I, k, k] float32, f the FIR for up = 2; returns NHWC."""
    import torch
    import torch.nn.functional as F

    from stylert_export.ops import demod_coefficients
    from stylert_export.ops.modconv import upsampling_phase_weights

    cout, cin, kern, _ = w.shape
    taps = 1 if f is None else f.shape[-1]
    g = torch.from_numpy(k.fused_weights(prepared, cin, cout, kern, up, pad, taps)).to(x.device, torch.float64)
    xm = (x.float() * s.float()[:, None, None, :]).half().double().permute(0, 3, 1, 2)
    if up == 2:
        _, (before, after) = upsampling_phase_weights(w.cpu(), f.cpu(), pad)
        y = F.pixel_shuffle(F.conv2d(F.pad(xm, [before, after, before, after]), g), 2)
    else:
        y = F.conv2d(xm, g, padding=pad)
    if demod:
        y = y * demod_coefficients(w.double(), s.double())[:, :, None, None]
    if noise is not None:
        y = y + noise.double()
    y = y + bias.double()[None, :, None, None]
    if lrelu:
        y = torch.where(y < 0, 0.2 * y, y) * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y.permute(0, 2, 3, 1)


def kernel_cases(k, dev: str, dtype, elementwise, conv):
    """(name, run -> kernel output, reference in float64, whether the output is stored in `dtype`)."""
    import torch

    from stylert_export.ops import modulated_conv_bias_act, setup_filter

    code = 0 if dtype == torch.float32 else 1
    tag = "fp32" if dtype == torch.float32 else "fp16"

    def stream():
        return torch.cuda.current_stream().cuda_stream if dev == "cuda" else None

    def nan(shape, dt):
        return torch.full(shape, float("nan"), device=dev, dtype=dt)

    for b, c, p in elementwise:
        shape = f"{b}x{c}x{p}"
        x = torch.randn(b, c, p, device=dev).to(dtype)
        s = torch.randn(b, c, device=dev)
        out = nan((b, c, p), dtype)
        yield (f"modulate {tag} {shape}",
               lambda x=x, s=s, out=out, b=b, c=c, p=p: (k.modulate(x.data_ptr(), s.data_ptr(), out.data_ptr(), b, c, p,
                                                                     code, stream()), out)[1],
               lambda x=x, s=s: x.double() * s.double()[:, :, None], True)
        if dtype == torch.float32:  # styles, wsq and d are float32 whatever the activations' dtype
            wsq = torch.rand(c, c, device=dev)
            d = nan((b, c), torch.float32)
            yield (f"demod_coefficients fp32 {shape}",
                   lambda s=s, wsq=wsq, d=d, b=b, c=c: (k.demod_coefficients(s.data_ptr(), wsq.data_ptr(), d.data_ptr(),
                                                                             b, c, c, 1e-8, stream()), d)[1],
                   lambda s=s, wsq=wsq: torch.rsqrt(s.double().square() @ wsq.double() + 1e-8), False)
        dd, noise, bias = torch.rand(b, c, device=dev) + 0.5, torch.randn(p, device=dev), torch.randn(c, device=dev)
        y = torch.randn(b, c, p, device=dev).to(dtype)

        def epilogue(y=y, dd=dd, noise=noise, bias=bias, b=b, c=c, p=p):
            y2 = y.clone()  # in place: the kernel must overwrite every element it owns
            k.demod_bias_act(y2.data_ptr(), dd.data_ptr(), noise.data_ptr(), bias.data_ptr(), b, c, p, 1, 2 ** 0.5,
                             4.0, code, stream())
            return y2

        def epilogue_ref(y=y, dd=dd, noise=noise, bias=bias):
            v = y.double() * dd.double()[:, :, None] + noise.double() + bias.double()[None, :, None]
            return (torch.where(v < 0, 0.2 * v, v) * 2 ** 0.5).clamp(-4.0, 4.0)
        yield (f"demod_bias_act {tag} {shape}", epilogue, epilogue_ref, True)
        fs, fi = torch.randn_like(x), torch.randn_like(x)
        ms, mc = torch.rand(b, 1, p, device=dev).to(dtype), torch.rand(b, c, 1, device=dev).to(dtype)
        blend = nan((b, c, p), dtype)
        yield (f"bafs_blend {tag} {shape}",
               lambda fs=fs, fi=fi, ms=ms, mc=mc, blend=blend, b=b, c=c, p=p: (
                   k.bafs_blend(fs.data_ptr(), fi.data_ptr(), ms.data_ptr(), mc.data_ptr(), blend.data_ptr(), b, c, p,
                                code, stream()), blend)[1],
               lambda fs=fs, fi=fi, ms=ms, mc=mc: (ms.double() * mc.double() * fs.double()
                                                   + (1 - ms.double()) * (1 - mc.double()) * fi.double()), True)
        if dtype == torch.float16:
            src = torch.randn(c * p, device=dev).half()
            dst = nan((c * p,), torch.float32)
            yield (f"half_to_float fp16 {c * p}",
                   lambda src=src, dst=dst: (k.half_to_float(src.data_ptr(), dst.data_ptr(), src.numel(), stream()), dst)[1],
                   lambda src=src: src.double(), False)

    f = setup_filter([1, 3, 3, 1]).to(dev)
    for b, cin, cout, size, up, kern, demod in conv:
        shape = f"{b}x{cin}->{cout} {size}^2 k{kern} up{up}"
        pad = kern // 2
        x = torch.randn(b, cin, size, size, device=dev).to(dtype)
        s = torch.randn(b, cin, device=dev) + 1
        w = torch.randn(cout, cin, kern, kern, device=dev) / (cin * kern * kern) ** 0.5
        bias = torch.randn(cout, device=dev)
        ho = k.modulated_conv2d_output_size(size, kern, up, pad, 4)
        noise = torch.randn(ho, ho, device=dev) if demod else None
        out = nan((b, cout, ho, ho), dtype)
        work = torch.empty(max(k.modulated_conv2d_workspace(b, cin, cout, size, size, kern, up) // 4, 1), device=dev)
        clamp, gain = (256.0, 2 ** 0.5) if demod else (-1.0, 1.0)

        def run(x=x, s=s, w=w, bias=bias, noise=noise, out=out, work=work, b=b, cin=cin, cout=cout, size=size, up=up,
                kern=kern, pad=pad, demod=demod, clamp=clamp, gain=gain):
            k.modulated_conv2d(x.data_ptr(), s.data_ptr(), w.data_ptr(), bias.data_ptr(),
                               noise.data_ptr() if noise is not None else None, f.data_ptr() if up == 2 else None,
                               out.data_ptr(), work.data_ptr(), b, cin, cout, size, size, kern, up, pad, 4, int(demod),
                               int(demod), gain, clamp, code, stream())
            return out

        def reference(x=x, s=s, w=w, bias=bias, noise=noise, up=up, pad=pad, demod=demod):
            return modulated_conv_bias_act(x.double(), s.double(), w.double(), bias.double(),
                                           None if noise is None else noise.double(), f.double() if up == 2 else None,
                                           up=up, padding=pad, demodulate=demod, lrelu=demod,
                                           clamp=256.0 if demod else None)
        yield (f"modulated_conv2d {tag} {shape}", run, reference, True)

        # the tensor-core kernel on the same layer: channels-last, weights prepared once on the host
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()
        prepared = k.fused_prepare(w.cpu().numpy(), f.cpu().numpy() if up == 2 else None, up, pad)
        prepared_dev = torch.from_numpy(prepared).to(dev)
        out_nhwc = nan((b, ho, ho, cout), dtype)
        d_work = nan((max(k.fused_modulated_conv2d_workspace(b, cout) // 4, 1),), torch.float32)

        def run_fused(x=x_nhwc, s=s, prepared=prepared_dev, bias=bias, noise=noise, out=out_nhwc, work=d_work, b=b,
                      cin=cin, cout=cout, size=size, up=up, kern=kern, pad=pad, demod=demod, clamp=clamp, gain=gain):
            k.fused_modulated_conv2d(x.data_ptr(), s.data_ptr(), prepared.data_ptr(), bias.data_ptr(),
                                     noise.data_ptr() if noise is not None else None, out.data_ptr(), work.data_ptr(),
                                     b, cin, cout, size, size, kern, up, pad, 4, int(demod), int(demod), gain, clamp,
                                     code, stream())
            return out

        def reference_fused(x=x_nhwc, s=s, w=w, prepared=prepared, bias=bias, noise=noise, up=up, pad=pad,
                            demod=demod, clamp=clamp, gain=gain):
            return fused_reference(k, x, s, w, prepared, bias, noise, f if up == 2 else None, up, pad, demod, demod,
                                   gain, clamp)
        yield (f"fused_modulated_conv2d {tag} {shape}", run_fused, reference_fused, True)


def sanitize_child(args) -> int:
    """Every kernel once on tiny shapes (run under compute-sanitizer by the parent; `--child sanitize-fused`: the
    tensor-core kernel only); non-zero if any output is not finite."""
    import torch

    import bindings

    k = bindings.load(cuda=args.device == "cuda")
    torch.manual_seed(1)
    bad = 0
    only = "fused_" if args.child == "sanitize-fused" else ""
    for dtype in (torch.float32, torch.float16):
        for name, run, _, _ in kernel_cases(k, args.device, dtype, TINY_ELEMENTWISE, TINY_CONV):
            if not name.startswith(only):
                continue
            out = run()
            if args.device == "cuda":
                torch.cuda.synchronize()
            finite = bool(torch.isfinite(out).all())
            bad += not finite
            print(f"sanitizer-run {name}: {'finite' if finite else 'NOT FINITE'}", flush=True)
    return 1 if bad else 0


def main() -> int:
    args = parse_args()
    if args.child in ("sanitize", "sanitize-fused"):
        return sanitize_child(args)
    stage = Stage("kernels", args)
    import torch

    import bindings

    cuda = args.device == "cuda"
    lib = "libstylert_kernels.so" if cuda else "libstylert_kernels_cpu.so"
    with stage.case(f"load {lib}") as r:
        k = bindings.load(cuda=cuda)
        r["path"] = str(bindings.BUILD / lib)
    if cuda:  # a true fp32 reference path: no TF32 anywhere
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    elementwise, conv = (TINY_ELEMENTWISE, TINY_CONV) if args.quick else (ELEMENTWISE, CONV)
    worst = {"fp32": 0.0, "fp16": 0.0}
    for dtype in (torch.float32, torch.float16):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        try:
            cases = list(kernel_cases(k, args.device, dtype, elementwise, conv))
        except Exception as exc:
            with stage.case(f"inputs {tag}") as r:
                raise exc
            continue
        for name, run, reference, stored in cases:
            with stage.case(name) as r:
                got = run()
                if cuda:
                    torch.cuda.synchronize()
                want = reference()
                err = rel_error(got, want)
                floor = rel_error(want.to(dtype), want) if stored and dtype == torch.float16 else 0.0
                tol = 1e-5 + 2 * floor
                r.update(rel_error=err, fp16_rounding=floor or None, tolerance=tol, **{"pass": err <= tol})
                if not r["pass"]:
                    r["why"] = f"relative error {err:.3e} > {tol:.3e}"
                worst[tag] = max(worst[tag], err if err == err else float("inf"))
    stage.figure("worst fp32 rel err", worst["fp32"])
    stage.figure("worst fp16 rel err", worst["fp16"])
    sanitizer = shutil.which("compute-sanitizer")
    child = [sys.executable, "-u", str(Path(__file__).resolve()), "--out", str(stage.out), "--device", args.device,
             "--child", "sanitize"]
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    if not cuda:
        for mode in ("sanitize", "sanitize-fused"):  # the children's own code, run plainly
            with stage.case(f"{'memcheck' if mode == 'sanitize' else 'racecheck'} child (cpu, no sanitizer)") as r:
                proc = subprocess.run(child[:-1] + [mode], capture_output=True, text=True,
                                      timeout=max(stage.remaining() - 5, 5), env=env)
                r["exit"], r["tail"] = proc.returncode, (proc.stdout + proc.stderr)[-600:]
                r["runs"] = proc.stdout.count("sanitizer-run ")
                r["pass"] = proc.returncode == 0 and r["runs"] > 0
        for tool in ("memcheck", "racecheck (tensor-core kernel)"):
            stage.skip(f"compute-sanitizer {tool}", "skipped on cpu: compute-sanitizer is CUDA-only")
    elif sanitizer is None:
        for tool in ("memcheck", "racecheck (tensor-core kernel)"):
            stage.skip(f"compute-sanitizer {tool}", "skipped: compute-sanitizer not on PATH")
    else:
        with stage.case("compute-sanitizer memcheck (tiny shapes)") as r:
            budget = min(stage.remaining() - 5, 70)
            if budget < 15:
                raise TimeoutError(f"only {budget:.0f}s left of the stage's deadline")
            cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", "9", "--leak-check", "no",
                   "--print-limit", "20"] + child
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, env=env)
            text = proc.stdout + proc.stderr
            summary = [line for line in text.splitlines() if "ERROR SUMMARY" in line]
            r.update(exit=proc.returncode, summary=summary[-1] if summary else None, tail=text[-1500:])
            r["pass"] = proc.returncode == 0 and bool(summary) and "0 errors" in summary[-1]
            stage.figure("memcheck", summary[-1].replace("=", "").strip() if summary else f"exit {proc.returncode}")
        # the tensor-core kernel's two shared-memory stages with one barrier a step: shared-memory hazards
        budget = min(stage.remaining() - 5, 60)
        if budget < 20:
            stage.skip("compute-sanitizer racecheck (tensor-core kernel)",
                       f"skipped: {stage.remaining():.0f}s left of the stage's deadline")
        else:
            with stage.case("compute-sanitizer racecheck (tensor-core kernel)") as r:
                cmd = [sanitizer, "--tool", "racecheck", "--error-exitcode", "9", "--print-limit", "20"] + child[:-1] \
                    + ["sanitize-fused"]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, env=env)
                text = proc.stdout + proc.stderr
                summary = [line for line in text.splitlines() if "SUMMARY" in line]
                ran = text.count("sanitizer-run fused_modulated_conv2d")
                r.update(exit=proc.returncode, summary=summary, runs=ran, tail=text[-1500:])
                r["pass"] = proc.returncode == 0 and ran > 0 and all("0 errors" in line or "0 hazards" in line
                                                                     for line in summary)
                stage.figure("racecheck", summary[-1].replace("=", "").strip() if summary else f"exit {proc.returncode}")
    return stage.finish()


if __name__ == "__main__":
    sys.exit(main())
