"""Whole-photo retouching: alignment, paste-back, the astronaut end to end, and bad input."""
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

import stylert
from stylert.faces.align import FFHQ_512, feather_mask, paste_back, similarity_transform, template, warp_face
from stylert.faces.imageio import ImageFileError, read_image


def random_similarity(rng, size=512):
    angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 1.5)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rot, rng.uniform(100, 400, 2)


def test_alignment_puts_landmarks_on_the_template():
    """Landmarks = a random similarity transform of the template; after alignment they sit on it (< 1 px at 512)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        rot, shift = random_similarity(rng)
        landmarks = (FFHQ_512 - 256) @ rot.T + shift
        m = similarity_transform(landmarks, 512)
        aligned = np.c_[landmarks, np.ones(5)] @ m.T
        assert np.abs(aligned - template(512)).max() < 1.0


def test_aligned_crop_has_the_dots_where_the_template_is():
    """Draw the five landmarks as dots in a photo, align, find the dots in the crop: on the template (< 1 px)."""
    rng = np.random.default_rng(1)
    rot, shift = random_similarity(rng)
    rot *= 1.2 / np.sqrt(abs(np.linalg.det(rot)))  # keep the dots resolvable
    landmarks = (FFHQ_512 - 256) @ rot.T + shift + 100
    img = np.zeros((800, 800, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 4 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    crop = warp_face(img, similarity_transform(landmarks, 512), 512)[:, :, 0].astype(np.float64)
    for tx, ty in template(512):
        y0, x0 = int(ty) - 12, int(tx) - 12
        patch = crop[y0:y0 + 25, x0:x0 + 25]
        yy, xx = np.mgrid[y0:y0 + 25, x0:x0 + 25]
        cx, cy = (patch * xx).sum() / patch.sum(), (patch * yy).sum() / patch.sum()
        assert np.hypot(cx - tx, cy - ty) < 1.0


def test_paste_back_leaves_pixels_outside_the_mask_unchanged():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rot, shift = random_similarity(rng, 64)
    m = np.c_[rot, shift - 200]
    out = paste_back(image, face, m, feather_mask(64))
    inverse = cv2.invertAffineTransform(m)
    alpha = cv2.warpAffine(feather_mask(64), inverse, (400, 300), flags=cv2.INTER_LINEAR, borderValue=0)
    outside = alpha == 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(out[outside], image[outside])
    assert (out != image).any()


def test_paste_back_of_a_crop_off_the_image_edge():
    image = np.full((100, 100, 3), 7, np.uint8)
    m = np.array([[1.0, 0, 40], [0, 1.0, 40]])  # crop origin at (-40, -40): partly outside
    out = paste_back(image, np.full((64, 64, 3), 200, np.uint8), m, feather_mask(64))
    assert np.all(out[10, 10] == 200)  # crop pixel (50, 50): inside the mask's flat top
    assert np.array_equal(out[40:, 40:], image[40:, 40:])


def test_astronaut_end_to_end(retouch_models, astronaut):
    r = stylert.Retoucher(retouch_models["masks"])
    result = r.retouch(astronaut, 0.8, channels="rgb", with_masks=True)
    assert len(result.faces) == 1
    x1, y1, x2, y2 = result.faces[0].box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200  # the face, not the helmet
    assert set(result.timings_ms) == {"detect", "align", "network", "paste"}
    changed = (result.image != astronaut).any(axis=2)
    assert changed[int(y1):int(y2), int(x1):int(x2)].mean() > 0.5
    assert not changed[350:].any() and not changed[:, 400:].any()
    assert result.extras[0]["mask_spatial_16"].shape == (1, 16, 16)
    bgr = r.retouch(astronaut[:, :, ::-1].copy(), 0.8, channels="bgr")
    assert np.array_equal(bgr.image[:, :, ::-1], result.image)


def test_caller_faces_skip_detection(retouch_models, astronaut):
    class Refuse:
        def detect(self, rgb):
            raise AssertionError("detector must not run")

    r = stylert.Retoucher(retouch_models["plain"], detector=Refuse())
    landmarks = np.array([[204.5, 100.2], [247.3, 103.0], [224.5, 128.2], [201.8, 139.0], [245.5, 141.9]])
    result = r.retouch(astronaut, channels="rgb", faces=[landmarks])
    assert len(result.faces) == 1 and "detect" not in result.timings_ms


def test_two_faces_one_batch_and_selection(retouch_models, astronaut):
    photo = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    r = stylert.Retoucher(retouch_models["plain"])
    assert len(r.retouch(photo, channels="rgb").faces) == 2
    assert len(r.retouch(photo, channels="rgb", largest_face=True).faces) == 1
    center = r.retouch(photo, channels="rgb", only_center_face=True).faces[0]
    assert abs((center.box[0] + center.box[2]) / 2 - 512) < 300


def test_aligned_input(retouch_models):
    r = stylert.Retoucher(retouch_models["plain"])
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    result = r.retouch(crop, channels="rgb", aligned=True)
    assert result.image.shape == (64, 64, 3) and result.faces == []
    with pytest.raises(stylert.InputError, match="square"):
        r.retouch(crop[:, :40], channels="rgb", aligned=True)


def test_no_face_and_too_small(retouch_models, astronaut):
    r = stylert.Retoucher(retouch_models["plain"])
    with pytest.raises(stylert.NoFaceError, match="no face found"):
        r.retouch(np.full((200, 300, 3), 128, np.uint8), channels="rgb")
    tiny = np.array([[100, 100], [106, 100], [103, 104], [101, 107], [105, 107]], float)
    with pytest.raises(stylert.NoFaceError, match="face too small to align"):
        r.retouch(astronaut, channels="rgb", faces=[tiny])


@pytest.mark.parametrize("image,match", [
    (np.zeros((64, 64), np.uint8), "HxWx3 uint8"),
    (np.zeros((64, 64, 4), np.uint8), "HxWx3 uint8"),
    (np.zeros((64, 64, 3), np.float32), "HxWx3 uint8"),
    (np.zeros((64, 64, 3), np.uint16), "HxWx3 uint8"),
    ("photo.jpg", "numpy array"),
])
def test_wrong_api_input(retouch_models, image, match):
    with pytest.raises(stylert.InputError, match=match):
        stylert.Retoucher(retouch_models["plain"]).retouch(image, channels="rgb")


def test_bad_strength_and_channels(retouch_models, astronaut):
    r = stylert.Retoucher(retouch_models["plain"])
    with pytest.raises(stylert.InputError, match="strength"):
        r.retouch(astronaut, -1, channels="rgb")
    with pytest.raises(stylert.InputError, match="channels"):
        r.retouch(astronaut, channels="rgba")
    with pytest.raises(stylert.InputError, match="with-masks"):
        r.retouch(astronaut, channels="rgb", with_masks=True)


def test_model_for_another_call_or_not_onnx(tmp_path, exported):
    with pytest.raises(stylert.ModelError, match="for 'generator', not 'retouch'"):
        stylert.Retoucher(exported["nvlabs"])
    (tmp_path / "m.onnx").write_bytes(b"PK\x03\x04 not onnx")
    with pytest.raises(stylert.ModelError, match="not a loadable ONNX model"):
        stylert.Retoucher(tmp_path / "m.onnx")


def _png_with_size(path, width, height):
    """A valid PNG header claiming width x height (a decompression bomb's shape) with a tiny body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def bad_files(tmp_path, astronaut):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astronaut).save(d / "good.jpg", quality=90)
    jpg = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    Image.fromarray(astronaut).save(d / "full.png")
    (d / "truncated.png").write_bytes((d / "full.png").read_bytes()[:5000])
    (d / "full.png").unlink()
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image")
    Image.fromarray((astronaut.astype(np.uint16) * 257)[:, :, 0]).save(d / "sixteen.png")
    _png_with_size(d / "bomb.png", 60000, 60000)  # Pillow's own bomb limit stops this at open
    _png_with_size(d / "huge.png", 12000, 12000)  # 144 MP: under Pillow's limit, over stylert's 100 MP
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(d / "noface.png")
    Image.fromarray(astronaut).convert("L").save(d / "gray.png")
    Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 77, np.uint8)])).save(d / "rgba.png")
    return d


