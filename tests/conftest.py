"""Shared fixtures. `tests/fixtures/` holds tiny checkpoints written by the official
rosinality and NVlabs implementations and their outputs (see tests/fixtures/README.md)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
STYLIZE_RES = 32

# pytest-xdist workers share the machine's cores: each worker's PyTorch, and the commands it runs, gets its share
# (set before anything imports torch), so two workers' parallel sections do not oversubscribe the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


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


# What the face commands may print on stderr before their one error line: the untrained-model warning and the backend.
NOTICE_LINES = ("WARNING: ", "warning: ", "note: ")


def error_line(stderr: str, command: str) -> str:
    """The one error line of a refused command (its last stderr line, `stylert COMMAND: error: ...`); fails on a
    traceback or on any other line but the command's notices (untrained weights, the backend it runs on)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"stylert {command}: error: "), stderr
    for line in lines[:-1]:
        assert line.startswith(NOTICE_LINES) or line.endswith(tuple(f": running on {b}" for b in (
            "onnxruntime-cpu", "onnxruntime-cuda", "openvino", "tensorrt"))), f"stray line {line!r} in:\n{stderr}"
    return lines[-1]


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


@pytest.fixture(scope="session", autouse=True)
def stylert_cache(tmp_path_factory):
    """Precision verdicts and OpenVINO's compiled blobs go to the session's own folder (also for the CLIs the tests
    start), never the user's cache; a precision pinned in the caller's environment does not change what runs."""
    saved = {k: os.environ.pop(k, None) for k in ("STYLERT_CACHE", "STYLERT_PRECISION", "OV_CACHE_DIR")}
    os.environ["STYLERT_CACHE"] = str(tmp_path_factory.getbasetemp() / "stylert-cache")
    yield Path(os.environ["STYLERT_CACHE"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def reference_outputs():
    return dict(np.load(FIXTURES / "reference_outputs.npz"))


def built(tmp_path_factory, name: str, make) -> Path:
    """An artifact folder made once per session: with pytest-xdist the workers share the session's temp folder and
    the first to ask builds it under a file lock while the others wait, so every export runs once."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # .../pytest-N/popen-gwK -> .../pytest-N, the same for every worker
    folder = root / "artifacts" / name
    folder.parent.mkdir(exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").touch()
    return folder


def cli_export(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "export", *map(str, args)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """ONNX graphs exported once per session from the official-layout fixtures (needs torch)."""
    pytest.importorskip("torch")
    from stylert_export.generator import export_generator, from_checkpoint, from_random_init

    def make(out):
        for name, ckpt in (("rosinality", "rosinality_32.pt"), ("nvlabs", "nvlabs_32.pkl")):
            export_generator(from_checkpoint(FIXTURES / ckpt), out / f"{name}.onnx", log=lambda *_: None)
        export_generator(from_checkpoint(FIXTURES / "nvlabs_32.pkl"), out / "mapping.onnx", with_mapping=True,
                         log=lambda *_: None)
        export_generator(from_random_init(7, 16, channel_base=128, channel_max=16, w_dim=16, mapping_layers=2),
                         out / "random.onnx", with_mapping=True, log=lambda *_: None)

    out = built(tmp_path_factory, "generators", make)
    return {name: out / f"{name}.onnx" for name in ("rosinality", "nvlabs", "mapping", "random")}


@pytest.fixture(scope="session")
def generator_flavours(tmp_path_factory):
    """The NVlabs fixture generator in the other flavours and precision: plugin (fp32), fp16 portable and fp16
    plugin (the fp32 portable graph is `exported`'s nvlabs.onnx); the fp16 export's parity report is kept."""
    pytest.importorskip("torch")
    from stylert_export.generator import export_generator, from_checkpoint

    def make(out):
        src = from_checkpoint(FIXTURES / "nvlabs_32.pkl")
        export_generator(src, out / "plugin.onnx", flavor="plugin", log=lambda *_: None)
        report = export_generator(src, out / "fp16.onnx", fp16=True, log=lambda *_: None)
        (out / "fp16_parity.txt").write_text(f"{int(report.ok)} {report.max_abs!r}")
        export_generator(src, out / "fp16_plugin.onnx", fp16=True, flavor="plugin", log=lambda *_: None)

    out = built(tmp_path_factory, "generator_flavours", make)
    ok, max_abs_err = (out / "fp16_parity.txt").read_text().split()
    return {"plugin": out / "plugin.onnx", "fp16": out / "fp16.onnx", "fp16_plugin": out / "fp16_plugin.onnx",
            "fp16_parity": (ok == "1", float(max_abs_err))}


def retouch_source():
    from stylert_export import retouch_export as rx

    return rx.from_random_init(5, 32, channel_base=256, channel_max=16, w_dim=16)


@pytest.fixture(scope="session")
def retouch_models(tmp_path_factory):
    """A tiny seeded-random retoucher (32x32), exported with and without masks, its checkpoint and its source."""
    pytest.importorskip("torch")
    from stylert_export import retouch_export as rx

    def make(out):
        src = retouch_source()
        rx.save_retoucher(src, out / "retouch.safetensors")
        rx.export_retoucher(src, out / "retouch_masks.onnx", with_masks=True, log=lambda *_: None)
        rx.export_retoucher(src, out / "retouch.onnx", log=lambda *_: None)

    out = built(tmp_path_factory, "retouch", make)
    return {"checkpoint": out / "retouch.safetensors", "masks": out / "retouch_masks.onnx", "plain": out / "retouch.onnx",
            "source": retouch_source()}


@pytest.fixture(scope="session")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def restore_source():
    from stylert_export import restore_export as rx

    return rx.from_random_init(3, 32, channel_base=256, channel_max=16, w_dim=16, q_dim=4)


@pytest.fixture(scope="session")
def restore_models(tmp_path_factory):
    """A tiny seeded-random QC-StyleGAN restorer (32x32, q_dim 4), sharp-only and with quality, and its source."""
    pytest.importorskip("torch")
    from stylert_export import restore_export as rx

    def make(out):
        src = restore_source()
        rx.export_restorer(src, out / "restore.onnx", log=lambda *_: None)
        rx.export_restorer(src, out / "restore_q.onnx", with_quality=True, log=lambda *_: None)

    out = built(tmp_path_factory, "restore", make)
    return {"sharp": out / "restore.onnx", "quality": out / "restore_q.onnx", "source": restore_source()}


@pytest.fixture(scope="session")
def style_pack(tmp_path_factory):
    """A tiny random-init pack with two styles and a region-local model, made by the CLI."""
    def make(pack):
        result = cli_export("stylize", "--random-init", "--seed", 4, "--pack", pack, "--style", "cartoon", "--style",
                            "impasto", "--with-local", "--resolution", STYLIZE_RES, "--channel-base", 256,
                            "--channel-max", 32, "--w-dim", 32, "--encoder-units", "1,1,1,1", "--encoder-size", 32,
                            "--local-width", 8)
        assert "untrained" in result.stderr

    return built(tmp_path_factory, "pack", make)


def small_vsp_config():
    from stylert_export.vsp_restorer import VSPConfig

    return VSPConfig(size=32, bank_resolution=64, channels={4: 512, 8: 32, 16: 16, 32: 16, 64: 16},
                     e4e_units=(1, 1, 1, 1), e4e_input=16)


@pytest.fixture(scope="session")
def vsp_model(tmp_path_factory):
    """A tiny seeded-random VSP restorer (32x32, bank 64x64), exported once, and its source."""
    pytest.importorskip("torch")
    from stylert_export import restore_export as rx
    from stylert_export.vsp_restorer import random_vsp_restorer

    def source():
        cfg = small_vsp_config()
        return rx.RestorerSource(random_vsp_restorer(cfg, 9), "random-init seed 9", False, 9, "vsp", cfg)

    out = built(tmp_path_factory, "vsp", lambda folder: rx.export_restorer(source(), folder / "vsp.onnx",
                                                                            log=lambda *_: None))
    return {"path": out / "vsp.onnx", "source": source()}


INPAINT_RES = {"exe-gan": 32, "grig": 64}


@pytest.fixture(scope="session")
def inpaint_models(tmp_path_factory):
    """Tiny seeded-random inpainters made by the CLI: EXE-GAN at 32 (its exemplar graph beside it), GRIG at 64."""
    def make(out):
        for args in (["--method", "exe-gan", "--resolution", 32, "--channel-base", 1024, "--channel-max", 32,
                      "--encoder-units", "1,1,1,1", "--encoder-size", 16, "-o", out / "exe32.onnx"],
                     ["--method", "grig", "--resolution", 64, "--ngf", 8, "--dim", 8, "--blocks", "1,1,1,1",
                      "--refinement", 1, "-o", out / "grig64.onnx"]):
            result = cli_export("inpaint", "--random-init", "--seed", 5, *args)
            assert "untrained" in result.stderr and "parity" in result.stdout

    out = built(tmp_path_factory, "inpaint", make)
    return {"exe-gan": out / "exe32.onnx", "exemplar": out / "exe32.exemplar.onnx", "grig": out / "grig64.onnx"}


@pytest.fixture(scope="session")
def edit_model(tmp_path_factory):
    """A tiny seeded-random FACEMUG editor (32x32, bank 32) made by the CLI, with its stylert checkpoint."""
    def make(out):
        result = cli_export("edit", "--random-init", "--seed", 6, "--resolution", 32, "--bank-resolution", 32,
                            "--channel-base", 1024, "--encoder-units", "1,1,1,1", "--encoder-size", 32,
                            "--aggregation-channels", 8, "-o", out / "edit32.onnx",
                            "--save-checkpoint", out / "edit32.safetensors")
        assert "untrained" in result.stderr and "parity" in result.stdout

    out = built(tmp_path_factory, "edit", make)
    return {"path": out / "edit32.onnx", "checkpoint": out / "edit32.safetensors"}


@pytest.fixture(scope="session")
def photo_library(tmp_path_factory, astronaut, retouch_models):
    """Photos in three formats, one without a face, one not an image, one truncated; and what `stylert retouch`
    writes for them one at a time with the tiny retoucher at strength 0.7, its error lines kept: what the Ray batch
    job and the service must reproduce byte for byte."""
    from PIL import Image

    def make(root):
        photos = root / "photos"
        photos.mkdir()
        Image.fromarray(astronaut).save(photos / "a.png")
        Image.fromarray(astronaut[:, ::-1]).save(photos / "b.jpg", quality=90)
        Image.fromarray(astronaut[40:460, 60:480]).save(photos / "c.webp")
        Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(photos / "d_noface.png")
        (photos / "e_text.png").write_bytes(b"not an image")
        (photos / "f_cut.png").write_bytes((photos / "a.png").read_bytes()[:5000])
        result = subprocess.run([sys.executable, "-m", "stylert.cli", "retouch", str(photos), "-o", str(root / "cli"),
                                 "--model", str(retouch_models["plain"]), "--strength", "0.7"], capture_output=True,
                                text=True)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 1 and len(errors) == 3, result.stderr
        (root / "cli_errors.txt").write_text("\n".join(errors))

    root = built(tmp_path_factory, "photo_library", make)
    return {"photos": root / "photos", "cli": root / "cli", "cli_errors": (root / "cli_errors.txt").read_text().splitlines()}
