"""Phone targets (`stylert export CALL --target ort-mobile|executorch|ncnn`): every artifact run on its own runtime
here (onnxruntime for .ort, executorch.runtime with XNNPACK for .pte, the ncnn wheel for .ncnn.param) against the
PyTorch module on fresh seeded inputs, the convolutions XNNPACK takes, ONNX Runtime's mobile usability report beside
each .ort, and the one-line refusals."""
from __future__ import annotations

import copy
import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import built, error_line, rel_error, retouch_source

torch = pytest.importorskip("torch")


def needs_executorch():
    """ExecuTorch, pnnx and ncnn come with stylert[mobile], which `make test` installs: missing under CI is a
    failure."""
    try:
        import executorch.runtime  # noqa: F401
        import ncnn  # noqa: F401
        import pnnx  # noqa: F401
    except ModuleNotFoundError as missing:
        reason = f"{missing.name} is not installed: pip install 'stylert[mobile]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)


def generator_source(channels=16):
    """The 16x16 generator; wider `channels` make its weights, not the program around them, most of a file."""
    from stylert_export.generator import from_random_init

    return from_random_init(7, 16, channel_base=8 * channels, channel_max=channels, w_dim=16, mapping_layers=2)


def quiet(*_):
    pass


@pytest.fixture(scope="session")
def phone_models(tmp_path_factory):
    """The tiny retoucher (32x32) with the face detector and generator (16x16) for the three phone targets in fp32,
    the retoucher's .ort and ncnn files in fp16, a wider generator's .pte in int8, GRIG's step and a style's generator
    as .ort (the graphs with the most ops to rewrite: GELU, L2 norms, reflect padding, pixel (un)shuffles; style
    mixing), each folder with its reports; made once per session."""
    needs_executorch()
    from stylert_export import retouch_export as rx
    from stylert_export import stylize_export as sx
    from stylert_export.generator import export_generator
    from stylert_export.inpaint_export import export_grig, grig_from_random_init
    from stylert_export.mobile import Target
    from stylert_export.phone_pipeline import convert_detector, write_pipeline

    TARGETS = (Target("ort-mobile"), Target("executorch"), Target("ncnn"))

    def make(out):
        for target in TARGETS:
            rx.export_retoucher(retouch_source(), out / target.name / "retouch.onnx", target=target, log=quiet)
            export_generator(generator_source(), out / f"{target.name}-generator" / "generator.onnx", target=target,
                             log=quiet)
        export_grig(grig_from_random_init(5, 64, ngf=8, dim=8, blocks=(1, 1, 1, 1), refinement=1),
                    out / "ort-mobile-grig" / "inpaint.onnx", target=Target("ort-mobile"), log=quiet)
        sx.export_pack(sx.from_random_init(4, 32, ["cartoon"], channel_base=256, channel_max=32, w_dim=32,
                                           encoder_units=(1, 1, 1, 1), encoder_size=32),
                       out / "ort-mobile-style", target=Target("ort-mobile"), log=quiet)
        rx.export_retoucher(retouch_source(), out / "fp16" / "retouch.onnx", target=Target("ort-mobile", "fp16"),
                            log=quiet)
        export_generator(generator_source(128), out / "int8" / "generator.onnx", target=Target("executorch", "int8"),
                         log=quiet)
        rx.export_retoucher(retouch_source(), out / "ncnn-fp16" / "retouch.onnx", target=Target("ncnn", "fp16"),
                            log=quiet)
        for target in TARGETS:
            convert_detector(out / target.name, target)
            write_pipeline(out / target.name, "retouch", target)

    return built(tmp_path_factory, "mobile", make)


def retouch_inputs(seed):
    from stylert_export.retouch_export import make_inputs

    return make_inputs(32)(1, seed)


def generator_inputs(seed):
    cfg = generator_source().generator.cfg
    g = torch.Generator().manual_seed(seed)
    return {"ws": torch.randn(1, cfg.num_ws, cfg.w_dim, generator=g)}


CASES = {"retouch": (lambda: retouch_source().model, retouch_inputs),
         "generator": (lambda: generator_source().generator, generator_inputs)}


def torch_output(name, inputs):
    build, _ = CASES[name]
    with torch.no_grad():
        out = build().eval()(**inputs)
    return (out[0] if isinstance(out, tuple) else out).numpy()


def artifact(folder, target, name):
    suffix = {"ort-mobile": ".ort", "executorch": ".pte", "ncnn": ".ncnn.param"}[target]
    return folder / (target if name == "retouch" else f"{target}-{name}") / f"{name}{suffix}"


