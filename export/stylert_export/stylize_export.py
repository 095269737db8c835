"""`stylert export stylize`: a style pack, and `stylert export stylize-reference`: a reference code in it.

Pack (format 1), a folder with `stylepack.json`:
  {"format": 1, "resolution": R, "w_dim": 512, "num_ws": N, "encoder": "encoder.onnx", "trained": bool,
   "styles": {NAME: {"generator": "NAME.onnx", "psi": 0.7, "exemplar": "NAME.exemplar.png",
                     "references": {REF: "NAME.REF.npy"}}},
   "local": "local.onnx" or null}
Graphs (every one call "stylize", told apart by `stylert.role`):
- encoder.onnx (role encoder, shared by all styles): image [B, 3, R, R] in [-1, 1] -> w [B, w_dim]
- NAME.onnx (role generator, one per style): content [B, w_dim], psi [B], mix_codes [B, N, w_dim],
  mix_from_z [B], mix_layer [B] int64 -> image [B, 3, R, R]  (stylizer.StyleGeneratorGraph)
- local.onnx (role local, optional): content, style [B, 3, R, R], content_mask, style_mask
  [B, 1, R, R] -> stylized [B, 3, R, R]  (local_style.LocalStyleNet)
A style's exemplar is the style image the local model transfers from: given with --exemplar, or
G'(w_avg), the style generator's mean face. References are W+ codes [N, w_dim] as .npy.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoints import (CheckpointError, checkpoint_config, load_strict, read_stylert_checkpoint,
                          save_stylert_checkpoint)
from .generator import GeneratorSource
from .generator import from_checkpoint as generator_from_checkpoint
from .generator import from_random_init as generator_from_random_init
from .local_style import LocalStyleConfig, LocalStyleNet, random_local_style
from .onnx_export import DEFAULT_OPSET, ExportError, config_metadata, export_checked, read_metadata
from .ops.winograd import CONDITIONS
from .psp import PSPConfig, PSPEncoderW, load_psp_encoder, random_psp_encoder
from .random_init import random_generator
from .stylegan2 import Generator, StyleGAN2Config
from .stylizer import StyleGeneratorGraph, invert_reference

MANIFEST = "stylepack.json"
PACK_FORMAT = 1
DEFAULT_PSI = {"cartoon": 0.7, "anime": 0.6}  # the paper's test settings; 0.9 for every other style
OTHER_PSI = 0.9


def default_psi(name: str) -> float:
    return DEFAULT_PSI.get(name, OTHER_PSI)


@dataclass
class StyleSource:
    name: str
    generator: GeneratorSource
    psi: float
    exemplar: Path | None = None


@dataclass
class PackSource:
    encoder: PSPEncoderW
    styles: list[StyleSource]
    local: LocalStyleNet | None
    description: str
    trained: bool
    seed: int | None = None
    notes: list[str] = field(default_factory=list)


def from_random_init(seed: int, resolution: int, styles: list[str], *, with_local: bool = False,
                     channel_base: int = 32768, channel_max: int = 512, w_dim: int = 512,
                     encoder_units: tuple[int, ...] = (3, 4, 14, 3), encoder_size: int = 256,
                     local_width: int = 32, psi: dict[str, float] | None = None) -> PackSource:
    """Every network seeded: encoder `seed`, style i's generator `seed + 1 + i`, local model `seed`."""
    if not styles:
        raise ValueError("name at least one style (--style NAME)")
    psi = psi or {}
    encoder = random_psp_encoder(PSPConfig(tuple(encoder_units), w_dim, encoder_size), seed)
    sources = [StyleSource(name, generator_from_random_init(seed + 1 + i, resolution, channel_base=channel_base,
                                                            channel_max=channel_max, w_dim=w_dim),
                           psi.get(name, default_psi(name))) for i, name in enumerate(styles)]
    local = random_local_style(LocalStyleConfig(resolution, width=local_width, mid=max(local_width // 2, 4)), seed) \
        if with_local else None
    return PackSource(encoder, sources, local, f"random-init seed {seed}", False, seed)


def from_checkpoints(encoder: str | Path, styles: dict[str, str], *, psi: dict[str, float] | None = None,
                     local: str | Path | None = None, encoder_size: int = 256, layout: str = "auto") -> PackSource:
    """A pSp W encoder checkpoint, one StyleGAN2 checkpoint per style, optionally a local-style checkpoint."""
    if not styles:
        raise ValueError("name at least one style (--style NAME=CHECKPOINT)")
    psi = psi or {}
    enc = load_psp_encoder(encoder, encoder_size)
    sources = []
    for name, path in styles.items():
        src = generator_from_checkpoint(path, layout)
        if src.generator.cfg.w_dim != enc.cfg.w_dim:
            raise CheckpointError(f"{path}: w_dim {src.generator.cfg.w_dim} differs from the encoder's {enc.cfg.w_dim}")
        sources.append(StyleSource(name, src, psi.get(name, default_psi(name))))
    local_trained = not local or read_stylert_checkpoint(local, "stylize-local")[1].get("stylert.trained") == "true"
    notes = [] if local_trained else [f"{local}: the region-local model is untrained"]
    return PackSource(enc, sources, load_local(local) if local else None,
                      f"{Path(encoder).name} + {len(styles)} style generator(s)", local_trained, notes=notes)


def save_local(model: LocalStyleNet, path: str | Path, trained: bool, source: str) -> Path:
    return save_stylert_checkpoint(path, model.state_dict(), call="stylize-local", config=json.dumps(model.cfg.to_json()),
                                   trained=trained, extra={"stylert.source": source})


def load_local(path: str | Path) -> LocalStyleNet:
    """A stylert safetensors checkpoint (call "stylize-local"); no public weights exist for seed 003."""
    state, meta = read_stylert_checkpoint(path, "stylize-local")
    cfg = checkpoint_config(path, meta, lambda text: LocalStyleConfig.from_json(json.loads(text)))
    model = LocalStyleNet(cfg).eval()
    load_strict(model, state, path, "local style checkpoint")
    return model


def _common_metadata(pack: PackSource, role: str, resolution: int) -> dict:
    meta = {"stylert.call": "stylize", "stylert.role": role, "stylert.trained": str(pack.trained).lower(),
            "stylert.resolution": resolution, "stylert.input_range": "[-1, 1]"}
    if pack.seed is not None:
        meta["stylert.seed"] = pack.seed
    return meta


def _export_encoder(pack: PackSource, resolution: int, path: Path, opset: int, flavor: str, target, log):
    enc = pack.encoder.eval()

    def make_inputs(batch, seed):
        g = torch.Generator().manual_seed(seed)
        return {"image": torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1}

    meta = {**_common_metadata(pack, "encoder", resolution), "stylert.source": pack.description,
            "stylert.w_dim": enc.cfg.w_dim, "stylert.config": json.dumps(enc.cfg.to_json())}
    return export_checked(enc, enc, make_inputs, path, output_names=["w"], metadata=meta, precision="fp32",
                          opset=opset, flavor=flavor, portable_if_none=True, target=target, log=log)


def generator_inputs(cfg: StyleGAN2Config):
    def make_inputs(batch, seed):
        g = torch.Generator().manual_seed(seed)
        return {"content": torch.randn(batch, cfg.w_dim, generator=g),
                "psi": torch.rand(batch, generator=g) * 0.5 + 0.5,
                "mix_codes": torch.randn(batch, cfg.num_ws, cfg.w_dim, generator=g),
                "mix_from_z": (torch.rand(batch, generator=g) > 0.5).float(),
                "mix_layer": torch.randint(0, cfg.num_ws + 1, (batch,), generator=g)}
    return make_inputs


def _export_style(pack: PackSource, style: StyleSource, path: Path, opset: int, flavor: str, target, log):
    gen = style.generator
    cfg = gen.generator.cfg
    graph = StyleGeneratorGraph(gen.generator.eval())
    meta = {**_common_metadata(pack, "generator", cfg.resolution), "stylert.style": style.name,
            "stylert.psi": style.psi, "stylert.num_ws": cfg.num_ws, "stylert.w_dim": cfg.w_dim,
            "stylert.source": gen.description, "stylert.source_layout": gen.layout,
            "stylert.trained": str(gen.trained).lower(), "stylert.config": config_metadata(cfg)}
    if gen.seed is not None:
        meta["stylert.seed"] = gen.seed
    for note in gen.notes:
        log(f"note ({style.name}): {note}")
    return export_checked(graph, graph, generator_inputs(cfg), path, output_names=["image"], metadata=meta,
                          precision="fp32", opset=opset, flavor=flavor, portable_if_none=True, target=target, log=log)


def local_inputs(resolution: int):
    """Random images, each mask a half-size square at a random place: the style mask's tokens wholly outside it
    are empty, which the model's attention must leave out."""
    def make_inputs(batch, seed):
        g = torch.Generator().manual_seed(seed)

        def box():
            mask = torch.zeros(batch, 1, resolution, resolution)
            for i in range(batch):
                y, x = torch.randint(0, resolution // 2, (2,), generator=g).tolist()
                mask[i, :, y:y + resolution // 2, x:x + resolution // 2] = 1
            return mask

        return {"content": torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1,
                "style": torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1,
                "content_mask": box(), "style_mask": box()}
    return make_inputs


def export_local(pack: PackSource, path: Path, opset: int = DEFAULT_OPSET, *, flavor: str = "portable", target=None,
                 log=print):
    """The pack's region-local model alone (a pack's local.onnx); under the winograd flavour, portable where no
    convolution takes the form (as every graph of a pack)."""
    model = pack.local.eval()
    meta = {**_common_metadata(pack, "local", model.cfg.resolution), "stylert.source": pack.description,
            "stylert.config": json.dumps(model.cfg.to_json()), "stylert.token_stride": 16}
    return export_checked(model, model, local_inputs(model.cfg.resolution), path, output_names=["stylized"],
                          metadata=meta, precision="fp32", opset=opset, flavor=flavor, portable_if_none=True,
                          target=target, log=log)


def _write_exemplar(style: StyleSource, resolution: int, path: Path) -> None:
    from stylert.faces.imageio import read_image, write_image
    from stylert.faces.pipeline import to_uint8

    if style.exemplar is not None:
        import cv2

        rgb = read_image(style.exemplar).rgb
        write_image(path, cv2.resize(rgb, (resolution, resolution), interpolation=cv2.INTER_AREA))
        return
    g = style.generator.generator
    with torch.no_grad():
        mean_face = g(g.mapping.w_avg.reshape(1, 1, -1).expand(1, g.num_ws, -1)).numpy()
    write_image(path, to_uint8(mean_face)[0])


def export_pack(pack: PackSource, directory: str | Path, *, opset: int = DEFAULT_OPSET, flavor: str = "portable",
                target=None, log=print) -> Path:
    """Export every graph of the pack (each parity-checked) and write its manifest last; for a phone target
    (mobile.Target) the manifest names its artifacts; a manifest already there is removed first (it would name the
    graphs this export replaces). Under the winograd flavour each graph takes the form where a convolution qualifies
    and stays portable where none does (its metadata says which); a pack none of whose graphs takes it gets no
    manifest."""
    from .mobile import SUFFIX

    suffix = SUFFIX[target.name] if target is not None else ".onnx"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfgs = [s.generator.generator.cfg for s in pack.styles]
    resolution, num_ws = cfgs[0].resolution, cfgs[0].num_ws
    for s, cfg in zip(pack.styles, cfgs):
        if (cfg.resolution, cfg.num_ws, cfg.w_dim) != (resolution, num_ws, pack.encoder.cfg.w_dim):
            raise ExportError(f"style '{s.name}': {cfg.resolution}x{cfg.resolution}, {cfg.num_ws} ws of {cfg.w_dim}; "
                              f"a pack's generators share one resolution ({resolution}), num_ws and the encoder's w_dim")
        if not s.name.replace("-", "").replace("_", "").isalnum():
            raise ExportError(f"style name {s.name!r}: use letters, digits, '-' and '_'")
    if pack.local is not None and pack.local.cfg.resolution != resolution:
        raise ExportError(f"local model at {pack.local.cfg.resolution}, generators at {resolution}: they must match")
    manifest = {"format": PACK_FORMAT, "resolution": resolution, "w_dim": pack.encoder.cfg.w_dim, "num_ws": num_ws,
                "encoder": f"encoder{suffix}", "styles": {}, "local": None,
                "trained": pack.trained and all(s.generator.trained for s in pack.styles)}
    for note in pack.notes:
        log(f"note: {note}")
    if (directory / MANIFEST).exists():  # it would name graphs this export replaces; written again at the end
        (directory / MANIFEST).unlink()
        log(f"{directory / MANIFEST}: removed until every graph is exported again")
    log("encoder:")
    _export_encoder(pack, resolution, directory / "encoder.onnx", opset, flavor, target, log)
    for s in pack.styles:
        log(f"style '{s.name}' (psi {s.psi}):")
        _export_style(pack, s, directory / f"{s.name}.onnx", opset, flavor, target, log)
        _write_exemplar(s, resolution, directory / f"{s.name}.exemplar.png")
        manifest["styles"][s.name] = {"generator": f"{s.name}{suffix}", "psi": s.psi,
                                      "exemplar": f"{s.name}.exemplar.png", "references": {}}
    if pack.local is not None:
        log("local style transfer:")
        export_local(pack, directory / "local.onnx", opset, flavor=flavor, target=target, log=log)
        manifest["local"] = f"local{suffix}"
    graphs = [manifest["encoder"], *(s["generator"] for s in manifest["styles"].values()), manifest["local"]]
    if flavor == "winograd" and not any(read_metadata(directory / g)["stylert.flavor"] == flavor for g in graphs if g):
        raise ExportError(f"--flavor winograd: no convolution of this pack's graphs takes the Winograd form "
                          f"({CONDITIONS}); its graphs in {directory} are the portable ones, and no manifest is "
                          "written: export it with --flavor portable")
    write_manifest(directory, manifest)
    return directory / MANIFEST


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{directory}: no {MANIFEST}; make a pack with `stylert export stylize`")
    return json.loads(path.read_text())


def write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


def rebuild_generator(onnx_path: str | Path, checkpoint: str | Path | None = None) -> Generator:
    """The PyTorch G' of a style graph: from its metadata (random init) or its checkpoint."""
    from .checkpoints import load_generator

    meta = read_metadata(onnx_path)
    if meta.get("stylert.role") != "generator":
        raise ExportError(f"{onnx_path}: not a stylert style generator graph")
    if meta["stylert.source_layout"] == "random-init":
        return random_generator(StyleGAN2Config.from_json(json.loads(meta["stylert.config"])), int(meta["stylert.seed"]))
    if checkpoint is None:
        raise ExportError(f"{onnx_path}: exported from {meta['stylert.source']}; pass that checkpoint")
    return load_generator(checkpoint, meta["stylert.source_layout"]).generator


def rebuild_reference(onnx_path: str | Path, checkpoint: str | Path | None = None) -> torch.nn.Module:
    """The PyTorch module any pack graph came from (random init from metadata, else its checkpoint)."""
    meta = read_metadata(onnx_path)
    role = meta.get("stylert.role")
    if role == "generator":
        return StyleGeneratorGraph(rebuild_generator(onnx_path, checkpoint))
    cfg = json.loads(meta.get("stylert.config", "{}"))
    if role == "encoder":
        if checkpoint is not None:
            return load_psp_encoder(checkpoint, int(cfg["input_size"]))
        if "stylert.seed" in meta:
            return random_psp_encoder(PSPConfig.from_json(cfg), int(meta["stylert.seed"]))
    elif role == "local":
        if checkpoint is not None:
            return load_local(checkpoint)
        if "stylert.seed" in meta:
            return random_local_style(LocalStyleConfig.from_json(cfg), int(meta["stylert.seed"]))
    else:
        raise ExportError(f"{onnx_path}: not a stylert stylize graph")
    raise ExportError(f"{onnx_path}: exported from {meta.get('stylert.source')}; pass its checkpoint")


def add_reference(directory: str | Path, style: str, image: np.ndarray, name: str, *,
                  checkpoint: str | Path | None = None, steps: int = 300, log=print) -> Path:
    """Invert an aligned reference image (uint8 R x R x 3) with the style's G' and store its W+ code."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if style not in manifest["styles"]:
        raise ExportError(f"style {style!r} is not in {directory}; available: {', '.join(sorted(manifest['styles']))}")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ExportError(f"reference name {name!r}: use letters, digits, '-' and '_'")
    entry = manifest["styles"][style]
    g = rebuild_generator(directory / entry["generator"], checkpoint).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 127.5 - 1
    code = invert_reference(g, x, steps=steps, log=log).numpy().astype(np.float32)
    out = directory / f"{style}.{name}.npy"
    np.save(out, code)
    entry.setdefault("references", {})[name] = out.name
    write_manifest(directory, manifest)
    return out
