"""EXE-GAN: facial inpainting guided by an exemplar (seed 001, thesis ch. 5; public code "EXE-GAN").

    c, F^en = G_en(cat(I_in, M - 0.5)),  I_in = I * (1 - M)     masked-image encoder, global code c
    w~      = mapping(z), truncated toward w_avg by psi          stochastic style
    w-hat_i = E(I_exe)_i for i in 4 .. 4+K-1, else w~            exemplar codes replace layers (Eq. 5.1)
    I_pred  = G_de(F^en, v_i = A_i([w-hat_i, c]))                multi-style modulation (Eq. 5.2)
    I_out   = I_in * (1 - M) + I_pred * M                        (Eq. 5.3)

M is 1 where the image is filled. The generator follows `models/exe_gan_nets.py: Generator` of the
public code parameter for parameter (rosinality names: `style.*`, `conv1`, `convs.*`, `to_rgbs.*`,
`noises.*`, `down_from_big`, `encoder_convs.*`, `final_layer`, `final_linear`, `final_transfer`),
so `EXE_GAN_model_256.pt` / `_512.pt` (`g_ema`) load as they are. Its layers and decoder are the VSP
restoration net's (rosinality.py), with plain conv layers in the encoder.
The exemplar encoder is pSp's `GradualStyleEncoder` (e4e.py) from `psp_ffhq_encode.pt`, heads 4..4+K-1.

Where the public code draws random numbers (z, a second z crossed over with probability 0.5, fresh
noise maps, a new 4096-sample mean latent per truncated call), the graph takes inputs: z, one
`noise` vector for the 2 log2(R) - 3 noise maps, psi; w_avg is estimated once at export from
10 000 seeded z. The crossover only moves layers 0-3, which one z already covers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoints import CheckpointError, count_keys, load_strict, read_file, strip_prefix
from .code_diffuser import PixelNorm
from .config import JSONConfig
from .e4e import E4EConfig, GradualStyleEncoder
from .psp import ir_se_units
from .random_init import randomize_batchnorm, randomize_noise_and_biases, scale_modulation
from .rosinality import ConvLayer, StyledConv, ToRGB, style_decode
from .stylegan2 import FullyConnected, StyleGAN2Config

PSP_START = 4  # the first layer exemplar codes replace: phi = [0, 0, 0, 0, 1, ...] (Sec. 5.2.2; psp_start_latent)


@dataclass(frozen=True)
class EXEConfig(JSONConfig):
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=lambda: StyleGAN2Config.rosinality_channels(256))
    psp_start: int = PSP_START

    def __post_init__(self):
        log = math.log2(self.size) if self.size > 0 else 0
        if log != int(log) or self.size < 32:
            raise ValueError(f"EXE-GAN's size must be a power of two >= 32, got {self.size}")
        missing = [2 ** i for i in range(2, int(log) + 1) if 2 ** i not in self.channels]
        if missing:
            raise ValueError(f"channel count missing for resolutions {missing}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        return 2 * (self.log_size - 2) + 1

    @property
    def num_exemplar_codes(self) -> int:
        """K: the layers the exemplar codes replace, psp_start to the last (10 at 256, 12 at 512)."""
        return self.n_latent - self.psp_start

    @property
    def modulation_dim(self) -> int:
        """[w_i, c]: the style plus the global code (2 x channels at 4x4); 1536 in the public models."""
        return self.style_dim + 2 * self.channels[4]


class GlobalCodeEncoder:
    """G_en, the encoder half shared by EXE-GAN's generator and FACEMUG's refinement net (a mixin of their modules,
    so the layers keep EXE-GAN's checkpoint names): a 1x1 conv in; per resolution R .. 8 a 3x3 conv (the skip
    feature) and a blurred stride-2 conv; a 3x3 conv at 4x4; the global code c = FC(F_4x4) (dropout, off in eval);
    FC(c) added back to the 4x4 feature."""

    def build_encoder(self, cin: int, channels: dict[int, int], size: int) -> None:
        self.down_from_big = ConvLayer(cin, channels[size], 1)
        self.encoder_convs = nn.ModuleList()
        cin = channels[size]
        for i in range(int(math.log2(size)), 2, -1):
            tmp, cout = channels[2 ** i], channels[2 ** (i - 1)]
            self.encoder_convs.append(ConvLayer(cin, tmp, 3))
            self.encoder_convs.append(ConvLayer(tmp, cout, 3, downsample=True))
            cin = cout
        self.final_layer = ConvLayer(cin, channels[4], 3)
        self.final_linear = nn.Sequential(FullyConnected(channels[4] * 16, channels[4] * 2, activation=True),
                                          nn.Dropout(0.5))
        self.final_transfer = FullyConnected(channels[4] * 2, channels[4] * 16, activation=True)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, cin, R, R] -> (c [B, 2 ch4], features at 4, 8, ..., R)."""
        out = self.down_from_big(x)
        features = []
        for ii in range(0, len(self.encoder_convs), 2):
            out = self.encoder_convs[ii](out)
            features.append(out)
            out = self.encoder_convs[ii + 1](out)
        out = self.final_layer(out)
        c = self.final_linear(out.flatten(1))
        features.append(out + self.final_transfer(c).reshape(out.shape))
        return c, features[::-1]


