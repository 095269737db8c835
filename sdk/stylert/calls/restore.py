"""Blind face restoration on whole photos: QC-StyleGAN (with its quality code) or visual style
prompts (VSP, whose graph takes one `noise` input, drawn here from a seed)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..faces.pipeline import Chunk, FaceModel, FaceResult, control, seed_control, seeded_rows, to_network, to_uint8


class Restorer(FaceModel):
    """`Restorer("restore.onnx").restore(image, channels="rgb", fidelity=0.0)` on a HxWx3 uint8 photo.

    fidelity: 0 = fully restored, 1 = the input unchanged; a graph input, blended per face.
    Models exported --with-quality also estimate a face's quality code q (`quality`) and apply
    any q to it (`degrade`: q = 0 restores, q = quality(face) reproduces its degradation).
    VSP models are stochastic: `seed` picks their noise, so the same seed gives the same image.
    """
    call = "restore"
    default_value = 0.0  # fidelity: fully restored
    options = ("seed",)

    def __init__(self, model_path, providers=None, detector=None, threads: int | None = None,
                 precision: str | None = None):
        super().__init__(model_path, providers, detector, threads, precision)
        self.method = self.model.meta("method", default="qc")
        self.with_quality = self.model.meta("with_quality", bool, default=False)
        self.q_dim = self.model.meta("q_dim", int) if self.with_quality else 0
        self.noise_size = self.model.meta("noise_size", int) if self.method == "vsp" else 0

    def _feeds(self, crops: np.ndarray, fidelity: float, q: np.ndarray | None = None, seed: int = 0,
               positions: np.ndarray | None = None) -> dict:
        feeds = {"image": crops, "fidelity": np.full(len(crops), fidelity, np.float32)}
        if self.method == "vsp":
            feeds["noise"] = seeded_rows(seed, positions, len(crops), (self.noise_size,), np.float32)
        if self.with_quality:
            feeds["q"] = np.zeros((len(crops), self.q_dim), np.float32) if q is None else q
        return feeds

    def runner(self, fidelity: float, seed: int = 0):
        fidelity, seed = control("fidelity", fidelity), seed_control(seed)
        if not 0.0 <= fidelity <= 1.0:
            raise InputError(f"fidelity must be in [0, 1], got {fidelity}")

        def run(chunk: Chunk):
            return self.model.run(self._feeds(chunk.crops, fidelity, seed=seed, positions=chunk.positions))["restored"], []

        return run

    def restore(self, image: np.ndarray, fidelity: float = 0.0, *, channels: str, **options) -> FaceResult:
        """Restore every face (or the chosen one); options: seed (VSP), faces, aligned, only_center_face, largest_face."""
        return self.process(image, fidelity, channels=channels, **options)

    def _aligned_batch(self, faces: np.ndarray) -> np.ndarray:
        if not self.with_quality:
            raise InputError(f"{self.model.path.name} is sharp-only; export with --with-quality for q")
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[None]
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (self.resolution, self.resolution, 3) \
                or not len(faces):
            raise InputError(f"expected aligned RGB uint8 faces of {self.resolution}x{self.resolution}x3, "
                             f"got {faces.dtype} {faces.shape}")
        return to_network(list(faces))

    def quality(self, faces: np.ndarray) -> np.ndarray:
        """Estimated quality codes q [N, q_dim] of aligned RGB faces (N x R x R x 3 or one R x R x 3)."""
        return self.model.run(self._feeds(self._aligned_batch(faces), 0.0))["quality"]

    def degrade(self, faces: np.ndarray, q: np.ndarray) -> np.ndarray:
        """G(E_w(face), q) for aligned RGB faces: q = 0 restores, larger q degrades more (Eq. 10)."""
        crops = self._aligned_batch(faces)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                q = np.broadcast_to(np.asarray(q, np.float32), (len(crops), self.q_dim))
        except (TypeError, ValueError):
            raise InputError(f"q: expected {self.q_dim} numbers, or one row of them per face, got "
                             f"{np.shape(q) if not isinstance(q, str) else repr(q)}") from None
        if not np.isfinite(q).all():
            raise InputError("q holds NaN, infinite or out-of-float32 values")
        return to_uint8(self.model.run(self._feeds(crops, 0.0, np.ascontiguousarray(q)))["restored"])
