"""The benchmark scripts run end to end on tiny models and write what their docs promise."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from stylert.tools.graph_cost import graph_cost  # noqa: E402


def test_latency_benchmark_with_pipeline(retouch_models, astronaut, tmp_path):
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    out = tmp_path / "lat.json"
    result = subprocess.run([sys.executable, "benchmarks/latency.py", str(retouch_models["plain"]), "--iters", "2",
                             "--warmup", "1", "--pipeline", str(tmp_path / "a.png"), "--pipeline-iters", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"schema", "machine", "model", "batch", "gflop_per_image", "weight_bytes", "ceiling_gflops",
                           "network", "pipeline"}
    assert report["schema"] == "stylert.bench.latency/1" and report["batch"] == 1
    assert report["model"]["stylert.call"] == "retouch"
    assert "pytorch weight" in report["network"] and "onnxruntime-cpu" in report["network"]  # reference beside optimized
    for name, row in report["network"].items():
        assert "error" not in row, (name, row)
        assert {"cold_start_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs", "peak_rss_mb"} <= set(row)
        assert row["runs"] == 2 and row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["mean_ms"] == pytest.approx(row["p50_ms"], rel=1e-12)  # two runs: their mean is their median
    pipeline = report["pipeline"]
    assert "error" not in pipeline, pipeline
    assert set(pipeline["stages"]) == {"decode", "detect", "align", "network", "paste", "encode"}
    assert all(s["runs"] == 2 and s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] for s in pipeline["stages"].values())
    cost = graph_cost(retouch_models["plain"])
    assert report["gflop_per_image"] == cost.gflops and report["weight_bytes"] == cost.weight_bytes
    assert isinstance(report["ceiling_gflops"], float) and "GFLOP/s ceiling" in result.stdout
    assert "pytorch, weight form (reference)" in result.stdout and "vs ref" in result.stdout


def test_stream_fps_benchmark(restore_models, tmp_path):
    out = tmp_path / "fps.json"
    result = subprocess.run([sys.executable, "benchmarks/stream_fps.py", str(restore_models["sharp"]), "--frames", "6",
                             "--size", "256", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["schema"] == "stylert.bench.stream/1" and report["model"]["stylert.call"] == "restore"
    res = report["results"]
    assert set(res) == {"overlap", "sequential"}
    assert res["overlap"]["frames"] == res["sequential"]["frames"] == 6  # every frame delivered, in both modes
    for r in res.values():
        assert set(r) == {"frames", "fps", "latency_p50_ms", "latency_p99_ms", "detections"}
        assert np.isfinite(r["fps"]) and r["latency_p50_ms"] <= r["latency_p99_ms"] and 1 <= r["detections"] <= 6


def test_phone_matrix_runs_the_export_and_tabulates_its_reports(tmp_path):
    """benchmarks/phone_matrix.py on one call and target: the export ran (its .ort beside its report), and the row
    and the table carry what the report says; a precision the target does not offer is not attempted."""
    result = subprocess.run([sys.executable, "benchmarks/phone_matrix.py", "--out", str(tmp_path / "out"),
                             "--calls", "generator", "--targets", "ort-mobile", "--precisions", "fp32", "int8",
                             "--json", str(tmp_path / "m.json"), "--markdown", str(tmp_path / "m.md")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [(r["call"], r["target"], r["precision"], r["ok"]) for r in rows] == [("generator", "ort-mobile", "fp32", True)]
    report = json.loads((tmp_path / "out" / "ort-mobile-fp32" / "generator" / "generator.ort.json").read_text())
    assert rows[0]["files"]["generator.ort"]["rel"] == report["rel"] < 1e-4
    nnapi = report["partitions"]["NNAPI"]
    assert f"NNAPI {nnapi['supported']}/{nnapi['nodes']} in {nnapi['partitions']}" in (tmp_path / "m.md").read_text()


def test_vsp_fp16_weights_rounds_one_part_at_a_time(tmp_path):
    """benchmarks/vsp_fp16_weights.py on a tiny VSP restorer: an error for float32 alone, for each part's weights in
    float16 and for all of them, each finite; rounding weights moves the output further than float32 round-off."""
    result = subprocess.run([sys.executable, "benchmarks/vsp_fp16_weights.py", "--resolution", "32", "--channel-base",
                             "2048", "--encoder-units", "1,1,1,1", "--encoder-size", "16", "--json",
                             str(tmp_path / "v.json")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    errors = json.loads((tmp_path / "v.json").read_text())["relative_error"]
    assert list(errors) == ["none (float32 round-off)", "encoder", "bank", "diffuser", "net",
                            "encoder + bank + diffuser + net"]
    assert all(np.isfinite(e) for e in errors.values())
    assert errors["encoder + bank + diffuser + net"] > 10 * errors["none (float32 round-off)"]


def test_winograd_benchmark_times_both_flavours_on_the_cpu_backends(tmp_path):
    """benchmarks/winograd.py on a tiny generator with 256 channels at 16x16: both graphs exported (the winograd one
    holding the form), each timed on ONNX Runtime (and OpenVINO where installed) with p50, p99, cold start and peak
    memory, and the two outputs equal within round-off."""
    out = tmp_path / "w.json"
    result = subprocess.run([sys.executable, "benchmarks/winograd.py", "generator", "--resolution", "16",
                             "--channel-base", "4096", "--warmup", "0", "--duration", "0", "--out", str(tmp_path),
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    models = report["bench"]["models"]
    assert [m["metadata"]["stylert.flavor"] for m in models] == ["portable", "winograd"]
    for m in models:
        assert {r["backend"] for r in m["rows"]} >= {"onnxruntime-cpu"}
        for row in m["rows"]:
            assert "error" not in row, row
            assert row["runs"] >= 5 and row["p50_ms"] <= row["p99_ms"] and row["cold_start_ms"] > 0
            assert row["peak_rss_mb"] > 0
    assert 0 < report["winograd_vs_portable_rel"] < 1e-5
    assert "winograd  onnxruntime-cpu" in result.stdout and "vs portable" in result.stdout
