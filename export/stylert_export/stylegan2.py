"""StyleGAN2 generator (Karras et al. 2020, config F): mapping network and skip-architecture synthesis.

Parameter and buffer names follow the NVlabs stylegan2-ada-pytorch layout (`mapping.fcN`,
`synthesis.bR.conv0/conv1/torgb`, `noise_const`, `noise_strength`, `resample_filter`), so an
NVlabs state dict loads as is and a rosinality one by renaming (see `checkpoints.py`).

Inference-only choices:
- noise is the constant `noise_const` buffer of each layer (or explicit tensors, or none):
  no random numbers are drawn inside forward, so the graph is deterministic;
- the modulated conv runs in the activation form by default (exports everywhere); a model built
  under `ops.modconv_impl("weight")` runs the grouped-conv form of the research code, one built under
  `modconv_impl("plugin")` writes one stylert::ModulatedConv2d node per layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from .config import JSONConfig
from .ops import LRELU_GAIN, bias_lrelu, current_modconv_impl, modulated_conv_bias_act, setup_filter, upsample2d
from .plugin_ops import modulated_conv_node

RESAMPLE_TAPS = (1, 3, 3, 1)


@dataclass(frozen=True)
class StyleGAN2Config(JSONConfig):
    """What defines a StyleGAN2 generator's tensors and arithmetic.

    channels: output channels of each block, keyed by resolution 4..resolution.
    demod_weight_gain: rosinality scales conv weights by 1/sqrt(fan_in) before demodulation,
        NVlabs does not; the two differ only through eps, but we reproduce each exactly.
    conv_clamp: NVlabs clamps every conv output (after gain) to +-conv_clamp; None = no clamp.
    """
    resolution: int
    channels: dict[int, int]
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    lr_multiplier: float = 0.01
    conv_clamp: float | None = None
    demod_weight_gain: bool = False
    img_channels: int = 3
    resample_taps: tuple[int, ...] = field(default=RESAMPLE_TAPS)

    def __post_init__(self):
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if not (4 <= self.resolution <= 1024 and log2 == int(log2)):
            raise ValueError(f"resolution must be a power of two in 4..1024, got {self.resolution}")
        missing = [r for r in self.block_resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channel count missing for resolutions {missing}")

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """One w per conv plus one for the last toRGB: 2 log2(R) - 2 (18 at 1024, 14 at 256)."""
        return 2 * int(math.log2(self.resolution)) - 2

    @staticmethod
    def rosinality_channels(resolution: int, channel_multiplier: int = 2) -> dict[int, int]:
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
        return {r: c if r <= 32 else c * channel_multiplier for r, c in table.items() if r <= resolution}

    @staticmethod
    def nvlabs_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
        return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}

    @classmethod
    def from_channel_base(cls, resolution: int, channel_base: int = 32768, channel_max: int = 512,
                          w_dim: int = 512, **kwargs) -> "StyleGAN2Config":
        """NVlabs channel counts min(base / r, max) and z_dim = w_dim: the random-init configs."""
        return cls(resolution=resolution, channels=cls.nvlabs_channels(resolution, channel_base, channel_max),
                   z_dim=w_dim, w_dim=w_dim, **kwargs)


class FullyConnected(nn.Module):
    """Equalized-learning-rate linear layer: y = x @ (W * lr/sqrt(in)).T + b * lr."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ (self.weight * self.weight_gain).t()
        bias = self.bias * self.bias_gain
        return bias_lrelu(x, bias) if self.activation else x + bias


