"""Seeded inputs of a graph's own kind, from its stylert metadata: what `stylert bench` times and what the precision
gate (`runtime/precision.py`) runs in f32 and bf16. Images are uniform in [-1, 1] (the calls' normalisation), controls
at their neutral values, masked calls a centre hole half the side of the image (the region such a call writes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import read_meta


def _int(meta: dict, path: str | Path, key: str) -> int:
    """An integer of the metadata, checked (runtime.model.read_meta: ModelError naming the file and key)."""
    return read_meta(meta, path, key, int)


def feeds_for(meta: dict, batch: int, path: str | Path = "model", seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the graph's contract at `batch`, drawn from `seed` (controls at their neutral values); path:
    the model's, named by a ModelError for missing or malformed metadata."""
    rng = np.random.default_rng(seed)
    call, r = meta.get("stylert.call"), _int(meta, path, "resolution")
    if call == "retouch":
        return {"image": rng.uniform(-1, 1, (batch, 3, r, r)).astype(np.float32), "strength": np.ones(batch, np.float32)}
    if call == "restore":
        feeds = {"image": rng.uniform(-1, 1, (batch, 3, r, r)).astype(np.float32)}
        if meta.get("stylert.with_quality") == "true":
            feeds["q"] = np.zeros((batch, _int(meta, path, "q_dim")), np.float32)
        if meta.get("stylert.method") == "vsp":
            feeds["noise"] = rng.standard_normal((batch, _int(meta, path, "noise_size"))).astype(np.float32)
        return {**feeds, "fidelity": np.zeros(batch, np.float32)}
    if call == "stylize":
        return stylize_feeds(meta, batch, rng, path)
    if call == "inpaint":
        return inpaint_feeds(meta, batch, rng, path)
    if call == "edit":
        return edit_feeds(meta, batch, rng, path)
    if meta.get("stylert.with_mapping") == "true":
        return {"z": rng.standard_normal((batch, _int(meta, path, "z_dim"))).astype(np.float32),
                "truncation_psi": np.full(batch, 0.7, np.float32)}
    return {"ws": rng.standard_normal((batch, _int(meta, path, "num_ws"), _int(meta, path, "w_dim"))).astype(np.float32)}


def centre_hole(batch: int, r: int) -> np.ndarray:
    """[batch, 1, r, r] float32: 1 on the centre square half the side of the image, 0 elsewhere."""
    mask = np.zeros((batch, 1, r, r), np.float32)
    mask[:, :, r // 4: 3 * r // 4, r // 4: 3 * r // 4] = 1
    return mask


def inpaint_feeds(meta: dict, batch: int, rng, path: str | Path = "model") -> dict[str, np.ndarray]:
    """An inpaint graph's inputs: a centre hole half the side of the image (GRIG's test mask)."""
    r = _int(meta, path, "resolution")
    image = rng.uniform(-1, 1, (batch, 3, r, r)).astype(np.float32)
    if meta.get("stylert.role") == "exemplar":
        return {"image": image}
    mask = centre_hole(batch, r)
    noise = rng.standard_normal((batch, _int(meta, path, "noise_size"))).astype(np.float32)
    if meta.get("stylert.method") == "grig":
        return {"image": image * (1 - mask), "mask": mask, "noise": noise}
    k, d = _int(meta, path, "num_codes"), _int(meta, path, "code_dim")
    return {"image": image, "mask": mask, "codes": rng.standard_normal((batch, k, d)).astype(np.float32) * 0.5,
            "z": rng.standard_normal((batch, d)).astype(np.float32), "psi": np.ones(batch, np.float32), "noise": noise}


def edit_feeds(meta: dict, batch: int, rng, path: str | Path = "model") -> dict[str, np.ndarray]:
    """An edit graph's inputs: a centre hole, every guidance absent (presence 0), a random z and noise."""
    r, n = _int(meta, path, "resolution"), _int(meta, path, "num_ws")
    mask = centre_hole(batch, r)
    zeros = lambda *shape: np.zeros((batch, *shape), np.float32)  # noqa: E731
    return {"image": rng.uniform(-1, 1, (batch, 3, r, r)).astype(np.float32), "mask": mask, "sketch": zeros(1, r, r),
            "semantic": zeros(_int(meta, path, "semantic_classes"), r, r), "color": zeros(3, r, r),
            "presence": zeros(4), "exemplar": zeros(3, r, r),
            "z": rng.standard_normal((batch, 512)).astype(np.float32), "alpha": zeros(), "direction": zeros(n, 512),
            "strength": zeros(), "noise": rng.standard_normal((batch, _int(meta, path, "noise_size"))).astype(np.float32)}


def stylize_feeds(meta: dict, batch: int, rng, path: str | Path = "model") -> dict[str, np.ndarray]:
    """A pack graph's inputs: whole-face stylization without mixing; a half-face region for the local model."""
    r = _int(meta, path, "resolution")
    image = rng.uniform(-1, 1, (batch, 3, r, r)).astype(np.float32)
    role = meta.get("stylert.role")
    if role == "encoder":
        return {"image": image}
    if role == "local":
        mask = centre_hole(batch, r)
        return {"content": image, "style": image[::-1].copy(), "content_mask": mask,
                "style_mask": np.ones_like(mask)}
    num_ws, w_dim = _int(meta, path, "num_ws"), _int(meta, path, "w_dim")
    return {"content": rng.standard_normal((batch, w_dim)).astype(np.float32),
            "psi": np.full(batch, read_meta(meta, path, "psi", float, default=0.7), np.float32),
            "mix_codes": np.zeros((batch, num_ws, w_dim), np.float32), "mix_from_z": np.zeros(batch, np.float32),
            "mix_layer": np.full(batch, num_ws, np.int64)}
