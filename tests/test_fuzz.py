"""A seeded fuzz campaign against every way a bad input reaches stylert (issue 30), bounded to about a minute.

Files: images of every format the reader takes (IMAGE_SUFFIXES), cut short, bit-flipped, with bomb-sized headers;
16-bit, CMYK, 1x1, empty; folders, links and FIFOs named like images. Each must end as a LoadedImage or an
ImageFileError whose message starts with the file's name - in read_image, decode_image, read_mask and read_labels
alike - and never hang; run through `stylert retouch` together, each bad file is one `error: <file>: ...` line, and
the rest of the run is processed. Arrays and controls: masks and guidance of every shape, dtype and value, and
control values of every type, each accepted or refused with an InputError naming it.

Hypothesis draws the cases with derandomize=True and a fixed example count: the same cases on every run and in CI.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import signal
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import stylert  # noqa: E402
from stylert.calls.edit import Editor  # noqa: E402
from stylert.calls.inpaint import fill_mask  # noqa: E402
from stylert.cli import main as cli_main  # noqa: E402
from stylert.faces.imageio import (IMAGE_SUFFIXES, ImageFileError, LoadedImage, decode_image, read_image,  # noqa: E402
                                   read_labels, read_mask)
from stylert.faces.pipeline import check_named_image  # noqa: E402

FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=False,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.data_too_large])
SIDE = 32  # the tiny retoucher's resolution: square crops go through the network at their own size


@contextlib.contextmanager
def no_hang(seconds: float = 10.0):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    def expire(*_):
        raise TimeoutError(f"hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def _png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG header claiming width x height with a tiny body (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def _sof(data: bytes) -> int:
    return max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))


def _jpeg_size(data: bytes, width: int, height: int) -> bytes:
    i, out = _sof(data), bytearray(data)
    out[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def _cut_in_scan(data: bytes) -> bytes:
    """A JPEG cut in the middle of its first scan's data (a tiny file is mostly headers), its end marker put back."""
    start = data.find(b"\xff\xda")
    end = data.find(b"\xff\xda", start + 2)
    end = len(data) if end < 0 else end
    return data[:(start + end) // 2] + b"\xff\xd9"


def _flipped_in_scan(data: bytes) -> bytes:
    """A JPEG with eight bytes mid-scan overwritten by stuffed 0xFF bytes (64 one bits, longer than any Huffman code):
    the decoder loses step there, and its image is wrong from there on, with no byte missing."""
    mid = (data.find(b"\xff\xda") + len(data)) // 2
    return data[:mid] + b"\xff\x00" * 4 + data[mid + 8:]


def _tiff_size(data: bytes, width: int, height: int) -> bytes:
    """A little-endian TIFF with its ImageWidth / ImageLength tags rewritten."""
    out = bytearray(data)
    ifd = struct.unpack_from("<I", out, 4)[0]
    for k in range(struct.unpack_from("<H", out, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", out, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<H" if kind == 3 else "<I", out, entry + 8, value)
    return bytes(out)


def _photo(astronaut) -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut[40:296, 120:376]).resize((SIDE, SIDE), Image.BILINEAR))


def _bases(astronaut) -> dict[str, bytes]:
    """One small valid file per format and mode the reader takes (the seeds the mutations start from)."""
    rgb = _photo(astronaut)
    rgba = np.dstack([rgb, np.full((SIDE, SIDE), 200, np.uint8)])
    gray = rgb[:, :, 0]
    cmyk = Image.fromarray(rgb).convert("CMYK")
    out = {
        "rgb.png": _encode(rgb, "PNG"), "rgba.png": _encode(rgba, "PNG"), "gray.png": _encode(gray, "PNG"),
        "base.jpg": _encode(rgb, "JPEG", quality=90), "progressive.jpeg": _encode(rgb, "JPEG", progressive=True),
        "gray.jpg": _encode(gray, "JPEG"), "lossy.webp": _encode(rgb, "WEBP"),
        "lossless.webp": _encode(rgba, "WEBP", lossless=True), "rgb.bmp": _encode(rgb, "BMP"),
        "raw.tif": _encode(rgb, "TIFF"), "lzw.tiff": _encode(rgb, "TIFF", compression="tiff_lzw"),
    }
    for name, fmt in (("cmyk.jpg", "JPEG"), ("cmyk.tif", "TIFF")):
        buf = io.BytesIO()
        cmyk.save(buf, fmt)
        out[name] = buf.getvalue()
    pal = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(pal, "PNG")
    out["palette.png"] = pal.getvalue()
    assert {Path(n).suffix for n in out} == set(IMAGE_SUFFIXES)  # every format the reader takes
    return out


