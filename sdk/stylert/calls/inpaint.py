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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import InputError, ModelError
from ..faces.align import paste_inside
from ..faces.detect import Face
from ..faces.imageio import IMAGE_SUFFIXES, ImageFileError, read_mask
from ..faces.pipeline import Chunk, FaceChoice, FaceModel, FaceResult, NoFaceError, Prepared, Runner, control, \
    from_rgb, seed_control, seeded_rows, to_network, to_uint8
from ..runtime.engine import model_metadata
from ..runtime.model import Model

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
    if mask.dtype.kind not in "biuf":
        raise InputError(f"{name}: a mask of dtype {mask.dtype}; give bool or numbers (nonzero = fill)")
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        mask = mask.any(axis=2) if mask.dtype == bool else np.abs(mask).max(axis=2)
    if mask.ndim != 2:
        raise InputError(f"{name}: expected an HxW mask, got shape {mask.shape}")
    if mask.shape != tuple(shape[:2]):
        raise InputError(f"{name}: the mask is {mask.shape[1]}x{mask.shape[0]}, the photo {shape[1]}x{shape[0]}: "
                         "give a mask the size of the photo")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise InputError(f"{name}: the mask holds NaN or infinity")
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
class MaskedPhoto(Prepared):
    """A photo with its fill mask (HxW bool); per face, the mask warped with its crop is the "mask" input
    [n, 1, R, R] (1 = fill). box: GRIG's context square (x, y, side) in photo pixels."""
    fill: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    box: tuple[int, int, int] | None = None


def _fill_for(rgb: np.ndarray, mask, faces: Sequence[Face]) -> np.ndarray:
    fill = region_mask(rgb.shape, faces, mask) if isinstance(mask, str) else fill_mask(mask, rgb.shape)
    check_fill(fill, f"mask ({mask})" if isinstance(mask, str) else "mask")
    return fill


def check_region(mask) -> None:
    if isinstance(mask, str) and mask not in REGIONS:
        raise InputError(f"unknown face region {mask!r}; regions: {', '.join(REGIONS)}")


class MaskedCall(FaceModel):
    """A call that fills a mask on each face (EXE-GAN, FACEMUG): the call's value is each photo's mask (an array
    or a region name); the mask and any photo-sized guidance are warped with each face's crop (nearest neighbour);
    faces the mask does not touch are left alone; only pixels inside the mask change."""
    default_value = None
    image_options: tuple[str, ...] = ("exemplar",)
    controls: Callable[..., dict]  # each call's keyword controls checked, with their defaults (no network runs)

    def photo_input(self, value, options: dict):
        return value

    def photo_inputs(self, value, count: int, options: dict) -> list:
        """One mask per photo (a list), or one region name for all."""
        masks = [value] * count if isinstance(value, str) else list(value)
        if len(masks) != count:
            raise InputError(f"{count} photos but {len(masks)} masks: give one mask per photo")
        return masks

    def file_input(self, value, src: Path, options: dict):
        """The mask of file `src`: from a MaskSource, a mask file's path, an array or a region name."""
        if isinstance(value, (str, Path)) and not (isinstance(value, str) and value in REGIONS):
            value = MaskSource(file=Path(value))
        return value.for_photo(src) if isinstance(value, MaskSource) else value

    def check(self, value, **options) -> None:
        controls = self.face_choice(options)[1]
        check_region(value)
        self.controls(**controls)

    def guides(self, rgb: np.ndarray, options: dict) -> dict[str, np.ndarray]:
        """Photo-sized guidance to warp with each face's crop, checked (none here)."""
        return {}

    def exemplar_crop(self, exemplar) -> np.ndarray:
        """The exemplar photo's (RGB) largest face, aligned like the photo's; its errors name the exemplar."""
        try:
            return self.pipeline.prepare(exemplar, None, largest_face=True).crops[0]
        except NoFaceError as exc:
            raise NoFaceError(f"exemplar: {exc}") from None

    def prepare(self, rgb: np.ndarray, mask, choice: FaceChoice, options: dict) -> MaskedPhoto:
        """Detect and align; the mask and guidance warped with each face's crop; faces the mask misses dropped."""
        r, guides = self.resolution, self.guides(rgb, options)
        if choice.aligned:
            if isinstance(mask, str):
                raise InputError("a region mask needs the face's landmarks: not with aligned input; give a mask array")
            fill = _fill_for(rgb, mask, [])
            prep = self.pipeline.prepare_aligned(rgb)
            inputs = {name: cv2.resize(g, (r, r), interpolation=cv2.INTER_NEAREST)[None]
                      for name, g in {**guides, "mask": fill.astype(np.uint8)}.items()}
            inputs["mask"] = inputs["mask"][:, None].astype(np.float32)
            return MaskedPhoto(rgb, [], None, prep.crops, prep.timings, inputs, fill)
        if not isinstance(mask, str):
            fill_mask(mask, rgb.shape)  # a wrong size is refused before detection
        prep = self.pipeline.prepare(rgb, choice.faces, choice.only_center_face, choice.largest_face)
        fill = _fill_for(rgb, mask, prep.faces)
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
        inputs = {name: np.stack([warp(g, prep.matrices[k]) for k in keep]) for name, g in guides.items()}
        inputs["mask"] = np.stack(crop_masks)[:, None].astype(np.float32)
        prep.timings["align"] += (time.perf_counter() - t) * 1000
        return MaskedPhoto(rgb, [prep.faces[k] for k in keep], [prep.matrices[k] for k in keep], prep.crops[keep],
                           prep.timings, inputs, fill)

    def finish(self, prep: MaskedPhoto, out: np.ndarray, extras: list[dict], channels: str) -> FaceResult:
        """The network's crops pasted inside the mask only (an aligned crop: resized to the photo)."""
        result = np.ascontiguousarray(prep.rgb).copy()
        crops = to_uint8(out)
        if prep.matrices is None:
            h, w = result.shape[:2]
            back = crops[0] if h == self.resolution else cv2.resize(crops[0], (w, h), interpolation=cv2.INTER_LINEAR)
            result[prep.fill] = back[prep.fill]
        else:
            for crop, matrix in zip(crops, prep.matrices):
                result = paste_inside(result, crop, matrix, prep.fill)
        return FaceResult(from_rgb(result, channels), prep.faces, prep.timings, extras)


