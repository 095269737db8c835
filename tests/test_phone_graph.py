"""phone_graph's rewrites, each on a small graph of the op it replaces: ONNX Runtime runs the graph before and after
on fresh random inputs (the exact rewrites must give the same numbers bit for bit, Erf's within 1e-6), the op is
gone, and the stricter partition count (ONNX Runtime's tables with the conditions they state) takes every node."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_error

pytest.importorskip("onnxruntime")


def graph(nodes, inputs: dict, output: tuple, constants: dict | None = None) -> onnx.ModelProto:
    """A model of `nodes` with float32 inputs {name: shape}, one float32 output (name, shape) and constants."""
    g = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
                          [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in (constants or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    from stylert_export.phone_graph import rewrite_for_phones

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, rewrite_for_phones(copy)


def ops(model) -> set[str]:
    return {n.op_type for n in model.graph.node}


def feeds_for(model, rng) -> dict:
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32) * 3
            for i in model.graph.input}


def partitions(model, tmp_path) -> dict:
    from stylert_export.mobile import check_usability

    path = tmp_path / "case.onnx"
    onnx.save(model, str(path))
    return check_usability(path, tmp_path / "case.usability.txt")


X = {"x": [1, 4, 8, 8]}
EXACT = {
    "Clip": graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], X, ("y", [1, 4, 8, 8]),
                  {"lo": np.float32(-0.3), "hi": np.float32(2.5)}),
    "Min": graph([helper.make_node("Min", ["x", "c"], ["y"])], X, ("y", [1, 4, 8, 8]), {"c": np.float32(0.7)}),
    "Pad": graph([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], X, ("y", [1, 4, 11, 15]),
                 {"pads": np.array([0, 0, 2, 3, 0, 0, 1, 4], np.int64)}),
    "PixelUnshuffle (Reshape, Transpose, Reshape)": graph(
        [helper.make_node("Reshape", ["x", "s6"], ["r6"]),
         helper.make_node("Transpose", ["r6"], ["t6"], perm=[0, 1, 3, 5, 2, 4]),
         helper.make_node("Reshape", ["t6", "s4"], ["y"])], X, ("y", [1, 16, 4, 4]),
        {"s6": np.array([1, 4, 4, 2, 4, 2], np.int64), "s4": np.array([-1, 16, 4, 4], np.int64)}),
    "DepthToSpace CRD": graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")], X, ("y", [1, 3, 16, 16]),
        {"w": np.random.default_rng(0).standard_normal((12, 4, 3, 3)).astype(np.float32),
         "b": np.arange(12, dtype=np.float32)}),
    "Slice": graph(  # pSp's identity shortcut x[:, :, ::2, ::3]: a kernel-1 max pooling (ncnn: no strided Slice)
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])], {"x": [1, 4, 9, 8]},
        ("y", [1, 4, 5, 3]), {"starts": np.array([0, 0], np.int64), "ends": np.array([2 ** 63 - 1] * 2, np.int64),
                              "axes": np.array([2, 3], np.int64), "steps": np.array([2, 3], np.int64)}),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_rewrite_gives_the_same_numbers(name, tmp_path):
    model = EXACT[name]
    phone, done = rewritten(model)
    assert done.get(name) == 1, done
    gone = {"Clip": "Clip", "Min": "Min", "Pad": "Pad", "DepthToSpace CRD": None,
            "Slice": "Slice"}.get(name, "Transpose")
    assert gone is None or gone not in ops(phone), ops(phone)
    rng = np.random.default_rng()
    for _ in range(3):
        feeds = feeds_for(model, rng)
        np.testing.assert_array_equal(run(phone, feeds), run(model, feeds))
    for ep, p in partitions(phone, tmp_path).items():
        assert (p.supported, p.partitions, p.failed_conditions) == (p.nodes, 1, {}), (ep, p)


def test_a_bounded_clip_nnapi_cannot_take_is_counted_out(tmp_path):
    """ONNX Runtime's checker counts any Clip as NNAPI's; its NNAPI EP takes only relu6 and relu1 bounds: the
    stricter count leaves the node out and says why, and relu1 stays a Clip."""
    found = partitions(EXACT["Clip"], tmp_path)["NNAPI"]
    assert found.supported == 0 and found.failed_conditions == {"Clip: not bounds [0, 6] or [-1, 1] (relu6, relu1)": 1}
    relu1 = graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], X, ("y", [1, 4, 8, 8]),
                  {"lo": np.float32(-1), "hi": np.float32(1)})
    assert rewritten(relu1)[1] == {} and partitions(relu1, tmp_path)["NNAPI"].supported == 1


def test_erf_in_phone_ops_within_its_bound(tmp_path):
    """Abramowitz & Stegun 7.1.26 in Mul, Div, Sqrt, Exp and relu1: within 1e-6 of ONNX Runtime's Erf (the
    formula's 1.5e-7 plus float32 rounding: 5.7e-7 at most on a dense grid of [-6, 6]) from 0 through the tails,
    odd, NaN kept; the GELU built on it within 1e-6 relative."""
    model = graph([helper.make_node("Erf", ["x"], ["y"])], {"x": [4096]}, ("y", [4096]))
    phone, done = rewritten(model)
    assert done == {"Erf": 1} and "Erf" not in ops(phone)
    rng = np.random.default_rng()
    x = np.concatenate([rng.standard_normal(4000) * 2, [0, -0.0, 1e-30, -1e-30, 1e-8, 5, -5, 30, -30, 1e30, -1e30],
                        rng.uniform(-1e-3, 1e-3, 85)]).astype(np.float32)
    got, want = run(phone, {"x": x}), run(model, {"x": x})
    assert np.abs(got.astype(np.float64) - want).max() <= 1e-6
    np.testing.assert_array_equal(run(phone, {"x": -x}), -got)
    assert np.isnan(run(phone, {"x": np.full(4096, np.nan, np.float32)})).all()
    gelu = 0.5 * x * (1 + got.astype(np.float64)), 0.5 * x * (1 + want.astype(np.float64))
    assert rel_error(*gelu) < 1e-6
    for ep, p in partitions(phone, tmp_path).items():
        assert (p.supported, p.partitions) == (p.nodes, 1), (ep, p)


@pytest.mark.parametrize("op", ["ReduceL2", "ReduceSum"])
def test_reductions_as_scaled_means(op, tmp_path):
    """ReduceSum as ReduceMean times the count, ReduceL2 as the square root of that over the squares: the same
    arithmetic, within float32 rounding."""
    model = graph([helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)], X, ("y", [1, 4, 8, 1]),
                  {"axes": np.array([-1], np.int64)})
    phone, done = rewritten(model)
    assert done == {op: 1} and op not in ops(phone)
    feeds = feeds_for(model, np.random.default_rng())
    assert rel_error(run(phone, feeds), run(model, feeds)) < 1e-6
    for ep, p in partitions(phone, tmp_path).items():
        assert (p.supported, p.partitions) == (p.nodes, 1), (ep, p)


@pytest.mark.parametrize("axis, shape", [(2, [1, 6, 1]), (1, [1, 1, 16]), (-1, [1, 6, 1])])
def test_token_means_as_matmuls_for_ncnn(axis, shape):
    """For ncnn: a mean over a token tensor's tokens or channels (rank 3, as PixelNorm and layer norms take them) as
    a MatMul with a constant averaging vector, within float32 rounding of ONNX Runtime's ReduceMean; a rank-4 mean
    (an image's) stays as it is."""
    from stylert_export.phone_graph import rewrite_for_ncnn

    model = graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], {"x": [1, 6, 16]},
                  ("y", shape), {"axes": np.array([axis], np.int64)})
    ncnn_graph = onnx.ModelProto()
    ncnn_graph.CopyFrom(model)
    assert rewrite_for_ncnn(ncnn_graph) == {"ReduceMean": 1} and ops(ncnn_graph) == {"MatMul"}
    feeds = feeds_for(model, np.random.default_rng())
    got, want = run(ncnn_graph, feeds), run(model, feeds)
    assert got.shape == want.shape == tuple(shape) and rel_error(got, want) < 1e-6
    image = graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], X, ("y", [1, 4, 8, 1]),
                  {"axes": np.array([-1], np.int64)})
    assert rewrite_for_ncnn(image) == {}


