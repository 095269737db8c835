"""The benchmark scripts run end to end on tiny models and write what their docs promise."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")


def test_latency_benchmark_with_pipeline(retouch_models, astronaut, tmp_path):
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    out = tmp_path / "lat.json"
    result = subprocess.run([sys.executable, "benchmarks/latency.py", str(retouch_models["plain"]), "--iters", "2",
                             "--warmup", "1", "--pipeline", str(tmp_path / "a.png"), "--pipeline-iters", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for row in report["network"].values():
        assert "error" not in row, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["peak_rss_mb"] > 0 and row["cold_start_ms"] > 0
    assert "error" not in report["pipeline"], report["pipeline"]
    assert set(report["pipeline"]["stages"]) == {"decode", "detect", "align", "network", "paste", "encode"}
    assert "pytorch, weight form (reference)" in result.stdout and "vs ref" in result.stdout
    assert report["gflop_per_image"] > 0 and report["ceiling_gflops"] > 0 and "GFLOP/s ceiling" in result.stdout


def test_stream_fps_benchmark(restore_models, tmp_path):
    out = tmp_path / "fps.json"
    result = subprocess.run([sys.executable, "benchmarks/stream_fps.py", str(restore_models["sharp"]), "--frames", "6",
                             "--size", "256", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    res = json.loads(out.read_text())["results"]
    assert res["overlap"]["frames"] == res["sequential"]["frames"] == 6
    assert all(np.isfinite(r["fps"]) and r["fps"] > 0 for r in res.values())
