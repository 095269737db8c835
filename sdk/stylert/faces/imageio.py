"""Image files in and out, with Pillow.

Reading checks the header before decoding (pixel limit against decompression bombs), applies
the EXIF orientation, and turns every supported mode into RGB uint8 plus what is needed to
write the result back the same way (grayscale stays grayscale, alpha is carried through).
Writing is atomic (a file appears whole or not at all) and follows the umask like any other
file the user creates. EXIF (orientation reset, since it was applied) and the ICC colour profile
are carried from input to output: pixels are processed in the file's own colour space and written
back tagged with the same profile, so a wide-gamut photo keeps its colours.
"""
from __future__ import annotations

import io
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, far below a decompression bomb
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
NO_ALPHA = (".jpg", ".jpeg", ".bmp")
METADATA_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")  # formats that hold EXIF and ICC


class ImageFileError(InputError):
    """An image file that cannot be read or written (an InputError: one `except` catches every bad input)."""


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None = None  # HxW uint8, carried through untouched
    grayscale: bool = False  # the file was grayscale: write the result back as grayscale
    exif: bytes | None = None  # the file's EXIF, orientation reset to 1 (already applied to the pixels)
    icc: bytes | None = None  # the file's ICC colour profile
    format: str | None = None  # Pillow's name of the file's format: JPEG, PNG, WEBP, ...


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: file is empty")
    return _decode(path, str(path), max_pixels)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """An image file's bytes (e.g. an HTTP request body) -> LoadedImage, with read_image's checks;
    `name` starts every error message, as the path does for files."""
    if not data:
        raise ImageFileError(f"{name}: empty (no image bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            with Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageFileError(f"{name}: {w}x{h} pixels is over the pixel limit of {max_pixels:,} "
                                         "(possible decompression bomb)")
                raw = str(im.tile[0][3]) if im.tile and len(im.tile[0]) > 3 else ""
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or "16" in im.mode or "16" in raw:
                    raise ImageFileError(f"{name}: a 16-bit ({im.mode}) image; stylert works on 8-bit photos: convert it "
                                         "first (e.g. `convert in.png -depth 8 out.png`)")
                im.load()
                fmt, icc = im.format, im.info.get("icc_profile") or None
                im = ImageOps.exif_transpose(im)
                exif = im.getexif()
                if 0x0112 in exif:
                    exif[0x0112] = 1
                loaded = _to_loaded(im)
                loaded.exif, loaded.icc, loaded.format = (exif.tobytes() if len(exif) else None), icc, fmt
                return loaded
    except ImageFileError:
        raise
    except UnidentifiedImageError:
        raise ImageFileError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as exc:  # Pillow refuses far larger headers at open
        raise ImageFileError(f"{name}: over the pixel limit ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{name}: truncated or corrupt image ({exc})") from None


def _to_loaded(im: Image.Image) -> LoadedImage:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("1", "L"):
        return LoadedImage(np.asarray(im.convert("RGB")), grayscale=True)
    if im.mode == "LA":
        return LoadedImage(np.asarray(im.convert("RGB")), np.asarray(im.getchannel("A")), grayscale=True)
    if im.mode in ("RGBA", "RGBa", "PA"):
        im = im.convert("RGBA")
        arr = np.asarray(im)
        return LoadedImage(np.ascontiguousarray(arr[:, :, :3]), np.ascontiguousarray(arr[:, :, 3]))
    return LoadedImage(np.asarray(im.convert("RGB")))


def check_output(path: str | Path, alpha: bool = False) -> None:
    """Refuse, before any work, an output the writer could not produce: unknown extension, or an
    alpha channel to a format without one."""
    _check_format(str(path), Path(path).suffix, alpha)


def _check_format(name: str, suffix: str, alpha: bool) -> None:
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageFileError(f"{name}: cannot write '{suffix}' images; use one of {', '.join(IMAGE_SUFFIXES)}")
    if alpha and suffix.lower() in NO_ALPHA:
        raise ImageFileError(f"{name}: '{suffix}' cannot hold the input's alpha channel; write .png or .webp")


