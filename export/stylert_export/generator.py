"""Export a StyleGAN2 generator to ONNX: `stylert export generator`.

Graph contract (format 1):
- default:          ws [batch, num_ws, w_dim] float32 (W+)          -> image [batch, 3, R, R] float32
- --with-mapping:   z [batch, z_dim], truncation_psi [batch] float32 -> image
The image is the generator's raw output (about [-1, 1], not clamped). Noise is the
checkpoint's constant buffers, so outputs equal the reference implementations'
`randomize_noise=False` / `noise_mode='const'` results.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import load_generator
from .onnx_export import DEFAULT_OPSET, ExportError, config_metadata, export_checked, read_metadata
from .plugin_ops import in_flavor
from .random_init import random_generator
from .stylegan2 import Generator, GeneratorWithMapping, StyleGAN2Config, cast_synthesis_fp16



@dataclass
class GeneratorSource:
    """A generator plus where it came from (recorded in the ONNX metadata)."""
    generator: Generator
    layout: str
    description: str
    trained: bool
    seed: int | None = None
    notes: list[str] = field(default_factory=list)


def from_checkpoint(path: str | Path, layout: str = "auto", conv_clamp: float | None = None) -> GeneratorSource:
    loaded = load_generator(path, layout, conv_clamp)
    return GeneratorSource(loaded.generator, loaded.layout, Path(path).name, True, notes=loaded.notes)


def from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, channel_max: int = 512,
                     w_dim: int = 512, mapping_layers: int = 8) -> GeneratorSource:
    cfg = StyleGAN2Config.from_channel_base(resolution, channel_base, channel_max, w_dim, mapping_layers=mapping_layers)
    return GeneratorSource(random_generator(cfg, seed), "random-init", f"random-init seed {seed}", False, seed)


def rebuild_reference(onnx_path: str | Path, checkpoint: str | Path | None = None) -> Generator:
    """The fp32 PyTorch generator an exported graph came from: from its metadata (random init) or its checkpoint."""
    meta = read_metadata(onnx_path)
    if meta.get("stylert.call") != "generator":
        raise ExportError(f"{onnx_path}: not a stylert generator graph")
    if meta["stylert.source_layout"] == "random-init":
        cfg = StyleGAN2Config.from_json(json.loads(meta["stylert.config"]))
        return random_generator(cfg, int(meta["stylert.seed"]))
    if checkpoint is None:
        raise ExportError(f"{onnx_path}: exported from checkpoint {meta['stylert.source']}; pass that checkpoint")
    return load_generator(checkpoint, meta["stylert.source_layout"]).generator


def export_generator(src: GeneratorSource, output: str | Path, *, opset: int = DEFAULT_OPSET, fp16: bool = False,
                     with_mapping: bool = False, flavor: str = "portable", target=None, log=print):
    """Export, then check parity on ONNX Runtime; a failed check removes the file and raises."""
    reference = src.generator.eval()
    cfg = reference.cfg
    module = in_flavor(copy.deepcopy(reference), lambda: Generator(cfg), flavor)
    if fp16:
        cast_synthesis_fp16(module)
    if with_mapping:
        module, ref_fn = GeneratorWithMapping(module), GeneratorWithMapping(reference)

        def make_inputs(batch, seed):
            g = torch.Generator().manual_seed(seed)
            return {"z": torch.randn(batch, cfg.z_dim, generator=g),
                    "truncation_psi": torch.rand(batch, generator=g) * 0.5 + 0.5}
    else:
        ref_fn = reference

        def make_inputs(batch, seed):
            g = torch.Generator().manual_seed(seed)
            return {"ws": torch.randn(batch, cfg.num_ws, cfg.w_dim, generator=g)}

    metadata = {
        "stylert.call": "generator",
        "stylert.source_layout": src.layout,
        "stylert.source": src.description,
        "stylert.trained": str(src.trained).lower(),
        "stylert.resolution": cfg.resolution,
        "stylert.num_ws": cfg.num_ws,
        "stylert.w_dim": cfg.w_dim,
        "stylert.z_dim": cfg.z_dim,
        "stylert.with_mapping": str(with_mapping).lower(),
        "stylert.noise": "const",
        "stylert.config": config_metadata(cfg),
    }
    if src.seed is not None:
        metadata["stylert.seed"] = src.seed
    for note in src.notes:
        log(f"note: {note}")
    return export_checked(module, ref_fn, make_inputs, output, output_names=["image"], metadata=metadata,
                          precision="fp16" if fp16 else "fp32", opset=opset, flavor=flavor, target=target, log=log)