def run_ort(path, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def run_pte(path, inputs):
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return method.execute(list(inputs.values()))[0].numpy()


def run_ncnn(path, inputs, output):
    """An ncnn .param and its .bin on the ncnn wheel, in float32 arithmetic, fed and read by the blobs and batch
    axes its report gives (ncnn.Mat's batch_index)."""
    import ncnn
    from stylert_export.mobile import batch_index, load_ncnn

    blobs = json.loads(path.with_name(path.name + ".json").read_text())["blobs"]
    with load_ncnn(path).create_extractor() as ex:
        for name, value in inputs.items():
            ex.input(blobs[name]["blob"], ncnn.Mat(value.numpy(), batch_index=batch_index(blobs[name]["batch_axis"]))
                     .clone())
        status, out = ex.extract(blobs[output]["blob"])
        assert status == 0
        return out.numpy(batch_index=batch_index(blobs[output]["batch_axis"]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_ncnn_matches_pytorch(phone_models, name):
    """The ncnn files (pnnx's conversion of the phone graph) on the ncnn wheel against PyTorch, on inputs the export
    never saw: within 1e-4 relative in fp32; the report's size counts the weights file an app ships with it; the
    phase convolutions' DepthToSpace (DCR), which pnnx leaves as it is, is ncnn's PixelShuffle in its DCR mode."""
    inputs = CASES[name][1](4246)
    path = artifact(phone_models, "ncnn", name)
    got = run_ncnn(path, inputs, {"retouch": "retouched", "generator": "image"}[name])
    assert rel_error(got, torch_output(name, inputs)) < 1e-4
    report = json.loads(path.with_name(path.name + ".json").read_text())
    assert report["size_bytes"] == path.stat().st_size + path.with_suffix(".bin").stat().st_size
    layers = [line.split() for line in path.read_text().splitlines()[2:]]
    assert not [layer for layer in layers if layer[0] == "DepthToSpace"]
    shuffles = [layer[-2:] for layer in layers if layer[0] == "PixelShuffle"]
    assert shuffles and all(params == ["0=2", "1=1"] for params in shuffles), shuffles


def test_ncnn_fp16_stores_half_the_weights(phone_models):
    """--precision fp16 for ncnn stores the weights in float16 (ncnn widens them as it loads, here): the weights file
    is at most 60% of the fp32 one (the 32x32 retoucher: 55%), and the output stays within 5e-2 of PyTorch, yet more
    than 1e-6 away from it (the weights were rounded)."""
    inputs = retouch_inputs(4247)
    fp16, fp32 = phone_models / "ncnn-fp16" / "retouch.ncnn.param", artifact(phone_models, "ncnn", "retouch")
    assert fp16.with_suffix(".bin").stat().st_size <= 0.6 * fp32.with_suffix(".bin").stat().st_size
    got, want = run_ncnn(fp16, inputs, "retouched"), torch_output("retouch", inputs)
    assert 1e-6 < rel_error(got, want) < 5e-2
    assert json.loads(fp16.with_name(fp16.name + ".json").read_text())["precision"] == "fp16"


def test_ncnn_runs_token_tensors(tmp_path):
    """A TACC block (VSP's code diffuser and FACEMUG's latent warping are built of them: rank-3 token tensors through
    a PixelNorm, layer norms and two attentions, which pnnx feeds without a batch axis) exported for ncnn and run
    there within 1e-4 of PyTorch on inputs the export never saw."""
    needs_executorch()
    from stylert_export.code_diffuser import TACCBlock
    from stylert_export.mobile import Target, artifact_path, export_phone

    torch.manual_seed(0)
    block = TACCBlock(16, cond_dim=16).eval()

    def make(batch, seed):
        g = torch.Generator().manual_seed(seed)
        return {"x": torch.randn(batch, 6, 16, generator=g), "condition": torch.randn(batch, 6, 16, generator=g)}

    target = Target("ncnn")
    report = export_phone(block, block, make, tmp_path / "tacc.onnx", output_names=["y"], metadata={}, target=target,
                          log=quiet)
    assert report.rel < 1e-4
    inputs = make(1, 99)
    got = run_ncnn(artifact_path(tmp_path / "tacc.onnx", target), inputs, "y")
    with torch.no_grad():
        want = block(**inputs).numpy()
    assert got.shape == want.shape and rel_error(got, want) < 1e-4


def test_ncnn_runs_the_style_attention_mask(tmp_path):
    """The region-local model's style attention (LFFM: keys outside the style region get a -1e4 logit, from a
    comparison ncnn has no layer for, which rewrite_for_ncnn writes in arithmetic) exported for ncnn and run there
    within 1e-4 of PyTorch on masks with empty tokens it never saw; with every key let in the output moves by far
    more."""
    needs_executorch()
    from stylert_export.local_style import LFFM
    from stylert_export.mobile import Target, artifact_path, export_phone

    torch.manual_seed(0)
    lffm = LFFM(16, 8).eval()

    def make(batch, seed):
        g = torch.Generator().manual_seed(seed)
        ms = torch.rand(batch, 1, 6, 6, generator=g) * (torch.rand(batch, 1, 6, 6, generator=g) < 0.5)
        return {"fc": torch.randn(batch, 16, 6, 6, generator=g), "fs": torch.randn(batch, 16, 6, 6, generator=g),
                "mc": torch.rand(batch, 1, 6, 6, generator=g), "ms": ms}

    target = Target("ncnn")
    report = export_phone(lffm, lffm, make, tmp_path / "lffm.onnx", output_names=["fused"], metadata={}, target=target,
                          log=quiet)
    assert report.rel < 1e-4
    inputs = make(1, 99)
    assert 0 < (inputs["ms"] == 0).sum() < inputs["ms"].numel()
    got = run_ncnn(artifact_path(tmp_path / "lffm.onnx", target), inputs, "fused")
    with torch.no_grad():
        want, unmasked = lffm(**inputs).numpy(), lffm(**{**inputs, "ms": torch.ones_like(inputs["ms"])}).numpy()
    assert got.shape == want.shape and rel_error(got, want) < 1e-4
    assert rel_error(unmasked, want) > 1e-2


def test_ncnn_runs_the_region_local_model(tmp_path):
    """The region-local stylization model at 32x32, whose U-blocks max-pool a 1x1 map (which ncnn 1.0.20261020 got
    wrong), exported for ncnn and run there within 1e-4 of PyTorch on inputs the export never saw, the style mask
    leaving tokens empty."""
    needs_executorch()
    from stylert_export import stylize_export as sx
    from stylert_export.mobile import Target, artifact_path

    pack = sx.from_random_init(4, 32, ["cartoon"], with_local=True, channel_base=256, channel_max=32, w_dim=32,
                               encoder_units=(1, 1, 1, 1), encoder_size=32, local_width=8)
    target = Target("ncnn")
    sx.export_local(pack, tmp_path / "local.onnx", target=target, log=quiet)
    inputs = sx.local_inputs(32)(1, 99)
    inputs["style_mask"] = torch.zeros(1, 1, 32, 32)
    inputs["style_mask"][..., 2:14, 4:28] = 1  # the top row of the 2x2 tokens; the bottom row empty
    assert (torch.nn.functional.adaptive_avg_pool2d(inputs["style_mask"], 2).flatten() > 0).tolist() == [1, 1, 0, 0]
    got = run_ncnn(artifact_path(tmp_path / "local.onnx", target), inputs, "stylized")
    with torch.no_grad():
        want = pack.local.eval()(**inputs).numpy()
    assert got.shape == want.shape and rel_error(got, want) < 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_ort_mobile_matches_pytorch(phone_models, name):
    """The .ort file on ONNX Runtime (which reads the ORT format a phone's runtime reads) against PyTorch, on inputs
    the export never saw: within 1e-4 relative in fp32."""
    inputs = CASES[name][1](4242)
    got = run_ort(artifact(phone_models, "ort-mobile", name), inputs)
    assert rel_error(got, torch_output(name, inputs)) < 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_executorch_matches_pytorch_with_every_conv_on_xnnpack(phone_models, name):
    inputs = CASES[name][1](4243)
    path = artifact(phone_models, "executorch", name)
    got = run_pte(path, inputs)
    assert rel_error(got, torch_output(name, inputs)) < 1e-4
    report = json.loads(path.with_name(path.name + ".json").read_text())
    assert report["convs"] > 0 and report["delegated_convs"] == report["convs"], report
    assert report["rel"] < 1e-4 and report["size_bytes"] == path.stat().st_size


def test_ort_folder_holds_what_an_app_ships(phone_models):
    """Beside the .ort: the reduced operator config a minimal runtime build reads, the usability checker's own report
    and the partition estimate for NNAPI and Core ML MLProgram; fixed shapes, float32 in and out."""
    folder = phone_models / "ort-mobile"
    config = (folder / "retouch.required_operators.config").read_text()
    assert "ai.onnx;18;" in config and "Conv" in config
    usability = (folder / "retouch.usability.txt").read_text()
    assert "Checking NNAPI" in usability and "Checking CoreML MLProgram" in usability
    report = json.loads((folder / "retouch.ort.json").read_text())
    for ep in ("NNAPI", "CoreML MLProgram"):
        p = report["partitions"][ep]
        assert 0 < p["supported"] <= p["nodes"] and p["partitions"] >= 1
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "retouch.ort"), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [[1, 3, 32, 32], [1]]
    assert {i.type for i in session.get_inputs()} == {"tensor(float)"}


PHONE_GRAPHS = {"retouch": "ort-mobile/retouch.ort", "generator": "ort-mobile-generator/generator.ort",
                "inpaint GRIG": "ort-mobile-grig/inpaint.ort", "stylize style": "ort-mobile-style/cartoon.ort"}


@pytest.mark.parametrize("name", sorted(PHONE_GRAPHS))
def test_ort_graph_fits_the_phone_accelerators(phone_models, name):
    """ONNX Runtime's partitioning of the rewritten graph (phone_graph.py), with the conditions its operator tables
    state checked too: at least 99% of the nodes in at most two partitions for NNAPI and for Core ML MLProgram, no
    operator either refuses; the file matched PyTorch within 1e-4 when it was written."""
    path = phone_models / PHONE_GRAPHS[name]
    report = json.loads(path.with_name(path.name + ".json").read_text())
    assert report["rel"] < 1e-4
    for ep in ("NNAPI", "CoreML MLProgram"):
        p = report["partitions"][ep]
        assert p["supported"] >= 0.99 * p["nodes"] and p["partitions"] <= 2 and not p["unsupported_ops"], (ep, p)
        assert not p["failed_conditions"], (ep, p)


def test_fp16_ort_keeps_float32_inputs_and_stays_close(phone_models):
    inputs = retouch_inputs(4244)
    path = phone_models / "fp16" / "retouch.ort"
    got = run_ort(path, inputs)
    assert got.dtype == np.float32
    err = rel_error(got, torch_output("retouch", inputs))
    assert err < 5e-2
    assert json.loads(path.with_name("retouch.ort.json").read_text())["precision"] == "fp16"


def test_int8_pte_quantizes_every_conv_and_stays_close(phone_models):
    """ExecuTorch int8 (XNNPACK's dynamic quantization): every convolution on XNNPACK, within 5e-2 of PyTorch on
    inputs the export never saw yet not equal to it (it did quantize), and the file under half the bytes of the
    generator's weights in float32 (int8 weights: a quarter of them, with the program and scales around them)."""
    inputs = generator_inputs(4245)
    path = phone_models / "int8" / "generator.pte"
    got = run_pte(path, inputs)
    wide = generator_source(128).generator.eval()
    with torch.no_grad():
        err = rel_error(got, wide(**inputs).numpy())
    assert 1e-4 < err < 5e-2, err
    report = json.loads(path.with_name("generator.pte.json").read_text())
    assert report["precision"] == "int8" and report["convs"] > 0 and report["delegated_convs"] == report["convs"]
    float32_bytes = 4 * sum(p.numel() for p in wide.parameters())
    assert path.stat().st_size < 0.5 * float32_bytes, (path.stat().st_size, float32_bytes)


def test_modulated_convs_stay_in_the_modules_precision():
    """In a float16 module the rosinality and VSP modulated convs give float16 (their demodulation is computed in
    float32 and cast back), so the next layer's float16 weights meet a float16 input: a module in half precision
    (on a GPU, say) runs in float16 throughout."""
    from stylert_export.rosinality import ModulatedConv2d
    from stylert_export.vsp_restorer import DilatedModulatedConv2d

    x, style = torch.randn(1, 4, 8, 8).half(), torch.randn(1, 16).half()
    assert ModulatedConv2d(4, 6, 3, 16).half()(x, style).dtype == torch.float16
    assert DilatedModulatedConv2d(4, 6, 3, 2).half()(x, torch.randn(1, 4).half()).dtype == torch.float16


class Demodulation(torch.nn.Module):
    """rsqrt(s^2 @ Wsq + 1): a demodulation's matrix product with a constant."""

    def __init__(self, cin, cout):
        super().__init__()
        self.wsq = torch.nn.Parameter(torch.empty(cin, cout))

    def forward(self, s):
        return torch.rsqrt(s.square() @ self.wsq + 1)


class Styled(torch.nn.Module):
    """A linear layer's style scaling a convolution's input, as in a modulated conv, then a convolution without bias
    whose output is demodulated."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(16)
        self.affine, self.conv, self.out = torch.nn.Linear(32, 64), torch.nn.Conv2d(64, 64, 3, padding=1), \
            torch.nn.Conv2d(64, 32, 3, padding=1, bias=False)
        self.demod = Demodulation(64, 32)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) / 8
        self.demod.wsq.data = self.demod.wsq.data.abs()

    def forward(self, x, w):
        s = self.affine(w)
        y = self.out(torch.nn.functional.leaky_relu(self.conv(x * s[:, :, None, None]), 0.2))
        return y * self.demod(s)[:, :, None, None]


@pytest.mark.parametrize("keep", [(), ("affine",)])
def test_fp16_pte_stores_float16_weights_and_computes_in_float32(tmp_path, keep):
    """--precision fp16 for ExecuTorch: convolution and linear weights and biases, and a matrix product's constant
    operand, stored in float16, so the file is smaller by half their float32 bytes, with the arithmetic in float32:
    on fresh inputs the output is PyTorch's float32 on the weights rounded to float16, every convolution on XNNPACK.
    A submodule whose class asks for float32 weights (float32_weights, as VSP's code diffuser does) keeps them."""
    needs_executorch()
    from stylert_export.mobile import _run_pte, _write_pte

    module = Styled().eval().requires_grad_(False)
    for name in keep:
        module.get_submodule(name).float32_weights = True
    example = {"x": torch.randn(1, 64, 12, 12), "w": torch.randn(1, 32)}
    paths = {p: tmp_path / f"{p}.pte" for p in ("fp32", "fp16")}
    for precision, path in paths.items():
        assert _write_pte(module, example, path, precision) == (2, 2)
    from executorch.backends.xnnpack.operators.node_visitor import _node_visitor_dict

    assert not any(v.__name__ == "HalfWeights" for v in _node_visitor_dict.values())  # ExecuTorch's own, restored
    halved = {n: p for n, p in module.named_parameters() if not n.startswith(keep)}
    saved = paths["fp32"].stat().st_size - paths["fp16"].stat().st_size
    weight_bytes = 4 * sum(p.numel() for p in halved.values())
    assert 0.49 * weight_bytes < saved < 0.51 * weight_bytes, (saved, weight_bytes)
    g = torch.Generator().manual_seed(61)
    inputs = {"x": torch.randn(1, 64, 12, 12, generator=g), "w": torch.randn(1, 32, generator=g)}
    got = _run_pte(paths["fp16"], inputs)[0]
    rounded = copy.deepcopy(module)
    for name, p in rounded.named_parameters():
        if name in halved:
            p.data = p.data.half().float()
    with torch.no_grad():
        want, exact = rounded(**inputs).numpy(), module(**inputs).numpy()
    assert rel_error(got, want) < 1e-6, rel_error(got, want)
    assert rel_error(got, exact) > 1e-5  # the weights were rounded


def test_int8_pte_stores_the_float_weights_it_leaves_in_float16(tmp_path):
    """--precision int8 for ExecuTorch quantizes convolution and linear weights; a matrix product's constant operand
    (the demodulation's Wsq), which its quantizer leaves float, is stored in float16: the file is smaller by half
    that constant's float32 bytes than with it kept in float32 (float32_weights), and within int8's 5e-2 of PyTorch."""
    needs_executorch()
    from stylert_export.mobile import _run_pte, _write_pte

    example = {"x": torch.randn(1, 64, 12, 12), "w": torch.randn(1, 32)}
    sizes = {}
    for keep in ((), ("demod",)):
        module = Styled().eval().requires_grad_(False)
        for name in keep:
            module.get_submodule(name).float32_weights = True
        path = tmp_path / f"int8{len(keep)}.pte"
        assert _write_pte(module, example, path, "int8") == (2, 2)
        sizes[keep] = path.stat().st_size
    halved_bytes = 2 * module.demod.wsq.numel()
    assert 0.9 * halved_bytes < sizes[("demod",)] - sizes[()] < 1.1 * halved_bytes, (sizes, halved_bytes)
    g = torch.Generator().manual_seed(62)
    inputs = {"x": torch.randn(1, 64, 12, 12, generator=g), "w": torch.randn(1, 32, generator=g)}
    with torch.no_grad():
        want = module(**inputs).numpy()
    err = rel_error(_run_pte(tmp_path / "int80.pte", inputs)[0], want)
    assert 1e-4 < err < 5e-2, err


def test_pipeline_json_reproduces_the_sdk(phone_models):
    """pipeline.json's numbers, followed as written, give what the SDK computes: the alignment template, the
    feathered paste-back mask, the normalisation; the models it names are the files beside it, with their shapes."""
    import cv2
    from stylert.faces.align import feather_mask, template
    from stylert.faces.pipeline import to_network, to_uint8

    folder = phone_models / "ort-mobile"
    spec = json.loads((folder / "pipeline.json").read_text())
    size = spec["input"]["size"]
    assert size == 32 and spec["call"] == "retouch" and spec["controls"]["strength"]["default"] == 1.0
    np.testing.assert_allclose(spec["alignment"]["template"], template(size), atol=1e-4)
    f = spec["paste_back"]["feather"]
    mask = np.zeros((size, size), np.float32)
    mask[f["margin"]:size - f["margin"], f["margin"]:size - f["margin"]] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), f["sigma"])
    mask[mask < f["zero_below"]] = 0.0
    np.testing.assert_array_equal(mask, feather_mask(size))
    crop = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop[None].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1, to_network([crop]))
    np.testing.assert_array_equal(to_uint8(to_network([crop]))[0], crop)
    import onnxruntime as ort

    network = spec["models"]["network"]
    session = ort.InferenceSession(str(folder / network["file"]), providers=["CPUExecutionProvider"])
    assert [[i.name, i.shape] for i in session.get_inputs()] == [[n, shape] for n, shape, _ in network["inputs"]]
    for name in spec["detector"]["files"]:
        assert (folder / name).is_file()


