"""The whole-photo face pipeline shared by every call: detect -> align -> network -> paste back.

A call supplies `run(crops) -> (crops_out, extras)` on a batch of aligned crops [N, 3, R, R]
float32 in [-1, 1]; every face of a photo goes through the network in one batch.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .align import feather_mask, paste_back, similarity_transform, warp_face
from .detect import Face, FaceDetector
from .errors import InputError
from .imageio import check_output, read_image, write_image
from .runtime import open_model

MIN_FACE_SIZE = 32  # px: smaller faces carry too little detail to align and upsample to the model


class NoFaceError(InputError):
    """No usable face in the image."""


@dataclass
class FaceResult:
    image: np.ndarray  # the whole photo, same channel order as given
    faces: list[Face]  # the faces processed (empty for aligned input)
    timings_ms: dict[str, float] = field(default_factory=dict)
    extras: list[dict[str, np.ndarray]] = field(default_factory=list)  # per face, e.g. BAFS masks


def channel_order(channels) -> str:
    """'rgb' or 'bgr', in either case."""
    if not isinstance(channels, str) or channels.lower() not in ("rgb", "bgr"):
        raise InputError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    return channels.lower()


def control(name: str, value) -> float:
    """A numeric control (strength, fidelity, psi): a real number, finite; anything else refused by name."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    return float(value)


def check_image(image, channels: str) -> np.ndarray:
    """An RGB view of a HxWx3 uint8 array given as 'rgb' or 'bgr'; InputError otherwise."""
    channels = channel_order(channels)
    if not isinstance(image, np.ndarray):
        raise InputError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image: expected HxWx3 uint8, got shape {image.shape} dtype {image.dtype} "
                         "(convert grayscale, RGBA or 16-bit images first, or pass a file)")
    if min(image.shape[:2]) < 2:
        raise InputError(f"image: {image.shape[1]}x{image.shape[0]} pixels is too small")
    return image[:, :, ::-1] if channels == "bgr" else image


def from_rgb(rgb: np.ndarray, channels: str) -> np.ndarray:
    """The inverse of check_image's view: back to the caller's channel order (a contiguous copy for BGR)."""
    return np.ascontiguousarray(rgb[:, :, ::-1]) if channel_order(channels) == "bgr" else rgb


