"""Seeded synthetic degradations (numpy/OpenCV) for tests, benchmarks and evaluation.

`degrade(image, model="vsp", seed=...)`: the thesis model (seed 001, Sec. 3.4)
    I_de = {[(I * k_sigma) down_r + n_delta]_JPEG_q} up_r,
    sigma in [0.2, 10], r in [1, 8], delta in [0, 20], q in [60, 100].
`degrade(image, model="qc", seed=...)`: the QC-StyleGAN training degradations: one of Gaussian,
    motion, median or box blur (odd kernel 3..31), Gaussian noise of variance 10..650 (0-255
    scale), then a downscale by 0.1..0.9 (and back) or JPEG at quality 30..50.
The same image and seed always give the same output; `params` records what was drawn.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InputError

MODELS = ("vsp", "qc")


@dataclass
class Degraded:
    image: np.ndarray
    params: dict = field(default_factory=dict)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


def _noise(img: np.ndarray, std: float, rng) -> np.ndarray:
    return img + rng.normal(0.0, std, img.shape)


def _motion_kernel(size: int, angle: float) -> np.ndarray:
    k = np.zeros((size, size), np.float32)
    k[size // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
    k = cv2.warpAffine(k, rot, (size, size))
    return k / max(k.sum(), 1e-8)


def _vsp(img: np.ndarray, rng) -> Degraded:
    h, w = img.shape[:2]
    p = {"sigma": float(rng.uniform(0.2, 10)), "scale": float(rng.uniform(1, 8)),
         "noise": float(rng.uniform(0, 20)), "jpeg": int(rng.integers(60, 101))}
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), p["sigma"])
    small = (max(1, round(w / p["scale"])), max(1, round(h / p["scale"])))
    x = cv2.resize(x, small, interpolation=cv2.INTER_LINEAR)
    x = np.clip(np.rint(_noise(x, p["noise"], rng)), 0, 255).astype(np.uint8)
    x = _jpeg(x, p["jpeg"])
    return Degraded(cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR), p)


def _qc(img: np.ndarray, rng) -> Degraded:
    h, w = img.shape[:2]
    kind = str(rng.choice(["gaussian", "motion", "median", "box"]))
    size = int(rng.integers(1, 16)) * 2 + 1  # odd, 3..31
    p: dict = {"blur": kind, "kernel": size}
    if kind == "gaussian":
        x = cv2.GaussianBlur(img, (size, size), 0)
    elif kind == "motion":
        p["angle"] = float(rng.uniform(0, 180))
        x = cv2.filter2D(img, -1, _motion_kernel(size, p["angle"]))
    elif kind == "median":
        x = cv2.medianBlur(img, size)
    else:
        x = cv2.blur(img, (size, size))
    p["noise_var"] = float(rng.uniform(10, 650))
    x = np.clip(np.rint(_noise(x.astype(np.float32), np.sqrt(p["noise_var"]), rng)), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        p["downscale"] = float(rng.uniform(0.1, 0.9))
        small = (max(1, round(w * p["downscale"])), max(1, round(h * p["downscale"])))
        x = cv2.resize(cv2.resize(x, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        p["jpeg"] = int(rng.integers(30, 51))
        x = _jpeg(x, p["jpeg"])
    return Degraded(x, p)


def degrade(image: np.ndarray, model: str = "vsp", seed: int = 0) -> Degraded:
    """A degraded copy of an RGB uint8 HxWx3 image, reproducible from `seed`."""
    if model not in MODELS:
        raise InputError(f"unknown degradation model {model!r}; expected one of {MODELS}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("degrade expects an RGB uint8 HxWx3 array")
    rng = np.random.default_rng(seed)
    out = (_vsp if model == "vsp" else _qc)(np.ascontiguousarray(image), rng)
    out.params = {"model": model, "seed": seed, **out.params}
    return out
