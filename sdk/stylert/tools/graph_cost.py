"""Work in an ONNX graph (multiply-accumulates of its convolutions and matrix products, weight and
I/O bytes) and the machine's ceiling measured on the same backend, so that a latency can be held
against what the hardware can do.

Counted: Conv, ConvTranspose, MatMul, Gemm and the plugin node stylert::ModulatedConv2d; element-wise
ops are ignored (they are bandwidth, not FLOPs). FLOPs = 2 x MACs. Shapes come from ONNX shape
inference with the batch dimension set to 1.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.model import cpu_flags
from ..runtime.precision import native_bf16


@dataclass
class GraphCost:
    macs: int
    weight_bytes: int
    io_bytes: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


def _prod(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def graph_cost(path: str | Path) -> GraphCost:
    """MACs per sample (batch 1) and byte counts of an ONNX graph."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path), load_external_data=False)
    del model.graph.value_info[:]  # the exporter's, with a symbolic batch: infer them again at batch 1
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model, data_prop=True)  # batch reaches Expand through Shape ops
    shapes: dict[str, tuple] = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    weight_bytes = 0
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        weight_bytes += numpy_helper.to_array(init).nbytes
    for node in model.graph.node:  # constants folded into Constant nodes count as weights too
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    array = numpy_helper.to_array(attr.t)
                    shapes[node.output[0]] = array.shape
                    weight_bytes += array.nbytes
    io_bytes = sum(4 * _prod(shapes.get(v.name, ())) for v in list(model.graph.input) + list(model.graph.output))

    by_op: dict[str, int] = {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        macs = 0  # weight shapes are [O, I/groups, k, k] (Conv), [I, O/groups, k, k] (ConvTranspose)
        if node.op_type == "Conv" and node.input[1] in shapes and node.output[0] in shapes:
            w = shapes[node.input[1]]
            macs = _prod(shapes[node.output[0]]) * w[1] * _prod(w[2:])
        elif node.op_type == "ConvTranspose" and node.input[0] in shapes and node.input[1] in shapes:
            w = shapes[node.input[1]]
            macs = _prod(shapes[node.input[0]]) * w[1] * _prod(w[2:])
        elif node.op_type in ("MatMul", "Gemm") and node.output[0] in shapes and node.input[0] in shapes:
            a = shapes[node.input[0]]
            k = a[0] if node.op_type == "Gemm" and attrs.get("transA") else a[-1]
            macs = _prod(shapes[node.output[0]]) * k
        elif node.op_type == "ModulatedConv2d" and node.input[0] in shapes and node.input[2] in shapes:
            x, w = shapes[node.input[0]], shapes[node.input[2]]
            macs = _prod(x) * w[0] * _prod(w[2:])  # per input pixel: every output channel and tap
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return GraphCost(sum(by_op.values()), weight_bytes, io_bytes, by_op)


def _matmul_graph(n: int) -> bytes:
    """The ONNX graph every ceiling times: c = a @ b, float32 n x n."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "ceiling",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # readable by every ONNX Runtime that reads opset 18
    return model.SerializeToString()


def _rate(run, n: int, runs: int) -> float:
    """GFLOP/s of run(a) computing a @ a for an n x n matrix: 2 n^3 over the median of `runs` timed runs (one
    untimed first)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    run(a)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(a)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def matmul_ceiling(providers: list[str] | None = None, n: int = 2048, runs: int = 10, threads: int | None = None) -> float:
    """GFLOP/s of an n x n x n float32 matrix product on ONNX Runtime with these providers (median of runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(_matmul_graph(n), options, providers=providers or ["CPUExecutionProvider"])
    return _rate(lambda a: session.run(None, {"a": a, "b": a}), n, runs)


def openvino_ceiling(precision: str, threads: int | None, n: int = 2048, runs: int = 10) -> float | None:
    """GFLOP/s of OpenVINO's n x n x n matrix product in f32 or bf16 (median of runs), as matmul_ceiling measures
    ONNX Runtime's; bf16 only where the CPU has it natively (None otherwise: emulated, not a ceiling), None without
    OpenVINO."""
    if precision == "bf16" and not native_bf16(cpu_flags()):
        return None
    try:
        import openvino as ov
    except ImportError:
        return None
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matmul.onnx"
        path.write_bytes(_matmul_graph(n))
        request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return _rate(lambda a: request.infer([a, a]), n, runs)
