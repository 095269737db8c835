"""Region-local portrait style transfer (seed 003: "High-Resolution Locally Controllable Portrait
Style Transfer"), the inference half: G_{S->T}(I_c, I_s) restricted to a region mask.

Networks, named as in the paper:
- U2Encoder: the U-shaped feature encoders U^2E_c (content) and U^2E_s (style), Eq. 5-8:
  f0 = conv(I); f_i = En_i(f_{i-1}), i = 1..5; F_4 = De_4(f_4, f_5), F_j = De_j(f_j, F_{j+1}), j = 3..1;
  F = concat(F_1, F_2, F_3, F_4, f_5). En_1..3 / De_1..3 are residual U-blocks (RSU, U^2-Net) of
  different heights; En_4, En_5, De_4 are dilated RSU-F blocks that keep their resolution.
  "Two encoders with different structures": the content encoder uses deeper RSU blocks
  (heights 7, 6, 5) than the style encoder (5, 4, 3).
- LFFM: local feature fusion by style attention (SANet-like), with content and style features as
  its two inputs.
- Decoder: "a series of convolutional layers" from the fused features back to the image.

What the paper leaves unspecified, decided here so the model runs at 1024 x 1024:
- f0 is a stride-2 conv, so the stages run at R/2 .. R/16 and no layer works at full resolution
  except the last RGB conv.
- LFFM attends at R/16 (64 x 64 = 4096 tokens at 1024, a 64 MB attention map per image), not
  over 1024^2 tokens. F_1..F_3 are area-pooled to R/16 for Eq. 8.
- Only masked tokens take part: content statistics and queries come from the content region,
  keys and values only from the style region (other keys get a -1e4 logit), and the fused
  feature is F_c + m_c * attention, so content outside the region passes through unchanged.
  Masks are area-pooled to R/16, so m_c is the region's coverage of each token.
- The decoder upsamples x2 four times, concatenating the content encoder's F_3, F_2, F_1 (the
  structure the paper's cycle loss protects), and ends in tanh.
- Only G_{S->T}'s stylized content is exported; the paper's second output (I_s^S) and the
  reverse generator exist for training (cycle loss, Eq. 14).
The pixel-level composition (region blend, histogram matching outside the regions, regions one
after another) happens in the SDK (`stylert.calls.stylize`) where it is exact and documented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import JSONConfig
from .random_init import randomize_batchnorm

TOKEN_STRIDE = 16  # LFFM works at R / 16


@dataclass(frozen=True)
class LocalStyleConfig(JSONConfig):
    resolution: int = 1024
    width: int = 32  # channels of every stage's output
    mid: int = 16  # channels inside the RSU blocks
    content_heights: tuple[int, int, int] = (7, 6, 5)
    style_heights: tuple[int, int, int] = (5, 4, 3)
    attn_dim: int = 64

    def __post_init__(self):
        if self.resolution % TOKEN_STRIDE or self.resolution < 2 * TOKEN_STRIDE:
            raise ValueError(f"resolution {self.resolution} must be a multiple of {TOKEN_STRIDE} and >= {2 * TOKEN_STRIDE}")


class REBNConv(nn.Sequential):
    """conv3x3 (dilated) -> BatchNorm -> ReLU, U^2-Net's basic unit."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(cout),
                         nn.ReLU())


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return x if x.shape[-2:] == ref.shape[-2:] else F.interpolate(x, size=ref.shape[-2:], mode="bilinear")


