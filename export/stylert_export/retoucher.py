"""StyleRetoucher (seed 000): SE pyramid + LEH -> W+, GP units (StyleGAN2 blocks) fed by BAFS blends.

Levels follow the paper at R = 2^L (1024: L = 10, 18 ws):
- SE^1 keeps the resolution, SE^k (k >= 2) halves it: I^k at R / 2^(k-1), I^(L-1) at 4x4   (Eq. 1)
- F_S^i = Conv(I^(i+1)) at R / 2^i, i in [1, L-2]                                           (Eq. 2)
- l = LEH(I^(L-1)): 4x4 conv to a vector + FC to W+ [num_ws, w_dim], offset by the GP's w_avg (as pSp)  (Eq. 3)
- GP^(L-1) = StyleGAN2 block b4 on the const; GP^i = block at R / 2^(i-1) on F_Blend^i;
  the toRGB skip path of the pretrained generator is kept, so GP^1 outputs the image         (Eq. 4)
- BAFS^i blends F_S^i with F_I^(i+1) at every level                                          (Eq. 5)

Choices the paper leaves open (NS), made here:
- SE^k: 3x3 conv + lrelu, then (k >= 2) a stride-2 3x3 conv + lrelu; SE channels = GP channels.
- F_Conv: two 3x3 convs with lrelu on Cat(F_S, F_I); F_Channel: global average pool -> FC ->
  lrelu -> FC to 2 logits per channel; F_Spatial: 3x3 conv to 2 logits per pixel; F_Soft: a
  two-way softmax over each pair.
- Which side M_C weighs: Eq. 5 multiplies F_S by M_S * M_C and F_I by (1 - M_S)(1 - M_C); we
  keep it as printed. The text calls the GP-side channel mask "M_C" and retouching strength
  scales it (Sec. 4.4); in Eq. 5's notation that is (1 - M_C). So at levels 2..L-2:
      GP-side channel weight = clamp(strength * (1 - M_C), 0, 1),  F_S side = 1 - that.
  strength = 1 is the model as trained; 0 puts every channel on the input features (F_S side
  weight 1, so F_Blend = M_S * F_S); > 1 pushes channels further toward the GP (StyleGAN)
  features, i.e. stronger retouching, saturating where the GP weight reaches 1 (F_Blend =
  (1 - M_S) * F_I). Level 1 ignores strength: the paper keeps it fixed (it shifts global colour).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import JSONConfig
from .ops import current_modconv_impl
from .plugin_ops import bafs_blend_node
from .random_init import random_generator
from .stylegan2 import Generator, StyleGAN2Config, SynthesisNetwork

LRELU = 0.2


@dataclass(frozen=True)
class RetoucherConfig(JSONConfig):
    gp: StyleGAN2Config
    channel_reduction: int = 4

    @property
    def resolution(self) -> int:
        return self.gp.resolution

    @property
    def log2(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def levels(self) -> list[int]:
        """BAFS levels i = 1 .. L-2."""
        return list(range(1, self.log2 - 1))

    def level_resolution(self, i: int) -> int:
        """Resolution of F_S^i, F_I^(i+1) and F_Blend^i: R / 2^i."""
        return self.resolution >> i


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class SEUnit(nn.Module):
    """SE^k: 3x3 conv + lrelu, and for k >= 2 a stride-2 3x3 conv + lrelu (Eq. 1)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.conv = _conv(cin, cout)
        self.down = _conv(cout, cout, stride=2) if down else None

    def forward(self, x):
        x = F.leaky_relu(self.conv(x), LRELU)
        return F.leaky_relu(self.down(x), LRELU) if self.down is not None else x


class LEH(nn.Module):
    """Latent extraction head: a 4x4 conv that collapses I^(L-1) (4x4) to a vector, then an FC to W+ (Eq. 3).

    (Collapsing first keeps the FC at C x num_ws*w_dim: 4.7 M weights at 1024 instead of 75 M.)"""

    def __init__(self, channels: int, num_ws: int, w_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 4)
        self.fc = nn.Linear(channels, num_ws * w_dim)
        self.num_ws, self.w_dim = num_ws, w_dim

    def forward(self, x, w_avg):
        x = F.leaky_relu(self.conv(x), LRELU).flatten(1)
        return self.fc(x).reshape(-1, self.num_ws, self.w_dim) + w_avg


