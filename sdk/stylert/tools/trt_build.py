"""`stylert build-engine`: ONNX -> TensorRT engine, with stylert metadata beside it.

Works on TensorRT 10.x (10.3 is JetPack 6's) and 11.x. Networks are strongly typed: the engine's
precision is the graph's (fp32, fp16 from `stylert export ... --fp16`, int8 from the Q/DQ graph of
`stylert quantize`); there are no precision flags to set. Where the two versions differ the code
branches once, in `network_flags`. Every `trt.` name used here and in runtime/tensorrt.py is
checked in the test suite against tensorrt-stubs (10) and TensorRT 11.1's binding sources. Nothing
here has run on a GPU: TensorRT's builder cannot be installed in the workplace this was written in.

The engine file gets a sidecar `<engine>.json`: the ONNX graph's stylert metadata plus precision,
batch range, TensorRT version, GPU name and compute capability and the plugin libraries.
`runtime/tensorrt.TensorRTModel` checks it before loading (engines are specific to a TensorRT
version, unless built version-compatible, and to a GPU architecture).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ModelError

NOT_INSTALLED = ("TensorRT is not installed: install NVIDIA's `tensorrt` wheel (its builder is not on PyPI) "
                 "on a machine with an NVIDIA GPU")

PLUGIN_NAMES = ("ModulatedConv2d", "BAFSBlend")  # stylert's plugin creators, version "1", namespace "stylert"


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: Any) -> int:
    """The one place TensorRT 10 and 11 differ for us: 10 builds strongly typed networks only when
    asked (STRONGLY_TYPED, otherwise it would choose precisions itself); 11 always does and
    deprecates the flag."""
    if tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def require_tensorrt(trt: Any) -> None:
    """`import tensorrt` also succeeds with only `tensorrt-stubs` installed (a folder of .pyi files)."""
    if not hasattr(trt, "Builder"):
        raise ModelError(NOT_INSTALLED + " (only its type stubs are)")


def cudart() -> Any:
    """cuda-python's runtime module (new and old package layouts)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise ModelError("cuda-python is not installed: pip install cuda-python") from None
    return runtime


def cuda_check(result: Any) -> Any:
    """cuda-python calls return (error, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ModelError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity() -> tuple[str, str]:
    """(device name, compute capability 'major.minor') of device 0."""
    rt = cudart()
    prop = cuda_check(rt.cudaGetDeviceProperties(0))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00"), f"{prop.major}.{prop.minor}"


@dataclass
class EngineOptions:
    """What `stylert build-engine` accepts. fp16 / int8 do not change the build (the graph's types
    decide); they state what the caller expects, and a graph of another precision is refused."""
    fp16: bool = False
    int8: bool = False
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    plugins: list[str] = field(default_factory=list)
    timing_cache: str | None = None
    version_compatible: bool = False
    workspace_mb: int = 4096

    def validate(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ModelError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min_batch}/"
                             f"{self.opt_batch}/{self.max_batch}")
        if self.fp16 and self.int8:
            raise ModelError("--fp16 and --int8 both given: an engine has the one precision of its graph")
        for lib in self.plugins:
            if not Path(lib).is_file():
                raise ModelError(f"{lib}: no such plugin library")


def check_precision(path: str | Path, meta: dict, precision: str, options: EngineOptions) -> None:
    """A one-line refusal when the graph's precision is not the one asked for, saying how to make it."""
    call = meta.get("stylert.call", "?")
    if options.fp16 and precision != "fp16":
        make = ("`stylert export generator ... --fp16`" if call == "generator" else
                f"an fp16 export, which `stylert export {call}` does not offer yet (only the generator does)")
        raise ModelError(f"{path}: an {precision} graph; TensorRT builds the graph's own precision (strong typing), "
                         f"so --fp16 needs an fp16 graph: make it with {make}")
    if options.int8 and precision != "int8":
        raise ModelError(f"{path}: an {precision} graph without Q/DQ nodes; make the int8 graph with "
                         f"`stylert quantize {path} --calib DIR -o {Path(path).with_suffix('')}.int8.onnx`")


def load_plugins(registry: Any, libraries: list[str], where: str) -> None:
    """Load plugin libraries into `registry` (the builder's or the runtime's) and check the creators.
    load_library returns None on failure and also when the creators were registered before, so the
    creators themselves are looked up."""
    for lib in libraries:
        handle = registry.load_library(str(lib))
        found = [n for n in PLUGIN_NAMES if registry.get_creator(n, "1", "stylert") is not None]
        if handle is None and len(found) < len(PLUGIN_NAMES):
            raise ModelError(f"{lib}: TensorRT could not load this plugin library into the {where} (see its log "
                             "above); rebuild it for this TensorRT with `make -C kernels TRT_INCLUDE=...`")
        if len(found) < len(PLUGIN_NAMES):
            missing = sorted(set(PLUGIN_NAMES) - set(found))
            raise ModelError(f"{lib}: loaded, but stylert's plugin creator(s) {missing} are not registered: "
                             "is this kernels/build/libstylert_plugins.so?")


def read_graph(path: str | Path) -> tuple[dict[str, str], str]:
    """The graph's stylert metadata, and its precision: fp32, fp16 (`export --fp16`) or int8 (Q/DQ
    nodes from `stylert quantize`)."""
    try:
        import onnx
    except ImportError:
        raise ModelError("reading the ONNX graph's metadata needs the `onnx` package: pip install onnx") from None
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


def sidecar_path(engine: str | Path) -> Path:
    return Path(f"{engine}.json")


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


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: EngineOptions, log=print) -> dict[str, Any]:
    """Parse the ONNX graph into a strongly typed network, build a serialized engine for batches
    min..max, write it and its sidecar."""
    options.validate()
    graph_meta, precision = read_graph(onnx_path)
    meta: dict[str, Any] = dict(graph_meta)
    check_precision(onnx_path, meta, precision, options)
    if meta.get("stylert.flavor") == "plugin" and not options.plugins:
        raise ModelError(f"{onnx_path}: a plugin-flavour graph: pass --plugins kernels/build/libstylert_plugins.so "
                         "(built with `make -C kernels TRT_INCLUDE=...`), or export with --flavor portable")
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelError(NOT_INSTALLED) from None
    require_tensorrt(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    load_plugins(builder.get_plugin_registry(), options.plugins, "builder")
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        profile.set_shape(tensor.name, (options.min_batch,) + shape[1:], (options.opt_batch,) + shape[1:],
                          (options.max_batch,) + shape[1:])
    config.add_optimization_profile(profile)
    engine_path = Path(engine_path)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if options.plugins:  # the engine carries its plugin libraries, as trtexec --dynamicPlugins does
            config.plugins_to_serialize = [str(Path(p).resolve()) for p in options.plugins]
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    if cache_path:
        write_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    gpu, capability = gpu_identity()
    meta.update({"engine.precision": precision, "engine.tensorrt": trt.__version__, "engine.gpu": gpu,
                 "engine.compute_capability": capability, "engine.version_compatible": options.version_compatible,
                 "engine.plugins": [str(Path(p).resolve()) for p in options.plugins],
                 "engine.batch": [options.min_batch, options.opt_batch, options.max_batch],
                 "engine.built_by": f"stylert {__version__}"})
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(engine_path, bytes(memoryview(serialized)))
    write_atomic(sidecar_path(engine_path), json.dumps(meta, indent=1).encode())
    log(f"wrote {engine_path} ({precision}, batch {options.min_batch}..{options.max_batch}, {gpu}, TensorRT {trt.__version__})")
    return meta


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
