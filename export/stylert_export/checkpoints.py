"""Load StyleGAN2 generators from the two public checkpoint layouts, safely.

- rosinality stylegan2-pytorch: `.pt` holding {'g_ema': state_dict, 'latent_avg'?, ...} or a
  bare state dict (`style.N`, `input.input`, `conv1`, `convs.N`, `to_rgbs.N`, `noises.noise_N`).
- NVlabs stylegan2-ada-pytorch: `.pt`/`.pth` holding {'G_ema': state_dict} or a bare one
  (`mapping.fcN`, `synthesis.bR.*`), and the original `.pkl` snapshots, read by `safe_pickle`.

`.pt` files go through `torch.load(weights_only=True)`; nothing in a checkpoint runs code.
Resolution, channel counts, mapping depth and the number of ws come from the tensors.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .safe_pickle import OpaqueObject, PersistentRecord, module_state_dict, safe_load_pickle
from .stylegan2 import Generator, StyleGAN2Config

LAYOUTS = ("rosinality", "nvlabs")
NVLABS_DEFAULT_CONV_CLAMP = 256.0  # what stylegan2-ada-pytorch's train.py sets for every config


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not hold what its layout needs."""


@dataclass
class LoadedGenerator:
    generator: Generator
    layout: str
    source: str
    notes: list[str] = field(default_factory=list)


