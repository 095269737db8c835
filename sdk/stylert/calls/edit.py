"""Multimodal facial editing on whole photos with a FACEMUG graph (`stylert export edit`).

The masked part of each face is regenerated, guided by any mix of: a sketch (strokes), a semantic label map
(CelebAMask-HQ's 19 classes), colour strokes, an exemplar face, an attribute direction with a strength, and the
seed's random code. Guidance images are the size of the photo and are warped with the face crop like the mask
(nearest neighbour); pixels outside the mask are the input's, byte for byte, as for inpaint (it shares its face
pipeline: detect, align, warp the mask, paste inside it).

- sketch: HxW (or HxWxC) array, nonzero = a stroke.
- semantic: HxW integer labels 0..18.
- color: HxWx3 uint8 in the photo's channel order; black (0, 0, 0) = no colour there.
- exemplar: a photo; its largest face is aligned like the photo's.
- attribute: a direction (n x 512, or one 512 vector for every code), or a name from `directions` (a .npy/.npz
  file given to the Editor); strength scales it (Eq. 6.3).
Text guidance needs CLIP and hundreds of gradient steps per edit (thesis Eq. 6.4-6.5): not offered.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..faces.pipeline import Chunk, FaceResult, Runner, control, seed_control, seeded_rows
from .inpaint import MaskedCall, check_region, fill_mask

SEMANTIC_CLASSES = 19
GUIDANCE = ("sketch", "semantic", "color", "exemplar")  # the graph's presence flags, in order


def load_directions(path: str | Path) -> dict[str, np.ndarray]:
    """Attribute directions, each 512 or n x 512: a .npz holds one array per name, a .npy one array named by the
    file's stem (smile.npy -> "smile"). Read without pickles (an object array, such as a dict, is refused)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such directions file")
    try:
        with open(path, "rb") as f:  # numpy leaves the file it opened for a zip that does not open: opened here
            zipped = f.read(2) == b"PK"
            if zipped:
                f.seek(0)
                with np.load(f, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
        if not zipped:  # a .npy, mapped: its header is checked against its size before any memory is taken
            arrays = {path.stem: np.load(path, mmap_mode="r", allow_pickle=False)}
    except ValueError as exc:
        raise InputError(f"{path}: not a plain numpy file ({exc}); save the directions with numpy.savez") from None
    except MemoryError:
        raise InputError(f"{path}: an array in it claims more memory than this machine has") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from None
    bad = sorted(name for name, a in arrays.items() if a.dtype.kind not in "biuf")
    if bad:
        raise InputError(f"{path}: direction(s) {', '.join(bad)} hold {arrays[bad[0]].dtype} values, not numbers")
    out = {}
    for name, a in arrays.items():
        with np.errstate(over="ignore", invalid="ignore"):
            out[name] = np.array(a, np.float32)
        if not np.isfinite(out[name]).all():
            raise InputError(f"{path}: direction {name} holds NaN, infinite or out-of-float32 values")
    return out


class Editor(MaskedCall):
    """`Editor("edit.onnx").edit(image, mask, channels="rgb", sketch=..., semantic=..., exemplar=..., seed=0)`."""
    call = "edit"
    method = "facemug"
    options = ("sketch", "semantic", "color", "exemplar", "attribute", "strength", "seed")
    image_options = ("exemplar", "color")

    def __init__(self, model_path, providers=None, detector=None, threads: int | None = None,
                 precision: str | None = None, directions: str | Path | dict | None = None):
        super().__init__(model_path, providers, detector, threads, precision)
        self.num_ws, self.noise_size = self.model.meta("num_ws", int), self.model.meta("noise_size", int)
        self.directions = load_directions(directions) if isinstance(directions, (str, Path)) else dict(directions or {})

    def controls(self, sketch=None, semantic=None, color=None, exemplar=None, attribute=None, strength: float = 0.0,
                 seed: int = 0) -> dict:
        """The controls checked (the guidance images are checked per photo, against its size)."""
        return {"seed": seed_control(seed), "strength": control("strength", strength),
                "direction": self._direction(attribute),
                "present": np.array([sketch is not None, semantic is not None, color is not None,
                                     exemplar is not None], np.float32)}

    def _direction(self, attribute) -> np.ndarray | None:
        """The attribute's direction as [num_ws, 512] (a name looked up in the directions), or None."""
        if attribute is None:
            return None
        if isinstance(attribute, str):
            if attribute not in self.directions:
                have = ", ".join(sorted(self.directions)) or "none (give a directions file)"
                raise InputError(f"unknown attribute {attribute!r}; directions: {have}")
            attribute = self.directions[attribute]
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                d = np.asarray(attribute, np.float32)
        except (TypeError, ValueError):
            raise InputError(f"an attribute direction must be numbers, got {type(attribute).__name__}") from None
        if d.shape == (512,):
            d = np.broadcast_to(d, (self.num_ws, 512))
        if d.shape != (self.num_ws, 512):
            raise InputError(f"an attribute direction must be 512 or {self.num_ws}x512 numbers, got shape {d.shape}")
        if not np.isfinite(d).all():
            raise InputError("an attribute direction holds NaN, infinite or out-of-float32 values")
        return np.ascontiguousarray(d)

    def edit(self, image: np.ndarray, mask, sketch=None, semantic=None, color=None, exemplar=None, attribute=None,
             strength: float = 0.0, seed: int = 0, *, channels: str, **options) -> FaceResult:
        """Edit the masked part of every face the mask meets; options: faces (landmarks), only_center_face,
        largest_face, aligned."""
        return self.process(image, mask, channels=channels, sketch=sketch, semantic=semantic, color=color,
                            exemplar=exemplar, attribute=attribute, strength=strength, seed=seed, **options)

    def guides(self, rgb: np.ndarray, options: dict) -> dict[str, np.ndarray]:
        """Photo-sized guidance checked and put in the graph's form (before warping); colour is RGB here."""
        h, w = rgb.shape[:2]
        out = {}

        def sized(name, shape_hint):
            arr = options[name]
            if not isinstance(arr, np.ndarray):
                raise InputError(f"{name}: expected a numpy array, got {type(arr).__name__}")
            if arr.ndim < 2 or arr.shape[:2] != (h, w):
                size = f"{arr.shape[1]}x{arr.shape[0]}" if arr.ndim >= 2 else f"of shape {arr.shape}"
                raise InputError(f"{name}: {size}, the photo {w}x{h}: give {shape_hint} the size of the photo")
            return arr

        if options.get("sketch") is not None:
            out["sketch"] = fill_mask(sized("sketch", "a sketch"), rgb.shape, "sketch").astype(np.float32)
        if options.get("semantic") is not None:
            labels = sized("semantic", "a label map")
            if labels.ndim != 2 or labels.dtype.kind not in "iu":
                raise InputError(f"semantic: expected HxW integer labels 0..{SEMANTIC_CLASSES - 1}, got {labels.dtype} "
                                 f"{labels.shape} (a colour-coded map must be converted to label values)")
            bad = np.unique(labels[(labels < 0) | (labels >= SEMANTIC_CLASSES)])
            if bad.size:
                raise InputError(f"semantic: labels {bad[:8].tolist()} outside 0..{SEMANTIC_CLASSES - 1} "
                                 "(CelebAMask-HQ's classes)")
            out["semantic"] = labels.astype(np.uint8)
        if options.get("color") is not None:
            col = sized("color", "a colour map")
            painted = col.any(axis=2, keepdims=True)
            out["color"] = np.where(painted, col.astype(np.float32) / 127.5 - 1, 0).astype(np.float32)
        return out

    def runner(self, value, **options) -> Runner:
        check_region(value)
        c = self.controls(**options)
        r = self.resolution
        exemplar = options.get("exemplar")
        exemplar_crop, exemplar_ms = None, None
        if exemplar is not None:
            t = time.perf_counter()
            exemplar_crop = self.exemplar_crop(exemplar)
            exemplar_ms = (time.perf_counter() - t) * 1000
        direction = c["direction"]

        def run(chunk: Chunk):
            n = len(chunk.crops)
            if exemplar_ms is not None:
                chunk.note("exemplar", exemplar_ms)
            rows = seeded_rows(c["seed"], chunk.positions, n, (512 + self.noise_size,), np.float32)

            def guide(name, shape):
                return chunk.gather(name) if name in chunk.photos[0].inputs else np.zeros((n, *shape), np.float32)

            feeds = {"image": chunk.crops, "mask": chunk.gather("mask"),
                     "sketch": guide("sketch", (r, r))[:, None].astype(np.float32),
                     "semantic": (np.eye(SEMANTIC_CLASSES, dtype=np.float32)[chunk.gather("semantic").astype(np.int64)]
                                  .transpose(0, 3, 1, 2) if "semantic" in chunk.photos[0].inputs
                                  else np.zeros((n, SEMANTIC_CLASSES, r, r), np.float32)),
                     "color": guide("color", (r, r, 3)).transpose(0, 3, 1, 2).astype(np.float32),
                     "presence": np.broadcast_to(c["present"], (n, len(GUIDANCE))).copy(),
                     "exemplar": np.broadcast_to(exemplar_crop if exemplar_crop is not None else
                                                 np.zeros((3, r, r), np.float32), (n, 3, r, r)).copy(),
                     "z": np.ascontiguousarray(rows[:, :512]), "alpha": np.full(n, float(exemplar is not None), np.float32),
                     "direction": np.broadcast_to(direction if direction is not None else
                                                  np.zeros((self.num_ws, 512), np.float32), (n, self.num_ws, 512)).copy(),
                     "strength": np.full(n, c["strength"], np.float32),
                     "noise": np.ascontiguousarray(rows[:, 512:])}
            return self.model.run(feeds)["edited"], []

        return run
