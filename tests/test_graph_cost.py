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


def test_matmul_ceiling_is_a_rate():
    rate = matmul_ceiling(n=256, runs=3)
    assert np.isfinite(rate) and rate > 0.1
