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

import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

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


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageFileError(f"{path}: {w}x{h} pixels is over the pixel limit of {max_pixels:,} "
                                         "(possible decompression bomb)")
                raw = str(im.tile[0][3]) if im.tile and len(im.tile[0]) > 3 else ""
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or "16" in im.mode or "16" in raw:
                    raise ImageFileError(f"{path}: a 16-bit ({im.mode}) image; stylert works on 8-bit photos: convert it "
                                         "first (e.g. `convert in.png -depth 8 out.png`)")
                im.load()
                icc = im.info.get("icc_profile") or None
                im = ImageOps.exif_transpose(im)
                exif = im.getexif()
                if 0x0112 in exif:
                    exif[0x0112] = 1
                loaded = _to_loaded(im)
                loaded.exif, loaded.icc = (exif.tobytes() if len(exif) else None), icc
                return loaded
    except ImageFileError:
        raise
    except UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as exc:  # Pillow refuses far larger headers at open
        raise ImageFileError(f"{path}: over the pixel limit ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{path}: truncated or corrupt image ({exc})") from None


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
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageFileError(f"{path}: cannot write '{path.suffix}' images; use one of {', '.join(IMAGE_SUFFIXES)}")
    if alpha and path.suffix.lower() in NO_ALPHA:
        raise ImageFileError(f"{path}: '{path.suffix}' cannot hold the input's alpha channel; write .png or .webp")


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False,
                exif: bytes | None = None, icc: bytes | None = None) -> Path:
    """Write an RGB uint8 HxWx3 array (as grayscale, or with alpha, when asked), with the EXIF and ICC
    profile of its input where the format holds them."""
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageFileError(f"{path}: expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    check_output(path, alpha is not None)
    im = Image.fromarray(rgb)
    if grayscale:
        im = im.convert("L")
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))
    extra: dict = {}
    if path.suffix.lower() in METADATA_FORMATS:
        extra = {k: v for k, v in (("exif", exif), ("icc_profile", icc)) if v}
    # Pillow creates the file with open(): the umask decides its mode, as for any file the user makes.
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()), quality=95, **extra)
        os.replace(tmp, path)
    except (KeyError, ValueError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ImageFileError(f"{path}: cannot write it ({reason})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """A label map file (face-parsing classes as pixel values) -> HxW uint8: L and P (palette
    index) images as they are, other modes by their first channel."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such label map file")
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ImageFileError(f"{path}: {im.size[0]}x{im.size[1]} pixels is over the pixel limit")
            im.load()
            arr = np.asarray(im if im.mode in ("L", "P") else im.convert("RGB"))
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{path}: not a readable label map ({exc})") from None
    return np.ascontiguousarray(arr if arr.ndim == 2 else arr[:, :, 0]).astype(np.uint8)