def to_network(crops: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 HxWx3 crops -> float32 [N, 3, H, W] in [-1, 1]."""
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0


def to_uint8(batch: np.ndarray) -> np.ndarray:
    """float32 [N, 3, H, W] in about [-1, 1] -> uint8 [N, H, W, 3]."""
    return np.clip(np.rint((batch.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _as_face(face) -> Face:
    if isinstance(face, Face):
        return face
    pts = np.asarray(face, dtype=np.float64)
    if pts.shape != (5, 2):
        raise InputError(f"a face must be a Face or [5, 2] landmarks, got shape {pts.shape}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = (hi - lo).max()
    return Face(np.concatenate([lo - pad, hi + pad]), pts)


DETECT_SIZE = 1280  # long side detection runs at: a 4000x4000 photo took 6.7 s to detect at full size


class FacePipeline:
    def __init__(self, resolution: int, detector: FaceDetector | None = None, min_face_size: int = MIN_FACE_SIZE,
                 detect_size: int | None = DETECT_SIZE):
        self.resolution = resolution
        self._detector = detector
        self.detect_size = detect_size
        self.min_face_size = min_face_size
        self.mask = feather_mask(resolution)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            from .detect import MTCNNDetector
            self._detector = MTCNNDetector()
        return self._detector

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces of the photo; one whose long side exceeds detect_size is detected on a copy scaled down
        to it (INTER_AREA) and the boxes and landmarks are mapped back to full resolution."""
        h, w = rgb.shape[:2]
        scale = 1.0 if not self.detect_size else min(1.0, self.detect_size / max(h, w))
        if scale == 1.0:
            return self.detector.detect(np.ascontiguousarray(rgb))
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        s = np.array([w / small.shape[1], h / small.shape[0]])  # pixel centres: full = (small + 0.5) * s - 0.5
        return [Face(((np.asarray(f.box).reshape(2, 2) + 0.5) * s - 0.5).reshape(4), (f.landmarks + 0.5) * s - 0.5,
                     f.score) for f in self.detector.detect(small)]

    def select(self, faces: list[Face], shape, only_center_face: bool, largest_face: bool) -> list[Face]:
        if not faces:
            raise NoFaceError("no face found")
        usable = [f for f in faces if f.size >= self.min_face_size]
        if not usable:
            raise NoFaceError(f"face too small to align: largest is {max(f.size for f in faces):.0f} px, "
                              f"need >= {self.min_face_size} px")
        if largest_face:
            return [max(usable, key=lambda f: f.size)]
        if only_center_face:
            center = np.array([shape[1] / 2, shape[0] / 2])
            return [min(usable, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - center))]
        return usable

    def prepare(self, rgb: np.ndarray, faces=None, only_center_face: bool = False,
                largest_face: bool = False) -> "Prepared":
        """Detect (unless `faces`, Faces or [5, 2] landmarks, are given), choose and align: the CPU half
        before the network."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if faces is None:
            faces = self.detect(rgb)
            timings["detect"] = (time.perf_counter() - t) * 1000
        else:
            faces = [_as_face(f) for f in faces]
            h, w = rgb.shape[:2]
            for face in faces:
                pts = np.asarray(face.landmarks, np.float64)
                if not np.isfinite(pts).all():
                    raise InputError(f"landmarks contain NaN or infinity: {pts.tolist()}")
                if (pts < 0).any() or (pts[:, 0] > w).any() or (pts[:, 1] > h).any():
                    raise InputError(f"landmarks {np.round(pts, 1).tolist()} lie outside the {w}x{h} image")
        chosen = self.select(faces, rgb.shape, only_center_face, largest_face)
        t = time.perf_counter()
        matrices = [similarity_transform(f.landmarks, self.resolution) for f in chosen]
        crops = to_network([warp_face(rgb, m, self.resolution) for m in matrices])
        timings["align"] = (time.perf_counter() - t) * 1000
        return Prepared(rgb, chosen, matrices, crops, timings)

    def finish(self, prep: "Prepared", out: np.ndarray) -> np.ndarray:
        """Paste the network's crops back into the photo."""
        t = time.perf_counter()
        result = np.ascontiguousarray(prep.rgb)
        for face, matrix in zip(to_uint8(out), prep.matrices):
            result = paste_back(result, face, matrix, self.mask)
        prep.timings["paste"] = (time.perf_counter() - t) * 1000
        return result

    def process(self, image: np.ndarray, run: Callable[[np.ndarray], tuple[np.ndarray, list[dict]]], *, channels: str,
                faces=None, aligned: bool = False, only_center_face: bool = False,
                largest_face: bool = False) -> FaceResult:
        rgb = check_image(image, channels)
        if aligned:
            return self._process_aligned(rgb, run, channels)
        return self.run_prepared(self.prepare(rgb, faces, only_center_face, largest_face), run, channels)

    def run_prepared(self, prep: "Prepared", run: Callable[[np.ndarray], tuple[np.ndarray, list[dict]]],
                     channels: str) -> FaceResult:
        """The network on prepared crops (timed), then paste-back: the second half of `process`."""
        t = time.perf_counter()
        out, extras = run(prep.crops)
        prep.timings["network"] = (time.perf_counter() - t) * 1000
        result = self.finish(prep, out)
        return FaceResult(from_rgb(result, channels), prep.faces, prep.timings, extras)

    def _process_aligned(self, rgb, run, channels) -> FaceResult:
        h, w = rgb.shape[:2]
        if h != w:
            raise InputError(f"aligned input must be square, got {w}x{h}")
        t = time.perf_counter()
        crop = rgb if h == self.resolution else cv2.resize(rgb, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
        timings = {"align": (time.perf_counter() - t) * 1000}
        t = time.perf_counter()
        out, extras = run(to_network([crop]))
        result = to_uint8(out)[0]
        timings["network"] = (time.perf_counter() - t) * 1000
        if h != self.resolution:
            result = cv2.resize(result, (w, h), interpolation=cv2.INTER_LINEAR)
        return FaceResult(from_rgb(result, channels), [], timings, extras)


@dataclass
class Prepared:
    """A photo ready for the network: chosen faces, their transforms and aligned crops [N, 3, R, R]."""
    rgb: np.ndarray
    faces: list[Face]
    matrices: list[np.ndarray]
    crops: np.ndarray
    timings: dict[str, float]


class FaceModel:
    """Base of the per-call APIs (Retoucher, Restorer, ...): a checked ONNX model and the face pipeline."""
    call = ""
    default_value = 1.0  # the call's control value when none is given (strength, fidelity, ...)

    def __init__(self, model_path, providers=None, detector: FaceDetector | None = None, threads: int | None = None):
        self.model = open_model(model_path, providers, call=self.call, threads=threads)
        self.resolution = int(self.model.metadata["stylert.resolution"])
        self.pipeline = FacePipeline(self.resolution, detector)

    @property
    def trained(self) -> bool:
        return self.model.trained

    def runner(self, value: float, **options) -> Callable[[np.ndarray], tuple[np.ndarray, list[dict]]]:
        """The network for one control value (strength, fidelity, ...): aligned crops -> (crops, extras)."""
        raise NotImplementedError

    def check(self, value, **options) -> None:
        """Raise InputError now for a control value or options the call refuses (before a batch starts)."""
        self.runner(value, **options)

    def process(self, image: np.ndarray, value: float, *, channels: str, faces=None, aligned: bool = False,
                only_center_face: bool = False, largest_face: bool = False, **options) -> FaceResult:
        """The call on a numpy photo (each subclass also names it: retouch, restore, ...)."""
        self._check_options(options)
        return self.pipeline.process(image, self.runner(value, **options), channels=channels, faces=faces,
                                     aligned=aligned, only_center_face=only_center_face, largest_face=largest_face)

    def _check_options(self, options: dict) -> None:
        """A keyword the call does not take is named as the public call's, not as an internal's."""
        accepted = [p for p in inspect.signature(self.runner).parameters if p not in ("self",)][1:]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = ", ".join(["faces", "aligned", "only_center_face", "largest_face", *accepted])
            raise TypeError(f"{type(self).__name__}.{self.call}() got unexpected keyword argument(s) {unknown}; "
                            f"it takes {takes}")

    def process_file(self, src, dst, *args, overwrite: bool = False, **options) -> FaceResult:
        """Read, process and write one file; grayscale stays grayscale, alpha, EXIF (orientation applied)
        and the ICC profile are carried through. Refuses to write over `src` unless overwrite=True, and
        checks that `dst` can hold the result before the network runs."""
        if not overwrite and Path(dst).resolve() == Path(src).resolve():
            raise InputError(f"{dst}: would overwrite the input; choose another output (or overwrite=True)")
        loaded = read_image(src)
        check_output(dst, loaded.alpha is not None)
        result = self.process(loaded.rgb, *args, channels="rgb", **options)
        write_image(dst, result.image, loaded.alpha, loaded.grayscale, exif=loaded.exif, icc=loaded.icc)
        return result
