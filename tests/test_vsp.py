"""The visual-style-prompt restorer (seed 001, thesis ch. 3): schedule, code diffuser, SMART,
checkpoint layouts, ONNX Runtime parity, and restoring a real photo through the SDK and CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import stylert
from conftest import max_abs, rel_error

torch = pytest.importorskip("torch")
F = torch.nn.functional

RES = 32


def test_schedule_matches_the_thesis_and_the_public_code():
    from stylert_export.code_diffuser import schedule

    s = schedule()
    assert len(s["betas"]) == 4  # T = 4 (thesis Sec. 3.3)
    assert s["betas"][0] == pytest.approx(0.1) and s["betas"][-1] == pytest.approx(0.99)
    assert np.allclose(np.diff(np.sqrt(s["betas"])), np.diff(np.sqrt(s["betas"]))[0])  # LDM "linear": in sqrt(beta)
    alphas_bar = np.cumprod(1 - s["betas"])
    assert np.allclose(s["alphas_cumprod"], alphas_bar)
    # posterior mean of q(w_{t-1} | w_t, w_0): coefficients of w_0 and w_t, from the closed form
    prev = np.append(1.0, alphas_bar[:-1])
    assert np.allclose(s["posterior_mean_coef1"], np.sqrt(prev) * s["betas"] / (1 - alphas_bar))
    assert np.allclose(s["posterior_mean_coef2"], np.sqrt(1 - s["betas"]) * (1 - prev) / (1 - alphas_bar))
    assert s["posterior_mean_coef1"][0] == pytest.approx(1.0) and s["posterior_mean_coef2"][0] == pytest.approx(0.0)


def test_code_diffuser_unrolls_four_posterior_mean_steps():
    from stylert_export.code_diffuser import CodeDiffuser, schedule

    torch.manual_seed(0)
    d = CodeDiffuser(16).eval()
    x_T, w_hat = torch.randn(2, 18, 16), torch.randn(2, 18, 16)
    s = schedule()
    with torch.no_grad():
        x = x_T
        for t in (3, 2, 1, 0):
            x0 = d.predict(x, w_hat, t)
            x = float(s["posterior_mean_coef1"][t]) * x0 + float(s["posterior_mean_coef2"][t]) * x
        got = d(x_T, w_hat)
    err = rel_error(got, x)
    print(f"code diffuser vs hand-unrolled steps: relative error {err:.2e}")
    assert err < 1e-6
    assert set(k.split(".")[0] for k in d.state_dict()) == {"att_mapper"}  # the checkpoint's only key group


def test_smart_is_four_dilated_modulated_convs_and_an_aggregation():
    """Eq. 3.7 by hand in the research code's weight form (per-sample weights, grouped conv)."""
    from stylert_export.ops import bias_lrelu
    from stylert_export.vsp_restorer import SMARTLayer

    torch.manual_seed(1)
    layer = SMARTLayer(8, 12, 3, 20).eval()
    with torch.no_grad():
        layer.noise.weight.fill_(0.3)
        layer.activate.bias.normal_()
        layer.fusion[1].bias.normal_()
    x, style, noise = torch.randn(2, 8, 19, 19), torch.randn(2, 20), torch.randn(2, 1, 19, 19)
    with torch.no_grad():
        s = layer.modulation(style)
        branches = []
        for conv, rate in zip(layer.ModulatedConv2ds, (1, 2, 4, 8)):
            w = conv.weight * conv.scale * s[:, None, :, None, None]  # Mod(k, s): [B, out, in, 3, 3]
            w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)  # Demod
            y = F.conv2d(x.reshape(1, -1, 19, 19), w.reshape(-1, 8, 3, 3), padding=rate, dilation=rate, groups=2)
            branches.append(y.reshape(2, 3, 19, 19))
        fused = layer.fusion[0](torch.cat(branches, 1))  # 3x3 aggregation conv
        want = bias_lrelu(bias_lrelu(fused, layer.fusion[1].bias) + 0.3 * noise, layer.activate.bias)
        got = layer(x, style, noise)
    err = rel_error(got, want)
    print(f"SMART vs four dilated modulated convs + aggregation: relative error {err:.2e}")
    assert err < 1e-5


def test_noise_layout_covers_every_noise_input(vsp_model):
    model = vsp_model["source"].model
    names = [n for n, _ in model.noise_layout()]
    log = 5  # 32x32
    assert names[:2] == ["w_T", "z"]
    assert sum(n.startswith("bank") for n in names) == 2 * (log - 2)
    assert sum(n.startswith("enc") for n in names) == 2 * (log - 2)
    assert sum(n.startswith("dec") for n in names) == model.net.cfg.num_layers
    assert model.noise_size == sum(int(np.prod(s)) for _, s in model.noise_layout())