class BAFS(nn.Module):
    """Blemish-aware feature selection at one level (Eq. 5), with the strength control of Sec. 4.4."""

    def __init__(self, channels: int, reduction: int, use_strength: bool):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.conv0 = _conv(2 * channels, channels)
        self.conv1 = _conv(channels, channels)
        self.channel_fc0 = nn.Linear(channels, hidden)
        self.channel_fc1 = nn.Linear(hidden, 2 * channels)
        self.spatial = _conv(channels, 2)
        self.use_strength = use_strength
        self.plugin = current_modconv_impl() == "plugin"  # the blend as one stylert::BAFSBlend node (plugin_ops.py)

    def masks(self, f_s, f_i, strength):
        """(M_S, M_C): the F_S-side spatial [B,1,H,W] and channel [B,C,1,1] weights; F_I gets 1 - each."""
        h = F.leaky_relu(self.conv0(torch.cat([f_s, f_i], dim=1)), LRELU)  # H = F_Conv(F_Cat(F_S, F_I))
        h = F.leaky_relu(self.conv1(h), LRELU)
        # Each mask is the first entry of a two-way softmax, (M, 1 - M): the sigmoid of the two logits' difference,
        # one op that phone runtimes accelerate, as is a mean that keeps its dims (XNNPACK takes neither softmax
        # over channels nor a mean that drops them).
        c = F.leaky_relu(self.channel_fc0(h.mean(dim=[2, 3], keepdim=True).flatten(1)), LRELU)
        c = self.channel_fc1(c).reshape(h.shape[0], 2, -1)
        m_c = torch.sigmoid(c[:, 0] - c[:, 1])[:, :, None, None]
        if self.use_strength:
            m_c = 1 - ((1 - m_c) * strength.reshape(-1, 1, 1, 1)).clamp(0, 1)
        s = self.spatial(h)
        m_s = torch.sigmoid(s[:, :1] - s[:, 1:])
        return m_s, m_c

    def forward(self, f_s, f_i, strength):
        m_s, m_c = self.masks(f_s, f_i, strength)
        if self.plugin:
            return bafs_blend_node(f_s, f_i, m_s, m_c), m_s, m_c
        blend = m_s * m_c * f_s + (1 - m_s) * (1 - m_c) * f_i  # Eq. 5
        return blend, m_s, m_c


class StyleRetoucher(nn.Module):
    """image [B, 3, R, R] in [-1, 1], strength [B] -> retouched image, and the BAFS masks per level."""

    def __init__(self, cfg: RetoucherConfig):
        super().__init__()
        self.cfg = cfg
        gp = cfg.gp
        R, L = cfg.resolution, cfg.log2
        self.se = nn.ModuleList(
            [SEUnit(3, gp.channels[R], down=False)]
            + [SEUnit(gp.channels[R >> (k - 2)], gp.channels[R >> (k - 1)], down=True) for k in range(2, L)])
        self.fs_conv = nn.ModuleList([_conv(gp.channels[R >> i], gp.channels[R >> i]) for i in cfg.levels])
        self.leh = LEH(gp.channels[4], gp.num_ws, gp.w_dim)
        self.gp = SynthesisNetwork(gp)
        self.register_buffer("w_avg", torch.zeros(gp.w_dim))
        self.bafs = nn.ModuleList([BAFS(gp.channels[R >> i], cfg.channel_reduction, use_strength=i >= 2)
                                   for i in cfg.levels])

    def forward(self, image: torch.Tensor, strength: torch.Tensor):
        feats = []
        x = image
        for unit in self.se:  # I^1 .. I^(L-1)
            x = unit(x)
            feats.append(x)
        ws = self.leh(feats[-1], self.w_avg)
        f_s = {i: self.fs_conv[i - 1](feats[i]) for i in self.cfg.levels}  # F_S^i = Conv(I^(i+1))
        masks = {}
        x = img = None
        w_idx = 0
        for res in self.gp.block_resolutions:
            block = getattr(self.gp, f"b{res}")
            if res > 4:
                level = self.cfg.log2 - int(math.log2(res)) + 1
                x, m_s, m_c = self.bafs[level - 1](f_s[level], x, strength)
                masks[level] = (m_s, m_c)
            x, img = block(x, img, ws[:, w_idx: w_idx + block.num_conv + 1], "const")
            w_idx += block.num_conv
        return img, masks


def random_retoucher(cfg: RetoucherConfig, seed: int) -> StyleRetoucher:
    """Seeded random weights everywhere (untrained), GP included."""
    gen = random_generator(cfg.gp, seed)
    torch.manual_seed(seed + 1)
    model = StyleRetoucher(cfg).eval()
    model.gp.load_state_dict(gen.synthesis.state_dict())
    model.w_avg.copy_(gen.mapping.w_avg)
    _scale_leh(model)
    return model


def retoucher_from_generator(gen: Generator, seed: int, channel_reduction: int = 4) -> StyleRetoucher:
    """The authors' starting point: GP from a pretrained StyleGAN2, SE/LEH/BAFS freshly initialised."""
    torch.manual_seed(seed)
    model = StyleRetoucher(RetoucherConfig(gen.cfg, channel_reduction)).eval()
    model.gp.load_state_dict(gen.synthesis.state_dict())
    model.w_avg.copy_(gen.mapping.w_avg)
    _scale_leh(model)
    return model


def _scale_leh(model: StyleRetoucher) -> None:
    """Start LEH near w_avg (small FC weights) so that an untrained model produces in-range codes."""
    with torch.no_grad():
        model.leh.fc.weight.mul_(0.1)
        model.leh.fc.bias.zero_()


def retoucher_config(resolution: int, channel_base: int = 32768, channel_max: int = 512, w_dim: int = 512) -> RetoucherConfig:
    return RetoucherConfig(StyleGAN2Config.from_channel_base(resolution, channel_base, channel_max, w_dim))
