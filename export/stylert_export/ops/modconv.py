"""Modulated convolution (StyleGAN2 Sec. 2.2) in its two equivalent forms.

weight form   ("fused modconv" of the research code): W' = W * s, W'' = W' / sqrt(sum W'^2 + eps),
              one grouped conv with groups = batch. Per-sample weights: the group count is
              frozen at export and TensorRT sees a conv with run-time weights.
activation form: y = d * conv(x * s, W), d_o = rsqrt(sum_i s_i^2 Wsq[i, o] + eps),
              Wsq[i, o] = sum_k W[o, i, k]^2. Static weights, any batch: this is what we export.

phase form:   the activation form with the up=2 layer's stride-2 transposed conv and its FIR blur
              composed into one kernel, split into 4 phase kernels of a stride-1 conv with 4x the
              outputs, stored with a depth-to-space: no intermediate, no separate blur pass. The
              weights are prepared once (`upsampling_phase_weights`); this is what a fused kernel runs.

All take `weight` with any gain already applied, `styles` [batch, in] and compute s and d in
fp32. `resample_filter` is the normalized FIR used after a stride-2 transposed conv (up=2).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from .upfirdn2d import upfirdn2d

FORMS = ("activation", "weight", "phase")
IMPLS = FORMS + ("plugin",)  # "plugin": one stylert::ModulatedConv2d node per layer (plugin_ops.py)
DEMOD_EPS = 1e-8
_IMPL: ContextVar[str] = ContextVar("modconv_impl", default="activation")


@contextmanager
def modconv_impl(impl: str):
    """Layers constructed in this block compute their modulated convs as `impl` (one of IMPLS; "plugin" also
    makes the BAFS blend one node). Each layer reads it once, in its constructor, and keeps it: the choice is
    made when a model is built, as NVlabs' `impl=`, never switched on a built one."""
    if impl not in IMPLS:
        raise ValueError(f"unknown modulated conv implementation {impl!r}; expected one of {IMPLS}")
    token = _IMPL.set(impl)
    try:
        yield
    finally:
        _IMPL.reset(token)


def current_modconv_impl() -> str:
    """The implementation a layer constructed now takes (modconv_impl; "activation" outside any)."""
    return _IMPL.get()


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
    if form == "phase":
        return _activation_form(x, weight, styles, demodulate, up, padding, resample_filter, phases=True)
    raise ValueError(f"unknown modulated conv form {form!r}; expected one of {FORMS}")


def composed_up_kernel(weight: torch.Tensor, resample_filter: torch.Tensor) -> torch.Tensor:
    """K = 4 (W * f): the stride-2 transposed conv's kernel composed with the FIR that follows it, one
    (k + |f| - 1)^2 kernel per (out, in) pair (6x6 for StyleGAN2's 3x3 and [1, 3, 3, 1])."""
    out_ch, in_ch, k, _ = weight.shape
    taps = resample_filter.shape[-1]
    full = F.conv2d(weight.reshape(out_ch * in_ch, 1, k, k).to(resample_filter.dtype),
                    resample_filter.flip([0, 1])[None, None], padding=taps - 1)  # true convolution
    return 4 * full.reshape(out_ch, in_ch, k + taps - 1, k + taps - 1)


def upsampling_phase_weights(weight: torch.Tensor, resample_filter: torch.Tensor,
                             padding: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An up=2 layer's transposed conv + FIR as one stride-1 conv with 4x the outputs, followed by a
    depth-to-space (pixel_shuffle(2)): weight [out, in, k, k] -> (phases [out * 4, in, T, T], the
    conv's (before, after) padding). Output channel o*4 + 2a + b is the phase (a, b): pixels (2j+a, 2i+b).

    Transposed conv (stride 2) then FIR f (gain 4, padding p0) is out[n] = sum_i x[i] K[n - 2i + c]
    with K = 4 (W * f) (full 2-D convolution, k + |f| - 1 taps) and c = |f| - 1 - p0; phase a of the
    output is then a stride-1 convolution of x with G_a[m] = K[2m + a + c].
    """
    out_ch, in_ch, k, _ = weight.shape
    taps = resample_filter.shape[-1]
    p0, p1 = _blur_padding(k, taps, padding, 2)
    if k + p0 + p1 - taps - 1 != 0:  # the layer must map H to 2H, as every StyleGAN2 up layer does
        raise ValueError(f"kernel {k}, filter {taps}, padding {padding}: not a 2x upsampling layer")
    full = composed_up_kernel(weight, resample_filter).reshape(out_ch * in_ch, 1, k + taps - 1, k + taps - 1)
    length, c = k + taps - 1, taps - 1 - p0
    lo = min(-((a + c) // 2) for a in (0, 1))  # m ranges where 0 <= 2m + a + c < L, both phases together
    hi = max((length - 1 - a - c) // 2 for a in (0, 1))
    size = hi - lo + 1
    index = torch.tensor([[2 * (hi - t) + a + c for t in range(size)] for a in (0, 1)])  # [phase, tap] -> K tap
    valid = (index >= 0) & (index < length)
    padded = F.pad(full[:, 0], [0, 1, 0, 1])  # tap L is zero: out-of-range taps point there
    index = torch.where(valid, index, torch.full_like(index, length))
    phases = padded[:, index[:, None, :, None], index[None, :, None, :]]  # [out*in, a, b, T, T]
    phases = phases.reshape(out_ch, in_ch, 2, 2, size, size).permute(0, 2, 3, 1, 4, 5)
    return phases.reshape(out_ch * 4, in_ch, size, size).to(weight.dtype), (hi, -lo)


def _phase_upsampling_conv(x, weight, padding, resample_filter):
    phases, (before, after) = upsampling_phase_weights(weight, resample_filter, padding)
    y = F.conv2d(F.pad(x, [before, after, before, after]), phases.to(x.dtype))
    return F.pixel_shuffle(y, 2)


def _upsampling_conv(x, weight, groups, padding, resample_filter):
    kernel = weight.shape[-1]
    y = F.conv_transpose2d(x, weight, stride=2, groups=groups)
    p0, p1 = _blur_padding(kernel, resample_filter.shape[-1], padding, 2)
    return upfirdn2d(y, resample_filter, pad=(p0, p1, p0, p1), gain=4)


def _activation_form(x, weight, styles, demodulate, up, padding, resample_filter, phases: bool = False):
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up == 2 and phases:
        y = _phase_upsampling_conv(x, weight.float(), padding, resample_filter.float())
    elif up == 2:
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


def modulated_conv_bias_act(x: torch.Tensor, styles: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
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
