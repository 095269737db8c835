"""OpenVINO backend for CPUs (`pip install 'stylert[openvino]'`): the same portable `.onnx` files.

Precision: f32 (outputs match ONNX Runtime to about 1e-6), bf16 (`openvino-bf16` or precision="bf16"; refused on a
CPU without native bf16, where OpenVINO emulates it and was measured 1.6-3.7x slower than f32), or "auto", the
default when OpenVINO is chosen automatically: bf16 where the CPU has it and this model's bf16 output was measured
within the bound of f32's, else f32 (`runtime/precision.py`; the verdict is cached per model file, OpenVINO version
and CPU). A batch of one runs on a model compiled with the LATENCY hint (every core on one request); a larger batch
is split into single samples that run concurrently on a model compiled with the THROUGHPUT hint (one request per CPU
stream; no callback threads). Compiled models are kept per input-shape set in a small LRU cache, and OpenVINO's own
compiled blobs on disk (its CACHE_DIR: `cache_dir=`, else OV_CACHE_DIR, else `<stylert cache>/openvino`, the folder
STYLERT_CACHE moves), so the next process starts faster.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.frontend import FrontEndManager

from ..errors import BackendUnavailable, InputError, ModelError
from . import precision as gate
from .feeds import feeds_for
from .model import PLUGIN_GRAPH, Model, TensorSpec, check_onnx_file, check_threads, cpu_flags, cpu_name, default_threads


def _reason(exc: Exception) -> str:
    """OpenVINO's errors start with source locations; its summary line says what failed."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    summary = [line for line in lines if line.startswith("Conversion is failed for")]
    return (summary or lines[-1:] or [type(exc).__name__])[0][:300]


def read_onnx(path: Path) -> ov.Model:
    """The graph through OpenVINO's ONNX frontend only (Core.read_model would try every frontend, and the
    TensorFlow one prints GraphDef parse errors for a file that is not ONNX). A file at fault (not ONNX, cut short,
    external data missing or short, plugin flavour) is ModelError, with no fallback; anything else is the
    backend's: BackendUnavailable."""
    try:
        frontend = FrontEndManager().load_by_framework("onnx")
        return frontend.convert(frontend.load(str(path)))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses (GeneralFailure, ...) for files it cannot read
        reason = _reason(exc)
    check_onnx_file(path)
    raise BackendUnavailable(f"{path}: OpenVINO cannot convert it ({reason})")


def has_bf16() -> bool:
    return gate.native_bf16(cpu_flags())


def _default_cache() -> Path | None:
    """`<stylert cache>/openvino` where it can be written (a read-only home keeps OpenVINO's blobs in memory only)."""
    folder = gate.cache_root() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def version() -> str:
    """OpenVINO's full version (build included): part of the precision verdict's cache key."""
    return ov.get_version()


