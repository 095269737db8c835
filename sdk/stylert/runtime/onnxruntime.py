"""ONNX Runtime backend: CPU (always present) and CUDA (onnxruntime-gpu)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailable, ModelError
from .model import (
    BACKENDS,
    PLUGIN_GRAPH,
    Model,
    TensorSpec,
    apply_ort_logging,
    backend_names,
    check_onnx_file,
    check_threads,
    default_threads,
    ort_log_severity,
)

PROVIDERS = {"onnxruntime-cpu": "CPUExecutionProvider", "onnxruntime-cuda": "CUDAExecutionProvider"}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


def ort_providers(names: Sequence[str]) -> list[str]:
    """ONNX Runtime's provider names for stylert's onnxruntime-* backend names; refuses missing ones."""
    available = ort.get_available_providers()
    wanted = [PROVIDERS[n] for n in names]
    for name, provider in zip(names, wanted):
        if provider not in available:
            raise BackendUnavailable(f"backend {name} is not available in this onnxruntime ({', '.join(available)}): "
                                     f"{BACKENDS[name].install}")
    return wanted


class OnnxModel(Model):
    """An ONNX Runtime session with checked inputs and the stylert metadata of the graph."""

    def __init__(self, path: str | Path, providers: str | Sequence[str] | None = ("onnxruntime-cpu",), *,
                 call: str | None = None, threads: int | None = None):
        self._check_file(path)
        names = backend_names(providers) or ["onnxruntime-cpu"]
        if any(n not in PROVIDERS for n in names):
            raise ModelError(f"OnnxModel runs on {', '.join(PROVIDERS)}, not {', '.join(names)}: use open_model")
        threads = check_threads(threads) or default_threads()
        apply_ort_logging(ort)
        options = ort.SessionOptions()
        options.log_severity_level = ort_log_severity()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=ort_providers(names))
        except ModelError:
            raise
        except Exception as exc:  # ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "stylert:" in first:
                raise ModelError(PLUGIN_GRAPH.format(path=self.path)) from None
            check_onnx_file(self.path)  # the file's own fault (cut short, external data missing), said plainly
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first[:300]})") from None
        active = self.session.get_providers()
        if names[0] == "onnxruntime-cuda" and "CUDAExecutionProvider" not in active:
            if len(names) == 1:
                raise BackendUnavailable(f"backend onnxruntime-cuda could not start (no usable GPU?): "
                                         f"{BACKENDS['onnxruntime-cuda'].install}")
            warnings.warn(f"{self.path.name}: onnxruntime-cuda could not start; running on onnxruntime-cpu",
                          RuntimeWarning, stacklevel=2)
        self.backend = "onnxruntime-cuda" if "CUDAExecutionProvider" in active else "onnxruntime-cpu"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_metadata(call)
        self.inputs = [self._spec(a) for a in self.session.get_inputs()]
        self.outputs = [self._spec(a) for a in self.session.get_outputs()]

    @staticmethod
    def _spec(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
        return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, np.float32), shape)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)


def load(path, backend: str, *, call, threads, ort_names, precision) -> OnnxModel:
    """ONNX Runtime runs the graph in its own precision: bf16 asked for is refused (open_model names OpenVINO)."""
    if precision == "bf16":
        raise BackendUnavailable(f"backend {backend} runs no bf16: precision bf16 needs openvino")
    return OnnxModel(path, ort_names or [backend], call=call, threads=threads)
