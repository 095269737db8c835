"""StyleGAN2 generators exported by `stylert export generator`."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..runtime.model import Model, open_model


class Generator:
    """ws [batch, num_ws, w_dim] -> images; or, exported --with-mapping, z + truncation_psi -> images."""

    def __init__(self, path: str | Path, providers: str | Sequence[str] | None = None, threads: int | None = None,
                 precision: str | None = None):
        self.model: Model = open_model(path, providers, call="generator", threads=threads, precision=precision)
        self.path, self.metadata, self.backend = self.model.path, self.model.metadata, self.model.backend
        self.resolution = self.model.meta("resolution", int)
        self.z_dim = self.model.meta("z_dim", int)
        self.with_mapping = self.model.meta("with_mapping", bool, default=False)

    @property
    def trained(self) -> bool:
        return self.model.trained

    def synthesize(self, ws: np.ndarray) -> np.ndarray:
        """W+ codes -> raw images [batch, 3, R, R] (about [-1, 1])."""
        if self.with_mapping:
            raise InputError(f"{self.path.name} was exported --with-mapping: it takes z, use generate()")
        return self.model.run({"ws": ws})["image"]

    def generate(self, z: np.ndarray, truncation_psi: float | np.ndarray = 1.0) -> np.ndarray:
        """Latents z [batch, z_dim] -> raw images; psi a scalar or one per sample."""
        if not self.with_mapping:
            raise InputError(f"{self.path.name} takes W+ codes (no mapping network): use synthesize(ws), "
                             "or export with --with-mapping to sample from z")
        z = np.asarray(z)
        psi = np.broadcast_to(np.asarray(truncation_psi, dtype=np.float32), (z.shape[0] if z.ndim else 1,))
        return self.model.run({"z": z, "truncation_psi": psi})["image"]

    def z_from_seeds(self, seeds: Iterable[int]) -> np.ndarray:
        """One z per seed, as NVlabs generate.py draws it: RandomState(seed).randn(z_dim)."""
        return np.stack([np.random.RandomState(s).randn(self.z_dim) for s in seeds]).astype(np.float32)
