"""Broken model files, a seeded campaign: every way a model file can be damaged (cut short, bytes flipped, zeroed,
random bytes named .onnx or .engine, an engine's sidecar missing or malformed, external data missing or cut short,
stylert metadata removed or set to junk) ends as one stylert.ModelError (BackendUnavailable where a library is
missing) whose message names the file - from `stylert.open_model` on each installed backend and from the call
classes - never another exception. The library noise around it (OpenVINO's GraphDef lines, ONNX Runtime's log) is
silenced by `runtime.model.library_logging`, checked in a subprocess."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import stylert
from stylert.errors import BackendUnavailable, InputError, ModelError
from stylert.runtime.engine import model_metadata, read_sidecar
from stylert.runtime.model import META_BOUNDS, check_threads, read_meta

SEED = 30
BACKENDS = ["onnxruntime-cpu"] + (["openvino", None] if stylert.runtime.model._installed("openvino") else [])


def refused(path: Path, open_it, *, allow_success: bool = False, key: str | None = None) -> str:
    """Run open_it(); it must raise ModelError (BackendUnavailable is one) naming the file (and the key), or succeed
    where allowed. Any other exception fails the test with its type and message."""
    try:
        result = open_it()
    except ModelError as exc:
        message = str(exc)
        assert path.name in message, f"{type(exc).__name__} does not name {path.name}: {message}"
        assert "\n" not in message.strip(), f"not one line: {message!r}"
        if key is not None:
            assert key in message, f"does not name {key}: {message}"
        return message
    except Exception as exc:  # the escape this campaign looks for
        pytest.fail(f"{path.name}: {type(exc).__name__} escaped: {str(exc)[:300]}")
    assert allow_success, f"{path.name}: opened ({result!r}) where a ModelError was due"
    close = getattr(result, "close", None)
    if close:
        close()
    return ""


def _metadata_edit(src: Path, dst: Path, **updates) -> Path:
    """src's graph with its metadata_props updated (None removes a key), saved as dst (weights src keeps in an
    external file stay there: dst beside src shares them)."""
    model = onnx.load(str(src), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"stylert.{k}": v for k, v in updates.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


# ---- the bytes of the file -------------------------------------------------------------------------------

def damaged_files(src: Path, folder: Path) -> list[tuple[Path, bool]]:
    """(file, may it open?) for the seeded damage: cut at fixed and random points, flipped bytes (which may land in
    weights and still load), zeroed, random bytes, text, a directory and a link loop named like a model."""
    rng = np.random.default_rng(SEED)
    data = src.read_bytes()
    n = len(data)
    cases: list[tuple[str, bytes, bool]] = []
    for cut in sorted({1, 2, 16, 100, n // 4, n // 2, n - 64, n - 1, *rng.integers(3, n - 1, 4).tolist()}):
        cases.append((f"cut{cut}", data[:cut], False))
    for i in range(4):
        flipped = bytearray(data)
        for pos in rng.integers(0, n, 1 + 3 * i):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        cases.append((f"flip{i}", bytes(flipped), True))
    header = bytearray(data)
    header[:64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    cases.append(("header", bytes(header), True))
    cases += [("zeros", bytes(n), False), ("random", rng.integers(0, 256, n, dtype=np.uint8).tobytes(), False),
              ("random_small", rng.integers(0, 256, 7, dtype=np.uint8).tobytes(), False),
              ("text", b"graph {\n node { op_type: 'Conv' }\n}\n", False), ("empty", b"", False)]
    out = []
    for name, payload, may_open in cases:
        path = folder / f"{name}.onnx"
        path.write_bytes(payload)
        out.append((path, may_open))
    (folder / "folder.onnx").mkdir()
    (folder / "loop.onnx").symlink_to(folder / "loop2.onnx")
    (folder / "loop2.onnx").symlink_to(folder / "loop.onnx")
    (folder / "dangling.onnx").symlink_to(folder / "nowhere.onnx")
    return out + [(folder / "folder.onnx", False), (folder / "loop.onnx", False), (folder / "dangling.onnx", False)]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b or "auto")
def test_damaged_onnx_files(retouch_models, tmp_path, backend):
    files = damaged_files(retouch_models["plain"], tmp_path)
    messages = [refused(path, lambda p=path: stylert.open_model(p, backend), allow_success=may_open)
                for path, may_open in files]
    cut = [m for (p, _), m in zip(files, messages) if p.name.startswith(("cut", "random", "zeros", "text"))]
    assert all("not a loadable ONNX model" in m or "no stylert metadata" in m for m in cut), cut
    # a backend that could not read a damaged file does not hand it to the next one: ModelError, not the fallback's
    assert not any(m.startswith("backend ") for m in messages)


def test_damaged_files_through_the_calls(retouch_models, tmp_path):
    for path, may_open in damaged_files(retouch_models["plain"], tmp_path)[::3]:
        refused(path, lambda p=path: stylert.Retoucher(p, "cpu"), allow_success=may_open)
        refused(path, lambda p=path: stylert.Inpainter(p, "cpu"), allow_success=False)


# ---- external data ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def external(retouch_models, tmp_path_factory):
    """The tiny retoucher saved with its weights in an external data file (model.onnx + model.onnx.data)."""
    folder = tmp_path_factory.mktemp("external")
    model = onnx.load(str(retouch_models["plain"]))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    return folder / "model.onnx"


def _copy_external(src: Path, folder: Path, data: bytes | None) -> Path:
    folder.mkdir()
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    if data is not None:
        (folder / f"{src.name}.data").write_bytes(data)
    return dst


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b or "auto")
def test_external_data_missing_or_cut(external, tmp_path, backend):
    model = stylert.open_model(external, backend)  # whole, it loads
    model.close()
    data = Path(f"{external}.data").read_bytes()
    rng = np.random.default_rng(SEED)
    cases = {"missing": None, "empty": b"", "half": data[:len(data) // 2], "short1": data[:-1],
             **{f"cut{c}": data[:c] for c in sorted(rng.integers(1, len(data) - 1, 3).tolist())}}
    for name, payload in cases.items():
        path = _copy_external(external, tmp_path / name, payload)
        message = refused(path, lambda p=path: stylert.open_model(p, backend))
        assert "external data file model.onnx.data is " + ("missing" if payload is None else "truncated") in message
    path = _copy_external(external, tmp_path / "dir", None)
    (tmp_path / "dir" / "model.onnx.data").mkdir()
    assert "is missing" in refused(path, lambda: stylert.open_model(path, backend))


def test_external_data_outside_the_folder(external, tmp_path):
    model = onnx.load(str(external), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    onnx.save(model, str(tmp_path / "escape.onnx"))
    for backend in BACKENDS:
        assert "outside" in refused(tmp_path / "escape.onnx", lambda b=backend: stylert.open_model(tmp_path / "escape.onnx", b))


# ---- TensorRT engines ------------------------------------------------------------------------------------

def test_engine_files(retouch_models, tmp_path):
    """Random bytes named .engine: without a sidecar, with a malformed one, with one whose size or digest does not
    match (refused before TensorRT is needed), with a plausible one (BackendUnavailable without TensorRT)."""
    rng = np.random.default_rng(SEED)
    meta = {k: v for k, v in model_metadata(retouch_models["plain"]).items()}
    engine = tmp_path / "r.engine"
    payload = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    engine.write_bytes(payload)
    sidecar = tmp_path / "r.engine.json"

    def both(expect: str | None, cls=ModelError):
        for open_it in (lambda: stylert.open_model(engine), lambda: stylert.Retoucher(engine)):
            message = refused(engine, open_it)
            if expect is not None:
                assert expect in message, message
        refused(engine, lambda: stylert.Inpainter(engine))  # a retouch model: refused as one, or for its damage
        try:
            stylert.open_model(engine)
        except ModelError as exc:
            assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"

    both("r.engine.json beside it")
    for text in ("{broken", "", "[]", "1", '"text"', "null", "[" * 100000 + "]" * 100000, "\xff\xfe"):
        sidecar.write_text(text, errors="surrogateescape")
        both("engine metadata")
    for extra in ({"engine.batch": "1..4"}, {"engine.batch": [4, 2, 1]}, {"engine.batch": [1, 2]},
                  {"engine.batch": [0, 1, 1]}, {"engine.plugins": "lib.so"}, {"engine.plugins": [1]},
                  {"engine.bytes": -1}, {"engine.bytes": "4096"}, {"engine.sha256": "zz"}):
        sidecar.write_text(json.dumps({**meta, **extra}))
        both(next(iter(extra)))
    for bad in ({"stylert.format": "x"}, {"stylert.format": 1.5}, {"stylert.format": None}, {"stylert.format": "9"}):
        sidecar.write_text(json.dumps({**meta, **bad}))
        both(None)
    sidecar.write_text(json.dumps({**meta, "engine.bytes": len(payload) + 1}))
    both("its sidecar says 4097")
    sidecar.write_text(json.dumps({**meta, "engine.bytes": len(payload), "engine.sha256": "0" * 64}))
    both("SHA-256")
    import hashlib

    sidecar.write_text(json.dumps({**meta, "engine.bytes": len(payload),
                                   "engine.sha256": hashlib.sha256(payload).hexdigest()}))
    if not hasattr(__import__("importlib").util.find_spec("tensorrt") and __import__("tensorrt"), "Builder"):  # a plausible engine reaches TensorRT, which is missing here
        both("TensorRT is not installed", BackendUnavailable)
    sidecar.write_text(json.dumps({**meta, "engine.batch": [1, 2, 4]}))
    assert read_sidecar(engine)["engine.batch"] == [1, 2, 4]


# ---- stylert metadata ------------------------------------------------------------------------------------

JUNK = ["", " ", "abc", "1.5", "-3", "0", "1e9", "99999999999999999999999", "²", "０", "32 px", "0x20", "NaN", "None",
        "[]", "\x00"]


def test_read_meta_campaign():
    """read_meta on junk and on seeded random text: a value of the kind within its bounds, or ModelError naming
    the file and the key; never another exception."""
    rng = np.random.default_rng(SEED)
    alphabet = list("0123456789+-.eE xX_") + ["²", "٣", "\x00", "\n", "∞", "inf", "nan", "1" * 30]
    values = JUNK + ["".join(rng.choice(alphabet, int(rng.integers(0, 8)))) for _ in range(300)]
    for key, kind in [("resolution", int), ("num_codes", int), ("noise_size", int), ("psi", float), ("token_stride", int),
                      ("trained", bool), ("config", "json")]:
        for value in values:
            try:
                got = read_meta({f"stylert.{key}": value}, Path("m.onnx"), key, kind)
            except ModelError as exc:
                assert str(exc).startswith(f"m.onnx: metadata stylert.{key} "), exc
                continue
            if kind is int:
                low, high = META_BOUNDS[f"stylert.{key}"]
                assert type(got) is int and low <= got <= high
                if key == "resolution":
                    assert got & (got - 1) == 0
            if kind is float:
                assert np.isfinite(got)
    with pytest.raises(ModelError, match=r"^m.onnx: metadata stylert.resolution missing"):
        read_meta({}, "m.onnx", "resolution", int)
    with pytest.raises(ModelError, match=r"stylert.resolution is not an integer: 'abc'"):
        read_meta({"stylert.resolution": "abc"}, "m.onnx", "resolution", int)
    with pytest.raises(ModelError, match=r"stylert.resolution is 48, not a power of two"):
        read_meta({"stylert.resolution": "48"}, "m.onnx", "resolution", int)
    with pytest.raises(ModelError, match=r"stylert.resolution is 8192, above its maximum 4096"):
        read_meta({"stylert.resolution": "8192"}, "m.onnx", "resolution", int)
    assert read_meta({"stylert.resolution": " 256 "}, "m.onnx", "resolution", int) == 256
    assert read_meta({"stylert.resolution": 256}, "m.onnx", "resolution", int) == 256  # a sidecar's JSON number
    assert read_meta({}, "m.onnx", "q_dim", int, default=None) is None
    assert read_meta({"engine.batch": [1, 2, 4]}, "m.engine", "engine.batch", "json") == [1, 2, 4]
    codes = np.arange(6, dtype="<f4")
    text = base64.b64encode(codes.tobytes()).decode()
    assert (read_meta({"stylert.default_codes": text}, "m", "default_codes", "b64f32", shape=(2, 3)) == codes.reshape(2, 3)).all()
    for junk, match in ((text, "holds 6 values, expected 3x3 = 9"), ("***", "not base64"), ("QUJD", "not whole float32"),
                        (base64.b64encode(np.full(9, np.nan, "<f4").tobytes()).decode(), "NaN")):
        with pytest.raises(ModelError, match=match):
            read_meta({"stylert.default_codes": junk}, "m", "default_codes", "b64f32", shape=(3, 3))


@pytest.mark.parametrize("value,match", [(None, "no stylert metadata"), ("abc", "not a format number: 'abc'"),
                                         ("", "no stylert metadata|not a format number"), ("1.0", "not a format number"),
                                         ("²", "not a format number"), ("-1", "not a format number"),
                                         ("0", "not a format number"), ("9", "format 9; this runtime reads format <= 1")])
def test_malformed_format(retouch_models, tmp_path, value, match):
    path = _metadata_edit(retouch_models["plain"], tmp_path / "fmt.onnx", format=value)
    for backend in BACKENDS:
        assert __import__("re").search(match, refused(path, lambda b=backend: stylert.open_model(path, b)))


@pytest.mark.parametrize("value", [None, "", "nonsense", "retouch "])
def test_missing_or_wrong_call(retouch_models, tmp_path, value):
    path = _metadata_edit(retouch_models["plain"], tmp_path / "call.onnx", call=value)
    refused(path, lambda: stylert.open_model(path, "cpu", call="retouch"), key="stylert.call" if value is None else None)
    refused(path, lambda: stylert.Retoucher(path, "cpu"))


# Each call's metadata keys, broken one at a time: missing, junk text, out of bounds. These go through the call
# classes (FaceModel, Inpainter, Editor, Restorer), which must read their metadata with Model.meta.
BAD_VALUES = [None, "abc", "0", "2.5", "1e9", "99999999999999999999999"]
CALL_KEYS = {
    "retouch": ("retouch_models", "plain", "Retoucher", ["resolution"]),
    "exe-gan": ("inpaint_models", "exe-gan", "Inpainter", ["resolution", "num_codes", "code_dim", "noise_size",
                                                           "default_codes"]),
    "grig": ("inpaint_models", "grig", "Inpainter", ["resolution", "noise_size"]),
    "edit": ("edit_model", "path", "Editor", ["resolution", "num_ws", "noise_size"]),
    "restore-vsp": ("vsp_model", "path", "Restorer", ["resolution", "noise_size"]),
    "restore-quality": ("restore_models", "quality", "Restorer", ["resolution", "q_dim"]),
}


@pytest.mark.parametrize("case", list(CALL_KEYS))
def test_call_metadata_missing_or_malformed(case, request, tmp_path):
    fixture, pick, cls_name, keys = CALL_KEYS[case]
    src = tmp_path / "intact.onnx"  # its weights in one external file, which every edited copy below shares
    onnx.save(onnx.load(str(request.getfixturevalue(fixture)[pick])), str(src), save_as_external_data=True,
              location="intact.weights")
    cls = getattr(stylert, cls_name)
    refused(src, lambda: cls(src, "cpu"), allow_success=True)  # the intact model opens
    escapes = []
    for key in keys:
        values = BAD_VALUES + (["!!", base64.b64encode(b"\0" * 12).decode()] if key == "default_codes" else [])
        if key == "resolution":
            values = values + ["48", "1048576", "4096"]  # 4096: valid, but not the size of the graph's faces
        for i, value in enumerate(values):
            path = _metadata_edit(src, tmp_path / f"{key}{i}.onnx", **{key: value})
            try:
                refused(path, lambda p=path: cls(p, "cpu"), key=f"stylert.{key}")
            except (AssertionError, pytest.fail.Exception) as exc:
                escapes.append(f"{key}={value!r}: {str(exc).splitlines()[0][:200]}")
    assert not escapes, f"{len(escapes)} escapes:\n" + "\n".join(escapes)


# ---- threads: one check for every backend ----------------------------------------------------------------

def test_check_threads():
    assert check_threads(None) is None
    assert check_threads(3) == 3 and type(check_threads(np.int64(3))) is int and check_threads(np.uint8(2)) == 2
    for bad in (2.5, -1, 0, True, False, "4", 4.0, np.float32(2), 10 ** 9, [2]):
        with pytest.raises(InputError, match="^threads: "):
            check_threads(bad)


# ---- library noise ---------------------------------------------------------------------------------------

SCRIPT = """
import sys, warnings
from stylert.runtime.model import library_logging
library_logging(verbose=False)
import stylert
try:
    stylert.open_model(sys.argv[1], None if sys.argv[2] == "auto" else sys.argv[2])
except stylert.StylertError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def test_library_noise_is_silenced(external, tmp_path):
    """stderr holds stylert's one line and nothing else: OpenVINO's frontends on a file that is not ONNX, ONNX
    Runtime and the fallback on truncated external data."""
    text = tmp_path / "text.onnx"
    text.write_bytes(b"\x08\x01\x12\x05hello world, not a graph")  # a protobuf-ish start: the frontends all try it
    random = tmp_path / "random.onnx"
    random.write_bytes(np.random.default_rng(SEED).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    cut = _copy_external(external, tmp_path / "cut", Path(f"{external}.data").read_bytes()[:100])
    for path in (text, random, cut):
        for backend in BACKENDS:
            result = subprocess.run([sys.executable, "-c", SCRIPT, str(path), backend or "auto"], capture_output=True,
                                    text=True, timeout=120)
            lines = result.stderr.splitlines()
            assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