def read_file(path: str | Path) -> Any:
    """The object a checkpoint file holds: `.pkl` via the safe reader, anything else via weights_only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if zipfile.is_zipfile(path) or path.suffix in (".pt", ".pth"):
        return detached(_torch_load(path))
    data = path.read_bytes()
    try:
        return detached(safe_load_pickle(data))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError, AttributeError,
            IndexError, KeyError, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); "
                              "truncated or not a StyleGAN2 checkpoint") from None


def detached(obj: Any) -> Any:
    """Every tensor in a loaded checkpoint as a graph leaf without grad: tensors saved with
    requires_grad=True (a latent_avg computed outside no_grad) would otherwise break deepcopy."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().requires_grad_(False)
    if isinstance(obj, dict):
        return type(obj)((k, detached(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(detached(v) for v in obj)
    return obj


def _numpy_scalars() -> list:
    """What a pickled numpy number needs (EXE-GAN's `best_fid`, GRIG's `metrics`): the scalar constructor under
    its numpy 2 and numpy 1 names, and the numeric dtypes. Object dtypes stay refused, so nothing here can
    reach code: a scalar is rebuilt from raw bytes."""
    import numpy as np

    scalar = np._core.multiarray.scalar
    numeric = [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *numeric]


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace, *_numpy_scalars()]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            allowed = {"argparse.Namespace", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                       "numpy.dtype"}
            found = ", ".join(g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                              if g not in allowed and not g.startswith("numpy.dtypes.")) or "unknown objects"
        except Exception:  # noqa: BLE001 - naming them is a courtesy; the refusal stands
            found = "objects it cannot name"
        raise CheckpointError(f"{path}: refused to unpickle: it holds objects other than tensors and numbers "
                              f"({found}); stylert reads checkpoints with weights_only=True") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({first})") from None


def detect_layout(state: dict[str, Any]) -> str | None:
    if "style.1.weight" in state or "input.input" in state:
        return "rosinality"
    if any(k.startswith("synthesis.b4.") for k in state):
        return "nvlabs"
    return None


def _pick_state(obj: Any, layout: str, path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(state dict, hyper-parameters, extras such as latent_avg) from what the file holds."""
    if isinstance(obj, OpaqueObject) and "tflib" in obj.qualname:
        raise CheckpointError(f"{path}: a TensorFlow-era StyleGAN2 pickle; convert it with the NVlabs "
                              "stylegan2-ada-pytorch legacy.py to a PyTorch snapshot first")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors or networks, found {type(obj).__name__}")
    hyper: dict = {}
    extras: dict = {}
    top = "g_ema" if layout == "rosinality" else "G_ema"
    if top in obj:
        inner = obj[top]
        if isinstance(inner, PersistentRecord):
            hyper = inner.init_kwargs
            state = module_state_dict(inner)
        elif isinstance(inner, dict):
            state = dict(inner)
        else:
            raise CheckpointError(f"{path}: '{top}' holds a {type(inner).__name__}, not a state dict")
        if isinstance(obj.get("latent_avg"), torch.Tensor):
            extras["latent_avg"] = obj["latent_avg"]
    elif detect_layout(obj) is not None:
        state = dict(obj)
    else:
        other = {"g_ema": "rosinality", "G_ema": "nvlabs"}
        hint = next((f"; it holds '{k}' ({v} layout): pass --layout {v}" for k, v in other.items() if k in obj), "")
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointError(f"{path}: no '{top}' entry and no {layout} generator keys (top-level keys: {keys}){hint}")
    found = detect_layout(state)
    if found != layout:
        hint = f"it is in the {found} layout; pass --layout {found}" if found else "unrecognised keys"
        raise CheckpointError(f"{path}: not a {layout}-layout generator ({hint})")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, hyper, extras


def _require(state: dict, keys: list[str], path: Path, layout: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path}: {layout} checkpoint is missing keys: {', '.join(missing[:10])}"
                              + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))


def count_keys(state: dict, pattern: str) -> int:
    """How many distinct indices the regex group of `pattern` takes over the state's keys."""
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def strip_prefix(state: dict, prefix: str) -> dict:
    """The entries under `prefix` (e.g. 'encoder.' of a pSp checkpoint), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def rosinality_to_stylert(state: dict, path: Path) -> tuple[dict, StyleGAN2Config]:
    """Rename a rosinality g_ema state dict to our (NVlabs-named) layout and infer its config."""
    n_mlp = count_keys(state, r"style\.(\d+)\.weight")
    n_rgb = count_keys(state, r"to_rgbs\.(\d+)\.conv\.weight")
    _require(state, ["input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "style.1.weight"], path, "rosinality")
    log_size = n_rgb + 2
    resolution = 2 ** log_size
    channels = {4: state["input.input"].shape[1]}
    for j in range(n_rgb):
        key = f"convs.{2 * j}.conv.weight"
        _require(state, [key, f"convs.{2 * j + 1}.conv.weight"], path, "rosinality")
        channels[2 ** (j + 3)] = state[key].shape[1]
    cfg = StyleGAN2Config(resolution=resolution, channels=channels, z_dim=state["style.1.weight"].shape[1],
                          w_dim=state[f"style.{n_mlp}.weight"].shape[0], mapping_layers=n_mlp,
                          conv_clamp=None, demod_weight_gain=True)

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = state["input.input"][0]
    layers = [("conv1", "synthesis.b4.conv1", 0)]
    rgbs = [("to_rgb1", "synthesis.b4")]
    for j in range(n_rgb):
        block = f"synthesis.b{2 ** (j + 3)}"
        layers += [(f"convs.{2 * j}", f"{block}.conv0", 2 * j + 1), (f"convs.{2 * j + 1}", f"{block}.conv1", 2 * j + 2)]
        rgbs.append((f"to_rgbs.{j}", block))
    for src, dst, noise_idx in layers:
        _require(state, [f"{src}.conv.modulation.weight", f"{src}.noise.weight", f"{src}.activate.bias",
                         f"noises.noise_{noise_idx}"], path, "rosinality")
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.bias"] = state[f"{src}.activate.bias"]
        out[f"{dst}.noise_const"] = state[f"noises.noise_{noise_idx}"][0, 0]
        if f"{src}.conv.blur.kernel" in state:  # rosinality stores the FIR x up^2
            out[f"{dst}.resample_filter"] = state[f"{src}.conv.blur.kernel"] / 4
    for src, block in rgbs:
        _require(state, [f"{src}.conv.modulation.weight", f"{src}.bias"], path, "rosinality")
        out[f"{block}.torgb.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{block}.torgb.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{block}.torgb.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{block}.torgb.bias"] = state[f"{src}.bias"].reshape(-1)
        if f"{src}.upsample.kernel" in state:
            out[f"{block}.resample_filter"] = state[f"{src}.upsample.kernel"] / 4
    return out, cfg


def nvlabs_config(state: dict, hyper: dict, path: Path) -> tuple[StyleGAN2Config, list[str]]:
    """Infer an NVlabs generator's config from its tensors (and the pickle's kwargs when present)."""
    notes = []
    if "mapping.embed.weight" in state:
        raise CheckpointError(f"{path}: class-conditional generator (mapping.embed); only c_dim = 0 is supported")
    res = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    n_fc = count_keys(state, r"mapping\.fc(\d+)\.weight")
    _require(state, ["synthesis.b4.const", "mapping.fc0.weight"], path, "nvlabs")
    if not res or res != [2 ** i for i in range(2, 2 + len(res))]:
        raise CheckpointError(f"{path}: synthesis blocks {res} are not 4, 8, ..., R")
    if any(k.endswith(".skip.weight") for k in state):
        raise CheckpointError(f"{path}: 'resnet' synthesis architecture; only the StyleGAN2 default 'skip' is supported")
    _require(state, [f"synthesis.b{r}.torgb.weight" for r in res], path, "nvlabs")
    img_channels = state[f"synthesis.b{res[-1]}.torgb.weight"].shape[0]
    if img_channels != 3:
        raise CheckpointError(f"{path}: generator has {img_channels} image channels; stylert handles RGB (3)")
    synth = dict(hyper.get("synthesis_kwargs") or {})
    mapping = dict(hyper.get("mapping_kwargs") or {})
    if "conv_clamp" in synth:
        conv_clamp = synth["conv_clamp"]
    else:
        conv_clamp = NVLABS_DEFAULT_CONV_CLAMP
        notes.append(f"conv_clamp not recorded in the checkpoint; using {conv_clamp:g} as stylegan2-ada's train.py does")
    # torgb's input is each block's output width (conv1 can be wider: QC-StyleGAN's DegradBlocks)
    cfg = StyleGAN2Config(resolution=res[-1], channels={r: state[f"synthesis.b{r}.torgb.weight"].shape[1] for r in res},
                          z_dim=state["mapping.fc0.weight"].shape[1], w_dim=state[f"mapping.fc{n_fc - 1}.weight"].shape[0],
                          mapping_layers=n_fc, lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
                          conv_clamp=None if conv_clamp is None else float(conv_clamp), demod_weight_gain=False)
    return cfg, notes


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Load `state` into `module` only if keys and shapes match exactly; the error names the keys."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} does not match its config: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


@dataclass
class GeneratorState:
    """What a StyleGAN2-family checkpoint holds, renamed to our layout, before any module is built."""
    state: dict[str, torch.Tensor]
    cfg: StyleGAN2Config
    layout: str
    hyper: dict
    extras: dict
    notes: list[str]


def read_generator_state(path: str | Path, layout: str = "auto", conv_clamp: float | None = None) -> GeneratorState:
    """Read a rosinality or NVlabs checkpoint: tensors in our names, and the config they imply."""
    path = Path(path)
    obj = read_file(path)
    if layout == "auto":
        probe = obj.get("g_ema", obj.get("G_ema", obj)) if isinstance(obj, dict) else obj
        probe = module_state_dict(probe) if isinstance(probe, PersistentRecord) else probe
        layout = detect_layout(probe) if isinstance(probe, dict) else None
        if layout is None:
            raise CheckpointError(f"{path}: cannot tell the layout; pass --layout {{{','.join(LAYOUTS)}}}")
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    state, hyper, extras = _pick_state(obj, layout, path)
    notes: list[str] = []
    if layout == "rosinality":
        state, cfg = rosinality_to_stylert(state, path)
    else:
        cfg, notes = nvlabs_config(state, hyper, path)
    if conv_clamp is not None:
        cfg = StyleGAN2Config(**{**cfg.__dict__, "conv_clamp": conv_clamp})
    return GeneratorState(state, cfg, layout, hyper, extras, notes)


def fill_generator(gen: Generator, src: GeneratorState, path: str | Path) -> Generator:
    """Load `src` into `gen` (a Generator or subclass): FIR buffers default where absent, w_avg for rosinality."""
    own = gen.state_dict()
    state = {k: v for k, v in src.state.items() if not k.endswith("resample_filter") or k in own}
    for k in own:
        if k.endswith("resample_filter") and k not in state:
            state[k] = own[k]
    if src.layout == "rosinality":
        state["mapping.w_avg"] = own["mapping.w_avg"]
    load_strict(gen, state, path, f"{src.layout} checkpoint")
    if src.layout == "rosinality":
        if "latent_avg" in src.extras:
            gen.mapping.w_avg.copy_(src.extras["latent_avg"].reshape(-1)[: src.cfg.w_dim])
        else:
            gen.mapping.w_avg.copy_(gen.estimate_w_avg())
            src.notes.append("no latent_avg in the checkpoint; w_avg estimated from 10000 seeded z (seed 0)")
    return gen.eval()


def load_generator(path: str | Path, layout: str = "auto", conv_clamp: float | None = None) -> LoadedGenerator:
    """A ready-to-run `Generator` (eval mode) from a rosinality or NVlabs checkpoint file."""
    src = read_generator_state(path, layout, conv_clamp)
    if any(".convq." in k for k in src.state):
        raise CheckpointError(f"{path}: a QC-StyleGAN generator (DegradBlock 'convq' weights); "
                              "export it with `stylert export restore --method qc`")
    gen = fill_generator(Generator(src.cfg), src, path)
    return LoadedGenerator(gen, src.layout, str(path), src.notes)


STYLERT_FORMAT = "1"


def save_stylert_checkpoint(path: str | Path, state: dict[str, torch.Tensor], *, call: str, config: str,
                            trained: bool, extra: dict[str, str] | None = None) -> Path:
    """stylert's own checkpoint: a safetensors file of the module's state dict, with
    `stylert.call`, `stylert.format`, `stylert.config` (JSON) and `stylert.trained` in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"stylert.call": call, "stylert.format": STYLERT_FORMAT, "stylert.config": config,
            "stylert.trained": str(trained).lower(), **(extra or {})}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def checkpoint_config(path: str | Path, meta: dict[str, str], parse):
    """`parse(meta["stylert.config"])`: the model config a stylert checkpoint carries, or one error naming the file."""
    try:
        return parse(meta["stylert.config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable stylert.config ({exc})") from None


def read_stylert_checkpoint(path: str | Path, call: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a stylert safetensors checkpoint for `call`; clear errors otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("stylert.call") != call:
        raise CheckpointError(f"{path}: a stylert checkpoint for '{meta.get('stylert.call', '?')}', not '{call}'")
    if meta.get("stylert.format") != STYLERT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('stylert.format')}; this stylert reads {STYLERT_FORMAT}")
    return state, meta
