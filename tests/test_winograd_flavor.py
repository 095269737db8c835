"""The winograd flavour: the portable graph with its wide 3x3 convolutions in Winograd's F(4x4,3x3) form, which
CPU backends run faster (benchmarks/winograd.py)."""
import importlib
import importlib.util

import numpy as np
import onnx
import pytest

import stylert

torch = pytest.importorskip("torch")
from conftest import rel_error  # noqa: E402
from stylert_export import edit_export  # noqa: E402
from stylert_export import generator as genexp  # noqa: E402
from stylert_export.onnx_export import ExportError  # noqa: E402


def _runs_as_pytorch(path, batch=2):
    """The graph on stylert's CPU runtime at its metadata's feeds (not the export check's inputs), against the
    PyTorch module it came from: the relative error."""
    from stylert.runtime.feeds import feeds_for
    from stylert_export.references import build

    model = stylert.open_model(path, "cpu")
    feeds = feeds_for(model.metadata, batch)
    got = list(model.run(feeds).values())[0]
    want = build(path, form="activation")(feeds)[0]
    return rel_error(got, want)


def _winograd_convs(path) -> int:
    graph = onnx.load(str(path)).graph
    return sum(n.op_type == "Conv" and any(a.name == "group" and a.i == 36 for a in n.attribute) for n in graph.node)


@pytest.fixture(scope="module")
def winograd_graph(tmp_path_factory):
    """A tiny generator with 256 channels up to 32x32 in the winograd flavour (its 3x3 convs at 16x16 and 32x32 take
    the form, those at 4x4 and 8x8 stay direct), and the export's parity report."""
    path = tmp_path_factory.mktemp("winograd") / "g.onnx"
    src = genexp.from_random_init(3, 32, channel_base=8192, channel_max=256, w_dim=32, mapping_layers=2)
    return path, genexp.export_generator(src, path, flavor="winograd", log=lambda *_: None)


def test_winograd_generator_runs_on_the_cpu_runtime_as_pytorch(winograd_graph):
    """Two 3x3 convs in the form (tile transforms, 36 GEMMs as one grouped conv, 4x4 depth-to-space), the export's
    parity check passed, and stylert's CPU runtime at a batch other than the export's equal to PyTorch."""
    path, parity = winograd_graph
    assert parity.ok and parity.rel < 1e-5
    graph = onnx.load(str(path)).graph
    assert _winograd_convs(path) == 2
    assert sum(n.op_type == "DepthToSpace" and any(a.name == "blocksize" and a.i == 4 for a in n.attribute)
               for n in graph.node) == 2

    model = stylert.open_model(path, "cpu")
    assert model.metadata["stylert.flavor"] == "winograd"
    ws = np.random.default_rng().standard_normal((5, int(model.metadata["stylert.num_ws"]), 32)).astype(np.float32)
    got = next(iter(model.run({"ws": ws}).values()))
    with torch.no_grad():
        want = genexp.rebuild_reference(path)(torch.from_numpy(ws)).numpy()
    err = rel_error(got, want)
    print(f"winograd generator, batch 5, against PyTorch: relative error {err:.2e}")
    assert got.shape == want.shape and err < 1e-5


def test_build_engine_says_a_winograd_graph_is_for_cpus(winograd_graph, tmp_path):
    """`stylert build-engine` on a winograd graph says, before it needs TensorRT, that the portable one is for it."""
    from stylert.tools.trt_build import EngineOptions, build_engine

    if hasattr(importlib.util.find_spec("tensorrt") and importlib.import_module("tensorrt"), "Builder"):
        pytest.skip("TensorRT is installed here (not only its stubs): the build would go on; this checks the line said "
                    "before it")
    path, _ = winograd_graph
    said = []
    with pytest.raises(stylert.BackendUnavailable):  # no TensorRT here: the line comes first
        build_engine(path, tmp_path / "g.engine", EngineOptions(), log=said.append)
    assert said == [f"{path}: a winograd-flavour graph, written for CPUs; TensorRT chooses its own convolution "
                    "algorithms, give it the portable one (export with --flavor portable)"]


def test_a_model_without_a_wide_conv_is_refused_in_one_line(tmp_path):
    """A model none of whose convolutions takes the form (16 channels) is not written as a winograd graph that is
    the portable one under another name: the export says so and leaves no file."""
    src = genexp.from_random_init(7, 16, channel_base=128, channel_max=16, w_dim=16, mapping_layers=2)
    with pytest.raises(ExportError, match="--flavor winograd: no convolution of this fp32 model takes the Winograd "
                                          r"form \(3x3, stride 1, float32, 256\+ input and output channels"):
        genexp.export_generator(src, tmp_path / "g.onnx", flavor="winograd", log=lambda *_: None)
    assert not any(tmp_path.iterdir())