class RSU(nn.Module):
    """Residual U-block of height L: an L-level U-net (max-pool down, bilinear up) added to its input conv."""

    def __init__(self, height: int, cin: int, mid: int, cout: int):
        super().__init__()
        self.conv_in = REBNConv(cin, cout)
        self.enc = nn.ModuleList([REBNConv(cout, mid)] + [REBNConv(mid, mid) for _ in range(height - 2)])
        self.bottom = REBNConv(mid, mid, dilation=2)
        self.dec = nn.ModuleList([REBNConv(2 * mid, mid) for _ in range(height - 2)] + [REBNConv(2 * mid, cout)])

    def forward(self, x):
        hin = self.conv_in(x)
        skips, h = [], hin
        for i, conv in enumerate(self.enc):
            h = conv(h if i == 0 else F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        d = self.bottom(h)
        for conv, skip in zip(self.dec, reversed(skips)):
            d = conv(torch.cat([_resize_to(d, skip), skip], 1))
        return d + hin


class RSUF(nn.Module):
    """RSU-4F: the U-block with dilations (1, 2, 4, 8) instead of pooling; resolution is kept."""

    def __init__(self, cin: int, mid: int, cout: int, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.conv_in = REBNConv(cin, cout)
        self.enc = nn.ModuleList([REBNConv(cout if i == 0 else mid, mid, d) for i, d in enumerate(dilations)])
        back = list(reversed(dilations[:-1]))
        self.dec = nn.ModuleList([REBNConv(2 * mid, cout if i == len(back) - 1 else mid, d) for i, d in enumerate(back)])

    def forward(self, x):
        hin = self.conv_in(x)
        skips, h = [], hin
        for conv in self.enc:
            h = conv(h)
            skips.append(h)
        d = skips.pop()
        for conv in self.dec:
            d = conv(torch.cat([d, skips.pop()], 1))
        return d + hin


class U2Encoder(nn.Module):
    """U^2E: image [B, 3, R, R] -> (F_1, F_2, F_3, F_4, f_5) at R/2, R/4, R/8, R/16, R/16 (Eq. 5-8)."""

    def __init__(self, heights: tuple[int, int, int], width: int, mid: int):
        super().__init__()
        self.conv0 = nn.Conv2d(3, width, 3, 2, 1)  # Eq. 5
        self.en = nn.ModuleList([RSU(h, width, mid, width) for h in heights] + [RSUF(width, mid, width) for _ in range(2)])
        self.de = nn.ModuleList([RSU(h, 2 * width, mid, width) for h in heights] + [RSUF(2 * width, mid, width)])

    def forward(self, x):
        f = [self.conv0(x)]
        for i, en in enumerate(self.en):  # Eq. 6; pooling before En_2..En_4, En_5 is dilated in place
            f.append(en(f[-1] if i in (0, 4) else F.max_pool2d(f[-1], 2)))
        feats = self.de[3](torch.cat([f[4], f[5]], 1))  # Eq. 7, j = 4
        out = [feats]
        for j in (2, 1, 0):  # Eq. 7, j = 3, 2, 1
            feats = self.de[j](torch.cat([f[j + 1], _resize_to(feats, f[j + 1])], 1))
            out.insert(0, feats)
        return out + [f[5]]


def tokens(features: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 8 at the LFFM resolution: F_1..F_4, f_5 area-pooled to R/16 and concatenated."""
    size = features[-1].shape[-2:]
    return torch.cat([F.adaptive_avg_pool2d(x, size) for x in features], 1)


def masked_mvn(x: torch.Tensor, m: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean-variance normalisation with statistics over the region's tokens only (weights m)."""
    total = m.sum(dim=(2, 3), keepdim=True) + eps
    mean = (x * m).sum(dim=(2, 3), keepdim=True) / total
    var = (((x - mean) ** 2) * m).sum(dim=(2, 3), keepdim=True) / total
    return (x - mean) / torch.sqrt(var + eps)


class LFFM(nn.Module):
    """Local feature fusion by style attention: content tokens of the region attend to style tokens
    of the style region; F_cs = F_c + m_c * out(V softmax(Q^T K / sqrt(d))^T)."""

    def __init__(self, channels: int, attn_dim: int):
        super().__init__()
        self.query = nn.Conv2d(channels, attn_dim, 1)
        self.key = nn.Conv2d(channels, attn_dim, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.scale = 1.0 / math.sqrt(attn_dim)

    def forward(self, fc, fs, mc, ms):
        b, c, h, w = fc.shape
        q = self.query(masked_mvn(fc, mc)).flatten(2)  # [B, d, Nc]
        k = self.key(masked_mvn(fs, ms)).flatten(2)  # [B, d, Ns]
        v = self.value(fs).flatten(2)  # [B, C, Ns]
        logits = torch.bmm(q.transpose(1, 2), k) * self.scale  # [B, Nc, Ns]
        logits = logits + (ms.flatten(2) <= 0).to(logits.dtype) * -1e4
        attended = torch.bmm(v, torch.softmax(logits, dim=-1).transpose(1, 2)).reshape(b, c, h, w)
        return fc + mc * self.out(attended)


class Decoder(nn.Module):
    """Fused tokens (R/16) -> image: x2 upsampling with the content encoder's F_3, F_2, F_1 as skips."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = REBNConv(5 * width, width)
        self.ups = nn.ModuleList([REBNConv(2 * width, width) for _ in range(3)])
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, fused, content_feats):
        x = self.stem(fused)
        for conv, skip in zip(self.ups, (content_feats[2], content_feats[1], content_feats[0])):
            x = conv(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear"), skip], 1))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear")
        return torch.tanh(self.to_rgb(x))


class LocalStyleNet(nn.Module):
    """content, style [B, 3, R, R] in [-1, 1]; content_mask, style_mask [B, 1, R, R] in [0, 1]
    -> stylized [B, 3, R, R]: the content with the style transferred inside its region."""

    def __init__(self, cfg: LocalStyleConfig):
        super().__init__()
        self.cfg = cfg
        self.content_encoder = U2Encoder(cfg.content_heights, cfg.width, cfg.mid)
        self.style_encoder = U2Encoder(cfg.style_heights, cfg.width, cfg.mid)
        self.lffm = LFFM(5 * cfg.width, cfg.attn_dim)
        self.decoder = Decoder(cfg.width)

    def forward(self, content, style, content_mask, style_mask):
        fc_all = self.content_encoder(content)
        fc, fs = tokens(fc_all), tokens(self.style_encoder(style))
        size = fc.shape[-2:]
        fused = self.lffm(fc, fs, F.adaptive_avg_pool2d(content_mask, size), F.adaptive_avg_pool2d(style_mask, size))
        return self.decoder(fused, fc_all)


def random_local_style(cfg: LocalStyleConfig, seed: int) -> LocalStyleNet:
    """Seeded random weights (untrained); BatchNorm statistics randomised so parity checks see them."""
    torch.manual_seed(seed)
    return randomize_batchnorm(LocalStyleNet(cfg).eval())
