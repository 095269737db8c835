"""`stylert batch` (Ray Data) on a local Ray with random-init models: it writes what the CLI writes byte for byte,
resumes, refuses what the CLI refuses, and never writes onto its inputs. Its own file, so pytest-xdist runs it
beside the service's tests (`--dist loadfile`) rather than after them."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray", reason="stylert batch needs Ray: pip install 'stylert[serve]'")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from serve_load import free_port  # noqa: E402

from stylert.cli import main  # noqa: E402


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_batch_job_writes_what_the_cli_writes_and_resumes(retouch_models, photo_library, inpaint_models, tmp_path):
    photos, cli_out, model = photo_library["photos"], photo_library["cli"], retouch_models["plain"]
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    run = _cli("batch", photos, "-o", tmp_path / "out", "--model", model, "--strength", 0.7, "--batch", 2, env=env,
               cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.name for p in cli_out.iterdir()) == ["a.png", "b.jpg", "c.webp"]
    for name in written:  # byte for byte, metadata and encoder settings included
        assert (tmp_path / "out" / name).read_bytes() == (cli_out / name).read_bytes(), name
    assert [line for line in run.stderr.splitlines() if line.startswith("error: ")] == photo_library["cli_errors"]
    assert "3 image(s) processed, 3 failed" in run.stdout
    again = _cli("batch", photos, "-o", tmp_path / "out", "--model", model, "--strength", 0.7, "--json", env=env)
    assert "skipped 3 file(s) already in" in again.stderr
    rows = [json.loads(line) for line in again.stdout.splitlines()]
    assert sorted(Path(r["input"]).name for r in rows) == ["d_noface.png", "e_text.png", "f_cut.png"]
    refused = _cli("batch", photos, "-o", tmp_path / "out2", "--model", model, "--fidelity", 0.5, env=env)
    assert refused.returncode == 2 and "unknown parameter(s) fidelity; retouch takes strength" in refused.stderr
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    Image.fromarray(np.pad(np.full((40, 80), 255, np.uint8), ((150, 322), (180, 252)))).save(mask_dir / "a.png")
    inpaint = _cli("batch", photos / "a.png", "-o", tmp_path / "inp", "--model", inpaint_models["exe-gan"],
                   "--masks", mask_dir, "--seed", 2, env=env)
    single = _cli("inpaint", photos / "a.png", "-o", tmp_path / "inp1", "--model", inpaint_models["exe-gan"],
                  "--masks", mask_dir, "--seed", 2)
    assert inpaint.returncode == 0 and single.returncode == 0, inpaint.stderr + single.stderr
    assert (tmp_path / "inp" / "a.png").read_bytes() == (tmp_path / "inp1" / "a.png").read_bytes()
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    onto_inputs = _cli("batch", photos, "-o", photos, "--model", model, "--overwrite", env=env)
    assert onto_inputs.returncode == 1 and onto_inputs.stderr.count("would overwrite the input") == 6
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_batch_refuses_an_unreachable_cluster_before_any_work(retouch_models, photo_library, tmp_path, capsys):
    status = main(["batch", str(photo_library["photos"]), "-o", str(tmp_path / "out"), "--model",
                   str(retouch_models["plain"]), "--address", f"127.0.0.1:{free_port()}"])
    assert status == 2 and "no Ray cluster answers there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
