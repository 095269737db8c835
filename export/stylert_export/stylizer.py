"""Semantic-preserving stylization (seed 002): pSp W encoder -> truncation -> style mixing -> G'.

The style is which generator runs: G' is a StyleGAN2 fine-tuned per style (rosinality layout, as
Toonify / JoJoGAN / DualStyleGAN checkpoints ship). Section 3.3: multimodal stylization mixes the
content code with truncated Z+ samples, reference-guided stylization with a reference's code
found offline (`invert_reference`), both at a chosen layer (3/6/9/12).

One graph per style (`StyleGeneratorGraph`) carries truncation and mixing, so one engine per
style serves all three modes; the encoder graph (`psp.PSPEncoderW`) is shared by every style.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import Generator


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """StyleGAN's truncation trick: w' = w_avg + psi (w - w_avg), psi [B] broadcast over the rest."""
    psi = psi.reshape(-1, *([1] * (w.dim() - 1)))
    return w_avg + psi * (w - w_avg)


def choose(take: torch.Tensor, other: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """take * other + (1 - take) * content: exactly `other` where take is 1 and `content` where it is 0, in
    arithmetic that phone accelerators run (NNAPI takes no comparison or Where)."""
    return take * other + (1 - take) * content


def mix_layers(content: torch.Tensor, other: torch.Tensor, mix_layer: torch.Tensor) -> torch.Tensor:
    """Style mixing: layers < mix_layer from `content` [B, L, D], layers >= mix_layer from `other`."""
    layer = torch.arange(content.shape[1], device=content.device, dtype=content.dtype)
    # layer - mix_layer + 1 is an integer: >= 1 from mix_layer on, <= 0 before it
    take_other = torch.clamp(layer.unsqueeze(0) - mix_layer.reshape(-1, 1).to(content.dtype) + 1, 0, 1)
    return choose(take_other.unsqueeze(-1), other, content)


class StyleGeneratorGraph(nn.Module):
    """One style's exported graph.

    content [B, w_dim]: the encoder's w; psi [B]: truncation; mix_codes [B, num_ws, w_dim]: Z+ samples
    (mix_from_z = 1: mapped by G' and truncated with psi) or a W+ reference code (mix_from_z = 0:
    used as given; a value between blends the two); mix_layer [B] int64: first layer taken from the mix
    codes (num_ws = no mixing).
    -> image [B, 3, R, R], G'(mix(truncate(content), codes)).
    """

    def __init__(self, generator: Generator):
        super().__init__()
        if generator.cfg.z_dim != generator.cfg.w_dim:
            raise ValueError(f"z_dim {generator.cfg.z_dim} != w_dim {generator.cfg.w_dim}: mix codes share one input")
        self.generator = generator

    def forward(self, content, psi, mix_codes, mix_from_z, mix_layer):
        g = self.generator
        b, num_ws, dim = mix_codes.shape
        w_avg = g.mapping.w_avg
        content_ws = truncate(content, w_avg, psi).unsqueeze(1).expand(-1, num_ws, -1)
        z_ws = truncate(g.mapping.embed(mix_codes.reshape(b * num_ws, dim)).reshape(b, num_ws, dim), w_avg, psi)
        codes = choose(torch.clamp(mix_from_z, 0, 1).reshape(-1, 1, 1), z_ws, mix_codes)
        return g(mix_layers(content_ws, codes, mix_layer))


def invert_reference(generator: Generator, image: torch.Tensor, steps: int = 300, lr: float = 0.02,
                     size: int = 256, log=None) -> torch.Tensor:
    """A reference image's code for reference-guided stylization, by optimisation (done once, offline).

    The paper inverts into G''s V space with UI2I-Style's method [9]; that needs its trained
    projector, so here one w (W space, which the paper's Fig. 15 finds nearly as good) is optimised
    from w_avg with Adam (the paper's learning rate, 0.02) on the pixel MSE at `size` x `size`.
    LPIPS would be better but needs VGG weights that cannot be downloaded at run time.
    image [3, R, R] in [-1, 1] -> W+ code [num_ws, w_dim] (the one w replicated, as the paper does).
    """
    target = F.interpolate(image.unsqueeze(0), size=(size, size), mode="area")
    w = generator.mapping.w_avg.detach().clone().unsqueeze(0).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for step in range(steps):
        out = generator(w.unsqueeze(1).expand(-1, generator.num_ws, -1))
        loss = F.mse_loss(F.interpolate(out, size=(size, size), mode="area"), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log and (step % 50 == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps}: mse {loss.item():.4f}")
    return w.detach()[0].unsqueeze(0).expand(generator.num_ws, -1).clone()