def test_detector_ort_files_match_the_shipped_graphs(phone_models):
    """The face detector's ORT-format files against the ONNX files stylert ships, on an input the conversion's own
    check did not use."""
    import onnxruntime as ort
    from stylert.faces.detect import mtcnn_model_dir

    shapes = {"pnet": (2, 60, 40, 3), "rnet": (3, 24, 24, 3), "onet": (2, 48, 48, 3)}
    for name, shape in shapes.items():
        feed = np.random.default_rng(11).uniform(-1, 1, shape).astype(np.float32)
        sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                    for p in (phone_models / "ort-mobile" / "detector" / f"{name}.ort", mtcnn_model_dir() / f"{name}.onnx")]
        got, want = (s.run(None, {s.get_inputs()[0].name: feed}) for s in sessions)
        for a, b in zip(got, want):
            assert rel_error(a, b) < 1e-5


def assert_detector_matches(network, shapes: dict, seed: int, tolerance: float) -> None:
    """`network(name)` (a phone detector file behind MTCNNDetector's session calls) against the ONNX file stylert
    ships, on seeded inputs of each of `shapes[name]`: every output of the same shape, within `tolerance`."""
    import onnxruntime as ort
    from stylert.faces.detect import mtcnn_model_dir

    for name, sizes in shapes.items():
        phone = network(name)
        session = ort.InferenceSession(str(mtcnn_model_dir() / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for k, shape in enumerate(sizes):
            feed = np.random.default_rng(seed + k).uniform(-1, 1, shape).astype(np.float32)
            got, want = phone.run(None, {"x": feed}), session.run(None, {session.get_inputs()[0].name: feed})
            for a, b in zip(got, want, strict=True):
                assert a.shape == b.shape and rel_error(a, b) < tolerance, (name, shape)


class PteNetwork:
    """An ExecuTorch detector file behind the two calls `MTCNNDetector` makes of an ONNX Runtime session, following
    pipeline.json's `detector.sizes`: a 12-pixel P-Net side padded to 13 and the extra output dropped, crops run in
    batches of at most `crops_per_run`."""

    def __init__(self, path, sizes: dict):
        from executorch.runtime import Runtime

        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.pnet, self.sizes = path.stem == "pnet", sizes

    def get_inputs(self):
        return [type("Input", (), {"name": "x"})]

    def run(self, _, feed: dict) -> list[np.ndarray]:
        x = feed["x"]
        if self.pnet:
            low = self.sizes["pnet_side"][0]
            pad = [max(low - side, 0) for side in x.shape[1:3]]
            outs = self.method.execute([torch.from_numpy(np.pad(x, [(0, 0), (0, pad[0]), (0, pad[1]), (0, 0)]))])
            return [o.numpy()[:, :o.shape[1] - pad[0], :o.shape[2] - pad[1]] for o in outs]
        step = self.sizes["crops_per_run"]
        runs = [self.method.execute([torch.from_numpy(x[i:i + step])]) for i in range(0, len(x), step)]
        return [np.concatenate([r[k].numpy() for r in runs]) for k in range(len(runs[0]))]


def test_detector_pte_files_match_the_shipped_graphs(phone_models):
    """The ExecuTorch detector against the ONNX files stylert ships at sizes its conversion did not check: P-Net on
    odd and wide levels and on 12-pixel sides by pipeline.json's padding rule, R-Net and O-Net over several runs."""
    folder = phone_models / "executorch"
    spec = json.loads((folder / "pipeline.json").read_text())["detector"]
    assert spec["files"] == ["detector/pnet.pte", "detector/rnet.pte", "detector/onet.pte"]
    shapes = {"pnet": [(1, 12, 12, 3), (1, 12, 57, 3), (1, 301, 12, 3), (1, 83, 64, 3)],
              "rnet": [(spec["sizes"]["crops_per_run"] + 3, 24, 24, 3)], "onet": [(2, 48, 48, 3)]}
    assert_detector_matches(lambda name: PteNetwork(folder / "detector" / f"{name}.pte", spec["sizes"]), shapes,
                            seed=11, tolerance=1e-5)


def test_pte_detector_finds_the_faces_the_sdk_finds(phone_models, astronaut):
    """The SDK's MTCNN cascade with the .pte networks in place of ONNX Runtime's finds on a real photo the same
    faces, boxes and landmarks."""
    from stylert.faces.detect import MTCNNDetector

    folder = phone_models / "executorch"
    sizes = json.loads((folder / "pipeline.json").read_text())["detector"]["sizes"]
    on_pte = MTCNNDetector()
    on_pte.pnet, on_pte.rnet, on_pte.onet = (PteNetwork(folder / "detector" / f"{n}.pte", sizes)
                                             for n in ("pnet", "rnet", "onet"))
    got, want = on_pte.detect(astronaut), MTCNNDetector().detect(astronaut)
    assert len(want) >= 1 and len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        assert abs(a.score - b.score) < 1e-4


class NcnnNetwork:
    """An ncnn detector file behind the two calls `MTCNNDetector` makes of an ONNX Runtime session, following
    pipeline.json's `detector.sizes`: one image or crop a run, blobs in0 and out0, out1, ..."""

    def __init__(self, path):
        import ncnn
        from stylert_export.mobile import load_ncnn

        self.ncnn, self.net = ncnn, load_ncnn(path)
        self.outputs = len(set(re.findall(r"\bout\d+\b", path.read_text())))

    def get_inputs(self):
        return [type("Input", (), {"name": "x"})]

    def run(self, _, feed: dict) -> list[np.ndarray]:
        runs = []
        for item in feed["x"]:
            with self.net.create_extractor() as ex:
                ex.input("in0", self.ncnn.Mat(np.ascontiguousarray(item)).clone())
                runs.append([np.array(ex.extract(f"out{k}")[1]) for k in range(self.outputs)])
        return [np.stack([r[k] for r in runs]) for k in range(self.outputs)]


def test_detector_ncnn_files_match_the_shipped_graphs(phone_models):
    """The ncnn detector against the ONNX files stylert ships at sizes its conversion did not check (P-Net on odd,
    wide and 12-pixel levels, each as it is; R-Net and O-Net crop by crop), within the fp32 phone tolerance."""
    folder = phone_models / "ncnn"
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["detector"]["files"] == ["detector/pnet.ncnn.param", "detector/rnet.ncnn.param",
                                         "detector/onet.ncnn.param"]
    assert spec["detector"]["sizes"]["crops_per_run"] == 1
    assert spec["models"]["network"]["blobs"] == {"image": {"blob": "in0", "batch_axis": 0},
                                                  "strength": {"blob": "in1", "batch_axis": None},
                                                  "retouched": {"blob": "out0", "batch_axis": 0}}
    shapes = {"pnet": [(1, 12, 57, 3), (1, 301, 12, 3), (1, 83, 64, 3)], "rnet": [(5, 24, 24, 3)],
              "onet": [(2, 48, 48, 3)]}
    assert_detector_matches(lambda name: NcnnNetwork(folder / "detector" / f"{name}.ncnn.param"), shapes, seed=21,
                            tolerance=1e-4)


def test_ncnn_detector_finds_the_faces_the_sdk_finds(phone_models, astronaut):
    """The SDK's MTCNN cascade with the ncnn networks in place of ONNX Runtime's finds on a real photo the same
    faces, boxes and landmarks."""
    from stylert.faces.detect import MTCNNDetector

    folder = phone_models / "ncnn" / "detector"
    on_ncnn = MTCNNDetector()
    on_ncnn.pnet, on_ncnn.rnet, on_ncnn.onet = (NcnnNetwork(folder / f"{n}.ncnn.param")
                                                for n in ("pnet", "rnet", "onet"))
    got, want = on_ncnn.detect(astronaut), MTCNNDetector().detect(astronaut)
    assert len(want) >= 1 and len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        assert abs(a.score - b.score) < 1e-4


TINY_RETOUCH = ("retouch", "--random-init", "--resolution", 32, "--channel-base", 256, "--channel-max", 16,
                "--w-dim", 16)


def export_cli(capsys, *args) -> tuple[int, str]:
    """`stylert export ...` in this process (torch is already loaded): its status and its stderr."""
    from stylert.cli import main

    capsys.readouterr()
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra, says", [
    (("--target", "ort-mobile", "--precision", "int8"),
     "--precision int8: ort-mobile takes fp32, fp16 (ONNX Runtime's and ncnn's int8 need calibration images"),
    (("--precision", "fp16"), "--precision is for phone targets"),
    (("--target", "ort-mobile", "--flavor", "plugin"), "--flavor plugin is not for phones"),
    (("--target", "executorch", "--flavor", "winograd"), "--flavor winograd is not for phones"),
    (("--target", "ort-mobile", "-o", "model.onnx"), "-o is a folder for the app's files, not model.onnx"),
    (("--target", "ncnn", "--precision", "int8"),
     "--precision int8: ncnn takes fp32, fp16 (ONNX Runtime's and ncnn's int8 need calibration images"),
])
def test_bad_phone_options_are_one_line(tmp_path, capsys, monkeypatch, extra, says):
    monkeypatch.chdir(tmp_path)
    code, stderr = export_cli(capsys, *TINY_RETOUCH, "-o", tmp_path / "out", *extra)
    assert code == 2
    assert says in error_line(stderr, "export")
    assert not any(tmp_path.iterdir())


