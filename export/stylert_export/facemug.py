"""FACEMUG: multimodal facial editing in a masked region (seed 001, thesis ch. 6), an untrained architecture ready
for weights. Its authors published no network code and no weights; only the training code of its style encoder
exists (LonglongaaaGo/e4e_trainer). Everything else is built from the thesis.

    w^p   = E(X),  X = (I_m, sketch, semantic one-hot, colour)     style encoder, 26 channels (Sec. 6.2.6)
    w^e   = E(I_ex, 0, 0, 0);  w^z = F(z);  w-bar = a w^e + (1 - a) w^z                 (Eq. 6.20)
    w-hat = H(w^p - w-bar, w-bar) + w-bar                          latent warping (Eq. 6.2, 6.15)
    w*    = w-hat + eps w^d                                        attribute step (Eq. 6.3)
    F^a   = A(X)                                                   multimodal aggregation (Eq. 6.16-6.17)
    F^s   = S(w*)                                                  the StyleGAN2 feature bank
    I_out = I_m (1 - M) + G(F^a, w*, F^s) M                        refinement auto-encoder (Eq. 6.6-6.8, 6.1)

M is 1 where the face is edited. The choices the thesis leaves open (CHOICES below, one line each) are written
down in one place; the README's edit section shows the same table. Text guidance (Eq. 6.4-6.5) needs CLIP and
100-300 gradient steps per edit: it is not an inference graph and is left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .code_diffuser import TACCBlock
from .config import JSONConfig
from .e4e import E4EConfig, Encoder4Editing
from .exe_gan import GlobalCodeEncoder
from .psp import IR_SE_50
from .random_init import random_generator, randomize_batchnorm, randomize_noise_and_biases, scale_modulation
from .rosinality import EqualConv2d, ModulatedConv2d, StyledConv
from .stylegan2 import Generator, StyleGAN2Config, bank_features

MODALITIES = (("image", 4), ("sketch", 1), ("semantic", 19), ("color", 3))  # A's inputs: (I_m, M), then guidance
ENCODER_CHANNELS = 3 + 1 + 19 + 3  # e4e_trainer's gin: image, sketch, semantic one-hot, colour (its channel order)
SEMANTIC_CLASSES = 19  # CelebAMask-HQ's face-parsing classes, as the trainer's one-hot semantic maps
GUIDANCE = ("sketch", "semantic", "color", "exemplar")  # the `presence` flags, in this order

CHOICES = [
    ("style encoder", "e4e Encoder4Editing, IR-SE-50, 26 input channels ordered image 3, sketch 1, semantic 19, "
                      "colour 3", "as the authors' e4e_trainer builds and feeds it (the thesis lists 3/1/3/19)"),
    ("codes", "the feature bank's num_ws (18 for the FFHQ 1024 config-F StyleGAN2 the trainer loads)",
     "e4e predicts one code per bank layer"),
    ("mask in the encoder", "the image slot holds I_m = I (1 - M)", "e4e_trainer masks the image it encodes"),
    ("mask in the aggregation", "the image modality is (I_m, M), 4 channels", "I_m alone cannot tell a hole from black pixels"),
    ("absent guidance", "zeros, and its presence flag 0 (which also zeros any input given)",
     "Alg. 5 trains with absent modalities as zero tensors; the aggregation's softmax still sees them, as in training"),
    ("c_a", "64 channels", "the 64-channel level of config F at 256, a width the refinement encoder starts from"),
    ("residual blocks in the aggregation", "3x3 conv, LeakyReLU 0.2, 3x3 conv, plus a 1x1 projection; the shared score block "
                             "ends in one channel", "the smallest block Fig. 6.16 allows"),
    ("latent warping H", "4 code-to-code blocks = VSP's TACC block with the residual codes as its condition",
     "Eq. 6.15 is Eq. 3.4 without the time step; its MLPs are the TACC gate and bias MLPs "
     "(FC, LayerNorm, scaled LeakyReLU, FC), width 512"),
    ("refinement encoder G_en", "EXE-GAN's encoder on F^a (conv pyramid, c = 2 x 512)",
     "Eq. 6.6's c in R^{512x2} is EXE-GAN's global code"),
    ("decoder at 256", "per level 8..256 an up style conv (w*_i), a style fusion block, a style conv (w*_i+1): "
                       "codes 1..12; 4x4 is Conv(F^en); codes 0 and 13..17 drive only the bank",
     "Eq. 6.6 with t = 12 at 256; the bank runs to 256 only"),
    ("style fusion block", "one modulated conv gives gamma and beta (2C channels, w*_{i+1}), one the gate; "
                           "no noise, no activation before the sigmoid / LeakyReLU of Eq. 6.7-6.8",
     "Eq. 6.7 writes SC twice on the same input; one conv with two halves is the same map"),
    ("codes at inference", "w* feeds both the bank and the decoder (Eq. 6.1)",
     "Alg. 5 trains the bank on w^p and the decoder on w-bar; Eq. 6.1 is the inference rule"),
    ("exemplar weight a", "a graph input: 1 with an exemplar, 0 without (w-bar = w^z)", "Eq. 6.20's alpha"),
    ("output", "a 1x1 conv of the last decoder feature, no tanh", "Eq. 6.6: I_out = Conv(F^de_t)"),
    ("text guidance", "left out", "Eq. 6.4-6.5 optimise w* with CLIP for 100-300 steps: not a graph"),
]


@dataclass(frozen=True)
class FACEMUGConfig(JSONConfig):
    size: int = 256  # the editing resolution (Sec. 6.3.1)
    bank_resolution: int = 1024  # the pretrained StyleGAN2 feature bank (FFHQ, config F)
    encoder_units: tuple[int, ...] = IR_SE_50
    encoder_input: int = 256
    aggregation_channels: int = 64  # c_a
    warp_blocks: int = 4
    channels: dict[int, int] = field(default_factory=lambda: StyleGAN2Config.rosinality_channels(1024))  # last, as in its JSON

    def __post_init__(self):
        if self.bank_resolution < self.size:
            raise ValueError(f"the feature bank ({self.bank_resolution}) must reach the editing size ({self.size})")
        missing = [2 ** i for i in range(2, int(math.log2(self.bank_resolution)) + 1) if 2 ** i not in self.channels]
        if missing:
            raise ValueError(f"channel count missing for resolutions {missing}")

    @property
    def levels(self) -> list[int]:
        return [2 ** i for i in range(3, int(math.log2(self.size)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.bank_resolution)) - 2


class LatentWarping(nn.Module):
    """H (Eq. 6.2, 6.15): Delta_0 = w^so; Delta_i = block_i(Delta_{i-1}, w^r); returns Delta_4 + w^so."""

    def __init__(self, dim: int = 512, blocks: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList([TACCBlock(dim, cond_dim=dim) for _ in range(blocks)])

    def forward(self, residual: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        delta = source
        for block in self.blocks:
            delta = block(delta, residual)
        return delta + source


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv2(F.leaky_relu(self.conv1(x), 0.2)) + self.skip(x)


class MultimodalAggregation(nn.Module):
    """A (Eq. 6.16-6.17): a residual block per modality to c_a channels, a shared residual block scoring each
    pixel of each, a softmax over the modalities per pixel, and the score-weighted sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.extract = nn.ModuleDict({name: ResidualBlock(cin, channels) for name, cin in MODALITIES})
        self.score = ResidualBlock(channels, 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Kept in rank-4 tensors (one [B, C, H, W] per modality), which phone accelerators take."""
        features = [self.extract[name](inputs[name]) for name, _ in MODALITIES]
        weights = torch.softmax(torch.cat([self.score(f) for f in features], dim=1), dim=1)  # [B, n, H, W]
        return sum(f * weights[:, i:i + 1] for i, f in enumerate(features))  # Eq. 6.16, 6.17


class StyleFusion(nn.Module):
    """Eq. 6.7-6.8: F-hat = (sigmoid(gamma) + 1) F^en + lrelu(beta), (gamma, beta) = SC(F^de, w*_{i+1});
    F^m = sigmoid(SC(F^s, w*_{i+1})); F^g = F^m F^s + (1 - F^m) F-hat."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.film = ModulatedConv2d(channels, 2 * channels, 3, style_dim)
        self.film_bias = nn.Parameter(torch.zeros(1, 2 * channels, 1, 1))
        self.gate = ModulatedConv2d(channels, channels, 3, style_dim)
        self.gate_bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, decoded, encoded, prior, style):
        gamma, beta = (self.film(decoded, style) + self.film_bias).chunk(2, dim=1)
        fused = (torch.sigmoid(gamma) + 1) * encoded + F.leaky_relu(beta, 0.2)  # Eq. 6.7
        gate = torch.sigmoid(self.gate(prior, style) + self.gate_bias)
        return gate * prior + (1 - gate) * fused  # Eq. 6.8


