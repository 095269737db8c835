"""Inpainting (thesis ch. 4-5): EXE-GAN and GRIG modules, their checkpoint layouts and folds, the exported graphs
against PyTorch, and `stylert.Inpainter` / `stylert inpaint` on real photos: nothing outside the mask changes."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import stylert
from conftest import INPAINT_RES, error_line, rel_error
from stylert.calls.inpaint import REGIONS, Inpainter, region_mask
from stylert.errors import InputError
from stylert.faces.imageio import read_image, read_mask, write_image
from stylert.faces.pipeline import NoFaceError

torch = pytest.importorskip("torch")
nn = torch.nn


# ---- modules and checkpoints ------------------------------------------------------------------

def test_spectral_norm_fold_equals_torch_in_eval_mode():
    """W = W_orig / (u . W_mat v) with the stored vectors is what torch's spectral_norm computes in eval."""
    from stylert_export.grig import fold_spectral_norm

    torch.manual_seed(0)
    conv = nn.utils.spectral_norm(nn.Conv2d(4, 6, 3, padding=1))
    x = torch.randn(2, 4, 9, 9)
    conv.train()
    for _ in range(3):
        conv(x)  # power iterations move u and v
    conv.eval()
    with torch.no_grad():
        want = conv(x)
        plain = nn.Conv2d(4, 6, 3, padding=1)
        plain.load_state_dict(fold_spectral_norm(dict(conv.state_dict())))
        err = rel_error(plain(x), want)
    print(f"spectral norm folded vs torch eval: relative error {err:.2e}")
    assert err < 1e-6


def test_batchnorm_fold_equals_the_unfolded_generator():
    """fold_batchnorm (the fast path) against the same GRIG generator with its batch norms (the reference)."""
    import copy

    from stylert_export.grig import GRIGConfig, GRIGGenerator, NoiseInjection, fold_batchnorm
    from stylert_export.random_init import randomize_batchnorm

    torch.manual_seed(1)
    ref = randomize_batchnorm(GRIGGenerator(GRIGConfig(64, 8, 8, (1, 1, 1, 1), 1)).eval())
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, NoiseInjection):
                m.weight.normal_(0, 0.5)
    folded = fold_batchnorm(copy.deepcopy(ref))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.feat_128[2].weight.shape == (16, 1, 1)  # the noise strength became per channel
    g = torch.Generator().manual_seed(2)
    x, noise = torch.randn(2, 4, 64, 64, generator=g), [torch.randn(2, 1, 32, 32, generator=g) for _ in range(2)]
    with torch.no_grad():
        err = rel_error(folded(x, noise), ref(x, noise))
    print(f"GRIG batch norm folded vs unfolded: relative error {err:.2e}")
    assert err < 1e-5


SN_FREE = ("patch_embed", "encoder_level", "down1_2", "down2_3", "down3_4", "latent", "up4_3", "up3_2", "up2_1",
           "reduce_chan", "decoder_level", "refinement", "output")  # Restormer's convs carry no spectral norm


def official_grig_state(model) -> dict:
    """An unfolded GRIG generator's state in the public code's layout: spectral-norm convs as weight_orig / _u / _v
    (u chosen so that sigma = 1, bias before weight_orig as spectral_norm leaves it), batch norms as they are."""
    out = {}
    for name, module in model.named_modules():
        local = {k: v for k, v in module.state_dict().items() if "." not in k}
        if isinstance(module, nn.Conv2d) and not name.startswith(SN_FREE):
            w = module.weight.detach()
            v = torch.nn.functional.normalize(torch.randn(w[0].numel()), dim=0)
            wv = w.reshape(w.shape[0], -1) @ v
            if module.bias is not None:
                out[f"{name}.bias"] = module.bias.detach()
            out.update({f"{name}.weight_orig": w, f"{name}.weight_u": wv / wv.square().sum(), f"{name}.weight_v": v})
        else:
            out.update({f"{name}.{k}" if name else k: v for k, v in local.items()})
    return out


