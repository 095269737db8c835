"""Shared fixtures. `tests/fixtures/` holds tiny checkpoints written by the official
rosinality and NVlabs implementations and their outputs (see tests/fixtures/README.md)."""
from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
STYLIZE_RES = 32


def rel_error(got, want) -> float:
    """Relative L2 error; NaN or inf anywhere gives inf, so it never passes a bound."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))


def max_abs(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(got - want).max())


@pytest.fixture(autouse=True)
def seeded(request):
    """Every test draws from generators seeded by its own name: the same inputs on every run, on any worker,
    in any order."""
    seed = zlib.crc32(request.node.nodeid.encode())
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return seed


@pytest.fixture(scope="session")
def reference_outputs():
    return dict(np.load(FIXTURES / "reference_outputs.npz"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """ONNX graphs exported once per session from the official-layout fixtures (needs torch)."""
    pytest.importorskip("torch")
    from stylert_export.generator import export_generator, from_checkpoint, from_random_init

    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, ckpt in (("rosinality", "rosinality_32.pt"), ("nvlabs", "nvlabs_32.pkl")):
        paths[name] = out / f"{name}.onnx"
        export_generator(from_checkpoint(FIXTURES / ckpt), paths[name], log=lambda *_: None)
    paths["mapping"] = out / "mapping.onnx"
    export_generator(from_checkpoint(FIXTURES / "nvlabs_32.pkl"), paths["mapping"], with_mapping=True, log=lambda *_: None)
    paths["random"] = out / "random.onnx"
    export_generator(from_random_init(7, 16, channel_base=128, channel_max=16, w_dim=16, mapping_layers=2),
                     paths["random"], with_mapping=True, log=lambda *_: None)
    return paths


@pytest.fixture(scope="session")
def retouch_models(tmp_path_factory):
    """A tiny seeded-random retoucher (32x32), exported with and without masks, and its checkpoint."""
    pytest.importorskip("torch")
    from stylert_export import retouch_export as rx

    out = tmp_path_factory.mktemp("retouch")
    src = rx.from_random_init(5, 32, channel_base=256, channel_max=16, w_dim=16)
    paths = {"checkpoint": rx.save_retoucher(src, out / "retouch.safetensors"),
             "masks": out / "retouch_masks.onnx", "plain": out / "retouch.onnx"}
    rx.export_retoucher(src, paths["masks"], with_masks=True, log=lambda *_: None)
    rx.export_retoucher(src, paths["plain"], log=lambda *_: None)
    paths["source"] = src
    return paths


@pytest.fixture(scope="session")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def restore_models(tmp_path_factory):
    """A tiny seeded-random QC-StyleGAN restorer (32x32, q_dim 4), sharp-only and with quality."""
    pytest.importorskip("torch")
    from stylert_export import restore_export as rx

    out = tmp_path_factory.mktemp("restore")
    src = rx.from_random_init(3, 32, channel_base=256, channel_max=16, w_dim=16, q_dim=4)
    paths = {"sharp": out / "restore.onnx", "quality": out / "restore_q.onnx", "source": src}
    rx.export_restorer(src, paths["sharp"], log=lambda *_: None)
    rx.export_restorer(src, paths["quality"], with_quality=True, log=lambda *_: None)
    return paths


@pytest.fixture(scope="session")
def style_pack(tmp_path_factory):
    """A tiny random-init pack with two styles and a region-local model, made by the CLI."""
    pack = tmp_path_factory.mktemp("pack")
    args = ["export", "stylize", "--random-init", "--seed", 4, "--pack", pack, "--style", "cartoon", "--style", "impasto",
            "--with-local", "--resolution", STYLIZE_RES, "--channel-base", 256, "--channel-max", 32, "--w-dim", 32,
            "--encoder-units", "1,1,1,1", "--encoder-size", 32, "--local-width", 8]
    result = subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "untrained" in result.stderr
    return pack


def small_vsp_config():
    from stylert_export.vsp_restorer import VSPConfig

    return VSPConfig(size=32, bank_resolution=64, channels={4: 512, 8: 32, 16: 16, 32: 16, 64: 16},
                     e4e_units=(1, 1, 1, 1), e4e_input=16)


@pytest.fixture(scope="session")
def vsp_model(tmp_path_factory):
    """A tiny seeded-random VSP restorer (32x32, bank 64x64), exported once."""
    from stylert_export import restore_export as rx
    from stylert_export.vsp_restorer import random_vsp_restorer

    cfg = small_vsp_config()
    src = rx.RestorerSource(random_vsp_restorer(cfg, 9), "random-init seed 9", False, 9, "vsp", cfg)
    path = tmp_path_factory.mktemp("vsp") / "vsp.onnx"
    rx.export_restorer(src, path, log=lambda *_: None)
    return {"path": path, "source": src}


INPAINT_RES = {"exe-gan": 32, "grig": 64}


@pytest.fixture(scope="session")
def inpaint_models(tmp_path_factory):
    """Tiny seeded-random inpainters made by the CLI: EXE-GAN at 32 (its exemplar graph beside it), GRIG at 64."""
    out = tmp_path_factory.mktemp("inpaint")
    common = ["export", "inpaint", "--random-init", "--seed", 5]
    commands = {"exe-gan": ["--method", "exe-gan", "--resolution", 32, "--channel-base", 1024, "--channel-max", 32,
                            "--encoder-units", "1,1,1,1", "--encoder-size", 16, "-o", out / "exe32.onnx"],
                "grig": ["--method", "grig", "--resolution", 64, "--ngf", 8, "--dim", 8, "--blocks", "1,1,1,1",
                         "--refinement", 1, "-o", out / "grig64.onnx"]}
    for name, args in commands.items():
        result = subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, common + args)], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        assert "untrained" in result.stderr and "parity" in result.stdout
    return {"exe-gan": out / "exe32.onnx", "exemplar": out / "exe32.exemplar.onnx", "grig": out / "grig64.onnx"}