def test_squeeze_to_rank1_as_reshape_for_ncnn():
    """For ncnn: a Squeeze down to rank 1 (a flag taken from a [1, 4] input) as a Reshape to the same shape, the same
    numbers; a Squeeze to a higher rank stays."""
    from stylert_export.phone_graph import rewrite_for_ncnn

    model = graph([helper.make_node("Slice", ["x", "s", "e", "a"], ["f"]),
                   helper.make_node("Squeeze", ["f", "a"], ["y"])], {"x": [1, 4]}, ("y", [1]),
                  {"s": np.array([2], np.int64), "e": np.array([3], np.int64), "a": np.array([1], np.int64)})
    ncnn_graph = onnx.ModelProto()
    ncnn_graph.CopyFrom(model)
    assert rewrite_for_ncnn(ncnn_graph) == {"Squeeze": 1} and "Squeeze" not in ops(ncnn_graph)
    feeds = feeds_for(model, np.random.default_rng())
    np.testing.assert_array_equal(run(ncnn_graph, feeds), run(model, feeds))
    higher = graph([helper.make_node("Squeeze", ["x", "a"], ["y"])], {"x": [1, 1, 4]}, ("y", [1, 4]),
                   {"a": np.array([1], np.int64)})
    assert rewrite_for_ncnn(higher) == {}


