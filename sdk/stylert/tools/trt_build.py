"""`stylert build-engine`: ONNX -> TensorRT engine, with stylert metadata beside it.

Works on TensorRT 10.x (10.3 is JetPack 6's) and 11.x. Networks are strongly typed: the engine's
precision is the graph's (fp32, fp16 from `stylert export ... --fp16`, int8 from the Q/DQ graph of
`stylert quantize`); there are no precision flags to set. Where the two versions differ the code
branches once, in `network_flags`. Every `trt.` name used here, in runtime/tensorrt.py and in
runtime/engine.py is checked in the test suite against tensorrt-stubs (10) and TensorRT 11.1's
binding sources.

The engine file gets a sidecar `<engine>.json` (`runtime.engine.sidecar_path`): the ONNX graph's
stylert metadata plus precision, batch range, TensorRT version, GPU name and compute capability, the
plugin libraries, and the engine's size and SHA-256 (so a truncated or damaged engine is refused before
TensorRT reads it). `runtime/tensorrt.TensorRTModel` checks it before loading (engines are specific
to a TensorRT version, unless built version-compatible, and to a GPU architecture). Reading the
graph, CUDA and plugin loading live in `runtime/engine.py`, shared with the backend.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import BackendUnavailable, ModelError
from ..runtime.engine import (
    NOT_INSTALLED,
    gpu_identity,
    load_plugins,
    read_graph,
    require_tensorrt,
    sidecar_path,
)


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: Any) -> int:
    """The one place TensorRT 10 and 11 differ for us: 10 builds strongly typed networks only when
    asked (STRONGLY_TYPED, otherwise it would choose precisions itself); 11 always does and
    deprecates the flag."""
    if tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


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
                raise BackendUnavailable(f"{lib}: no such plugin library")


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
    if meta.get("stylert.flavor") == "winograd":
        log(f"{onnx_path}: a winograd-flavour graph, written for CPUs; TensorRT chooses its own convolution "
            "algorithms, give it the portable one (export with --flavor portable)")
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(NOT_INSTALLED) from None
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
    data = bytes(memoryview(serialized))
    meta.update({"engine.bytes": len(data), "engine.sha256": hashlib.sha256(data).hexdigest(),"engine.precision": precision, "engine.tensorrt": trt.__version__, "engine.gpu": gpu,
                 "engine.compute_capability": capability, "engine.version_compatible": options.version_compatible,
                 "engine.plugins": [str(Path(p).resolve()) for p in options.plugins],
                 "engine.batch": [options.min_batch, options.opt_batch, options.max_batch],
                 "engine.built_by": f"stylert {__version__}"})
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(engine_path, data)
    write_atomic(sidecar_path(engine_path), json.dumps(meta, indent=1).encode())
    log(f"wrote {engine_path} ({precision}, batch {options.min_batch}..{options.max_batch}, {gpu}, TensorRT {trt.__version__})")
    return meta


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
