"""TensorRT backend: a `.engine` from `stylert build-engine`, behind the same API as the other backends.

Written against the TensorRT 10 and 11 Python APIs and cuda-python; its `trt.` names are checked
against both in the test suite. Before deserializing, the engine's sidecar metadata is checked
against this TensorRT and this GPU (`engine.check_engine_metadata`) and the engine's bytes against the size and
SHA-256 it records (`engine.check_engine_bytes`, before TensorRT is imported), and the plugin libraries it was
built with are loaded into the runtime's own plugin registry and checked (`engine.load_plugins`).
A missing TensorRT, cuda-python or plugin library, or a CUDA error, raises BackendUnavailable; a
missing or unreadable sidecar, or an engine built for another TensorRT or GPU, raises ModelError.

Buffers: device memory and pinned host staging per tensor, allocated once at load for the
profile's largest batch, so their addresses never change and a CUDA graph captured for one batch
size stays valid while another runs; one CUDA stream; `use_cuda_graph=True` captures one graph
per input-shape set. Every enqueue is checked; `close()` (also by `with` and on garbage
collection) frees graphs, buffers and the stream.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, ModelError
from .engine import (
    NOT_INSTALLED,
    check_engine_bytes,
    check_engine_metadata,
    cuda_check,
    cudart,
    gpu_identity,
    load_plugins,
    read_sidecar,
    require_tensorrt,
)
from .model import Model, TensorSpec

# TensorRT data types by their enum member names, the same in TensorRT 10 and 11.
_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
           "BOOL": np.bool_, "UINT8": np.uint8}


class _Buffer:
    """A device allocation and a pinned host staging buffer of the same size, made once."""

    def __init__(self, rt: Any, nbytes: int):
        self.rt, self.nbytes = rt, max(int(nbytes), 1)
        self.device = int(cuda_check(rt.cudaMalloc(self.nbytes)))
        self.host = int(cuda_check(rt.cudaMallocHost(self.nbytes)))

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        if count * dtype.itemsize > self.nbytes:
            raise ModelError(f"tensor of shape {shape} does not fit its {self.nbytes}-byte buffer")
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.host)
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.nbytes:
            cuda_check(self.rt.cudaFree(self.device))
            cuda_check(self.rt.cudaFreeHost(self.host))
            self.nbytes = 0


class TensorRTModel(Model):
    def __init__(self, path: str | Path, *, call: str | None = None, use_cuda_graph: bool = False):
        self._closed = True  # until every resource below exists
        self._check_file(path)
        self.backend = "tensorrt"
        self.metadata = read_sidecar(self.path)
        self._check_metadata(call)
        data = self.path.read_bytes()
        check_engine_bytes(self.metadata, self.path, data)
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(f"{self.path}: {NOT_INSTALLED}") from None
        try:
            require_tensorrt(trt)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{self.path}: {exc}") from None
        _, capability = gpu_identity()
        check_engine_metadata(self.metadata, self.path, trt.__version__, capability)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        load_plugins(self.runtime.get_plugin_registry(), list(self.metadata.get("engine.plugins", [])), "runtime")
        if self.metadata.get("engine.version_compatible"):
            self.runtime.engine_host_code_allowed = True
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelError(f"{self.path}: TensorRT could not deserialize the engine (see its log above)")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        specs = {n: TensorSpec(n, _DTYPES[engine.get_tensor_dtype(n).name],
                               tuple(d if d >= 0 else None for d in engine.get_tensor_shape(n))) for n in names}
        self.inputs = [specs[n] for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [specs[n] for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.rt = cudart()
        self.use_cuda_graph = use_cuda_graph
        self.graphs: dict[tuple, Any] = {}
        self.buffers: dict[str, _Buffer] = {}
        self.stream = cuda_check(self.rt.cudaStreamCreate())
        self._closed = False
        self._allocate(engine)

    def _allocate(self, engine: Any) -> None:
        """Buffers for the profile's largest shapes (outputs from the context at those shapes), bound once."""
        for spec in self.inputs:
            largest = tuple(engine.get_tensor_profile_shape(spec.name, 0)[2])
            if not self.context.set_input_shape(spec.name, largest):
                raise ModelError(f"{self.path}: cannot set input '{spec.name}' to the profile's largest shape {largest}")
        for spec in self.inputs + self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            self.buffers[spec.name] = _Buffer(self.rt, int(np.prod(shape)) * np.dtype(spec.dtype).itemsize)
            if not self.context.set_tensor_address(spec.name, self.buffers[spec.name].device):
                raise ModelError(f"{self.path}: TensorRT refused the address of tensor '{spec.name}'")

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.metadata.get('engine.tensorrt')} ({self.metadata.get('engine.precision')})"]

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._closed:
            raise ModelError(f"{self.path}: the model was closed")
        rt, h2d, d2h = self.rt, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.inputs:
            array = feeds[spec.name]
            if not self.context.set_input_shape(spec.name, array.shape):
                raise ModelError(f"{self.path}: input '{spec.name}' shape {array.shape} is outside the engine's "
                                 f"batch range {self.metadata.get('engine.batch')}")
            buf = self.buffers[spec.name]
            buf.host_array(array.shape, array.dtype)[...] = array
            cuda_check(rt.cudaMemcpyAsync(buf.device, buf.host, array.nbytes, h2d, self.stream))
        shapes = {spec.name: tuple(self.context.get_tensor_shape(spec.name)) for spec in self.outputs}
        self._enqueue(tuple(feeds[s.name].shape for s in self.inputs))
        for spec in self.outputs:
            nbytes = int(np.prod(shapes[spec.name])) * np.dtype(spec.dtype).itemsize
            buf = self.buffers[spec.name]
            cuda_check(rt.cudaMemcpyAsync(buf.host, buf.device, nbytes, d2h, self.stream))
        cuda_check(rt.cudaStreamSynchronize(self.stream))
        return [self.buffers[s.name].host_array(shapes[s.name], np.dtype(s.dtype)).copy() for s in self.outputs]

    def _run_context(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise ModelError(f"{self.path}: TensorRT execution failed (see its log above)")

    def _enqueue(self, signature: tuple) -> None:
        if not self.use_cuda_graph:
            self._run_context()
            return
        if signature not in self.graphs:
            rt = self.rt
            self._run_context()  # lets TensorRT finish lazy set-up outside the capture
            cuda_check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            try:
                self._run_context()
            finally:
                graph = cuda_check(rt.cudaStreamEndCapture(self.stream))
            try:
                self.graphs[signature] = cuda_check(rt.cudaGraphInstantiate(graph, 0))
            finally:
                cuda_check(rt.cudaGraphDestroy(graph))
        cuda_check(self.rt.cudaGraphLaunch(self.graphs[signature], self.stream))

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        cuda_check(self.rt.cudaStreamSynchronize(self.stream))
        for graph in self.graphs.values():
            cuda_check(self.rt.cudaGraphExecDestroy(graph))
        self.graphs.clear()
        for buf in self.buffers.values():
            buf.free()
        cuda_check(self.rt.cudaStreamDestroy(self.stream))
        self.context = self.engine = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone; nothing left to report to
            pass


def load(path, backend: str, *, call, threads, ort_names, precision) -> TensorRTModel:
    """An engine has its graph's precision (`stylert build-engine`): precision is not asked of it."""
    return TensorRTModel(path, call=call)
