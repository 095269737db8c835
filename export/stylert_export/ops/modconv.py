"""Modulated convolution (StyleGAN2 Sec. 2.2) in its two equivalent forms.

weight form   ("fused modconv" of the research code): W' = W * s, W'' = W' / sqrt(sum W'^2 + eps),
              one grouped conv with groups = batch. Per-sample weights: the group count is
              frozen at export and TensorRT sees a conv with run-time weights.
activation form: y = d * conv(x * s, W), d_o = rsqrt(sum_i s_i^2 Wsq[i, o] + eps),
              Wsq[i, o] = sum_k W[o, i, k]^2. Static weights, any batch: this is what we export.

Both take `weight` with any gain already applied, `styles` [batch, in] and compute s and d in
fp32. `resample_filter` is the normalized FIR used after a stride-2 transposed conv (up=2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .upfirdn2d import upfirdn2d

FORMS = ("activation", "weight")
DEMOD_EPS = 1e-8


def _blur_padding(kernel: int, filter_size: int, padding: int, up: int) -> tuple[int, int]:
    """Padding of the FIR pass that follows a stride-`up` transposed conv (NVlabs conv2d_resample)."""
    p0 = padding + (filter_size + up - 1) // 2 - (kernel - 1)
    p1 = padding + (filter_size - up) // 2 - (kernel - up)
    return p0, p1


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = DEMOD_EPS) -> torch.Tensor:
    """d [batch, out] = rsqrt(s^2 @ Wsq + eps), computed in fp32 (or fp64 for a float64 model)."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    wsq = weight.to(dtype).square().sum(dim=[2, 3]).t()
    return torch.rsqrt(styles.to(dtype).square() @ wsq + eps)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool = True, up: int = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, form: str = "activation") -> torch.Tensor:
    """Modulated (and optionally demodulated, 2x upsampled) conv; `form` picks the implementation."""
    if form == "activation":
        return _activation_form(x, weight, styles, demodulate, up, padding, resample_filter)
    if form == "weight":
        return _weight_form(x, weight, styles, demodulate, up, padding, resample_filter)
    raise ValueError(f"unknown modulated conv form {form!r}; expected one of {FORMS}")


def _upsampling_conv(x, weight, groups, padding, resample_filter):
    kernel = weight.shape[-1]
    y = F.conv_transpose2d(x, weight, stride=2, groups=groups)
    p0, p1 = _blur_padding(kernel, resample_filter.shape[-1], padding, 2)
    return upfirdn2d(y, resample_filter, pad=(p0, p1, p0, p1), gain=4)


def _activation_form(x, weight, styles, demodulate, up, padding, resample_filter):
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up == 2:
        y = _upsampling_conv(x, w.transpose(0, 1), 1, padding, resample_filter)
    else:
        y = F.conv2d(x, w, padding=padding)
    if demodulate:
        y = y * demod_coefficients(weight, styles).to(y.dtype)[:, :, None, None]
    return y


def _weight_form(x, weight, styles, demodulate, up, padding, resample_filter):
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    w = weight.float()[None] * styles.float()[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS)[:, :, None, None, None]
    w = w.to(x.dtype)
    x = x.reshape(1, batch * in_ch, height, width)
    if up == 2:
        w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
        y = _upsampling_conv(x, w, batch, padding, resample_filter)
    else:
        y = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw), padding=padding, groups=batch)
    return y.reshape(batch, out_ch, *y.shape[2:])


def fused_modulated_conv(x: torch.Tensor, styles: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         noise: torch.Tensor | None, resample_filter: torch.Tensor | None, *, up: int, padding: int,
                         demodulate: bool, lrelu: bool, clamp: float | None, form: str = "activation") -> torch.Tensor:
    """What one `ModulatedConv2d` plugin node computes (its reference):
    modulate -> (2x transposed conv + FIR) or conv -> demodulate -> + noise -> + bias -> lrelu x sqrt(2) -> clamp."""
    from .bias_act import LRELU_GAIN, bias_lrelu

    y = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, padding=padding,
                         resample_filter=resample_filter, form=form)
    if noise is not None:
        y = y + noise
    if lrelu:
        return bias_lrelu(y, bias, gain=LRELU_GAIN, clamp=clamp)
    y = y + bias.reshape(1, -1, 1, 1).to(y.dtype)
    return y if clamp is None else y.clamp(-clamp, clamp)
