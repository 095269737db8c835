"""Face stylization on whole photos from a style pack (`stylert export stylize`).

Two models live in a pack:
- per-style generators (seed 002): encoder -> w; truncation toward the style's w_avg with psi;
  optional mixing from layer `mix_layer` on with seeded Z+ samples (multimodal) or a stored
  reference code (reference-guided); G'. All of it runs inside the graphs.
- the region-local model (seed 003), when the pack has one: `regions=` names face regions, masks
  come from `labels` (a face-parsing label map of the photo, CelebAMask-HQ's 19 classes) or a
  `parser` (aligned crops -> label maps). The composition rule, per face crop:
    1. pixels outside the union of the chosen regions are histogram-matched, per RGB channel,
       onto the style's exemplar (CDF of those pixels -> quantiles of the exemplar's pixels);
       that is their final value;
    2. the regions are applied one after another: each runs the local model on the current
       crop and blends its output in with alpha = mask * blur(mask), so alpha is 0 outside.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import InputError, ModelError
from ..faces.imageio import read_image
from ..faces.pipeline import (
    Chunk,
    FaceChoice,
    FaceModel,
    FacePipeline,
    FaceResult,
    Prepared,
    control,
    seed_control,
    seeded_rows,
    to_network,
    to_uint8,
)
from ..runtime.model import Model

PACK_FORMAT = 1
MANIFEST = "stylepack.json"
# CelebAMask-HQ labels (as face-parsing BiSeNet models output them): 1 skin, 2/3 brows, 4/5 eyes, 7/8 ears,
# 10 nose, 11 mouth, 12/13 lips, 14 neck, 17 hair.
REGIONS = {"eyebrow": (2, 3), "eye": (4, 5), "nose": (10,), "lip": (11, 12, 13), "face": (1, 7, 8, 14), "hair": (17,)}
LABEL_MAX = 255  # label maps are read as 8-bit class values
DEFAULT_MIX_LAYER = 6
Parser = Callable[[np.ndarray], np.ndarray]


def match_histograms(source: np.ndarray, reference: np.ndarray, source_mask: np.ndarray | None = None,
                     reference_mask: np.ndarray | None = None) -> np.ndarray:
    """Per channel, map `source` values under `source_mask` through their CDF onto the quantiles of
    `reference` under `reference_mask` (scikit-image's cumulative-CDF matching, restricted to masks);
    pixels outside `source_mask` are returned unchanged. Images H x W x C uint8, masks H x W bool."""
    smask = np.ones(source.shape[:2], bool) if source_mask is None else source_mask.astype(bool)
    rmask = np.ones(reference.shape[:2], bool) if reference_mask is None else reference_mask.astype(bool)
    out = source.copy()
    if not smask.any():
        return out
    if not rmask.any():
        raise InputError("histogram matching: the reference mask is empty")
    for c in range(source.shape[2]):
        values, inverse, counts = np.unique(source[..., c][smask], return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference[..., c][rmask], return_counts=True)
        quantiles = np.cumsum(counts) / counts.sum()
        ref_quantiles = np.cumsum(ref_counts) / ref_counts.sum()
        mapped = np.interp(quantiles, ref_quantiles, ref_values)
        channel = out[..., c]
        channel[smask] = np.clip(np.rint(mapped[inverse]), 0, 255).astype(source.dtype)
    return out


def region_masks(labels: np.ndarray, regions: list[str]) -> dict[str, np.ndarray]:
    """Boolean masks per region name from a label map (any shape)."""
    return {r: np.isin(labels, REGIONS[r]) for r in regions}


def region_alpha(mask: np.ndarray) -> np.ndarray:
    """Blend weight of a boolean region mask [H, W]: mask * blur(mask), soft inside the edge, 0 outside."""
    m = mask.astype(np.float32)
    return m * cv2.GaussianBlur(m, (0, 0), max(mask.shape[0] / 256.0, 0.5))


class StylePack:
    """A pack folder: its manifest, checked, and the paths it names."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.dir = path.parent if path.name == MANIFEST else path
        manifest = self.dir / MANIFEST
        if not manifest.is_file():
            raise ModelError(f"{self.dir}: not a style pack (no {MANIFEST}); make one with `stylert export stylize`")
        try:
            data = json.loads(manifest.read_text())
            fmt = int(data["format"])
            self.resolution, self.num_ws, self.w_dim = int(data["resolution"]), int(data["num_ws"]), int(data["w_dim"])
            self.styles: dict[str, dict] = dict(data["styles"])
            self.encoder = self.dir / data["encoder"]
            self.local = self.dir / data["local"] if data.get("local") else None
            self.trained = bool(data.get("trained", True))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{manifest}: unreadable style pack manifest ({type(exc).__name__}: {exc})") from None
        if fmt > PACK_FORMAT:
            raise ModelError(f"{manifest}: pack format {fmt}; this stylert reads format <= {PACK_FORMAT}: upgrade stylert")
        if not self.styles:
            raise ModelError(f"{manifest}: the pack has no styles")

    def style(self, name: str) -> dict:
        if name not in self.styles:
            raise InputError(f"unknown style {name!r}; this pack has: {', '.join(sorted(self.styles))}")
        return self.styles[name]

    def reference(self, style: str, name: str) -> np.ndarray:
        refs = self.style(style).get("references", {})
        if name not in refs:
            have = ", ".join(sorted(refs)) or "none (add one with `stylert export stylize-reference`)"
            raise InputError(f"style {style!r} has no reference {name!r}; it has: {have}")
        code = np.load(self.dir / refs[name], allow_pickle=False)
        if code.shape != (self.num_ws, self.w_dim):
            raise ModelError(f"{self.dir / refs[name]}: reference code of shape {code.shape}, expected "
                             f"({self.num_ws}, {self.w_dim})")
        return code.astype(np.float32)

    @functools.cache
    def exemplar(self, style: str) -> np.ndarray:
        """The style image at the pack's resolution, read once (read-only: it is shared)."""
        rgb = read_image(self.dir / self.style(style)["exemplar"]).rgb
        if rgb.shape[:2] != (self.resolution,) * 2:
            rgb = cv2.resize(rgb, (self.resolution,) * 2, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(rgb)
        rgb.setflags(write=False)
        return rgb


class Stylizer(FaceModel):
    """`Stylizer("pack/").stylize(image, "cartoon", channels="rgb")` on a HxWx3 uint8 photo.

    mix_layer + seed: multimodal (Z+ samples from `seed`, one per face); mix_layer + reference:
    reference-guided (a code stored in the pack); regions (+ labels or parser): region-local transfer.
    """
    call = "stylize"
    default_value = None
    options = ("mix_layer", "seed", "reference", "psi", "regions", "parser", "labels")

    def __init__(self, pack, providers=None, detector=None, threads: int | None = None, precision: str | None = None,
                 parser: Parser | None = None):
        self.pack = StylePack(pack)
        self._providers, self._threads, self._precision = providers, threads, precision
        self.model = self._open(self.pack.encoder, "encoder")  # the shared encoder
        self.resolution = self.pack.resolution
        self.pipeline = FacePipeline(self.resolution, detector)
        self.parser = parser
        self._graphs: dict[str, Model] = {}

    @property
    def styles(self) -> list[str]:
        return sorted(self.pack.styles)

    def _open(self, path: Path, role: str) -> Model:
        model = self.open_graph(path)
        if model.metadata.get("stylert.role") != role:
            raise ModelError(f"{path}: a stylize '{model.metadata.get('stylert.role')}' graph, expected '{role}'")
        if role != "encoder" and model.meta("resolution", int) != self.pack.resolution:
            raise ModelError(f"{path}: {model.meta('resolution', int)}px, the pack says {self.pack.resolution}")
        return model

    def _graph(self, key: str, path: Path, role: str) -> Model:
        if key not in self._graphs:
            self._graphs[key] = self._open(path, role)
        return self._graphs[key]

    def generator(self, style: str) -> Model:
        return self._graph(style, self.pack.dir / self.pack.style(style)["generator"], "generator")

    @property
    def local(self) -> Model:
        if self.pack.local is None:
            raise InputError(f"{self.pack.dir}: this pack has no region-local model; export it with --with-local/--local")
        return self._graph("<local>", self.pack.local, "local")

    @property
    def trained(self) -> bool:
        return self.pack.trained and self.model.trained

    def runner(self, style: str, *, mix_layer: int | None = None, seed: int | None = None, reference: str | None = None,
               psi: float | None = None, regions: list[str] | None = None, parser: Parser | None = None,
               labels: np.ndarray | None = None):
        """labels: the photo's label map (it reaches each face through `prepare`, so no parser is needed)."""
        if style is None:
            raise InputError(f"name a style; this pack has: {', '.join(self.styles)}")
        entry = self.pack.style(style)
        if regions:
            if mix_layer is not None or seed is not None or reference is not None:
                raise InputError("regions= is region-local transfer; mix_layer, seed and reference belong to "
                                 "whole-face stylization")
            if labels is not None and parser is not None:
                raise InputError("give labels= or parser=, not both")
            return self._local_runner(style, regions, parser or self.parser)
        if labels is not None:
            raise InputError("labels= is for regions= (region-local transfer)")
        if seed is not None:
            seed = seed_control(seed)
        if seed is not None and reference is not None:
            raise InputError("give seed= (multimodal) or reference= (reference-guided), not both")
        if mix_layer is not None and seed is None and reference is None:
            raise InputError("mix_layer needs seed= (multimodal) or reference= (reference-guided)")
        num_ws = self.pack.num_ws
        mixing = seed is not None or reference is not None
        if mix_layer is not None and (isinstance(mix_layer, bool) or not isinstance(mix_layer, (int, np.integer))):
            raise InputError(f"mix_layer must be an integer, got {mix_layer!r}")
        layer = (DEFAULT_MIX_LAYER if mix_layer is None else int(mix_layer)) if mixing else num_ws
        if not 0 <= layer <= num_ws:
            raise InputError(f"mix_layer must be in [0, {num_ws}] for this pack, got {mix_layer}")
        psi = control("psi", entry["psi"] if psi is None else psi)
        ref_code = self.pack.reference(style, reference) if reference is not None else None
        generator = self.generator(style)

        def run(chunk: Chunk):
            n = len(chunk.crops)
            if ref_code is not None:
                codes, from_z = np.broadcast_to(ref_code, (n, *ref_code.shape)), 0.0
            elif seed is not None:
                codes, from_z = seeded_rows(seed, chunk.positions, n, (num_ws, self.pack.w_dim)), 1.0
            else:
                codes, from_z = np.zeros((n, num_ws, self.pack.w_dim)), 0.0
            feeds = {"content": self.model.run({"image": chunk.crops})["w"], "psi": np.full(n, psi, np.float32),
                     "mix_codes": codes.astype(np.float32), "mix_from_z": np.full(n, from_z, np.float32),
                     "mix_layer": np.full(n, layer, np.int64)}
            return generator.run(feeds)["image"], []

        return run

    def _local_runner(self, style: str, regions: list[str], parser: Parser | None):
        unknown = [r for r in regions if r not in REGIONS]
        if unknown:
            raise InputError(f"unknown region(s) {unknown}; regions are: {', '.join(REGIONS)}")

        local, exemplar = self.local, self.pack.exemplar(style)
        res = self.resolution

        def run(chunk: Chunk):
            n = len(chunk.crops)
            content = to_uint8(chunk.crops)
            if "labels" in chunk.photos[0].inputs:
                labels = chunk.gather("labels")
            elif parser is None:
                raise InputError("regions need masks: pass labels= (a face-parsing label map of the photo) or "
                                 "parser= (aligned crops -> label maps); stylert ships no face parser")
            else:
                labels = np.asarray(parser(content))
            if labels.shape != (n, res, res) or not np.issubdtype(labels.dtype, np.integer):
                raise InputError(f"face parser: expected integer label maps [{n}, {res}, {res}], got "
                                 f"{labels.dtype} {labels.shape}")
            masks = region_masks(labels, regions)
            for name, m in masks.items():
                if not m.any():
                    raise InputError(f"region '{name}' is empty in the face labels (labels {sorted(REGIONS[name])})")
            union = np.logical_or.reduce(list(masks.values()))
            base = np.stack([match_histograms(c, exemplar, ~u) for c, u in zip(content, union)])  # rule 1
            current = to_network(list(base))
            style_img = np.broadcast_to(to_network([exemplar]), current.shape).copy()
            style_mask = np.ones((n, 1, res, res), np.float32)
            for name, m in masks.items():  # rule 2, regions in the order given
                out = local.run({"content": current, "style": style_img, "content_mask": m[:, None].astype(np.float32),
                                 "style_mask": style_mask})["stylized"]
                alpha = np.stack([region_alpha(face) for face in m])[:, None]
                current = alpha * out + (1 - alpha) * current
            extras = [{f"region_{name}": m[i] for name, m in masks.items()} for i in range(n)]
            return current.astype(np.float32), extras

        return run

    def photo_input(self, value, options: dict):
        """The photo's face-parsing label map (labels=), or None."""
        return options.get("labels")

    def prepare(self, rgb: np.ndarray, labels, choice: FaceChoice, options: dict) -> Prepared:
        """As every call, plus the photo's label map warped onto each face (nearest neighbour) as its "labels" input."""
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != rgb.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
                raise InputError(f"labels: expected an integer label map of {rgb.shape[1]}x{rgb.shape[0]}, "
                                 f"got {labels.dtype} {labels.shape}")
            if labels.min() < 0 or labels.max() > LABEL_MAX:
                raise InputError(f"labels: values {int(labels.min())}..{int(labels.max())}, outside 0..{LABEL_MAX} "
                                 "(face-parsing classes)")
            labels = labels.astype(np.uint8)
        prep = super().prepare(rgb, labels, choice, options)
        if labels is not None:
            size = (self.resolution,) * 2
            prep.inputs["labels"] = (cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)[None]
                                     if prep.matrices is None else
                                     np.stack([cv2.warpAffine(labels, m, size, flags=cv2.INTER_NEAREST,
                                                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                                               for m in prep.matrices]))
        return prep

    def stylize(self, image: np.ndarray, style: str, *, channels: str, **options) -> FaceResult:
        """Stylize every face (or the chosen one). options: mix_layer, seed, reference, psi, regions, parser, labels
        (the photo's face-parsing label map, H x W ints, warped onto each aligned face), faces, aligned,
        only_center_face, largest_face."""
        return self.process(image, style, channels=channels, **options)
