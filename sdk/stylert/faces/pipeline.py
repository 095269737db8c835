"""The whole-photo face pipeline shared by every call: detect -> align -> network -> paste back.

A call supplies `run(crops) -> (crops_out, extras)` on a batch of aligned crops [N, 3, R, R]
float32 in [-1, 1]; every face of a photo goes through the network in one batch.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import InputError, ModelError, StylertError
from ..runtime.model import Model, open_model
from .align import feather_mask, paste_back, similarity_transform, warp_face
from .detect import Face, FaceDetector
from .imageio import LoadedImage, check_output, read_image, write_image

MIN_FACE_SIZE = 32  # px: smaller faces carry too little detail to align and upsample to the model


class NoFaceError(InputError):
    """No usable face in the image."""


@dataclass
class FaceResult:
    image: np.ndarray  # the whole photo, same channel order as given
    faces: list[Face]  # the faces processed (empty for aligned input)
    timings_ms: dict[str, float] = field(default_factory=dict)
    extras: list[dict[str, np.ndarray]] = field(default_factory=list)  # per face, e.g. BAFS masks
    warning: str | None = None  # about the input file, naming it (LoadedImage.warning: damaged, several frames)

    def summary(self) -> dict:
        """The faces (box, landmarks) and per-stage timings as JSON-ready values (CLI --json, serve)."""
        return {"faces": [{"box": [round(float(v), 1) for v in f.box],
                           "landmarks": [[round(float(c), 1) for c in pt] for pt in f.landmarks]} for f in self.faces],
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


FLOAT32_MAX = float(np.finfo(np.float32).max)


def channel_order(channels) -> str:
    """'rgb' or 'bgr', in either case."""
    if not isinstance(channels, str) or channels.lower() not in ("rgb", "bgr"):
        raise InputError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    return channels.lower()


def control(name: str, value) -> float:
    """A numeric control (strength, fidelity, psi): a real number, finite; anything else refused by name."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not np.isfinite(number):
        raise InputError(f"{name} must be finite, got {value}")
    if abs(number) > FLOAT32_MAX:  # the graphs take float32
        raise InputError(f"{name} must be within +-{FLOAT32_MAX:.4g}, got {value}")
    return number


def seed_control(value) -> int:
    """A seed: any integer >= 0 (numpy's too); anything else refused by name."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def seeded_rows(seed: int, positions: np.ndarray | None, n: int, row_shape: tuple, dtype=np.float64) -> np.ndarray:
    """Row k of default_rng(seed).standard_normal for the face at position k of its photo, so a face
    gets the same draw alone or batched with other photos' faces."""
    pos = np.arange(n) if positions is None else np.asarray(positions)
    return np.random.default_rng(seed).standard_normal((int(pos.max()) + 1, *row_shape), dtype=dtype)[pos]


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


