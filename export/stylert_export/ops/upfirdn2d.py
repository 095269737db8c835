"""Upsample, FIR filter, downsample (upfirdn2d) in plain PyTorch.

The research code ships this as a CUDA extension; here it is built from ops every exporter
knows (reshape, pad, depthwise conv), so the graph runs on ONNX Runtime and TensorRT as is.
Semantics follow NVlabs `upfirdn2d.upfirdn2d` with `flip_filter=False` (a true convolution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def setup_filter(taps, normalize: bool = True) -> torch.Tensor:
    """Separable FIR taps (e.g. [1, 3, 3, 1]) -> 2-D filter summing to 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1:
        f = f[:, None] * f[None, :]
    if normalize:
        f = f / f.sum()
    return f


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Zero-insert upsample by `up`, pad (x0, x1, y0, y1), filter with `f`, keep every `down`-th pixel."""
    _, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(-1, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(-1, channels, height * up, width * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(pad) < 0:
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].expand(channels, 1, *f.shape)
    x = F.conv2d(x, kernel, groups=channels)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling used on the RGB skip path (NVlabs `upfirdn2d.upsample2d`)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)
