"""Image files in and out, with Pillow.

Photos, masks and label maps go through one decoder (`_decoded`): it opens only regular files (never
blocking on a FIFO), checks the header before decoding (pixel limit against decompression bombs,
the longest side), refuses JPEG data that libjpeg reports damaged (and Pillow would decode), keeps Pillow's warnings
off the terminal, and turns every failure into one ImageFileError naming the file. Reading applies
the EXIF orientation, and turns every supported mode into RGB uint8 plus what is needed to
write the result back the same way (grayscale stays grayscale, alpha is carried through).
Writing is atomic (a file appears whole or not at all) and follows the umask like any other
file the user creates. EXIF (orientation reset, since it was applied) and the ICC colour profile
are carried from input to output: pixels are processed in the file's own colour space and written
back tagged with the same profile, so a wide-gamut photo keeps its colours.
"""
from __future__ import annotations

import errno
import functools
import io
import os
import re
import stat
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, far below a decompression bomb
# The longest side decoded. Pillow's row buffers are sized in C ints: a PNG row of 90 M RGB pixels (a 57-byte file
# declaring 100,000,000 x 1, at the pixel limit) raises MemoryError. No photo comes near a million pixels a side.
MAX_SIDE = 1_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
NO_ALPHA = (".jpg", ".jpeg", ".bmp")
METADATA_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")  # formats that hold EXIF and ICC
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a channel
OPT_IN = "--allow-damaged (Python: allow_damaged=True) reads it anyway"


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
    # What the caller should tell the user about the file, in one line starting with its name, or None: a damaged
    # file read with allow_damaged=True ("a.jpg: damaged image data (libjpeg: Corrupt JPEG data: premature end of
    # data segment); read anyway"), a file of several frames of which only the first is read. The CLI prints it as a
    # warning.
    warning: str | None = None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS, *, allow_damaged: bool = False) -> LoadedImage:
    """A photo file -> RGB uint8 with the EXIF orientation applied. Every file it cannot read is an ImageFileError
    whose message starts with the path: not a regular file (missing, a folder, a FIFO, a link to nothing, a link
    loop), empty, not an image, truncated or corrupt, over the pixel limit, more than 8 bits a channel, or damaged (a
    JPEG whose data libjpeg reports corrupt or ending early, which it fills in grey or wrong). allow_damaged=True
    reads a damaged JPEG anyway and says so in the result's `warning`, as it says a file has several frames."""
    path = Path(path)
    with _open_file(path, str(path), "") as f:
        return _photo(f, str(path), max_pixels, allow_damaged)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS, *,
                 allow_damaged: bool = False) -> LoadedImage:
    """An image file's bytes (e.g. an HTTP request body) -> LoadedImage, with read_image's checks;
    `name` starts every error message, as the path does for files."""
    if not data:
        raise ImageFileError(f"{name}: empty (no image bytes)")
    return _photo(io.BytesIO(data), name, max_pixels, allow_damaged)


