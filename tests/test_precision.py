"""OpenVINO's precision chosen per model and CPU (runtime/precision.py): the error measurement on hand-computed
arrays, the bound, the choice with the CPU's flags and the measurement passed in (so the path of a CPU with native
bf16 runs on every CPU), the verdict cache on real files, and the real OpenVINO backend on this machine's CPU,
whichever kind it is."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from stylert import BackendUnavailable, InputError, open_model
from stylert.calls.registry import open_call
from stylert.runtime import precision as gate
from stylert.runtime.feeds import feeds_for
from stylert.runtime.model import TensorSpec, cpu_flags

pytest.importorskip("openvino")


def at_levels(values) -> np.ndarray:
    """float32 images whose 8-bit levels (to_uint8's rounding) are exactly `values`."""
    return (np.asarray(values, np.float64) / 127.5 - 1.0).astype(np.float32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty stylert cache folder for the test, and no precision pinned from outside."""
    monkeypatch.setenv("STYLERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STYLERT_PRECISION", raising=False)
    monkeypatch.delenv("OV_CACHE_DIR", raising=False)
    return tmp_path / "cache"


def test_output_error_against_a_hand_computed_case():
    ref = np.full((1, 3, 4, 4), 100.0)
    got = ref.copy()
    got[0, 1, 2, 3] += 3  # one channel of one pixel 3 levels up
    got[0, 0, 0, 0] -= 1  # another 1 level down
    # 48 values, squared differences 9 + 1: MSE 10/48, PSNR 10*log10(255^2 * 48 / 10) = 10*log10(312120) = 54.943 dB
    err = gate.output_error(at_levels(ref), at_levels(got))
    assert err.max_levels == 3 and err.psnr_db == pytest.approx(54.9432, abs=1e-3)
    region = np.zeros((1, 1, 4, 4))
    region[0, 0, 0, 0] = 1  # only the pixel 1 level off: 3 values, MSE 1/3, PSNR 10*log10(255^2 * 3) = 52.902 dB
    err = gate.output_error(at_levels(ref), at_levels(got), region)
    assert err.max_levels == 1 and err.psnr_db == pytest.approx(52.9020, abs=1e-3)
    assert gate.output_error(at_levels(ref), at_levels(ref)) == gate.OutputError(0, math.inf)
    # the 8-bit scale: beyond [-1, 1] both clip to 0/255, and differences within a level's rounding are no error
    assert gate.output_error(np.full((1, 3, 2, 2), 1.5, np.float32), np.full((1, 3, 2, 2), 3.0, np.float32)).max_levels == 0
    assert gate.output_error(at_levels(ref) + 0.001, at_levels(ref)).max_levels == 0
    with pytest.raises(ValueError, match="region is empty"):
        gate.output_error(at_levels(ref), at_levels(got), np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("error,chosen", [
    (gate.OutputError(4, 45.0), "bf16"),  # on the bound: in
    (gate.OutputError(5, 60.0), "f32"),  # one pixel too far
    (gate.OutputError(1, 44.9), "f32"),  # too noisy overall
    (gate.OutputError(0, math.inf), "bf16"),
    (None, "f32"),  # no image output to measure on
])
def test_the_bound(error, chosen):
    choice = gate.decide(error)
    assert choice.precision == chosen and choice.error == error
    assert ("within the bound" in choice.reason) == (chosen == "bf16")


def test_no_native_bf16_measures_nothing_and_keeps_f32(tmp_path):
    def measure():
        raise AssertionError("nothing is measured without native bf16")

    verdict = tmp_path / "v.json"
    for flags in ({"avx2", "fma"}, {"avx2", "avx512f", "avx512_vnni", "amx_int8"}):
        choice = gate.choose(flags, measure, verdict)
        assert choice.precision == "f32" and "avx512_bf16 or amx_bf16 not in its flags" in choice.reason
    assert not verdict.exists()


def test_native_bf16_measures_once_then_reads_the_verdict(tmp_path):
    calls = []

    def measure(error):
        calls.append(error)
        return error

    verdict = tmp_path / "sub" / "v.json"
    old = os.umask(0o027)
    try:
        first = gate.choose({"avx512_bf16"}, lambda: measure(gate.OutputError(2, 58.0)), verdict)
    finally:
        os.umask(old)
    assert first.precision == "bf16" and calls == [gate.OutputError(2, 58.0)]
    assert verdict.stat().st_mode & 0o777 == 0o640  # the user's umask
    again = gate.choose({"amx_bf16"}, lambda: measure(gate.OutputError(9, 20.0)), verdict)
    assert again == first and len(calls) == 1  # the verdict, not a second measurement
    verdict.write_text("{not json")  # a damaged verdict is measured again, and replaced
    third = gate.choose({"amx_bf16"}, lambda: measure(gate.OutputError(9, 20.0)), verdict)
    assert third.precision == "f32" and len(calls) == 2
    assert json.loads(verdict.read_text())["precision"] == "f32"


def test_cache_key_follows_file_version_cpu_and_candidate(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: its first and last MiB are hashed
    key = lambda **kw: gate.cache_key(model, **{"openvino": "2026.4.1", "cpu": "AMD EPYC", "candidate": "bf16", **kw})  # noqa: E731
    base = key()
    assert key() == base
    assert key(openvino="2026.5.0") != base
    assert key(cpu="Intel(R) Xeon(R) Platinum 8480+") != base
    assert key(candidate="int8+bf16") != base
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    touched = key()
    assert touched != base
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF  # new weights at the end, same size, the modification time put back
    model.write_bytes(bytes(data))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert key() != touched
    assert gate.decision_file(base, tmp_path).parent == tmp_path / "precision"


def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("STYLERT_CACHE", str(tmp_path / "mine"))
    assert gate.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("STYLERT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gate.cache_root() == tmp_path / "xdg" / "stylert"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gate.cache_root() == tmp_path / "home" / ".cache" / "stylert"


def test_precision_values_are_checked(exported, monkeypatch, cache):
    with pytest.raises(InputError, match="precision: expected auto, f32, bf16, got 'fp8'"):
        open_model(exported["nvlabs"], precision="fp8")
    monkeypatch.setenv("STYLERT_PRECISION", "half")
    with pytest.raises(InputError, match="^STYLERT_PRECISION: expected auto, f32, bf16, got 'half'"):  # named
        open_model(exported["nvlabs"])
    monkeypatch.setenv("STYLERT_PRECISION", "f32")
    assert open_model(exported["nvlabs"], "openvino").precision == "f32"
    with pytest.raises(InputError, match="contradicts backend openvino-bf16"):
        open_model(exported["nvlabs"], "openvino-bf16")
    ort = open_model(exported["nvlabs"], "cpu", precision="auto")
    assert ort.describe()["precision"] == "f32" and ort.describe()["backend"] == "onnxruntime-cpu"


def _compiled_precision(model) -> str:
    request = next(iter(model.compiled.values()))[0]
    return str(request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT"))


def test_auto_on_this_cpu(retouch_models, cache):
    """The default: measured where this CPU has native bf16 (then cached), f32 with nothing measured where not."""
    model = open_model(retouch_models["plain"])
    if model.backend != "openvino":
        pytest.skip("OpenVINO is not the automatic backend here (not x86-64)")
    choice, verdicts = model.precision_choice, list((cache / "precision").glob("*.json"))
    assert model.describe()["precision"] == choice.precision == model.config["INFERENCE_PRECISION_HINT"]
    assert choice.precision in _compiled_precision(model).lower().replace("bfloat16", "bf16").replace("float32", "f32")
    if not gate.native_bf16(cpu_flags()):
        assert choice == gate.Choice("f32", f"{gate.no_bf16_reason()}: f32") and verdicts == []
        return
    assert choice.error is not None and gate.decide(choice.error) == choice and len(verdicts) == 1
    assert len(model.compiled) == 1  # the measurement's other precision is not kept
    verdicts[0].write_text(json.dumps(gate.Choice("f32", "read from the cache").describe()))
    assert open_model(retouch_models["plain"]).precision_choice.reason == "read from the cache"


def test_the_bf16_path_on_any_cpu(retouch_models, monkeypatch, cache):
    """As on a CPU with AMX: the real measurement of the retoucher in f32 and bf16 (emulated where the CPU lacks
    bf16), decided by the bound, cached."""
    from stylert.runtime import openvino as ovb

    monkeypatch.setattr(ovb, "cpu_flags", lambda: {"avx2", "avx512f", "amx_bf16", "amx_int8"})
    model = open_model(retouch_models["plain"], "openvino", precision="auto")
    choice = model.precision_choice
    assert choice.error is not None and gate.decide(choice.error) == choice
    assert model.config["INFERENCE_PRECISION_HINT"] == choice.precision
    assert len(list((cache / "precision").glob("*.json"))) == 1


def test_what_is_measured():
    """The image output (an encoder's codes have no 8-bit scale: such a graph stays f32) and the region a call writes."""
    image, codes = TensorSpec("image", np.float32, (None, 3, 64, 64)), TensorSpec("codes", np.float32, (None, 18, 512))
    assert gate.image_output([codes, image]) == 1 and gate.image_output([codes]) is None
    feeds = feeds_for({"stylert.call": "inpaint", "stylert.method": "grig", "stylert.resolution": "32",
                       "stylert.noise_size": "16"}, 1, seed=2)
    region = gate.written_region(feeds)
    assert region is feeds["mask"] and region.sum() == 16 * 16 and region[0, 0, 8:24, 8:24].all()
    assert gate.written_region({"image": feeds["image"]}) is None


def test_bf16_pinned_without_native_bf16_is_one_line(exported, monkeypatch, cache):
    from stylert.runtime import openvino as ovb

    monkeypatch.setattr(ovb, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(BackendUnavailable, match=r"no native bf16 \(avx512_bf16 or amx_bf16 not in its flags\)"):
        open_model(exported["nvlabs"], precision="bf16")
    monkeypatch.setenv("STYLERT_PRECISION", "bf16")
    with pytest.raises(BackendUnavailable, match="avx512_bf16 or amx_bf16"):
        open_model(exported["nvlabs"])
    monkeypatch.setenv("STYLERT_PRECISION", "auto")
    model = open_model(exported["nvlabs"])  # auto on the same CPU: f32, nothing measured
    assert model.precision == "f32" and "not in its flags" in model.precision_choice.reason


def test_cli_precision(exported, cache):
    """`stylert info` reports the precision and why; --precision bf16 runs where the CPU has native bf16 and is one
    error line naming the flags where it has not."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "stylert.cli", "info", str(exported["nvlabs"]), *a],  # noqa: E731
                                    capture_output=True, text=True, env={**os.environ, "STYLERT_CACHE": str(cache)})
    result = run("--precision", "f32")
    assert result.returncode == 0 and "  precision f32: pinned" in result.stdout
    result = run("--precision", "bf16", "--providers", "openvino")
    if gate.native_bf16(cpu_flags()):
        assert result.returncode == 0 and "  precision bf16: pinned" in result.stdout
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("stylert info: error: ") and "avx512_bf16 or amx_bf16" in result.stderr


def test_openvino_blobs_go_to_the_cache_folder(exported, cache):
    open_model(exported["nvlabs"], "openvino")
    assert any((cache / "openvino").iterdir())


def test_replicas_and_actors_get_one_settled_choice(retouch_models, tmp_path, monkeypatch, cache):
    """`stylert serve` and `stylert batch` decide once in the driver and pin the choice for every worker."""
    pytest.importorskip("ray")
    from stylert.runtime import openvino as ovb
    from stylert.serving import cluster

    path = retouch_models["plain"]
    assert cluster.settle_precision(path, None, "f32") == "f32"  # pinned: passed on, nothing opened
    assert cluster.settle_precision(path, "cpu", None) is None  # a named backend keeps its own default
    assert cluster.settle_precision(tmp_path, None, None) is None  # a style pack: each graph its own verdict
    monkeypatch.setattr(cluster, "cpu_flags", lambda: {"avx2"})
    assert cluster.settle_precision(path, None, None) is None  # no native bf16: every worker's auto is f32 unmeasured
    for module in (cluster, ovb):
        monkeypatch.setattr(module, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    settled = cluster.settle_precision(path, None, None)
    assert settled in ("f32", "bf16") and settled == open_model(path).precision  # the cached verdict
    monkeypatch.setenv("STYLERT_PRECISION", "f32")  # a worker runs what the driver settled, whatever its own default
    assert open_call(path, None, precision=settled).model.precision == settled


def test_an_int8_graph_passes_the_same_gate(retouch_models, astronaut, tmp_path, monkeypatch, cache):
    """`stylert quantize`'s graph on precision auto: measured against its f32 source beside it (float part in bf16
    where the CPU has it, and as on a CPU with AMX), kept within the bound, else its source runs; without the source
    beside it, it runs as given."""
    import shutil

    from PIL import Image

    from stylert.runtime import openvino as ovb
    from stylert.tools.quantize import quantize

    (tmp_path / "calib").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "calib" / "a.png")
    source = tmp_path / "r.onnx"
    shutil.copy(retouch_models["plain"], source)
    int8 = tmp_path / "r.int8.onnx"
    said: list[str] = []
    quantize(source, tmp_path / "calib", int8, max_images=1, log=said.append)
    assert said[-1].startswith("on this CPU with OpenVINO: ") and "its f32 source" in said[-1]  # the gate's verdict
    assert open_model(int8, "cpu").describe()["precision"] == "int8"
    amx = {"avx2", "avx512f", "amx_bf16", "amx_int8"}
    for flags in [cpu_flags()] + ([] if gate.native_bf16(cpu_flags()) else [amx]):  # and as on a Xeon with AMX
        monkeypatch.setattr(ovb, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setenv("STYLERT_CACHE", str(cache if flags is not amx else tmp_path / "amx"))  # quantize's verdict
        model = open_model(int8)
        choice, part = model.precision_choice, "bf16" if gate.native_bf16(flags) else "f32"
        assert choice.error is not None and f"int8 graph ({part} float part) measured" in choice.reason
        if choice.error.within():
            assert choice.precision == f"int8+{part}" and model.config["INFERENCE_PRECISION_HINT"] == part
        else:  # the source runs in its place, with its own choice
            assert choice.precision in ("f32", "bf16") and "r.onnx: " in choice.reason
            assert not any(op.get_type_name() == "FakeQuantize" for op in model.graph.get_ops())
    if importlib.util.find_spec("ray"):  # serve and batch pin no int8 verdict: each worker reads it from the cache
        from stylert.serving import cluster

        monkeypatch.setattr(cluster, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
        assert cluster.settle_precision(int8, None, None) is None
    source.unlink()
    model = open_model(int8)
    assert model.precision == "int8+f32" and "not beside it" in model.precision_choice.reason


def test_alternated_benchmark(retouch_models, tmp_path, cache):
    """benchmarks/precision.py writes f32 and bf16 timings and bf16's error where the CPU has native bf16, and says
    in one line why not where it has not."""
    out = tmp_path / "p.json"
    result = subprocess.run([sys.executable, "benchmarks/precision.py", str(retouch_models["plain"]), "--rounds", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "STYLERT_CACHE": str(cache)})
    if not gate.native_bf16(cpu_flags()):
        assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
        assert "avx512_bf16 or amx_bf16" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())["models"][0]
    assert [len(row["ms"][p]) for p in ("f32", "bf16")] == [2, 2]
    assert row["bf16_speedup"] == pytest.approx(row["p50_ms"]["f32"] / row["p50_ms"]["bf16"])
    choice = open_model(retouch_models["plain"], "openvino", precision="auto").precision_choice
    assert row["bf16_error"]["max_levels"] <= choice.error.max_levels  # one draw of the check's three


def test_an_unwritable_cache_folder_is_skipped(exported, tmp_path, monkeypatch):
    """A cache folder that cannot be made (a file in its way, as a read-only home would refuse it): the model still
    opens and runs, measuring again next time."""
    (tmp_path / "blocked").write_text("a file where the cache folder would go")
    monkeypatch.setenv("STYLERT_CACHE", str(tmp_path / "blocked" / "cache"))
    monkeypatch.delenv("OV_CACHE_DIR", raising=False)
    model = open_model(exported["nvlabs"], "openvino", precision="auto")
    ws = np.zeros((1, *model.inputs[0].shape[1:]), np.float32)
    assert all(np.isfinite(v).all() for v in model.run({"ws": ws}).values())
