"""3x3 convolution in Winograd's minimal filtering form F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016), written in ops every exporter knows: the winograd flavour of our graphs.

Each 4x4 output tile Y of a 3x3 correlation of input tile d (6x6) with filter g is
    Y = A^T [ (G g G^T) (.) (B^T d B) ] A                     ((.): elementwise; B, G, A for points 0, +-1, +-2)
so the 36 products per (tile, input channel, output channel) replace the direct form's 144: the channel sums
become 36 GEMMs (one grouped 1x1 convolution) on the transformed tiles. In the graph:
  B^T d B   two depthwise convolutions (rows, then columns: stride 4, six taps), tiles reordered coefficient-major;
  G g G^T   two matmuls on the layer's constant weight, which the backend folds when it loads the graph (the file
            stays about the direct form's size; the folded weights take 4x the memory);
  A^T M A   a grouped 1x1 convolution (36 -> 16 per output channel) and a depth-to-space by 4.
On ONNX Runtime's CPU this ran 1.47x-2.50x a direct 3x3 conv of 256-512 channels at 16x16-128x128 on a 2-core AMD
EPYC Zen 4, gained little and unsteadily at 128 channels and lost at fewer or under 16x16 outputs
(benchmarks/winograd.py layers): `winograd_conv2d` leaves those direct. In bf16 its error grows past what OpenVINO's
bf16 check accepts (docs/pages/export.md, Flavours). It is not a form for TensorRT (which picks its own
algorithms) nor for phones: their runtimes take convolution weights as constants in the file, where the folded
form's are 4x the direct ones.

`winograd_conv2d` is the fast path; `torch.nn.functional.conv2d` is its reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MIN_CHANNELS = 256  # input and output channels of a layer that takes the Winograd form
MIN_PIXELS = 256  # output pixels (16x16) of such a layer
CONDITIONS = f"3x3, stride 1, float32, {MIN_CHANNELS}+ input and output channels, {MIN_PIXELS}+ output pixels"

_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # input transform, points 0, +-1, +-2
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # filter transform
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))  # output transform


def _single(value) -> int | None:
    """An int, or a list of equal ints, as one int (None when the sides differ)."""
    values = [value] if isinstance(value, int) else list(value)
    return values[0] if len(set(values)) == 1 else None


def _padding(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups, min_channels: int,
             min_pixels: int) -> int | None:
    """The padding (one for every side) of a conv2d the Winograd form takes; None for one it leaves direct."""
    if isinstance(padding, str):  # for a 3x3 stride-1 conv: "same" pads 1, "valid" 0
        padding = {"same": 1, "valid": 0}.get(padding, -1)
    pad = _single(padding)
    if (x.dim() != 4 or weight.dim() != 4 or x.dtype != torch.float32 or weight.dtype != x.dtype or pad is None
            or pad < 0 or tuple(weight.shape[2:]) != (3, 3) or _single(stride) != 1 or _single(dilation) != 1
            or groups != 1 or min(weight.shape[:2]) < min_channels):
        return None
    height, width = x.shape[-2:]
    if not (isinstance(height, int) and isinstance(width, int)):  # spatial sizes are fixed at export
        return None
    return pad if (height + 2 * pad - 2) * (width + 2 * pad - 2) >= min_pixels else None


def applies(input: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1, groups=1, *,
            min_channels: int = MIN_CHANNELS, min_pixels: int = MIN_PIXELS) -> bool:
    """Whether winograd_conv2d computes this conv2d in the Winograd form (else it leaves it to the direct one)."""
    return _padding(input, weight, stride, padding, dilation, groups, min_channels, min_pixels) is not None


def winograd_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                    padding=0, dilation=1, groups=1, *, min_channels: int = MIN_CHANNELS,
                    min_pixels: int = MIN_PIXELS):
    """conv2d(input, weight, ...) (F.conv2d's arguments) in the F(4x4, 3x3) form where `applies`, else
    NotImplemented."""
    pad = _padding(input, weight, stride, padding, dilation, groups, min_channels, min_pixels)
    if pad is None:
        return NotImplemented
    (channels, height, width), out_ch = input.shape[1:], weight.shape[0]
    oh, ow = height + 2 * pad - 2, width + 2 * pad - 2
    th, tw = -(-oh // 4), -(-ow // 4)  # tiles; the last ones run past the output and are cropped
    bt, g, at = (torch.tensor(m, dtype=input.dtype, device=input.device) for m in (_BT, _G, _AT))
    x = F.pad(input, [pad, 4 * tw - ow + pad, pad, 4 * th - oh + pad])  # 4 t + 2 rows and columns
    v = F.conv2d(x, bt.reshape(6, 1, 1, 6).repeat(channels, 1, 1, 1), stride=(1, 4), groups=channels)
    v = F.conv2d(v, bt.reshape(6, 1, 6, 1).repeat(6 * channels, 1, 1, 1), stride=(4, 1), groups=6 * channels)
    # v: B^T d B of every tile, channel c * 36 + 6 j + i (i: row coefficient, j: column); regrouped to p * C + c
    v = v.reshape(-1, channels, 36, th, tw).transpose(1, 2).reshape(-1, 36 * channels, th, tw)
    u = g @ weight @ g.t()  # G g G^T: [out, in, 6 (i), 6 (j)]
    u = u.permute(3, 2, 0, 1).reshape(36 * out_ch, channels, 1, 1)
    m = F.conv2d(v, u, groups=36)  # the elementwise products summed over input channels: channel p * O + o
    m = m.reshape(-1, 36, out_ch, th, tw).transpose(1, 2).reshape(-1, 36 * out_ch, th, tw)
    a = (at[:, None, None, :] * at[None, :, :, None]).reshape(16, 36, 1, 1)  # [4 a + b, 6 j + i] = A[a,i] A[b,j]
    y = F.pixel_shuffle(F.conv2d(m, a.repeat(out_ch, 1, 1, 1), groups=out_ch), 4)[:, :, :oh, :ow]
    return y if bias is None else y + bias.to(y.dtype)[:, None, None]


class WinogradForm(TorchFunctionMode):
    """While active (around an export's tracing), every F.conv2d call, nn.Conv2d's included, that the Winograd form
    `applies` to (with these bounds) is written in it; the others stay direct."""

    def __init__(self, min_channels: int = MIN_CHANNELS, min_pixels: int = MIN_PIXELS):
        super().__init__()
        self.bounds = {"min_channels": min_channels, "min_pixels": min_pixels}
        self.written = 0  # convolutions written in the form

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            y = winograd_conv2d(*args, **kwargs, **self.bounds)
            if y is not NotImplemented:
                self.written += 1
                return y
        return func(*args, **kwargs)