def test_sle_pooling_equals_adaptive_average_pooling():
    """SLE's 4x4 pooling: on maps smaller than 4x4 (GRIG below 256) the nearest-neighbour form it is written in
    (a Resize in the graph, where phone accelerators refuse the pooling's rank-6 gather) equals the pooling."""
    from stylert_export.grig import Pool4

    for size in (1, 2, 4, 8, 16):
        x = torch.randn(2, 3, size, size)
        assert torch.equal(Pool4()(x), nn.functional.adaptive_avg_pool2d(x, 4)), size


def test_grig_checkpoint_layout_and_positional_g_ema(tmp_path):
    """A GRIG .pth as train.py writes it: `g` (spectral-norm and batch-norm tensors), `g_ema` a list over the
    parameters in order (it wins), numpy scalars in `metrics`: loaded without running code, folded, equal."""
    from stylert_export.grig import GRIGConfig, GRIGGenerator, GRIGStep, fold_batchnorm, inpaint, load_grig
    from stylert_export.random_init import randomize_batchnorm

    torch.manual_seed(3)
    cfg = GRIGConfig(64, 8, 8, (1, 1, 1, 1), 1)
    ema = randomize_batchnorm(GRIGGenerator(cfg).eval())
    live = GRIGGenerator(cfg).eval()  # `g`: other weights, the same buffers
    live.load_state_dict({k: v for k, v in ema.state_dict().items() if "running" in k or "num_batches" in k},
                         strict=False)
    g_state = official_grig_state(live)
    ema_state = official_grig_state(ema)
    for k, v in ema_state.items():  # the ema model's spectral vectors ride in `g`
        if k.endswith(("weight_u", "weight_v")):
            g_state[k] = v
    params = [k for k in g_state if not k.endswith(("weight_u", "weight_v", "running_mean", "running_var",
                                                    "num_batches_tracked"))]
    assert len(params) == sum(1 for _ in live.parameters())
    path = tmp_path / "grig.pth"
    torch.save({"g": g_state, "g_ema": [ema_state[k] for k in params], "d": {}, "iter": 7,
                "metrics": {"fid": np.float64(31.5), "lpips": np.float32(0.2)}, "args": argparse.Namespace(im_size=64)},
               path)
    loaded = GRIGStep(load_grig(path, size=64))
    want = GRIGStep(fold_batchnorm(ema))
    g = torch.Generator().manual_seed(4)
    image, mask = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 8:40] = 1
    noise = [torch.randn(1, loaded.noise_size, generator=g) for _ in range(3)]
    with torch.no_grad():
        got, ref = inpaint(loaded, image, mask, noise), inpaint(want, image, mask, noise)
    errs = [rel_error((a - image * (1 - mask)) * mask, (b - image * (1 - mask)) * mask) for a, b in zip(got, ref)]
    print("GRIG .pth (g + positional g_ema) vs source, per step I^t inside the hole:", [f"{e:.2e}" for e in errs])
    assert max(errs) < 1e-5
    assert all(torch.equal(a * (1 - mask), image * (1 - mask)) for a in got)  # Eq. 4.1: the known pixels stay


