"""Retouching (StyleRetoucher) on whole photos."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..faces.pipeline import Chunk, FaceModel, FaceResult, control


class Retoucher(FaceModel):
    """`Retoucher("retouch.onnx").retouch(image, channels="rgb", strength=1.0)` on a HxWx3 uint8 photo.

    strength: 1 = as trained, 0 = channel selection all on the input features (least change),
    > 1 = stronger retouching (see export/stylert_export/retoucher.py).
    """
    call = "retouch"
    options = ("with_masks",)

    @property
    def has_masks(self) -> bool:
        return self.model.meta("with_masks", bool, default=False)

    def runner(self, strength: float, with_masks: bool = False):
        strength = control("strength", strength)
        if strength < 0:
            raise InputError(f"strength must be a finite number >= 0, got {strength}")
        if with_masks and not self.has_masks:
            raise InputError(f"{self.model.path.name} was exported without --with-masks")

        def run(chunk: Chunk):
            n = len(chunk.crops)
            outputs = self.model.run({"image": chunk.crops, "strength": np.full(n, strength, np.float32)})
            extras = [{name: value[i] for name, value in outputs.items() if name.startswith("mask_")}
                      for i in range(n)] if with_masks else []
            return outputs["retouched"], extras

        return run

    def retouch(self, image: np.ndarray, strength: float = 1.0, *, channels: str, **options) -> FaceResult:
        """Retouch every face (or the chosen one); `faces` skips detection ([5, 2] landmarks or Face objects);
        options: faces, aligned, only_center_face, largest_face, with_masks."""
        return self.process(image, strength, channels=channels, **options)
