"""Seeded random weights for untrained models (tests and benchmarks): a random StyleGAN2 generator, and
the helpers that give parameters a fresh module leaves at zero or one random values, so a parity check sees them."""
from __future__ import annotations

import torch
from torch import nn

from .rosinality import FusedLeakyReLU, NoiseInjection
from .stylegan2 import Generator, StyleGAN2Config


def random_generator(cfg: StyleGAN2Config, seed: int) -> Generator:
    """A generator with seeded random weights (untrained: for tests and benchmarks only).

    Noise strengths and biases get small random values too, so every parameter shows up in a
    parity check instead of sitting at its zero initialization.
    """
    torch.manual_seed(seed)
    g = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "affine" not in name):
                p.copy_(0.1 * torch.randn_like(p))
        g.mapping.w_avg.copy_(g.estimate_w_avg(num_samples=1000, seed=seed))
    return g


def randomize_batchnorm(module: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and scales (random-init models), so a parity check sees them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return module


def randomize_noise_and_biases(module: nn.Module) -> None:
    """Random noise strengths and activation biases (zero in a fresh module), so a parity check sees them."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, NoiseInjection):
                m.weight.normal_(0, 0.1)
            elif isinstance(m, FusedLeakyReLU) and m.bias is not None:
                m.bias.normal_(0, 0.1)


def scale_modulation(module: nn.Module, factor: float) -> None:
    """Scale every style affine (`*.modulation`) so a deep random net is not chaotic in its codes."""
    with torch.no_grad():
        for name, m in module.named_modules():
            if name.endswith("modulation"):
                m.weight.mul_(factor)
