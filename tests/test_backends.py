"""Backends: one list of names, the automatic choice and its fallbacks, OpenVINO against ONNX Runtime
on every call's graph, the bf16 refusal, the compiled-model cache, and no import loop in the runtime."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stylert
from conftest import rel_error
from stylert.runtime.feeds import feeds_for
from stylert.errors import BackendUnavailable, InputError, ModelError
from stylert.runtime.model import auto_backends, backend_names, open_model

SDK = Path(__file__).resolve().parents[1] / "sdk" / "stylert"
ov = pytest.importorskip("openvino", reason="OpenVINO is installed by `make test` (stylert[openvino])")


def test_backend_names_one_list():
    assert backend_names("cpu") == ["onnxruntime-cpu"]  # a string is not split into characters
    assert backend_names("OpenVINO, CPU") == ["openvino", "onnxruntime-cpu"]
    assert backend_names(["CUDAExecutionProvider", "cuda"]) == ["onnxruntime-cuda"]
    assert backend_names(None) is None
    with pytest.raises(InputError, match="unknown backend 'gpu-magic'; choose from onnxruntime-cpu, onnxruntime-cuda, "
                                         "openvino, openvino-bf16, tensorrt"):
        backend_names("gpu-magic")
    assert auto_backends()[-1] == "onnxruntime-cpu"
    assert set(stylert.BACKENDS) == {"onnxruntime-cpu", "onnxruntime-cuda", "openvino", "openvino-bf16", "tensorrt"}


@pytest.fixture(scope="module")
def local64(tmp_path_factory):
    """A region-local model at 64 (OpenVINO cannot convert the 32 one: see the fallback test)."""
    from conftest import built
    from stylert_export import stylize_export as sx

    def make(out):
        pack = sx.from_random_init(4, 64, ["cartoon"], with_local=True, channel_base=256, channel_max=32, w_dim=32,
                                   encoder_units=(1, 1, 1, 1), encoder_size=32, local_width=8)
        sx.export_local(pack, out / "local.onnx", log=lambda *_: None)

    return built(tmp_path_factory, "local64", make) / "local.onnx"


def _graph(name: str, request) -> Path:
    """The graph a parametrized case checks, building only the fixture it needs."""
    fixture, pick = {"generator": ("exported", "nvlabs"), "generator-mapping": ("exported", "mapping"),
                     "retouch": ("retouch_models", "masks"), "restore": ("restore_models", "sharp"),
                     "restore-quality": ("restore_models", "quality"), "stylize-encoder": ("style_pack", "encoder.onnx"),
                     "stylize-generator": ("style_pack", "cartoon.onnx"), "stylize-local": ("local64", None),
                     "restore-vsp": ("vsp_model", "path")}[name]
    value = request.getfixturevalue(fixture)
    return value if pick is None else value / pick if isinstance(value, Path) else value[pick]


@pytest.mark.parametrize("name", ["generator", "generator-mapping", "retouch", "restore", "restore-quality",
                                  "stylize-encoder", "stylize-generator", "stylize-local", "restore-vsp"])
def test_openvino_matches_onnxruntime(name, request):
    path = _graph(name, request)
    reference, model = open_model(path, "onnxruntime-cpu"), open_model(path, "openvino")
    assert model.backend == "openvino" and model.metadata == reference.metadata
    assert [s.name for s in model.inputs] == [s.name for s in reference.inputs]
    rng = np.random.default_rng(20)
    for batch in (1, 3):  # batch 1: the LATENCY model; 3: single samples on the THROUGHPUT model
        feeds = feeds_for(reference.metadata, batch)
        feeds = {k: (v + rng.uniform(-0.05, 0.05, v.shape).astype(v.dtype) if v.dtype == np.float32 and k != "psi" else v)
                 for k, v in feeds.items()}
        want, got = reference.run(feeds), model.run(feeds)
        for out in want:
            err = rel_error(got[out], want[out])
            print(f"{name} batch {batch} {out}: relative error {err:.2e}")
            assert err < 1e-4, (out, err)


def test_bf16_refused_without_hardware(exported, monkeypatch):
    from stylert.runtime import openvino as ovb

    monkeypatch.setattr(ovb, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    with pytest.raises(BackendUnavailable, match="no native bf16 .*avx512_bf16 or amx_bf16.*use openvino"):
        open_model(exported["nvlabs"], "openvino-bf16")
    monkeypatch.setattr(ovb, "cpu_flags", lambda: {"avx512_bf16"})
    model = open_model(exported["nvlabs"], "openvino-bf16")
    assert model.backend == "openvino-bf16" and model.config["INFERENCE_PRECISION_HINT"] == "bf16"


def test_fallback_when_openvino_is_absent(exported):
    code = f"""