def encode_image(rgb: np.ndarray, suffix: str, alpha: np.ndarray | None = None, grayscale: bool = False,
                 exif: bytes | None = None, icc: bytes | None = None, name: str = "image") -> bytes:
    """An RGB uint8 HxWx3 array -> the bytes of an image file of type `suffix` (".png", ".jpg", ...),
    as grayscale or with alpha when asked, with the EXIF and ICC profile where the format holds them.
    write_image writes exactly these bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageFileError(f"{name}: expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    _check_format(name, suffix, alpha is not None)
    im = Image.fromarray(rgb)
    if grayscale:
        im = im.convert("L")
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))
    extra: dict = {}
    if suffix.lower() in METADATA_FORMATS:
        extra = {k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v}
    out = io.BytesIO()
    try:
        im.save(out, format=Image.registered_extensions()[suffix.lower()], quality=95, **extra)
    except (KeyError, ValueError, OSError) as exc:
        raise ImageFileError(f"{name}: cannot encode it as {suffix} ({exc})") from None
    return out.getvalue()


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False,
                exif: bytes | None = None, icc: bytes | None = None) -> Path:
    """Write an RGB uint8 HxWx3 array (as grayscale, or with alpha, when asked), with the EXIF and ICC
    profile of its input where the format holds them; atomically (a file appears whole or not at all)."""
    path = Path(path)
    data = encode_image(rgb, path.suffix, alpha, grayscale, exif, icc, name=str(path))
    # The file is created with open(): the umask decides its mode, as for any file the user makes.
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_labels(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """A label map (a file, or a file's bytes; face-parsing classes as pixel values) -> HxW uint8: L and P (palette
    index) images as they are, other modes by their first channel."""
    if isinstance(source, (bytes, bytearray)):
        path, stream = name or "label map", io.BytesIO(source)
    else:
        path = stream = Path(source)
        if not path.is_file():
            raise ImageFileError(f"{path}: no such label map file")
    try:
        with Image.open(stream) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ImageFileError(f"{path}: {im.size[0]}x{im.size[1]} pixels is over the pixel limit")
            im.load()
            arr = np.asarray(im if im.mode in ("L", "P") else im.convert("RGB"))
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{path}: not a readable label map ({exc})") from None
    return np.ascontiguousarray(arr if arr.ndim == 2 else arr[:, :, 0]).astype(np.uint8)


@dataclass
class LoadedMask:
    fill: np.ndarray  # HxW bool: True where the image is to be filled (the file's nonzero pixels)
    note: str | None = None  # how a mask that is not plain black and white was read


def read_mask(source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS) -> LoadedMask:
    """A mask image (a file, or a file's bytes) -> fill where nonzero, with the EXIF orientation applied like a
    photo's. Painted transparency (an alpha channel that is not all opaque) is the mask; otherwise any nonzero
    channel. 16-bit and non-binary masks are read the same way and `note` says so."""
    if isinstance(source, (bytes, bytearray)):
        name = name or "mask"
        if not source:
            raise ImageFileError(f"{name}: empty (no image bytes)")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ImageFileError(f"{name}: no such mask file")
        stream = path
    try:
        with Image.open(stream) as im:
            if im.size[0] * im.size[1] > max_pixels:
                raise ImageFileError(f"{name}: {im.size[0]}x{im.size[1]} pixels is over the pixel limit")
            im.load()
            im = ImageOps.exif_transpose(im)
            deep = im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "L")
            if im.mode in ("LA", "RGBA", "PA") and np.asarray(im.getchannel("A")).min() < 255:
                values, what = np.asarray(im.getchannel("A")), "its alpha channel"
            elif deep:
                values, what = np.asarray(im), "its 16-bit values"
            else:
                values = np.asarray(im.convert("L") if im.mode in ("1", "L", "LA") else im.convert("RGB"))
                values, what = (values.max(axis=2) if values.ndim == 3 else values), "its pixels"
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{name}: not a readable mask image ({exc})") from None
    levels = np.unique(values)
    note = None
    if deep:
        note = f"{name}: a 16-bit mask: read as fill wherever {what[4:]} are nonzero"
    elif len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        note = (f"{name}: not a black-and-white mask ({len(levels)} levels, {levels.min()}..{levels.max()}): read as "
                f"fill wherever {what[4:]} are nonzero; save masks as black (keep) and white (fill) PNG")
    return LoadedMask(values != 0, note)
