"""`stylert bench` as a user runs it: table, JSON (schema stylert.bench/1), plot, reference ratio, per-row errors."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


def test_bench_end_to_end(retouch_models, astronaut, tmp_path):
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "bench", str(retouch_models["plain"]), "--backend",
                             "onnxruntime-cpu,openvino,tensorrt", "--batch", "1,2", "--reference", "--duration", "0.2",
                             "--warmup", "0.1", "--pipeline", str(tmp_path / "a.png"), "--json", str(out), "--plot",
                             str(png), "-q"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["schema"] == "stylert.bench/1" and report["machine"]["cores"] >= 1
    model = report["models"][0]
    assert model["gflop_per_image"] > 0 and set(model["pipeline"]["stages"]) >= {"detect", "align", "network", "paste"}
    assert set(model["pipelines"]) == {"onnxruntime-cpu", "openvino"}
    assert all(p["faces"] == 1 for p in model["pipelines"].values())
    rows = {(r["backend"], r["batch"]): r for r in model["rows"]}
    assert set(rows) == {(b, n) for b in ("onnxruntime-cpu", "openvino", "tensorrt", "torch") for n in (1, 2)}
    for n in (1, 2):
        ort, ref = rows[("onnxruntime-cpu", n)], rows[("torch", n)]
        assert ort["runs"] >= 5 and 0 < ort["p50_ms"] <= ort["p90_ms"] <= ort["p99_ms"] and ort["cold_start_ms"] > 0
        assert ort["vs_reference"] == pytest.approx(ref["p50_ms"] / ort["p50_ms"]) and ref["vs_reference"] == 1
        assert "stylert build-engine" in rows[("tensorrt", n)]["error"]
        assert "error" not in rows[("openvino", n)] and rows[("openvino", n)]["p50_ms"] > 0
    assert report["ceilings"]["onnxruntime-cpu"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "vs ref" in result.stdout and "matmul ceiling" in result.stdout and "whole photo on openvino" in result.stdout


@pytest.mark.parametrize("args,match", [(["--backend", "gpu-magic"], "unknown backend"), (["--batch", "0"], "batch sizes")])
def test_bench_bad_arguments(retouch_models, args, match):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "bench", str(retouch_models["plain"]), *args, "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and match in result.stderr and "Traceback" not in result.stderr
