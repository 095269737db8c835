"""ctypes bindings of kernels/build/libstylert_kernels{,_cpu}.so (see include/stylert_kernels.h).

`load(cuda=False)` gives the CPU reference library (host pointers); `load(cuda=True)` the CUDA one
(device pointers, e.g. torch CUDA tensors' data_ptr()). Build them first: `make -C kernels`.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

BUILD = Path(__file__).parent / "build"
F32, F16 = 0, 1
_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "modulate": [_P, _P, _P, _I, _I, _I, _I, _P],
    "demod_coefficients": [_P, _P, _P, _I, _I, _I, _F, _P],
    "demod_bias_act": [_P, _P, _P, _P, _I, _I, _I, _I, _F, _F, _I, _P],
    "bafs_blend": [_P, _P, _P, _P, _P, _I, _I, _I, _I, _P],
    "modulated_conv2d": [_P] * 8 + [_I] * 11 + [_F, _F, _I, _P],
    "half_to_float": [_P, _P, ctypes.c_size_t, _P],
    "fused_modulated_conv2d": [_P] * 7 + [_I] * 11 + [_F, _F, _I, _P],
}
# The fused conv's prepared-weight layout (kernels_common.h): wsq float32 [I, O], padded to FUSED_ALIGN bytes,
# then fp16 [phase, tap, i_pad, o_pad] with I, O rounded up to FUSED_TILE_K, FUSED_TILE_N.
FUSED_TILE_K, FUSED_TILE_N, FUSED_ALIGN = 32, 64, 256


class KernelError(RuntimeError):
    pass


class Kernels:
    def __init__(self, cuda: bool = False):
        path = BUILD / ("libstylert_kernels.so" if cuda else "libstylert_kernels_cpu.so")
        if not path.is_file():
            raise KernelError(f"{path} not built: run `make -C kernels`")
        self.lib = ctypes.CDLL(str(path))
        self.suffix = "" if cuda else "_cpu"
        for name, args in SIGNATURES.items():
            fn = getattr(self.lib, f"stylert_{name}{self.suffix}")
            fn.argtypes, fn.restype = args, ctypes.c_int
        self.lib.stylert_modulated_conv2d_workspace.argtypes = [_I] * 7
        self.lib.stylert_modulated_conv2d_workspace.restype = ctypes.c_size_t
        self.lib.stylert_modulated_conv2d_output_size.argtypes = [_I] * 5
        self.lib.stylert_modulated_conv2d_output_size.restype = _I
        fused = "stylert_fused_modulated_conv2d"
        getattr(self.lib, f"{fused}_taps").argtypes = [_I] * 4
        getattr(self.lib, f"{fused}_taps").restype = _I
        getattr(self.lib, f"{fused}_prepared_size").argtypes = [_I] * 6
        getattr(self.lib, f"{fused}_prepared_size").restype = ctypes.c_size_t
        getattr(self.lib, f"{fused}_workspace").argtypes = [_I] * 2
        getattr(self.lib, f"{fused}_workspace").restype = ctypes.c_size_t
        getattr(self.lib, f"{fused}_prepare").argtypes = [_P] * 3 + [_I] * 6
        getattr(self.lib, f"{fused}_prepare").restype = ctypes.c_int

    def modulated_conv2d_workspace(self, batch, cin, cout, height, width, kernel, up) -> int:
        """Bytes of scratch `modulated_conv2d` needs."""
        return self.lib.stylert_modulated_conv2d_workspace(batch, cin, cout, height, width, kernel, up)

    def modulated_conv2d_output_size(self, size, kernel, up, padding, filter_size) -> int:
        return self.lib.stylert_modulated_conv2d_output_size(size, kernel, up, padding, filter_size)

    def fused_modulated_conv2d_workspace(self, batch, cout) -> int:
        """Bytes of scratch `fused_modulated_conv2d` needs (the demodulation coefficients)."""
        return self.lib.stylert_fused_modulated_conv2d_workspace(batch, cout)

    def fused_prepare(self, weight: np.ndarray, resample_filter: np.ndarray | None, up: int, padding: int) -> np.ndarray:
        """The fused conv's prepared weights (once per layer, on the host) from weight [O, I, k, k] float32 (gain
        applied) and, for up = 2, the FIR [f, f]: bytes to keep (and copy to the device for the CUDA library)."""
        cout, cin, kernel, _ = weight.shape
        taps = 1 if resample_filter is None else resample_filter.shape[-1]
        size = self.lib.stylert_fused_modulated_conv2d_prepared_size(cin, cout, kernel, up, padding, taps)
        if size == 0:
            raise KernelError(f"fused conv: kernel {kernel}, up {up}, padding {padding}, filter {taps} not supported")
        weight = np.ascontiguousarray(weight, np.float32)
        filt = None if resample_filter is None else np.ascontiguousarray(resample_filter, np.float32)
        prepared = np.empty(size, np.uint8)
        status = self.lib.stylert_fused_modulated_conv2d_prepare(
            weight.ctypes.data, None if filt is None else filt.ctypes.data, prepared.ctypes.data, cin, cout, kernel,
            up, padding, taps)
        if status != 0:
            raise KernelError(f"stylert_fused_modulated_conv2d_prepare returned status {status}")
        return prepared

    def fused_weights(self, prepared: np.ndarray, cin: int, cout: int, kernel: int, up: int, padding: int,
                      filter_size: int) -> np.ndarray:
        """The fp16 GEMM weights inside `prepared`, as [O * phases, I, T, T] with channel o * 4 + 2a + b for phase
        (a, b): the layout of ops.modconv.upsampling_phase_weights (the layer's weight itself for up = 1)."""
        taps = self.lib.stylert_fused_modulated_conv2d_taps(kernel, up, padding, filter_size)
        phases = 1 if up == 1 else 4
        i_pad, o_pad = -(-cin // FUSED_TILE_K) * FUSED_TILE_K, -(-cout // FUSED_TILE_N) * FUSED_TILE_N
        start = -(-cin * cout * 4 // FUSED_ALIGN) * FUSED_ALIGN
        w = prepared[start:].view(np.float16).reshape(phases, taps, taps, i_pad, o_pad)[..., :cin, :cout]
        return np.ascontiguousarray(w.transpose(4, 0, 3, 1, 2).reshape(cout * phases, cin, taps, taps))

    def __getattr__(self, name: str):
        if name not in SIGNATURES:
            raise AttributeError(name)
        fn = getattr(self.lib, f"stylert_{name}{self.suffix}")

        def call(*args):
            status = fn(*args)
            if status != 0:
                raise KernelError(f"stylert_{name}{self.suffix} returned status {status}")
        return call


def load(cuda: bool = False) -> Kernels:
    return Kernels(cuda)