class RefinementNet(nn.Module, GlobalCodeEncoder):
    """G = (G_en, G_de): EXE-GAN's encoder on F^a; a decoder of style convs on [w*_i, c] with a style fusion block
    after every upsampling (Eq. 6.6), and a 1x1 conv out."""

    def __init__(self, cfg: FACEMUGConfig):
        super().__init__()
        ch = cfg.channels
        sd = 512
        self.build_encoder(cfg.aggregation_channels, ch, cfg.size)
        self.conv_in = EqualConv2d(ch[4], ch[4], 3, padding=1)  # F^de_0 = Conv(F^en_t)
        self.ups, self.fusions, self.convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = ch[4]
        for r in cfg.levels:
            self.ups.append(StyledConv(cin, ch[r], 3, sd + 2 * ch[4], upsample=True))
            self.fusions.append(StyleFusion(ch[r], sd))
            self.convs.append(StyledConv(ch[r], ch[r], 3, sd + 2 * ch[4]))
            cin = ch[r]
        self.to_rgb = EqualConv2d(ch[cfg.size], 3, 1)

    def forward(self, aggregated, codes, priors, noise):
        """aggregated F^a [B, c_a, R, R]; codes w* [B, n, 512]; priors F^s at 4 .. R; noise: two maps per level."""
        c, encoded = self.encode(aggregated)
        x = self.conv_in(encoded[0])
        for j in range(len(self.ups)):
            i = 2 * j + 1
            x = self.ups[j](x, torch.cat([codes[:, i], c], 1), noise[2 * j])  # odd i: UP(SC(F^de, [w*_i, c]))
            x = self.fusions[j](x, encoded[j + 1], priors[j + 1], codes[:, i + 1])
            x = self.convs[j](x, torch.cat([codes[:, i + 1], c], 1), noise[2 * j + 1])  # even i: SC(F^g, ...)
        return self.to_rgb(x)