def test_an_artifact_its_runtime_cannot_run_is_one_line_and_removed(tmp_path, monkeypatch):
    """A file its runtime fails on (ExecuTorch answers such with "method->execute() failed with error 0x10") ends
    the export with one line naming the file and the runtime's error, and leaves no file behind."""
    from stylert_export import mobile
    from stylert_export.generator import export_generator
    from stylert_export.onnx_export import ExportError

    def fails(path, inputs):
        assert path.is_file()
        raise RuntimeError("method->execute() failed with error 0x10\n(more lines)")

    monkeypatch.setattr(mobile, "_run_ort", fails)
    with pytest.raises(ExportError) as refused:
        export_generator(generator_source(), tmp_path / "generator.onnx", target=mobile.Target("ort-mobile"), log=quiet)
    assert str(refused.value) == ("generator.ort does not run on onnxruntime here: RuntimeError: method->execute() "
                                  "failed with error 0x10; the file was removed")
    assert not (tmp_path / "generator.ort").exists()
    assert not (tmp_path / "generator.required_operators.config").exists()


@pytest.mark.parametrize("target, module", [("executorch", "executorch"), ("ncnn", "pnnx")])
def test_missing_mobile_extra_is_named(tmp_path, capsys, monkeypatch, target, module):
    """Without the target's package (its modules made unimportable, as when the extra is not installed) the export
    says which package is missing and which extra brings it, in one line, and writes no model."""
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] or [module]:
        monkeypatch.setitem(sys.modules, name, None)
    code, stderr = export_cli(capsys, *TINY_RETOUCH, "-o", tmp_path / "out", "--target", target)
    assert code == 2
    line = error_line(stderr, "export")
    assert f"--target {target} needs {module}" in line and "pip install 'stylert[mobile]'" in line
    assert not list(tmp_path.rglob("retouch.*"))


