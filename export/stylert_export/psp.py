"""pSp encoder into W (Richardson et al. 2021, `BackboneEncoderUsingLastLayerIntoW`), the content
encoder of the semantic-preserving stylizer (seed 002: "a modified pSp encoder that maps images
to the W space").

IR-SE backbone (ArcFace's IR-SE-50 in pSp's layout: `input_layer`, `body.{i}.shortcut_layer|res_layer`)
-> global average pool -> EqualLinear(512, 512) -> + latent_avg (pSp's start_from_latent_avg).
The image is seen at `input_size` (256 in pSp: its transforms resize every input to 256x256).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import CheckpointError, load_strict, read_file, strip_prefix
from .config import JSONConfig
from .random_init import randomize_batchnorm
from .stylegan2 import FullyConnected

IR_SE_50 = (3, 4, 14, 3)  # units per stage; depths 64, 128, 256, 512
DEPTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class PSPConfig(JSONConfig):
    units: tuple[int, ...] = IR_SE_50
    w_dim: int = 512
    input_size: int = 256


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN -> SE, plus the shortcut."""

    def __init__(self, cin: int, depth: int, stride: int):
        super().__init__()
        self.stride = stride
        self.shortcut_layer = (None if cin == depth else
                               nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                                       nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth),
                                       SEModule(depth))

    def forward(self, x):
        # pSp's identity shortcut is MaxPool2d(1, stride): plain subsampling.
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.shortcut_layer is None else self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


def ir_se_body(units: tuple[int, ...]) -> nn.Sequential:
    blocks, cin = [], 64
    for depth, count in zip(DEPTHS, units):
        for i in range(count):
            blocks.append(BottleneckIRSE(cin, depth, 2 if i == 0 else 1))
            cin = depth
    return nn.Sequential(*blocks)


class PSPEncoderW(nn.Module):
    """image [B, 3, R, R] in [-1, 1] -> w [B, w_dim] (latent_avg added)."""

    def __init__(self, cfg: PSPConfig):
        super().__init__()
        self.cfg = cfg
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.body = ir_se_body(cfg.units)
        self.linear = FullyConnected(512, cfg.w_dim)
        self.register_buffer("latent_avg", torch.zeros(cfg.w_dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size, s = image.shape[-1], self.cfg.input_size
        x = image if size == s else F.interpolate(image, size=(s, s), mode="area" if size > s else "bilinear")
        x = self.body(self.input_layer(x))
        return self.linear(x.mean(dim=(2, 3))) + self.latent_avg


def ir_se_units(state: dict, path) -> tuple[int, ...]:
    """Units per IR-SE stage of a backbone state dict (pSp, e4e), read from its `body.{i}` depths."""
    depths = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.res_layer\.1\.weight", key)
        if m:
            depths[int(m.group(1))] = value.shape[0]
    if not depths or sorted(depths) != list(range(len(depths))):
        raise CheckpointError(f"{path}: no contiguous 'encoder.body.{{i}}.res_layer' units: not a pSp IR-SE encoder")
    seq = [depths[i] for i in range(len(depths))]
    units = tuple(seq.count(d) for d in DEPTHS)
    if sum(units) != len(seq) or seq != sorted(seq):
        raise CheckpointError(f"{path}: IR-SE unit depths {sorted(set(seq))} are not pSp's {DEPTHS}")
    return units


def load_psp_encoder(path: str | Path, input_size: int = 256) -> PSPEncoderW:
    """A pSp checkpoint ({'state_dict': {'encoder.*', 'decoder.*'}, 'opts', 'latent_avg'}) whose encoder
    is `BackboneEncoderUsingLastLayerIntoW` (one w); W+ encoders (GradualStyleEncoder) are refused."""
    ckpt = read_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a pSp checkpoint dict, got {type(ckpt).__name__}")
    opts = ckpt.get("opts") if isinstance(ckpt.get("opts"), dict) else {}
    kind = opts.get("encoder_type")
    if kind is not None and kind != "BackboneEncoderUsingLastLayerIntoW":
        raise CheckpointError(f"{path}: pSp encoder_type {kind!r}; the stylizer needs a W-space encoder "
                              "('BackboneEncoderUsingLastLayerIntoW')")
    state = ckpt.get("state_dict", ckpt)
    enc = strip_prefix(state, "encoder.")
    if "linear.weight" not in enc:
        raise CheckpointError(f"{path}: no 'encoder.linear.weight': not a pSp W-space encoder "
                              "(W+ encoders have 'encoder.styles.*')")
    cfg = PSPConfig(ir_se_units(enc, path), int(enc["linear.weight"].shape[0]), input_size)
    model = PSPEncoderW(cfg).eval()
    avg = ckpt.get("latent_avg")
    if not isinstance(avg, torch.Tensor):
        raise CheckpointError(f"{path}: no 'latent_avg': pSp adds it to the encoded w (start_from_latent_avg)")
    enc["latent_avg"] = avg.reshape(-1, cfg.w_dim)[0].float()
    load_strict(model, enc, path, "pSp W encoder")
    return model


def random_psp_encoder(cfg: PSPConfig, seed: int, latent_avg: torch.Tensor | None = None) -> PSPEncoderW:
    """Seeded random weights (untrained), BatchNorm statistics randomised so parity checks see them."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(PSPEncoderW(cfg).eval())
    with torch.no_grad():
        model.linear.weight.mul_(0.1)
        if latent_avg is not None:
            model.latent_avg.copy_(latent_avg)
    return model
