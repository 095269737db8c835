"""Retouching (StyleRetoucher) on whole photos."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .detect import FaceDetector
from .errors import InputError
from .imageio import read_image, write_image
from .pipeline import FacePipeline, FaceResult
from .runtime import OnnxModel


class Retoucher:
    """`Retoucher("retouch.onnx").retouch(image, channels="rgb", strength=1.0)` on a HxWx3 uint8 photo.

    strength: 1 = as trained, 0 = channel selection all on the input features (least change),
    > 1 = stronger retouching (see export/stylert_export/retoucher.py).
    """

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None,
                 detector: FaceDetector | None = None, threads: int | None = None):
        self.model = OnnxModel(model_path, providers, call="retouch", threads=threads)
        self.resolution = int(self.model.metadata["stylert.resolution"])
        self.pipeline = FacePipeline(self.resolution, detector)
        self.has_masks = self.model.metadata.get("stylert.with_masks") == "true"

    @property
    def trained(self) -> bool:
        return self.model.trained

    def retouch(self, image: np.ndarray, strength: float = 1.0, *, channels: str, faces=None, aligned: bool = False,
                only_center_face: bool = False, largest_face: bool = False, with_masks: bool = False) -> FaceResult:
        """Retouch every face (or the chosen one); `faces` skips detection ([5, 2] landmarks or Face objects)."""
        strength = float(strength)
        if not np.isfinite(strength) or strength < 0:
            raise InputError(f"strength must be a finite number >= 0, got {strength}")
        if with_masks and not self.has_masks:
            raise InputError(f"{self.model.path.name} was exported without --with-masks")

        def run(crops: np.ndarray):
            outputs = self.model.run({"image": crops, "strength": np.full(len(crops), strength, np.float32)})
            extras = [{name: value[i] for name, value in outputs.items() if name.startswith("mask_")}
                      for i in range(len(crops))] if with_masks else []
            return outputs["retouched"], extras

        return self.pipeline.process(image, run, channels=channels, faces=faces, aligned=aligned,
                                     only_center_face=only_center_face, largest_face=largest_face)

    def retouch_file(self, src: str | Path, dst: str | Path, strength: float = 1.0, **options) -> FaceResult:
        """Read, retouch and write one file; grayscale stays grayscale and alpha is carried through."""
        loaded = read_image(src)
        result = self.retouch(loaded.rgb, strength, channels="rgb", **options)
        write_image(dst, result.image, loaded.alpha, loaded.grayscale)
        return result