def test_grig_bad_checkpoints_are_one_line(tmp_path):
    from stylert_export.checkpoints import CheckpointError
    from stylert_export.grig import load_grig

    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'g' state dict .*not a GRIG checkpoint"):
        load_grig(tmp_path / "other.pth")
    torch.save({"g": {"down_from_big.0.weight": torch.zeros(4, 4, 3, 3)}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="lacks patch_embed.proj.weight, to_big.weight"):
        load_grig(tmp_path / "partial.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "other.pth").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_grig(tmp_path / "cut.pth")


def official_exe_files(model, tmp_path):
    """EXE_GAN_model_32.pt and psp_ffhq_encode.pt as the public code saves them (Namespace args, numpy best_fid)."""
    cfg = model.graph.cfg
    exe, psp = tmp_path / "EXE_GAN_model_32.pt", tmp_path / "psp_ffhq_encode.pt"
    state = model.graph.generator.state_dict()
    torch.save({"g": state, "d": {}, "g_ema": state, "g_optim": {}, "d_optim": {}, "iter": 100, "ada_aug_p": 0.0,
                "args": argparse.Namespace(size=cfg.size, psp_start_latent=cfg.psp_start, latent=512),
                "best_path": "x", "best_fid": np.float64(4.2)}, exe)
    enc = {f"encoder.{k}": v for k, v in model.exemplar.state_dict().items() if k != "latent_avg"}
    torch.save({"state_dict": {**enc, "decoder.style.1.weight": torch.zeros(512, 512)},
                "opts": {"encoder_type": "GradualStyleEncoder", "start_from_latent_avg": True, "learn_in_w": False,
                         "input_nc": 3}, "latent_avg": model.exemplar.latent_avg.clone()}, psp)
    return exe, psp


def test_exe_gan_checkpoints_load_and_match(tmp_path):
    from stylert_export.checkpoints import CheckpointError
    from stylert_export.exe_gan import EXEConfig, load_exe_gan, random_exe_gan

    model = random_exe_gan(EXEConfig(32, 512, 2, {4: 32, 8: 32, 16: 16, 32: 16}), 6, (1, 1, 1, 1), 16)
    exe, psp = official_exe_files(model, tmp_path)
    loaded = load_exe_gan(exe, psp, w_avg_samples=1000)
    assert loaded.trained and loaded.graph.cfg == model.graph.cfg and loaded.psp_input == 16
    g = torch.Generator().manual_seed(7)
    exemplar = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        codes, want_codes = loaded.exemplar(exemplar), model.exemplar(exemplar)
        inputs = {"image": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
                  "mask": (torch.rand(2, 1, 32, 32, generator=g) < 0.5).float(), "codes": want_codes,
                  "z": torch.randn(2, 512, generator=g), "psi": torch.ones(2),
                  "noise": torch.randn(2, model.graph.noise_size, generator=g)}
        out, want = loaded.graph(**inputs), model.graph(**inputs)
    assert rel_error(codes, want_codes) < 1e-6 and rel_error(out, want) < 1e-6
    assert torch.equal(out * (1 - inputs["mask"]), inputs["image"] * (1 - inputs["mask"]))  # Eq. 5.3
    with pytest.raises(CheckpointError, match="no 'g_ema' generator"):
        load_exe_gan(psp, psp)
    torch.save({"g_ema": {"conv1.conv.weight": torch.zeros(1, 32, 32, 3, 3)}}, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="lacks down_from_big.0.weight, final_linear.0.weight, style.1.weight"):
        load_exe_gan(tmp_path / "half.pt", psp)
    torch.save({"state_dict": {}, "opts": {"encoder_type": "BackboneEncoderUsingLastLayerIntoW"}}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="W\\+ 'GradualStyleEncoder'"):
        load_exe_gan(exe, tmp_path / "w.pt")


def test_numpy_scalars_load_but_code_is_still_refused(tmp_path, monkeypatch):
    """EXE-GAN and GRIG files hold numpy floats; allowing them must not let a pickle run code (an object array
    or a REDUCE of os.system is refused and named)."""
    import os

    from stylert_export.checkpoints import CheckpointError, read_file

    torch.save({"best_fid": np.float64(3.5), "metrics": {"n": np.int64(2)}}, tmp_path / "ok.pt")
    assert read_file(tmp_path / "ok.pt")["best_fid"] == 3.5

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    monkeypatch.chdir(tmp_path)
    for i, obj in enumerate([np.array([Payload()], dtype=object), {"best_fid": Payload()}]):
        torch.save({"x": obj, "y": np.float32(1)}, tmp_path / f"evil{i}.pt")
        with pytest.raises(CheckpointError, match="refused to unpickle.*posix.system"):
            read_file(tmp_path / f"evil{i}.pt")
    assert not (tmp_path / "PWNED").exists()


# ---- exported graphs ------------------------------------------------------------------------------

def test_exported_graphs_match_pytorch_on_fresh_inputs(inpaint_models):
    """Each graph on ONNX Runtime against the PyTorch module rebuilt from its metadata, batch 1 and 3, inputs
    drawn fresh; GRIG compared on its residual (I^t - I^{t-1}), which is all the network adds."""
    from stylert.runtime import open_model
    from stylert.runtime.feeds import feeds_for
    from stylert_export.inpaint_export import rebuild_reference

    rng = np.random.default_rng(11)
    for name in ("exe-gan", "exemplar", "grig"):
        model = open_model(inpaint_models[name], "cpu")
        ref = rebuild_reference(inpaint_models[name])
        for batch in (1, 3):
            feeds = {k: (v + rng.uniform(-0.1, 0.1, v.shape).astype(np.float32) if k in ("image", "codes", "noise", "z")
                         else v) for k, v in feeds_for(model.metadata, batch).items()}
            got = next(iter(model.run(feeds).values()))
            with torch.no_grad():
                want = ref(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
            if name == "grig":
                got, want = got - feeds["image"], want - feeds["image"]
            err = rel_error(got, want)
            print(f"{name} batch {batch}: ONNX Runtime vs PyTorch relative error {err:.2e}")
            assert err < 1e-5, (name, batch, err)


def test_export_metadata_and_plugin_flavour(inpaint_models, tmp_path):
    from stylert.runtime import open_model
    from stylert_export.inpaint_export import export_exe_gan, rebuild_reference
    from stylert_export.onnx_export import read_metadata
    from stylert_export.plugin_ops import runnable_on_onnxruntime

    meta = read_metadata(inpaint_models["exe-gan"])
    assert (meta["stylert.call"], meta["stylert.role"], meta["stylert.trained"]) == ("inpaint", "generator", "false")
    assert meta["stylert.exemplar_graph"] == "exe32.exemplar.onnx" and meta["stylert.num_codes"] == "4"
    assert float(meta["stylert.parity_max_abs"]) < 1e-3
    names = [s.name for s in open_model(inpaint_models["exe-gan"], "cpu").inputs]
    assert names == ["image", "mask", "codes", "z", "psi", "noise"]  # every draw is an input
    grig = read_metadata(inpaint_models["grig"])
    assert grig["stylert.role"] == "step" and grig["stylert.default_steps"] == "3"

    import onnx

    from stylert_export.exe_gan import EXEModel

    graph = rebuild_reference(inpaint_models["exe-gan"])
    exemplar = rebuild_reference(inpaint_models["exemplar"])
    src = EXEModel(graph, exemplar, "test", False, 5, (1, 1, 1, 1), 16)
    path, _ = export_exe_gan(src, tmp_path / "plugin.onnx", flavor="plugin", log=lambda *_: None)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.domain == "stylert"]
    assert len(nodes) == 1 + 1 + 3 * 3  # conv1 and to_rgb1, then per level two style convs and a toRGB
    session = runnable_on_onnxruntime(path)
    portable = open_model(inpaint_models["exe-gan"], "cpu")
    from stylert.runtime.feeds import feeds_for

    feeds = feeds_for(portable.metadata, 2)
    err = rel_error(session.run(None, feeds)[0], portable.run(feeds)["inpainted"])
    print(f"EXE-GAN plugin flavour vs portable on ONNX Runtime: relative error {err:.2e}")
    assert err < 1e-5


# ---- whole photos ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mouth_mask(astronaut):
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[150:185, 180:260] = 255  # the astronaut's mouth
    return mask


@pytest.mark.parametrize("method", ["exe-gan", "grig"])
def test_only_the_mask_changes_and_seeds_repeat(method, inpaint_models, astronaut, mouth_mask):
    m = Inpainter(inpaint_models[method], "cpu")
    a = m.inpaint(astronaut, mouth_mask, channels="rgb", seed=1)
    changed = (a.image != astronaut).any(axis=2)
    assert not changed[mouth_mask == 0].any()  # byte-identical outside the mask
    assert changed[mouth_mask > 0].mean() > 0.5
    assert np.array_equal(a.image, m.inpaint(astronaut, mouth_mask, channels="rgb", seed=1).image)
    assert not np.array_equal(a.image, m.inpaint(astronaut, mouth_mask, channels="rgb", seed=2).image)
    assert set(a.timings_ms) >= {"align", "network", "paste"}
    bgr = m.inpaint(np.ascontiguousarray(astronaut[:, :, ::-1]), mouth_mask, channels="bgr", seed=1).image
    assert np.array_equal(bgr[:, :, ::-1], a.image)
    batch = m.process_batch([astronaut, astronaut[:, ::-1].copy()], [mouth_mask, mouth_mask[:, ::-1].copy()],
                            channels="rgb", seed=1)
    assert np.array_equal(batch[0].image, a.image)  # batched like alone


def test_exe_gan_faces_regions_and_exemplar(inpaint_models, astronaut):
    m = Inpainter(inpaint_models["exe-gan"], "cpu")
    assert m.method == "exe-gan" and not m.trained
    eyes = m.inpaint(astronaut, "eyes", channels="rgb", seed=0)
    drawn = region_mask(astronaut.shape, eyes.faces, "eyes")
    changed = (eyes.image != astronaut).any(axis=2)
    assert len(eyes.faces) == 1 and not changed[~drawn].any() and changed[drawn].mean() > 0.5
    exemplar = np.ascontiguousarray(astronaut[:, ::-1])
    guided = m.inpaint(astronaut, "eyes", exemplar, channels="rgb", seed=0)
    assert not np.array_equal(guided.image, eyes.image) and "exemplar" in guided.timings_ms
    with pytest.raises(NoFaceError, match="exemplar: no face found"):
        m.inpaint(astronaut, "eyes", np.full((64, 64, 3), 128, np.uint8), channels="rgb")
    with pytest.raises(InputError, match="unknown face region 'ears'; regions: eyes, left_eye"):
        m.inpaint(astronaut, "ears", channels="rgb")
    corner = np.zeros(astronaut.shape[:2], bool)
    corner[480:, 480:] = True
    with pytest.raises(NoFaceError, match="no face meets the mask"):
        m.inpaint(astronaut, corner, channels="rgb")
    with pytest.raises(InputError, match="steps are GRIG's"):
        m.inpaint(astronaut, "eyes", steps=2, channels="rgb")
    assert set(REGIONS) >= {"eyes", "nose", "mouth", "glasses", "lower_face"}


def test_grig_needs_no_face_and_keeps_every_step(inpaint_models):
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea()  # a cat: no face for the detector
    mask = np.zeros(cat.shape[:2], bool)
    mask[100:140, 200:300] = True
    m = Inpainter(inpaint_models["grig"], "cpu")
    result = m.inpaint(cat, mask, channels="rgb", steps=4)
    steps = result.extras[0]["steps"]
    assert steps.shape == (4, INPAINT_RES["grig"], INPAINT_RES["grig"], 3) and result.faces == []
    assert not any(np.array_equal(steps[i], steps[i + 1]) for i in range(3))  # each step moves the fill
    assert not (result.image != cat).any(axis=2)[~mask].any()
    with pytest.raises(InputError, match="takes no exemplar"):
        m.inpaint(cat, mask, cat, channels="rgb")
    with pytest.raises(InputError, match="steps must be an integer in 1..16"):
        m.inpaint(cat, mask, steps=0, channels="rgb")


def test_bad_masks_are_one_clear_line(inpaint_models, astronaut, tmp_path):
    m = Inpainter(inpaint_models["grig"], "cpu")
    with pytest.raises(InputError, match="the mask is 10x20, the photo 512x512"):
        m.inpaint(astronaut, np.ones((20, 10), np.uint8), channels="rgb")
    with pytest.raises(InputError, match="the mask is empty"):
        m.inpaint(astronaut, np.zeros((512, 512), bool), channels="rgb")
    with pytest.raises(InputError, match="covers the whole image"):
        m.inpaint(astronaut, np.ones((512, 512), bool), channels="rgb")
    gray = np.zeros((8, 8), np.uint8)
    gray[2:5, 2:5] = 40
    gray[5, 5] = 255
    Image.fromarray(gray).save(tmp_path / "soft.png")
    soft = read_mask(tmp_path / "soft.png")
    assert soft.fill.sum() == 10 and "not a black-and-white mask (3 levels, 0..255)" in soft.note
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    deep = read_mask(tmp_path / "deep.png")
    assert deep.fill.sum() == 10 and "16-bit mask" in deep.note
    Image.fromarray(gray > 0).save(tmp_path / "bits.png")
    assert read_mask(tmp_path / "bits.png").note is None


def test_cli_inpaint_keeps_the_photo_apart_from_the_mask(inpaint_models, astronaut, mouth_mask, tmp_path):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir(), masks.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray(astronaut).save(photos / "a.jpg", exif=exif, quality=95)
    Image.fromarray(astronaut[:, ::-1]).save(photos / "b.png")
    Image.fromarray(astronaut).save(photos / "nomask.png")
    Image.fromarray(mouth_mask).save(masks / "a.png")
    Image.fromarray(mouth_mask[:, ::-1]).save(masks / "b.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stylert.cli", "inpaint", str(photos), "-o", str(out), "--model",
           str(inpaint_models["exe-gan"]), "--masks", str(masks), "--seed", "4", "--batch", "2", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1, result.stderr  # one photo has no mask
    assert [r["error"] is None for r in rows] == [True, True, False] and "no mask for it" in rows[2]["error"]
    done = read_image(out / "b.png").rgb
    assert not (done != astronaut[:, ::-1]).any(axis=2)[mouth_mask[:, ::-1] == 0].any()
    assert Image.open(out / "a.jpg").getexif().get(0x010F) == "TestCam"
    assert not (out / "nomask.png").exists()

    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(empty)
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "inpaint", str(photos / "b.png"), "-o",
                             str(tmp_path / "none"), "--model", str(inpaint_models["grig"]), "--mask", str(empty)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "the mask is empty" in result.stderr
    assert not any((tmp_path / "none").glob("*"))  # nothing written
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "inpaint", str(photos / "b.png"), "-o",
                             str(tmp_path / "r"), "--model", str(inpaint_models["exe-gan"]), "--region", "glasses",
                             "--exemplar", str(photos / "a.jpg"), "--psi", "0.7"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 face(s)" in result.stdout and "untrained" in result.stderr


def test_cli_inpaint_refuses_before_work(inpaint_models, tmp_path, astronaut):
    photo = write_image(tmp_path / "p.png", astronaut)
    base = [sys.executable, "-m", "stylert.cli", "inpaint", str(photo), "-o", str(tmp_path / "o"), "--model"]
    cases = [([str(inpaint_models["grig"]), "--region", "eyes", "--psi", "0.5"], "psi is EXE-GAN's truncation"),
             ([str(inpaint_models["exe-gan"]), "--mask", str(tmp_path / "missing.png")], "no such mask file"),
             ([str(inpaint_models["exemplar"]), "--region", "eyes"], "open the generator graph")]
    for args, message in cases:
        result = subprocess.run(base + args, capture_output=True, text=True)
        assert result.returncode == 2 and message in error_line(result.stderr, "inpaint")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    assert stylert.Inpainter is Inpainter
