"""Image files in and out, with Pillow.

Reading checks the header before decoding (pixel limit against decompression bombs), applies
the EXIF orientation, and turns every supported mode into RGB uint8 plus what is needed to
write the result back the same way (grayscale stays grayscale, alpha is carried through).
Writing is atomic: a file appears whole or not at all.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import StylertError

MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, far below a decompression bomb
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageFileError(StylertError):
    """An image file that cannot be read or written."""


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None = None  # HxW uint8, carried through untouched
    grayscale: bool = False  # the file was grayscale: write the result back as grayscale


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
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or im.mode.startswith("RGB;16"):
                    raise ImageFileError(f"{path}: {im.mode} ({'16-bit' if '16' in im.mode else 'high bit depth'}) "
                                         "images are not supported; convert to 8-bit")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_loaded(im)
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


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False) -> Path:
    """Write an RGB uint8 HxWx3 array (as grayscale, or with alpha, when asked)."""
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageFileError(f"{path}: expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    im = Image.fromarray(rgb)
    if grayscale:
        im = im.convert("L")
    if alpha is not None:
        if path.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
            raise ImageFileError(f"{path}: '{path.suffix}' cannot hold the input's alpha channel; write .png or .webp")
        im.putalpha(Image.fromarray(alpha))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=path.suffix)
    os.close(fd)
    try:
        try:
            im.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()), quality=95)
        except (KeyError, ValueError, OSError) as exc:
            raise ImageFileError(f"{path}: cannot write this format ({exc})") from None
        os.replace(tmp, path)
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
