"""GRIG: generative residual image inpainting (seed 001, thesis ch. 4; public code "GRIG_few_shot_inpainting").

    Delta_t = G(cat(I^{t-1}, M))                                    one reasoning step (Fig. 4.2)
    I^t     = (I^{t-1} + Delta_t) * M + I_in * (1 - M),  I^0 = I_in  (Eq. 4.1); M is 1 where filled

G is a CNN encoder (a conv, residual down blocks, AOT blocks), Restormer's transformer blocks on the
map at R/8 with skip-layer excitation (SLE) from the CNN features, and a decoder of GLU up blocks,
AOT blocks, SLE and two noise injections. The modules follow `models/models.py: GRIG_G` and
`models/Restormer.py` of the public code name for name, at its 256 layout (the Restormer's layers
sit directly on the generator, as in the public code). Two folds are made at load, as the public
model runs in eval mode:
- spectral norm: W = W_orig / (u . W_mat v) with the stored u and v (`fold_spectral_norm`);
- batch norm: each BatchNorm2d folded into the conv before it (`fold_batchnorm`); a noise injection
  between the two becomes a per-channel strength. The unfolded module stays the reference.
The two noise injections draw `torch.randn` even in eval mode in the public code: here they are inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import CheckpointError, count_keys, load_strict, read_file
from .config import JSONConfig
from .random_init import randomize_batchnorm
from .rosinality import NoiseInjection


@dataclass(frozen=True)
class GRIGConfig(JSONConfig):
    """GRIG_G(ngf, nc=4, im_size=256) and its Restormer (dim 48, blocks 4/6/6/8, 4 refinement blocks, heads
    1/2/4/8, FFN x2.66): the public model. `size` may be any multiple of 64 from 64 up: the network is
    convolutional but for SLE's 4x4 pooling, so smaller sizes run the same layers (used by tests)."""
    size: int = 256
    ngf: int = 64
    dim: int = 48
    blocks: tuple[int, ...] = (4, 6, 6, 8)
    refinement: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66

    def __post_init__(self):
        if self.size < 64 or self.size % 64:
            raise ValueError(f"GRIG's size must be a multiple of 64 (>= 64), got {self.size}")

    def nfc(self, res: int) -> int:
        """Channels at the 256-layout resolution `res` (GRIG_G's nfc_multi x ngf)."""
        return int({4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}[res] * self.ngf)


def conv2d(*args, bias: bool = False, **kwargs) -> nn.Conv2d:
    """The public code's spectral-normalised conv, here a plain conv: the norm is folded into its weight at load."""
    return nn.Conv2d(*args, bias=bias, **kwargs)


class GLU(nn.Module):
    def forward(self, x):
        n = x.shape[1] // 2
        return x[:, :n] * torch.sigmoid(x[:, n:])


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Pool4(nn.AdaptiveAvgPool2d):
    """SLE's AdaptiveAvgPool2d(4). On a map smaller than 4x4 whose size divides 4 (GRIG below 256, as tests run it)
    every bin holds one pixel: nearest-neighbour upsampling, written so because it exports as a Resize where the
    pooling exports as a GatherND of rank 6, which phone accelerators refuse."""

    def __init__(self):
        super().__init__(4)

    def forward(self, x):
        if x.shape[-1] < 4 and 4 % x.shape[-1] == 0 and x.shape[-2] == x.shape[-1]:
            return F.interpolate(x, size=(4, 4), mode="nearest")
        return super().forward(x)


class SEBlock(nn.Module):
    """Skip-layer excitation (SLE): feat_big * sigmoid(conv1x1(swish(conv4x4(avgpool_4(feat_small)))))."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.main = nn.Sequential(Pool4(), conv2d(ch_in, ch_out, 4, 1, 0), Swish(),
                                  conv2d(ch_out, ch_out, 1, 1, 0), nn.Sigmoid())

    def forward(self, feat_small, feat_big):
        return feat_big * self.main(feat_small)


def up_block(cin: int, cout: int) -> nn.Sequential:
    """UpBlock_v2: bilinear x2 (align_corners) -> conv -> BN -> GLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         conv2d(cin, cout * 2, 3, 1, 1), nn.BatchNorm2d(cout * 2), GLU())


class UpBlockComp(nn.Sequential):
    """UpBlockComp_v2: bilinear x2 -> (conv -> noise -> BN -> GLU) x 2; the noise maps are inputs."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         conv2d(cin, cout * 2, 3, 1, 1), NoiseInjection(), nn.BatchNorm2d(cout * 2), GLU(),
                         conv2d(cout, cout * 2, 3, 1, 1), NoiseInjection(), nn.BatchNorm2d(cout * 2), GLU())

    def forward(self, x, noise):
        for layer in self:
            x = layer(x, noise[0 if layer is self[2] else 1]) if isinstance(layer, NoiseInjection) else layer(x)
        return x


class DownBlockComp(nn.Module):
    """Mean of (4x4 stride-2 conv, BN, lrelu, 3x3 conv, BN, lrelu) and (avgpool 2, 1x1 conv, BN, lrelu)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2),
                                  conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2, 2), conv2d(cin, cout, 1, 1, 0), nn.BatchNorm2d(cout),
                                    nn.LeakyReLU(0.2))

    def forward(self, x):
        return (self.main(x) + self.direct(x)) / 2


