"""`stylert export edit`: FACEMUG multimodal facial editing (facemug.py) as one graph.

Graph contract (format 1), R the editing size (256), n the codes (the bank's num_ws):
  image [B, 3, R, R] in [-1, 1]; mask [B, 1, R, R] (1 = edit); sketch [B, 1, R, R] (strokes 1, else 0);
  semantic [B, 19, R, R] (one-hot CelebAMask-HQ classes); color [B, 3, R, R] ([-1, 1]; 0 where no colour);
  presence [B, 4] (sketch, semantic, color, exemplar: 1 given, 0 absent, its input then zeros);
  exemplar [B, 3, R, R] (an aligned face); z [B, 512]; alpha [B] (the exemplar's weight against z);
  direction [B, n, 512]; strength [B]; noise [B, N] ~ N(0, 1)
  -> edited [B, 3, R, R] = image (1 - mask) + G(...) mask.
Every guidance is an input with a presence flag; z and the noise maps are inputs: nothing random in the graph.

Checkpoint (stylert safetensors, call "edit"): FACEMUG's state dict - `encoder.*` (e4e, e4e_trainer's names,
`latent_avg` included), `bank.*` (StyleGAN2, NVlabs names as stylegan2.py), `warp.blocks.{i}.*` (TACC blocks),
`aggregation.extract.{image,sketch,semantic,color}.*`, `aggregation.score.*`, `refine.*` - with the
FACEMUGConfig as JSON in `stylert.config`. `--encoder` takes e4e_trainer's own checkpoint (pSp layout:
`encoder.*`, `decoder.*` = the StyleGAN2 it trains against, `latent_avg`) for the encoder and the bank, the rest
seeded random: the parts with published training code, the rest untrained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import (CheckpointError, checkpoint_config, load_strict, read_stylert_checkpoint,
                          save_stylert_checkpoint)
from .facemug import FACEMUG, GUIDANCE, SEMANTIC_CLASSES, FACEMUGConfig, random_facemug
from .onnx_export import DEFAULT_OPSET, export_checked, read_metadata
from .vsp_restorer import load_style_encoder_decoder


@dataclass
class EditSource:
    model: FACEMUG
    description: str
    trained: bool
    seed: int | None = None

    @property
    def resolution(self) -> int:
        return self.model.cfg.size


def from_random_init(seed: int, resolution: int = 256, *, bank_resolution: int = 1024, channel_base: int = 32768,
                     encoder_units=(3, 4, 14, 3), encoder_size: int = 256, aggregation_channels: int = 64) -> EditSource:
    channels = {2 ** i: min(channel_base // 2 ** i, 512) for i in range(2, int(bank_resolution).bit_length())}
    cfg = FACEMUGConfig(resolution, bank_resolution, tuple(encoder_units), encoder_size, aggregation_channels,
                        channels=channels)
    return EditSource(random_facemug(cfg, seed), f"random-init seed {seed}", False, seed)


def from_encoder(path: str | Path, seed: int, resolution: int = 256, aggregation_channels: int = 64) -> EditSource:
    """e4e_trainer's checkpoint for the style encoder and the feature bank; H, A and G seeded random (untrained)."""
    encoder, bank = load_style_encoder_decoder(path)
    if encoder.cfg.in_channels != 26:
        raise CheckpointError(f"{path}: an e4e encoder of {encoder.cfg.in_channels} input channels; FACEMUG's reads 26 "
                              "(image 3, sketch 1, semantic 19, colour 3)")
    cfg = FACEMUGConfig(resolution, bank.cfg.resolution, encoder.cfg.units, encoder.cfg.input_size, aggregation_channels,
                        channels=dict(bank.cfg.channels))
    model = random_facemug(cfg, seed)
    model.encoder.load_state_dict(encoder.state_dict())
    model.bank.load_state_dict(bank.state_dict())
    return EditSource(model.eval(), f"{Path(path).name} (encoder, bank) + random-init seed {seed}", False, seed)


