"""Inpainting on whole photos with a model from `stylert export inpaint`: EXE-GAN (faces, exemplar-guided)
or GRIG (any image).

The mask is an array the size of the photo (nonzero = fill) or the name of a face region drawn from the
detected landmarks (`REGIONS`). Only pixels inside the mask change: every pixel outside it is the input's,
byte for byte.

EXE-GAN: faces are detected and aligned as for retouch; the mask is warped with each face's crop (nearest
neighbour); faces the mask does not touch are left alone. Each crop is filled with the exemplar's codes (the
largest face of the exemplar photo, aligned the same way; without an exemplar, pSp's average-face codes),
with z and noise drawn from the seed for each face position, then warped back and pasted inside the mask.

GRIG: no face needed. A square around the mask's bounding box, with as much context again on every side
and at least the model's size (reflected where it leaves the photo), is resized to the model's size and
run through `steps` reasoning steps (the graph is one step: every intermediate I^t is kept in the
result's extras), resized back and pasted inside the mask.
"""
from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import InputError, ModelError, StylertError
from ..faces.align import paste_inside
from ..faces.detect import Face
from ..faces.imageio import IMAGE_SUFFIXES, ImageFileError, LoadedImage, read_mask
from ..faces.pipeline import FaceModel, FaceResult, NoFaceError, Prepared, check_image, control, from_rgb, \
    read_for, seeded_rows, to_network, to_uint8, write_like
from ..runtime.model import Model, open_model

DEFAULT_STEPS = 3  # GRIG's reasoning steps at test time (thesis Sec. 4.3.1)
MAX_STEPS = 16


def _ellipse(canvas: np.ndarray, center, axes, angle: float) -> None:
    cv2.ellipse(canvas, (int(round(center[0] * 16)), int(round(center[1] * 16))),
                (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16)))), angle, 0, 360, 1, -1,
                cv2.LINE_8, 4)


def _eye(canvas, pts, d, angle, i):
    _ellipse(canvas, pts[i], (0.30 * d, 0.20 * d), angle)


def _region_eyes(canvas, pts, d, angle):
    _eye(canvas, pts, d, angle, 0)
    _eye(canvas, pts, d, angle, 1)


def _region_glasses(canvas, pts, d, angle):
    _ellipse(canvas, (pts[0] + pts[1]) / 2, (1.0 * d, 0.36 * d), angle)


def _region_nose(canvas, pts, d, angle, up):
    _ellipse(canvas, pts[2] + 0.2 * d * up, (0.26 * d, 0.42 * d), angle)


def _region_mouth(canvas, pts, d, angle, up):
    center, half = (pts[3] + pts[4]) / 2, np.linalg.norm(pts[4] - pts[3]) / 2
    _ellipse(canvas, center, (half + 0.2 * d, 0.32 * d), angle)


def _region_lower_face(canvas, pts, d, angle, up):
    top, chin = pts[2] + 0.35 * d * up, (pts[3] + pts[4]) / 2 - 0.85 * d * up  # the bridge of the nose, the chin
    _ellipse(canvas, (top + chin) / 2, (1.0 * d, np.linalg.norm(top - chin) / 2), angle)


# name -> what it covers, drawn around the five landmarks (eyes, nose tip, mouth corners) of each face and
# sized by the distance between the eyes, so it follows the face's scale and tilt.
REGIONS = {
    "eyes": "both eyes",
    "left_eye": "the eye on the image's left",
    "right_eye": "the eye on the image's right",
    "glasses": "a band across both eyes and the bridge of the nose (glasses, sunglasses)",
    "nose": "the nose",
    "mouth": "the mouth and lips",
    "lower_face": "the bridge of the nose to the chin, cheek to cheek (a face mask)",
}