def test_mtcnn_load_names_a_file_that_is_not_a_detector_network(tmp_path):
    from stylert_export.mtcnn import load
    from stylert_export.onnx_export import ExportError

    with pytest.raises(ExportError, match="x.onnx: not an MTCNN network file"):
        load(tmp_path / "x.onnx")


class RoundOff(torch.nn.Module):
    """y = (x + 1e4) - 1e4: float32 loses about 5e-4 of x on the way, float64 keeps it (the kind of amplified
    round-off the VSP restorer's iterated diffuser has at its published size)."""

    def __init__(self, shift: float = 0.0):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return (x + 1e4) - 1e4 + self.shift


def round_off_inputs(batch, seed):
    return {"x": torch.rand(batch, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1}


@pytest.mark.parametrize("shift, passes", [(0.0, True), (2e-3, False)])
def test_float64_floor_judges_a_phone_file_against_float64(tmp_path, shift, passes):
    """With float64_floor the .ort is compared with the reference run in float64, allowed 1e-4 relative plus twice
    PyTorch float32's own error: a file as exact as PyTorch float32 passes, one that adds its own error of a few
    times that is refused and removed."""
    from stylert_export.mobile import Target, export_phone
    from stylert_export.onnx_export import ExportError

    def export():
        return export_phone(RoundOff(shift), RoundOff(), round_off_inputs, tmp_path / "m.onnx", output_names=["y"],
                            metadata={}, target=Target("ort-mobile"), float64_floor=True, log=quiet)

    if not passes:
        with pytest.raises(ExportError, match="vs PyTorch in float64 .* -> FAILED"):
            export()
        assert not (tmp_path / "m.ort").exists()
        return
    report = export()
    assert 1e-4 < report.floor < 2e-3, report  # PyTorch float32 alone would fail a plain 1e-4 against float64
    assert report.rel > 1e-4 and report.ok, report
    saved = json.loads((tmp_path / "m.ort.json").read_text())
    assert saved["floor"] == report.floor and saved["rel"] == report.rel


class TransposedConv(torch.nn.Module):
    def __init__(self, kernel: int, padding: int):
        super().__init__()
        g = torch.Generator().manual_seed(kernel * 10 + padding)
        self.weight = torch.nn.Parameter(torch.randn(6, 5, kernel, kernel, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(5, generator=g))
        self.padding = padding

    def forward(self, x):
        return torch.nn.functional.conv_transpose2d(x, self.weight, self.bias, stride=2, padding=self.padding)


@pytest.mark.parametrize("kernel, padding, convs", [(3, 0, 4), (3, 1, 4), (4, 1, 4), (5, 2, 4), (2, 0, 4), (1, 0, 1)])
def test_pte_runs_a_stride2_transposed_conv_as_four_phase_convs(tmp_path, kernel, padding, convs):
    """In a .pte a stride-2 transposed convolution becomes one convolution per output phase, interleaved: all four
    on XNNPACK, the output equal to PyTorch's transposed convolution on fresh inputs of odd and even sides; a 1x1
    kernel (phases without taps) stays one transposed convolution."""
    needs_executorch()
    from stylert_export.mobile import _run_pte, _write_pte

    module = TransposedConv(kernel, padding).eval().requires_grad_(False)
    path = tmp_path / "t.pte"
    assert _write_pte(module, {"x": torch.randn(1, 6, 7, 10)}, path, "fp32") == (convs, convs)
    x = torch.randn(1, 6, 7, 10, generator=torch.Generator().manual_seed(99))
    got = _run_pte(path, {"x": x})[0]
    with torch.no_grad():
        want = module(x).numpy()
    assert got.shape == want.shape and rel_error(got, want) < 1e-6, rel_error(got, want)


class NoisyConvs(torch.nn.Module):
    """Two convolutions with StyleGAN2's elementwise steps between them: a gain, a noise image [H, W] added, and
    1 - sigmoid(mask) multiplied in."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():  # seeded weights, the process's own generator left as it was
            torch.manual_seed(3)
            self.conv1, self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1)
            self.register_buffer("noise", torch.randn(6, 6))

    def forward(self, x):
        y = torch.nn.functional.leaky_relu(self.conv1(x), 0.2) * 2 ** 0.5 + self.noise * 0.1
        return self.conv2(y * (1 - torch.sigmoid(y.mean(1, keepdim=True))))


def test_pte_keeps_activations_channels_last_between_convolutions(tmp_path, monkeypatch):
    """XNNPACK's delegate runs convolutions channels-last; an elementwise op between two of them takes its
    operands of rank < 4 (the noise image, a gain, the 1 of 1 - x) reshaped to rank 4, so that no activation is
    copied back to channels-first inside the delegate (the only such copy left is the network's output), and the
    .pte still equals PyTorch on fresh inputs."""
    needs_executorch()
    from executorch.backends.xnnpack._passes import channels_last_tagged_reshape_pass as tagging
    from stylert_export.mobile import _run_pte, _write_pte

    copies = []
    call = tagging.ChannelsLastTaggedReshapePass.call

    def counting(self, graph_module):
        result = call(self, graph_module)
        copies.extend((n.kwargs["memory_format"], [u.op for u in n.users]) for n in result.graph_module.graph.nodes
                      if n.op == "call_function" and "memory_format" in n.kwargs)
        return result

    monkeypatch.setattr(tagging.ChannelsLastTaggedReshapePass, "call", counting)
    module = NoisyConvs().eval().requires_grad_(False)
    path = tmp_path / "n.pte"
    assert _write_pte(module, {"x": torch.randn(1, 4, 6, 6)}, path, "fp32") == (2, 2)
    back = [users for fmt, users in copies if fmt == torch.contiguous_format]
    assert back and all(users == ["output"] for users in back), copies
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(11))
    got = _run_pte(path, {"x": x})[0]
    with torch.no_grad():
        want = module(x).numpy()
    assert rel_error(got, want) < 1e-6, rel_error(got, want)