def _open_file(path: Path, name: str, kind: str) -> BinaryIO:
    """`path` opened for reading when it is a non-empty regular file (or a link to one); else ImageFileError naming
    it. Opened without blocking and checked on the open descriptor: a FIFO named like an image would block open()
    until something wrote to it, and nothing can swap the path between the check and the read."""
    what = f"{kind} file" if kind else "file"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        link = " (a link to a missing file)" if path.is_symlink() else ""
        raise ImageFileError(f"{name}: no such {what}{link}") from None
    except OSError as exc:
        reason = "a loop of symbolic links" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise ImageFileError(f"{name}: cannot read it ({reason})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind_of = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                       "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise ImageFileError(f"{name}: {kind_of}, not an image file")
        if os.fstat(fd).st_size == 0:
            raise ImageFileError(f"{name}: file is empty")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _photo(source: BinaryIO, name: str, max_pixels: int, allow_damaged: bool) -> LoadedImage:
    im, damage = _decoded(source, name, max_pixels, "", deep=False, allow_damaged=allow_damaged)
    with im:
        fmt, icc = im.format, im.info.get("icc_profile") or None
        frames = getattr(im, "n_frames", 1) if fmt != "MPO" else 1  # MPO: a photo, then its previews or depth maps
        oriented, exif = _oriented(im)
        loaded = _to_loaded(oriented, name)
    loaded.exif, loaded.icc, loaded.format = exif, icc if isinstance(icc, bytes) else None, fmt
    notes = [f"damaged image data ({damage}); read anyway"] if damage else []
    if frames > 1:
        notes.append(f"{frames} frames (an animation or a multi-page file): only the first is read, and an output "
                     "written from it has that one frame")
    loaded.warning = f"{name}: {'; '.join(notes)}" if notes else None
    return loaded


def _decoded(source: BinaryIO, name: str, max_pixels: int, kind: str, deep: bool,
             allow_damaged: bool = False) -> tuple[Image.Image, str | None]:
    """The one decoder of photos, masks and label maps: an open file or BytesIO -> the loaded Pillow image and, when
    allow_damaged let a damaged JPEG through, what is wrong with it. Every refusal is an ImageFileError naming the
    file (`name`; `kind`, "mask" or "label map", says what it was read as). Checks the header before decoding (the
    pixel limit, the longest side, more than 8 bits a channel unless `deep`). Pillow's warnings (e.g. the two-line
    "Corrupt EXIF data" ones, which name no file) are dropped here: the metadata they concern is read as far as it
    can be, the pixels are not affected, and a damaged pixel stream is an error of its own."""
    opt_in = OPT_IN if not kind else "masks and label maps are never read damaged"

    def refuse(detail: str) -> ImageFileError:
        return ImageFileError(f"{name}: not a readable {kind}: {detail}" if kind else f"{name}: {detail}")

    size = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: our own limit decides; EXIF warnings: see above
        try:
            im = Image.open(source)
            try:
                w, h = im.size
                size = f"{w}x{h} pixels"
                if w * h > max_pixels:
                    raise refuse(f"{size} is over the pixel limit of {max_pixels:,} (possible decompression bomb)")
                if max(w, h) > MAX_SIDE:
                    raise refuse(f"{size} is too large to decode (a side over {MAX_SIDE:,} pixels)")
                raw = str(im.tile[0][3]) if im.tile and len(im.tile[0]) > 3 else ""
                if not deep and (im.mode in DEEP_MODES or "16" in im.mode or "16" in raw):
                    bits = "32-bit" if im.mode in ("I", "F") else "16-bit"
                    raise refuse(f"a {bits} ({im.mode}) image; stylert works on 8-bit photos: convert it first "
                                 "(e.g. `convert in.png -depth 8 out.png`)")
                jpeg = im.format in ("JPEG", "MPO")
                if im.format == "TIFF":
                    _quiet_libtiff()
                try:
                    im.load()
                except OSError as exc:
                    if not (jpeg and "truncated" in str(exc)):
                        raise
                    cut = "the file is cut short: the rest is grey"
                    if not allow_damaged:
                        raise refuse(f"damaged image data (truncated or corrupt: {cut}); {opt_in}") from None
                    data = _all_bytes(source) + b"\xff\xd9"  # libjpeg decodes what there is when the end follows
                    im.close()
                    im = Image.open(io.BytesIO(data))
                    im.load()
                    return im, cut
                damage = _jpeg_damage(source) if jpeg else None
                if damage and not allow_damaged:
                    raise refuse(f"damaged image data ({damage}); {opt_in}")
                return im, damage
            except BaseException:
                im.close()
                raise
        except ImageFileError:
            raise
        except UnidentifiedImageError:
            raise refuse("not an image file (or a format Pillow cannot read)") from None
        except Image.DecompressionBombError as exc:  # Pillow refuses far larger headers at open
            raise refuse(f"over the pixel limit ({exc})") from None
        except MemoryError:
            raise refuse(f"{size or 'the image'} is too large to decode (out of memory)") from None
        except Exception as exc:  # noqa: BLE001 - a decoder fed hostile bytes raises many kinds; each means unreadable
            raise refuse(f"truncated or corrupt image ({exc or type(exc).__name__})") from None


@functools.lru_cache(maxsize=None)
def _quiet_libtiff() -> None:
    """Pillow silences libtiff's warnings but not its errors, which libtiff prints to stderr without the file's name
    (a corrupt LZW TIFF: dozens of "Using code not yet in table." lines around stylert's one error line). Pillow
    raises for them all the same, so the printing is switched off (the error handler set to none) in the libtiff
    Pillow loaded; found by its path in /proc/self/maps (Linux; elsewhere nothing changes). Process-wide, once."""
    try:
        import ctypes

        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libtiff" in line}
        for path in paths:
            handler = ctypes.CDLL(path).TIFFSetErrorHandler
            handler.argtypes, handler.restype = [ctypes.c_void_p], ctypes.c_void_p
            handler(None)
    except (OSError, AttributeError):
        pass


def _all_bytes(source: BinaryIO) -> bytes:
    source.seek(0)
    return source.read()


# libjpeg's warnings that the entropy-coded data is damaged (jerror.h JWRN_*): it ran out (the rest decodes as zeros:
# flat grey, or blurred in a progressive file), or it does not decode as coded (a flipped bit: wrong pixels from there
# on, and bytes left over before the next marker). "bad ICC marker" is about metadata; the JFIF-version and
# Adobe-transform warnings are not damage.
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")


def _jpeg_damage(source: BinaryIO) -> str | None:
    """libjpeg's own warning about a JPEG's data that decoded (Pillow drops these), or None. The file is decoded once
    more by libjpeg-turbo in strict mode (simplejpeg), which raises at the first warning."""
    data = _all_bytes(source)
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", fastdct=True, fastupsample=True, strict=True)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(JPEG_DAMAGE) and "ICC" not in message and not _padded_end(message, data):
            return f"libjpeg: {message}"
    return None


def _padded_end(message: str, data: bytes) -> bool:
    """Whether libjpeg's "extraneous bytes" are one byte repeated just before the end-of-image marker: padding some
    cameras write after a whole image (a scan that lost step leaves coded data there instead)."""
    match = re.fullmatch(r"Corrupt JPEG data: (\d+) extraneous bytes before marker 0xd9", message)
    if not match or not data.endswith(b"\xff\xd9"):
        return False
    return len(set(data[-2 - int(match[1]):-2])) == 1


def _oriented(im: Image.Image) -> tuple[Image.Image, bytes | None]:
    """The image turned as its EXIF orientation says, and the EXIF to write with the result (orientation reset to 1).
    EXIF is metadata: one that cannot be parsed leaves the pixels as stored (as a viewer that cannot read it shows
    them) and is not carried to the output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            oriented = ImageOps.exif_transpose(im)
            exif = oriented.getexif()
            if 0x0112 in exif:
                exif[0x0112] = 1
            return oriented, (exif.tobytes() if len(exif) else None)
        except Exception:  # noqa: BLE001 - hostile EXIF raises SyntaxError, struct.error, TypeError, ...
            return im, None


def _to_loaded(im: Image.Image, name: str) -> LoadedImage:
    try:
        return _as_rgb(im)
    except (ValueError, OSError) as exc:  # e.g. LAB or HSV TIFFs: no conversion to RGB
        raise ImageFileError(f"{name}: a {im.mode} image stylert cannot read as RGB ({exc})") from None


def _as_rgb(im: Image.Image) -> LoadedImage:
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
    index) images as they are, other modes by their first channel. Read by the photos' decoder: it refuses what
    read_image refuses (16-bit aside), with the file's name."""
    with _source(source, name, "label map") as (stream, name):
        im, _ = _decoded(stream, name, MAX_PIXELS, "label map", deep=True)
        with im:
            try:
                arr = np.asarray(im if im.mode in ("L", "P") else im.convert("RGB"))
            except (ValueError, OSError) as exc:
                raise ImageFileError(f"{name}: not a readable label map: a {im.mode} image ({exc})") from None
    return np.ascontiguousarray(arr if arr.ndim == 2 else arr[:, :, 0]).astype(np.uint8)


@contextmanager
def _source(source: str | Path | bytes, name: str | None, kind: str) -> Iterator[tuple[BinaryIO, str]]:
    """A mask's or label map's file (opened as read_image opens photos) or bytes, and the name its errors start with."""
    if isinstance(source, (bytes, bytearray)):
        name = name or kind
        if not source:
            raise ImageFileError(f"{name}: empty (no image bytes)")
        yield io.BytesIO(source), name
        return
    path = Path(source)
    name = name or str(path)
    with _open_file(path, name, kind) as f:
        yield f, name


@dataclass
class LoadedMask:
    fill: np.ndarray  # HxW bool: True where the image is to be filled (the file's nonzero pixels)
    note: str | None = None  # how a mask that is not plain black and white was read


def read_mask(source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS) -> LoadedMask:
    """A mask image (a file, or a file's bytes) -> fill where nonzero, with the EXIF orientation applied like a
    photo's. Painted transparency (an alpha channel that is not all opaque) is the mask; otherwise any nonzero
    channel. 16-bit and non-binary masks are read the same way and `note` says so. Read by the photos' decoder: it
    refuses what read_image refuses (16-bit aside; a damaged JPEG always), with the file's name."""
    with _source(source, name, "mask") as (stream, name):
        loaded, _ = _decoded(stream, name, max_pixels, "mask image", deep=True)
        with loaded:
            im, _ = _oriented(loaded)
            deep = im.mode in DEEP_MODES
            try:
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "L")
                if im.mode in ("LA", "RGBA", "PA") and np.asarray(im.getchannel("A")).min() < 255:
                    values, what = np.asarray(im.getchannel("A")), "its alpha channel"
                elif deep:
                    values, what = np.asarray(im), "its 16-bit values"
                else:
                    values = np.asarray(im.convert("L") if im.mode in ("1", "L", "LA") else im.convert("RGB"))
                    values, what = (values.max(axis=2) if values.ndim == 3 else values), "its pixels"
            except (ValueError, OSError) as exc:
                raise ImageFileError(f"{name}: not a readable mask image: a {im.mode} image ({exc})") from None
    levels = np.unique(values)
    note = None
    if deep:
        note = f"{name}: a 16-bit mask: read as fill wherever {what[4:]} are nonzero"
    elif len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        note = (f"{name}: not a black-and-white mask ({len(levels)} levels, {levels.min()}..{levels.max()}): read as "
                f"fill wherever {what[4:]} are nonzero; save masks as black (keep) and white (fill) PNG")
    return LoadedMask(values != 0, note)
