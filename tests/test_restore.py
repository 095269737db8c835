"""QC-StyleGAN restoration: DegradBlock properties, official-code parity, sharp-only export, degradations, SDK."""
import subprocess
import sys

import numpy as np
import pytest

import stylert
from conftest import FIXTURES, max_abs, rel_error

torch = pytest.importorskip("torch")
from stylert_export.checkpoints import CheckpointError, load_generator  # noqa: E402
from stylert_export.qc_stylegan import (DegradBlock, DoubleEncoder, ResNet34Encoder,  # noqa: E402
                                        load_qc_generator, load_qc_restorer)
from stylert_export.ops import modconv_impl  # noqa: E402


def test_degradblock_zero_at_q0_and_linear_in_q():
    """Eq. 6: DB(f, 0) = 0 exactly; Eq. 10: DB(f, k q) = k DB(f, q) for k >= 0."""
    torch.manual_seed(0)
    db = DegradBlock(24, 4)
    r1, q = torch.randn(2, 4 * 16, 8, 8), torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(db(r1, torch.zeros(2, 4)), torch.zeros(2, 24, 8, 8))
        base = db(r1, q)
        assert base.abs().max() > 0
        for k in (0.5, 2.0, 7.0):
            err = rel_error(db(r1, k * q).numpy(), k * base.numpy())
            print(f"DB(f, {k} q) vs {k} DB(f, q): relative error {err:.2e}")
            assert err < 1e-5


@pytest.mark.parametrize("form", ["activation", "weight"])
def test_qc_generator_matches_official(form):
    with modconv_impl(form):
        g = load_qc_generator(FIXTURES / "qcstylegan_32.pkl")
    ref = dict(np.load(FIXTURES / "qcstylegan_outputs.npz"))
    ws, q = torch.from_numpy(ref["ws"]), torch.from_numpy(ref["q"])
    with torch.no_grad():
        assert max_abs(g(ws, q).numpy(), ref["image_q"]) < 1e-4
        assert max_abs(g(ws, torch.zeros_like(q)).numpy(), ref["image_q0"]) < 1e-4
        assert max_abs(g(ws, None).numpy(), ref["image_q0"]) < 1e-4  # sharp-only path
    assert g.q_dim == 4 and g.cfg.channels == {4: 32, 8: 32, 16: 16, 32: 8}


def test_qc_checkpoint_through_the_plain_loader_is_named():
    with pytest.raises(CheckpointError, match="QC-StyleGAN"):
        load_generator(FIXTURES / "qcstylegan_32.pkl")
    with pytest.raises(CheckpointError, match="not QC-StyleGAN"):
        load_qc_generator(FIXTURES / "nvlabs_32.pkl")


def test_encoder_is_resnet34():
    """Trunk parameters equal torchvision's resnet34 without its fc (21,284,672 incl. conv1 + bn1)."""
    enc = ResNet34Encoder(512)
    trunk = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith(("linear", "relu")))
    assert trunk == 21_284_672
    assert enc(torch.randn(1, 3, 256, 256)).shape == (1, 512)


