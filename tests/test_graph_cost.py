"""FLOP counting from ONNX graphs against PyTorch's own FLOP counter; the matmul ceiling."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from stylert.tools.graph_cost import graph_cost, matmul_ceiling  # noqa: E402


def torch_macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def test_generator_macs_equal_pytorch(exported):
    from stylert_export.generator import rebuild_reference
    g = rebuild_reference(exported["random"]).requires_grad_(False)
    cost = graph_cost(exported["random"])
    want = torch_macs(lambda: g(g.z_to_ws(torch.randn(1, 16), 0.7)))
    assert cost.macs == want and cost.weight_bytes > 0 and set(cost.by_op) >= {"Conv", "ConvTranspose", "MatMul"}


def test_retoucher_macs_equal_pytorch(retouch_models):
    model = retouch_models["source"].model.requires_grad_(False)
    cost = graph_cost(retouch_models["plain"])
    want = torch_macs(lambda: model(torch.rand(1, 3, 32, 32), torch.ones(1)))
    print(f"retoucher 32: {cost.gflops:.4f} GFLOP per image, {cost.weight_bytes / 1e6:.2f} MB of weights")
    assert abs(cost.macs - want) / want < 1e-9


def test_macs_of_a_tiny_known_graph(tmp_path):
    """Every counted op on a graph small enough to count by hand; element-wise ops count nothing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def weight(name, *shape):
        return numpy_helper.from_array(np.ones(shape, np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]),  # [1,3,8,8] -> [1,4,8,8], 3x3
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt"], ["t"], strides=[2, 2]),  # [1,4,8,8] -> [1,2,16,16], 2x2
             helper.make_node("Reshape", ["t", "shape"], ["flat"]),  # [1, 512]
             helper.make_node("MatMul", ["flat", "wm"], ["m"]),  # [1,512] x [512,5]
             helper.make_node("Gemm", ["m", "wg"], ["y"], transB=1)]  # [1,5] x [7,5]^T -> [1,7]
    inits = [weight("wc", 4, 3, 3, 3), weight("wt", 4, 2, 2, 2), weight("wm", 512, 5), weight("wg", 7, 5),
             numpy_helper.from_array(np.array([1, 512], np.int64), "shape")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    cost = graph_cost(tmp_path / "tiny.onnx")
    conv = (4 * 8 * 8) * (3 * 3 * 3)  # every output value: input channels x taps
    convt = (4 * 8 * 8) * (2 * 2 * 2)  # every input value: output channels x taps
    matmul, gemm = 5 * 512, 7 * 5
    assert cost.by_op == {"Conv": conv, "ConvTranspose": convt, "MatMul": matmul, "Gemm": gemm}
    assert cost.macs == conv + convt + matmul + gemm == 6912 + 2048 + 2560 + 35
    assert cost.gflops == 2 * cost.macs / 1e9
    assert cost.weight_bytes == 4 * (4 * 3 * 9 + 4 * 2 * 4 + 512 * 5 + 7 * 5) + 8 * 2
    assert cost.io_bytes == 4 * (3 * 8 * 8 + 7)


def test_matmul_ceiling_is_the_median_rate(monkeypatch):
    """2 n^3 FLOP over the median of the timed runs (a clock that says how long each run took: no machine speed)."""
    import stylert.tools.graph_cost as gc

    durations = iter([0.5, 0.1, 0.3, 0.2, 0.4])
    clock = {"now": 0.0, "start": True}

    def perf_counter():
        if not clock["start"]:
            clock["now"] += next(durations)
        clock["start"] = not clock["start"]
        return clock["now"]

    monkeypatch.setattr(gc.time, "perf_counter", perf_counter)
    rate = matmul_ceiling(n=64, runs=5)
    assert rate == pytest.approx(2 * 64 ** 3 / 0.3 / 1e9, rel=1e-12)