def test_onnxruntime_matches_pytorch_on_fresh_inputs(vsp_model):
    """The whole graph against float64 PyTorch, within twice PyTorch float32's own error. The random init keeps
    the 16 diffuser blocks well conditioned (random_vsp_restorer), so that error stays near float32 round-off on
    any CPU; the part-by-part test checks each part tightly."""
    import copy

    from stylert.runtime.feeds import feeds_for
    from stylert.runtime.model import open_model

    model = open_model(vsp_model["path"], "cpu")
    feeds = feeds_for(model.metadata, 2)
    feeds["noise"] = np.random.default_rng(3).standard_normal(feeds["noise"].shape).astype(np.float32)
    feeds["fidelity"] = np.array([0.0, 0.4], np.float32)
    got = model.run(feeds)["restored"]
    ref = vsp_model["source"].model
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        f32 = ref(t["image"], t["fidelity"], t["noise"]).numpy()
        f64 = copy.deepcopy(ref).double()(t["image"].double(), t["fidelity"].double(), t["noise"].double()).numpy()
    err, floor = rel_error(got, f64), rel_error(f32, f64)
    print(f"VSP restorer: ONNX Runtime vs float64 {err:.2e}, PyTorch float32 vs float64 {floor:.2e}")
    assert floor < 1e-4  # well conditioned: round-off is not amplified
    assert err <= 2 * floor + 1e-5
    assert model.metadata["stylert.method"] == "vsp" and model.metadata["stylert.trained"] == "false"


def test_each_part_matches_pytorch_on_onnxruntime(vsp_model, tmp_path):
    """e4e, one code-diffuser step, and the feature bank + restoration network, each exported and run
    on ONNX Runtime against PyTorch float32: tight, since no part iterates."""
    import onnxruntime as ort

    from stylert_export.onnx_export import export_module
    from stylert_export.stylegan2 import bank_features

    m = vsp_model["source"].model
    log = m.net.cfg.log_size

    class Step(torch.nn.Module):
        def forward(self, x, w_hat):
            return m.diffuser.predict(x, w_hat, 3)

    class Decoder(torch.nn.Module):
        def forward(self, image, w0, noise):
            p = m.split_noise(noise)
            n = 2 * (log - 2)
            priors = bank_features(m.bank, w0, [p[f"bank{k}"] for k in range(n)], RES)
            return m.net(image, priors, w0, p["z"], [p[f"enc{k}"] for k in range(n)],
                         [p[f"dec{k}"] for k in range(m.net.cfg.num_layers)])

    g = torch.Generator().manual_seed(4)
    codes = (2, m.encoder.cfg.n_styles, 512)
    parts = {"e4e": (m.encoder, {"image": torch.rand(2, 3, RES, RES, generator=g) * 2 - 1}),
             "diffuser step": (Step(), {"x": torch.randn(*codes, generator=g), "w_hat": torch.randn(*codes, generator=g)}),
             "bank + restoration net": (Decoder(), {"image": torch.rand(2, 3, RES, RES, generator=g) * 2 - 1,
                                                    "w0": torch.randn(*codes, generator=g),
                                                    "noise": torch.randn(2, m.noise_size, generator=g)})}
    for name, (module, example) in parts.items():
        path = tmp_path / f"{name.replace(' ', '_')}.onnx"
        export_module(module, example, ["out"], path, metadata={})
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {k: v.numpy() for k, v in example.items()})[0]
        with torch.no_grad():
            want = module(**example).numpy()
        err = rel_error(got, want)
        print(f"{name}: ONNX Runtime vs PyTorch relative error {err:.2e}")
        assert err < 1e-5, name


