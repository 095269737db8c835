"""StyleRetoucher in PyTorch: Eq. 5 against a direct transcription, the strength control, checkpoints, export."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from conftest import FIXTURES, max_abs, rel_error  # noqa: E402
from stylert_export import retouch_export as rx  # noqa: E402
from stylert_export.checkpoints import CheckpointError  # noqa: E402
from stylert_export.retoucher import BAFS, StyleRetoucher, retoucher_config  # noqa: E402


def bafs_direct(unit: BAFS, f_s, f_i, strength):
    """Eq. 5 written out with the unit's weights: H = Conv(Cat(F_S, F_I)); two-way softmaxes; the blend."""
    lrelu = lambda x: F.leaky_relu(x, 0.2)  # noqa: E731
    h = lrelu(F.conv2d(torch.cat([f_s, f_i], 1), unit.conv0.weight, unit.conv0.bias, padding=1))
    h = lrelu(F.conv2d(h, unit.conv1.weight, unit.conv1.bias, padding=1))
    z = lrelu(h.mean(dim=(2, 3)) @ unit.channel_fc0.weight.T + unit.channel_fc0.bias)
    logits = (z @ unit.channel_fc1.weight.T + unit.channel_fc1.bias).reshape(len(h), 2, -1)
    m_c = torch.exp(logits[:, 0]) / (torch.exp(logits[:, 0]) + torch.exp(logits[:, 1]))
    m_c = m_c[:, :, None, None]
    if unit.use_strength:  # GP-side channel weight (1 - M_C) scaled by strength, clipped to [0, 1]
        m_c = 1 - torch.clamp((1 - m_c) * strength[:, None, None, None], 0, 1)
    s = F.conv2d(h, unit.spatial.weight, unit.spatial.bias, padding=1)
    m_s = torch.exp(s[:, :1]) / (torch.exp(s[:, :1]) + torch.exp(s[:, 1:]))
    return m_s * m_c * f_s + (1 - m_s) * (1 - m_c) * f_i, m_s, m_c


@pytest.mark.parametrize("use_strength", [False, True])
def test_bafs_matches_eq5(use_strength):
    torch.manual_seed(use_strength)
    unit = BAFS(12, 4, use_strength).eval()
    f_s, f_i = torch.randn(3, 12, 9, 9), torch.randn(3, 12, 9, 9)
    strength = torch.tensor([0.0, 0.7, 1.8])
    with torch.no_grad():
        got, want = unit(f_s, f_i, strength), bafs_direct(unit, f_s, f_i, strength)
    for g, w in zip(got, want):
        err = rel_error(g.numpy(), w.numpy())
        print(f"BAFS use_strength={use_strength}: relative error {err:.2e}")
        assert err < 1e-5


def test_strength_changes_only_channel_masks_of_levels_2_and_up():
    """Same F_S and F_I: M_S never depends on strength; M_C does at levels >= 2 and not at level 1."""
    cfg = retoucher_config(64, channel_base=512, channel_max=16, w_dim=16)
    torch.manual_seed(0)
    model = StyleRetoucher(cfg).eval()
    for level, unit in zip(cfg.levels, model.bafs):
        c = cfg.gp.channels[cfg.level_resolution(level)]
        f_s, f_i = torch.randn(2, c, 8, 8), torch.randn(2, c, 8, 8)
        with torch.no_grad():
            m_s1, m_c1 = unit.masks(f_s, f_i, torch.ones(2))
            m_s2, m_c2 = unit.masks(f_s, f_i, torch.tensor([0.3, 1.7]))
            m_s0, m_c0 = unit.masks(f_s, f_i, torch.zeros(2))
        assert torch.equal(m_s1, m_s2)
        if level == 1:
            assert torch.equal(m_c1, m_c2)
        else:
            assert (m_c1 - m_c2).abs().max() > 1e-3
            assert torch.equal(m_c0, torch.ones_like(m_c0))  # strength 0: channels all on the input features


def test_strength_one_is_the_trained_blend():
    """At strength 1 the channel mask is the raw softmax output (the model as trained)."""
    torch.manual_seed(3)
    unit_s, unit_plain = BAFS(8, 4, True).eval(), BAFS(8, 4, False).eval()
    unit_plain.load_state_dict(unit_s.state_dict())
    f_s, f_i = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        a, b = unit_s(f_s, f_i, torch.ones(2)), unit_plain(f_s, f_i, torch.ones(2))
    assert rel_error(a[0].numpy(), b[0].numpy()) < 1e-6


def test_levels_follow_the_paper():
    cfg = retoucher_config(1024)
    assert cfg.gp.num_ws == 18 and cfg.levels == list(range(1, 9))
    assert [cfg.level_resolution(i) for i in (1, 8)] == [512, 4]  # H_i = 2^(10-i)


def test_checkpoint_round_trip(tmp_path, retouch_models):
    src = rx.from_checkpoint(retouch_models["checkpoint"])
    assert not src.trained
    image, strength = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([1.0, 0.5])
    with torch.no_grad():
        a = retouch_models["source"].model(image, strength)[0]
        b = src.model(image, strength)[0]
    assert torch.equal(a, b)


def test_checkpoint_errors(tmp_path, retouch_models):
    with pytest.raises(CheckpointError, match="no such file"):
        rx.from_checkpoint(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        rx.from_checkpoint(tmp_path / "junk.safetensors")
    from stylert_export.checkpoints import save_stylert_checkpoint
    save_stylert_checkpoint(tmp_path / "gen.safetensors", {"x": torch.zeros(1)}, call="generator", config="{}", trained=False)
    with pytest.raises(CheckpointError, match="for 'generator', not 'retouch'"):
        rx.from_checkpoint(tmp_path / "gen.safetensors")


def test_gp_initialised_from_stylegan2_checkpoint():
    """The GP module equals the checkpoint's synthesis network: same image from the same ws."""
    from stylert_export.checkpoints import load_generator
    src = rx.from_gp_checkpoint(FIXTURES / "rosinality_32.pt")
    gen = load_generator(FIXTURES / "rosinality_32.pt").generator
    ws = torch.randn(2, gen.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(src.model.gp(ws), gen.synthesis(ws))
    assert torch.equal(src.model.w_avg, gen.mapping.w_avg) and not src.trained


def test_onnx_parity_with_masks_and_strength_is_an_input(retouch_models):
    import onnxruntime as ort
    session = ort.InferenceSession(str(retouch_models["masks"]), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names[0] == "retouched" and "mask_spatial_16" in names and "mask_channel_4" in names
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    model = retouch_models["source"].model
    for s in (0.0, 1.0, 2.0):
        strength = np.full(2, s, np.float32)
        got = session.run(None, {"image": image, "strength": strength})
        with torch.no_grad():
            want, masks = model(torch.from_numpy(image), torch.from_numpy(strength))
        assert max_abs(got[0], want.numpy()) < 1e-3
        assert max_abs(got[names.index("mask_spatial_16")], masks[1][0].numpy()) < 1e-4
    low = session.run(None, {"image": image, "strength": np.zeros(2, np.float32)})[0]
    high = session.run(None, {"image": image, "strength": np.ones(2, np.float32)})[0]
    assert np.abs(low - high).max() > 1e-4  # strength reaches the graph, not frozen at export
