"""The CPU dry run of the GPU check (issue 28 part 3): benchmarks/gpu/check.sh --device cpu --quick runs every
stage's Python on the CPU kernel library with tiny shapes, so that a run on the GPU machine is not lost to a
Python error, a missing import or an unknown API. Also: a failing case is recorded and the run goes on, a stage killed by
its deadline leaves the earlier stages' results and a timed-out record, and the wheel splitter round-trips."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu" / "check.sh"
STAGES = ["env", "kernels", "layers", "networks", "sdk"]
TITLES = ["a. environment", "b. kernels vs float64", "c. modulated-conv layers", "d. whole networks (PyTorch)",
          "e. SDK on ONNX Runtime CUDA"]

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cpu_kernels():
    """`make test` builds kernels/ first; build the CPU reference library here too where it is missing."""
    lib = ROOT / "kernels" / "build" / "libstylert_kernels_cpu.so"
    if not lib.is_file():
        subprocess.run(["make", "-C", str(ROOT / "kernels"), "cpu"], check=True, capture_output=True)
    return lib


def run_check(out: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "STYLERT_GPU_CHECK_WORK": str(out.parent / f"{out.name}-work"),
            **env}
    full.pop("PYTHONPATH", None)  # check.sh sets its own: nothing pip-installed is needed
    return subprocess.run(["bash", str(CHECK), str(out), "--device", "cpu", "--quick"], capture_output=True, text=True,
                          env=full, timeout=400)


def records(out: Path) -> dict[str, dict]:
    return {s: json.loads((out / f"{s}.json").read_text()) for s in STAGES if (out / f"{s}.json").is_file()}


def test_dry_run_every_stage(tmp_path, cpu_kernels):
    out = tmp_path / "check"
    proc = run_check(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(out)
    assert set(recs) == set(STAGES), proc.stdout[-3000:]
    for stage, rec in recs.items():
        status = rec["status"]
        assert status == "ok" or status.startswith("skipped: "), (stage, status, [c for c in rec["cases"]
                                                                              if c["status"] == "failed"])
        assert rec["cases"], stage
        assert rec["wall_s"] is not None and rec["exit_code"] == 0
        for case in rec["cases"]:  # a skip always says why; what needs a GPU says "skipped on cpu"
            if case["status"] == "skipped":
                assert case["reason"].startswith("skipped"), case
    kernels = recs["kernels"]["cases"]
    names = " ".join(c["name"] for c in kernels)
    for kernel in ("modulate", "demod_coefficients", "demod_bias_act", "bafs_blend", "half_to_float", "modulated_conv2d",
                   "fused_modulated_conv2d"):
        assert kernel in names
    fused = [c for c in kernels if c["name"].startswith("fused_modulated_conv2d ")]
    assert {c["name"].split()[1] for c in fused} == {"fp32", "fp16"} and any(" up2" in c["name"] for c in fused)
    assert {c["name"].split()[1] for c in kernels if c["name"].startswith("modulate ")} == {"fp32", "fp16"}
    for tool in ("memcheck", "racecheck"):
        assert any(f"compute-sanitizer {tool}" in c["name"] and "skipped on cpu" in c.get("reason", "") for c in kernels)
        assert any(c["name"].startswith(f"{tool} child") and c["status"] == "ok" and c["runs"] > 0 for c in kernels)
    layers = recs["layers"]["cases"]
    assert {c.get("impl") for c in layers} >= {"portable", "stylert fused", "stylert composed", "stylert tensor-core",
                                               "torch.compile"}
    networks = {c.get("network") for c in recs["networks"]["cases"]} - {None}
    assert len(networks) == 6, networks
    assert {c.get("config") for c in recs["networks"]["cases"]} >= {"eager fp32", "eager fp16", "cuda graph fp16",
                                                                    "torch.compile fp16"}
    sdk = " ".join(c["name"] for c in recs["sdk"]["cases"])
    for step in ("export retoucher", "export EXE-GAN", "stylert bench", "stylert retouch"):
        assert step in sdk
    summary = (out / "summary.md").read_text()
    assert summary in proc.stdout
    for title in TITLES:
        assert f"| {title} | " in summary


def test_failed_case_and_timed_out_stage_keep_the_rest(tmp_path, cpu_kernels):
    """A case that raises is recorded as failed and its stage goes on; a stage killed by its deadline (1 s) is
    recorded as timed out; the stages before and after it keep or write their results, and the table lists all."""
    out = tmp_path / "check"
    proc = run_check(out, STYLERT_GPU_CHECK_STAGES="kernels layers env", STYLERT_GPU_CHECK_FAIL="kernels:modulate fp32",
                     STYLERT_GPU_CHECK_DEADLINE_LAYERS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(out)
    kernels = recs["kernels"]
    assert kernels["status"].startswith("failed")
    failed = [c for c in kernels["cases"] if c["status"] == "failed"]
    assert failed and all(c["name"].startswith("modulate fp32") and "InjectedFailure" in c["error"] for c in failed)
    after = kernels["cases"].index(failed[-1])
    assert any(c["status"] == "ok" for c in kernels["cases"][after + 1:])  # the stage went on
    assert recs["layers"]["status"] == "timed out after 1s deadline" and recs["layers"]["exit_code"] in (124, 137)
    assert recs["env"]["status"] == "ok"  # a later stage still ran
    summary = (out / "summary.md").read_text()
    assert "timed out" in summary and "failed (" in summary and "| d. whole networks (PyTorch) | not run |" in summary


def test_layer_goal_figures_keep_the_worst_ratio(tmp_path):
    """Stage c's goal figures (the dry run's layers are all under 64^2, so it never writes them): the layers from
    64^2 to 1024^2 count, and a figure keeps the smallest ratio seen."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        import check_common
        import stage_layers
    finally:
        sys.path.pop(0)
    assert [stage_layers._in_goal((64, 64, s, up, 3, True)) for s, up in [(32, 1), (32, 2), (64, 1), (512, 2),
                                                                          (1024, 1)]] == [False, True, True, True, True]
    stage = check_common.Stage("layers", check_common.parse_args(["--out", str(tmp_path), "--device", "cpu"]))
    for ratio in (1.5, 1.2, 1.4):
        stage_layers._worst(stage, "worst", ratio)
    assert json.loads((tmp_path / "layers.json").read_text())["figures"]["worst"] == 1.2


def test_wheel_parts_round_trip(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        import wheel_parts
    finally:
        sys.path.pop(0)
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(os.urandom(10_000))
    manifest = wheel_parts.split(wheel, tmp_path / "parts", size=3_000)
    assert len(manifest["parts"]) == 4 and all((tmp_path / "parts" / p["file"]).is_file() for p in manifest["parts"])
    store = tmp_path / "store"
    for i in range(4):  # one call per part
        wheel_parts.stash(_only(tmp_path / "parts", i, tmp_path / f"carry{i}"), store)
    assert wheel_parts.assemble(store).read_bytes() == wheel.read_bytes()
    (store / f"{wheel.name}.002").write_bytes(b"x")
    with pytest.raises(SystemExit, match="sha256"):
        wheel_parts.assemble(store)


def _only(parts: Path, i: int, carry: Path) -> Path:
    """What one call carries: the folder part-i alone."""
    import shutil

    shutil.copytree(parts / f"part-{i}", carry / f"part-{i}")
    return carry
