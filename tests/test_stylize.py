"""Stylize (seeds 002 and 003): pSp W encoder, truncation and mixing, style packs, region-local
transfer with histogram matching, the SDK and CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import stylert
from conftest import error_line, max_abs, rel_error
from stylert.errors import InputError

torch = pytest.importorskip("torch")

RES = 32


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True)


def _manifest(pack):
    return json.loads((pack / "stylepack.json").read_text())


def test_manifest_lists_styles_with_paper_psi(style_pack):
    m = _manifest(style_pack)
    assert sorted(m["styles"]) == ["cartoon", "impasto"]
    assert m["styles"]["cartoon"]["psi"] == 0.7 and m["styles"]["impasto"]["psi"] == 0.9
    assert m["local"] == "local.onnx" and m["resolution"] == RES
    for entry in m["styles"].values():
        assert (style_pack / entry["generator"]).is_file() and (style_pack / entry["exemplar"]).is_file()


def test_truncation_and_mixing_equal_their_formulas():
    from stylert_export.stylizer import mix_layers, truncate

    g = torch.Generator().manual_seed(0)
    w, avg, psi = torch.randn(3, 8, generator=g), torch.randn(8, generator=g), torch.rand(3, generator=g)
    want = torch.stack([avg + psi[i] * (w[i] - avg) for i in range(3)])
    assert max_abs(truncate(w, avg, psi), want) < 1e-6
    content, other = torch.randn(3, 10, 8, generator=g), torch.randn(3, 10, 8, generator=g)
    layers = torch.tensor([0, 4, 10])
    got = mix_layers(content, other, layers)
    for i, k in enumerate(layers.tolist()):
        assert torch.equal(got[i], torch.cat([content[i, :k], other[i, k:]]))


def test_style_graph_equals_the_formula_on_onnxruntime(style_pack):
    """ONNX Runtime graph vs G'(ws) with ws built by hand: truncation, Z+ mapping, mixing at layer k."""
    import onnxruntime as ort

    from stylert_export.stylize_export import rebuild_generator

    path = style_pack / "cartoon.onnx"
    gen = rebuild_generator(path).eval()
    num_ws, dim = gen.num_ws, gen.cfg.w_dim
    rng = np.random.default_rng(11)
    content = rng.standard_normal((2, dim)).astype(np.float32)
    z = rng.standard_normal((2, num_ws, dim)).astype(np.float32)
    psi, layer = np.array([0.7, 0.5], np.float32), np.array([3, 6], np.int64)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"content": content, "psi": psi, "mix_codes": z, "mix_from_z": np.ones(2, np.float32),
                          "mix_layer": layer})[0]
    with torch.no_grad():
        avg = gen.mapping.w_avg
        outs = []
        for i in range(2):
            wc = avg + float(psi[i]) * (torch.from_numpy(content[i]) - avg)
            wz = avg + float(psi[i]) * (gen.mapping.embed(torch.from_numpy(z[i])) - avg)
            ws = torch.cat([wc.expand(int(layer[i]), -1), wz[int(layer[i]):]]).unsqueeze(0)
            outs.append(gen(ws))
        want = torch.cat(outs).numpy()
    err = rel_error(got, want)
    print(f"style graph vs formula: relative error {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("graph", ["encoder.onnx", "cartoon.onnx", "impasto.onnx", "local.onnx"])
def test_every_pack_graph_matches_pytorch(style_pack, graph):
    """Fresh inputs (not the export check's) at batch 2 through ONNX Runtime and the rebuilt PyTorch module."""
    from stylert.runtime.feeds import feeds_for
    from stylert.runtime.model import open_model
    from stylert_export.references import build

    model = open_model(style_pack / graph, "cpu")
    feeds = feeds_for(model.metadata, 2)
    if "mix_codes" in feeds:
        feeds["mix_codes"] = np.random.default_rng(5).standard_normal(feeds["mix_codes"].shape).astype(np.float32)
        feeds["mix_from_z"][:] = [1, 0]
        feeds["mix_layer"][:] = [2, 5]
    got = list(model.run(feeds).values())[0]
    want = build(style_pack / graph, form="activation")(feeds)[0]
    err = rel_error(got, want)
    print(f"{graph}: ONNX Runtime vs PyTorch relative error {err:.2e}")
    assert err < 1e-5


def test_psp_checkpoint_layout_loads_and_matches(tmp_path):
    from stylert_export.checkpoints import CheckpointError
    from stylert_export.psp import PSPConfig, load_psp_encoder, random_psp_encoder

    src = random_psp_encoder(PSPConfig((1, 2, 1, 1), 32, 32), 3)
    avg = torch.randn(32)
    state = {f"encoder.{k}": v for k, v in src.state_dict().items() if k != "latent_avg"}
    state["decoder.style.1.weight"] = torch.zeros(4)  # pSp checkpoints carry the FFHQ decoder too
    good = tmp_path / "psp.pt"
    torch.save({"state_dict": state, "opts": {"encoder_type": "BackboneEncoderUsingLastLayerIntoW"},
                "latent_avg": avg.expand(18, -1).clone()}, good)
    loaded = load_psp_encoder(good, input_size=32)
    assert loaded.cfg.units == (1, 2, 1, 1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    src.latent_avg.copy_(avg)
    with torch.no_grad():
        assert max_abs(loaded(x), src(x)) < 1e-6
    wplus = tmp_path / "wplus.pt"
    torch.save({"state_dict": state, "opts": {"encoder_type": "GradualStyleEncoder"}, "latent_avg": avg}, wplus)
    with pytest.raises(CheckpointError, match="W-space encoder"):
        load_psp_encoder(wplus)
    no_avg = tmp_path / "noavg.pt"
    torch.save({"state_dict": state}, no_avg)
    with pytest.raises(CheckpointError, match="latent_avg"):
        load_psp_encoder(no_avg)


def test_lffm_attends_only_inside_the_masks():
    """Content tokens outside m_c pass through exactly; style tokens outside m_s have no influence."""
    from stylert_export.local_style import LFFM

    torch.manual_seed(0)
    lffm = LFFM(16, 8).eval()
    fc, fs = torch.randn(1, 16, 6, 6), torch.randn(1, 16, 6, 6)
    mc, ms = torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)
    mc[..., 1:4, 1:4], ms[..., 2:5, :] = 1, 1
    with torch.no_grad():
        out = lffm(fc, fs, mc, ms)
        assert torch.equal(out[..., mc[0, 0] == 0], fc[..., mc[0, 0] == 0])
        assert not torch.allclose(out, fc)
        fs2 = fs.clone()
        fs2[..., ms[0, 0] == 0] = torch.randn_like(fs2[..., ms[0, 0] == 0]) * 10
        assert max_abs(lffm(fc, fs2, mc, ms), out) < 1e-5


def test_histogram_matching_matches_scikit_image_and_stays_in_the_mask(astronaut):
    from skimage import data
    from skimage.exposure import match_histograms as skimage_match

    from stylert.calls.stylize import match_histograms

    src, ref = astronaut[:256, :256], data.coffee()[:200, :300]
    want = np.rint(skimage_match(src.astype(np.float64), ref.astype(np.float64), channel_axis=-1))
    assert np.array_equal(match_histograms(src, ref), want.astype(np.uint8))
    mask = np.zeros(src.shape[:2], bool)
    mask[40:200, 60:180] = True
    rmask = np.zeros(ref.shape[:2], bool)
    rmask[:, 150:] = True
    out = match_histograms(src, ref, mask, rmask)
    assert np.array_equal(out[~mask], src[~mask])
    other = src.copy()
    other[~mask] = 255 - other[~mask]  # pixels outside the mask must not affect the mapping
    assert np.array_equal(match_histograms(other, ref, mask, rmask)[mask], out[mask])
    for c in range(3):  # the masked CDF now follows the reference's, up to the mass of one tied source value
        got, want, orig = out[..., c][mask], ref[..., c][rmask], src[..., c][mask]
        levels = np.arange(256)
        gap = np.abs((got[:, None] <= levels).mean(0) - (want[:, None] <= levels).mean(0)).max()
        ties = np.bincount(orig).max() / orig.size
        before = np.abs((orig[:, None] <= levels).mean(0) - (want[:, None] <= levels).mean(0)).max()
        assert gap <= ties + 1e-9 and gap < before / 5, (c, gap, ties, before)


def _aligned_face(size=RES):
    from skimage import data

    import cv2
    return cv2.resize(data.astronaut()[20:230, 120:330], (size, size), interpolation=cv2.INTER_AREA)


def test_seed_reproducible_and_modes_differ(style_pack):
    from stylert import Stylizer

    s = Stylizer(style_pack, ["cpu"])
    face = _aligned_face()
    run = lambda **kw: s.stylize(face, "cartoon", channels="rgb", aligned=True, **kw).image  # noqa: E731
    plain = run()
    a, b, c = run(seed=1, mix_layer=3), run(seed=1, mix_layer=3), run(seed=2, mix_layer=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, plain)
    assert np.array_equal(run(seed=1, mix_layer=s.pack.num_ws), plain)  # mixing from past the last layer: none
    assert not np.array_equal(s.stylize(face, "impasto", channels="rgb", aligned=True).image, plain)


def test_reference_code_is_mixed_from_its_layer(style_pack, tmp_path):
    """A reference made by `stylize-reference`; mix_layer 0 means G'(reference code) alone."""
    import shutil

    from stylert import Stylizer
    from stylert.faces.imageio import write_image
    from stylert_export.stylize_export import rebuild_generator

    pack = tmp_path / "pack"
    shutil.copytree(style_pack, pack)
    write_image(tmp_path / "ref.png", _aligned_face())
    result = _cli("export", "stylize-reference", "--pack", pack, "--style", "cartoon", "--image", tmp_path / "ref.png",
                  "--name", "astro", "--steps", 5, "--aligned")
    assert result.returncode == 0, result.stderr
    code = np.load(pack / "cartoon.astro.npy")
    s = Stylizer(pack, ["cpu"])
    got = s.stylize(_aligned_face(), "cartoon", channels="rgb", aligned=True, reference="astro", mix_layer=0).image
    with torch.no_grad():
        want = rebuild_generator(pack / "cartoon.onnx")(torch.from_numpy(code)[None]).numpy()
    from stylert import to_uint8
    assert np.abs(got.astype(int) - to_uint8(want)[0].astype(int)).max() <= 1
    with pytest.raises(InputError, match="no reference 'nope'; it has: astro"):
        s.stylize(_aligned_face(), "cartoon", channels="rgb", aligned=True, reference="nope")


def test_reference_inversion_lowers_the_error():
    from stylert_export.random_init import random_generator
    from stylert_export.stylegan2 import StyleGAN2Config
    from stylert_export.stylizer import invert_reference

    g = random_generator(StyleGAN2Config.from_channel_base(16, 128, 16, 16, mapping_layers=2), 0)
    for p in g.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        target = g(g.z_to_ws(torch.randn(1, 16)))[0]
        start = torch.nn.functional.mse_loss(g(g.mapping.w_avg.expand(1, g.num_ws, -1))[0], target).item()
    code = invert_reference(g, target, steps=60, lr=0.05, size=16)
    with torch.no_grad():
        end = torch.nn.functional.mse_loss(g(code[None])[0], target).item()
    assert code.shape == (g.num_ws, 16) and end < 0.5 * start, (start, end)


def test_outside_the_regions_is_histogram_matched_exactly(style_pack):
    """The documented rule: outside the chosen regions, histogram matching onto the exemplar and nothing else;
    inside, the local model's output; regions one after another."""
    from stylert import Stylizer
    from stylert.runtime.model import open_model
    from stylert.calls.stylize import match_histograms, region_alpha
    from stylert.faces.pipeline import to_network, to_uint8

    s = Stylizer(style_pack, ["cpu"])
    face = _aligned_face()
    labels = np.zeros((RES, RES), np.uint8)
    labels[8:14, 6:26] = 4  # eyes
    labels[20:26, 10:22] = 12  # lip
    out = s.stylize(face, "impasto", channels="rgb", aligned=True, labels=labels, regions=["eye", "lip"])
    union = np.isin(labels, [4, 12])
    exemplar = s.pack.exemplar("impasto")
    base = match_histograms(face, exemplar, ~union)
    assert np.array_equal(out.image[~union], base[~union])
    assert not np.array_equal(out.image[union], base[union])
    # the same by hand: the local model on the eye region, then on the lip region of that result
    local = open_model(style_pack / "local.onnx", "cpu")
    current = to_network([base])
    for region in (labels == 4, labels == 12):
        pred = local.run({"content": current, "style": to_network([exemplar]),
                          "content_mask": region[None, None].astype(np.float32),
                          "style_mask": np.ones((1, 1, RES, RES), np.float32)})["stylized"]
        alpha = region_alpha(region)[None, None]
        current = alpha * pred + (1 - alpha) * current
    assert np.abs(to_uint8(current)[0].astype(int) - out.image.astype(int)).max() <= 1
    assert set(out.extras[0]) == {"region_eye", "region_lip"}


def test_region_errors(style_pack):
    from stylert import InputError, Stylizer

    s = Stylizer(style_pack, ["cpu"])
    face = _aligned_face()
    with pytest.raises(InputError, match="regions need masks"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, regions=["eye"])
    with pytest.raises(InputError, match="unknown region"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, regions=["ears"], parser=lambda c: None)
    with pytest.raises(InputError, match="region 'hair' is empty"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, regions=["hair"],
                  labels=np.zeros((RES, RES), np.uint8))
    with pytest.raises(InputError, match="face parser: expected integer label maps"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, regions=["eye"],
                  parser=lambda c: np.zeros((len(c), 5, 5)))
    with pytest.raises(InputError, match="unknown style 'manga'; this pack has: cartoon, impasto"):
        s.stylize(face, "manga", channels="rgb", aligned=True)
    with pytest.raises(InputError, match="mix_layer needs seed"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, mix_layer=3)
    with pytest.raises(InputError, match="mix_layer must be in"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, seed=0, mix_layer=99)


def test_stylize_cli_two_styles_on_a_real_photo(style_pack, tmp_path, astronaut):
    from stylert.faces.imageio import read_image, write_image

    photo = write_image(tmp_path / "astronaut.png", astronaut)
    outs = {}
    for style in ("cartoon", "impasto"):
        outs[style] = tmp_path / f"{style}.png"
        result = _cli("stylize", photo, "-o", outs[style], "--pack", style_pack, "--style", style)
        assert result.returncode == 0, result.stderr
        assert "1 face(s)" in result.stdout and "untrained" in result.stderr
    a, b = read_image(outs["cartoon"]).rgb, read_image(outs["impasto"]).rgb
    assert a.shape == astronaut.shape and not np.array_equal(a, b)
    assert np.array_equal(a[:, -100:], astronaut[:, -100:])  # far from the face: untouched

    labels = np.zeros(astronaut.shape[:2], np.uint8)
    labels[60:140, 150:300] = 17  # a hair band above the face
    write_image(tmp_path / "labels.png", np.repeat(labels[:, :, None], 3, axis=2), grayscale=True)
    result = _cli("stylize", photo, "-o", tmp_path / "hair.png", "--pack", style_pack, "--style", "cartoon",
                  "--regions", "hair", "--labels", tmp_path / "labels.png")
    assert result.returncode == 0, result.stderr
    hair = read_image(tmp_path / "hair.png").rgb  # the API's result on the same photo and labels, written as a PNG
    api = stylert.Stylizer(style_pack).stylize(astronaut, "cartoon", channels="rgb", labels=labels, regions=["hair"])
    assert np.abs(hair.astype(int) - api.image.astype(int)).max() <= 1
    assert np.array_equal(hair[:, -100:], astronaut[:, -100:])  # far from the face: untouched
    assert not np.array_equal(hair[60:140, 150:300], astronaut[60:140, 150:300])  # the hair band was stylized

    bad = _cli("stylize", photo, "-o", tmp_path / "x.png", "--pack", style_pack, "--style", "manga")
    assert bad.returncode == 2 and "this pack has: cartoon, impasto" in error_line(bad.stderr, "stylize")
    bad = _cli("stylize", photo, "-o", tmp_path / "x.png", "--pack", style_pack, "--style", "cartoon", "--regions", "eye")
    assert bad.returncode == 2 and "--regions needs --labels" in error_line(bad.stderr, "stylize")
    bad = _cli("stylize", photo, "-o", tmp_path / "x.png", "--pack", tmp_path, "--style", "cartoon")
    assert bad.returncode == 2 and "not a style pack" in error_line(bad.stderr, "stylize")