class OpenVINOModel(Model):
    def __init__(self, path: str | Path, *, call: str | None = None, precision: str = "f32", threads: int | None = None,
                 cache_dir: str | Path | None = None, max_compiled: int = 4):
        """precision: f32, bf16 or auto (measured, see the module's docstring)."""
        self._check_file(path)
        threads = check_threads(threads) or default_threads()
        precision = gate.check_precision(precision)
        if precision == "bf16" and not has_bf16():
            raise BackendUnavailable(f"bf16 refused (backend openvino-bf16 or precision bf16): {gate.no_bf16_reason()}, "
                                     "where bf16 runs slower than f32; use openvino (f32) or precision auto")
        self.backend = "openvino-bf16" if precision == "bf16" else "openvino"
        self.core = ov.Core()
        cache_dir = cache_dir or os.environ.get("OV_CACHE_DIR") or _default_cache()
        if cache_dir:
            self.core.set_property({"CACHE_DIR": str(cache_dir)})
        self.graph = read_onnx(self.path)
        info = self.graph.get_rt_info()
        framework = info["framework"] if "framework" in info else {}  # ONNX metadata_props land here
        self.metadata = {key: value.astype(str) for key, value in dict(framework).items()}
        self._check_metadata(call)
        if self.metadata.get("stylert.flavor") == "plugin":
            raise ModelError(PLUGIN_GRAPH.format(path=self.path))
        self.inputs = [self._spec(p) for p in self.graph.inputs]
        self.outputs = [self._spec(p) for p in self.graph.outputs]
        self.config: dict[str, Any] = {}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.max_compiled = max(1, max_compiled)
        self.compiled: OrderedDict[tuple, list[ov.InferRequest]] = OrderedDict()
        self.compile_count = 0
        if precision == "auto":
            self.choice = self._auto_int8() if self.metadata.get("stylert.precision") == "int8" else self._auto()
        else:
            named = "openvino-bf16" if precision == "bf16" else "openvino"
            self.choice = gate.Choice(precision, f"pinned (backend {named}, or precision {precision})")
        self.config["INFERENCE_PRECISION_HINT"] = gate.float_part(self.choice.precision)
        self._requests(self._single_shapes(), "LATENCY")

    def _single_shapes(self) -> tuple:
        return tuple((1,) + tuple(d or 1 for d in s.shape[1:]) for s in self.inputs)

    def _auto(self, path: Path | None = None) -> gate.Choice:
        """precision auto for a float graph (the one at `path`, default this model's): bf16 or f32."""
        key = gate.cache_key(path or self.path, openvino=version(), cpu=cpu_name(), candidate="bf16")
        choice = gate.choose(cpu_flags(), lambda: self._measure("bf16"), gate.decision_file(key))
        for stale in [k for k in self.compiled if k[0] != choice.precision]:  # the measurement's other precision
            del self.compiled[stale]
        return choice

    def _auto_int8(self) -> gate.Choice:
        """precision auto for an int8 graph from `stylert quantize`: measured against its f32 source graph (beside
        it, named in its metadata); where it fails the bound, the source runs instead, with its own choice."""
        name = Path(self.metadata.get("stylert.int8_source", "")).name  # a file name beside it, nothing else
        source = self.path.with_name(name) if name else None
        if source is None or not source.is_file():
            return gate.Choice("int8+f32", f"its f32 source graph ({name or 'not named'}) is not beside it: nothing "
                                           "measured, the int8 graph runs as given")
        flags = cpu_flags()
        part = "bf16" if gate.native_bf16(flags) else "f32"  # in the key: a CPU named alike, its bf16 hidden (a VM)
        key = gate.cache_key(self.path, openvino=version(), cpu=cpu_name(),
                             candidate=f"int8, {part} float part, against {gate.file_identity(source)}")
        choice = gate.choose_int8(flags, lambda part: self._measure(part, read_onnx(source)), gate.decision_file(key))
        self.compiled.clear()
        if choice.precision != "source":
            return choice
        self.graph = read_onnx(source)  # the same inputs and outputs: the source runs in this model's place
        own = self._auto(source)
        return gate.Choice(own.precision, f"{choice.reason}; {source.name}: {own.reason}", choice.error)

    def _measure(self, candidate: str, reference: ov.Model | None = None) -> gate.OutputError | None:
        """The worst error of this graph in `candidate` precision (f32, bf16) against `reference` in f32 (default:
        this graph) over DRAWS seeded inputs of the model's kind, inside the region its call writes
        (precision.output_error); None for a graph without an image output."""
        index = gate.image_output(self.outputs)
        if index is None:
            return None
        shapes = self._single_shapes()
        want = (self._compile(reference, shapes, "LATENCY", "f32").create_infer_request() if reference is not None
                else self._requests(shapes, "LATENCY", "f32")[0])
        got = self._requests(shapes, "LATENCY", candidate)[0]
        worst = gate.OutputError(0, float("inf"))
        for seed in range(gate.DRAWS):
            feeds = self.check_inputs(feeds_for(self.metadata, 1, self.path, seed))
            arrays = [feeds[s.name] for s in self.inputs]
            outputs = []
            for request in (want, got):
                request.infer(arrays)
                outputs.append(request.get_output_tensor(index).data.copy())
            worst = worst.worst(gate.output_error(*outputs, gate.written_region(feeds)))
        return worst

    @staticmethod
    def _spec(port) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).type, shape)

    def _requests(self, shapes: tuple, hint: str, precision: str | None = None) -> list[ov.InferRequest]:
        """Infer requests of the graph compiled for these input shapes, hint and precision (the model's own by
        default; one request for LATENCY, the compiled model's optimal number for THROUGHPUT), from an LRU cache of
        max_compiled entries."""
        precision = precision or self.config["INFERENCE_PRECISION_HINT"]
        key = (precision, hint, shapes)
        if key in self.compiled:
            self.compiled.move_to_end(key)
            return self.compiled[key]
        compiled = self._compile(self.graph, shapes, hint, precision)
        count = 1 if hint == "LATENCY" else int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.compiled[key] = [compiled.create_infer_request() for _ in range(max(1, count))]
        while len(self.compiled) > self.max_compiled:
            self.compiled.popitem(last=False)
        return self.compiled[key]

    def _compile(self, graph: ov.Model, shapes: tuple, hint: str, precision: str) -> ov.CompiledModel:
        """`graph` (this model's, or the f32 source an int8 graph is measured against) compiled at fixed shapes."""
        graph = graph.clone()
        graph.reshape({port.get_any_name(): ov.PartialShape(list(shape)) for port, shape in zip(graph.inputs, shapes)})
        config = {**self.config, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
        try:
            compiled = self.core.compile_model(graph, "CPU", config)
        except Exception as exc:
            raise BackendUnavailable(f"{self.path}: OpenVINO cannot compile it ({_reason(exc)})") from None
        self.compile_count += 1
        return compiled

    def _execute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feeds[s.name] for s in self.inputs]
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        if batch == 1:
            request = self._requests(tuple(a.shape for a in arrays), "LATENCY")[0]
            request.infer(arrays)
            return [request.get_output_tensor(i).data.copy() for i in range(len(self.outputs))]
        requests = self._requests(tuple((1,) + a.shape[1:] for a in arrays), "THROUGHPUT")
        samples: list[list[np.ndarray]] = []
        for start in range(0, batch, len(requests)):  # one sample per request, all requests in flight
            active = requests[:min(len(requests), batch - start)]
            for k, request in enumerate(active):
                request.start_async([a[start + k:start + k + 1] for a in arrays])
            for request in active:
                request.wait()
                samples.append([request.get_output_tensor(i).data.copy() for i in range(len(self.outputs))])
        return [np.concatenate([s[i] for s in samples]) for i in range(len(self.outputs))]

    def close(self) -> None:
        self.compiled.clear()


def load(path, backend: str, *, call, threads, ort_names, precision) -> OpenVINOModel:
    """precision: the one asked for (open_model's argument or STYLERT_PRECISION), else None: bf16 for openvino-bf16,
    f32 for openvino named, auto where open_model chose OpenVINO itself (None then arrives as "auto")."""
    if backend == "openvino-bf16":
        if precision == "f32":
            raise InputError("precision f32 contradicts backend openvino-bf16: name openvino, or precision bf16")
        precision = "bf16"
    return OpenVINOModel(path, call=call, threads=threads, precision=precision or "f32")
