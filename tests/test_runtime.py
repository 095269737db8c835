"""The torch-free runtime: input validation, model errors, providers."""
import subprocess
import sys

import numpy as np
import onnx
import pytest

import stylert
from stylert import Generator, InputError, ModelError, open_model


def test_runtime_never_imports_torch(exported):
    """Import stylert and run a model in a process where importing torch would fail."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import stylert, numpy as np\n"
        f"g = stylert.Generator({str(exported['mapping'])!r})\n"
        "img = stylert.to_uint8(g.generate(g.z_from_seeds([1, 2]), 0.7))\n"
        "assert img.shape == (2, 32, 32, 3) and img.dtype == np.uint8\n"
        "import stylert.cli; stylert.cli.build_parser()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_synthesize_matches_direct_session(exported):
    import onnxruntime as ort
    g = Generator(exported["nvlabs"], providers=["cpu"])
    ws = np.random.default_rng(0).standard_normal((2, 8, 32)).astype(np.float32)
    direct = ort.InferenceSession(str(exported["nvlabs"]), providers=["CPUExecutionProvider"]).run(None, {"ws": ws})[0]
    assert np.array_equal(g.synthesize(ws), direct)
    assert np.array_equal(g.synthesize(ws.astype(np.float64)), direct)  # floats are converted


def test_seeds_are_reproducible(exported):
    g = Generator(exported["mapping"])
    a, b = g.generate(g.z_from_seeds([3]), 0.7), g.generate(g.z_from_seeds([3]), 0.7)
    c = g.generate(g.z_from_seeds([4]), 0.7)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.allclose(g.z_from_seeds([3])[0], np.random.RandomState(3).randn(32))


@pytest.mark.parametrize("ws,match", [
    (np.zeros((2, 8), np.float32), "rank 2"),
    (np.zeros((2, 7, 32), np.float32), r"axis 1 \(7 != 8\)"),
    (np.zeros((2, 8, 32), np.int64), "not floating point"),
    (np.zeros((0, 8, 32), np.float32), "empty batch"),
    (np.full((1, 8, 32), np.nan, np.float32), "NaN"),
    ([[0.0]], "numpy array"),
])
def test_bad_inputs(exported, ws, match):
    with pytest.raises(InputError, match=match):
        Generator(exported["nvlabs"]).synthesize(ws)


def test_bad_input_names_and_batches(exported):
    model = open_model(exported["mapping"])
    with pytest.raises(InputError, match="expected z"):
        model.run({"ws": np.zeros((1, 8, 32), np.float32)})
    with pytest.raises(InputError, match="batch 3 differs"):
        model.run({"z": np.zeros((2, 32), np.float32), "truncation_psi": np.ones(3, np.float32)})
    with pytest.raises(InputError, match="use generate"):
        Generator(exported["mapping"]).synthesize(np.zeros((1, 8, 32), np.float32))
    with pytest.raises(InputError, match="use synthesize"):
        Generator(exported["nvlabs"]).generate(np.zeros((1, 32), np.float32))


def test_model_file_errors(tmp_path, exported):
    with pytest.raises(ModelError, match="no such model file"):
        open_model(tmp_path / "missing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        open_model(tmp_path / "empty.onnx")
    (tmp_path / "text.onnx").write_text("not a model at all")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        open_model(tmp_path / "text.onnx")


def _with_metadata(src, dst, **updates):
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(updates)
    props = {k: v for k, v in props.items() if v is not None}
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(dst))
    return dst


def test_metadata_errors(tmp_path, exported):
    with pytest.raises(ModelError, match="format 9"):
        open_model(_with_metadata(exported["nvlabs"], tmp_path / "future.onnx", **{"stylert.format": "9"}))
    with pytest.raises(ModelError, match="no stylert metadata"):
        open_model(_with_metadata(exported["nvlabs"], tmp_path / "plain.onnx", **{"stylert.format": None}))
    with pytest.raises(ModelError, match="for 'retouch', not 'generator'"):
        Generator(_with_metadata(exported["nvlabs"], tmp_path / "other.onnx", **{"stylert.call": "retouch"}))


def test_providers():
    assert stylert.resolve_providers(None)[-1] == "onnxruntime-cpu"
    assert stylert.resolve_providers(["cpu"]) == stylert.resolve_providers("cpu") == ["onnxruntime-cpu"]
    with pytest.raises(InputError, match="unknown backend 'NoSuchExecutionProvider'"):
        stylert.resolve_providers(["NoSuchExecutionProvider"])


def test_to_uint8_rounding():
    img = np.array([-1.0, 0.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 4).repeat(3, axis=1)
    assert stylert.to_uint8(img)[0, 0, :, 0].tolist() == [0, 128, 255, 255]


@pytest.mark.parametrize("env, given, want", [("1", None, 1), ("3", 2, 2), ("", None, 0), ("0", None, 0),
                                              ("x", None, 0)])
def test_threads_default_to_omp_num_threads(exported, monkeypatch, env, given, want):
    """Without `threads`, a model takes OMP_NUM_THREADS where it is a positive integer (0 in the session options:
    ONNX Runtime's own choice); `threads` wins; OpenVINO gets the same number."""
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    model = open_model(exported["nvlabs"], "onnxruntime-cpu", threads=given)
    assert model.session.get_session_options().intra_op_num_threads == want
    pytest.importorskip("openvino", reason="the OpenVINO half needs openvino (pip install 'stylert[openvino]')")
    model = open_model(exported["nvlabs"], "openvino", threads=given)
    assert model.config.get("INFERENCE_NUM_THREADS", 0) == want
