"""TensorRT engines outside the model class: the metadata beside an engine, the ONNX graph's metadata it
starts from, and the libraries that loading one needs (TensorRT, cuda-python, stylert's plugin libraries).

The backend (`runtime/tensorrt.py`), `stylert build-engine` (`tools/trt_build.py`) and the service's
registry of calls (`calls/registry.call_of`) use these; this module imports no other part of stylert but
`errors`, and TensorRT, cuda-python and onnx only inside the functions that need them.

Errors: a library that is missing or cannot be loaded (tensorrt, cuda-python, onnx, a plugin `.so`),
or CUDA failing, raises `BackendUnavailable` (saying what to install); a model file that is unreadable,
lacks stylert metadata or was built for another TensorRT or GPU raises `ModelError`.

The sidecar `<engine>.json` holds the ONNX graph's stylert metadata plus `engine.precision`,
`engine.batch` ([min, opt, max]), `engine.tensorrt`, `engine.gpu`, `engine.compute_capability`,
`engine.version_compatible`, `engine.plugins`, `engine.built_by`, and the engine file's size and SHA-256
(`engine.bytes`, `engine.sha256`: checked before TensorRT is needed, so a damaged engine is refused anywhere).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, ModelError
from .model import Model

NOT_INSTALLED = ("TensorRT is not installed: install NVIDIA's `tensorrt` wheel (its builder is not on PyPI) "
                 "on a machine with an NVIDIA GPU")

PLUGIN_NAMES = ("ModulatedConv2d", "BAFSBlend")  # stylert's plugin creators, version "1", namespace "stylert"


def sidecar_path(engine: str | Path) -> Path:
    """Where an engine's metadata lives: `<engine>.json` beside it."""
    return Path(f"{engine}.json")


