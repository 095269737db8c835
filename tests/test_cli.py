"""The `stylert` command as a user runs it: one-line errors, exit codes, files written."""
import subprocess
import sys

import cv2
import pytest

from conftest import FIXTURES, error_line


def stylert(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_lists_export():
    result = stylert("--help")
    assert result.returncode == 0
    assert "export" in result.stdout and "generate" in result.stdout


def test_export_and_generate(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "g.onnx"
    result = stylert("export", "generator", "--checkpoint", FIXTURES / "rosinality_32.pt", "--layout", "rosinality",
                     "--with-mapping", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "parity (ONNX Runtime vs PyTorch" in result.stdout and "-> ok" in result.stdout
    result = stylert("generate", out, "--seeds", "0-2", "--truncation", "0.7", "-o", tmp_path / "imgs")
    assert result.returncode == 0, result.stderr
    images = sorted((tmp_path / "imgs").glob("*.png"))
    assert [p.name for p in images] == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert cv2.imread(str(images[0])).shape == (32, 32, 3)
    info = stylert("info", out)
    assert "input  z [batch, 32] float32" in info.stdout and "stylert.source_layout = rosinality" in info.stdout


def test_random_init_says_untrained(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "r.onnx"
    result = stylert("export", "generator", "--random-init", "--seed", "3", "--resolution", "8", "--channel-max", "8",
                     "--w-dim", "8", "--mapping-layers", "1", "--with-mapping", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "untrained" in result.stderr
    result = stylert("generate", out, "-o", tmp_path / "imgs")
    assert result.returncode == 0 and "untrained" in result.stderr


@pytest.mark.parametrize("args,match", [
    (["export", "generator", "--checkpoint", "missing.pt", "-o", "g.onnx"], "missing.pt: no such file"),
    (["export", "generator", "--checkpoint", FIXTURES / "nvlabs_32.pkl", "--layout", "rosinality", "-o", "g.onnx"],
     "pass --layout nvlabs"),
    (["export", "generator", "--random-init", "--resolution", "48", "-o", "g.onnx"], "power of two"),
    (["info", "missing.onnx"], "missing.onnx: no such model file"),
])
def test_errors_are_one_line(tmp_path, args, match):
    if args[0] == "export":
        pytest.importorskip("torch")
    result = stylert(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert match in error_line(result.stderr, args[0])
    assert not (tmp_path / "g.onnx").exists()


def test_generate_on_ws_model_explains(tmp_path, exported):
    result = stylert("generate", exported["nvlabs"], "-o", tmp_path)
    assert result.returncode == 2 and "--with-mapping" in result.stderr


def test_export_without_torch_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from stylert.cli import main\n"
            f"sys.exit(main(['export', 'generator', '--random-init', '-o', {str(tmp_path / 'g.onnx')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs torch" in result.stderr and "stylert[export]" in result.stderr


def test_serve_and_batch_without_ray_say_how_to_install(tmp_path, exported):
    for command in (["serve", str(exported["mapping"])], ["batch", str(tmp_path), "-o", str(tmp_path / "o"),
                                                          "--model", str(exported["mapping"])]):
        code = ("import sys; sys.modules['ray'] = None\n"
                f"from stylert.cli import main\nsys.exit(main({command!r}))\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "runs on Ray: pip install 'stylert[serve]'" in result.stderr


def test_a_broken_model_is_one_line_without_the_libraries_noise(tmp_path, astronaut):
    """Random bytes named .onnx: OpenVINO's and ONNX Runtime's own log lines stay out; the one error line names it."""
    import numpy as np

    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(3).bytes(3000))
    cv2.imwrite(str(tmp_path / "a.png"), astronaut[:, :, ::-1])
    result = stylert("retouch", tmp_path / "a.png", "-o", tmp_path / "out", "--model", tmp_path / "junk.onnx")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [error_line(result.stderr, "retouch")]
    assert f"{tmp_path / 'junk.onnx'}: not a loadable ONNX model" in result.stderr
    assert not (tmp_path / "out").exists()
