"""The TensorRT path: what can be checked without TensorRT here, and the checks that need it (skipped)."""
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stylert
from stylert.errors import BackendUnavailable, ModelError
from stylert.runtime.engine import check_engine_metadata, cuda_check, cudart, load_plugins, read_graph, require_tensorrt
from stylert.tools.trt_build import EngineOptions, check_precision, network_flags

ROOT = Path(__file__).parents[1]
TRT_FILES = ["sdk/stylert/tools/trt_build.py", "sdk/stylert/runtime/tensorrt.py", "sdk/stylert/runtime/engine.py"]
TRT11_SRC = ROOT.parent / "shared" / "third_party" / "tensorrt" / "python" / "src"
# Defined by the `tensorrt` package's own __init__.py in every release (not by the C++ bindings).
PACKAGE_NAMES = {"__version__"}


def real_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


NEEDS_TRT = pytest.mark.skipif(not real_tensorrt(), reason="TensorRT's builder cannot be installed in this workplace "
                               "(PyPI serves only stubs) and no GPU is attached: run on a GPU machine with tensorrt")


def trt_chains(path: Path) -> set[tuple[str, ...]]:
    """Every attribute chain rooted at the name `trt` in a file: trt.A -> ("A",), trt.A.B -> ("A", "B")."""
    chains = set()
    for node in ast.walk(ast.parse(path.read_text())):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id == "trt":
            chains.add(tuple(reversed(parts)))
    return chains


def stub_api() -> tuple[set[str], dict[str, set[str]]]:
    """TensorRT 10's names from tensorrt-stubs: module-level names and each class's members. Read by
    lines, not by `ast`: the generated stubs are not always valid Python (defaults before non-defaults)."""
    spec = importlib.util.find_spec("tensorrt_bindings")
    assert spec is not None, "tensorrt-stubs must be installed (make test installs it)"
    root = Path(spec.submodule_search_locations[0])
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for stub in (root / "tensorrt.pyi", root / "__init__.pyi", root.parent / "tensorrt" / "__init__.pyi"):
        current = None
        for line in stub.read_text().splitlines():
            if m := re.match(r"class (\w+)", line):
                current = m.group(1)
                names.add(current)
                members.setdefault(current, set())
            elif m := re.match(r"(?:def )?(\w+)\s*[:=(]", line):
                current = None
                names.add(m.group(1))
            elif m := re.match(r"from \S+ import (.+)", line):
                current = None
                names |= {part.split(" as ")[-1].strip() for part in m.group(1).split(",")}
            elif current and (m := re.match(r"    (?:def )?(\w+)\s*[:=(]", line)):
                members[current].add(m.group(1))
    return names, members


def bindings_api() -> tuple[set[str], dict[str, set[str]]]:
    """TensorRT 11's names from the pybind11 sources: `(m, "Class"` blocks and their members (nested
    enums exported into a class count as its members; a class inherits its bound base's), `m.def("f"`."""
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    bases: dict[str, str] = {}  # python name -> C++ base type
    python_name: dict[str, str] = {}  # C++ type -> python name
    member = re.compile(r'\.(?:value|def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly)'
                        r'\(\s*"(\w+)"')
    for src in TRT11_SRC.rglob("*.cpp"):
        text = src.read_text(errors="replace")
        names |= set(re.findall(r'\bm\.def\(\s*"(\w+)"', text))
        for cpp, base, name in re.findall(r'py::(?:class_|enum_)<\s*([\w:]+)\s*(?:,\s*([\w:]+))?[^>]*>\s*\w*\s*[({]\s*m\s*,'
                                          r'\s*"(\w+)"', text):
            python_name[cpp.split("::")[-1]] = name
            if base:
                bases[name] = base.split("::")[-1]
        blocks = re.split(r'[({]\s*m\s*,\s*"(\w+)"', text)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            names.add(name)
            members.setdefault(name, set()).update(member.findall(body))
    for name, base in bases.items():
        members.setdefault(name, set()).update(members.get(python_name.get(base, ""), set()))
    return names, members


@pytest.mark.parametrize("api", ["tensorrt 10 (tensorrt-stubs)", "tensorrt 11 (binding sources)"])
def test_every_trt_name_exists_in_both_apis(api):
    if api.startswith("tensorrt 11") and not TRT11_SRC.is_dir():
        reason = f"TensorRT 11's binding sources not found: {TRT11_SRC} is missing (lay shared/third_party/tensorrt " \
                 "beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":  # .ci/run: what the README says is checked must be
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    names, members = stub_api() if api.startswith("tensorrt 10") else bindings_api()
    assert len(names) > 100 and "Builder" in names, f"{api}: could not read the API ({len(names)} names)"
    missing = []
    for file in TRT_FILES:
        for chain in sorted(trt_chains(ROOT / file)):
            if chain[0] in PACKAGE_NAMES:
                continue
            if chain[0] not in names:
                missing.append(f"{file}: trt.{'.'.join(chain)} ({chain[0]} not in {api})")
            elif len(chain) > 1 and chain[1] not in members.get(chain[0], set()):
                missing.append(f"{file}: trt.{'.'.join(chain)} ({chain[1]} not a member of {chain[0]} in {api})")
    used = set().union(*(trt_chains(ROOT / f) for f in TRT_FILES))
    assert ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") in used and len(used) >= 8
    assert not missing, "\n".join(missing)


