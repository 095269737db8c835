"""`stylert export restore`: QC-StyleGAN restoration graphs.

Graph contract (format 1), R the generator's resolution:
- default (sharp-only): image [batch, 3, R, R] in [-1, 1], fidelity [batch] -> restored [batch, 3, R, R]
  restored = (1 - fidelity) * G(E_w(image), q = 0) + fidelity * image: 0 = fully restored, 1 = the input.
- --with-quality: image, q [batch, q_dim], fidelity -> restored = blend of G(E_w(image), q), and
  quality [batch, q_dim] = E_q(image). q = 0 restores; q = quality re-synthesises the input's degradation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .onnx_export import DEFAULT_OPSET, config_metadata, export_checked, read_metadata
from .qc_stylegan import QCRestorer, QualityRestoreGraph, SharpRestoreGraph, load_qc_restorer, random_qc_restorer
from .stylegan2 import StyleGAN2Config


@dataclass
class RestorerSource:
    model: QCRestorer
    description: str
    trained: bool
    seed: int | None = None


def from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, channel_max: int = 512,
                     w_dim: int = 512, q_dim: int = 16) -> RestorerSource:
    cfg = StyleGAN2Config.from_channel_base(resolution, channel_base, channel_max, w_dim, conv_clamp=256.0)
    return RestorerSource(random_qc_restorer(cfg, seed, q_dim), f"random-init seed {seed}", False, seed)


def from_checkpoints(encoder: str | Path, generator: str | Path) -> RestorerSource:
    return RestorerSource(load_qc_restorer(encoder, generator), f"{Path(encoder).name} + {Path(generator).name}", True)


def export_restorer(src: RestorerSource, output: str | Path, *, with_quality: bool = False,
                    opset: int = DEFAULT_OPSET, flavor: str = "portable", log=print):
    model = src.model.eval()
    res, q_dim = model.decoder.cfg.resolution, model.q_dim

    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        feeds = {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1}
        if with_quality:
            feeds["q"] = torch.randn(batch, q_dim, generator=g)
        feeds["fidelity"] = torch.rand(batch, generator=g)
        return feeds

    graph = QualityRestoreGraph(model) if with_quality else SharpRestoreGraph(model)
    metadata = {
        "stylert.call": "restore",
        "stylert.method": "qc",
        "stylert.source": src.description,
        "stylert.trained": str(src.trained).lower(),
        "stylert.resolution": res,
        "stylert.q_dim": q_dim,
        "stylert.with_quality": str(with_quality).lower(),
        "stylert.input_range": "[-1, 1]",
        "stylert.config": config_metadata(model.decoder.cfg),
    }
    if src.seed is not None:
        metadata["stylert.seed"] = src.seed
    names = ["restored", "quality"] if with_quality else ["restored"]
    return export_checked(graph, graph, make_inputs, output, output_names=names, metadata=metadata,
                          precision="fp32", opset=opset, flavor=flavor, log=log)


def rebuild_reference(onnx_path: str | Path, encoder: str | Path | None = None,
                      generator: str | Path | None = None) -> QCRestorer:
    """The PyTorch restorer an exported graph came from (random init from metadata, else its checkpoints)."""
    import json

    meta = read_metadata(onnx_path)
    if encoder and generator:
        return from_checkpoints(encoder, generator).model
    if "stylert.seed" not in meta:
        raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its encoder and generator")
    cfg = StyleGAN2Config.from_json(json.loads(meta["stylert.config"]))
    return random_qc_restorer(cfg, int(meta["stylert.seed"]), int(meta["stylert.q_dim"]))