def _fixed_cases(astronaut) -> dict[str, tuple[bytes, str | None]]:
    """Named files with what reading them must give: None (an image) or a phrase of the refusal."""
    b = _bases(astronaut)
    rgb = _photo(astronaut)
    jpg = b["base.jpg"]
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    with_exif = _encode(rgb, "JPEG", exif=exif)
    at = with_exif.find(b"Exif") + 6
    bad_exif = bytearray(with_exif)  # an IFD entry count far past the segment: Pillow warns "Corrupt EXIF data"
    bad_exif[at + 8:at + 10] = b"\x00\x40"
    bad_tiff_header = bytearray(with_exif)  # the EXIF's TIFF header broken: Pillow raises SyntaxError in getexif
    bad_tiff_header[at:at + 2] = b"XX"
    vp8 = bytearray(b["lossy.webp"])
    vp8[26:30] = struct.pack("<HH", 0x3FFF, 0x3FFF)  # a 16383 x 16383 canvas: 268 MP
    bmp = bytearray(b["rgb.bmp"])
    bmp[18:26] = struct.pack("<ii", 100_000, 100_000)
    deep = (rgb.astype(np.uint16) * 257)[:, :, 0]
    return {
        "zero.png": (b"", "file is empty"),
        "text.jpg": (b"this is not an image", "not an image file"),
        "one.png": (_encode(rgb[:1, :1], "PNG"), None),
        "one.jpg": (_encode(rgb[:1, :1], "JPEG"), None),
        "cmyk.jpg": (b["cmyk.jpg"], None),
        "cmyk.tif": (b["cmyk.tif"], None),
        "sixteen.png": (_encode(deep, "PNG"), "16-bit"),
        "sixteen.tif": (_encode(deep, "TIFF"), "16-bit"),
        "exif_warns.jpg": (bytes(bad_exif), None),
        "exif_broken.jpg": (bytes(bad_tiff_header), None),
        "bomb.png": (_png(60_000, 60_000), "over the pixel limit"),
        "huge.png": (_png(12_000, 12_000), "over the pixel limit"),
        "line.png": (_png(100_000_000, 1), "too large to decode"),
        "bomb.jpg": (_jpeg_size(jpg, 65_000, 65_000), "over the pixel limit"),
        "bomb.bmp": (bytes(bmp), "over the pixel limit"),
        "bomb.webp": (bytes(vp8), "over the pixel limit"),
        "bomb.tif": (_tiff_size(b["raw.tif"], 60_000, 60_000), "over the pixel limit"),
        "cut.jpg": (_cut_in_scan(jpg)[:-2], "truncated or corrupt"),
        "cut_eoi.jpg": (_cut_in_scan(jpg), "damaged image data"),
        "tall.jpg": (_jpeg_size(jpg, SIDE, 2 * SIDE), "damaged image data"),
        "cut_progressive.jpg": (_cut_in_scan(b["progressive.jpeg"]), "damaged image data"),
        "flipped.jpg": (_flipped_in_scan(jpg), "damaged image data (libjpeg: Corrupt JPEG data"),
        "cut.png": (b["rgb.png"][:len(b["rgb.png"]) // 2], "truncated or corrupt"),
        "cut.webp": (b["lossy.webp"][:len(b["lossy.webp"]) // 2], "truncated or corrupt"),
        "cut.bmp": (b["rgb.bmp"][:len(b["rgb.bmp"]) // 2], "truncated or corrupt"),
        "cut.tif": (b["raw.tif"][:len(b["raw.tif"]) // 2], "truncated or corrupt"),
    }


def _odd_entries(folder: Path, target: Path) -> dict[str, str]:
    """Things named like images that are not image files, made in `folder`; name -> a phrase of the refusal."""
    (folder / "folder.png").mkdir()
    (folder / "folder_link.jpg").symlink_to(folder / "folder.png")
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    os.mkfifo(folder / "fifo.png")
    (folder / "link.png").symlink_to(target)  # a link to a good image: read like it
    return {"folder.png": "a folder", "folder_link.jpg": "a folder", "dangling.png": "no such file",
            "loop_a.png": "loop", "loop_b.png": "loop", "fifo.png": "FIFO", "link.png": ""}


def _check_read(path: Path, data: bytes | None, expect: str | None = "any"):
    """Every reader on one file (and its bytes): an RGB image, or ImageFileError starting with the name."""
    with no_hang():
        try:
            loaded = read_image(path)
        except ImageFileError as exc:
            assert str(exc).startswith(f"{path}: "), exc
            assert "\n" not in str(exc)
            assert expect in ("any", "") or expect in str(exc), (expect, str(exc))
            outcome = "refused"
        else:
            assert isinstance(loaded, LoadedImage) and loaded.rgb.dtype == np.uint8, loaded
            assert loaded.rgb.ndim == 3 and loaded.rgb.shape[2] == 3 and min(loaded.rgb.shape[:2]) >= 1
            assert expect in ("any", "", None), f"{path} was read; expected a refusal: {expect}"
            outcome = "read"
        for reader in (read_mask, read_labels):
            try:
                reader(path)
            except ImageFileError as exc:
                assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), exc
                assert outcome == "refused" or "16-bit" in str(exc) or "read as RGB" in str(exc), exc
        if data:
            for decode in (lambda: decode_image(data, "upload"), lambda: read_mask(data, "m"),
                           lambda: read_labels(data, "semantic")):
                try:
                    decode()
                except ImageFileError as exc:
                    assert re.match(r"(upload|m|semantic): ", str(exc)), exc
    return outcome


# ---- the reader ---------------------------------------------------------------------------------------------------

def test_fixed_bad_files_are_refused_by_every_reader_with_their_name(astronaut, tmp_path, capfd):
    for name, (data, expect) in _fixed_cases(astronaut).items():
        (tmp_path / name).write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no library warning may escape the reader (they name no file)
            _check_read(tmp_path / name, data, expect)
    (tmp_path / "good.png").write_bytes(_bases(astronaut)["rgb.png"])
    for name, expect in _odd_entries(tmp_path, tmp_path / "good.png").items():
        assert _check_read(tmp_path / name, None, expect) == ("read" if not expect else "refused"), name
    assert capfd.readouterr() == ("", "")  # nothing printed around the errors


def test_line_png_at_the_pixel_limit_is_an_error_not_memoryerror(tmp_path):
    """Issue 30, escape 2: 100,000,000 x 1 is exactly at the pixel limit; Pillow's row buffer overflows."""
    data = _png(100_000_000, 1)
    (tmp_path / "line.png").write_bytes(data)
    for call in (lambda: read_image(tmp_path / "line.png"), lambda: decode_image(data, "body"),
                 lambda: read_mask(data), lambda: read_labels(tmp_path / "line.png")):
        with pytest.raises(ImageFileError, match="100000000x1 pixels is too large to decode"):
            call()


@pytest.mark.parametrize("data", [_png(60_000, 60_000), _png(12_000, 12_000)], ids=["pillow-bomb", "over-limit"])
def test_masks_and_label_maps_refuse_bombs_like_photos(tmp_path, data):
    """Issue 30, escape 3: read_mask and read_labels let Pillow's DecompressionBombError through."""
    (tmp_path / "m.png").write_bytes(data)
    for call, name in ((lambda: read_mask(tmp_path / "m.png"), str(tmp_path / "m.png")),
                       (lambda: read_mask(data, "mask"), "mask"),
                       (lambda: read_labels(tmp_path / "m.png"), str(tmp_path / "m.png")),
                       (lambda: read_labels(data, "semantic"), "semantic")):
        with pytest.raises(ImageFileError, match="over the pixel limit") as info:
            call()
        assert str(info.value).startswith(f"{name}: not a readable ")


def test_damaged_jpeg_is_refused_unless_allowed(astronaut, tmp_path):
    """Issue 30, escape 5: a JPEG whose data ends early decodes grey and silently, one whose data has a flipped run of
    bits decodes wrong and silently; refused unless allow_damaged, with libjpeg's own warning."""
    jpg = _encode(astronaut, "JPEG", quality=90)
    cases = {"cut_eoi.jpg": jpg[:len(jpg) // 2] + b"\xff\xd9", "tall.jpg": _jpeg_size(jpg, 512, 700),
             "cut.jpg": jpg[:len(jpg) // 2], "flipped.jpg": _flipped_in_scan(jpg),
             "extraneous.jpg": jpg[:-2] + bytes(range(1, 60)) + b"\xff\xd9"}
    said = {"cut.jpg": "the file is cut short: the rest is grey", "flipped.jpg": "extraneous bytes before marker",
            "extraneous.jpg": "extraneous bytes before marker 0xd9"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageFileError, match=f"^{re.escape(str(path))}: damaged image data .*allow_damaged"):
            read_image(path)
        with pytest.raises(ImageFileError, match="^body: damaged image data"):
            decode_image(data, "body")
        with pytest.raises(ImageFileError, match="damaged image data .*never read damaged"):
            read_mask(path)  # a mask has no opt-in: its grey would be read as fill
        loaded = read_image(path, allow_damaged=True)
        assert loaded.warning.startswith(f"{path}: damaged image data")
        assert said.get(name, "libjpeg: Corrupt JPEG data: premature end of data segment") in loaded.warning
        assert loaded.rgb.shape[:2] == ((700, 512) if name == "tall.jpg" else (512, 512))
        if name not in ("flipped.jpg", "extraneous.jpg"):
            assert (loaded.rgb[-8:] == 128).all()  # the part libjpeg filled in
        assert decode_image(data, "body", allow_damaged=True).warning.startswith("body: damaged image data")
    # whole files are not damaged: a photo, a progressive one, one whose last blocks are exactly the fill grey, and
    # one padded with zeros before its end marker (libjpeg: "extraneous bytes"; the image is whole)
    for name, data in {"whole.jpg": jpg, "progressive.jpg": _encode(astronaut, "JPEG", progressive=True),
                       "grey.jpg": _encode(np.full((64, 64, 3), 128, np.uint8), "JPEG"),
                       "padded.jpg": jpg[:-2] + bytes(64) + b"\xff\xd9"}.items():
        (tmp_path / name).write_bytes(data)
        assert read_image(tmp_path / name).warning is None
    assert np.array_equal(read_image(tmp_path / "padded.jpg").rgb, read_image(tmp_path / "whole.jpg").rgb)


def test_images_of_several_frames_say_so(astronaut, tmp_path):
    """Animated WebP and PNG, a multi-page TIFF: the first frame, and a warning naming the file and its frame count.
    An MPO (a camera's JPEG followed by its previews) is one photo: no warning."""
    rgb = _photo(astronaut)
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1]), Image.fromarray(rgb[:, ::-1])]
    for name, kwargs in {"anim.webp": {"lossless": True}, "anim.png": {}, "pages.tif": {},
                         "camera.jpg": {"format": "MPO"}}.items():
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], **kwargs)
        loaded = read_image(tmp_path / name)
        errors = [np.abs(loaded.rgb.astype(int) - np.asarray(f)).mean() for f in frames]
        assert errors[0] == min(errors) and (errors[0] == 0 or name == "camera.jpg"), (name, errors)  # the first
        if name == "camera.jpg":
            assert loaded.format == "MPO" and loaded.warning is None
        else:
            assert loaded.warning == (f"{tmp_path / name}: 3 frames (an animation or a multi-page file): only the "
                                      "first is read, and an output written from it has that one frame")


def test_corrupt_exif_warnings_stay_inside_the_reader(astronaut, tmp_path):
    """Issue 30, escape 8 (image part): Pillow's EXIF warnings name no file; the pixels are fine, so they are read."""
    cases = _fixed_cases(astronaut)
    for name in ("exif_warns.jpg", "exif_broken.jpg"):
        (tmp_path / name).write_bytes(cases[name][0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = read_image(tmp_path / name)
        assert not caught, [str(w.message) for w in caught]
        assert loaded.rgb.shape == (SIDE, SIDE, 3)


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with no_hang(5):
        for call in (read_image, read_mask, read_labels):
            with pytest.raises(ImageFileError, match="FIFO"):
                call(tmp_path / "pipe.png")


_MUTATION = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("cut_eoi"), st.floats(0.05, 0.99)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("header"), st.integers(0, 80),
              st.sampled_from([b"\xff\xff", b"\xff\xff\xff\x7f", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00",
                               b"\x05\xf5\xe1\x00", b"\x00\xe1\xf5\x05"])),
)


def _mutate(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind == "cut":
        return data[:int(len(data) * mutation[1])]
    if kind == "cut_eoi":
        return data[:int(len(data) * mutation[1])] + b"\xff\xd9"
    out = bytearray(data)
    if kind == "flip":
        for where, bits in mutation[1]:
            out[min(int(where * len(out)), len(out) - 1)] ^= bits
        return bytes(out)
    at = min(mutation[1], len(out) - len(mutation[2]))
    out[at:at + len(mutation[2])] = mutation[2]
    return bytes(out)


def test_mutated_images_of_every_format_are_read_or_refused_by_name(astronaut, capfd):
    bases = _bases(astronaut)
    names = sorted(bases)

    @settings(max_examples=600, **FUZZ)
    @given(st.sampled_from(names), _MUTATION)
    def case(name, mutation):
        data = _mutate(bases[name], mutation)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"fuzz{Path(name).suffix}"
            path.write_bytes(data)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                _check_read(path, data)

    case()
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), err[:2000]


# ---- the CLI ------------------------------------------------------------------------------------------------------

def _digests(paths) -> dict[Path, str | None]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in paths}


def _expected(path: Path) -> str | None:
    """None when `stylert retouch --aligned` must write this file's result, else the start of its error line."""
    try:
        with no_hang():
            loaded = read_image(path)
    except ImageFileError:
        return f"error: {path}: "
    h, w = loaded.rgb.shape[:2]
    return None if h == w >= 2 else f"error: {path}: "  # aligned crops are square; a 1x1 photo is too small


def _run_cli(args: list[str], capfd) -> tuple[int, list[str], list[str]]:
    with no_hang(60):
        code = cli_main(args)
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return code, out.splitlines(), err.splitlines()


def _mutated_files(astronaut, folder: Path, count: int, seed: int) -> list[Path]:
    """Square files of every format, cut or bit-flipped at seeded places (for the CLI runs)."""
    rng = random.Random(seed)
    bases = _bases(astronaut)
    files = []
    for k in range(count):
        name = sorted(bases)[k % len(bases)]
        data = bases[name]
        if k % 3 == 0:
            data = data[:rng.randrange(len(data))]
        elif k % 3 == 1:
            data = _mutate(data, ("cut_eoi", rng.uniform(0.1, 0.95)))
        else:
            data = _mutate(data, ("flip", [(rng.random(), rng.randrange(1, 256)) for _ in range(rng.randrange(1, 5))]))
        path = folder / f"m{k:02d}_{Path(name).stem}{Path(name).suffix}"
        path.write_bytes(data)
        files.append(path)
    return files


def _assert_run(code, out, err, model, inputs: list[Path], output: Path, extra_err=()):
    """One error line per refused input, an output for every other, and nothing else printed."""
    expected = {p: _expected(p) for p in inputs}
    errors = [line for line in err if line.startswith("error: ")]
    for path, start in expected.items():
        mine = [line for line in errors if line.startswith(f"error: {path}: ")]
        written = output / path.name
        if start is None:
            assert not mine and written.is_file(), (path, mine)
        else:
            assert len(mine) == 1 and not written.exists(), (path, mine)
    assert len(errors) == sum(s is not None for s in expected.values()), errors
    failed = len(errors)
    allowed = {f"WARNING: {model} has random weights (untrained): the results mean nothing"}
    stray = [line for line in err if not (line.startswith("error: ") or line in allowed
                                          or line.startswith(f"{model}: running on ") or line in extra_err)]
    done = len(inputs) - failed
    summary = [line for line in out if not line.startswith("wrote ")]
    if done:
        assert len(summary) == 1 and summary[0].startswith(f"{done} image(s) processed, {failed} failed"), out
    else:
        stray = [line for line in stray if line != f"0 images processed, {failed} failed"]
    assert not stray, stray
    assert code == (1 if failed else 0)


def test_cli_run_of_bad_files_reports_each_and_processes_the_rest(retouch_models, astronaut, tmp_path, capfd):
    src = tmp_path / "in"
    src.mkdir()
    good = [src / "good_a.png", src / "good_b.jpg"]
    Image.fromarray(_photo(astronaut)).save(good[0])
    Image.fromarray(_photo(astronaut)[:, ::-1]).save(good[1], quality=92)
    fixed = []
    for name, (data, _) in _fixed_cases(astronaut).items():
        if name in ("one.png", "one.jpg", "cmyk.jpg", "cmyk.tif", "exif_warns.jpg", "exif_broken.jpg") or data:
            (src / f"f_{name}").write_bytes(data)
            fixed.append(src / f"f_{name}")
    odd = _odd_entries(src, good[0])
    links = [src / n for n in odd if not n.startswith("folder")]  # a folder given by name is a folder of inputs
    inputs = [*good, *fixed, *_mutated_files(astronaut, src, 24, seed=30), *links, src / "zero.png"]
    (src / "zero.png").write_bytes(b"")
    before = _digests(p for p in src.iterdir())
    model = str(retouch_models["plain"])
    out_dir = tmp_path / "out"
    code, out, err = _run_cli(["retouch", *map(str, inputs), "-o", str(out_dir), "--model", model, "--aligned",
                               "--batch", "4"], capfd)
    _assert_run(code, out, err, model, inputs, out_dir)
    assert code == 1
    assert _digests(p for p in src.iterdir()) == before  # no input changed
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no half-written files


def test_cli_run_of_a_folder_counts_what_it_does_not_process(retouch_models, astronaut, tmp_path, capfd):
    """Links to nothing, link loops and FIFOs in an input folder are each reported or counted as skipped."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo(astronaut)).save(src / "good.png")
    files = [src / "good.png", *_mutated_files(astronaut, src, 9, seed=31)]
    odd = _odd_entries(src, src / "good.png")
    before = _digests(p for p in src.iterdir())
    model = str(retouch_models["plain"])
    out_dir = tmp_path / "out"
    code, out, err = _run_cli(["retouch", str(src), "-o", str(out_dir), "--model", model, "--aligned"], capfd)
    skipped = [line for line in err if line.startswith(f"{src}: skipped ")]
    assert len(skipped) <= 1, skipped
    counts = re.findall(r"(\d+) (?:file|subfolder|broken|link|FIFO|special|entr|other)", skipped[0] if skipped else "")
    counted = sum(map(int, counts))
    reported = [n for n in odd if n != "link.png" and any(line.startswith(f"error: {src / n}: ") for line in err)]
    unreported = [n for n in odd if n != "link.png" and n not in reported]
    assert counted == len(unreported), (skipped, reported, unreported)  # every odd entry accounted for
    inputs = files + [src / "link.png"] + [src / n for n in reported]
    _assert_run(code, out, err, model, inputs, out_dir, extra_err=skipped)
    assert _digests(p for p in src.iterdir()) == before


# ---- arrays and controls ------------------------------------------------------------------------------------------

_SHAPE = (6, 5)


def _object_array(shape: tuple, values: list) -> np.ndarray:
    """An object array of `shape` holding `values` (Python ints, floats, strings, None), cycled; empty without any."""
    out = np.empty(shape, dtype=object)
    if values:
        flat = out.reshape(-1)
        for k in range(flat.size):
            flat[k] = values[k % len(values)]
    return out


def _arrays():
    """Arrays of 0 to 4 dimensions (often the photo's size), of every dtype family, with NaN and infinity."""
    shapes = st.one_of(st.sampled_from([_SHAPE, (*_SHAPE, 1), (*_SHAPE, 3), (*_SHAPE, 4), (*_SHAPE, 2), (5, 6), (),
                                        (6,), (1, *_SHAPE), (*_SHAPE, 3, 1), (0, 0), (6, 0)]),
                       hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7))
    dtypes = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                       hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(max_len=3),
                       hnp.byte_string_dtypes(max_len=3), hnp.datetime64_dtypes(), hnp.timedelta64_dtypes())
    numeric = hnp.arrays(dtypes, shapes)
    objects = st.builds(_object_array, st.sampled_from([_SHAPE, (*_SHAPE, 3), (2,)]),
                        st.lists(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=2)), max_size=40))
    return st.one_of(numeric, objects, st.sampled_from([None, 1, 0.5, "mask", [[1, 0]], b"\x00"]))