def test_removed_names_are_not_used():
    """What TensorRT 11 removed (weak typing's precision flags, implicit int8 calibration) stays out."""
    text = "".join((ROOT / f).read_text() for f in TRT_FILES)
    for name in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2", "int8_calibrator", "trt.nptype"):
        assert name not in text, name


def test_network_flags_branch_on_the_version():
    class Flag:
        STRONGLY_TYPED = 5

    class Trt10:
        __version__ = "10.3.0.26"
        NetworkDefinitionCreationFlag = Flag

    class Trt11(Trt10):
        __version__ = "11.4.0.1"

    assert network_flags(Trt10) == 1 << 5 and network_flags(Trt11) == 0


def test_typecheck_against_tensorrt_stubs():
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                             *TRT_FILES], cwd=ROOT, capture_output=True, text=True)
    assert "Success" in result.stdout, result.stdout + result.stderr
    import importlib.util
    assert importlib.util.find_spec("tensorrt") is not None, "tensorrt-stubs must be installed for a real check"


def test_engine_metadata_checks(tmp_path):
    meta = {"engine.tensorrt": "10.13.0", "engine.compute_capability": "9.0", "engine.gpu": "NVIDIA H100"}
    check_engine_metadata(meta, "m.engine", "10.13.0", "9.0")
    with pytest.raises(ModelError, match="built with TensorRT 10.13.0, this is TensorRT 10.14.0"):
        check_engine_metadata(meta, "m.engine", "10.14.0", "9.0")
    check_engine_metadata({**meta, "engine.version_compatible": True}, "m.engine", "10.14.0", "9.0")
    with pytest.raises(ModelError, match="built for NVIDIA H100 \\(compute 9.0\\), this GPU is compute 8.7"):
        check_engine_metadata(meta, "m.engine", "10.13.0", "8.7")


def test_engine_options_are_validated(tmp_path):
    with pytest.raises(ModelError, match="1 <= min <= opt <= max"):
        EngineOptions(min_batch=4, opt_batch=2).validate()
    with pytest.raises(ModelError, match="one precision of its graph"):
        EngineOptions(int8=True, fp16=True).validate()
    with pytest.raises(BackendUnavailable, match="no such plugin library"):
        EngineOptions(plugins=[str(tmp_path / "libnone.so")]).validate()


def _raises_only_model_error(call, match: str) -> None:
    """A problem of the model file: ModelError, and not BackendUnavailable (open_model never falls back on it)."""
    with pytest.raises(ModelError, match=match) as caught:
        call()
    assert not isinstance(caught.value, BackendUnavailable), caught.value


def test_a_missing_library_is_backend_unavailable(tmp_path, monkeypatch):
    """TensorRT (or only its stubs), cuda-python, onnx or a plugin library missing, or CUDA failing: BackendUnavailable,
    saying what to install; an unreadable model file or one built for another TensorRT/GPU: ModelError only."""
    import types

    with pytest.raises(BackendUnavailable, match="TensorRT is not installed.*only its type stubs"):
        require_tensorrt(types.ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "cuda", None)  # no cuda-python, in either package layout
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(BackendUnavailable, match="pip install cuda-python"):
        cudart()
    with pytest.raises(BackendUnavailable, match="CUDA error 100"):
        cuda_check((100, None))
    assert cuda_check((0, 7)) == 7 and cuda_check((0, 1, 2)) == (1, 2)

    class Registry:
        def __init__(self, loads: bool, creators: tuple[str, ...]):
            self.loads, self.creators = loads, creators

        def load_library(self, lib):
            return object() if self.loads else None

        def get_creator(self, name, version, namespace):
            return object() if name in self.creators and (version, namespace) == ("1", "stylert") else None

    lib = tmp_path / "libstylert_plugins.so"
    with pytest.raises(BackendUnavailable, match="no such plugin library"):
        load_plugins(Registry(True, ()), [str(lib)], "runtime")
    lib.write_bytes(b"\x7fELF")
    with pytest.raises(BackendUnavailable, match="could not load this plugin library into the runtime"):
        load_plugins(Registry(False, ()), [str(lib)], "runtime")
    with pytest.raises(BackendUnavailable, match=r"plugin creator\(s\) \['BAFSBlend'\] are not registered"):
        load_plugins(Registry(True, ("ModulatedConv2d",)), [str(lib)], "runtime")
    load_plugins(Registry(True, ("ModulatedConv2d", "BAFSBlend")), [str(lib)], "builder")
    load_plugins(Registry(False, ("ModulatedConv2d", "BAFSBlend")), [str(lib)], "builder")  # registered before

    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"not a graph")
    _raises_only_model_error(lambda: read_graph(graph), "not a readable ONNX model")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])), graph)
    _raises_only_model_error(lambda: read_graph(graph), "no stylert metadata")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackendUnavailable, match="pip install onnx"):
        read_graph(graph)
    _raises_only_model_error(lambda: check_engine_metadata({"engine.tensorrt": "10.3.0"}, "m.engine", "10.13.0", "9.0"),
                             "built with TensorRT 10.3.0")