def test_at_most_as_a_float_mask_for_ncnn():
    """For ncnn (no comparison layer): Cast(LessOrEqual(x, c), float) as 1 - Ceil(Clip(x - c, 0, 1)), the same mask
    bit for bit on values at c, one float step either side of it, zero, a subnormal, far from it and random; a
    comparison with a value the graph computes stays."""
    from stylert_export.phone_graph import rewrite_for_ncnn

    nodes = [helper.make_node("LessOrEqual", ["x", "c"], ["le"]),
             helper.make_node("Cast", ["le"], ["m"], to=TensorProto.FLOAT)]
    mask = graph(nodes, {"x": [1, 2, 64]}, ("m", [1, 2, 64]), {"c": np.float32(0.25)})
    ncnn_graph = onnx.ModelProto()
    ncnn_graph.CopyFrom(mask)
    assert rewrite_for_ncnn(ncnn_graph) == {"LessOrEqual": 1}
    assert not ops(ncnn_graph) & {"LessOrEqual", "Cast"}
    c = np.float32(0.25)
    edges = [c, np.nextafter(c, np.float32(1)), np.nextafter(c, np.float32(0)), 0, -0.0, 1.25, 1e30, -1e30,
             np.float32(1.4e-45)]
    x = np.random.default_rng().standard_normal(128).astype(np.float32)
    x[:len(edges)] = edges
    feeds = {"x": x.reshape(1, 2, 64)}
    got, want = run(ncnn_graph, feeds), run(mask, feeds)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want[0, 0, :len(edges)], [1, 0, 1, 1, 1, 0, 0, 1, 1])
    assert rewrite_for_ncnn(graph(nodes, {"x": [1, 2, 64], "c": [1]}, ("m", [1, 2, 64]))) == {}


def test_pool_of_one_pixel_as_identity_for_ncnn():
    """For ncnn: a max pooling (ceil mode) from a 1x1 map to a 1x1 map is the map itself; one over a larger map
    stays."""
    from stylert_export.phone_graph import rewrite_for_ncnn

    def pool(side, out):
        return graph([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                     {"x": [1, 4, side, side]}, ("y", [1, 4, out, out]))

    one = pool(1, 1)
    ncnn_graph = onnx.ModelProto()
    ncnn_graph.CopyFrom(one)
    assert rewrite_for_ncnn(ncnn_graph) == {"MaxPool": 1} and ops(ncnn_graph) == {"Identity"}
    feeds = feeds_for(one, np.random.default_rng())
    np.testing.assert_array_equal(run(ncnn_graph, feeds), run(one, feeds))
    assert rewrite_for_ncnn(pool(3, 2)) == {}