import sys, warnings
sys.modules["openvino"] = None  # as if not installed
warnings.simplefilter("error")
from stylert.runtime.model import auto_backends, open_model
from stylert.errors import BackendUnavailable
assert "openvino" not in auto_backends(), auto_backends()
assert open_model({str(exported['nvlabs'])!r}).backend == "onnxruntime-cpu"
try:
    open_model({str(exported['nvlabs'])!r}, "openvino")
except BackendUnavailable as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backend openvino is not available" in result.stdout and "pip install 'stylert[openvino]'" in result.stdout


def test_failing_backend_falls_back_with_a_warning(exported, monkeypatch):
    from stylert.runtime import openvino as ovb

    def broken(*args, **kwargs):
        raise BackendUnavailable("OpenVINO cannot compile it (simulated)")

    monkeypatch.setattr(ovb, "load", broken)
    monkeypatch.setattr("stylert.runtime.model.auto_backends", lambda: ["openvino", "onnxruntime-cpu"])
    with pytest.warns(RuntimeWarning, match="cannot compile it .*falling back to onnxruntime-cpu"):
        assert open_model(exported["nvlabs"]).backend == "onnxruntime-cpu"
    with pytest.raises(BackendUnavailable, match="simulated"):  # named alone: no silent substitute
        open_model(exported["nvlabs"], "openvino")
    with pytest.raises(ModelError, match="no such model file"):  # the file's own problems never fall back
        open_model(exported["nvlabs"].with_name("missing.onnx"))


def test_graph_openvino_cannot_convert_falls_back(style_pack, tmp_path):
    """A real case: at 32x32 the region-local model's U^2 pooling reaches 1x1, which OpenVINO's
    ONNX reader refuses and ONNX Runtime runs."""
    path = style_pack / "local.onnx"
    with pytest.raises(BackendUnavailable, match="OpenVINO cannot convert it \\(Conversion is failed for"):
        open_model(path, "openvino")
    with pytest.warns(RuntimeWarning, match="falling back to onnxruntime-cpu"):
        assert open_model(path, "openvino,cpu").backend == "onnxruntime-cpu"
    with pytest.raises(ModelError, match="not a loadable ONNX model"):  # not ONNX at all: no fallback, no warning
        (tmp_path / "text.onnx").write_text("hello")
        open_model(tmp_path / "text.onnx", "openvino,cpu")


