"""`stylert export inpaint`: EXE-GAN (exemplar-guided face inpainting) and GRIG (iterative residual inpainting).

Graph contracts (format 1); masks are 1 where the image is filled, images in [-1, 1]:
- exe-gan, the generator graph (role "generator"), at the path given:
    image [B, 3, R, R], mask [B, 1, R, R], codes [B, K, 512], z [B, 512], psi [B], noise [B, N] ~ N(0, 1)
    -> inpainted [B, 3, R, R] = image * (1 - mask) + G(...) * mask
  metadata: stylert.num_codes K, stylert.noise_size N, stylert.exemplar_graph (the file beside it),
  stylert.default_codes (pSp's average-face codes, base64 float32 [K, 512]: the codes without an exemplar).
- exe-gan, the exemplar graph (role "exemplar"), `<name>.exemplar.onnx` beside it:
    image [B, 3, R, R] (the exemplar face, aligned) -> codes [B, K, 512]
- grig, one reasoning step (Eq. 4.1); the runtime runs T steps and keeps every intermediate:
    image [B, 3, S, S] (I^{t-1}), mask [B, 1, S, S], noise [B, 2 (S/2)^2] ~ N(0, 1)
    -> inpainted [B, 3, S, S] (I^t = I^{t-1} + Delta_t * mask)
Every random draw is an input; nothing random happens inside a graph.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .exe_gan import EXEConfig, EXEGenerator, EXEInpaintGraph, EXEModel, load_exe_gan, random_exe_gan
from .grig import GRIGConfig, GRIGStep, load_grig, random_grig
from .onnx_export import DEFAULT_OPSET, export_checked, read_metadata
from .plugin_ops import in_flavor


def exemplar_path(output: str | Path) -> Path:
    """Where the exemplar graph of `output` goes: exe256.onnx -> exe256.exemplar.onnx."""
    output = Path(output)
    return output.with_name(f"{output.stem}.exemplar{output.suffix}")


def exe_from_random_init(seed: int, resolution: int, *, channel_base: int = 32768, channel_max: int = 512,
                         n_mlp: int = 8, encoder_units=(3, 4, 14, 3), encoder_size: int = 256) -> EXEModel:
    """The public code's shapes at `resolution` (config-F channels by default), seeded random weights."""
    channels = {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(np.log2(resolution)) + 1)}
    return random_exe_gan(EXEConfig(resolution, 512, n_mlp, channels), seed, tuple(encoder_units), encoder_size)


def exe_from_checkpoints(exe_ckpt: str | Path, psp_ckpt: str | Path) -> EXEModel:
    return load_exe_gan(exe_ckpt, psp_ckpt)


