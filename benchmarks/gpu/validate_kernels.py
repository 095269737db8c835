"""GPU check of the stylert CUDA kernels, in one call: build, correctness, timing, report.

    python benchmarks/gpu/validate_kernels.py [--json OUT]

On a machine with an NVIDIA GPU, PyTorch (CUDA) and nvcc: builds kernels/ (`make -C kernels`), then
for each kernel, dtype (fp32, fp16) and StyleGAN-sized shape: fills the output with NaN (a kernel
that skips elements cannot pass), runs it on fresh random inputs, compares with the PyTorch
reference (relative error; NaN fails), and times kernel and PyTorch ops with CUDA events
(median of 200 runs after 20 warm-up). The whole ModulatedConv2d plugin kernel (direct conv,
transposed conv + FIR, fused epilogue) is checked against ops.modconv.modulated_conv_bias_act on
cuDNN, with TF32 off so the reference is true fp32. Writes the table to stdout and JSON to
benchmarks/results/gpu-<device>/validate_kernels.json. Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "kernels"))
sys.path.insert(0, str(ROOT / "export"))
import bindings  # noqa: E402
from stylert_export.ops import modulated_conv_bias_act, setup_filter  # noqa: E402

SHAPES = [(1, 512, 64 * 64), (4, 256, 128 * 128), (8, 64, 256 * 256)]  # (batch, channels, pixels)
CONV_SHAPES = [(1, 512, 512, 32, 1), (4, 256, 256, 64, 1), (1, 512, 256, 32, 2)]  # (batch, in, out, size, up)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}
CODES = {torch.float32: bindings.F32, torch.float16: bindings.F16}


def timed(fn, runs: int = 200, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def cases(k, dtype, shape):
    """(name, run kernel -> output, PyTorch reference op -> output)."""
    b, c, p = shape
    dev, stream = "cuda", torch.cuda.current_stream().cuda_stream
    x = torch.randn(b, c, p, device=dev).to(dtype)
    s = torch.randn(b, c, device=dev)
    out = torch.full_like(x, float("nan"))
    yield ("modulate", lambda: (k.modulate(x.data_ptr(), s.data_ptr(), out.data_ptr(), b, c, p, CODES[dtype], stream), out)[1],
           lambda: (x.float() * s[:, :, None]).to(dtype))
    wsq = torch.rand(c, c, device=dev)
    d = torch.full((b, c), float("nan"), device=dev)
    yield ("demod_coefficients", lambda: (k.demod_coefficients(s.data_ptr(), wsq.data_ptr(), d.data_ptr(), b, c, c, 1e-8, stream), d)[1],
           lambda: torch.rsqrt(s.square() @ wsq + 1e-8))
    dd, noise, bias = torch.rand(b, c, device=dev) + 0.5, torch.randn(p, device=dev), torch.randn(c, device=dev)
    y = torch.randn(b, c, p, device=dev).to(dtype)

    def epi():
        y2 = y.clone()
        k.demod_bias_act(y2.data_ptr(), dd.data_ptr(), noise.data_ptr(), bias.data_ptr(), b, c, p, 1, 2 ** 0.5, 256.0,
                         CODES[dtype], stream)
        return y2

    def epi_ref():
        v = y.float() * dd[:, :, None] + noise + bias[None, :, None]
        return (torch.nn.functional.leaky_relu(v, 0.2) * 2 ** 0.5).clamp(-256, 256).to(dtype)
    yield ("demod_bias_act", epi, epi_ref)
    fs, fi = torch.randn_like(x), torch.randn_like(x)
    ms, mc = torch.rand(b, 1, p, device=dev).to(dtype), torch.rand(b, c, 1, device=dev).to(dtype)
    blend = torch.full_like(x, float("nan"))
    yield ("bafs_blend", lambda: (k.bafs_blend(fs.data_ptr(), fi.data_ptr(), ms.data_ptr(), mc.data_ptr(), blend.data_ptr(),
                                               b, c, p, CODES[dtype], stream), blend)[1],
           lambda: ms * mc * fs + (1 - ms) * (1 - mc) * fi)


def conv_cases(k, dtype, shape):
    """The fused ModulatedConv2d kernel against PyTorch's conv path (cuDNN) of the same node."""
    b, cin, cout, size, up = shape
    dev, stream = "cuda", torch.cuda.current_stream().cuda_stream
    x = torch.randn(b, cin, size, size, device=dev).to(dtype)
    s = torch.randn(b, cin, device=dev) + 1
    w = torch.randn(cout, cin, 3, 3, device=dev) / (cin * 9) ** 0.5
    bias, noise = torch.randn(cout, device=dev), torch.randn(size * up, size * up, device=dev)
    f = setup_filter([1, 3, 3, 1]).to(dev)
    out = torch.full((b, cout, size * up, size * up), float("nan"), device=dev).to(dtype)
    work = torch.empty(k.modulated_conv2d_workspace(b, cin, cout, size, size, 3, up) // 4, device=dev)

    def kernel():
        k.modulated_conv2d(x.data_ptr(), s.data_ptr(), w.data_ptr(), bias.data_ptr(), noise.data_ptr(),
                           f.data_ptr() if up == 2 else None, out.data_ptr(), work.data_ptr(), b, cin, cout, size, size,
                           3, up, 1, 4, 1, 1, 2 ** 0.5, 256.0, CODES[dtype], stream)
        return out

    def reference():
        y = modulated_conv_bias_act(x, s, w.to(dtype), bias, noise, f if up == 2 else None, up=up, padding=1,
                                    demodulate=True, lrelu=True, clamp=256.0)
        return y.to(dtype)
    yield ("modulated_conv2d", kernel, reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to validate", file=sys.stderr)
        return 2
    subprocess.run(["make", "-C", str(ROOT / "kernels")], check=True)
    k = bindings.load(cuda=True)
    device = torch.cuda.get_device_name()
    torch.manual_seed(0)
    rows, ok = [], True
    print(f"{device}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"{'kernel':20} {'dtype':8} {'shape':18} {'rel err':>9} {'kernel ms':>10} {'torch ms':>9} {'speed-up':>8}")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    work = [(dtype, shape, cases) for dtype in (torch.float32, torch.float16) for shape in SHAPES]
    work += [(dtype, shape, conv_cases) for dtype in (torch.float32, torch.float16) for shape in CONV_SHAPES]
    for dtype, shape, make in work:
        for name, kernel, reference in make(k, dtype, shape):
            got = kernel()
            torch.cuda.synchronize()
            err = rel(got, reference())
            passed = err <= TOL[dtype]
            ok &= passed
            t_kernel, t_torch = timed(kernel), timed(reference)
            rows.append({"kernel": name, "dtype": str(dtype), "shape": shape, "rel_error": err, "pass": passed,
                         "kernel_ms": t_kernel, "torch_ms": t_torch})
            print(f"{name:20} {str(dtype)[6:]:8} {str(shape):18} {err:9.2e} {t_kernel:10.4f} {t_torch:9.4f} "
                  f"{t_torch / t_kernel:7.2f}x{'' if passed else '  FAIL'}")
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"gpu-{device.replace(' ', '-')}" / "validate_kernels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"schema": "stylert.bench.kernels/1", "device": device, "torch": torch.__version__,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
