"""The model base every backend shares, the one list of backend names, and `open_model`.

Backends (`stylert.runtime.onnxruntime|openvino|tensorrt`) load a file and run it; this module checks what is common to all of
them (stylert metadata, input names, dtypes, shapes, batch, finite values) so a mistake reads as one
line naming the input, not a trace from inside a library. `open_model` picks the backend: `.engine`
-> TensorRT; otherwise, unless told, ONNX Runtime CUDA when onnxruntime-gpu sees a GPU, then
OpenVINO when it is installed and the CPU is x86-64, then ONNX Runtime CPU, which always works.
A backend that is present but fails to load falls back to the next with a one-line warning.
Backend modules are imported only here, inside `open_model`; they import this module, and the TensorRT
backend also `engine.py` (engine metadata, CUDA, plugin loading); neither imports a backend: no loop.
Nothing in `runtime` imports a part of stylert above it (tests/test_layers.py checks the layers).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailable, InputError, ModelError, UntrainedWeightsWarning

SUPPORTED_FORMAT = 1


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # stylert.runtime.<module>
    install: str  # what to do when it is missing


BACKENDS = {b.name: b for b in (
    Backend("onnxruntime-cpu", "onnxruntime", "pip install onnxruntime"),
    Backend("onnxruntime-cuda", "onnxruntime", "pip install onnxruntime-gpu (in place of onnxruntime), on a machine "
                                               "with an NVIDIA GPU and its CUDA/cuDNN libraries"),
    Backend("openvino", "openvino", "pip install 'stylert[openvino]'"),
    Backend("openvino-bf16", "openvino", "pip install 'stylert[openvino]', on a CPU with bf16 hardware"),
    Backend("tensorrt", "tensorrt", "install NVIDIA's `tensorrt` wheel and cuda-python on a machine with an NVIDIA GPU, "
                                    "then build an engine with `stylert build-engine`"),
)}
PLUGIN_GRAPH = ("{path}: a plugin-flavour graph (stylert::ModulatedConv2d / BAFSBlend nodes) needs TensorRT with "
                "stylert's plugins; for ONNX Runtime or OpenVINO export with --flavor portable")
# Short and ONNX Runtime spellings accepted wherever a backend is named (API, CLI, bench).
ALIASES = {"cpu": "onnxruntime-cpu", "cuda": "onnxruntime-cuda", "cpuexecutionprovider": "onnxruntime-cpu",
           "cudaexecutionprovider": "onnxruntime-cuda", "ov": "openvino", "trt": "tensorrt"}


def backend_names(spec: str | Sequence[str] | None) -> list[str] | None:
    """None (choose automatically), "cpu", "openvino,cpu" or a list -> canonical names, in order."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"providers: expected backend names, got {item!r}")
        key = item.strip().lower()
        if not key:
            continue
        name = ALIASES.get(key, key)
        if name not in BACKENDS:
            raise InputError(f"providers: unknown backend {item!r}; choose from {', '.join(BACKENDS)} "
                             "(or cpu, cuda)")
        if name not in names:
            names.append(name)
    if not names:
        raise InputError(f"providers: no backend named in {spec!r}")
    return names


def resolve_providers(spec: str | Sequence[str] | None = None) -> list[str]:
    """The backends `open_model` would try for an ONNX graph, in order (automatic when spec is None)."""
    return backend_names(spec) or auto_backends()


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules[module] = None
        return False


def auto_backends() -> list[str]:
    """The automatic order for an ONNX graph; backends that are not installed are left out."""
    chosen = []
    try:
        import onnxruntime as ort
        if "CUDAExecutionProvider" in ort.get_available_providers():
            chosen.append("onnxruntime-cuda")
    except ImportError:
        pass
    if is_x86_64() and _installed("openvino"):
        chosen.append("openvino")
    return chosen + ["onnxruntime-cpu"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: type
    shape: tuple  # ints for fixed dims, None for dynamic ones

    def describe(self) -> str:
        dims = ", ".join("batch" if d is None and i == 0 else ("?" if d is None else str(d))
                         for i, d in enumerate(self.shape))
        return f"{self.name} [{dims}] {np.dtype(self.dtype).name}"


class Model:
    """What every backend shares: stylert metadata checks and input validation. Subclasses load
    the file, set `backend`, fill `metadata`, `inputs`, `outputs`, and implement `_execute`."""
    path: Path
    backend: str
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
        """What runs the graph, in the backend's words (ONNX Runtime: its execution providers)."""
        return [self.backend]

    @property
    def on_gpu(self) -> bool:
        return self.backend in ("onnxruntime-cuda", "tensorrt")

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the backend holds; the model cannot run afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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


def default_threads() -> int | None:
    """CPU threads for a model when the caller names none: OMP_NUM_THREADS where it is set (the usual cap when
    processes share a machine; Ray sets it for its workers), else None: the backend's own choice, one per core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def _load(backend: str, path: str | Path, call: str | None, threads: int | None, ort_names: list[str]) -> Model:
    try:
        module = importlib.import_module(f".{BACKENDS[backend].module}", __package__)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {backend} is not available ({exc}): {BACKENDS[backend].install}") from None
    return module.load(path, backend, call=call, threads=threads, ort_names=ort_names)


def open_model(path: str | Path, providers: str | Sequence[str] | None = None, *, call: str | None = None,
               threads: int | None = None) -> Model:
    """Load a stylert model on the named backend(s) (tried in order) or the automatic choice; `threads`: CPU
    threads (default: `default_threads()`).

    ONNX Runtime names given together (e.g. "cuda,cpu") make one session with those providers.
    A backend that cannot load (missing library, no device, unsupported graph) raises
    BackendUnavailable when it was the only one named, and otherwise falls back with a warning;
    problems of the file itself (missing, not ONNX, wrong call) are raised at once.
    """
    names = backend_names(providers)
    if Path(path).suffix == ".engine":
        if names not in (None, ["tensorrt"]):
            raise ModelError(f"{path}: a TensorRT engine runs on the tensorrt backend only, not {', '.join(names)}")
        return _warn_untrained(_load("tensorrt", path, call, threads, []))
    if names and "tensorrt" in names:
        raise ModelError(f"{path}: TensorRT runs engines: build one with `stylert build-engine {path} -o MODEL.engine`")
    candidates = names or auto_backends()
    ort_names = [n for n in candidates if n.startswith("onnxruntime-")]
    tries = [n for n in candidates if not n.startswith("onnxruntime-") or n == ort_names[0]]  # one ORT session
    for i, backend in enumerate(tries):
        try:
            return _warn_untrained(_load(backend, path, call, threads, ort_names))
        except BackendUnavailable as exc:
            if i == len(tries) - 1:
                raise
            warnings.warn(f"{exc}; falling back to {tries[i + 1]}", RuntimeWarning, stacklevel=2)
    raise AssertionError("unreachable: onnxruntime-cpu is always a candidate or the list was explicit")


_WARNED: set[str] = set()


def _warn_untrained(model: Model) -> Model:
    """Once per model file and process: a random-weight model's results are noise."""
    key = str(model.path.resolve())
    if not model.trained and key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{model.path}: random weights (untrained): results mean nothing; for tests and benchmarks only",
                      UntrainedWeightsWarning, stacklevel=3)
    return model