def save_facemug(src: EditSource, path: str | Path) -> Path:
    return save_stylert_checkpoint(path, src.model.state_dict(), call="edit", config=json.dumps(src.model.cfg.to_json()),
                                   trained=src.trained, extra={"stylert.source": src.description})


def from_checkpoint(path: str | Path) -> EditSource:
    state, meta = read_stylert_checkpoint(path, "edit")
    cfg = checkpoint_config(path, meta, lambda text: FACEMUGConfig.from_json(json.loads(text)))
    model = random_facemug(cfg, 0)  # shapes only: every tensor is replaced below
    load_strict(model, state, path, "FACEMUG checkpoint")
    return EditSource(model.eval(), meta.get("stylert.source", Path(path).name), meta.get("stylert.trained") == "true")


def edit_inputs(model: FACEMUG):
    cfg, r = model.cfg, model.cfg.size

    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        mask = torch.nn.functional.interpolate((torch.rand(batch, 1, r // 8, r // 8, generator=g) < 0.5).float(),
                                               size=(r, r), mode="nearest")
        labels = torch.randint(0, SEMANTIC_CLASSES, (batch, r, r), generator=g)
        return {"image": torch.rand(batch, 3, r, r, generator=g) * 2 - 1, "mask": mask,
                "sketch": (torch.rand(batch, 1, r, r, generator=g) < 0.1).float(),
                "semantic": torch.nn.functional.one_hot(labels, SEMANTIC_CLASSES).permute(0, 3, 1, 2).float(),
                "color": (torch.rand(batch, 3, r, r, generator=g) * 2 - 1) * (torch.rand(batch, 1, r, r, generator=g) < 0.2),
                "presence": (torch.rand(batch, len(GUIDANCE), generator=g) < 0.6).float(),
                "exemplar": torch.rand(batch, 3, r, r, generator=g) * 2 - 1, "z": torch.randn(batch, 512, generator=g),
                "alpha": torch.rand(batch, generator=g), "direction": torch.randn(batch, cfg.num_ws, 512, generator=g) * 0.1,
                "strength": torch.rand(batch, generator=g) * 2 - 1, "noise": torch.randn(batch, model.noise_size, generator=g)}
    return make_inputs


def export_edit(src: EditSource, output: str | Path, *, opset: int = DEFAULT_OPSET, flavor: str = "portable",
                target=None, log=print):
    model = src.model.eval()
    meta = {"stylert.call": "edit", "stylert.method": "facemug", "stylert.source": src.description,
            "stylert.trained": str(src.trained).lower(), "stylert.resolution": model.cfg.size,
            "stylert.input_range": "[-1, 1]", "stylert.mask": "1 = edit", "stylert.num_ws": model.cfg.num_ws,
            "stylert.noise_size": model.noise_size, "stylert.guidance": ",".join(GUIDANCE),
            "stylert.semantic_classes": SEMANTIC_CLASSES, "stylert.config": json.dumps(model.cfg.to_json(), sort_keys=True)}
    if src.seed is not None:
        meta["stylert.seed"] = src.seed
    return export_checked(model, model, edit_inputs(model), output, output_names=["edited"], metadata=meta,
                          precision="fp32", opset=opset, flavor=flavor, target=target, log=log)


def rebuild_reference(onnx_path: str | Path, checkpoint: str | Path | None = None) -> FACEMUG:
    """The PyTorch module an exported edit graph came from: its checkpoint, or random init from its metadata."""
    if checkpoint:
        return from_checkpoint(checkpoint).model
    meta = read_metadata(onnx_path)
    if "stylert.seed" not in meta or not meta.get("stylert.source", "").startswith("random-init"):
        raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its checkpoint")
    return random_facemug(FACEMUGConfig.from_json(json.loads(meta["stylert.config"])), int(meta["stylert.seed"]))