def test_precision_comes_from_the_graph(exported, tmp_path):
    meta, precision = read_graph(exported["nvlabs"])
    assert precision == "fp32"
    check_precision("g.onnx", meta, precision, EngineOptions())
    with pytest.raises(ModelError, match="--fp16 needs an fp16 graph: make it with `stylert export generator ... --fp16`"):
        check_precision("g.onnx", meta, precision, EngineOptions(fp16=True))
    with pytest.raises(ModelError, match="stylert export retouch` does not offer yet"):
        check_precision("r.onnx", {"stylert.call": "retouch"}, "fp32", EngineOptions(fp16=True))
    with pytest.raises(ModelError, match="stylert quantize g.onnx --calib DIR -o g.int8.onnx"):
        check_precision("g.onnx", meta, precision, EngineOptions(int8=True))
    check_precision("g.int8.onnx", meta, "int8", EngineOptions(int8=True))


def test_build_engine_refuses_mismatches_before_tensorrt(exported, generator_flavours, tmp_path):
    """A graph of another precision, or a plugin graph without --plugins: one line, exit 2, nothing written."""
    plugin = generator_flavours["plugin"]
    for args, message in (([str(exported["nvlabs"]), "--fp16"], "an fp32 graph"),
                          ([str(plugin)], "plugin-flavour graph: pass --plugins")):
        result = subprocess.run([sys.executable, "-m", "stylert.cli", "build-engine", *args, "-o", str(tmp_path / "x.engine")],
                                capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "x.engine").exists()


def test_engine_files_go_to_the_tensorrt_backend(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(ModelError, match="m.engine.json beside it"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text("{broken")
    with pytest.raises(ModelError, match="unreadable engine metadata"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"stylert.format": "1", "stylert.call": "generator"}))
    with pytest.raises(ModelError, match="for 'generator', not 'retouch'"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"stylert.format": "1", "stylert.call": "retouch"}))
    if not real_tensorrt():
        with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
            stylert.Retoucher(engine)


@pytest.mark.skipif(real_tensorrt(), reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_says_so(retouch_models, tmp_path):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "build-engine", str(retouch_models["plain"]), "-o",
                             str(tmp_path / "r.engine")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "TensorRT is not installed" in result.stderr and not (tmp_path / "r.engine").exists()


@NEEDS_TRT
def test_engine_matches_onnx_runtime(retouch_models, astronaut, tmp_path):
    from stylert.tools.trt_build import build_engine

    engine = tmp_path / "r.engine"
    build_engine(retouch_models["plain"], engine, EngineOptions(max_batch=4))
    on_trt = stylert.Retoucher(engine).retouch(astronaut, channels="rgb").image
    on_ort = stylert.Retoucher(retouch_models["plain"], ["cpu"]).retouch(astronaut, channels="rgb").image
    assert np.abs(on_trt.astype(int) - on_ort.astype(int)).max() <= 2


@NEEDS_TRT
def test_fp16_engine_from_an_fp16_export_and_cuda_graphs_across_batches(generator_flavours, tmp_path):
    from stylert.runtime.tensorrt import TensorRTModel
    from stylert.tools.trt_build import build_engine

    graph = generator_flavours["fp16"]
    meta = build_engine(graph, tmp_path / "g16.engine", EngineOptions(fp16=True, max_batch=4))
    assert meta["engine.precision"] == "fp16"
    ws = np.random.default_rng(0).standard_normal((4, 8, 32)).astype(np.float32)
    want = stylert.open_model(graph, "cpu").run({"ws": ws})["image"]
    with TensorRTModel(tmp_path / "g16.engine", use_cuda_graph=True) as model:
        for batch in (1, 4, 1, 2):  # graphs captured per batch over buffers that never move
            got = model.run({"ws": ws[:batch]})["image"]
            assert np.abs(got - want[:batch]).max() < 5e-2