class Inpainter(MaskedCall):
    """`Inpainter("exe256.onnx").inpaint(image, mask, channels="rgb", exemplar=None, seed=0)` on a HxWx3 uint8 photo.

    Opens an EXE-GAN or a GRIG model as its own call class (EXEGANInpainter, GRIGInpainter), chosen by the model's
    metadata. mask: HxW (or HxWx1/3/4) array the size of the photo, nonzero = fill, or a region name (REGIONS).
    exemplar (EXE-GAN): a photo of a face whose features guide the fill (same channel order as the image).
    seed: z and noise (EXE-GAN), the noise injections (GRIG): the same seed gives the same result.
    psi (EXE-GAN): truncation of z toward the average style (default 1, none). steps (GRIG): reasoning
    steps (default 3).
    """
    call = "inpaint"
    method = ""
    options = ("exemplar", "seed", "psi", "steps")

    def __new__(cls, model_path, *args, **kwargs):
        if cls is Inpainter:  # an unreadable file goes on to EXE-GAN's, whose opening names what is wrong with it
            try:
                method = model_metadata(model_path).get("stylert.method")
            except ModelError:
                method = None
            cls = next((c for c in (EXEGANInpainter, GRIGInpainter) if c.method == method), EXEGANInpainter)
        return super().__new__(cls)

    def __init__(self, model_path, providers=None, detector=None, threads: int | None = None,
                 precision: str | None = None):
        super().__init__(model_path, providers, detector, threads, precision)
        meta = self.model.metadata
        if meta.get("stylert.role") not in ("generator", "step"):
            raise ModelError(f"{self.model.path}: an inpaint '{meta.get('stylert.role')}' graph; open the generator "
                             "graph (the exemplar graph is found beside it)")
        if meta.get("stylert.method") != self.method:
            raise ModelError(f"{self.model.path}: an inpaint model of method {meta.get('stylert.method')!r}; "
                             f"this runs {EXEGANInpainter.method!r} and {GRIGInpainter.method!r}")
        self.noise_size = self.model.meta("noise_size", int)

    def inpaint(self, image: np.ndarray, mask, exemplar=None, seed: int = 0, psi: float | None = None,
                steps: int | None = None, *, channels: str, **options) -> FaceResult:
        """Inpaint the mask of one photo; options: faces (landmarks), aligned, only_center_face, largest_face."""
        return self.process(image, mask, channels=channels, exemplar=exemplar, seed=seed, psi=psi, steps=steps,
                            **options)


