"""Image files in and out (OpenCV, headless). Writes are atomic: no half-written outputs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import StylertError


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 HxWx3 array; the file appears whole or not at all."""
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise StylertError(f"{path}: expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    ok, data = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise StylertError(f"{path}: OpenCV cannot encode '{path.suffix}' files")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
