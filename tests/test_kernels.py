"""The kernels' C ABI: the CPU reference library against the PyTorch reference, fp32 and fp16;
the CUDA library is built for the listed architectures (running it needs a GPU:
benchmarks/gpu/validate_kernels.py)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import rel_error

torch = pytest.importorskip("torch")
KERNELS = Path(__file__).parents[1] / "kernels"
sys.path.insert(0, str(KERNELS))
import bindings  # noqa: E402
from stylert_export.ops import bias_lrelu, composed_up_kernel, demod_coefficients, modulated_conv_bias_act  # noqa: E402
from stylert_export.ops.modconv import upsampling_phase_weights  # noqa: E402

sys.path.insert(0, str(KERNELS.parent / "benchmarks" / "gpu"))
from stage_kernels import fused_reference  # noqa: E402  (the GPU check's float64 reference of the fused kernel)

DTYPES = {bindings.F32: np.float32, bindings.F16: np.float16}
TOL = {bindings.F32: 1e-6, bindings.F16: 2e-3}


@pytest.fixture(scope="module")
def cpu():
    subprocess.run(["make", "-s", "-C", str(KERNELS), "cpu"], check=True)
    return bindings.load(cuda=False)


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", [bindings.F32, bindings.F16])
def test_modulate(cpu, dtype):
    rng = np.random.default_rng(dtype)
    x = rng.standard_normal((2, 5, 7, 3)).astype(DTYPES[dtype])
    s = rng.standard_normal((2, 5)).astype(np.float32)
    out = poisoned(x.shape, DTYPES[dtype])
    cpu.modulate(ptr(x), ptr(s), ptr(out), 2, 5, 21, dtype, None)
    want = x.astype(np.float32) * s[:, :, None, None]
    err = rel_error(out, want)
    print(f"modulate dtype={dtype}: relative error {err:.2e}")
    assert err < TOL[dtype]


def test_demod_coefficients(cpu):
    rng = np.random.default_rng(3)
    w = torch.from_numpy(rng.standard_normal((6, 9, 3, 3)).astype(np.float32))
    s = torch.from_numpy(rng.standard_normal((2, 9)).astype(np.float32))
    wsq = np.ascontiguousarray(w.square().sum(dim=[2, 3]).t().numpy())
    d = poisoned((2, 6), np.float32)
    cpu.demod_coefficients(ptr(s.numpy()), ptr(wsq), ptr(d), 2, 9, 6, 1e-8, None)
    assert rel_error(d, demod_coefficients(w, s).numpy()) < 1e-5


@pytest.mark.parametrize("dtype", [bindings.F32, bindings.F16])
@pytest.mark.parametrize("lrelu,clamp", [(1, -1.0), (1, 0.5), (0, 0.8)])
def test_demod_bias_act(cpu, dtype, lrelu, clamp):
    rng = np.random.default_rng(lrelu + int(abs(clamp) * 10))
    y = rng.standard_normal((2, 4, 5, 5)).astype(DTYPES[dtype])
    d = rng.uniform(0.5, 2, (2, 4)).astype(np.float32)
    noise = rng.standard_normal((5, 5)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    out = y.copy()
    cpu.demod_bias_act(ptr(out), ptr(d), ptr(noise), ptr(bias), 2, 4, 25, lrelu, 2 ** 0.5 if lrelu else 1.0, clamp, dtype, None)
    t = torch.from_numpy(y.astype(np.float32)) * torch.from_numpy(d)[:, :, None, None] + torch.from_numpy(noise)
    c = None if clamp < 0 else clamp
    want = bias_lrelu(t, torch.from_numpy(bias), clamp=c) if lrelu else (t + torch.from_numpy(bias)[None, :, None, None]).clamp(-c, c)
    assert rel_error(out, want.numpy()) < TOL[dtype]


@pytest.mark.parametrize("dtype", [bindings.F32, bindings.F16])
def test_bafs_blend(cpu, dtype):
    rng = np.random.default_rng(9)
    fs, fi = (rng.standard_normal((2, 3, 4, 4)).astype(DTYPES[dtype]) for _ in range(2))
    ms = rng.uniform(0, 1, (2, 1, 4, 4)).astype(DTYPES[dtype])
    mc = rng.uniform(0, 1, (2, 3, 1, 1)).astype(DTYPES[dtype])
    out = poisoned(fs.shape, DTYPES[dtype])
    cpu.bafs_blend(ptr(fs), ptr(fi), ptr(ms), ptr(mc), ptr(out), 2, 3, 16, dtype, None)
    f32 = [a.astype(np.float32) for a in (fs, fi, ms, mc)]
    want = f32[2] * f32[3] * f32[0] + (1 - f32[2]) * (1 - f32[3]) * f32[1]
    assert rel_error(out, want) < TOL[dtype]


def test_kernels_compose_into_the_modulated_conv_bias_act(cpu):
    """modulate -> library conv -> demod coefficients + epilogue == the ModulatedConv2d node's reference."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    s = (rng.standard_normal((2, 8)) + 1).astype(np.float32)
    w = torch.from_numpy((rng.standard_normal((6, 8, 3, 3)) / 8).astype(np.float32))
    bias = rng.standard_normal(6).astype(np.float32)
    noise = rng.standard_normal((9, 9)).astype(np.float32)
    xm = poisoned(x.shape, np.float32)
    cpu.modulate(ptr(x), ptr(s), ptr(xm), 2, 8, 81, bindings.F32, None)
    y = np.ascontiguousarray(torch.nn.functional.conv2d(torch.from_numpy(xm), w, padding=1).numpy())
    wsq = np.ascontiguousarray(w.square().sum(dim=[2, 3]).t().numpy())
    d = poisoned((2, 6), np.float32)
    cpu.demod_coefficients(ptr(s), ptr(wsq), ptr(d), 2, 8, 6, 1e-8, None)
    cpu.demod_bias_act(ptr(y), ptr(d), ptr(noise), ptr(bias), 2, 6, 81, 1, 2 ** 0.5, 256.0, bindings.F32, None)
    want = modulated_conv_bias_act(torch.from_numpy(x), torch.from_numpy(s), w, torch.from_numpy(bias),
                                   torch.from_numpy(noise), None, up=1, padding=1, demodulate=True, lrelu=True, clamp=256.0)
    err = rel_error(y, want.numpy())
    print(f"CPU kernels composed vs modulated_conv_bias_act: relative error {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("up,padding,kernel", [(1, 1, 3), (1, 0, 1), (2, 1, 3)])
@pytest.mark.parametrize("dtype", [bindings.F32, bindings.F16])
@pytest.mark.parametrize("demodulate,lrelu,clamp,with_noise", [(1, 1, 256.0, True), (0, 0, -1.0, False)])
def test_modulated_conv2d_equals_the_plugin_reference(cpu, up, padding, kernel, dtype, demodulate, lrelu, clamp,
                                                      with_noise):
    """The whole ModulatedConv2d node (direct conv / transposed conv + FIR, fused epilogue) against
    ops.modconv.modulated_conv_bias_act, on fresh random inputs with a poisoned output and workspace."""
    rng = np.random.default_rng(up * 100 + kernel + dtype)
    b, cin, cout, h = 2, 5, 4, 7
    x = rng.standard_normal((b, cin, h, h)).astype(DTYPES[dtype])
    s = (rng.standard_normal((b, cin)) + 1).astype(np.float32)
    w = (rng.standard_normal((cout, cin, kernel, kernel)) / cin).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32)
    f /= f.sum()
    size = cpu.modulated_conv2d_output_size(h, kernel, up, padding, 4)
    assert size == h * up + 2 * padding - kernel + 1 if up == 1 else size == 2 * h
    noise = rng.standard_normal((size, size)).astype(np.float32) if with_noise else None
    out = poisoned((b, cout, size, size), DTYPES[dtype])
    work = poisoned(cpu.modulated_conv2d_workspace(b, cin, cout, h, h, kernel, up) // 4, np.float32)
    cpu.modulated_conv2d(ptr(x), ptr(s), ptr(w), ptr(bias), None if noise is None else ptr(noise),
                         ptr(f) if up == 2 else None, ptr(out), ptr(work), b, cin, cout, h, h, kernel, up, padding, 4,
                         demodulate, lrelu, 2 ** 0.5, clamp, dtype, None)
    t = torch.from_numpy
    want = modulated_conv_bias_act(t(x.astype(np.float32)), t(s), t(w), t(bias), None if noise is None else t(noise),
                                   t(f) if up == 2 else None, up=up, padding=padding, demodulate=bool(demodulate),
                                   lrelu=bool(lrelu), clamp=None if clamp < 0 else clamp)
    err = rel_error(out.astype(np.float32), want.numpy())
    print(f"modulated_conv2d_cpu up={up} k={kernel} dtype={dtype}: relative error {err:.2e}")
    assert err < (1e-5 if dtype == bindings.F32 else 2e-3)


def _filter(symmetric: bool) -> np.ndarray:
    taps = [1, 3, 3, 1] if symmetric else [1, 2, 5, 1]
    f = np.outer(taps, [1, 3, 3, 1] if symmetric else [2, 3, 1, 1]).astype(np.float32)
    return f / f.sum()


@pytest.mark.parametrize("symmetric", [True, False])
def test_fused_prepare_is_the_phase_form_of_composed_up_kernel(cpu, symmetric):
    """The fused kernel's host weight preparation (up = 2): its fp16 phase kernels are
    upsampling_phase_weights rounded to fp16, every tap of K = composed_up_kernel(W, f) lands in exactly one
    phase, and wsq is sum_k W^2; up = 1 keeps the weight itself. Fresh random weights, asymmetric filter too."""
    rng = np.random.default_rng(30 + symmetric)
    cout, cin = 70, 40  # neither a whole tile: the padding is exercised
    w = (rng.standard_normal((cout, cin, 3, 3)) / 10).astype(np.float32)
    f = _filter(symmetric)
    prepared = cpu.fused_prepare(w, f, 2, 1)
    assert prepared.size == cpu.lib.stylert_fused_modulated_conv2d_prepared_size(cin, cout, 3, 2, 1, 4)
    got = cpu.fused_weights(prepared, cin, cout, 3, 2, 1, 4).astype(np.float64)
    phases, _ = upsampling_phase_weights(torch.from_numpy(w).double(), torch.from_numpy(f).double(), 1)
    err = rel_error(got, phases.numpy())
    print(f"fused prepare (up 2, symmetric={symmetric}): vs upsampling_phase_weights {err:.2e}, "
          f"vs its fp16 rounding {rel_error(got, phases.half().double().numpy()):.2e}")
    assert err < 1e-3 and np.array_equal(got, phases.half().double().numpy())
    K = composed_up_kernel(torch.from_numpy(w).double(), torch.from_numpy(f).double()).half().double().numpy()
    per_pair = got.reshape(cout, 4, cin, -1).transpose(0, 2, 1, 3).reshape(cout, cin, -1)
    taken = np.sort(per_pair[:, :, np.abs(per_pair).sum(axis=(0, 1)) > 0], axis=-1)
    assert np.array_equal(taken, np.sort(K.reshape(cout, cin, -1), axis=-1))
    wsq = prepared[:cin * cout * 4].view(np.float32).reshape(cin, cout)
    assert rel_error(wsq, np.square(w).sum(axis=(2, 3)).T) < 1e-6
    same = cpu.fused_weights(cpu.fused_prepare(w, None, 1, 1), cin, cout, 3, 1, 1, 1)
    assert np.array_equal(same, w.astype(np.float16))


FUSED_LAYERS = [(1, 1, 3, True), (1, 0, 1, True), (2, 1, 3, True), (2, 1, 3, False)]  # up, padding, kernel, symmetric


@pytest.mark.parametrize("up,padding,kernel,symmetric", FUSED_LAYERS)
@pytest.mark.parametrize("dtype", [bindings.F32, bindings.F16])
@pytest.mark.parametrize("demodulate,lrelu,clamp,with_noise", [(1, 1, 256.0, True), (0, 0, -1.0, False)])
def test_fused_modulated_conv2d_equals_the_plugin_reference(cpu, up, padding, kernel, symmetric, dtype, demodulate,
                                                            lrelu, clamp, with_noise):
    """The tensor-core kernel's CPU reference (same entry point and math: fp16 operands, fp32 accumulation, NHWC,
    up = 2 in the phase form) against (a) the ModulatedConv2d node's reference in float64 (within fp16 operand
    rounding) and (b) the GPU check's float64 reference from the same fp16 operands (to float32 accumulation
    and output rounding). Fresh random inputs, 40 -> 70 channels (neither a whole tile), poisoned outputs."""
    rng = np.random.default_rng(up * 1000 + kernel * 100 + dtype * 10 + demodulate + 2 * symmetric)
    b, cin, cout, h = 2, 40, 70, 7
    x = rng.standard_normal((b, h, h, cin)).astype(DTYPES[dtype])  # NHWC
    s = (rng.standard_normal((b, cin)) + 1).astype(np.float32)
    w = (rng.standard_normal((cout, cin, kernel, kernel)) / np.sqrt(cin * kernel * kernel)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    f = _filter(symmetric) if up == 2 else None
    prepared = cpu.fused_prepare(w, f, up, padding)
    size = h * up
    noise = rng.standard_normal((size, size)).astype(np.float32) if with_noise else None
    out = poisoned((b, size, size, cout), DTYPES[dtype])
    work = poisoned(cpu.fused_modulated_conv2d_workspace(b, cout) // 4, np.float32)
    cpu.fused_modulated_conv2d(ptr(x), ptr(s), ptr(prepared), ptr(bias), None if noise is None else ptr(noise),
                               ptr(out), ptr(work), b, cin, cout, h, h, kernel, up, padding, 4, demodulate, lrelu,
                               2 ** 0.5, clamp, dtype, None)
    t = torch.from_numpy
    node = modulated_conv_bias_act(t(x.astype(np.float64)).permute(0, 3, 1, 2), t(s).double(), t(w).double(),
                                   t(bias).double(), None if noise is None else t(noise).double(),
                                   None if f is None else t(f).double(), up=up, padding=padding,
                                   demodulate=bool(demodulate), lrelu=bool(lrelu), clamp=None if clamp < 0 else clamp)
    exact = fused_reference(cpu, t(x), t(s), t(w), prepared, t(bias), None if noise is None else t(noise),
                            None if f is None else t(f), up, padding, bool(demodulate), bool(lrelu), 2 ** 0.5, clamp)
    err_node = rel_error(out, node.permute(0, 2, 3, 1).numpy())
    err_exact = rel_error(out, exact.numpy())
    floor = rel_error(exact.numpy().astype(DTYPES[dtype]), exact.numpy())  # the output's own rounding
    print(f"fused_modulated_conv2d_cpu up={up} k={kernel} symmetric={symmetric} dtype={dtype}: vs node reference "
          f"{err_node:.2e}, vs fp16-operand float64 reference {err_exact:.2e} (output rounding {floor:.2e})")
    assert err_node < 2e-3
    assert err_exact <= 1e-5 + 2 * floor


def test_fused_refuses_what_it_does_not_support(cpu):
    """Shapes it cannot run, missing filter or workspace: BAD_ARGUMENT, and a prepared size of 0."""
    assert cpu.lib.stylert_fused_modulated_conv2d_prepared_size(8, 8, 3, 3, 1, 4) == 0  # up 3
    assert cpu.lib.stylert_fused_modulated_conv2d_prepared_size(8, 8, 3, 2, 0, 4) == 0  # not a 2x upsampling
    w = np.ones((4, 4, 3, 3), np.float32)
    with pytest.raises(bindings.KernelError, match="not supported"):
        cpu.fused_prepare(w, _filter(True), 2, 0)
    prepared = cpu.fused_prepare(w, None, 1, 1)
    x, out, s, bias = (np.ones(n, np.float32) for n in (4 * 16, 4 * 16, 4, 4))
    with pytest.raises(bindings.KernelError, match="status 1"):  # demodulation without its workspace
        cpu.fused_modulated_conv2d(ptr(x), ptr(s), ptr(prepared), ptr(bias), None, ptr(out), None, 1, 4, 4, 4, 4, 3,
                                   1, 1, 1, 1, 0, 1.0, -1.0, bindings.F32, None)


def test_bad_arguments_are_refused(cpu):
    with pytest.raises(bindings.KernelError, match="status 1"):
        cpu.bafs_blend(None, None, None, None, None, 1, 1, 1, bindings.F32, None)


def test_software_half_matches_ieee(cpu):
    """The CPU reference's binary16 conversions (no _Float16 needed, GCC 11 builds it) against numpy's:
    every one of the 65536 half values widens exactly, and float32 -> half rounds to nearest even."""
    bits = np.arange(65536, dtype=np.uint16)
    out = np.full(65536, np.nan, np.float32)
    cpu.half_to_float(ptr(bits), ptr(out), 65536, None)
    want = bits.view(np.float16).astype(np.float32)
    assert np.array_equal(out, want, equal_nan=True)
    rng = np.random.default_rng(20)
    x = np.concatenate([rng.standard_normal(100000) * 10.0 ** rng.integers(-9, 6, 100000),
                        [65504.0, 65519.0, 65520.0, 6.0e-8, 2.9e-8, 3.0e-8, np.inf]]).astype(np.float32)
    y = np.ones(x.size, np.float16)  # y * d with d = x, one channel each: stores x rounded to half in software
    zeros = np.zeros(x.size, np.float32)  # held here: a temporary's memory could be reused during the call
    cpu.demod_bias_act(ptr(y), ptr(x), None, ptr(zeros), 1, x.size, 1, 0, 1.0, -1.0, bindings.F16, None)
    assert np.array_equal(y.view(np.uint16), x.astype(np.float16).view(np.uint16))


def test_cuda_library_builds_for_the_listed_architectures():
    nvcc = subprocess.run(["which", "nvcc"], capture_output=True, text=True)
    if nvcc.returncode != 0:
        pytest.skip("nvcc not installed: the CUDA library cannot be built here")
    out = subprocess.run(["make", "-C", str(KERNELS), "cuda"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lib = (KERNELS / "build" / "libstylert_kernels.so").read_bytes()
    line = out.stdout.split("CUDA library built for sm_")[-1].splitlines()[0]
    assert line.endswith(" + PTX"), line
    built = line.removesuffix(" + PTX").split()
    assert {"75", "80", "86", "87", "89", "90"} <= set(built)
    assert all(f"sm_{a}".encode() in lib for a in built)
    command = subprocess.run(["make", "-n", "-B", "-C", str(KERNELS), "cuda"], capture_output=True, text=True).stdout
    assert f"arch=compute_{built[-1]},code=compute_{built[-1]}" in command  # PTX of the newest, for newer GPUs
    symbols = subprocess.run(["nm", "-D", str(KERNELS / "build" / "libstylert_kernels.so")], capture_output=True,
                             text=True).stdout
    assert all(f"stylert_{name}" in symbols for name in bindings.SIGNATURES)
    names = {line.split()[-1] for line in symbols.splitlines() if line.strip()}
    assert {f"stylert_fused_modulated_conv2d_{host}" for host in ("taps", "prepared_size", "workspace", "prepare")} <= names


TRT_INCLUDE = os.environ.get("TRT_INCLUDE") or str(KERNELS.parents[1] / "shared/third_party/tensorrt/include")
NO_TRT_HEADERS = (f"TensorRT headers not found: {Path(TRT_INCLUDE, 'NvInferRuntime.h')} is missing; set TRT_INCLUDE "
                  "to the include/ folder of a TensorRT install or of the NVIDIA/TensorRT repository (not on PyPI), or "
                  "lay shared/third_party/tensorrt beside the checkout")


def missing_under_ci(reason: str) -> None:
    """What a check needs is absent: a failure under CI (CI=true, set by .ci/run), where the README says it is
    checked; a skip naming what is missing elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def test_tensorrt_plugins_build_and_pass_the_host_check():
    """The IPluginV3 library compiles for every architecture and exports only TensorRT's loading entry
    points; its host-test build passes plugin_check (creators, fields, formats, enqueue == C ABI)."""
    if not Path(TRT_INCLUDE, "NvInferRuntime.h").is_file():
        missing_under_ci(NO_TRT_HEADERS)
    nvcc = subprocess.run(["which", "nvcc"], capture_output=True, text=True).returncode == 0
    if nvcc:
        out = subprocess.run(["make", "-C", str(KERNELS), "plugins", f"TRT_INCLUDE={TRT_INCLUDE}"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(KERNELS / "build" / "libstylert_plugins.so")],
                                 capture_output=True, text=True).stdout
        exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
        assert exported == {"getCreators", "setLoggerFinder"}
    check = subprocess.run(["make", "-s", "-C", str(KERNELS), "plugin-check", f"TRT_INCLUDE={TRT_INCLUDE}"],
                           capture_output=True, text=True)
    print(check.stdout)
    assert check.returncode == 0 and "0 failure(s)" in check.stdout, check.stdout + check.stderr


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs an NVIDIA GPU (none on CI or this machine): benchmarks/gpu/validate_kernels.py")
def test_cuda_kernels_against_reference(tmp_path):
    """On a GPU: every CUDA kernel against PyTorch, fp32 and fp16, outputs poisoned with NaN."""
    result = subprocess.run([sys.executable, "benchmarks/gpu/validate_kernels.py", "--json", str(tmp_path / "k.json")],
                            cwd=KERNELS.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