def test_restorer_from_psp_style_checkpoint(tmp_path):
    gen = load_qc_generator(FIXTURES / "qcstylegan_32.pkl")
    torch.manual_seed(1)
    enc = DoubleEncoder(gen.cfg.w_dim, gen.q_dim).eval()
    avg = torch.randn(gen.cfg.w_dim + gen.q_dim)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()}, "latent_avg": avg,
                "opts": {"q_dim": 4}}, tmp_path / "psp.pt")
    model = load_qc_restorer(tmp_path / "psp.pt", FIXTURES / "qcstylegan_32.pkl")
    assert torch.equal(model.latent_avg, avg)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        w, q = model.encode(x)
        xi = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear")
        assert torch.allclose(w, enc.content_encoder(xi) + avg[:32], atol=1e-5)
        assert torch.allclose(q, enc.quality_encoder(xi) + avg[32:], atol=1e-5)
    torch.save({"state_dict": {"decoder.x": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="encoder.content_encoder"):
        load_qc_restorer(tmp_path / "bad.pt", FIXTURES / "qcstylegan_32.pkl")


def run(path, **feeds):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_sharp_only_export_equals_full_at_q0(restore_models):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    fidelity = np.array([0.0, 0.3, 1.0], np.float32)
    sharp = run(restore_models["sharp"], image=image, fidelity=fidelity)[0]
    full, quality = run(restore_models["quality"], image=image, q=np.zeros((3, 4), np.float32), fidelity=fidelity)
    err = max_abs(sharp, full)
    print(f"sharp-only vs full graph at q = 0: max abs {err:.2e}")
    assert err < 1e-5 and quality.shape == (3, 4)
    assert np.allclose(sharp[2], image[2], atol=1e-6)  # fidelity 1 returns the input
    degraded = run(restore_models["quality"], image=image, q=np.ones((3, 4), np.float32), fidelity=np.zeros(3, np.float32))[0]
    assert np.abs(degraded - full).max() > 1e-3  # q reaches the graph


def test_onnx_parity_with_pytorch(restore_models):
    model = restore_models["source"].model
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    q = torch.randn(2, 4)
    got = run(restore_models["quality"], image=image.numpy(), q=q.numpy(), fidelity=np.zeros(2, np.float32))
    with torch.no_grad():
        w, q_est = model.encode(image)
        want = model.synthesize(w, q)
    assert max_abs(got[0], want.numpy()) < 1e-3 and max_abs(got[1], q_est.numpy()) < 1e-4


@pytest.mark.parametrize("model", ["vsp", "qc"])
def test_degradations_reproducible_from_seed(model, astronaut):
    a, b, c = (stylert.degrade(astronaut, model, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a.image, b.image) and a.params == b.params
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == astronaut.shape and a.image.dtype == np.uint8
    if model == "vsp":
        p = a.params
        assert 0.2 <= p["sigma"] <= 10 and 1 <= p["scale"] <= 8 and 0 <= p["noise"] <= 20 and 60 <= p["jpeg"] <= 100
    else:
        assert a.params["blur"] in ("gaussian", "motion", "median", "box") and 3 <= a.params["kernel"] <= 31
        assert 10 <= a.params["noise_var"] <= 650


def test_degrade_rejects_bad_input():
    with pytest.raises(stylert.InputError, match="unknown degradation model"):
        stylert.degrade(np.zeros((8, 8, 3), np.uint8), "jpeg")
    with pytest.raises(stylert.InputError, match="RGB uint8"):
        stylert.degrade(np.zeros((8, 8), np.uint8))


def test_restorer_on_a_photo_and_aligned_faces(restore_models, astronaut):
    r = stylert.Restorer(restore_models["quality"])
    result = r.restore(astronaut, 0.2, channels="rgb")
    assert len(result.faces) == 1 and (result.image != astronaut).any()
    crop = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(r.restore(crop, 1.0, channels="rgb", aligned=True).image, crop)
    q = r.quality(crop)
    assert q.shape == (1, 4) and np.isfinite(q).all()
    restored = r.restore(crop, 0.0, channels="rgb", aligned=True).image
    assert np.array_equal(r.degrade(crop, np.zeros(4))[0], restored)
    with pytest.raises(stylert.InputError, match="fidelity"):
        r.restore(crop, 1.5, channels="rgb", aligned=True)
    with pytest.raises(stylert.InputError, match="sharp-only"):
        stylert.Restorer(restore_models["sharp"]).quality(crop)
    for bad_q in (np.zeros(3), np.zeros((2, 4)), "x"):
        with pytest.raises(stylert.InputError, match="q: expected 4 numbers"):
            r.degrade(crop, bad_q)
    with pytest.raises(stylert.InputError, match="out-of-float32"):
        r.degrade(crop, np.full(4, 1e39))
    with pytest.raises(stylert.InputError, match="aligned RGB uint8 faces"):
        r.quality(np.zeros((0, 32, 32, 3), np.uint8))


def test_cli_restore_and_quality_benchmark(restore_models, astronaut, tmp_path):
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n")
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "restore", str(tmp_path / "a.png"),
                             str(tmp_path / "broken.png"), "-o", str(tmp_path / "out"), "--model",
                             str(restore_models["sharp"]), "--fidelity", "0.5"], capture_output=True, text=True)
    assert result.returncode == 1 and (tmp_path / "out" / "a.png").is_file()
    assert "broken.png: " in result.stderr and "Traceback" not in result.stderr
    crop = np.asarray(Image.fromarray(astronaut[40:200, 150:310]).resize((32, 32)))
    Image.fromarray(crop).save(tmp_path / "crop.png")
    bench = subprocess.run([sys.executable, "benchmarks/quality.py", str(restore_models["sharp"]), str(tmp_path / "crop.png"),
                            "--json", str(tmp_path / "q.json")], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    assert "mean nothing" in bench.stdout
    import json
    report = json.loads((tmp_path / "q.json").read_text())
    assert np.isfinite(report["mean"]["restored"]["psnr"]) and 0 <= report["mean"]["degraded"]["ssim"] <= 1
