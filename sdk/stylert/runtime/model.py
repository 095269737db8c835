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

import base64
import binascii
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, cast

import numpy as np

from ..errors import BackendUnavailable, InputError, ModelError, UntrainedWeightsWarning
from .precision import Choice, pinned_precision

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


def cpu_name() -> str:
    """The CPU's model name as Linux reports it, else the platform's word for it ("?" where neither says)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "?"


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


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # read_meta's default: the key must be there


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
    def precision_choice(self) -> Choice:
        """The precision the network computes in and why: OpenVINO's f32 or bf16 (`runtime/precision.py`); on the
        other backends the graph's own (f32, fp16 from `export --fp16`, int8 from `stylert quantize`)."""
        choice = getattr(self, "choice", None)
        if choice is not None:
            return choice
        own = {"fp32": "f32", "fp16": "fp16", "int8": "int8"}.get(self.metadata.get("stylert.precision", "fp32"), "f32")
        return Choice(own, f"{self.backend} runs the graph in its own precision")

    @property
    def precision(self) -> str:
        return self.precision_choice.precision

    def describe(self) -> dict:
        """What runs this model, as `stylert info`, GET /models and `stylert bench` report it."""
        choice = self.precision_choice.describe()
        return {"path": str(self.path), "call": self.call, "backend": self.backend, "precision": choice["precision"],
                "precision_reason": choice["reason"], "precision_error": choice["error"]}

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
        check_metadata(self.metadata, self.path, call)

    def meta(self, key: str, kind: Any = str, *, shape: Sequence[int] | None = None, minimum: float | None = None,
             maximum: float | None = None, default: Any = REQUIRED) -> Any:
        """One metadata value, checked: see `read_meta` (ModelError naming the file and the key)."""
        return read_meta(self.metadata, self.path, key, kind, shape=shape, minimum=minimum, maximum=maximum,
                         default=default)

    @property
    def call(self) -> str:
        return str(self.metadata.get("stylert.call", "?"))

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