def check_named_image(image, channels: str, name: str) -> np.ndarray:
    """check_image for a photo given as an option (an exemplar): its errors name it."""
    try:
        return check_image(image, channels)
    except InputError as exc:
        raise InputError(f"{name}: {str(exc).removeprefix('image: ')}") from None


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
    try:
        pts = np.asarray(face, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"a face must be a Face or [5, 2] landmarks (numbers), got {face!r:.80}") from None
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
        result = np.ascontiguousarray(prep.rgb)
        for face, matrix in zip(to_uint8(out), prep.matrices):
            result = paste_back(result, face, matrix, self.mask)
        return result

    def result(self, prep: "Prepared", out: np.ndarray, extras: list[dict], channels: str) -> FaceResult:
        """The photo with the network's crops in place: pasted back, or for an aligned input resized to it."""
        if prep.matrices is not None:
            return FaceResult(from_rgb(self.finish(prep, out), channels), prep.faces, prep.timings, extras)
        h, w = prep.rgb.shape[:2]
        image = to_uint8(out)[0]
        if h != self.resolution:
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return FaceResult(from_rgb(image, channels), [], prep.timings, extras)

    def prepare_aligned(self, rgb: np.ndarray) -> "Prepared":
        """An already aligned square face crop, resized to the network's resolution."""
        h, w = rgb.shape[:2]
        if h != w:
            raise InputError(f"aligned input must be square, got {w}x{h}")
        t = time.perf_counter()
        crop = rgb if h == self.resolution else cv2.resize(rgb, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
        return Prepared(rgb, [], None, to_network([crop]), {"align": (time.perf_counter() - t) * 1000})


@dataclass
class Prepared:
    """A photo ready for the network: chosen faces, their transforms (None: the photo is an aligned
    crop), aligned crops [N, 3, R, R] and the call's own per-face inputs (inpaint: the warped mask)."""
    rgb: np.ndarray
    faces: list[Face]
    matrices: list[np.ndarray] | None
    crops: np.ndarray
    timings: dict[str, float]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Chunk:
    """The faces of one network run, from one photo or several: crops [n, 3, R, R], each face's index in
    its photo (a face's seeded draws follow it) and its photo."""
    crops: np.ndarray
    positions: np.ndarray
    photos: list[Prepared]

    @classmethod
    def of(cls, prep: Prepared) -> "Chunk":
        """Every face of one photo."""
        return cls(prep.crops, np.arange(len(prep.crops)), [prep] * len(prep.crops))

    def note(self, stage: str, ms: float) -> None:
        """Record on each photo of the chunk the time of a stage done once for all of them (an exemplar's)."""
        for photo in self.photos:
            photo.timings[stage] = ms

    def gather(self, name: str) -> np.ndarray:
        """The call's per-face input `name` of each face, stacked [n, ...]."""
        return np.stack([photo.inputs[name][k] for photo, k in zip(self.photos, self.positions)])


# The network step of a call with its controls fixed: a chunk of faces -> (crops [n, 3, R, R] float32 in about
# [-1, 1], one dict of extras per face or an empty list).
Runner = Callable[[Chunk], tuple[np.ndarray, list[dict]]]


@dataclass(frozen=True)
class FaceChoice:
    """Which faces of a photo a call works on: given landmarks, an aligned crop, the centre or largest face, or all."""
    faces: Sequence | None = None
    aligned: bool = False
    only_center_face: bool = False
    largest_face: bool = False


DEFAULT_BATCH = 8  # faces per network run in process_batch when the model sets no limit
FACE_OPTIONS = ("faces", "aligned", "only_center_face", "largest_face")  # every call takes these


def batch_size(max_batch, default: int) -> int:
    """Faces per network run: max_batch (any integer >= 1), or the model's limit when None."""
    if max_batch is None:
        return default
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise InputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    return int(max_batch)


def same_file(a, b) -> bool:
    """Whether two paths name one file (links and hard links too); a path that does not resolve (missing, a
    symlink loop) is compared by its real path, never raising."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_face_size(model: Model, resolution: int) -> None:
    """Refuse, when the model opens, a graph whose face tensors (its NCHW inputs, its first output: the face it
    writes back) have a fixed size other than its stylert.resolution: every photo would fail in the network."""
    for role, spec in [*(("input", s) for s in model.inputs), ("output", model.outputs[0])]:
        side = spec.shape[2:] if len(spec.shape) == 4 else ()
        if all(isinstance(d, int) for d in side) and side and tuple(side) != (resolution, resolution):
            raise ModelError(f"{model.path}: {role} {spec.describe()} does not match its metadata stylert.resolution "
                             f"= {resolution}: a damaged or hand-edited model; export it again")


def read_for(src, dst, overwrite: bool = False, allow_damaged: bool = False) -> LoadedImage:
    """Read `src` for a result going to `dst`: refuses to write over the input unless overwrite=True
    and checks that `dst` can hold the result, before any network runs. A damaged image is refused unless
    allow_damaged=True (then its LoadedImage.warning says so)."""
    if not overwrite and same_file(src, dst):
        raise InputError(f"{dst}: would overwrite the input; choose another output (or overwrite=True)")
    loaded = read_image(src, allow_damaged=allow_damaged)
    check_output(dst, loaded.alpha is not None)
    return loaded


def file_report(src, dst, result: FaceResult | StylertError) -> dict:
    """One file's outcome as the CLI reports it (JSON-ready): input, output, error (the message, starting
    with the input's path; None when written), and for a written file faces and timings_ms."""
    if isinstance(result, StylertError):
        message = str(result)  # file errors already start with the path; pipeline errors do not
        return {"input": str(src), "output": None,
                "error": message if message.startswith(str(src)) else f"{src}: {message}"}
    return {"input": str(src), "output": str(dst), "error": None, "warning": result.warning, **result.summary()}


def write_like(dst, result: FaceResult, loaded: LoadedImage) -> None:
    """Write a result as its input was: grayscale stays grayscale; alpha, EXIF and ICC carried through."""
    write_image(dst, result.image, loaded.alpha, loaded.grayscale, exif=loaded.exif, icc=loaded.icc)


class FaceModel:
    """Base of the calls on whole photos (Retoucher, Restorer, Stylizer, Inpainter, Editor): a checked model and the
    one whole-photo loop every call runs (prepare each photo, run its faces in chunks of the batch limit, split the
    timings, paste back, read and write files).

    A call supplies its network step (`runner`) and names its keyword controls (`options`). A call whose photos
    carry an input of their own (inpaint's mask, stylize's label map) overrides `photo_input` / `photo_inputs`;
    one that crops or pastes differently overrides `prepare` / `finish`."""
    call = ""
    default_value: object = 1.0  # the call's value when none is given (strength, fidelity, ...)
    options: tuple[str, ...] = ()  # the call's keyword controls, besides FACE_OPTIONS
    image_options: tuple[str, ...] = ()  # options that are photos in the caller's channel order (an exemplar)

    def __init__(self, model_path, providers=None, detector: FaceDetector | None = None, threads: int | None = None,
                 precision: str | None = None):
        """model_path: an .onnx/.engine file, or a Model already opened (calls.registry.open_call) for this call.
        providers, threads, precision: as open_model takes them, for this graph and any other the call opens."""
        self._providers, self._threads, self._precision = providers, threads, precision
        if isinstance(model_path, Model):
            if model_path.call != self.call:
                raise ModelError(f"{model_path.path}: a model for '{model_path.call}', not '{self.call}'")
            self.model = model_path
        else:
            self.model = self.open_graph(model_path)
        self.resolution = self.model.meta("resolution", int)
        check_face_size(self.model, self.resolution)
        self.pipeline = FacePipeline(self.resolution, detector)

    def open_graph(self, path) -> Model:
        """A graph of this call (the main one, an exemplar graph, a style) on the backend, threads and precision the
        call was opened with."""
        return open_model(path, self._providers, call=self.call, threads=self._threads, precision=self._precision)

    @property
    def trained(self) -> bool:
        return self.model.trained

    @property
    def batch_limit(self) -> int:
        """The most faces one network call takes: an engine's profile maximum, else DEFAULT_BATCH."""
        batch = self.model.metadata.get("engine.batch")
        return int(batch[2]) if isinstance(batch, list) else DEFAULT_BATCH

    # ---- what a call supplies ---------------------------------------------------------------------

    def runner(self, value, **options) -> Runner:
        """The network step for one control value (strength, fidelity, ...) and the call's options; refuses
        controls out of range with InputError."""
        raise NotImplementedError

    def photo_input(self, value, options: dict):
        """A single photo's own input (inpaint: its mask), from the call's value and options; None for most calls."""
        return None

    def photo_inputs(self, value, count: int, options: dict) -> list:
        """Each photo's own input in process_batch."""
        return [self.photo_input(value, options)] * count

    def prepare(self, rgb: np.ndarray, photo_input, choice: FaceChoice, options: dict) -> Prepared:
        """Detect, choose and align (or take an aligned crop): the CPU half before the network."""
        if choice.aligned:
            return self.pipeline.prepare_aligned(rgb)
        return self.pipeline.prepare(rgb, choice.faces, choice.only_center_face, choice.largest_face)

    def finish(self, prep: Prepared, out: np.ndarray, extras: list[dict], channels: str) -> FaceResult:
        """The photo with the network's crops in place."""
        return self.pipeline.result(prep, out, extras, channels)

    # ---- checks -------------------------------------------------------------------------------------

    def check(self, value, **options) -> None:
        """Raise InputError now for a control value or options the call refuses (before a batch starts)."""
        self.runner(value, **self.face_choice(options)[1])

    def face_choice(self, options: dict) -> tuple[FaceChoice, dict]:
        """A call's keyword options (unknown ones refused) split into the faces to work on and the call's controls."""
        self.check_options(options)
        controls = {k: v for k, v in options.items() if k not in FACE_OPTIONS}
        return FaceChoice(**{k: options[k] for k in FACE_OPTIONS if k in options}), controls

    def check_options(self, options: dict) -> None:
        """A keyword the call does not take is named as the public call's, with what it takes."""
        unknown = sorted(set(options) - set(FACE_OPTIONS) - set(self.options))
        if unknown:
            raise TypeError(f"{type(self).__name__}.{self.call}() got unexpected keyword argument(s) {unknown}; "
                            f"it takes {', '.join([*FACE_OPTIONS, *self.options])}")

    # ---- photos -------------------------------------------------------------------------------------

    def process(self, image: np.ndarray, value, *, channels: str, **options) -> FaceResult:
        """The call on a numpy photo (each subclass also names it: retouch, restore, ...); options: the call's
        controls and faces (landmarks), aligned, only_center_face, largest_face."""
        result = self._run([image], [self.photo_input(value, options)], value, channels, options)[0]
        if isinstance(result, StylertError):
            raise result
        return result

    def process_batch(self, images: Sequence[np.ndarray], value, *, channels: str, max_batch: int | None = None,
                      **options) -> list[FaceResult | StylertError]:
        """The call on several photos at once: their faces go through the network together, up to
        max_batch (default: the model's batch limit) per run. Returns one entry per photo, in order:
        its FaceResult, or the StylertError that photo raised (the others still run). A face gets the
        same seeded draws (VSP noise, stylize --seed) as it would alone."""
        if "faces" in options:
            raise TypeError(f"{type(self).__name__}.process_batch() takes no faces= (landmarks are per photo: "
                            f"use {self.call or 'process'}() on each)")
        inputs = self.photo_inputs(value, len(images), options)
        return self._run(images, inputs, value, channels, {**options, "max_batch": max_batch})

    def _run(self, images: Sequence, inputs: list, value, channels: str,
             options: dict) -> list[FaceResult | StylertError]:
        """The loop every call shares: each photo prepared (a photo's error is its entry and the others go on),
        faces in chunks of the batch limit through the runner, each chunk's time shared by its faces, pasted back."""
        options = dict(options)
        limit = batch_size(options.pop("max_batch", None), self.batch_limit)
        channel_order(channels)
        choice, options = self.face_choice(options)
        for name in self.image_options:  # the runner and prepare see RGB, as they see the photos
            if options.get(name) is not None:
                options[name] = check_named_image(options[name], channels, name)
        run = self.runner(value, **options)
        entries: list[Prepared | StylertError] = []
        for image, photo_input in zip(images, inputs):
            try:
                entries.append(self.prepare(check_image(image, channels), photo_input, choice, options))
            except StylertError as exc:
                entries.append(exc)
        faces = [(i, k) for i, e in enumerate(entries) if isinstance(e, Prepared) for k in range(len(e.crops))]
        done: dict[tuple[int, int], tuple[np.ndarray, dict | None]] = {}
        for start in range(0, len(faces), limit):
            part = faces[start:start + limit]
            photos = [entries[i] for i, _ in part]
            chunk = Chunk(np.stack([p.crops[k] for p, (_, k) in zip(photos, part)]), np.array([k for _, k in part]),
                          photos)
            t = time.perf_counter()
            try:
                out, extras = run(chunk)
            except StylertError as exc:
                for i, _ in part:
                    entries[i] = exc
                continue
            share = (time.perf_counter() - t) * 1000 / len(part)
            for j, (i, k) in enumerate(part):
                done[(i, k)] = out[j], extras[j] if extras else None
                if isinstance(entries[i], Prepared):
                    entries[i].timings["network"] = entries[i].timings.get("network", 0.0) + share
        results: list[FaceResult | StylertError] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Prepared):
                results.append(entry)
                continue
            parts = [done[(i, k)] for k in range(len(entry.crops))]
            t = time.perf_counter()
            results.append(self.finish(entry, np.stack([o for o, _ in parts]), [e for _, e in parts if e is not None],
                                       channels))
            entry.timings["paste"] = (time.perf_counter() - t) * 1000
        return results

    # ---- files --------------------------------------------------------------------------------------

    def file_input(self, value, src: Path, options: dict):
        """The photo input of file `src` (inpaint: its mask from a MaskSource)."""
        return self.photo_input(value, options)

    def process_files(self, pairs: Sequence[tuple[Path, Path]], value, *, overwrite: bool = False,
                      allow_damaged: bool = False, **options) -> list[tuple[Path, Path, FaceResult | StylertError]]:
        """(src, dst) files read, processed with their faces through the network together, and written.
        Returns (src, dst, FaceResult or the StylertError of that file) in order; a bad file does not stop the
        others. Each file is read for its output (read_for) and written as its input was (write_like); a damaged
        image is refused unless allow_damaged=True, and then its result's `warning` names it."""
        loaded: dict[int, LoadedImage] = {}
        inputs: dict[int, object] = {}
        results: list[FaceResult | StylertError | None] = [None] * len(pairs)
        for i, (src, dst) in enumerate(pairs):
            try:
                inputs[i] = self.file_input(value, Path(src), options)
                loaded[i] = read_for(src, dst, overwrite, allow_damaged)
            except StylertError as exc:
                results[i] = exc
        ready = sorted(loaded)
        batch = self._run([loaded[i].rgb for i in ready], [inputs[i] for i in ready], value, "rgb",
                          options) if ready else []
        for i, result in zip(ready, batch):
            if not isinstance(result, StylertError):
                result.warning = loaded[i].warning
                try:
                    write_like(pairs[i][1], result, loaded[i])
                except StylertError as exc:
                    result = exc
            results[i] = result
        return [(src, dst, result) for (src, dst), result in zip(pairs, results)]

    def process_file(self, src, dst, value=None, *, overwrite: bool = False, allow_damaged: bool = False,
                     **options) -> FaceResult:
        """Read, process and write one file; grayscale stays grayscale, alpha, EXIF (orientation applied)
        and the ICC profile are carried through. Refuses to write over `src` unless overwrite=True, and
        checks that `dst` can hold the result before the network runs. value: the call's (default_value)."""
        value = self.default_value if value is None else value
        result = self.process_files([(Path(src), Path(dst))], value, overwrite=overwrite, allow_damaged=allow_damaged,
                                    **options)[0][2]
        if isinstance(result, StylertError):
            raise result
        return result
