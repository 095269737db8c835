"""`stylert bench` as a user runs it: table, JSON (schema stylert.bench/1), plot, reference ratio, per-row errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from stylert.tools.bench import percentiles  # noqa: E402
from stylert.tools.graph_cost import graph_cost  # noqa: E402


def test_percentiles_of_a_known_list():
    """Linear interpolation between order statistics (numpy's default), whatever the order the runs came in."""
    runs = [float(v) for v in np.random.default_rng(0).permutation(np.arange(1, 101))]
    stats = percentiles(runs)
    assert stats == {"p50_ms": 50.5, "p90_ms": pytest.approx(90.1), "p99_ms": pytest.approx(99.01), "mean_ms": 50.5,
                     "min_ms": 1.0, "runs": 100}
    assert percentiles([7.0] * 5) == {"p50_ms": 7.0, "p90_ms": 7.0, "p99_ms": 7.0, "mean_ms": 7.0, "min_ms": 7.0,
                                      "runs": 5}
    two = percentiles([10.0, 20.0])
    assert (two["p50_ms"], two["p90_ms"], two["p99_ms"]) == (15.0, pytest.approx(19.0), pytest.approx(19.9))


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
    assert set(report) == {"schema", "machine", "models", "ceilings", "loops"} and report["loops"] == 1
    assert report["schema"] == "stylert.bench/1" and report["machine"]["cores"] >= 1
    assert {"cpu", "cores", "python", "onnxruntime", "platform", "cpu_flags"} <= set(report["machine"])
    model = report["models"][0]
    assert model["path"] == str(retouch_models["plain"]) and model["metadata"]["stylert.call"] == "retouch"
    cost = graph_cost(retouch_models["plain"])  # the work is the graph's, counted the same way
    assert model["gflop_per_image"] == cost.gflops and model["weight_bytes"] == cost.weight_bytes
    assert set(model["pipeline"]["stages"]) >= {"detect", "align", "network", "paste"}
    assert set(model["pipelines"]) == {"onnxruntime-cpu", "openvino"} and model["pipeline"] == model["pipelines"]["onnxruntime-cpu"]
    assert all(p["faces"] == 1 for p in model["pipelines"].values())
    for pipe in model["pipelines"].values():
        for stats in [*pipe["stages"].values(), pipe["total"]]:
            assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
            assert stats["runs"] == pipe["total"]["runs"] >= 1
        assert pipe["total"]["min_ms"] >= max(stats["min_ms"] for stats in pipe["stages"].values())
    rows = {(r["backend"], r["batch"]): r for r in model["rows"]}
    assert set(rows) == {(b, n) for b in ("onnxruntime-cpu", "openvino", "tensorrt", "torch") for n in (1, 2)}
    measured = {"backend", "batch", "cold_start_ms", "cold_load_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs",
                "images_per_s", "peak_rss_mb", "device_mb", "gflops", "vs_reference"}
    for n in (1, 2):
        ref = rows[("torch", n)]  # the reference row beside the optimized ones, at the same batch
        assert set(ref) == measured and ref["vs_reference"] == 1
        for backend in ("onnxruntime-cpu", "openvino"):
            row = rows[(backend, n)]
            assert set(row) == measured | {"precision", "precision_reason", "warm_start_ms", "error_vs_f32",
                                           "ceiling_fraction", "warm_load_ms"}, row
            assert row["precision"] == "f32"  # openvino named: f32
            assert 0 < row["cold_load_ms"] < row["cold_start_ms"] and 0 < row["warm_load_ms"] < row["warm_start_ms"]
            assert row["error_vs_f32"]["max_levels"] <= 1  # against ONNX Runtime f32 on the 8-bit scale
            assert row["ceiling_fraction"] == pytest.approx(row["gflops"] / report["ceilings"][backend], rel=1e-12)
            assert row["runs"] >= 5 and row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
            assert row["min_ms"] <= row["mean_ms"] and row["device_mb"] is None  # device memory: CUDA backends only
            assert row["vs_reference"] == pytest.approx(ref["p50_ms"] / row["p50_ms"], rel=1e-12)
            assert row["images_per_s"] == pytest.approx(n * 1000 / row["p50_ms"], rel=1e-12)
            assert row["gflops"] == pytest.approx(cost.gflops * n / (row["p50_ms"] / 1000), rel=1e-12)
        assert set(rows[("tensorrt", n)]) == {"backend", "batch", "error"}
        assert "stylert build-engine" in rows[("tensorrt", n)]["error"]
    ceilings = report["ceilings"]  # measured on ONNX Runtime's CPU provider and OpenVINO
    assert set(ceilings) == {"onnxruntime-cpu", "openvino", "tensorrt", "torch"}
    assert isinstance(ceilings["onnxruntime-cpu"], float) and isinstance(ceilings["openvino"], float)
    assert ceilings["tensorrt"] is ceilings["torch"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "vs ref" in result.stdout and "matmul ceiling" in result.stdout and "model load alone" in result.stdout and "whole photo on openvino" in result.stdout


@pytest.mark.parametrize("args,match", [(["--backend", "gpu-magic"], "unknown backend"), (["--batch", "0"], "batch sizes")])
def test_bench_bad_arguments(retouch_models, args, match):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "bench", str(retouch_models["plain"]), *args, "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and match in result.stderr and "Traceback" not in result.stderr