class EXEGenerator(nn.Module, GlobalCodeEncoder):
    """`Generator` of the public code: the masked-image encoder G_en and the multi-style decoder G_de."""

    def __init__(self, cfg: EXEConfig):
        super().__init__()
        self.cfg = cfg
        ch, sd, md = cfg.channels, cfg.style_dim, cfg.modulation_dim
        self.conv1 = StyledConv(ch[4], ch[4], 3, md)
        self.to_rgb1 = ToRGB(ch[4], md, upsample=False)
        self.style = nn.Sequential(PixelNorm(), *[FullyConnected(sd, sd, lr_multiplier=0.01, activation=True)
                                                  for _ in range(cfg.n_mlp)])
        self.noises = nn.Module()  # the public code's buffers; the graph takes noise as an input instead
        for i in range(cfg.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, r, r))
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        cin = ch[4]
        for i in range(3, cfg.log_size + 1):
            cout = ch[2 ** i]
            self.convs.append(StyledConv(cin, cout, 3, md, upsample=True))
            self.convs.append(StyledConv(cout, cout, 3, md))
            self.to_rgbs.append(ToRGB(cout, md))
            cin = cout
        self.build_encoder(4, ch, cfg.size)  # G_en on (I_in, M - 0.5)

    def forward(self, gin: torch.Tensor, latent: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """gin [B, 4, R, R] = (I_in, M - 0.5); latent [B, n_latent, style_dim] (w-hat) -> I_pred."""
        c, features = self.encode(gin)
        return style_decode(self, features, latent, c, noise)  # Eq. 5.2


class EXEInpaintGraph(nn.Module):
    """The exported generator graph: (image, mask, codes, z, psi, noise) -> inpainted (Eq. 5.1-5.3)."""

    def __init__(self, generator: EXEGenerator, w_avg: torch.Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("w_avg", w_avg.reshape(-1).clone())

    @property
    def cfg(self) -> EXEConfig:
        return self.generator.cfg

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        return [(1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.cfg.num_layers)]

    @property
    def noise_size(self) -> int:
        return sum(math.prod(s) for s in self.noise_shapes())

    def forward(self, image, mask, codes, z, psi, noise):
        """image [B, 3, R, R] in [-1, 1]; mask [B, 1, R, R], 1 = fill; codes [B, K, style_dim] from the exemplar
        encoder; z [B, style_dim]; psi [B]; noise [B, noise_size] ~ N(0, 1)."""
        cfg = self.cfg
        w = self.generator.style(z)
        w = self.w_avg + psi.reshape(-1, 1) * (w - self.w_avg)  # truncation; the exemplar codes are not truncated
        n_tail = cfg.n_latent - cfg.psp_start - cfg.num_exemplar_codes
        latent = torch.cat([w.unsqueeze(1).expand(-1, cfg.psp_start, -1), codes,
                            w.unsqueeze(1).expand(-1, n_tail, -1)], dim=1)  # Eq. 5.1
        maps, at = [], 0
        for shape in self.noise_shapes():
            n = math.prod(shape)
            maps.append(noise[:, at: at + n].reshape(-1, *shape))
            at += n
        image_in = image * (1 - mask)
        pred = self.generator(torch.cat([image_in, mask - 0.5], dim=1), latent, maps)
        return image_in + pred * mask  # Eq. 5.3 (I_in is 0 inside the hole)


# ---- checkpoints ----------------------------------------------------------------------------------

def exe_config(state: dict, path) -> EXEConfig:
    """The generator's config from its tensors (the public code fixes channels by size; read them anyway)."""
    n_rgb = count_keys(state, r"to_rgbs\.(\d+)\.conv\.weight")
    needed = ["conv1.conv.weight", "down_from_big.0.weight", "final_linear.0.weight", "style.1.weight"]
    if not n_rgb or any(k not in state for k in needed):
        missing = [k for k in needed if k not in state] or ["to_rgbs.*"]
        raise CheckpointError(f"{path}: 'g_ema' lacks {', '.join(missing)}: not EXE-GAN's generator")
    channels = {4: state["conv1.conv.weight"].shape[1]}
    for j in range(n_rgb):
        channels[2 ** (j + 3)] = state[f"convs.{2 * j}.conv.weight"].shape[1]
    n_mlp = count_keys(state, r"style\.(\d+)\.weight")
    return EXEConfig(2 ** (n_rgb + 2), state["style.1.weight"].shape[0], n_mlp, channels)


def load_exe_generator(path: str | Path) -> tuple[EXEGenerator, dict]:
    """`EXE_GAN_model_256.pt` / `_512.pt`: {'g_ema': state dict, 'args': Namespace, 'best_fid': numpy float, ...};
    inference loads `g_ema` strictly, as the public `EXE_GAN` class does."""
    ckpt = read_file(path)
    state = ckpt.get("g_ema") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        keys = ", ".join(sorted(map(str, ckpt))[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: no 'g_ema' generator (found {keys}): not an EXE-GAN checkpoint "
                              "(EXE_GAN_model_256.pt holds {'g_ema': ..., 'g': ..., 'd': ...})")
    args = ckpt.get("args")
    psp_start = getattr(args, "psp_start_latent", PSP_START) if args is not None else PSP_START
    cfg = exe_config(state, path)
    cfg = EXEConfig(cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channels, int(psp_start))
    generator = EXEGenerator(cfg).eval()
    load_strict(generator, state, path, "EXE-GAN generator (g_ema)")
    return generator, {"best_fid": ckpt.get("best_fid"), "iter": ckpt.get("iter")}


def load_psp_gradual(path: str | Path, heads: range) -> GradualStyleEncoder:
    """`psp_ffhq_encode.pt`: {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict, 'latent_avg' [18, 512]};
    the encoder is pSp's GradualStyleEncoder, whose heads and input size (256) are read from its tensors."""
    ckpt = read_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a pSp checkpoint dict, got {type(ckpt).__name__}")
    opts = ckpt.get("opts")
    opts = vars(opts) if hasattr(opts, "__dict__") else opts if isinstance(opts, dict) else {}
    kind = opts.get("encoder_type", "GradualStyleEncoder")
    if kind != "GradualStyleEncoder" or opts.get("learn_in_w"):
        raise CheckpointError(f"{path}: pSp encoder_type {kind!r}{' learning in W' if opts.get('learn_in_w') else ''}; "
                              "EXE-GAN's exemplar encoder is the W+ 'GradualStyleEncoder' (psp_ffhq_encode.pt)")
    enc = strip_prefix(ckpt.get("state_dict", ckpt), "encoder.")
    n_styles = count_keys(enc, r"styles\.(\d+)\.linear\.weight")
    if not n_styles:
        raise CheckpointError(f"{path}: no 'encoder.styles.*': not a pSp W+ encoder (psp_ffhq_encode.pt)")
    if heads.stop > n_styles:
        raise CheckpointError(f"{path}: {n_styles} style heads; the generator needs codes "
                              f"{heads.start}..{heads.stop - 1}")
    # the last head reads the pyramid level at input / 4 (heads >= 7), / 8 (>= 3) or / 16, down to 1x1
    last = n_styles - 1
    convs = count_keys(enc, rf"styles\.{last}\.convs\.(\d+)\.weight")
    input_size = (4 if last >= 7 else 8 if last >= 3 else 16) * 2 ** convs
    psp = GradualStyleEncoder(E4EConfig(ir_se_units(enc, path), n_styles, 512, input_size), heads).eval()
    if opts.get("start_from_latent_avg", True):
        avg = ckpt.get("latent_avg")
        if not isinstance(avg, torch.Tensor) or avg.numel() % 512 or avg.numel() // 512 < n_styles:
            raise CheckpointError(f"{path}: opts.start_from_latent_avg is set but 'latent_avg' is missing or not "
                                  f"[{n_styles}, 512]")
        enc["latent_avg"] = avg.reshape(-1, 512)[:n_styles].float().clone()
    else:
        enc["latent_avg"] = torch.zeros(n_styles, 512)
    load_strict(psp, enc, path, "pSp GradualStyleEncoder (encoder.*)")
    return psp


@dataclass
class EXEModel:
    """What the export needs: the generator graph and the exemplar encoder, and where they came from."""
    graph: EXEInpaintGraph
    exemplar: GradualStyleEncoder  # exemplar [B, 3, R, R] -> codes [B, K, 512] (heads psp_start .. + K - 1)
    description: str
    trained: bool
    seed: int | None = None
    psp_units: tuple[int, ...] = (3, 4, 14, 3)
    psp_input: int = 256

    @property
    def resolution(self) -> int:
        return self.graph.cfg.size


def load_exe_gan(exe_ckpt: str | Path, psp_ckpt: str | Path, w_avg_samples: int = 10000) -> EXEModel:
    generator, _ = load_exe_generator(exe_ckpt)
    cfg = generator.cfg
    psp = load_psp_gradual(psp_ckpt, range(cfg.psp_start, cfg.psp_start + cfg.num_exemplar_codes))
    if psp.cfg.w_dim != cfg.style_dim:
        raise CheckpointError(f"{psp_ckpt}: {psp.cfg.w_dim}-d codes; {exe_ckpt} takes {cfg.style_dim}-d styles")
    graph = EXEInpaintGraph(generator, estimate_w_avg(generator, w_avg_samples)).eval()
    return EXEModel(graph, psp, f"{Path(exe_ckpt).name} + {Path(psp_ckpt).name}", True,
                    psp_units=psp.cfg.units, psp_input=psp.cfg.input_size)


@torch.no_grad()
def estimate_w_avg(generator: EXEGenerator, samples: int, seed: int = 0) -> torch.Tensor:
    """Mean of mapping(z) over seeded z (the public code's `mean_latent`, drawn once instead of per call)."""
    z = torch.randn(samples, generator.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    return generator.style(z).mean(0)


def random_exe_gan(cfg: EXEConfig, seed: int, psp_units: tuple[int, ...] = (3, 4, 14, 3), psp_input: int = 256,
                   w_avg_samples: int = 1000) -> EXEModel:
    """Seeded random weights (untrained): noise strengths, biases and BatchNorm statistics randomised so a
    parity check sees every parameter; modulation scaled down so a deep random net stays well conditioned."""
    torch.manual_seed(seed)
    generator = EXEGenerator(cfg).eval()
    n_styles = max(cfg.n_latent, cfg.psp_start + cfg.num_exemplar_codes)
    psp = randomize_batchnorm(GradualStyleEncoder(E4EConfig(psp_units, n_styles, 512, psp_input),
                                                  range(cfg.psp_start, cfg.psp_start + cfg.num_exemplar_codes)).eval())
    randomize_noise_and_biases(generator)
    scale_modulation(generator, 0.1)
    with torch.no_grad():
        for block in psp.styles:
            block.linear.weight.mul_(0.1)
        psp.latent_avg.normal_(0, 0.1)
    graph = EXEInpaintGraph(generator, estimate_w_avg(generator, w_avg_samples, seed)).eval()
    return EXEModel(graph, psp, f"random-init seed {seed}", False, seed, psp_units, psp_input)