class EXEGANInpainter(Inpainter):
    """EXE-GAN: faces detected and aligned; each crop filled with the exemplar's codes (without an exemplar,
    pSp's average-face codes), z and noise drawn from the seed for each face position."""
    method = "exe-gan"

    def __init__(self, model_path, providers=None, detector=None, threads: int | None = None,
                 precision: str | None = None):
        super().__init__(model_path, providers, detector, threads, precision)
        self._exemplar_model: Model | None = None
        self.num_codes, self.code_dim = self.model.meta("num_codes", int), self.model.meta("code_dim", int)
        self.default_codes = self.model.meta("default_codes", "b64f32", shape=(self.num_codes, self.code_dim))

    def controls(self, exemplar=None, seed: int = 0, psi: float | None = None, steps: int | None = None) -> dict:
        if steps is not None:
            raise InputError(f"{self.model.path.name} is an EXE-GAN model: steps are GRIG's reasoning steps")
        psi = 1.0 if psi is None else control("psi", psi)
        if not 0.0 <= psi <= 1.0:
            raise InputError(f"psi must be in [0, 1], got {psi}")
        return {"exemplar": exemplar, "seed": seed_control(seed), "psi": psi}

    @property
    def exemplar_model(self) -> Model:
        """The exemplar graph beside the generator (same suffix: .onnx, or .engine for TensorRT), opened once."""
        if self._exemplar_model is None:
            name = self.model.meta("exemplar_graph", default=None)
            if not name:
                raise ModelError(f"{self.model.path}: no exemplar graph named in its metadata")
            path = self.model.path.with_name(Path(name).stem + self.model.path.suffix)
            if not path.is_file():
                raise ModelError(f"{path}: the exemplar graph of {self.model.path.name} is missing; "
                                 "`stylert export inpaint` writes it beside the generator")
            self._exemplar_model = self.open_graph(path)
        return self._exemplar_model

    def exemplar_codes(self, exemplar) -> tuple[np.ndarray, float]:
        """codes [K, code_dim] of the exemplar photo's (RGB) largest face, and the ms taken."""
        t = time.perf_counter()
        codes = self.exemplar_model.run({"image": self.exemplar_crop(exemplar)[None]})["codes"][0]
        return codes, (time.perf_counter() - t) * 1000

    def runner(self, value, **options) -> Runner:
        check_region(value)
        c = self.controls(**options)
        codes, exemplar_ms = self.default_codes, None
        if c["exemplar"] is not None:
            codes, exemplar_ms = self.exemplar_codes(c["exemplar"])
        draws = self.code_dim + self.noise_size

        def run(chunk: Chunk):
            n = len(chunk.crops)
            if exemplar_ms is not None:
                chunk.note("exemplar", exemplar_ms)
            rows = seeded_rows(c["seed"], chunk.positions, n, (draws,), np.float32)
            feeds = {"image": chunk.crops, "mask": chunk.gather("mask"),
                     "codes": np.broadcast_to(codes, (n, *codes.shape)).astype(np.float32),
                     "z": np.ascontiguousarray(rows[:, :self.code_dim]), "psi": np.full(n, c["psi"], np.float32),
                     "noise": np.ascontiguousarray(rows[:, self.code_dim:])}
            return self.model.run(feeds)["inpainted"], []

        return run


class GRIGInpainter(Inpainter):
    """GRIG: no face needed. A square around the mask's bounding box, with as much context again on every side
    and at least the model's size (reflected where it leaves the photo), resized to the model's size and run
    through `steps` reasoning steps (the graph is one step; every I^t is kept in the result's extras), resized
    back and pasted inside the mask."""
    method = "grig"

    def controls(self, exemplar=None, seed: int = 0, psi: float | None = None, steps: int | None = None) -> dict:
        if exemplar is not None:
            raise InputError(f"{self.model.path.name} is a GRIG model: it takes no exemplar (EXE-GAN models do)")
        if psi is not None:
            raise InputError(f"{self.model.path.name} is a GRIG model: psi is EXE-GAN's truncation")
        steps = DEFAULT_STEPS if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
        return {"seed": seed_control(seed), "steps": int(steps)}

    def runner(self, value, **options) -> Runner:
        check_region(value)
        c = self.controls(**options)
        noise = np.random.default_rng(c["seed"]).standard_normal((c["steps"], self.noise_size), dtype=np.float32)

        def run(chunk: Chunk):
            n = len(chunk.crops)
            mask = chunk.gather("mask")
            x = chunk.crops * (1 - mask)  # I^0 = I_in
            history = []
            for step in range(c["steps"]):
                x = self.model.run({"image": x, "mask": mask,
                                    "noise": np.broadcast_to(noise[step], (n, self.noise_size)).copy()})["inpainted"]
                history.append(to_uint8(x))
            return x, [{"steps": np.stack([h[i] for h in history])} for i in range(n)]

        return run

    def prepare(self, rgb: np.ndarray, mask, choice: FaceChoice, options: dict) -> MaskedPhoto:
        """The context square around the mask, resized to the model's size (faces only for a region mask)."""
        timings: dict[str, float] = {}
        found: list[Face] = []
        if isinstance(mask, str):
            prep = self.pipeline.prepare(rgb, choice.faces, choice.only_center_face, choice.largest_face)
            found, timings = prep.faces, prep.timings
        fill = _fill_for(rgb, mask, found)
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
        return MaskedPhoto(rgb, found, None, to_network([crop]), timings,
                           {"mask": crop_mask[None, None].astype(np.float32)}, fill, (bx, by, side))

    def finish(self, prep: MaskedPhoto, out: np.ndarray, extras: list[dict], channels: str) -> FaceResult:
        """The square resized back and pasted inside the mask; extras: every step's square and the box."""
        result = np.ascontiguousarray(prep.rgb).copy()
        bx, by, side = prep.box
        back = cv2.resize(to_uint8(out)[0], (side, side),
                          interpolation=cv2.INTER_CUBIC if side > self.resolution else cv2.INTER_AREA)
        h, w = result.shape[:2]
        x0, y0, x1, y1 = max(bx, 0), max(by, 0), min(bx + side, w), min(by + side, h)
        region = back[y0 - by:y1 - by, x0 - bx:x1 - bx]
        inside = prep.fill[y0:y1, x0:x1]
        result[y0:y1, x0:x1][inside] = region[inside]
        return FaceResult(from_rgb(result, channels), prep.faces, prep.timings,
                          [{**extras[0], "box": np.array([bx, by, side])}])


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