def region_mask(shape: tuple[int, int], faces: Sequence[Face], region: str) -> np.ndarray:
    """HxW bool: `region` (REGIONS) of every face, from its landmarks."""
    if region not in REGIONS:
        raise InputError(f"unknown face region {region!r}; regions: {', '.join(REGIONS)}")
    canvas = np.zeros(shape[:2], np.uint8)
    for face in faces:
        pts = np.asarray(face.landmarks, np.float64)
        across = pts[1] - pts[0]
        d = float(np.linalg.norm(across))
        angle = math.degrees(math.atan2(across[1], across[0]))
        up = np.array([across[1], -across[0]]) / max(d, 1e-6)  # towards the forehead
        if region in ("left_eye", "right_eye"):
            _eye(canvas, pts, d, angle, 0 if region == "left_eye" else 1)
        elif region == "eyes":
            _region_eyes(canvas, pts, d, angle)
        elif region == "glasses":
            _region_glasses(canvas, pts, d, angle)
        else:
            {"nose": _region_nose, "mouth": _region_mouth, "lower_face": _region_lower_face}[region](
                canvas, pts, d, angle, up)
    return canvas.astype(bool)


def fill_mask(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A caller's mask -> HxW bool (nonzero = fill): 2-D, or HxWx1/3/4 (any channel nonzero), the photo's size."""
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name}: expected a numpy array or a region name ({', '.join(REGIONS)}), "
                         f"got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        mask = mask.any(axis=2) if mask.dtype == bool else np.abs(mask).max(axis=2)
    if mask.ndim != 2:
        raise InputError(f"{name}: expected an HxW mask, got shape {mask.shape}")
    if mask.shape != tuple(shape[:2]):
        raise InputError(f"{name}: the mask is {mask.shape[1]}x{mask.shape[0]}, the photo {shape[1]}x{shape[0]}: "
                         "give a mask the size of the photo")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise InputError(f"{name}: the mask holds NaN or infinity")
    if mask.dtype.kind not in "biuf":
        raise InputError(f"{name}: a mask of dtype {mask.dtype}; give bool or numbers (nonzero = fill)")
    return mask != 0


def check_fill(fill: np.ndarray, name: str = "mask") -> None:
    if not fill.any():
        raise InputError(f"{name}: the mask is empty (no nonzero pixel): nothing to inpaint")
    if fill.all():
        raise InputError(f"{name}: the mask covers the whole image: nothing is left to inpaint from")


@dataclass
class MaskSource:
    """Where each photo's mask comes from in the CLI and the batch job: one file for every photo, a folder
    holding a mask per photo (same name, or same stem with any image suffix), or a face region."""
    file: Path | None = None
    folder: Path | None = None
    region: str | None = None
    say: Callable[[str], None] | None = None  # told once how each non-binary or 16-bit mask was read
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if sum(x is not None for x in (self.file, self.folder, self.region)) != 1:
            raise InputError("give one of a mask file, a masks folder or a region")
        if self.region is not None and self.region not in REGIONS:
            raise InputError(f"unknown face region {self.region!r}; regions: {', '.join(REGIONS)}")
        if self.folder is not None and not Path(self.folder).is_dir():
            raise InputError(f"{self.folder}: no such masks folder")
        if self.file is not None and not Path(self.file).is_file():
            raise InputError(f"{self.file}: no such mask file")

    def path_for(self, src: Path) -> Path:
        if self.file is not None:
            return Path(self.file)
        folder = Path(self.folder)
        for candidate in [folder / src.name] + [folder / f"{src.stem}{s}" for s in IMAGE_SUFFIXES]:
            if candidate.is_file():
                return candidate
        raise ImageFileError(f"{src}: no mask for it in {self.folder} (looked for {src.stem}.png and other image "
                             "types)")

    def for_photo(self, src: Path) -> np.ndarray | str:
        """The mask of photo `src`: a bool array, or the region name."""
        if self.region is not None:
            return self.region
        loaded = read_mask(self.path_for(Path(src)))
        if loaded.note and loaded.note not in self.notes:
            self.notes.append(loaded.note)
            if self.say:
                self.say(loaded.note)
        return loaded.fill


@dataclass
class _Job:
    """One photo on its way through the network: its face crops (EXE-GAN) or its context square (GRIG)."""
    rgb: np.ndarray
    fill: np.ndarray
    timings: dict[str, float]
    faces: list[Face] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)  # crop -> photo paste transforms (EXE-GAN)
    crops: np.ndarray | None = None  # [n, 3, R, R] in [-1, 1]
    crop_masks: np.ndarray | None = None  # [n, 1, R, R] float32, 1 = fill
    box: tuple[int, int, int] | None = None  # GRIG: the square (x, y, side) in photo pixels
    guides: dict[str, np.ndarray] = field(default_factory=dict)  # photo-sized guidance warped like the mask (edit)
    outputs: list[np.ndarray] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)


class Inpainter(FaceModel):
    """`Inpainter("exe256.onnx").inpaint(image, mask, channels="rgb", exemplar=None, seed=0)` on a HxWx3 uint8 photo.

    mask: HxW (or HxWx1/3/4) array the size of the photo, nonzero = fill, or a region name (REGIONS).
    exemplar (EXE-GAN): a photo of a face whose features guide the fill (same channel order as the image).
    seed: z and noise (EXE-GAN), the noise injections (GRIG): the same seed gives the same result.
    psi (EXE-GAN): truncation of z toward the average style (default 1, none). steps (GRIG): reasoning
    steps (default 3).
    """
    call = "inpaint"
    default_value = None

    def __init__(self, model_path, providers=None, detector=None, threads: int | None = None):
        super().__init__(model_path, providers, detector, threads)
        meta = self.model.metadata
        self.method = meta.get("stylert.method", "?")
        if meta.get("stylert.role") not in ("generator", "step"):
            raise ModelError(f"{self.model.path}: an inpaint '{meta.get('stylert.role')}' graph; open the generator "
                             "graph (the exemplar graph is found beside it)")
        self._providers, self._threads = providers, threads
        self._exemplar_model: Model | None = None
        if self.method == "exe-gan":
            self.num_codes, self.code_dim = int(meta["stylert.num_codes"]), int(meta["stylert.code_dim"])
            self.default_codes = np.frombuffer(base64.b64decode(meta["stylert.default_codes"]), "<f4").reshape(
                self.num_codes, self.code_dim).astype(np.float32)
        self.noise_size = int(meta["stylert.noise_size"])

    # ---- controls -------------------------------------------------------------------------------

    def runner(self, mask, exemplar=None, seed: int = 0, psi: float | None = None, steps: int | None = None):
        """Checks the call's controls (`check`); inpainting runs through `process_batch`."""
        if isinstance(mask, str) and mask not in REGIONS:
            raise InputError(f"unknown face region {mask!r}; regions: {', '.join(REGIONS)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        if self.method == "grig":
            if exemplar is not None:
                raise InputError(f"{self.model.path.name} is a GRIG model: it takes no exemplar (EXE-GAN models do)")
            if psi is not None:
                raise InputError(f"{self.model.path.name} is a GRIG model: psi is EXE-GAN's truncation")
            steps = DEFAULT_STEPS if steps is None else steps
            if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
                raise InputError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
        else:
            if steps is not None:
                raise InputError(f"{self.model.path.name} is an EXE-GAN model: steps are GRIG's reasoning steps")
            psi = 1.0 if psi is None else control("psi", psi)
            if not 0.0 <= psi <= 1.0:
                raise InputError(f"psi must be in [0, 1], got {psi}")
        return None

    def _options(self, seed, psi, steps) -> tuple[int, float, int]:
        return int(seed), 1.0 if psi is None else float(psi), DEFAULT_STEPS if steps is None else int(steps)

    # ---- the exemplar ---------------------------------------------------------------------------

    @property
    def exemplar_model(self) -> Model:
        """The exemplar graph beside the generator (same suffix: .onnx, or .engine for TensorRT), opened once."""
        if self._exemplar_model is None:
            name = self.model.metadata.get("stylert.exemplar_graph")
            if not name:
                raise ModelError(f"{self.model.path}: no exemplar graph named in its metadata")
            path = self.model.path.with_name(Path(name).stem + self.model.path.suffix)
            if not path.is_file():
                raise ModelError(f"{path}: the exemplar graph of {self.model.path.name} is missing; "
                                 "`stylert export inpaint` writes it beside the generator")
            self._exemplar_model = open_model(path, self._providers, call="inpaint", threads=self._threads)
        return self._exemplar_model

    def exemplar_crop(self, exemplar, channels: str) -> np.ndarray:
        """The exemplar photo's largest face, aligned like the photo's; its errors name the exemplar."""
        try:
            rgb = check_image(exemplar, channels)
        except InputError as exc:
            raise InputError(f"exemplar: {str(exc).removeprefix('image: ')}") from None
        try:
            return self.pipeline.prepare(rgb, None, largest_face=True).crops[0]
        except NoFaceError as exc:
            raise NoFaceError(f"exemplar: {exc}") from None

    def exemplar_codes(self, exemplar, channels: str) -> tuple[np.ndarray, float]:
        """codes [K, code_dim] of the exemplar photo's largest face (aligned like the photo's), and the ms taken."""
        t = time.perf_counter()
        crop = self.exemplar_crop(exemplar, channels)
        codes = self.exemplar_model.run({"image": crop[None]})["codes"][0]
        return codes, (time.perf_counter() - t) * 1000

    # ---- whole photos ---------------------------------------------------------------------------

    def inpaint(self, image: np.ndarray, mask, exemplar=None, seed: int = 0, psi: float | None = None,
                steps: int | None = None, *, channels: str, **options) -> FaceResult:
        """Inpaint the mask of one photo; options: faces (landmarks), aligned, only_center_face, largest_face."""
        return self.process(image, mask, channels=channels, exemplar=exemplar, seed=seed, psi=psi, steps=steps,
                            **options)

    def inpaint_file(self, src, dst, mask, **options) -> FaceResult:
        return self.process_file(src, dst, mask, **options)

    def process(self, image: np.ndarray, value, *, channels: str, faces=None, aligned: bool = False,
                only_center_face: bool = False, largest_face: bool = False, **options) -> FaceResult:
        self._check_options(options)
        results = self._batch([image], [value], channels, faces, aligned, only_center_face, largest_face, None,
                              **options)
        if isinstance(results[0], StylertError):
            raise results[0]
        return results[0]

    def process_batch(self, images: Sequence[np.ndarray], value, *, channels: str, aligned: bool = False,
                      only_center_face: bool = False, largest_face: bool = False, max_batch: int | None = None,
                      **options) -> list[FaceResult | StylertError]:
        """Several photos, their crops through the network together; `value`: one mask per photo (a list), or one
        region name for all. One entry per photo: its FaceResult or its StylertError (the others still run)."""
        self._check_options(options)
        masks = [value] * len(images) if isinstance(value, str) else list(value)
        if len(masks) != len(images):
            raise InputError(f"{len(images)} photos but {len(masks)} masks: give one mask per photo")
        return self._batch(images, masks, channels, None, aligned, only_center_face, largest_face, max_batch, **options)

    def _batch(self, images, masks, channels, faces, aligned, only_center_face, largest_face, max_batch,
               exemplar=None, seed=0, psi=None, steps=None) -> list[FaceResult | StylertError]:
        self.runner(masks[0] if masks else None, exemplar, seed, psi, steps)
        seed, psi, steps = self._options(seed, psi, steps)
        limit = max_batch or self.batch_limit
        if not isinstance(limit, int) or limit < 1:
            raise InputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        codes, exemplar_ms = self.default_codes if self.method == "exe-gan" else None, None
        if exemplar is not None:
            codes, exemplar_ms = self.exemplar_codes(exemplar, channels)

        def prepare(rgb, mask):
            if self.method == "grig":
                return self._prepare_grig(rgb, mask, faces, only_center_face, largest_face)
            return self._prepare_exe(rgb, mask, faces, aligned, only_center_face, largest_face)

        jobs = self._prepare_each(images, masks, channels, exemplar_ms, prepare)
        ready = [j for j in jobs if isinstance(j, _Job)]
        if self.method == "grig":
            self._run_grig(ready, seed, steps, limit)
        else:
            self._run_exe(ready, codes, seed, psi, limit)
        return [j if isinstance(j, StylertError) else self._finish(j, channels) for j in jobs]

    @staticmethod
    def _prepare_each(images, masks, channels: str, exemplar_ms: float | None, prepare) -> list[_Job | StylertError]:
        """Each photo checked and made a job by `prepare(rgb, mask)`; a photo's error is its entry and the others go
        on; `exemplar_ms`, when an exemplar was given, is each job's "exemplar" timing."""
        jobs: list[_Job | StylertError] = []
        for image, mask in zip(images, masks):
            try:
                job = prepare(check_image(image, channels), mask)
                if exemplar_ms is not None:
                    job.timings["exemplar"] = exemplar_ms
                jobs.append(job)
            except StylertError as exc:
                jobs.append(exc)
        return jobs

    def _fill_for(self, rgb: np.ndarray, mask, faces: list[Face]) -> np.ndarray:
        fill = region_mask(rgb.shape, faces, mask) if isinstance(mask, str) else fill_mask(mask, rgb.shape)
        check_fill(fill, f"mask ({mask})" if isinstance(mask, str) else "mask")
        return fill

    def _prepare_exe(self, rgb, mask, faces, aligned, only_center_face, largest_face,
                     guides: dict[str, np.ndarray] | None = None) -> _Job:
        """Detect and align; the mask (and any photo-sized guidance, nearest neighbour) warped with each face's crop;
        faces the mask does not touch dropped. Guidance comes back per face as [n, R, R(, C)]."""
        r, guides = self.resolution, guides or {}
        if aligned:
            if isinstance(mask, str):
                raise InputError("a region mask needs the face's landmarks: not with aligned input; give a mask array")
            fill = self._fill_for(rgb, mask, [])
            prep: Prepared = self.pipeline.prepare_aligned(rgb)
            crop_mask = cv2.resize(fill.astype(np.uint8), (r, r), interpolation=cv2.INTER_NEAREST)
            warped = {k: cv2.resize(g, (r, r), interpolation=cv2.INTER_NEAREST)[None] for k, g in guides.items()}
            return _Job(rgb, fill, prep.timings, [], [], prep.crops, crop_mask[None, None].astype(np.float32),
                        guides=warped)
        if not isinstance(mask, str):
            fill_mask(mask, rgb.shape)  # a wrong size is refused before detection
        prep = self.pipeline.prepare(rgb, faces, only_center_face, largest_face)
        fill = self._fill_for(rgb, mask, prep.faces)
        t = time.perf_counter()

        def warp(image, matrix):
            return cv2.warpAffine(image, matrix, (r, r), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)

        keep, crop_masks = [], []
        for k, matrix in enumerate(prep.matrices):
            warped = warp(fill.astype(np.uint8), matrix)
            if warped.any():
                keep.append(k)
                crop_masks.append(warped)
        if not keep:
            raise NoFaceError(f"no face meets the mask ({len(prep.faces)} face(s) found, none under the mask)")
        crops = {name: np.stack([warp(g, prep.matrices[k]) for k in keep]) for name, g in guides.items()}
        prep.timings["align"] += (time.perf_counter() - t) * 1000
        return _Job(rgb, fill, prep.timings, [prep.faces[k] for k in keep], [prep.matrices[k] for k in keep],
                    prep.crops[keep], np.stack(crop_masks)[:, None].astype(np.float32), guides=crops)

    def _run_exe(self, jobs: list[_Job], codes: np.ndarray, seed: int, psi: float, limit: int) -> None:
        items = [(j, k) for j in jobs for k in range(len(j.crops))]
        draws = self.code_dim + self.noise_size
        for start in range(0, len(items), limit):
            chunk = items[start:start + limit]
            positions = np.array([k for _, k in chunk])
            rows = seeded_rows(seed, positions, len(chunk), (draws,), np.float32)
            feeds = {"image": np.stack([j.crops[k] for j, k in chunk]),
                     "mask": np.stack([j.crop_masks[k] for j, k in chunk]),
                     "codes": np.broadcast_to(codes, (len(chunk), *codes.shape)).astype(np.float32),
                     "z": np.ascontiguousarray(rows[:, :self.code_dim]),
                     "psi": np.full(len(chunk), psi, np.float32),
                     "noise": np.ascontiguousarray(rows[:, self.code_dim:])}
            t = time.perf_counter()
            out = to_uint8(self.model.run(feeds)["inpainted"])
            share = (time.perf_counter() - t) * 1000 / len(chunk)
            for (job, _), crop in zip(chunk, out):
                job.outputs.append(crop)
                job.timings["network"] = job.timings.get("network", 0.0) + share

    def _prepare_grig(self, rgb, mask, faces, only_center_face, largest_face) -> _Job:
        timings: dict[str, float] = {}
        found: list[Face] = []
        if isinstance(mask, str):
            prep = self.pipeline.prepare(rgb, faces, only_center_face, largest_face)
            found, timings = prep.faces, prep.timings
        fill = self._fill_for(rgb, mask, found)
        t = time.perf_counter()
        s = self.resolution
        ys, xs = np.nonzero(fill)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        side = int(max(2 * max(x1 - x0, y1 - y0), s))
        h, w = fill.shape
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        bx = int(min(max(cx - side // 2, 0), max(w - side, 0))) if side <= w else int(cx - side // 2)
        by = int(min(max(cy - side // 2, 0), max(h - side, 0))) if side <= h else int(cy - side // 2)
        square = _square(rgb, bx, by, side)
        square_fill = _square(fill.astype(np.uint8), bx, by, side, reflect=False)
        shrink = side > s
        crop = cv2.resize(square, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        crop_mask = (cv2.resize(square_fill.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA) > 0 if shrink
                     else cv2.resize(square_fill, (s, s), interpolation=cv2.INTER_NEAREST) > 0)
        timings["align"] = timings.get("align", 0.0) + (time.perf_counter() - t) * 1000
        return _Job(rgb, fill, timings, found, [], to_network([crop]), crop_mask[None, None].astype(np.float32),
                    (bx, by, side))

    def _run_grig(self, jobs: list[_Job], seed: int, steps: int, limit: int) -> None:
        noise = np.random.default_rng(seed).standard_normal((steps, self.noise_size), dtype=np.float32)
        for start in range(0, len(jobs), limit):
            chunk = jobs[start:start + limit]
            mask = np.concatenate([j.crop_masks for j in chunk])
            x = np.concatenate([j.crops for j in chunk]) * (1 - mask)  # I^0 = I_in
            t = time.perf_counter()
            history = []
            for step in range(steps):
                x = self.model.run({"image": x, "mask": mask,
                                    "noise": np.broadcast_to(noise[step], (len(chunk), self.noise_size)).copy()})[
                    "inpainted"]
                history.append(to_uint8(x))
            share = (time.perf_counter() - t) * 1000 / len(chunk)
            for i, job in enumerate(chunk):
                job.outputs.append(history[-1][i])
                job.steps = [h[i] for h in history]
                job.timings["network"] = share

    def _finish(self, job: _Job, channels: str) -> FaceResult:
        t = time.perf_counter()
        result = np.ascontiguousarray(job.rgb).copy()
        extras: list[dict] = []
        if self.method == "grig":
            bx, by, side = job.box
            back = cv2.resize(job.outputs[0], (side, side),
                              interpolation=cv2.INTER_CUBIC if side > self.resolution else cv2.INTER_AREA)
            h, w = result.shape[:2]
            x0, y0, x1, y1 = max(bx, 0), max(by, 0), min(bx + side, w), min(by + side, h)
            region = back[y0 - by:y1 - by, x0 - bx:x1 - bx]
            inside = job.fill[y0:y1, x0:x1]
            result[y0:y1, x0:x1][inside] = region[inside]
            extras.append({"steps": np.stack(job.steps), "box": np.array([bx, by, side])})
        elif not job.matrices:  # an aligned crop: the output resized to the photo
            h, w = result.shape[:2]
            back = job.outputs[0] if h == self.resolution else cv2.resize(job.outputs[0], (w, h),
                                                                          interpolation=cv2.INTER_LINEAR)
            result[job.fill] = back[job.fill]
        else:
            for crop, matrix in zip(job.outputs, job.matrices):
                result = paste_inside(result, crop, matrix, job.fill)
        job.timings["paste"] = (time.perf_counter() - t) * 1000
        return FaceResult(from_rgb(result, channels), job.faces, job.timings, extras)

    # ---- files ----------------------------------------------------------------------------------

    def process_file(self, src, dst, mask, *, overwrite: bool = False, **options) -> FaceResult:
        """Read, inpaint and write one photo; `mask` is an array, a region name, a mask file path or a MaskSource."""
        result = self.process_files([(Path(src), Path(dst))], mask, overwrite=overwrite, **options)[0][2]
        if isinstance(result, StylertError):
            raise result
        return result

    def process_files(self, pairs, value, *, overwrite: bool = False,
                      **options) -> list[tuple[Path, Path, FaceResult | StylertError]]:
        """(src, dst) photos read, inpainted together and written; `value` gives each photo's mask (a MaskSource,
        a mask file, an array or a region). A photo without a usable mask is that photo's error."""
        if isinstance(value, (str, Path)) and not (isinstance(value, str) and value in REGIONS):
            value = MaskSource(file=Path(value))
        loaded: dict[int, LoadedImage] = {}
        masks: dict[int, np.ndarray | str] = {}
        results: list[FaceResult | StylertError | None] = [None] * len(pairs)
        for i, (src, dst) in enumerate(pairs):
            try:
                masks[i] = value.for_photo(Path(src)) if isinstance(value, MaskSource) else value
                loaded[i] = read_for(src, dst, overwrite)
            except StylertError as exc:
                results[i] = exc
        ready = sorted(loaded)
        batch = self.process_batch([loaded[i].rgb for i in ready], [masks[i] for i in ready], channels="rgb",
                                   **options) if ready else []
        for i, result in zip(ready, batch):
            if not isinstance(result, StylertError):
                try:
                    write_like(pairs[i][1], result, loaded[i])
                except StylertError as exc:
                    result = exc
            results[i] = result
        return [(src, dst, result) for (src, dst), result in zip(pairs, results)]


def _square(image: np.ndarray, x: int, y: int, side: int, reflect: bool = True) -> np.ndarray:
    """image[y:y+side, x:x+side], padded (reflected, or zeros) where the square leaves the image."""
    h, w = image.shape[:2]
    top, left = max(0, -y), max(0, -x)
    bottom, right = max(0, y + side - h), max(0, x + side - w)
    part = image[max(y, 0):min(y + side, h), max(x, 0):min(x + side, w)]
    if top or left or bottom or right:
        part = cv2.copyMakeBorder(part, top, bottom, left, right,
                                  cv2.BORDER_REFLECT_101 if reflect else cv2.BORDER_CONSTANT, value=0)
    return np.ascontiguousarray(part)