class AOTBlock(nn.Module):
    """AOT block: four reflect-padded dilated 3x3 convs (rates 1, 2, 4, 8) to C/4 + ReLU, concatenated and
    fused by a 3x3 conv; a gate from a 3x3 conv of x, standardised over the map: x (1 - g) + fused g."""

    def __init__(self, dim: int, rates=(1, 2, 4, 8)):
        super().__init__()
        self.rates = rates
        for i, rate in enumerate(rates):
            setattr(self, f"block{i:02d}", nn.Sequential(nn.ReflectionPad2d(rate),
                                                         conv2d(dim, dim // 4, 3, padding=0, dilation=rate, bias=True),
                                                         nn.ReLU()))
        self.fuse = nn.Sequential(nn.ReflectionPad2d(1), conv2d(dim, dim, 3, padding=0, bias=True))
        self.gate = nn.Sequential(nn.ReflectionPad2d(1), conv2d(dim, dim, 3, padding=0, bias=True))

    def forward(self, x):
        out = self.fuse(torch.cat([getattr(self, f"block{i:02d}")(x) for i in range(len(self.rates))], 1))
        g = self.gate(x)
        g = 5 * (2 * (g - g.mean((2, 3), keepdim=True)) / (g.std((2, 3), keepdim=True) + 1e-9) - 1)  # my_layer_norm
        mask = torch.sigmoid(g)
        return x * (1 - mask) + out * mask


# ---- Restormer (Zamir et al. 2022), as the public code has it ------------------------------------

class LayerNorm(nn.Module):
    """WithBias LayerNorm over channels at every pixel (Restormer's `LayerNorm(dim, 'WithBias')`, eps 1e-5)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Module()
        self.body.weight = nn.Parameter(torch.ones(dim))
        self.body.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.body.weight, self.body.bias, 1e-5)
        return y.permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """GDFN: 1x1 to 2 hidden, depthwise 3x3, gelu(x1) * x2, 1x1 back."""

    def __init__(self, dim: int, expansion: float):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """MDTA: attention across channels per head, q and k L2-normalised over pixels, a learned temperature."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in qkv)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.temperature, dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float):
        super().__init__()
        self.norm1, self.attn = LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.ffn = LayerNorm(dim), FeedForward(dim, expansion)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 3, 1, 1, bias=False)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, 1, 1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, 1, 1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def _stage(dim: int, heads: int, count: int, expansion: float) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, expansion) for _ in range(count)])


