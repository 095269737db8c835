"""Plugin-flavour graphs: one custom node per modulated conv / BAFS blend, agreeing with the portable flavour."""
import collections

import numpy as np
import onnx
import pytest

import stylert

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime_extensions")
from conftest import max_abs  # noqa: E402
from stylert_export import retouch_export as rx, restore_export as qx  # noqa: E402
from stylert_export.plugin_ops import runnable_on_onnxruntime  # noqa: E402


def custom_nodes(path):
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.domain == "stylert"]
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["plugin_namespace"] == b"stylert" and attrs["plugin_version"] == b"1"
    return collections.Counter(n.op_type for n in nodes)


def test_generator_flavours_agree(exported, generator_flavours, reference_outputs):
    paths = {"portable": exported["nvlabs"], "plugin": generator_flavours["plugin"]}
    counts = custom_nodes(paths["plugin"])
    assert counts == {"ModulatedConv2d": 7 + 4}  # 7 synthesis convs + 4 toRGB at 32x32
    assert custom_nodes(paths["portable"]) == {}
    ws = reference_outputs["nvlabs_ws"]
    import onnxruntime as ort
    portable = ort.InferenceSession(str(paths["portable"]), providers=["CPUExecutionProvider"]).run(None, {"ws": ws})[0]
    plugin = runnable_on_onnxruntime(paths["plugin"]).run(None, {"ws": ws})[0]
    err = max_abs(plugin, portable)
    print(f"generator plugin vs portable flavour: max abs {err:.2e}")
    assert err < 1e-4 and max_abs(plugin, reference_outputs["nvlabs_image"]) < 1e-3


def test_fp16_generator_flavours_agree(generator_flavours, reference_outputs):
    """`export --fp16 --flavor plugin`: fp16 nodes whose weight, bias, noise and filter are fp16 and
    styles fp32, passing the export's own ONNX Runtime check; against the fp16 portable graph."""
    paths = {"portable": generator_flavours["fp16"], "plugin": generator_flavours["fp16_plugin"]}
    model = onnx.load(str(paths["plugin"]))
    types = {t.name: t.data_type for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "ModulatedConv2d"]
    assert len(convs) == 11 and all(types.get(n.input[2]) == onnx.TensorProto.FLOAT16 for n in convs)
    ws = np.random.default_rng(21).standard_normal(reference_outputs["nvlabs_ws"].shape).astype(np.float32)
    import onnxruntime as ort
    portable = ort.InferenceSession(str(paths["portable"]), providers=["CPUExecutionProvider"]).run(None, {"ws": ws})[0]
    plugin = runnable_on_onnxruntime(paths["plugin"]).run(None, {"ws": ws})[0]
    err = max_abs(plugin, portable)
    print(f"fp16 generator plugin vs portable flavour: max abs {err:.2e}")
    assert plugin.dtype == np.float32 and err < 2e-2  # both fp16: rounding differs where the plugin widens to fp32


def test_retoucher_and_restorer_flavours_agree(tmp_path, retouch_models, restore_models):
    """The plugin flavour of the session's retoucher (with masks) and sharp restorer against their portable graphs."""
    paths = {"portable": retouch_models["masks"], "plugin": tmp_path / "r_plugin.onnx"}
    rx.export_retoucher(retouch_models["source"], paths["plugin"], with_masks=True, flavor="plugin", log=lambda *_: None)
    assert custom_nodes(paths["plugin"]) == {"ModulatedConv2d": 11, "BAFSBlend": 3}
    rng = np.random.default_rng(0)
    feeds = {"image": rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32), "strength": np.array([0.5, 1.5], np.float32)}
    import onnxruntime as ort
    a = ort.InferenceSession(str(paths["portable"]), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = runnable_on_onnxruntime(paths["plugin"]).run(None, feeds)
    assert len(a) == len(b) == 7 and max(max_abs(x, y) for x, y in zip(a, b)) < 1e-4
    qpaths = {"portable": restore_models["sharp"], "plugin": tmp_path / "q_plugin.onnx"}
    qx.export_restorer(restore_models["source"], qpaths["plugin"], flavor="plugin", log=lambda *_: None)
    assert custom_nodes(qpaths["plugin"])["ModulatedConv2d"] == 11
    qfeeds = {"image": feeds["image"], "fidelity": np.zeros(2, np.float32)}
    qa = ort.InferenceSession(str(qpaths["portable"]), providers=["CPUExecutionProvider"]).run(None, qfeeds)[0]
    qb = runnable_on_onnxruntime(qpaths["plugin"]).run(None, qfeeds)[0]
    assert max_abs(qa, qb) < 1e-4


def test_runtime_explains_plugin_graphs(generator_flavours):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file's problem: refused at once, no backend fallback warning
        for backend in (None, "cpu", "openvino"):
            with pytest.raises(stylert.ModelError, match="plugin-flavour graph .*--flavor portable"):
                stylert.Generator(generator_flavours["plugin"], backend)
