"""`stylert build-engine`: ONNX -> TensorRT engine, with stylert metadata beside it.

Written against the TensorRT 10 Python API and type-checked with `tensorrt-stubs` in CI. It has
not been run: TensorRT's builder cannot be installed in the workplace this was written in, and no
GPU was lent. The engine file gets a sidecar `<engine>.json`: the ONNX graph's stylert metadata plus
precision, batch range, TensorRT version, GPU name and compute capability and the plugin
libraries. `trt_runtime.TensorRTModel` checks it before loading (engines are specific to a
TensorRT version, unless built version-compatible, and to a GPU architecture).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import ModelError
from .imageio import IMAGE_SUFFIXES, read_image

NOT_INSTALLED = ("TensorRT is not installed: install NVIDIA's `tensorrt` wheel (its builder is not on PyPI) "
                 "on a machine with an NVIDIA GPU")


CONTROL_DEFAULTS = {"strength": 1.0, "fidelity": 0.0, "q": 0.0, "truncation_psi": 0.7}


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
    fp16: bool = False
    int8: bool = False
    calib_dir: str | None = None
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
        if self.int8 and not self.calib_dir:
            raise ModelError("--int8 needs --calib DIR (aligned face crops for calibration)")
        for lib in self.plugins:
            if not Path(lib).is_file():
                raise ModelError(f"{lib}: no such plugin library")


def onnx_metadata(path: str | Path) -> dict[str, str]:
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
    return meta


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


class CalibrationBatches:
    """Host batches for INT8 calibration from a folder of aligned face crops: `image` resized to the
    model's resolution in [-1, 1], every other input filled with its neutral control value."""

    def __init__(self, folder: str | Path, inputs: dict[str, tuple], resolution: int, batch: int):
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such calibration folder")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(self.files) < batch:
            raise ModelError(f"{folder}: {len(self.files)} calibration image(s), need at least one batch of {batch}")
        if "image" not in inputs:
            raise ModelError("INT8 calibration from images needs a graph with an `image` input")
        self.inputs, self.resolution, self.batch = inputs, resolution, batch

    def __iter__(self):
        import cv2

        for start in range(0, len(self.files) - self.batch + 1, self.batch):
            crops = [cv2.resize(read_image(p).rgb, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
                     for p in self.files[start:start + self.batch]]
            host = {"image": np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)}
            for name, shape in self.inputs.items():
                if name != "image":
                    host[name] = np.full((self.batch,) + tuple(shape[1:]), CONTROL_DEFAULTS.get(name, 0.0), np.float32)
            yield host


def make_calibrator(batches: CalibrationBatches, cache: Path) -> Any:
    """A TensorRT entropy calibrator feeding `batches` from device buffers."""
    import tensorrt as trt

    require_tensorrt(trt)
    rt = cudart()

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.device: dict[str, int] = {}

        def get_batch_size(self) -> int:
            return batches.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            host = next(self.batches, None)
            if host is None:
                return None
            for name, array in host.items():
                if name not in self.device:
                    self.device[name] = int(cuda_check(rt.cudaMalloc(array.nbytes)))
                cuda_check(rt.cudaMemcpy(self.device[name], array.ctypes.data, array.nbytes,
                                         rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [self.device[name] for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: EngineOptions, log=print) -> dict[str, Any]:
    """Parse the ONNX graph, build a serialized engine for batches min..max, write it and its sidecar."""
    options.validate()
    meta: dict[str, Any] = dict(onnx_metadata(onnx_path))
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelError(NOT_INSTALLED) from None
    require_tensorrt(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    for lib in options.plugins:
        registry.load_library(str(lib))
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse it: {errors}"
                         + (" (plugin-flavour graph: pass --plugins)" if meta.get("stylert.flavor") == "plugin" else ""))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    precision = "fp32"
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    profile = builder.create_optimization_profile()
    shapes: dict[str, tuple] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        shapes[tensor.name] = shape
        profile.set_shape(tensor.name, (options.min_batch,) + shape[1:], (options.opt_batch,) + shape[1:],
                          (options.max_batch,) + shape[1:])
    config.add_optimization_profile(profile)
    engine_path = Path(engine_path)
    if options.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        batches = CalibrationBatches(str(options.calib_dir), shapes, int(meta["stylert.resolution"]), options.opt_batch)
        config.int8_calibrator = make_calibrator(batches, Path(f"{engine_path}.calib"))
        precision = "int8"
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    if cache_path:
        cache_path.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    gpu, capability = gpu_identity()
    meta.update({"engine.precision": precision, "engine.tensorrt": trt.__version__, "engine.gpu": gpu,
                 "engine.compute_capability": capability, "engine.version_compatible": options.version_compatible,
                 "engine.plugins": [str(Path(p).resolve()) for p in options.plugins],
                 "engine.batch": [options.min_batch, options.opt_batch, options.max_batch],
                 "engine.built_by": f"stylert {__version__}"})
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(f".{engine_path.name}.partial")
    tmp.write_bytes(bytes(memoryview(serialized)))
    os.replace(tmp, engine_path)
    sidecar_path(engine_path).write_text(json.dumps(meta, indent=1))
    log(f"wrote {engine_path} ({precision}, batch {options.min_batch}..{options.max_batch}, {gpu}, TensorRT {trt.__version__})")
    return meta
