"""Bias + leaky ReLU x gain + optional clamp, in plain PyTorch (the research code's fused_bias_act)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def bias_lrelu(x: torch.Tensor, bias: torch.Tensor, gain: float = LRELU_GAIN,
               clamp: float | None = None) -> torch.Tensor:
    """y = clamp(lrelu(x + b, 0.2) * gain, -clamp, clamp); `bias` broadcasts over dim 1."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    x = F.leaky_relu(x + bias.reshape(shape).to(x.dtype), LRELU_SLOPE) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