class FACEMUG(nn.Module):
    """The exported graph: (image, mask, guidance, presence, exemplar, z, alpha, direction, strength, noise) -> edited."""

    def __init__(self, cfg: FACEMUGConfig, bank: Generator):
        super().__init__()
        self.cfg = cfg
        if bank.num_ws != cfg.num_ws or bank.cfg.resolution != cfg.bank_resolution:
            raise ValueError(f"the feature bank ({bank.cfg.resolution}px, {bank.num_ws} ws) does not fit the config")
        self.encoder = Encoder4Editing(E4EConfig(cfg.encoder_units, cfg.num_ws, 512, cfg.encoder_input,
                                                 ENCODER_CHANNELS))
        self.bank = bank
        self.warp = LatentWarping(512, cfg.warp_blocks)
        self.aggregation = MultimodalAggregation(cfg.aggregation_channels)
        self.refine = RefinementNet(cfg)

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """The bank's noise maps (as bank_features uses them), then two per decoder level."""
        bank = [4] + [r for r in self.cfg.levels for _ in range(2)][:-1]
        decoder = [r for r in self.cfg.levels for _ in range(2)]
        return [(1, r, r) for r in bank + decoder]

    @property
    def noise_size(self) -> int:
        return sum(math.prod(s) for s in self.noise_shapes())

    def forward(self, image, mask, sketch, semantic, color, presence, exemplar, z, alpha, direction, strength, noise):
        """image, exemplar [B, 3, R, R] in [-1, 1]; mask [B, 1, R, R] (1 = edit); sketch [B, 1, R, R] (strokes 1);
        semantic [B, 19, R, R] one-hot; color [B, 3, R, R] ([-1, 1], 0 where no colour); presence [B, 4] (sketch,
        semantic, color, exemplar); z [B, 512]; alpha [B] (exemplar weight); direction [B, n, 512]; strength [B];
        noise [B, noise_size] ~ N(0, 1)."""
        flags = [presence[:, k].reshape(-1, 1, 1, 1) for k in range(len(GUIDANCE))]
        image_in = image * (1 - mask)
        guides = {"sketch": sketch * flags[0], "semantic": semantic * flags[1], "color": color * flags[2]}
        w_p = self.encoder(torch.cat([image_in, guides["sketch"], guides["semantic"], guides["color"]], 1))
        blank = torch.zeros_like(torch.cat([guides["sketch"], guides["semantic"], guides["color"]], 1))
        w_e = self.encoder(torch.cat([exemplar * flags[3], blank], 1))
        w_z = self.bank.mapping.embed(z).unsqueeze(1).expand(-1, self.cfg.num_ws, -1)
        a = (alpha * presence[:, 3]).reshape(-1, 1, 1)
        w_bar = a * w_e + (1 - a) * w_z  # Eq. 6.20
        w_hat = self.warp(w_p - w_bar, w_bar)  # Eq. 6.2
        w_star = w_hat + strength.reshape(-1, 1, 1) * direction  # Eq. 6.3
        maps, at = [], 0
        for shape in self.noise_shapes():
            n = math.prod(shape)
            maps.append(noise[:, at: at + n].reshape(-1, *shape))
            at += n
        levels = len(self.cfg.levels)
        priors = bank_features(self.bank, w_star, maps[:2 * levels], self.cfg.size)
        aggregated = self.aggregation({"image": torch.cat([image_in, mask], 1), **guides})
        pred = self.refine(aggregated, w_star, priors, maps[2 * levels:])
        return image_in + pred * mask  # Eq. 6.1


def random_facemug(cfg: FACEMUGConfig, seed: int) -> FACEMUG:
    """Seeded random weights everywhere (untrained), kept well conditioned like the VSP restorer's random init:
    e4e deltas widened, each warping block's bias outweighing its attention, modulation scaled down."""
    bank_cfg = StyleGAN2Config(resolution=cfg.bank_resolution, channels=dict(cfg.channels), w_dim=512, z_dim=512,
                               conv_clamp=None, demod_weight_gain=True)
    bank = random_generator(bank_cfg, seed)
    torch.manual_seed(seed + 1)
    model = randomize_batchnorm(FACEMUG(cfg, bank).eval())
    randomize_noise_and_biases(model)
    with torch.no_grad():
        model.encoder.latent_avg.copy_(bank.mapping.w_avg.expand_as(model.encoder.latent_avg))
        for block in model.encoder.styles:
            block.linear.weight.mul_(30)
        for block in model.warp.blocks:
            block.beta_[3].weight.mul_(5)
            block.beta_[3].bias.mul_(5)
            block.gamma_[3].bias.fill_(-4.0)
    scale_modulation(model.refine, 0.1)
    return model
