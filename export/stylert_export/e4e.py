"""e4e style encoder (Tov et al. 2021, `Encoder4Editing`): the VSP restorer's initial codes w-hat;
and pSp's W+ encoder (Richardson et al. 2021, `GradualStyleEncoder`): EXE-GAN's exemplar codes.

IR-SE-50 backbone (psp.py) with a feature pyramid: c1, c2, c3 are the outputs of stages 2, 3 and
4; style heads 0-2 read c3, heads 3-6 the middle level p2 = up(c3) + lat1(c2), the others the fine
level p1 = up(p2) + lat2(c1). e4e adds every later head to head 0 (w_i = w_0 + delta_i); pSp's
heads are independent. The checkpoint layout is pSp's (`encoder.input_layer`, `encoder.body.{i}`,
`encoder.styles.{i}`, `encoder.latlayer1|2`), with `latent_avg` [n_styles, 512] added to the codes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import JSONConfig
from .psp import IR_SE_50, ir_se_body
from .stylegan2 import FullyConnected


@dataclass(frozen=True)
class E4EConfig(JSONConfig):
    units: tuple[int, ...] = IR_SE_50
    n_styles: int = 18  # 2 log2(stylegan_size) - 2
    w_dim: int = 512
    input_size: int = 256  # images are resized to this (bilinear) before the encoder
    in_channels: int = 3  # FACEMUG's encoder reads 26 (image, sketch, semantic one-hot, colour)


class GradualStyleBlock(nn.Module):
    """log2(spatial) stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1, then EqualLinear."""

    def __init__(self, channels: int, spatial: int):
        super().__init__()
        layers = []
        for _ in range(max(int(math.log2(spatial)), 1)):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = FullyConnected(channels, channels)
        self.channels = channels

    def forward(self, x):
        return self.linear(self.convs(x).reshape(-1, self.channels))


def _upsample_add(x, y):
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """image [B, in_channels, R, R] in [-1, 1] -> W+ codes [B, n_styles, w_dim] (latent_avg added)."""

    def __init__(self, cfg: E4EConfig):
        super().__init__()
        if cfg.w_dim != 512:
            raise ValueError("e4e's style blocks work on the 512-channel backbone output: w_dim must be 512")
        self.cfg = cfg
        self.input_layer = nn.Sequential(nn.Conv2d(cfg.in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                         nn.PReLU(64))
        self.body = ir_se_body(cfg.units)
        s = cfg.input_size
        self.styles = nn.ModuleList([GradualStyleBlock(512, s // 16 if i < 3 else s // 8 if i < 7 else s // 4)
                                     for i in range(cfg.n_styles)])
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)
        self.register_buffer("latent_avg", torch.zeros(cfg.n_styles, cfg.w_dim))
        ends = torch.tensor(cfg.units).cumsum(0).tolist()
        self.c1_index, self.c2_index, self.c3_index = ends[1] - 1, ends[2] - 1, ends[3] - 1

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        s = self.cfg.input_size
        return image if image.shape[-1] == s else F.interpolate(image, size=(s, s), mode="bilinear")

    def pyramid(self, image: torch.Tensor, heads) -> list[torch.Tensor]:
        """[c3, p2, p1]: the level each head reads (head i: level 0 if i < 3, 1 if i < 7, else 2); only
        the levels `heads` need are computed."""
        x = self.input_layer(self.resize(image))
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self.c1_index:
                c1 = x
            elif i == self.c2_index:
                c2 = x
            elif i == self.c3_index:
                c3 = x
        levels = [c3]
        if max(heads) >= 3:
            levels.append(_upsample_add(c3, self.latlayer1(c2)))
        if max(heads) >= 7:
            levels.append(_upsample_add(levels[1], self.latlayer2(c1)))
        return levels

    @staticmethod
    def level(head: int) -> int:
        return 0 if head < 3 else 1 if head < 7 else 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        levels = self.pyramid(image, range(self.cfg.n_styles))
        w0 = self.styles[0](levels[0])
        codes = [w0] + [w0 + self.styles[i](levels[self.level(i)]) for i in range(1, self.cfg.n_styles)]  # w0 + delta_i
        return torch.stack(codes, dim=1) + self.latent_avg


class GradualStyleEncoder(Encoder4Editing):
    """pSp's W+ encoder: e4e's pyramid and heads, each code its own head's output (+ latent_avg).
    `heads` are the codes computed (EXE-GAN: layers 4 .. 4+K-1); every head's weights are kept so
    the checkpoint loads strictly. The input is resized to input_size bilinearly with align_corners,
    as pSp's encoder does (EXE-GAN's `Psp_Embedding`)."""

    def __init__(self, cfg: E4EConfig, heads: range):
        super().__init__(cfg)
        if not heads or heads.start < 0 or heads.stop > cfg.n_styles:
            raise ValueError(f"heads {heads} outside the encoder's {cfg.n_styles} styles")
        self.heads = heads

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        s = self.cfg.input_size
        return F.interpolate(image, size=(s, s), mode="bilinear", align_corners=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        levels = self.pyramid(image, self.heads)
        codes = torch.stack([self.styles[i](levels[self.level(i)]) for i in self.heads], dim=1)
        return codes + self.latent_avg[self.heads.start:self.heads.stop]
