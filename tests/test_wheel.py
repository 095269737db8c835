"""What `pip install .` installs, as a newcomer gets it: the wheel is built from a copy of the sources, installed into
a clean virtual environment (no system site-packages, runtime dependencies only, no PyTorch), and then

- every file of the `stylert` and `stylert_export` packages is in the wheel and installed: modules, the MTCNN
  face detector's networks and NOTICE, the demo page of `stylert serve`, py.typed (a part missing from
  setup.py's `packages` or `package_data` fails here);
- `import stylert` works there while `import torch` does not;
- the installed `stylert retouch` retouches a real photo with the suite's tiny retoucher and writes the result.

Its own file: pytest-xdist's `--dist loadfile` gives it a worker of its own (it takes about a minute).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = {"stylert": ROOT / "sdk" / "stylert", "stylert_export": ROOT / "export" / "stylert_export"}
BUILD_FILES = ("setup.py", "README.md", "LICENSE")


def package_files() -> set[str]:
    """Every file of the packages as the wheel names it (stylert/faces/mtcnn/pnet.onnx, ...), caches left out."""
    files = set()
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in rel.parts and not any(p.startswith(".") for p in rel.parts):
                files.add("/".join((name, *rel.parts)))
    return files


def clean_env() -> dict[str, str]:
    """The environment without anything that would let the clean venv see this checkout or this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the sources (so no stale build/ folder of the checkout, and nothing written into it)."""
    src = out / "src"
    src.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, src / name)
    for folder in PACKAGES.values():
        shutil.copytree(folder, src / folder.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", src, "-w", out / "dist",
        cwd=out)
    wheels = sorted((out / "dist").glob("stylert-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_installs_without_torch_and_retouches_a_photo(tmp_path, retouch_models, astronaut):
    wheel = build_wheel(tmp_path)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files()
    assert {"stylert/faces/mtcnn/pnet.onnx", "stylert/faces/mtcnn/NOTICE", "stylert/serving/demo/index.html",
            "stylert/py.typed"} <= expected
    missing = sorted(expected - in_wheel)
    assert not missing, f"{wheel.name} lacks {len(missing)} file(s) of the sources (setup.py packages / package_data): " \
                        f"{missing}"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)  # no --system-site-packages: sees nothing installed here
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path, timeout=600)  # + runtime dependencies only

    probe = run(python, "-c", """if True:
        import importlib.util, json, sys
        from importlib.resources import files
        import stylert
        print(json.dumps({
            "stylert": stylert.__file__, "version": stylert.__version__, "prefix": sys.prefix,
            "torch": importlib.util.find_spec("torch") is not None, "torch_loaded": "torch" in sys.modules,
            "installed": sorted("stylert/" + "/".join(p.relative_to(files("stylert")).parts)
                                for p in __import__("pathlib").Path(str(files("stylert"))).rglob("*")
                                if p.is_file() and "__pycache__" not in p.parts),
        }))""", cwd=tmp_path)
    found = json.loads(probe.stdout)
    assert Path(found["stylert"]).is_relative_to(venv), f"imported {found['stylert']}, not the venv's copy"
    assert not found["torch"] and not found["torch_loaded"], "torch is importable in the clean venv"
    import stylert

    assert found["version"] == stylert.__version__
    not_installed = sorted({f for f in expected if f.startswith("stylert/")} - set(found["installed"]))
    assert not not_installed, f"installed without {not_installed}"
    no_torch = subprocess.run([str(python), "-c", "import torch"], cwd=tmp_path, env=clean_env(), capture_output=True,
                              text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    photo, out = tmp_path / "astronaut.png", tmp_path / "out" / "astronaut.png"
    assert cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    result = run(venv / "bin" / "stylert", "retouch", photo, "-o", out, "--model", retouch_models["plain"],
                 "--strength", "0.8", "--json", cwd=tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.get("error") is None and report["faces"], report  # the installed detector found the face
    image = cv2.imread(str(out))
    assert image is not None and image.shape == astronaut.shape, result.stderr
    assert "Traceback" not in result.stderr
