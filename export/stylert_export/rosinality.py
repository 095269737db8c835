"""StyleGAN2 layers in rosinality's parameter layout (`conv.weight` [1, out, in, k, k], `conv.modulation`,
`noise.weight`, `activate.bias`), as the VSP restorer, EXE-GAN and FACEMUG checkpoints name them, and the decoder
those networks share (`style_decode`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import bias_lrelu, current_modconv_impl, demod_coefficients, setup_filter, upfirdn2d
from .plugin_ops import modulated_conv_node
from .stylegan2 import FullyConnected

BLUR = (1, 3, 3, 1)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", setup_filter(BLUR) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=(self.pad[0], self.pad[1], self.pad[0], self.pad[1]))


class Upsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", setup_filter(BLUR) * 4)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=2, pad=(2, 1, 2, 1))


class EqualConv2d(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1 / math.sqrt(cin * kernel ** 2)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding, self.dilation)


class FusedLeakyReLU(nn.Module):
    """lrelu(x + b, 0.2) * sqrt(2)."""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.channels = channels

    def forward(self, x):
        return bias_lrelu(x, self.bias if self.bias is not None else x.new_zeros(self.channels))


class NoiseInjection(nn.Module):
    """x + weight * noise; `weight` is [1] as trained, [C, 1, 1] once a following batch norm is folded in (GRIG)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return x + self.weight * noise


class ConvLayer(nn.Sequential):
    """(blur) -> equalized conv -> fused lrelu."""

    def __init__(self, cin, cout, kernel, downsample=False, bias=True, activate=True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR) - 2) + (kernel - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
        layers.append(EqualConv2d(cin, cout, kernel, stride=2 if downsample else 1,
                                  padding=0 if downsample else kernel // 2, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(cout, bias=bias))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv with its own modulation (rosinality layout), optional 2x up / down.
    Built under modconv_impl("plugin") (up or none): one stylert::ModulatedConv2d node with a linear epilogue;
    noise, bias and activation stay with the caller (the node's noise is one map for the batch, these are per
    sample). Any other implementation computes the activation form."""

    def __init__(self, cin, cout, kernel, style_dim, demodulate=True, upsample=False, downsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel))
        self.modulation = FullyConnected(style_dim, cin, bias_init=1.0)
        self.scale = 1 / math.sqrt(cin * kernel ** 2)
        self.padding = kernel // 2
        self.demodulate, self.upsample, self.downsample = demodulate, upsample, downsample
        if upsample:
            p = (len(BLUR) - 2) - (kernel - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if downsample:
            p = (len(BLUR) - 2) + (kernel - 1)
            self.blur = Blur(((p + 1) // 2, p // 2))
        self.plugin = current_modconv_impl() == "plugin" and not downsample

    def forward(self, x, style):
        s = self.modulation(style)
        w = self.weight[0] * self.scale
        if self.plugin:
            return modulated_conv_node(x, s, w, w.new_zeros(w.shape[0]), None,
                                       self.blur.kernel / 4 if self.upsample else None, up=2 if self.upsample else 1,
                                       padding=self.padding, demodulate=self.demodulate, lrelu=False, clamp=None)
        x = x * s[:, :, None, None]
        if self.upsample:
            y = self.blur(F.conv_transpose2d(x, w.transpose(0, 1), stride=2))
        elif self.downsample:
            y = F.conv2d(self.blur(x), w, stride=2)
        else:
            y = F.conv2d(x, w, padding=self.padding)
        return y * demod_coefficients(w, s).to(y.dtype)[:, :, None, None] if self.demodulate else y


class StyledConv(nn.Module):
    """SC: modulated conv (2x up or down) -> noise -> lrelu."""

    def __init__(self, cin, cout, kernel, style_dim, upsample=False, downsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, kernel, style_dim, upsample=upsample, downsample=downsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(cout)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, cin, style_dim, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


def style_decode(net: nn.Module, features, latent, c, noise, priors=None):
    """The decoder of an encoder-decoder StyleGAN2 (VSP's restoration net, EXE-GAN's generator): per
    resolution an up style layer, the encoder feature (and a prior) added, a style layer, a toRGB into
    the RGB skip; layer i is modulated by [latent_i, c]. `net` has conv1, to_rgb1, convs and to_rgbs."""
    out = net.conv1(features[0], torch.cat([latent[:, 0], c], 1), noise[0])
    skip = net.to_rgb1(out, torch.cat([latent[:, 1], c], 1))
    for j in range(len(net.to_rgbs)):
        i = 2 * j + 1
        out = net.convs[2 * j](out, torch.cat([latent[:, i], c], 1), noise[i])
        out = out + features[j + 1]  # f(F^de, F^en, F^s): a sum
        if priors is not None:
            out = out + priors[j + 1]
        out = net.convs[2 * j + 1](out, torch.cat([latent[:, i + 1], c], 1), noise[i + 1])
        skip = net.to_rgbs[j](out, torch.cat([latent[:, i + 2], c], 1), skip)
    return skip
