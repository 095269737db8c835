"""ctypes bindings of kernels/build/libstylert_kernels{,_cpu}.so (see include/stylert_kernels.h).

`load(cuda=False)` gives the CPU reference library (host pointers); `load(cuda=True)` the CUDA one
(device pointers, e.g. torch CUDA tensors' data_ptr()). Build them first: `make -C kernels`.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

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
}


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

    def modulated_conv2d_workspace(self, batch, cin, cout, height, width, kernel, up) -> int:
        """Bytes of scratch `modulated_conv2d` needs."""
        return self.lib.stylert_modulated_conv2d_workspace(batch, cin, cout, height, width, kernel, up)

    def modulated_conv2d_output_size(self, size, kernel, up, padding, filter_size) -> int:
        return self.lib.stylert_modulated_conv2d_output_size(size, kernel, up, padding, filter_size)

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