def _named_input_error(exc: Exception, name: str) -> None:
    assert isinstance(exc, stylert.InputError) and str(exc).startswith(f"{name}:") and "\n" not in str(exc), \
        f"{type(exc).__name__}: {exc}"


@settings(max_examples=250, **FUZZ)
@given(_arrays())
def test_masks_of_any_shape_dtype_and_value_are_taken_or_refused_by_name(array):
    try:
        fill = fill_mask(array, (*_SHAPE, 3), "mask")
    except Exception as exc:  # noqa: BLE001 - the test is which exceptions come out
        _named_input_error(exc, "mask")
    else:
        assert fill.dtype == bool and fill.shape == _SHAPE


@settings(max_examples=250, **FUZZ)
@given(st.sampled_from(["sketch", "semantic", "color"]), _arrays())
def test_guidance_of_any_shape_dtype_and_value_is_taken_or_refused_by_name(name, array):
    editor = object.__new__(Editor)  # the guidance checks use no model
    rgb = np.zeros((*_SHAPE, 3), np.uint8)
    try:
        value = check_named_image(array, "rgb", name) if name == "color" else array  # as FaceModel._run does
        guides = Editor.guides(editor, rgb, {name: value})
    except Exception as exc:  # noqa: BLE001
        _named_input_error(exc, name)
    else:
        if array is None:  # no guidance given
            assert name not in guides
        else:
            assert guides[name].shape[:2] == _SHAPE and np.isfinite(guides[name]).all()


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                 st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([np.int64(2), np.int64(-1), np.float32(0.5), np.float32("nan"), np.uint8(3),
                                  np.bool_(True), "1", "", b"1", [1], (0.5,), {}, 1j, object()]))