def read_graph(path: str | Path) -> tuple[dict[str, str], str]:
    """The graph's stylert metadata, and its precision: fp32, fp16 (`export --fp16`) or int8 (Q/DQ
    nodes from `stylert quantize`). Reads the graph's protobuf only (not external weights)."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("reading the ONNX graph's metadata needs the `onnx` package: pip install onnx") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if "stylert.format" not in meta:
        raise ModelError(f"{path}: no stylert metadata; export models with `stylert export`")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return meta, "int8"
    return meta, meta.get("stylert.precision", "fp32")


def read_sidecar(engine: str | Path) -> dict:
    """An engine's sidecar metadata, checked before TensorRT is needed: a JSON object whose engine.* fields have
    their types (engine.batch three integers 1 <= min <= opt <= max, engine.plugins a list of paths,
    engine.bytes a size, engine.sha256 a hex digest). ModelError naming the file otherwise."""
    meta_file = sidecar_path(engine)
    if not meta_file.is_file():
        raise ModelError(f"{engine}: no {meta_file.name} beside it: build engines with `stylert build-engine`")
    try:
        meta = json.loads(meta_file.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{meta_file}: unreadable engine metadata ({str(exc)[:200]})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_file}: engine metadata is a JSON {type(meta).__name__}, not an object")
    batch = meta.get("engine.batch")
    if batch is not None and not (isinstance(batch, list) and len(batch) == 3
                                  and all(type(b) is int for b in batch) and 1 <= batch[0] <= batch[1] <= batch[2]):
        raise ModelError(f"{meta_file}: engine.batch is {str(batch)[:60]!r}, not [min, opt, max] batch sizes")
    plugins = meta.get("engine.plugins", [])
    if not (isinstance(plugins, list) and all(isinstance(lib, str) for lib in plugins)):
        raise ModelError(f"{meta_file}: engine.plugins is {str(plugins)[:60]!r}, not a list of library paths")
    size, digest = meta.get("engine.bytes"), meta.get("engine.sha256")
    if size is not None and not (type(size) is int and size > 0):
        raise ModelError(f"{meta_file}: engine.bytes is {str(size)[:60]!r}, not a size in bytes")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise ModelError(f"{meta_file}: engine.sha256 is {str(digest)[:80]!r}, not a SHA-256 digest")
    return meta


def check_engine_bytes(meta: dict, path: str | Path, data: bytes) -> None:
    """Refuse an engine whose bytes are not those its sidecar recorded (engine.bytes, engine.sha256, written by
    `stylert build-engine`): cut short, damaged or replaced. Sidecars without them are not checked."""
    size, digest = meta.get("engine.bytes"), meta.get("engine.sha256")
    if size is not None and len(data) != size:
        raise ModelError(f"{path}: {len(data)} bytes, its sidecar says {size}: the engine is truncated or not the "
                         "one built with it; build it again with `stylert build-engine`")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise ModelError(f"{path}: its bytes differ from those its sidecar recorded (SHA-256): the engine is "
                         "damaged or not the one built with it; build it again with `stylert build-engine`")


def model_metadata(model) -> dict:
    """A model's stylert metadata without loading it: an opened Model's, an .engine's sidecar, an .onnx graph's."""
    if isinstance(model, Model):
        return model.metadata
    path = Path(model)
    if path.suffix == ".engine":
        return read_sidecar(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return read_graph(path)[0]


def check_engine_metadata(meta: dict, path: str | Path, tensorrt_version: str, compute_capability: str) -> None:
    """Refuse an engine built for another TensorRT (unless version-compatible) or another GPU architecture."""
    built_trt = meta.get("engine.tensorrt")
    if built_trt != tensorrt_version and not meta.get("engine.version_compatible"):
        raise ModelError(f"{path}: built with TensorRT {built_trt}, this is TensorRT {tensorrt_version}: rebuild it "
                         "with `stylert build-engine` (or build with --version-compatible)")
    built_cc = meta.get("engine.compute_capability")
    if built_cc != compute_capability:
        raise ModelError(f"{path}: built for {meta.get('engine.gpu')} (compute {built_cc}), this GPU is compute "
                         f"{compute_capability}: engines are specific to a GPU architecture; rebuild on this one")


def require_tensorrt(trt: Any) -> None:
    """After `import tensorrt as trt` (done by the caller, so type checkers see the module): refuse a `tensorrt`
    that is only `tensorrt-stubs` (a folder of .pyi files, which imports too). A failed import itself is
    BackendUnavailable(NOT_INSTALLED) at the caller."""
    if not hasattr(trt, "Builder"):
        raise BackendUnavailable(NOT_INSTALLED + " (only its type stubs are)")


def cudart() -> Any:
    """cuda-python's runtime module (new and old package layouts)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise BackendUnavailable("cuda-python is not installed: pip install cuda-python") from None
    return runtime


def cuda_check(result: Any) -> Any:
    """cuda-python calls return (error, *values): raise BackendUnavailable on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity() -> tuple[str, str]:
    """(device name, compute capability 'major.minor') of device 0."""
    rt = cudart()
    prop = cuda_check(rt.cudaGetDeviceProperties(0))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00"), f"{prop.major}.{prop.minor}"


def load_plugins(registry: Any, libraries: list[str], where: str) -> None:
    """Load plugin libraries into `registry` (the builder's or the runtime's) and check the creators.
    load_library returns None on failure and also when the creators were registered before, so the
    creators themselves are looked up. A library that is missing, does not load or lacks stylert's
    creators raises BackendUnavailable."""
    for lib in libraries:
        if not Path(lib).is_file():
            raise BackendUnavailable(f"{lib}: no such plugin library; build it with `make -C kernels TRT_INCLUDE=...`")
        handle = registry.load_library(str(lib))
        found = [n for n in PLUGIN_NAMES if registry.get_creator(n, "1", "stylert") is not None]
        if handle is None and len(found) < len(PLUGIN_NAMES):
            raise BackendUnavailable(f"{lib}: TensorRT could not load this plugin library into the {where} (see its "
                                     "log above); rebuild it for this TensorRT with `make -C kernels TRT_INCLUDE=...`")
        if len(found) < len(PLUGIN_NAMES):
            missing = sorted(set(PLUGIN_NAMES) - set(found))
            raise BackendUnavailable(f"{lib}: loaded, but stylert's plugin creator(s) {missing} are not registered: "
                                     "is this kernels/build/libstylert_plugins.so?")