def test_winograd_editor_runs_on_the_cpu_runtime_as_pytorch(tmp_path):
    """`stylert export edit --flavor winograd`: FACEMUG's five 3x3 convs of 256+ channels at 16x16 in the form, the
    export's parity check passed, and stylert's CPU runtime as close to PyTorch on other inputs as test_edit holds
    the portable editor (1e-4; FACEMUG's float32 round-off) on seeded inputs with every kind of guidance present
    somewhere in the batch."""
    from conftest import cli_export

    path = tmp_path / "edit.onnx"
    result = cli_export("edit", "--random-init", "--seed", 6, "--resolution", 32, "--bank-resolution", 32,
                        "--channel-base", 4096, "--encoder-units", "1,1,1,1", "--encoder-size", 32,
                        "--aggregation-channels", 8, "--flavor", "winograd", "-o", path)
    assert "parity" in result.stdout and "-> ok" in result.stdout
    model = stylert.open_model(path, "cpu")
    assert model.metadata["stylert.flavor"] == "winograd" and _winograd_convs(path) == 5
    reference = edit_export.rebuild_reference(path)
    inputs = edit_export.edit_inputs(reference)(3, 123)  # not the export check's seed
    assert inputs["presence"].amax(0).all()
    got = model.run({k: v.numpy() for k, v in inputs.items()})["edited"]
    with torch.no_grad():
        want = reference(**inputs).numpy()
    err = rel_error(got, want)
    print(f"winograd editor against PyTorch: relative error {err:.2e}")
    assert err < 1e-4


def test_winograd_pack_takes_the_form_where_a_graph_has_a_wide_conv(tmp_path):
    """`stylert export stylize --flavor winograd`: the style generator (256 channels at 16x16 and 32x32) takes the
    form, the encoder and the region-local model (no such conv) stay portable and say so, the manifest is written,
    and every graph on stylert's CPU runtime equals PyTorch on other inputs than the export check's."""
    import json

    from conftest import cli_export

    pack = tmp_path / "pack"
    result = cli_export("stylize", "--random-init", "--seed", 4, "--pack", pack, "--style", "cartoon", "--with-local",
                        "--resolution", 32, "--channel-base", 8192, "--channel-max", 256, "--w-dim", 32,
                        "--encoder-units", "1,1,1,1", "--encoder-size", 32, "--local-width", 8, "--flavor", "winograd")
    manifest = json.loads((pack / "stylepack.json").read_text())
    flavors = {g: stylert.open_model(pack / g, "cpu").metadata["stylert.flavor"]
               for g in (manifest["encoder"], manifest["styles"]["cartoon"]["generator"], manifest["local"])}
    assert flavors == {"encoder.onnx": "portable", "cartoon.onnx": "winograd", "local.onnx": "portable"}
    for g in ("encoder.onnx", "local.onnx"):
        assert f"{g}: no convolution takes the Winograd form; written as the portable graph" in result.stdout
    assert _winograd_convs(pack / "cartoon.onnx") == 2
    for g, flavor in flavors.items():
        err = _runs_as_pytorch(pack / g)
        print(f"{g} ({flavor}) against PyTorch: relative error {err:.2e}")
        assert err < 1e-5


def test_a_pack_without_a_wide_conv_gets_no_manifest(tmp_path):
    """A pack none of whose graphs has a conv that takes the form is not written as a winograd pack: the export
    says so in one line and writes no manifest, and the manifest of the pack it re-exported (which would name the
    graphs it replaced) is gone."""
    from stylert_export import stylize_export as sx

    src = sx.from_random_init(4, 16, ["cartoon"], channel_base=128, channel_max=16, w_dim=16,
                              encoder_units=(1, 1, 1, 1), encoder_size=16)
    (tmp_path / "stylepack.json").write_text("{}")
    with pytest.raises(ExportError, match=r"--flavor winograd: no convolution of this pack's graphs takes the "
                                          r"Winograd form \(3x3, stride 1, float32, 256\+ input and output channels.*"
                                          r"no manifest is written"):
        sx.export_pack(src, tmp_path, flavor="winograd", log=lambda *_: None)
    assert not (tmp_path / "stylepack.json").exists()