def _to_rosinality(state: dict, cfg) -> dict:
    """Our (NVlabs-named) generator state in rosinality's layout: the inverse of rosinality_to_stylert."""
    out = {f"style.{i + 1}.{p}": state[f"mapping.fc{i}.{p}"] for i in range(cfg.mapping_layers) for p in ("weight", "bias")}
    out["input.input"] = state["synthesis.b4.const"][None]
    layers, rgbs = [("conv1", "synthesis.b4.conv1", 0)], [("to_rgb1", "synthesis.b4")]
    for j, res in enumerate(cfg.block_resolutions[1:]):
        b = f"synthesis.b{res}"
        layers += [(f"convs.{2 * j}", f"{b}.conv0", 2 * j + 1), (f"convs.{2 * j + 1}", f"{b}.conv1", 2 * j + 2)]
        rgbs.append((f"to_rgbs.{j}", b))
    for src, dst, k in layers:
        out.update({f"{src}.conv.weight": state[f"{dst}.weight"][None],
                    f"{src}.conv.modulation.weight": state[f"{dst}.affine.weight"],
                    f"{src}.conv.modulation.bias": state[f"{dst}.affine.bias"],
                    f"{src}.noise.weight": state[f"{dst}.noise_strength"].reshape(1),
                    f"{src}.activate.bias": state[f"{dst}.bias"],
                    f"noises.noise_{k}": state[f"{dst}.noise_const"][None, None]})
        if dst.endswith("conv0"):
            out[f"{src}.conv.blur.kernel"] = state[f"{dst}.resample_filter"] * 4
    for src, b in rgbs:
        out.update({f"{src}.conv.weight": state[f"{b}.torgb.weight"][None],
                    f"{src}.conv.modulation.weight": state[f"{b}.torgb.affine.weight"],
                    f"{src}.conv.modulation.bias": state[f"{b}.torgb.affine.bias"],
                    f"{src}.bias": state[f"{b}.torgb.bias"].reshape(1, 3, 1, 1)})
        if b != "synthesis.b4":
            out[f"{src}.upsample.kernel"] = state[f"{b}.resample_filter"] * 4
    return out


def test_the_public_codes_three_checkpoints_load(vsp_model, tmp_path):
    """style_encoder_decoder.pt, code_diffuser.pt, restoration_net.pt in the public code's layouts."""
    from stylert_export.checkpoints import CheckpointError
    from stylert_export.vsp_restorer import load_vsp_restorer

    m = vsp_model["source"].model
    enc = {f"encoder.{k}": v for k, v in m.encoder.state_dict().items() if k != "latent_avg"}
    dec = {f"decoder.{k}": v for k, v in _to_rosinality(m.bank.state_dict(), m.bank.cfg).items()}
    paths = [tmp_path / n for n in ("style_encoder_decoder.pt", "code_diffuser.pt", "restoration_net.pt")]
    torch.save({"state_dict": {**enc, **dec}, "opts": {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True},
                "latent_avg": m.encoder.latent_avg.clone()}, paths[0])
    torch.save({"att_mapper": m.diffuser.state_dict()}, paths[1])
    torch.save({"g_ema": m.net.state_dict()}, paths[2])
    loaded = load_vsp_restorer(*paths)
    image, noise = torch.rand(1, 3, RES, RES) * 2 - 1, torch.randn(1, m.noise_size)
    with torch.no_grad():
        assert max_abs(loaded(image, torch.zeros(1), noise), m(image, torch.zeros(1), noise)) < 1e-5
    with pytest.raises(CheckpointError, match="not VSPBFR's code_diffuser.pt"):
        load_vsp_restorer(paths[0], paths[2], paths[2])
    with pytest.raises(CheckpointError, match="not VSPBFR's restoration_net.pt"):
        load_vsp_restorer(paths[0], paths[1], paths[1])
    with pytest.raises(CheckpointError, match="style_encoder_decoder.pt"):
        load_vsp_restorer(paths[2], paths[1], paths[2])


def test_restorer_is_seeded_and_restores_a_real_photo(vsp_model, tmp_path, astronaut):
    import cv2

    from stylert import Restorer
    from stylert.faces.imageio import read_image, write_image

    r = Restorer(vsp_model["path"], ["cpu"])
    face = cv2.resize(astronaut[20:230, 120:330], (RES, RES), interpolation=cv2.INTER_AREA)
    run = lambda seed: r.restore(face, channels="rgb", aligned=True, seed=seed).image  # noqa: E731
    assert np.array_equal(run(1), run(1)) and not np.array_equal(run(1), run(2))
    assert np.array_equal(r.restore(face, 1.0, channels="rgb", aligned=True).image, face)  # fidelity 1: the input

    photo = write_image(tmp_path / "astronaut.png", astronaut)
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "restore", str(photo), "-o", str(tmp_path / "out.png"),
                             "--model", str(vsp_model["path"]), "--seed", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 face(s)" in result.stdout and "untrained" in result.stderr
    written = read_image(tmp_path / "out.png").rgb  # what the API gives for the same photo and seed
    want = stylert.Restorer(vsp_model["path"]).restore(astronaut, channels="rgb", seed=3).image
    assert np.abs(written.astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(written, astronaut)


def test_export_cli_vsp_needs_all_three_checkpoints(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "export", "restore", "--method", "vsp", "--checkpoint",
                             str(tmp_path / "x.pt"), "-o", str(tmp_path / "v.onnx")], capture_output=True, text=True)
    assert result.returncode == 2 and "--code-diffuser and --restoration-net" in result.stderr