class GRIGGenerator(nn.Module):
    """G: cat(I^{t-1}, M) [B, 4, S, S] -> Delta_t [B, 3, S, S] (no tanh at 256)."""

    def __init__(self, cfg: GRIGConfig):
        super().__init__()
        self.cfg = cfg
        nfc, d, e = cfg.nfc, cfg.dim, cfg.ffn_expansion
        self.down_from_big = nn.Sequential(conv2d(4, nfc(256), 3, 1, 1), nn.LeakyReLU(0.2))
        self.down_4 = DownBlockComp(nfc(256), nfc(128))
        self.down_8 = nn.Sequential(DownBlockComp(nfc(128), nfc(64)), AOTBlock(nfc(64)), AOTBlock(nfc(64)))
        self.down_16 = DownBlockComp(nfc(64), nfc(32))
        self.se_256_16 = SEBlock(nfc(256), 2 * d)
        self.se_128_8 = SEBlock(nfc(128), 4 * d)
        self.se_64_4 = SEBlock(nfc(64), 8 * d)
        # Restormer on the R/8 map (its modules registered on the generator, as in the public code)
        self.patch_embed = OverlapPatchEmbed(nfc(32), d)
        self.encoder_level1 = _stage(d, cfg.heads[0], cfg.blocks[0], e)
        self.down1_2 = Downsample(d)
        self.encoder_level2 = _stage(2 * d, cfg.heads[1], cfg.blocks[1], e)
        self.down2_3 = Downsample(2 * d)
        self.encoder_level3 = _stage(4 * d, cfg.heads[2], cfg.blocks[2], e)
        self.down3_4 = Downsample(4 * d)
        self.latent = _stage(8 * d, cfg.heads[3], cfg.blocks[3], e)
        self.up4_3 = Upsample(8 * d)
        self.reduce_chan_level3 = nn.Conv2d(8 * d, 4 * d, 1, bias=False)
        self.decoder_level3 = _stage(4 * d, cfg.heads[2], cfg.blocks[2], e)
        self.up3_2 = Upsample(4 * d)
        self.reduce_chan_level2 = nn.Conv2d(4 * d, 2 * d, 1, bias=False)
        self.decoder_level2 = _stage(2 * d, cfg.heads[1], cfg.blocks[1], e)
        self.up2_1 = Upsample(2 * d)
        self.decoder_level1 = _stage(2 * d, cfg.heads[0], cfg.blocks[0], e)
        self.refinement = _stage(2 * d, cfg.heads[0], cfg.refinement, e)
        self.output = nn.Conv2d(2 * d, nfc(32), 3, 1, 1, bias=False)
        # decoder
        self.feat_64 = up_block(nfc(32), nfc(64))
        self.conv_64_3_3 = nn.Sequential(conv2d(nfc(64) * 2, nfc(64) * 2, 1, 1, 0), nn.BatchNorm2d(nfc(64) * 2), GLU(),
                                         AOTBlock(nfc(64)), AOTBlock(nfc(64)))
        self.feat_128 = UpBlockComp(nfc(64), nfc(128))
        self.conv_128_3_3 = nn.Sequential(conv2d(nfc(128) * 2, nfc(128) * 2, 1, 1, 0), nn.BatchNorm2d(nfc(128) * 2),
                                          GLU())
        self.feat_256 = up_block(nfc(128), nfc(256))
        self.up_se_64 = SEBlock(8 * d, nfc(64))
        self.up_se_128 = SEBlock(4 * d, nfc(128))
        self.up_se_256 = SEBlock(2 * d, nfc(256))
        self.to_big = conv2d(nfc(256), 3, 3, 1, 1)

    def forward(self, x: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """x = cat(I^{t-1}, M); noise: the two [B, 1, S/2, S/2] maps of feat_128's injections."""
        down_256 = self.down_from_big(x)
        down_128 = self.down_4(down_256)
        down_64 = self.down_8(down_128)
        down_32 = self.down_16(down_64)
        enc1 = self.encoder_level1(self.patch_embed(down_32))
        inp2 = self.down1_2(enc1)
        enc2 = self.se_256_16(down_256, self.encoder_level2(inp2))
        inp3 = self.down2_3(enc2)
        enc3 = self.se_128_8(down_128, self.encoder_level3(inp3))
        inp4 = self.se_64_4(down_64, self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(self.latent(inp4)), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        feat_32 = self.output(dec1) + down_32
        feat_64 = self.up_se_64(inp4, self.conv_64_3_3(torch.cat([self.feat_64(feat_32), down_64], 1)))
        feat_128 = self.up_se_128(inp3, self.feat_128(feat_64, noise))  # SLE from the level inputs, as the code has it
        feat_128 = self.conv_128_3_3(torch.cat([feat_128, down_128], 1))
        feat_256 = self.up_se_256(inp2, self.feat_256(feat_128))
        return self.to_big(feat_256)


class GRIGStep(nn.Module):
    """The exported graph: one reasoning step, (I^{t-1}, M, noise) -> I^t (Eq. 4.1). I^{t-1} equals I_in outside
    the hole at every step, so I^t = I^{t-1} + Delta_t * M."""

    def __init__(self, generator: GRIGGenerator):
        super().__init__()
        self.generator = generator

    @property
    def cfg(self) -> GRIGConfig:
        return self.generator.cfg

    @property
    def noise_size(self) -> int:
        return 2 * (self.cfg.size // 2) ** 2

    def forward(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        half = self.cfg.size // 2
        maps = [n.reshape(-1, 1, half, half) for n in noise.chunk(2, dim=1)]
        delta = self.generator(torch.cat([image, mask], dim=1), maps)
        return image + delta * mask


def inpaint(step: nn.Module, image: torch.Tensor, mask: torch.Tensor, noise: list[torch.Tensor]) -> list[torch.Tensor]:
    """Alg. 1: I^0 = I_in = image * (1 - M), then one step per noise draw; returns I^1 .. I^T."""
    x, out = image * (1 - mask), []
    for n in noise:
        x = step(x, mask, n)
        out.append(x)
    return out


# ---- folds made at load ---------------------------------------------------------------------------

def fold_spectral_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`X.weight_orig`, `X.weight_u`, `X.weight_v` -> `X.weight` = W_orig / (u . W_mat v): torch's
    spectral_norm in eval mode (no power iteration; the stored vectors)."""
    out = {k: v for k, v in state.items() if not k.endswith(("weight_orig", "weight_u", "weight_v"))}
    for key in state:
        if key.endswith("weight_orig"):
            base = key[: -len("_orig")]
            w = state[key].double()
            sigma = torch.dot(state[f"{base}_u"].double(), w.reshape(w.shape[0], -1) @ state[f"{base}_v"].double())
            out[base] = (w / sigma).to(state[key].dtype)
    return out


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d (eval statistics) into the conv before it, in place: BN(conv(x) [+ s n]) =
    conv'(x) [+ s' n] with conv' = a conv, bias b, s' = a s (a per-channel noise strength); the BN
    becomes an Identity. Returns the model."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i, bn in enumerate(list(seq)):
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            noise = seq[i - 1] if isinstance(seq[i - 1], NoiseInjection) else None
            conv = seq[i - 2 if noise is not None else i - 1]
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f"batch norm {i} of {type(seq).__name__} does not follow a conv")
            a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.copy_(conv.weight * a.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * a + bn.bias)
            if noise is not None:
                noise.weight = nn.Parameter(noise.weight.reshape(-1, 1, 1) * a.reshape(-1, 1, 1))
            seq[i] = nn.Identity()
    return model


# ---- checkpoints ----------------------------------------------------------------------------------

BUFFERS = ("weight_u", "weight_v", "running_mean", "running_var", "num_batches_tracked")


def grig_config(state: dict, path, size: int = 256) -> GRIGConfig:
    """The config of a GRIG state dict (spectral norm already folded) from its tensors."""
    needed = ["down_from_big.0.weight", "patch_embed.proj.weight", "to_big.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{path}: 'g' lacks {', '.join(missing)}: not GRIG's generator (GRIG_G)")
    dim = state["patch_embed.proj.weight"].shape[0]
    levels = ["encoder_level1", "encoder_level2", "encoder_level3", "latent"]
    blocks = tuple(count_keys(state, rf"{name}\.(\d+)\.norm1\.body\.weight") for name in levels)
    heads = tuple(state[f"{name}.0.attn.temperature"].shape[0] if f"{name}.0.attn.temperature" in state else 0
                  for name in levels)
    if 0 in blocks or 0 in heads:
        raise CheckpointError(f"{path}: GRIG's Restormer stages {levels} are incomplete (blocks {blocks})")
    hidden = state["encoder_level1.0.ffn.project_in.weight"].shape[0] // 2
    expansion = 2.66 if int(dim * 2.66) == hidden else (hidden + 0.5) / dim
    return GRIGConfig(size, 2 * state["down_from_big.0.weight"].shape[0], dim, blocks,
                      count_keys(state, r"refinement\.(\d+)\.norm1\.body\.weight"), heads, expansion)


def load_grig(path: str | Path, size: int = 256) -> GRIGGenerator:
    """A GRIG `.pth`: {'g': state dict, 'g_ema': [parameters in order], 'd', 'patch_d', 'opt_*', 'iter',
    'metrics'}. As the public test.py does: load `g`, then copy `g_ema` over its parameters by position
    (buffers: batch-norm statistics and spectral-norm vectors, come from `g`); then fold both norms."""
    ckpt = read_file(path)
    g = ckpt.get("g") if isinstance(ckpt, dict) else None
    if not isinstance(g, dict):
        keys = ", ".join(sorted(map(str, ckpt))[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: no 'g' state dict (found {keys}): not a GRIG checkpoint")
    g = dict(g)
    ema = ckpt.get("g_ema")
    if ema is not None:
        params = [k for k in g if not k.endswith(BUFFERS)]
        if not isinstance(ema, (list, tuple)) or len(ema) != len(params):
            n = len(ema) if isinstance(ema, (list, tuple)) else type(ema).__name__
            raise CheckpointError(f"{path}: 'g_ema' holds {n} entries, 'g' has {len(params)} parameters")
        for key, value in zip(params, ema):
            if not isinstance(value, torch.Tensor) or value.shape != g[key].shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise CheckpointError(f"{path}: g_ema entry for {key} is {shape}, expected {tuple(g[key].shape)}")
            g[key] = value
    state = fold_spectral_norm(g)
    cfg = grig_config(state, path, size)
    model = GRIGGenerator(cfg).eval()
    load_strict(model, state, path, "GRIG generator (g)")
    return fold_batchnorm(model)


def random_grig(cfg: GRIGConfig, seed: int) -> GRIGGenerator:
    """Seeded random weights (untrained), batch-norm statistics, temperatures and noise strengths randomised
    so a parity check sees every parameter; folded like a loaded model."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(GRIGGenerator(cfg).eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("body.bias") or (name.endswith(".bias") and p.ndim == 1 and "norm" in name):
                p.normal_(0, 0.1)
        for m in model.modules():
            if isinstance(m, NoiseInjection):
                m.weight.normal_(0, 0.1)
    return fold_batchnorm(model)
