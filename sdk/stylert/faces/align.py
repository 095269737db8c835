"""FFHQ face alignment and paste-back, with OpenCV.

align: a similarity transform (rotation, uniform scale, translation) that takes the five
landmarks onto the FFHQ template, scaled to the model's resolution, and the warped crop.
paste_back: the inverse warp of the processed crop and of a feathered mask, composited only
inside the bounding box of the warped crop; every pixel where the mask is 0 is returned
bit-identical to the input. paste_inside: the inverse warp of the crop written only where a
photo-sized mask is set (inpainting), with no feathering.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError

# Five-point FFHQ template at 512x512 (facexlib / GFPGAN / CodeFormer "ffhq_512"): eyes, nose, mouth corners.
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)


def template(size: int) -> np.ndarray:
    return FFHQ_512 * (size / 512.0)


def similarity_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix taking `landmarks` [5, 2] onto the template at `size` (least squares, LMEDS-robust)."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(pts, template(size), method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        raise InputError("cannot align the face: degenerate landmarks")
    return matrix


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned size x size crop (reflected border where the crop leaves the photo)."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


FEATHER_ZERO_BELOW = 1e-3  # the blurred mask's tail, cut to 0: pixels that far out keep the photo exactly


def feather_geometry(size: int) -> tuple[int, float]:
    """(margin, sigma) of the feather mask of a size x size crop: a border of size/16, blurred over size/32."""
    return max(size // 16, 2), max(size / 32.0, 1.0)


def feather_mask(size: int) -> np.ndarray:
    """Crop-space float32 mask: 1 inside, 0 on a border of size/16, smoothed over about size/32."""
    margin, sigma = feather_geometry(size)
    mask = np.zeros((size, size), np.float32)
    mask[margin:-margin, margin:-margin] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask[mask < FEATHER_ZERO_BELOW] = 0.0
    return mask


def paste_back(image: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Composite the processed crop `face` back into `image` (uint8 HxWx3) through the inverse of `matrix`."""
    size = face.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    x0, y0, x1, y1 = _crop_box(size, inverse, image.shape)
    out = image.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    local = inverse.copy()
    local[:, 2] -= (x0, y0)
    box = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, local, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, local, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = image[y0:y1, x0:x1]
    blended = region.astype(np.float32) + alpha[:, :, None] * (warped.astype(np.float32) - region)
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(alpha[:, :, None] > 0, blended, region)
    return out


def _crop_box(size: int, inverse: np.ndarray, shape) -> tuple[int, int, int, int]:
    """Photo-pixel bounding box (x0, y0, x1, y1) of a size x size crop mapped back by `inverse`, clipped."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    h, w = shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, [w, h])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 0, [w, h])
    return int(x0), int(y0), int(x1), int(y1)


def paste_inside(image: np.ndarray, face: np.ndarray, matrix: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The crop `face` warped back through the inverse of `matrix` and written into a copy of `image` only where
    `fill` (HxW bool) is set and the crop covers the pixel: everything else stays the input's, byte for byte."""
    size = face.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    x0, y0, x1, y1 = _crop_box(size, inverse, image.shape)
    out = image.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    local = inverse.copy()
    local[:, 2] -= (x0, y0)
    box = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, local, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpAffine(np.ones((size, size), np.uint8), local, box, flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    inside = fill[y0:y1, x0:x1] & covered
    out[y0:y1, x0:x1][inside] = warped[inside]
    return out
