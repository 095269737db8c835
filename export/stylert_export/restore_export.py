"""`stylert export restore`: QC-StyleGAN and visual-style-prompt (VSP) restoration graphs.

Graph contract (format 1), R the generator's resolution, method qc:
- default (sharp-only): image [batch, 3, R, R] in [-1, 1], fidelity [batch] -> restored [batch, 3, R, R]
  restored = (1 - fidelity) * G(E_w(image), q = 0) + fidelity * image: 0 = fully restored, 1 = the input.
- --with-quality: image, q [batch, q_dim], fidelity -> restored = blend of G(E_w(image), q), and
  quality [batch, q_dim] = E_q(image). q = 0 restores; q = quality re-synthesises the input's degradation.
Method vsp (vsp_restorer.py): image [batch, 3, R, R], fidelity [batch], noise [batch, N] ~ N(0, 1) -> restored.
  `noise` carries w^T, z-hat and every noise map (metadata stylert.noise_layout); the SDK draws it from a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .onnx_export import DEFAULT_OPSET, config_metadata, export_checked, read_metadata
from .plugin_ops import in_flavor
from .qc_stylegan import QCRestorer, QualityRestoreGraph, SharpRestoreGraph, load_qc_restorer, random_qc_restorer
from .stylegan2 import StyleGAN2Config
from .vsp_restorer import VSPConfig, VSPRestorer, load_vsp_restorer, random_vsp_restorer


@dataclass
class RestorerSource:
    model: QCRestorer | VSPRestorer
    description: str
    trained: bool
    seed: int | None = None
    method: str = "qc"
    config: VSPConfig | None = None

    @property
    def resolution(self) -> int:
        return self.model.net.cfg.size if self.method == "vsp" else self.model.decoder.cfg.resolution


def from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, channel_max: int = 512,
                     w_dim: int = 512, q_dim: int = 16) -> RestorerSource:
    cfg = StyleGAN2Config.from_channel_base(resolution, channel_base, channel_max, w_dim, conv_clamp=256.0)
    return RestorerSource(random_qc_restorer(cfg, seed, q_dim), f"random-init seed {seed}", False, seed)


def from_checkpoints(encoder: str | Path, generator: str | Path) -> RestorerSource:
    return RestorerSource(load_qc_restorer(encoder, generator), f"{Path(encoder).name} + {Path(generator).name}", True)


def vsp_from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, encoder_units=(3, 4, 14, 3),
                         encoder_size: int = 256) -> RestorerSource:
    """The public code's shapes at `resolution` (feature bank at twice that, up to 1024), seeded random weights."""
    bank = min(2 * resolution, 1024)
    channels = StyleGAN2Config.nvlabs_channels(bank, channel_base, 512)
    if channels[4] != 512:
        raise ValueError(f"--channel-base {channel_base} gives {channels[4]} channels at 4x4; the VSP restorer needs "
                         "512 there (its global code completes 2048-wide styles): use >= 2048")
    cfg = VSPConfig(resolution, bank, tuple(encoder_units), encoder_size, channels)
    return RestorerSource(random_vsp_restorer(cfg, seed), f"random-init seed {seed}", False, seed, "vsp", cfg)


def vsp_from_checkpoints(style_encoder_decoder: str | Path, code_diffuser: str | Path,
                         restoration_net: str | Path) -> RestorerSource:
    names = " + ".join(Path(p).name for p in (style_encoder_decoder, code_diffuser, restoration_net))
    return RestorerSource(load_vsp_restorer(style_encoder_decoder, code_diffuser, restoration_net), names, True,
                          method="vsp")


def vsp_inputs(model: VSPRestorer, res: int):
    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1, "fidelity": torch.rand(batch, generator=g),
                "noise": torch.randn(batch, model.noise_size, generator=g)}
    return make_inputs


def _export_vsp(src: RestorerSource, output, opset: int, flavor: str, target, log):
    import json

    if flavor == "plugin":
        raise ValueError("the VSP restorer has no plugin flavour (its SMART layers have no plugin)")
    model = src.model.eval()
    res = model.net.cfg.size
    metadata = {
        "stylert.call": "restore", "stylert.method": "vsp", "stylert.source": src.description,
        "stylert.trained": str(src.trained).lower(), "stylert.resolution": res, "stylert.input_range": "[-1, 1]",
        "stylert.noise_size": model.noise_size,
        "stylert.noise_layout": json.dumps([[name, list(shape)] for name, shape in model.noise_layout()]),
    }
    if src.config is not None:
        metadata["stylert.config"] = json.dumps(src.config.to_json())
    if src.seed is not None:
        metadata["stylert.seed"] = src.seed
    # The diffuser iterates 16 attention blocks, whose round-off can grow with every one (trained weights
    # are not conditioned the way random_vsp_restorer's are), so parity is judged against float64.
    return export_checked(model, model, vsp_inputs(model, res), output, output_names=["restored"], metadata=metadata,
                          precision="fp32", opset=opset, flavor=flavor, float64_floor=True, target=target, log=log)


def export_restorer(src: RestorerSource, output: str | Path, *, with_quality: bool = False,
                    opset: int = DEFAULT_OPSET, flavor: str = "portable", target=None, log=print):
    if src.method == "vsp":
        if with_quality:
            raise ValueError("--with-quality is QC-StyleGAN's quality code; the VSP restorer has none")
        return _export_vsp(src, output, opset, flavor, target, log)
    model = src.model.eval()
    res, q_dim = model.decoder.cfg.resolution, model.q_dim

    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        feeds = {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1}
        if with_quality:
            feeds["q"] = torch.randn(batch, q_dim, generator=g)
        feeds["fidelity"] = torch.rand(batch, generator=g)
        return feeds

    restore_graph = QualityRestoreGraph if with_quality else SharpRestoreGraph
    graph = restore_graph(model)
    module = restore_graph(in_flavor(model, lambda: QCRestorer(model.decoder.cfg, q_dim), flavor))
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
    return export_checked(module, graph, make_inputs, output, output_names=names, metadata=metadata,
                          precision="fp32", opset=opset, flavor=flavor, target=target, log=log)


def rebuild_reference(onnx_path: str | Path, encoder: str | Path | None = None,
                      generator: str | Path | None = None) -> QCRestorer | VSPRestorer:
    """The PyTorch restorer an exported graph came from (random init from metadata, else its checkpoints)."""
    import json

    meta = read_metadata(onnx_path)
    if meta.get("stylert.method") == "vsp":
        if "stylert.seed" not in meta:
            raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; rebuild it with "
                             "vsp_from_checkpoints and its three checkpoints")
        return random_vsp_restorer(VSPConfig.from_json(json.loads(meta["stylert.config"])), int(meta["stylert.seed"]))
    if encoder and generator:
        return from_checkpoints(encoder, generator).model
    if "stylert.seed" not in meta:
        raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its encoder and generator")
    cfg = StyleGAN2Config.from_json(json.loads(meta["stylert.config"]))
    return random_qc_restorer(cfg, int(meta["stylert.seed"]), int(meta["stylert.q_dim"]))