class MappingNetwork(nn.Module):
    """z -> w: normalize 2nd moment, `mapping_layers` FC + lrelu; `w_avg` for truncation."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.num_layers = cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            in_dim = cfg.z_dim if i == 0 else cfg.w_dim
            self.add_module(f"fc{i}", FullyConnected(in_dim, cfg.w_dim, lr_multiplier=cfg.lr_multiplier,
                                                     activation=True))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, z_dim] -> untruncated w [B, w_dim]."""
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def forward(self, z: torch.Tensor, truncation_psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Truncation trick: w = w_avg + psi (w - w_avg), psi a scalar or [B]."""
        w = self.embed(z)
        psi = torch.as_tensor(truncation_psi, dtype=w.dtype, device=w.device).reshape(-1, 1)
        return self.w_avg + psi * (w - self.w_avg)


def _modulated_conv(impl: str):
    """The function computing a layer's modulated conv + noise + bias + activation in implementation `impl`."""
    return modulated_conv_node if impl == "plugin" else partial(modulated_conv_bias_act, form=impl)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + constant noise + bias + lrelu (+ clamp)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: int,
                 cfg: StyleGAN2Config):
        super().__init__()
        self.up = up
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter(cfg.resample_taps))
        self.weight_gain = 1 / math.sqrt(in_ch * 9) if cfg.demod_weight_gain else 1.0
        self.conv_clamp = None if cfg.conv_clamp is None else cfg.conv_clamp * LRELU_GAIN
        self.impl = current_modconv_impl()

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                out_channels: int | None = None) -> torch.Tensor:
        """`out_channels` keeps only the first output channels: demodulation, noise and bias act per
        output channel, so those channels come out identical to the full conv's."""
        styles = self.affine(w)
        weight, bias = self.weight[:out_channels] * self.weight_gain, self.bias[:out_channels]
        noise = None if noise is None else noise * self.noise_strength
        return _modulated_conv(self.impl)(x, styles, weight, bias, noise, self.resample_filter, up=self.up, padding=1,
                                          demodulate=True, lrelu=True, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation + bias (+ clamp)."""

    def __init__(self, in_ch: int, w_dim: int, cfg: StyleGAN2Config):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cfg.img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cfg.img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)
        self.conv_clamp = cfg.conv_clamp
        self.impl = current_modconv_impl()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _modulated_conv(self.impl)(x, self.affine(w), self.weight * self.weight_gain, self.bias, None, None,
                                          up=1, padding=0, demodulate=False, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> toRGB added to the upsampled RGB skip."""

    def __init__(self, resolution: int, cfg: StyleGAN2Config):
        super().__init__()
        self.resolution = resolution
        out_ch = cfg.channels[resolution]
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(cfg.channels[resolution // 2], out_ch, cfg.w_dim, resolution, up=2, cfg=cfg)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, resolution, up=1, cfg=cfg)
        self.torgb = ToRGBLayer(out_ch, cfg.w_dim, cfg)
        self.register_buffer("resample_filter", setup_filter(cfg.resample_taps))
        self.num_conv = 1 if resolution == 4 else 2

    def features(self, x, ws, noise_mode, **extra):
        """(const | conv0) -> conv1; subclasses (QC-StyleGAN) refine what conv1 outputs."""
        if self.resolution == 4:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], self.conv0.noise_const if noise_mode == "const" else None)
        return self.conv1(x, ws[:, self.num_conv - 1], self.conv1.noise_const if noise_mode == "const" else None)

    def forward(self, x, img, ws, noise_mode, **extra):
        """ws [B, num_conv + 1, w_dim]: one per conv, the last for toRGB."""
        x = self.features(x, ws, noise_mode, **extra)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            self.add_module(f"b{res}", self.make_block(res, cfg))
        self.num_ws = cfg.num_ws

    def make_block(self, res: int, cfg: StyleGAN2Config) -> SynthesisBlock:
        return SynthesisBlock(res, cfg)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", **extra) -> torch.Tensor:
        """`extra` reaches every block (QC-StyleGAN passes its quality code q)."""
        if noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode must be 'const' or 'none', got {noise_mode!r}")
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx: w_idx + block.num_conv + 1], noise_mode, **extra)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """G(ws) -> image in about [-1, 1], raw (no clamp); `mapping` turns z into ws."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(ws, noise_mode=noise_mode).float()

    def z_to_ws(self, z: torch.Tensor, truncation_psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Mapping + truncation, broadcast to W+ [B, num_ws, w_dim]."""
        w = self.mapping(z, truncation_psi)
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def estimate_w_avg(self, num_samples: int = 10000, seed: int = 0) -> torch.Tensor:
        """Mean of the mapping output over seeded z, for checkpoints that ship no w_avg."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_samples, self.cfg.z_dim, generator=gen)
        return self.mapping.embed(z).mean(dim=0)


class GeneratorWithMapping(nn.Module):
    """(z [B, z_dim], truncation_psi [B]) -> image; the graph exported by `--with-mapping`."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, truncation_psi: torch.Tensor) -> torch.Tensor:
        return self.generator(self.generator.z_to_ws(z, truncation_psi))


def cast_synthesis_fp16(generator: Generator) -> Generator:
    """Mixed precision for export: synthesis convs, noise and biases in fp16; the mapping, the
    affine layers (styles) and demodulation stay fp32, and the image is returned as fp32.
    conv_clamp (NVlabs: 256) bounds activations against fp16 overflow where the checkpoint has it."""
    generator.synthesis.half()
    for module in generator.synthesis.modules():
        if isinstance(module, FullyConnected):
            module.float()
    return generator


def bank_features(g: Generator, ws: torch.Tensor, noise: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """StyleGAN2 features after the first conv of every block, 4 .. size (rosinality's return_features);
    blocks above `size` are never run."""
    b4 = g.synthesis.b4
    x = b4.conv1(b4.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise[0])
    feats = [x]
    for j, res in enumerate(r for r in g.synthesis.block_resolutions if 8 <= r <= size):
        block = getattr(g.synthesis, f"b{res}")
        x = block.conv0(x, ws[:, 2 * j + 1], noise[2 * j + 1])
        feats.append(x)
        if res < size:
            x = block.conv1(x, ws[:, 2 * j + 2], noise[2 * j + 2])
    return feats
