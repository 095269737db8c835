"""The TensorRT path: what can be checked without TensorRT here, and the checks that need it (skipped)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stylert
from stylert.errors import ModelError
from stylert.trt_build import CalibrationBatches, EngineOptions, check_engine_metadata

ROOT = Path(__file__).parents[1]


def real_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


NEEDS_TRT = pytest.mark.skipif(not real_tensorrt(), reason="TensorRT's builder cannot be installed in this workplace "
                               "(PyPI serves only stubs) and no GPU is attached: run on a GPU machine with tensorrt")


def test_typecheck_against_tensorrt_stubs():
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                             "sdk/stylert/trt_build.py", "sdk/stylert/backends/tensorrt.py"], cwd=ROOT, capture_output=True,
                            text=True)
    assert "Success" in result.stdout, result.stdout + result.stderr
    import importlib.util
    assert importlib.util.find_spec("tensorrt") is not None, "tensorrt-stubs must be installed for a real check"


def test_engine_metadata_checks(tmp_path):
    meta = {"engine.tensorrt": "10.13.0", "engine.compute_capability": "9.0", "engine.gpu": "NVIDIA H100"}
    check_engine_metadata(meta, "m.engine", "10.13.0", "9.0")
    with pytest.raises(ModelError, match="built with TensorRT 10.13.0, this is TensorRT 10.14.0"):
        check_engine_metadata(meta, "m.engine", "10.14.0", "9.0")
    check_engine_metadata({**meta, "engine.version_compatible": True}, "m.engine", "10.14.0", "9.0")
    with pytest.raises(ModelError, match="built for NVIDIA H100 \\(compute 9.0\\), this GPU is compute 8.7"):
        check_engine_metadata(meta, "m.engine", "10.13.0", "8.7")


def test_engine_options_are_validated(tmp_path):
    with pytest.raises(ModelError, match="1 <= min <= opt <= max"):
        EngineOptions(min_batch=4, opt_batch=2).validate()
    with pytest.raises(ModelError, match="--calib"):
        EngineOptions(int8=True).validate()
    with pytest.raises(ModelError, match="no such plugin library"):
        EngineOptions(plugins=[str(tmp_path / "libnone.so")]).validate()


def test_calibration_batches(tmp_path, astronaut):
    from PIL import Image
    for i in range(5):
        Image.fromarray(np.roll(astronaut, i * 10, axis=1)).save(tmp_path / f"{i}.png")
    batches = list(CalibrationBatches(tmp_path, {"image": (-1, 3, 32, 32), "strength": (-1,)}, 32, 2))
    assert len(batches) == 2  # 5 images, batches of 2: the incomplete tail is left out
    assert batches[0]["image"].shape == (2, 3, 32, 32) and batches[0]["image"].dtype == np.float32
    assert -1 <= batches[0]["image"].min() and batches[0]["image"].max() <= 1
    assert np.all(batches[0]["strength"] == 1.0)
    with pytest.raises(ModelError, match="`image` input"):
        CalibrationBatches(tmp_path, {"ws": (-1, 8, 32)}, 32, 2)
    with pytest.raises(ModelError, match="need at least one batch"):
        CalibrationBatches(tmp_path, {"image": (-1, 3, 32, 32)}, 32, 8)


def test_engine_files_go_to_the_tensorrt_backend(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(ModelError, match="m.engine.json beside it"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text("{broken")
    with pytest.raises(ModelError, match="unreadable engine metadata"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"stylert.format": "1", "stylert.call": "generator"}))
    with pytest.raises(ModelError, match="for 'generator', not 'retouch'"):
        stylert.Retoucher(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"stylert.format": "1", "stylert.call": "retouch"}))
    if not real_tensorrt():
        with pytest.raises(ModelError, match="TensorRT is not installed"):
            stylert.Retoucher(engine)


@pytest.mark.skipif(real_tensorrt(), reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_says_so(retouch_models, tmp_path):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "build-engine", str(retouch_models["plain"]), "-o",
                             str(tmp_path / "r.engine")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "TensorRT is not installed" in result.stderr and not (tmp_path / "r.engine").exists()


@NEEDS_TRT
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnx_runtime(retouch_models, astronaut, tmp_path, precision):
    from stylert.trt_build import build_engine
    engine = tmp_path / f"r_{precision}.engine"
    build_engine(retouch_models["plain"], engine, EngineOptions(fp16=precision == "fp16", max_batch=4))
    on_trt = stylert.Retoucher(engine).retouch(astronaut, channels="rgb").image
    on_ort = stylert.Retoucher(retouch_models["plain"], ["cpu"]).retouch(astronaut, channels="rgb").image
    assert np.abs(on_trt.astype(int) - on_ort.astype(int)).max() <= (2 if precision == "fp32" else 8)