@pytest.fixture(scope="module")
def retoucher(retouch_models):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stylert.Retoucher(retouch_models["plain"])


def test_controls_of_every_type_are_taken_or_refused_by_name(retoucher, astronaut, retouch_models):
    crop = _photo(astronaut)

    @settings(max_examples=150, **FUZZ)
    @given(st.fixed_dictionaries({}, optional={"strength": _ANY, "max_batch": _ANY, "with_masks": _ANY,
                                               "aligned": st.just(True), "seed": _ANY, "fidelity": _ANY}))
    def case(controls):
        controls.setdefault("aligned", True)
        unknown = {"seed", "fidelity"} & set(controls)
        try:
            if "max_batch" in controls:
                results = retoucher.process_batch([crop], controls.pop("strength", 1.0), channels="rgb", **controls)
                if isinstance(results[0], Exception):
                    raise results[0]
                out = results[0]
            else:
                out = retoucher.retouch(crop, channels="rgb", **controls)
        except TypeError as exc:
            assert unknown and "unexpected keyword" in str(exc), exc
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, stylert.InputError) and "\n" not in str(exc), f"{type(exc).__name__}: {exc}"
            assert any(word in str(exc) for word in ("strength", "max_batch", "with_masks", "exported without")), exc
        else:
            assert not unknown and out.image.shape == crop.shape and out.image.dtype == np.uint8

    case()
    for threads in (0, -1, 2.5, True, "2", np.int64(1), 10 ** 6, float("nan"), None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stylert.Retoucher(retouch_models["plain"], threads=threads)
        except stylert.InputError as exc:
            assert str(exc).startswith("threads:"), exc
        else:
            assert threads is None or (isinstance(threads, (int, np.integer)) and not isinstance(threads, bool)
                                       and 1 <= threads <= 10 ** 6)