def test_missing_cuda_says_what_to_install(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(BackendUnavailable, match="backend onnxruntime-cuda is not available .*pip install onnxruntime-gpu"):
        open_model(exported["nvlabs"], "cuda")
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "info", str(exported["nvlabs"]), "--providers", "cuda"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "pip install onnxruntime-gpu" in result.stderr and "Traceback" not in result.stderr


def test_engine_and_backend_mismatch(exported, tmp_path):
    engine = tmp_path / "g.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ModelError, match="runs on the tensorrt backend only"):
        open_model(engine, "openvino")
    with pytest.raises(ModelError, match="stylert build-engine"):
        open_model(exported["nvlabs"], "tensorrt")


def test_compiled_cache_is_bounded(exported):
    from stylert.runtime.openvino import OpenVINOModel

    model = OpenVINOModel(exported["nvlabs"], max_compiled=1)
    ws = np.random.default_rng(1).standard_normal((2, *model.inputs[0].shape[1:])).astype(np.float32)
    assert model.compile_count == 1 and len(model.compiled) == 1  # the batch-1 LATENCY model, at load
    model.run({"ws": ws})
    assert model.compile_count == 2 and len(model.compiled) == 1  # THROUGHPUT model evicted the LATENCY one
    model.run({"ws": ws[:1]})
    assert model.compile_count == 3
    roomy = OpenVINOModel(exported["nvlabs"], max_compiled=2)
    for batch in (1, 2, 1, 2):
        roomy.run({"ws": ws[:batch]})
    assert roomy.compile_count == 2 and len(roomy.compiled) == 2


def test_disk_cache(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("OV_CACHE_DIR", str(tmp_path / "ovcache"))
    open_model(exported["nvlabs"], "openvino")
    assert any((tmp_path / "ovcache").iterdir())


def test_face_calls_and_cli_use_the_chosen_backend(retouch_models, astronaut):
    r = stylert.Retoucher(retouch_models["plain"], providers="openvino")
    assert r.model.backend == "openvino"
    base = stylert.Retoucher(retouch_models["plain"], providers="cpu")
    a, b = (m.retouch(astronaut, 1.0, channels="rgb").image.astype(int) for m in (r, base))
    assert np.abs(a - b).max() <= 1  # uint8 photos: at most one level of rounding apart
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "info", str(retouch_models["plain"])],
                            capture_output=True, text=True)
    assert result.returncode == 0 and f"backend {auto_backends()[0]} (chosen automatically" in result.stdout


def _module_imports(name: str, path: Path) -> set[str]:
    """The stylert modules a file imports at module level (imports inside functions are lazy)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            found |= {f"{parent}.{node.module}"} if node.module else {f"{parent}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_import_loop_in_the_runtime():
    """Module-level imports between stylert's modules form no cycle. The package itself is left out: nothing
    inside it imports the package root (tests/test_layers.py)."""
    modules = {".".join(("stylert", *p.relative_to(SDK).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in SDK.rglob("*.py")}
    modules.pop("stylert")
    graph = {name: {m for m in _module_imports(name, p) if m in modules} for name, p in modules.items()}
    assert "stylert.runtime.model" in graph["stylert.runtime.tensorrt"]
    backends = {f"stylert.runtime.{b}" for b in ("onnxruntime", "openvino", "tensorrt")}
    assert not graph["stylert.runtime.model"] & backends  # model.py imports a backend only inside open_model

    def visit(node, stack):
        assert node not in stack, f"import loop: {' -> '.join([*stack, node])}"
        for nxt in graph[node]:
            visit(nxt, [*stack, node])

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "openvino"])
def test_threads_checked_once_for_every_backend(exported, backend):
    """`threads` is an integer >= 1 (numpy integers too) or None on every backend; anything else is one InputError
    naming threads, from open_model and from the backend's class alike."""
    from stylert.runtime.onnxruntime import OnnxModel
    from stylert.runtime.openvino import OpenVINOModel

    cls = OnnxModel if backend.startswith("onnxruntime") else OpenVINOModel
    for bad in (2.5, -1, 0, True, "2", np.float64(2.0), 10 ** 9):
        for open_it in (lambda: open_model(exported["nvlabs"], backend, threads=bad),
                        lambda: cls(exported["nvlabs"], threads=bad)):
            with pytest.raises(InputError, match=r"^threads: .*" + repr(bad).replace("(", r"\(").replace(")", r"\)")
                               if not isinstance(bad, np.floating) else "^threads: "):
                open_it()
    for good in (1, np.int64(2), np.uint8(3)):
        model = open_model(exported["nvlabs"], backend, threads=good)
        if backend == "openvino":
            assert model.config["INFERENCE_NUM_THREADS"] == int(good) and type(model.config["INFERENCE_NUM_THREADS"]) is int
        else:
            assert model.session.get_session_options().intra_op_num_threads == int(good)