def exe_inputs(graph):
    cfg = graph.cfg
    res, k, sd = cfg.size, cfg.num_exemplar_codes, cfg.style_dim

    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        mask = (torch.rand(batch, 1, res // 8, res // 8, generator=g) < 0.4).float()
        return {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1,
                "mask": torch.nn.functional.interpolate(mask, size=(res, res), mode="nearest"),
                "codes": torch.randn(batch, k, sd, generator=g) * 0.5, "z": torch.randn(batch, sd, generator=g),
                "psi": torch.rand(batch, generator=g) * 0.5 + 0.5,
                "noise": torch.randn(batch, graph.noise_size, generator=g)}
    return make_inputs


def exemplar_inputs(res: int):
    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1}
    return make_inputs


def _common(model, method: str) -> dict:
    meta = {"stylert.call": "inpaint", "stylert.method": method, "stylert.source": model.description,
            "stylert.trained": str(model.trained).lower(), "stylert.resolution": model.resolution,
            "stylert.input_range": "[-1, 1]", "stylert.mask": "1 = fill"}
    if model.seed is not None:
        meta["stylert.seed"] = model.seed
    return meta


def export_exe_gan(model: EXEModel, output: str | Path, *, opset: int = DEFAULT_OPSET, flavor: str = "portable",
                   target=None, log=print) -> tuple[Path, Path]:
    """The generator graph at `output` and the exemplar graph beside it, each checked against PyTorch; under the
    winograd flavour the exemplar encoder takes the form where a convolution qualifies and stays portable where none
    does (as a pack's graphs)."""
    output = Path(output)
    graph, cfg = model.graph.eval(), model.graph.cfg
    codes = model.exemplar.latent_avg[cfg.psp_start:cfg.psp_start + cfg.num_exemplar_codes]
    config = {**cfg.to_json(), "psp_units": list(model.psp_units), "psp_input": model.psp_input}
    meta = {**_common(model, "exe-gan"), "stylert.config": json.dumps(config, sort_keys=True),
            "stylert.num_codes": cfg.num_exemplar_codes, "stylert.code_dim": cfg.style_dim,
            "stylert.psp_start": cfg.psp_start, "stylert.noise_size": graph.noise_size}
    extra = exemplar_path(output)
    export_checked(model.exemplar.eval(), model.exemplar, exemplar_inputs(model.resolution), extra,
                   output_names=["codes"], metadata={**meta, "stylert.role": "exemplar"}, precision="fp32",
                   opset=opset, flavor="winograd" if flavor == "winograd" else "portable", portable_if_none=True,
                   target=target, log=log)
    default = base64.b64encode(codes.detach().float().numpy().astype("<f4").tobytes()).decode()
    module = in_flavor(graph, lambda: EXEInpaintGraph(EXEGenerator(cfg), graph.w_avg), flavor)
    export_checked(module, graph, exe_inputs(graph), output, output_names=["inpainted"],
                   metadata={**meta, "stylert.role": "generator", "stylert.exemplar_graph": extra.name,
                             "stylert.default_codes": default},
                   precision="fp32", opset=opset, flavor=flavor, target=target, log=log)
    return output, extra


@dataclass
class GRIGModel:
    step: GRIGStep
    description: str
    trained: bool
    seed: int | None = None

    @property
    def resolution(self) -> int:
        return self.step.cfg.size


def grig_from_random_init(seed: int, resolution: int = 256, *, ngf: int = 64, dim: int = 48, blocks=(4, 6, 6, 8),
                          refinement: int = 4) -> GRIGModel:
    cfg = GRIGConfig(resolution, ngf, dim, tuple(blocks), refinement)
    return GRIGModel(GRIGStep(random_grig(cfg, seed)).eval(), f"random-init seed {seed}", False, seed)


def grig_from_checkpoint(path: str | Path) -> GRIGModel:
    return GRIGModel(GRIGStep(load_grig(path)).eval(), Path(path).name, True)


def grig_inputs(step: GRIGStep):
    res = step.cfg.size

    def make_inputs(batch: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        mask = (torch.rand(batch, 1, res // 16, res // 16, generator=g) < 0.4).float()
        mask = torch.nn.functional.interpolate(mask, size=(res, res), mode="nearest")
        return {"image": (torch.rand(batch, 3, res, res, generator=g) * 2 - 1) * (1 - mask), "mask": mask,
                "noise": torch.randn(batch, step.noise_size, generator=g)}
    return make_inputs


def export_grig(model: GRIGModel, output: str | Path, *, opset: int = DEFAULT_OPSET, flavor: str = "portable",
                target=None, log=print) -> Path:
    """One reasoning step as a graph (the runtime loops it: T is a per-call choice, every I^t is kept)."""
    if flavor == "plugin":
        raise ValueError("GRIG has no plugin flavour (it has no modulated convs)")
    step = model.step.eval()
    meta = {**_common(model, "grig"), "stylert.config": json.dumps(step.cfg.to_json(), sort_keys=True),
            "stylert.noise_size": step.noise_size, "stylert.default_steps": 3, "stylert.role": "step"}
    export_checked(step, step, grig_inputs(step), output, output_names=["inpainted"], metadata=meta,
                   precision="fp32", opset=opset, flavor=flavor, target=target, log=log)
    return Path(output)


def rebuild_reference(onnx_path: str | Path, checkpoint: str | Path | None = None,
                      encoder: str | Path | None = None) -> torch.nn.Module:
    """The PyTorch module an exported inpaint graph came from: random init from its metadata, else its checkpoints."""
    meta = read_metadata(onnx_path)
    if meta.get("stylert.method") == "grig":
        if checkpoint:
            return grig_from_checkpoint(checkpoint).step
        if "stylert.seed" not in meta:
            raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its GRIG checkpoint")
        cfg = GRIGConfig.from_json(json.loads(meta["stylert.config"]))
        return GRIGStep(random_grig(cfg, int(meta["stylert.seed"]))).eval()
    if checkpoint and encoder:
        model = exe_from_checkpoints(checkpoint, encoder)
    elif "stylert.seed" in meta:
        d = json.loads(meta["stylert.config"])
        model = random_exe_gan(EXEConfig.from_json(d), int(meta["stylert.seed"]), tuple(d["psp_units"]),
                               int(d["psp_input"]))
    else:
        raise ValueError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its EXE-GAN and pSp "
                         "checkpoints")
    return model.exemplar if meta.get("stylert.role") == "exemplar" else model.graph