@pytest.mark.parametrize("name,match", [
    ("missing.png", "no such file"),
    ("empty.png", "empty"),
    ("truncated.jpg", "truncated or corrupt"),
    ("truncated.png", "truncated or corrupt"),
    ("notes.png", "not an image file"),
    ("sixteen.png", "16-bit"),
    ("bomb.png", "over the pixel limit"),
    ("huge.png", "12000x12000 pixels is over the pixel limit"),
])
def test_unreadable_files(bad_files, name, match):
    with pytest.raises(ImageFileError, match=match) as info:
        read_image(bad_files / name)
    assert str(bad_files / name) in str(info.value) and "\n" not in str(info.value)


def test_grayscale_and_rgba_files_keep_their_form(retouch_models, bad_files, tmp_path):
    r = stylert.Retoucher(retouch_models["plain"])
    r.process_file(bad_files / "gray.png", tmp_path / "gray.png")
    with Image.open(tmp_path / "gray.png") as im:
        assert im.mode == "L"
    r.process_file(bad_files / "rgba.png", tmp_path / "rgba.png")
    with Image.open(tmp_path / "rgba.png") as im:
        assert im.mode == "RGBA" and np.all(np.asarray(im)[:, :, 3] == 77)


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1), (3, 2)])  # np.rot90 turns: -1 = clockwise
def test_exif_orientation_is_applied(tmp_path, astronaut, orientation, turns):
    """The pixels land where a viewer shows them: 6 turns the stored image clockwise, 8 counter-clockwise, 3 half."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = astronaut[:, :300].copy()
    photo[:40, :40] = (255, 0, 0)  # a red top-left corner, stored
    Image.fromarray(photo).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rot.jpg") as im:
        stored = np.asarray(im.convert("RGB"))  # Pillow's pixels as stored, not turned
    loaded = read_image(tmp_path / "rot.jpg")
    np.testing.assert_array_equal(loaded.rgb, np.rot90(stored, turns))
    corner = {6: (slice(0, 40), slice(-40, None)), 8: (slice(-40, None), slice(0, 40)),
              3: (slice(-40, None), slice(-40, None))}[orientation]
    assert (np.abs(loaded.rgb[corner].astype(int) - (255, 0, 0)).max(axis=2) < 40).mean() > 0.9  # red, turned
    written = Image.Exif()
    written.load(loaded.exif)
    assert written.get(0x0112, 1) == 1  # applied: the result is written upright


def test_cli_batch_keeps_going_and_writes_no_partial_files(retouch_models, bad_files, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "retouch", str(bad_files), str(bad_files / "missing.png"),
                             "-o", str(out), "--model", str(retouch_models["masks"]), "--masks", "--strength", "0.5"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    failed = {"truncated.jpg", "truncated.png", "empty.png", "notes.png", "sixteen.png", "bomb.png", "huge.png",
              "noface.png", "missing.png"}
    assert sorted(l.split(":")[1].strip().rsplit("/", 1)[-1] for l in errors) == sorted(failed)
    written = {p.name for p in out.iterdir() if ".face" not in p.name}
    assert written == {"good.jpg", "gray.png", "rgba.png"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary or half-written files
    assert (out / "good.face0.mask_spatial_16.png").is_file()
    assert "3 image(s) processed, 9 failed" in result.stdout
    assert "untrained" in result.stderr


def test_cli_refuses_to_overwrite_its_input(retouch_models, bad_files):
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "retouch", str(bad_files / "good.jpg"),
                             "-o", str(bad_files / "good.jpg"), "--model", str(retouch_models["plain"])],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "overwrite the input" in result.stderr
