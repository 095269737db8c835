"""StyleRetoucher checkpoints and `stylert export retouch`.

Checkpoint (stylert safetensors, call "retouch"): the StyleRetoucher state dict —
`se.{k}.conv|down`, `fs_conv.{i}`, `leh.conv|fc`, `gp.b{res}.*` (NVlabs synthesis names),
`w_avg`, `bafs.{i}.conv0|conv1|channel_fc0|channel_fc1|spatial` — with `stylert.config`
holding the RetoucherConfig as JSON.

Graph contract (format 1):
  image [batch, 3, R, R] float32 in [-1, 1], strength [batch] float32 -> retouched [batch, 3, R, R]
  (ONNX forbids an input and an output of the same name, hence `retouched`).
  --with-masks adds, per BAFS level i (resolution r = R / 2^i): mask_spatial_r [batch, 1, r, r]
  (M_S: weight of the input features per pixel) and mask_channel_r [batch, C] (M_C after strength).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoints import (CheckpointError, checkpoint_config, load_generator, load_strict, read_stylert_checkpoint,
                          save_stylert_checkpoint)
from .onnx_export import DEFAULT_OPSET, config_metadata, export_checked, read_metadata
from .plugin_ops import in_flavor
from .retoucher import RetoucherConfig, StyleRetoucher, random_retoucher, retoucher_config, retoucher_from_generator


@dataclass
class RetoucherSource:
    model: StyleRetoucher
    description: str
    trained: bool
    seed: int | None = None
    notes: list[str] = field(default_factory=list)


def from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, channel_max: int = 512,
                     w_dim: int = 512) -> RetoucherSource:
    cfg = retoucher_config(resolution, channel_base, channel_max, w_dim)
    return RetoucherSource(random_retoucher(cfg, seed), f"random-init seed {seed}", False, seed)


def from_gp_checkpoint(path: str | Path, layout: str = "auto", seed: int = 0) -> RetoucherSource:
    """GP from a StyleGAN2 checkpoint, the rest freshly initialised: where training starts (untrained)."""
    gen = load_generator(path, layout).generator
    return RetoucherSource(retoucher_from_generator(gen, seed), f"GP from {Path(path).name}, rest random (seed {seed})",
                           False, seed, ["SE, LEH and BAFS are untrained: train before use"])


def save_retoucher(src: RetoucherSource, path: str | Path) -> Path:
    extra = {"stylert.source": src.description}
    return save_stylert_checkpoint(path, src.model.state_dict(), call="retouch", config=config_metadata(src.model.cfg),
                                   trained=src.trained, extra=extra)


def from_checkpoint(path: str | Path) -> RetoucherSource:
    state, meta = read_stylert_checkpoint(path, "retouch")
    cfg = checkpoint_config(path, meta, lambda text: RetoucherConfig.from_json(json.loads(text)))
    model = StyleRetoucher(cfg).eval()
    load_strict(model, state, path, "retouch checkpoint")
    return RetoucherSource(model, meta.get("stylert.source", Path(path).name), meta.get("stylert.trained") == "true")


def rebuild_reference(onnx_path: str | Path, checkpoint: str | Path | None = None) -> StyleRetoucher:
    """The PyTorch retoucher an exported graph came from: from its metadata (random init) or its checkpoint."""
    meta = read_metadata(onnx_path)
    if meta.get("stylert.call") != "retouch":
        raise CheckpointError(f"{onnx_path}: not a stylert retouch graph")
    if checkpoint is not None:
        return from_checkpoint(checkpoint).model
    if meta.get("stylert.source", "").startswith("random-init"):
        return random_retoucher(RetoucherConfig.from_json(json.loads(meta["stylert.config"])), int(meta["stylert.seed"]))
    raise CheckpointError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass that checkpoint")


class RetouchGraph(nn.Module):
    """What is exported: the retouched image, and optionally the BAFS masks of every level."""

    def __init__(self, model: StyleRetoucher, with_masks: bool):
        super().__init__()
        self.model, self.with_masks = model, with_masks

    def output_names(self) -> list[str]:
        names = ["retouched"]
        if self.with_masks:
            for level in self.model.cfg.levels:
                r = self.model.cfg.level_resolution(level)
                names += [f"mask_spatial_{r}", f"mask_channel_{r}"]
        return names

    def forward(self, image: torch.Tensor, strength: torch.Tensor):
        img, masks = self.model(image, strength)
        if not self.with_masks:
            return img
        outputs = [img]
        for level in self.model.cfg.levels:
            m_s, m_c = masks[level]
            outputs += [m_s, m_c.flatten(1)]
        return tuple(outputs)


def make_inputs(resolution: int):
    def make(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {"image": torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1,
                "strength": torch.rand(batch, generator=g) * 1.5}
    return make


def export_retoucher(src: RetoucherSource, output: str | Path, *, with_masks: bool = False,
                     opset: int = DEFAULT_OPSET, flavor: str = "portable", target=None, log=print):
    cfg = src.model.cfg
    graph = RetouchGraph(src.model.eval(), with_masks)
    module = RetouchGraph(in_flavor(graph.model, lambda: StyleRetoucher(cfg), flavor), with_masks)
    metadata = {
        "stylert.call": "retouch",
        "stylert.source": src.description,
        "stylert.trained": str(src.trained).lower(),
        "stylert.resolution": cfg.resolution,
        "stylert.num_ws": cfg.gp.num_ws,
        "stylert.with_masks": str(with_masks).lower(),
        "stylert.input_range": "[-1, 1]",
        "stylert.config": config_metadata(cfg),
    }
    if src.seed is not None:
        metadata["stylert.seed"] = src.seed
    for note in src.notes:
        log(f"note: {note}")
    return export_checked(module, graph, make_inputs(cfg.resolution), output, output_names=graph.output_names(),
                          metadata=metadata, precision="fp32", opset=opset, flavor=flavor, target=target, log=log)