MAX_COUNT = 1 << 16  # the largest count (codes, dims, ws) a stylert graph's metadata may declare
# Bounds of the integer keys stylert's calls read (inclusive), so a wrong value is refused here rather than as a
# MemoryError or an OpenCV error later; noise_size is a sum over a generator's noise maps (2.8M at 1024 px).
META_BOUNDS: dict[str, tuple[int, int]] = {
    "stylert.resolution": (8, 4096), "stylert.noise_size": (1, 1 << 25), "stylert.num_ws": (1, 64),
    "stylert.num_codes": (1, MAX_COUNT), "stylert.code_dim": (1, MAX_COUNT), "stylert.q_dim": (1, MAX_COUNT),
    "stylert.z_dim": (1, MAX_COUNT), "stylert.w_dim": (1, MAX_COUNT), "stylert.token_stride": (1, 4096),
    "stylert.semantic_classes": (1, 4096),
}
POWER_OF_TWO = ("stylert.resolution",)
_INT = re.compile(r"[+-]?[0-9]{1,18}")  # more digits than any bound allows are not read (int() refuses 4300+)
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _short(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def read_meta(metadata: Mapping[str, Any], path: str | Path, key: str, kind: Any = str, *,
              shape: Sequence[int] | None = None, minimum: float | None = None, maximum: float | None = None,
              default: Any = REQUIRED) -> Any:
    """One value of a model's stylert metadata, parsed and checked, or ModelError "<file>: metadata stylert.<key> ...".

    key: "resolution" means "stylert.resolution"; a key with a dot ("engine.batch") is taken as written.
    kind: str; int (ASCII digits only); float (finite); bool ("true"/"false"); "json" (parsed); "b64f32": base64 of
    little-endian float32 values, returned as a float32 array of `shape` (required; its count must match, values
    finite). Bounds: minimum/maximum (inclusive) for int and float; the integer keys in META_BOUNDS have theirs by
    default (resolution: a power of two in 8..4096; counts >= 1 and at most MAX_COUNT). default: returned when the
    key is missing (a present but malformed value is still refused)."""
    full = key if "." in key else f"stylert.{key}"
    where = f"{path}: metadata {full}"
    if full not in metadata or metadata[full] is None:
        if default is not REQUIRED:
            return default
        raise ModelError(f"{where} missing; export the model again with `stylert export`")
    raw = metadata[full]
    if kind is str:
        if not isinstance(raw, str):
            raise ModelError(f"{where} is not text: {_short(raw)}")
        return raw
    text = raw if isinstance(raw, str) else json.dumps(raw)
    low: float | None
    high: float | None
    if kind is bool:
        if text.strip().lower() not in ("true", "false"):
            raise ModelError(f"{where} is not true or false: {_short(text)}")
        return text.strip().lower() == "true"
    if kind == "json":
        if not isinstance(raw, str):
            return raw
        try:
            return json.loads(text)
        except ValueError:
            raise ModelError(f"{where} is not JSON: {_short(text)}") from None
    if kind is int:
        if isinstance(raw, bool) or not _INT.fullmatch(text.strip()):
            raise ModelError(f"{where} is not an integer: {_short(text)}")
        value: Any = int(text.strip())
        bounds = META_BOUNDS.get(full)
        low = (bounds[0] if bounds else None) if minimum is None else minimum
        high = (bounds[1] if bounds else None) if maximum is None else maximum
        if full in POWER_OF_TWO and value & (value - 1):
            raise ModelError(f"{where} is {value}, not a power of two ({low}..{high})")
    elif kind is float:
        if isinstance(raw, bool) or not _FLOAT.fullmatch(text.strip()):
            raise ModelError(f"{where} is not a number: {_short(text)}")
        value = float(text.strip())
        if not np.isfinite(value):
            raise ModelError(f"{where} is not finite: {_short(text)}")
        low, high = minimum, maximum
    elif kind == "b64f32":
        if shape is None:
            raise TypeError("read_meta: kind 'b64f32' needs a shape")
        want = int(np.prod(shape))
        try:
            data = base64.b64decode(text.strip().encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise ModelError(f"{where} is not base64 text: {_short(text)}") from None
        if len(data) % 4:
            raise ModelError(f"{where} holds {len(data)} bytes, not whole float32 values")
        if len(data) // 4 != want:
            raise ModelError(f"{where} holds {len(data) // 4} values, expected {'x'.join(map(str, shape))} = {want}")
        array = np.frombuffer(data, "<f4").astype(np.float32).reshape(tuple(shape))
        if not np.isfinite(array).all():
            raise ModelError(f"{where} holds NaN or infinite values")
        return array
    else:
        raise TypeError(f"read_meta: unknown kind {kind!r}")
    if low is not None and value < low:
        raise ModelError(f"{where} is {value}, below its minimum {low}")
    if high is not None and value > high:
        raise ModelError(f"{where} is {value}, above its maximum {high}")
    return value


def check_metadata(metadata: Any, path: str | Path, call: str | None = None) -> None:
    """The checks every model passes on opening: stylert metadata present (a mapping), its format an integer this
    runtime reads, and the call the one asked for. ModelError naming the file otherwise."""
    if not isinstance(metadata, Mapping):
        raise ModelError(f"{path}: stylert metadata is a {type(metadata).__name__}, not a mapping of keys")
    if metadata.get("stylert.format") is None:
        raise ModelError(f"{path}: no stylert metadata; export models with `stylert export`")
    fmt = str(metadata["stylert.format"]).strip()
    if not (fmt.isascii() and fmt.isdigit() and len(fmt) <= 9) or int(fmt) < 1:
        raise ModelError(f"{path}: metadata stylert.format is not a format number: {_short(fmt)}; "
                         "export the model again with `stylert export`")
    if int(fmt) > SUPPORTED_FORMAT:
        raise ModelError(f"{path}: made by stylert {metadata.get('stylert.version', '?')} in format {fmt}; "
                         f"this runtime reads format <= {SUPPORTED_FORMAT}: upgrade stylert")
    if call is not None:
        if metadata.get("stylert.call") is None:
            raise ModelError(f"{path}: metadata stylert.call missing; export the model again with `stylert export`")
        if str(metadata["stylert.call"]) != call:
            raise ModelError(f"{path}: a model for '{metadata['stylert.call']}', not '{call}'")


MAX_THREADS = 1024


def check_threads(threads: Any) -> int | None:
    """The one check of `threads` for every backend: None (the default), or an integer (Python or numpy) in
    1..MAX_THREADS; InputError naming `threads` otherwise (2.5, -1, 0, True, "4")."""
    if threads is None:
        return None
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise InputError(f"threads: expected a whole number of CPU threads (1 or more) or None, got {threads!r}")
    if not 1 <= int(threads) <= MAX_THREADS:
        raise InputError(f"threads: expected 1..{MAX_THREADS} CPU threads (or None for the default), got {int(threads)}")
    return int(threads)


def check_onnx_file(path: str | Path) -> None:
    """Why an ONNX file cannot load, when the file is at fault: not ONNX (or cut short), a plugin-flavour graph, or
    external data that is missing, outside the model's folder or shorter than its tensors need. Raises ModelError
    naming the file; returns when none of these is found (the backend's own reason stands). Reads the graph's
    protobuf only; called when a backend failed, so a loadable model pays nothing for it."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"{path}: not a loadable ONNX model (no graph or opset: truncated, or not ONNX)")
    if any(p.key == "stylert.flavor" and p.value == "plugin" for p in model.metadata_props):
        raise ModelError(PLUGIN_GRAPH.format(path=path))
    folder = path.absolute().parent
    sizes: dict[Path, int] = {}
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as exc:  # a negative offset or length, a junk field
            raise ModelError(f"{path}: tensor '{tensor.name}' has unreadable external data fields ({exc})") from None
        data = Path(os.path.normpath(folder / info.location)) if info.location else None
        if data is None or not data.is_relative_to(folder):
            raise ModelError(f"{path}: tensor '{tensor.name}' names external data {info.location!r} outside the "
                             "model's folder")
        if data not in sizes:
            if not data.is_file():
                raise ModelError(f"{path}: its external data file {data.name} is missing (tensor '{tensor.name}'); "
                                 "keep it beside the model")
            sizes[data] = data.stat().st_size
        offset = int(info.offset or 0)
        length = info.length
        if length is None:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
            length = int(np.prod(tensor.dims)) * itemsize
        if offset + int(length) > sizes[data]:
            raise ModelError(f"{path}: its external data file {data.name} is truncated ({sizes[data]} bytes; tensor "
                             f"'{tensor.name}' needs bytes {offset}..{offset + int(length)})")


# library_logging's choice: None until called (libraries keep their own defaults), else verbose or not.
_LIBRARY_VERBOSE: bool | None = None
_LIBRARY_MODULES = r"(onnxruntime|openvino|onnx|google\.protobuf)(\..*)?"


def library_logging(verbose: bool = False) -> None:
    """What the backends' libraries print around stylert's own lines: nothing unless `verbose`.

    Quiet: ONNX Runtime's default logger and sessions at FATAL only (sessions log at ERROR otherwise), OpenVINO's and
    TensorFlow-frontend C++ logs off (TF_CPP_MIN_LOG_LEVEL, GLOG_minloglevel, set for libraries loaded later), and
    the libraries' own warnings (RuntimeWarning, UserWarning, DeprecationWarning raised from their modules) ignored.
    stylert's warnings (fallback, untrained weights) still show. Verbose: the libraries' defaults. Call it once at
    start-up (the CLI's main does, with --verbose); applied again when a backend loads its library."""
    global _LIBRARY_VERBOSE
    _LIBRARY_VERBOSE = bool(verbose)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "3")
        for category in (RuntimeWarning, UserWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
    else:  # the quiet filters removed; the libraries' warnings shown as by default (once per place)
        cast(list, warnings.filters)[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and getattr(f[3], "pattern", None) == _LIBRARY_MODULES)]
        warnings.filterwarnings("default", module=_LIBRARY_MODULES)
    if "onnxruntime" in sys.modules:
        apply_ort_logging(sys.modules["onnxruntime"])


def ort_log_severity() -> int:
    """ONNX Runtime's log severity for sessions: ERROR (3) by default, FATAL only (4) when library_logging chose quiet
    (its errors are stylert's ModelError already), WARNING (2) when verbose."""
    return {None: 3, False: 4, True: 2}[_LIBRARY_VERBOSE]


def apply_ort_logging(ort: Any) -> None:
    """ONNX Runtime's default logger as library_logging chose (untouched when it was never called)."""
    if _LIBRARY_VERBOSE is not None:
        ort.set_default_logger_severity(ort_log_severity())


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """File descriptor 2 sent to /dev/null while a library reads a file, for C++ logs no setting reaches (on when
    library_logging chose quiet; a no-op otherwise or where fd 2 cannot be duplicated)."""
    if not enabled or _LIBRARY_VERBOSE is not False:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def default_threads() -> int | None:
    """CPU threads for a model when the caller names none: OMP_NUM_THREADS where it is set (the usual cap when
    processes share a machine; Ray sets it for its workers), else None: the backend's own choice, one per core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def _load(backend: str, path: str | Path, call: str | None, threads: int | None, ort_names: list[str],
          precision: str | None) -> Model:
    try:
        module = importlib.import_module(f".{BACKENDS[backend].module}", __package__)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {backend} is not available ({exc}): {BACKENDS[backend].install}") from None
    return module.load(path, backend, call=call, threads=threads, ort_names=ort_names, precision=precision)


def open_model(path: str | Path, providers: str | Sequence[str] | None = None, *, call: str | None = None,
               threads: int | None = None, precision: str | None = None) -> Model:
    """Load a stylert model on the named backend(s) (tried in order) or the automatic choice; `threads`: CPU
    threads (default: `default_threads()`), an integer >= 1 (`check_threads`).

    precision: "auto", "f32" or "bf16" for OpenVINO (default: STYLERT_PRECISION where set, else "auto" when the
    backend is chosen automatically, the backend name's own otherwise: openvino f32, openvino-bf16 bf16). "auto"
    measures bf16 against f32 on this model and CPU once (`runtime/precision.py`); "bf16" where OpenVINO cannot
    run it (not installed, or a CPU without native bf16) raises BackendUnavailable, with no fallback. Other
    backends run the graph in its own precision.

    ONNX Runtime names given together (e.g. "cuda,cpu") make one session with those providers.
    A backend that cannot load (missing library, no device, unsupported graph) raises
    BackendUnavailable when it was the only one named, and otherwise falls back with a warning;
    problems of the file itself (missing, not ONNX, wrong call) are raised at once.
    """
    threads = check_threads(threads)
    pinned = pinned_precision(precision)
    names = backend_names(providers)
    if Path(path).suffix == ".engine":
        if names not in (None, ["tensorrt"]):
            raise ModelError(f"{path}: a TensorRT engine runs on the tensorrt backend only, not {', '.join(names)}")
        return _warn_untrained(_load("tensorrt", path, call, threads, [], pinned))
    if names and "tensorrt" in names:
        raise ModelError(f"{path}: TensorRT runs engines: build one with `stylert build-engine {path} -o MODEL.engine`")
    candidates = names or auto_backends()
    if pinned == "bf16" and not names:  # only OpenVINO runs bf16: no fallback to a backend that would run f32
        candidates = [n for n in candidates if n == "openvino"]
        if not candidates:
            raise BackendUnavailable(f"precision bf16 runs on OpenVINO, which is not available here: "
                                     f"{BACKENDS['openvino'].install} (on an x86-64 CPU with native bf16)")
    ort_names = [n for n in candidates if n.startswith("onnxruntime-")]
    tries = [n for n in candidates if not n.startswith("onnxruntime-") or n == ort_names[0]]  # one ORT session
    asked = pinned or (None if names else "auto")
    for i, backend in enumerate(tries):
        try:
            return _warn_untrained(_load(backend, path, call, threads, ort_names, asked))
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
