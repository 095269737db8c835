"""A checked ONNX Runtime session for stylert graphs.

Providers: CUDA when onnxruntime-gpu offers it, else CPU (always present). Inputs are checked
for name, dtype, rank, fixed dims, a shared batch size and finite values before they reach
ONNX Runtime, so a mistake reads as one line naming the input, not a trace from inside ORT.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from .errors import InputError, ModelError

SUPPORTED_FORMAT = 1
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: type
    shape: tuple  # ints for fixed dims, None for dynamic ones

    def describe(self) -> str:
        dims = ", ".join("batch" if d is None and i == 0 else ("?" if d is None else str(d))
                         for i, d in enumerate(self.shape))
        return f"{self.name} [{dims}] {np.dtype(self.dtype).name}"


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """None -> CUDA if available, then CPU. Names may be ORT's or the aliases cpu/cuda/tensorrt."""
    available = ort.get_available_providers()
    if providers is None:
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    resolved = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    missing = [p for p in resolved if p not in available]
    if missing:
        raise ModelError(f"execution provider(s) {missing} not available in this onnxruntime; available: {available}")
    return resolved


class Model:
    """What every backend shares: stylert metadata checks and input validation. Subclasses load
    the file, fill `metadata`, `inputs`, `outputs`, and implement `_execute` and `providers`."""
    path: Path
    metadata: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def _check_file(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        if self.path.stat().st_size == 0:
            raise ModelError(f"{self.path}: model file is empty")

    @property
    def providers(self) -> list[str]:
        raise NotImplementedError

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _check_metadata(self, call: str | None) -> None:
        fmt = self.metadata.get("stylert.format")
        if fmt is None:
            raise ModelError(f"{self.path}: no stylert metadata; export models with `stylert export`")
        if not fmt.isdigit() or int(fmt) > SUPPORTED_FORMAT:
            raise ModelError(f"{self.path}: made by stylert {self.metadata.get('stylert.version', '?')} in format {fmt}; "
                             f"this runtime reads format <= {SUPPORTED_FORMAT}: upgrade stylert")
        if call is not None and self.call != call:
            raise ModelError(f"{self.path}: a model for '{self.call}', not '{call}'")

    @property
    def call(self) -> str:
        return self.metadata.get("stylert.call", "?")

    @property
    def trained(self) -> bool:
        return self.metadata.get("stylert.trained", "true") == "true"

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validated, contiguous arrays of the graph's dtypes; raises InputError naming the problem."""
        expected = {s.name: s for s in self.inputs}
        unknown = sorted(set(feeds) - set(expected))
        missing = sorted(set(expected) - set(feeds))
        if unknown or missing:
            want = "; ".join(s.describe() for s in self.inputs)
            raise InputError(f"{self.path.name}: inputs {sorted(feeds)} given, expected {want}")
        out, batch = {}, None
        for name, spec in expected.items():
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"input '{name}': expected a numpy array, got {type(arr).__name__}")
            if not np.issubdtype(arr.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating):
                raise InputError(f"input '{name}': dtype {arr.dtype} is not floating point; expected {np.dtype(spec.dtype).name}")
            if arr.ndim != len(spec.shape):
                raise InputError(f"input '{name}': shape {arr.shape} has rank {arr.ndim}, expected {spec.describe()}")
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
                if want is not None and got != want:
                    raise InputError(f"input '{name}': shape {arr.shape} differs at axis {axis} ({got} != {want}); "
                                     f"expected {spec.describe()}")
            if arr.ndim and arr.shape[0] == 0:
                raise InputError(f"input '{name}': empty batch")
            if arr.ndim and spec.shape[0] is None:
                if batch is not None and arr.shape[0] != batch:
                    raise InputError(f"input '{name}': batch {arr.shape[0]} differs from the other inputs' batch {batch}")
                batch = arr.shape[0]
            arr = np.ascontiguousarray(arr, dtype=spec.dtype)
            if not np.isfinite(arr).all():
                raise InputError(f"input '{name}': contains NaN or infinity")
            out[name] = arr
        return out

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on checked inputs; returns every output by name."""
        values = self._execute(self.check_inputs(feeds))
        return {spec.name: value for spec, value in zip(self.outputs, values)}


class OnnxModel(Model):
    """An ONNX Runtime session with checked inputs and the stylert metadata of the graph."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, *, call: str | None = None,
                 threads: int | None = None):
        self._check_file(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=resolve_providers(providers))
        except ModelError:
            raise
        except Exception as exc:  # ORT raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "stylert:" in first:
                raise ModelError(f"{self.path}: a plugin-flavour graph (stylert::ModulatedConv2d / BAFSBlend nodes) "
                                 "needs TensorRT with stylert's plugins; for ONNX Runtime export with "
                                 "--flavor portable") from None
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first[:300]})") from None
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


def open_model(path: str | Path, providers: Sequence[str] | None = None, *, call: str | None = None,
               threads: int | None = None) -> Model:
    """A `.engine` file runs on TensorRT (stylert build-engine made it); anything else on ONNX Runtime."""
    if Path(path).suffix == ".engine":
        from .trt_runtime import TensorRTModel
        return TensorRTModel(path, call=call)
    return OnnxModel(path, providers, call=call, threads=threads)
