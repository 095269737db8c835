"""TensorRT backend: a `.engine` from `stylert build-engine`, behind the same API as the other backends.

Written against the TensorRT 10 Python API and cuda-python and type-checked with `tensorrt-stubs`
in CI. It has not been run: TensorRT's builder cannot be installed in the workplace this was
written in, and no GPU was lent. Before deserializing, the engine's sidecar metadata is checked
against this TensorRT and this GPU (trt_build.check_engine_metadata), and the plugin libraries
it was built with are loaded. Buffers: device memory per tensor (grown as needed), pinned host
staging buffers, one CUDA stream; `use_cuda_graph=True` captures one graph per input-shape set.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, ModelError
from ..runtime import Model, TensorSpec
from ..trt_build import NOT_INSTALLED, check_engine_metadata, cuda_check, cudart, gpu_identity, require_tensorrt, sidecar_path


class _Buffer:
    """A device allocation and a pinned host staging buffer of the same size, grown on demand."""

    def __init__(self, rt: Any):
        self.rt, self.nbytes, self.device, self.host = rt, 0, 0, 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.device = int(cuda_check(self.rt.cudaMalloc(nbytes)))
        self.host = int(cuda_check(self.rt.cudaMallocHost(nbytes)))
        self.nbytes = nbytes

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.host)
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.nbytes:
            self.rt.cudaFree(self.device)
            self.rt.cudaFreeHost(self.host)
            self.nbytes = 0


class TensorRTModel(Model):
    def __init__(self, path: str | Path, *, call: str | None = None, use_cuda_graph: bool = False):
        self._check_file(path)
        self.backend = "tensorrt"
        meta_file = sidecar_path(self.path)
        if not meta_file.is_file():
            raise ModelError(f"{self.path}: no {meta_file.name} beside it: build engines with `stylert build-engine`")
        try:
            self.metadata = json.loads(meta_file.read_text())
        except ValueError as exc:
            raise ModelError(f"{meta_file}: unreadable engine metadata ({exc})") from None
        self._check_metadata(call)
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(NOT_INSTALLED) from None
        require_tensorrt(trt)
        _, capability = gpu_identity()
        check_engine_metadata(self.metadata, self.path, trt.__version__, capability)
        for lib in self.metadata.get("engine.plugins", []):
            trt.get_plugin_registry().load_library(lib)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.metadata.get("engine.version_compatible"):
            self.runtime.engine_host_code_allowed = True
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize the engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.rt = cudart()
        self.stream = cuda_check(self.rt.cudaStreamCreate())
        self.use_cuda_graph = use_cuda_graph
        self.graphs: dict[tuple, Any] = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        specs = {n: TensorSpec(n, np.dtype(trt.nptype(engine.get_tensor_dtype(n))).type,
                               tuple(d if d >= 0 else None for d in engine.get_tensor_shape(n))) for n in names}
        self.inputs = [specs[n] for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [specs[n] for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.buffers = {n: _Buffer(self.rt) for n in names}

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.metadata.get('engine.tensorrt')} ({self.metadata.get('engine.precision')})"]

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        rt, h2d, d2h = self.rt, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.inputs:
            array = feeds[spec.name]
            if not self.context.set_input_shape(spec.name, array.shape):
                raise ModelError(f"{self.path}: input '{spec.name}' shape {array.shape} is outside the engine's "
                                 f"batch range {self.metadata.get('engine.batch')}")
            buf = self.buffers[spec.name]
            buf.ensure(array.nbytes)
            buf.host_array(array.shape, array.dtype)[...] = array
            cuda_check(rt.cudaMemcpyAsync(buf.device, buf.host, array.nbytes, h2d, self.stream))
            self.context.set_tensor_address(spec.name, buf.device)
        shapes = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            shapes[spec.name] = shape
            self.buffers[spec.name].ensure(int(np.prod(shape)) * np.dtype(spec.dtype).itemsize)
            self.context.set_tensor_address(spec.name, self.buffers[spec.name].device)
        self._enqueue(tuple(feeds[s.name].shape for s in self.inputs))
        for spec in self.outputs:
            buf = self.buffers[spec.name]
            nbytes = int(np.prod(shapes[spec.name])) * np.dtype(spec.dtype).itemsize
            cuda_check(rt.cudaMemcpyAsync(buf.host, buf.device, nbytes, d2h, self.stream))
        cuda_check(rt.cudaStreamSynchronize(self.stream))
        return [self.buffers[s.name].host_array(shapes[s.name], np.dtype(s.dtype)).copy() for s in self.outputs]

    def _enqueue(self, signature: tuple) -> None:
        if not self.use_cuda_graph:
            if not self.context.execute_async_v3(int(self.stream)):
                raise ModelError(f"{self.path}: TensorRT execution failed")
            return
        if signature not in self.graphs:
            self.context.execute_async_v3(int(self.stream))  # lets TensorRT finish lazy set-up outside the capture
            rt = self.rt
            cuda_check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            self.context.execute_async_v3(int(self.stream))
            graph = cuda_check(rt.cudaStreamEndCapture(self.stream))
            self.graphs[signature] = cuda_check(rt.cudaGraphInstantiate(graph, 0))
        cuda_check(self.rt.cudaGraphLaunch(self.graphs[signature], self.stream))


def load(path, backend: str, *, call, threads, ort_names) -> TensorRTModel:
    return TensorRTModel(path, call=call)
