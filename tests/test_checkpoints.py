"""Loaders against outputs of the official rosinality and NVlabs implementations, and bad files."""
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FIXTURES, max_abs  # noqa: E402
from stylert_export.checkpoints import CheckpointError, load_generator  # noqa: E402
from stylert_export.ops import modconv_impl  # noqa: E402
from stylert_export.safe_pickle import module_state_dict, safe_load_pickle  # noqa: E402

CASES = [("rosinality", "rosinality_32.pt"), ("nvlabs", "nvlabs_32.pkl")]


@pytest.mark.parametrize("layout,name", CASES)
@pytest.mark.parametrize("form", ["activation", "weight"])
def test_matches_official_implementation(layout, name, form, reference_outputs):
    with modconv_impl(form):
        gen = load_generator(FIXTURES / name, layout).generator
    ws = torch.from_numpy(reference_outputs[f"{layout}_ws"])
    with torch.no_grad():
        err = max_abs(gen(ws).numpy(), reference_outputs[f"{layout}_image"])
    print(f"{layout} {form} form vs official: max abs {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("layout,name", CASES)
def test_mapping_and_truncation_match_official(layout, name, reference_outputs):
    """z -> mapping -> truncation (psi 0.7 around the checkpoint's w_avg / latent_avg) -> image."""
    gen = load_generator(FIXTURES / name).generator
    z = torch.from_numpy(reference_outputs[f"{layout}_z"])
    with torch.no_grad():
        err = max_abs(gen(gen.z_to_ws(z, 0.7)).numpy(), reference_outputs[f"{layout}_image_z_psi07"])
    assert err < 1e-4


@pytest.mark.parametrize("layout,name", CASES)
def test_config_inferred_from_tensors(layout, name):
    cfg = load_generator(FIXTURES / name, layout).generator.cfg
    assert cfg.resolution == 32 and cfg.num_ws == 8 and cfg.w_dim == 32 and cfg.mapping_layers == 2
    assert cfg.channels == ({4: 32, 8: 32, 16: 16, 32: 16} if layout == "rosinality" else {4: 32, 8: 32, 16: 16, 32: 8})
    assert cfg.conv_clamp == (None if layout == "rosinality" else 256)


def test_nvlabs_state_dict_pt_equals_pkl(tmp_path, reference_outputs):
    """The same network as an NVlabs .pt holding {'G_ema': state_dict}; conv_clamp falls back to 256."""
    snapshot = safe_load_pickle((FIXTURES / "nvlabs_32.pkl").read_bytes())
    torch.save({"G_ema": module_state_dict(snapshot["G_ema"])}, tmp_path / "g.pt")
    loaded = load_generator(tmp_path / "g.pt", "nvlabs")
    assert any("conv_clamp" in n for n in loaded.notes)
    with torch.no_grad():
        out = loaded.generator(torch.from_numpy(reference_outputs["nvlabs_ws"])).numpy()
    assert max_abs(out, reference_outputs["nvlabs_image"]) < 1e-4


def test_bare_rosinality_state_dict_estimates_w_avg(tmp_path, reference_outputs):
    ckpt = torch.load(FIXTURES / "rosinality_32.pt", weights_only=False)
    torch.save(ckpt["g_ema"], tmp_path / "bare.pt")
    loaded = load_generator(tmp_path / "bare.pt", "rosinality")
    assert any("w_avg estimated" in n for n in loaded.notes)
    with torch.no_grad():
        out = loaded.generator(torch.from_numpy(reference_outputs["rosinality_ws"])).numpy()
    assert max_abs(out, reference_outputs["rosinality_image"]) < 1e-4


def test_wrong_layout_names_the_right_one():
    with pytest.raises(CheckpointError, match="pass --layout rosinality"):
        load_generator(FIXTURES / "rosinality_32.pt", "nvlabs")
    with pytest.raises(CheckpointError, match="pass --layout nvlabs"):
        load_generator(FIXTURES / "nvlabs_32.pkl", "rosinality")


@pytest.mark.parametrize("name", ["rosinality_32.pt", "nvlabs_32.pkl"])
def test_truncated_file(tmp_path, name):
    data = (FIXTURES / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(tmp_path / "empty.pt")


def test_missing_key_is_named(tmp_path):
    ckpt = torch.load(FIXTURES / "rosinality_32.pt", weights_only=False)
    del ckpt["g_ema"]["convs.1.activate.bias"]
    torch.save({"g_ema": ckpt["g_ema"]}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="convs.1.activate.bias"):
        load_generator(tmp_path / "g.pt", "rosinality")


def test_wrong_shape_is_named(tmp_path):
    snapshot = safe_load_pickle((FIXTURES / "nvlabs_32.pkl").read_bytes())
    state = module_state_dict(snapshot["G_ema"])
    state["synthesis.b16.conv1.bias"] = torch.zeros(5)
    torch.save({"G_ema": state}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match=r"synthesis.b16.conv1.bias has shape \(5,\)"):
        load_generator(tmp_path / "g.pt", "nvlabs")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_pt_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"g_ema": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_generator(tmp_path / "evil.pt", "rosinality")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_pkl_never_runs_embedded_code(tmp_path, monkeypatch):
    """A REDUCE of os.system and a persistent object whose source writes a file: neither runs."""
    import sys
    import types

    monkeypatch.chdir(tmp_path)
    sentinel = tmp_path / "EXECUTED"
    fake = types.ModuleType("torch_utils.persistence")  # only so that pickle can name the global

    def _reconstruct_persistent_obj(meta):
        exec(meta["module_src"])

    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _reconstruct_persistent_obj.__module__ = fake.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)

    class Persistent:
        def __reduce__(self):
            return (_reconstruct_persistent_obj, ({"type": "class", "version": 4, "class_name": "Generator",
                                                   "module_src": f"open({str(sentinel)!r}, 'w').write('x')",
                                                   "state": {}},))

    data = pickle.dumps({"G_ema": Persistent(), "evil": Payload()})
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    loaded = safe_load_pickle(data)
    assert type(loaded["G_ema"]).__name__ == "PersistentRecord"
    assert type(loaded["evil"]).__name__ == "system"  # an inert stand-in, never called
    (tmp_path / "evil.pkl").write_bytes(data)
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / "evil.pkl", "nvlabs")
    assert not sentinel.exists() and not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_noise_is_deterministic_and_constant():
    """No RNG in forward: the same ws twice give identical images; 'none' differs from 'const'."""
    gen = load_generator(FIXTURES / "nvlabs_32.pkl").generator
    ws = torch.randn(2, gen.num_ws, 32)
    with torch.no_grad():
        a, b, c = gen(ws), gen(ws), gen(ws, noise_mode="none")
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_config_validation():
    from stylert_export.stylegan2 import StyleGAN2Config
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Config(resolution=48, channels={})
    with pytest.raises(ValueError, match="channel count missing"):
        StyleGAN2Config(resolution=16, channels={4: 8, 8: 8})
    assert StyleGAN2Config(resolution=1024, channels=StyleGAN2Config.rosinality_channels(1024)).num_ws == 18
    assert np.array_equal(list(StyleGAN2Config.nvlabs_channels(1024).values()),
                          list(StyleGAN2Config.rosinality_channels(1024, 2).values()))
