"""QC-StyleGAN (seed 004): a StyleGAN2-ADA generator G(w, q) whose quality code q in R^16 adds
degradations; q = 0 gives the sharp image, so restore(x) = G(E_w(x), q = 0).

Layout of the public implementation (VinAIResearch/QC-StyleGAN, NVlabs naming):
- the last two synthesis blocks' conv1 is widened from C to C + q_dim * L output channels
  (L = 16): the first C are the features, the rest are r1 = c(f) of Eq. 7;
- `convq.0..2`: the projection pi of Eq. 9, three bias-free 1x1 convs (ReLU, ReLU, linear);
- r2 = sum_i q_i r1^(i) (Eq. 8), x = x_C + pi(r2) feeds toRGB and the next block.
pi has no bias and ReLU is positively homogeneous, so DB(f, 0) = 0 (Eq. 6) and
DB(f, k q) = k DB(f, q) for k >= 0 (Eq. 10). With q fixed at 0 the branch can be dropped and
conv1 cut back to its first C channels (each output channel is demodulated on its own): the
sharp-only graph.

Inversion (the paper's revised stage 1, pSp-style): two ResNet-34 encoders on a 256x256 input
for w (512) and q (16), plus `latent_avg`, as the public `DoubleEncoder` (torchvision BasicBlocks,
a 7x7 stride-2 stem with PReLU and no max-pool, global average pool, EqualLinear).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import CheckpointError, fill_generator, load_strict, read_file, read_generator_state, strip_prefix
from .random_init import random_generator, randomize_batchnorm
from .stylegan2 import FullyConnected, Generator, StyleGAN2Config, SynthesisBlock, SynthesisNetwork

L_DIM = 16  # channels per principal component in the public code ("n_dim")
ENCODER_SIZE = 256


class Conv1x1(nn.Module):
    """Equalized 1x1 conv without bias; `relu` applies ReLU x sqrt(2) (NVlabs bias_act 'relu')."""

    def __init__(self, cin: int, cout: int, relu: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.weight_gain, self.relu = 1 / math.sqrt(cin), relu

    def forward(self, x):
        x = F.conv2d(x, self.weight * self.weight_gain)
        return F.relu(x) * math.sqrt(2) if self.relu else x


class DegradBlock(nn.Sequential):
    """pi of Eq. 9 as `convq.0..2`; forward(r1, q) applies Eq. 8 then pi."""

    def __init__(self, channels: int, q_dim: int):
        super().__init__(Conv1x1(L_DIM, channels, True), Conv1x1(channels, channels, True), Conv1x1(channels, channels, False))
        self.q_dim = q_dim

    def forward(self, r1: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        b, _, h, w = r1.shape
        r2 = (r1.reshape(b, self.q_dim, L_DIM, h, w) * q[:, :, None, None, None]).sum(dim=1)  # Eq. 8
        for conv in self:
            r2 = conv(r2)
        return r2  # Eq. 9


class QCSynthesisBlock(SynthesisBlock):
    def __init__(self, res: int, cfg: StyleGAN2Config, q_dim: int):
        super().__init__(res, cfg)
        out = cfg.channels[res]
        self.conv1 = type(self.conv1)(out, out + q_dim * L_DIM, cfg.w_dim, res, up=1, cfg=cfg)
        self.convq = DegradBlock(out, q_dim)
        self.out_channels = out

    def features(self, x, ws, noise_mode, q=None):
        """q None: the sharp-only path (conv1 cut to C channels, no DegradBlock), equal to q = 0."""
        if self.resolution > 4:
            x = self.conv0(x, ws[:, 0], self.conv0.noise_const if noise_mode == "const" else None)
        noise = self.conv1.noise_const if noise_mode == "const" else None
        if q is None:
            return self.conv1(x, ws[:, self.num_conv - 1], noise, out_channels=self.out_channels)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise)
        return x[:, : self.out_channels] + self.convq(x[:, self.out_channels:], q)


class QCSynthesisNetwork(SynthesisNetwork):
    def __init__(self, cfg: StyleGAN2Config, q_dim: int):
        self.q_dim = q_dim
        super().__init__(cfg)

    def make_block(self, res, cfg):
        return QCSynthesisBlock(res, cfg, self.q_dim) if res >= cfg.resolution // 2 else SynthesisBlock(res, cfg)


class QCGenerator(Generator):
    """G(ws, q): q [B, q_dim] or None for the sharp-only path."""

    def __init__(self, cfg: StyleGAN2Config, q_dim: int = 16):
        super().__init__(cfg)
        self.q_dim = q_dim
        self.synthesis = QCSynthesisNetwork(cfg, q_dim)

    def forward(self, ws, q=None, noise_mode: str = "const"):
        return self.synthesis(ws, noise_mode=noise_mode, q=q).float()


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (eval-mode BatchNorm), same parameter names."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet34Encoder(nn.Module):
    """pSp's ResNetEncoderUsingLastLayerIntoW: ResNet-34 trunk -> global average pool -> EqualLinear(512, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.PReLU(64)
        blocks, cin = [], 64
        for cout, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*blocks)
        self.linear = FullyConnected(512, dim)

    def forward(self, x):
        x = self.body(self.relu(self.bn1(self.conv1(x))))
        return self.linear(x.mean(dim=[2, 3]))


class DoubleEncoder(nn.Module):
    def __init__(self, w_dim: int, q_dim: int):
        super().__init__()
        self.content_encoder = ResNet34Encoder(w_dim)
        self.quality_encoder = ResNet34Encoder(q_dim)


class QCRestorer(nn.Module):
    """image [B, 3, R, R] in [-1, 1] -> (w, q) by the encoders -> G(w broadcast to W+, q)."""

    def __init__(self, cfg: StyleGAN2Config, q_dim: int = 16):
        super().__init__()
        self.encoder = DoubleEncoder(cfg.w_dim, q_dim)
        self.decoder = QCGenerator(cfg, q_dim)
        self.register_buffer("latent_avg", torch.zeros(cfg.w_dim + q_dim))
        self.w_dim, self.q_dim = cfg.w_dim, q_dim

    def encode(self, image: torch.Tensor, with_quality: bool = True):
        """(w [B, w_dim], q [B, q_dim] or None): pSp 'learn_in_w' codes + latent_avg, from a 256x256 view."""
        size = image.shape[-1]
        x = image if size == ENCODER_SIZE else F.interpolate(image, size=(ENCODER_SIZE, ENCODER_SIZE), mode="area"
                                                             if size > ENCODER_SIZE else "bilinear", align_corners=None)
        w = self.encoder.content_encoder(x) + self.latent_avg[: self.w_dim]
        q = self.encoder.quality_encoder(x) + self.latent_avg[self.w_dim:] if with_quality else None
        return w, q

    def synthesize(self, w: torch.Tensor, q: torch.Tensor | None):
        return self.decoder(w.unsqueeze(1).expand(-1, self.decoder.num_ws, -1), q)


class SharpRestoreGraph(nn.Module):
    """Exported restore graph: image, fidelity -> restored = (1 - f) G(E_w(x), 0) + f x."""

    def __init__(self, model: QCRestorer):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, fidelity: torch.Tensor):
        w, _ = self.model.encode(image, with_quality=False)
        restored = self.model.synthesize(w, None)
        f = fidelity.reshape(-1, 1, 1, 1)
        return (1 - f) * restored + f * image


class QualityRestoreGraph(nn.Module):
    """Exported with --with-quality: image, q, fidelity -> (G(E_w(x), q) blended, E_q(x)).

    q = 0 gives the restored image (equal to the sharp-only graph); q = E_q(x) re-synthesises the
    input's degradation; any other q applies that degradation (degradation transfer)."""

    def __init__(self, model: QCRestorer):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, q: torch.Tensor, fidelity: torch.Tensor):
        w, q_est = self.model.encode(image)
        out = self.model.synthesize(w, q)
        f = fidelity.reshape(-1, 1, 1, 1)
        return (1 - f) * out + f * image, q_est


def qc_q_dim(state: dict, cfg: StyleGAN2Config, path) -> int:
    res = cfg.resolution
    key = f"synthesis.b{res}.conv1.weight"
    extra = state[key].shape[0] - cfg.channels[res]
    if extra <= 0 or extra % L_DIM:
        raise CheckpointError(f"{path}: {key} has {state[key].shape[0]} output channels for {cfg.channels[res]} "
                              f"features; a QC-StyleGAN block needs C + q_dim x {L_DIM}")
    return extra // L_DIM


def load_qc_generator(path: str | Path) -> QCGenerator:
    """QC-StyleGAN generator from its NVlabs-layout snapshot (.pkl via the safe reader, or .pt/.pth)."""
    src = read_generator_state(path, "nvlabs")
    if not any(".convq." in k for k in src.state):
        raise CheckpointError(f"{path}: a plain StyleGAN2 generator (no DegradBlock 'convq' weights), not QC-StyleGAN")
    q_dim = int(src.hyper.get("q_dim") or qc_q_dim(src.state, src.cfg, path))
    src.state = {k: v for k, v in src.state.items() if not (".convq." in k and k.endswith("resample_filter"))}
    return fill_generator(QCGenerator(src.cfg, q_dim), src, path)


def load_qc_restorer(encoder_path: str | Path, generator_path: str | Path) -> QCRestorer:
    """Encoders and latent_avg from the pSp-style checkpoint of the public code
    ({'state_dict': {'encoder.content_encoder.*', 'encoder.quality_encoder.*', ...}, 'latent_avg': ...}),
    the generator from its QC-StyleGAN snapshot."""
    gen = load_qc_generator(generator_path)
    ckpt = read_file(encoder_path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("encoder.content_encoder.") for k in state):
        raise CheckpointError(f"{encoder_path}: no 'encoder.content_encoder.*' weights: not a QC-StyleGAN "
                              "pSp encoder checkpoint")
    model = QCRestorer(gen.cfg, gen.q_dim).eval()
    enc = strip_prefix(state, "encoder.")
    load_strict(model.encoder, enc, encoder_path, "QC-StyleGAN encoder checkpoint")
    model.decoder.load_state_dict(gen.state_dict())
    avg = ckpt.get("latent_avg") if isinstance(ckpt, dict) else None
    if isinstance(avg, torch.Tensor):
        avg = avg.reshape(-1).float()
        if avg.numel() not in (gen.cfg.w_dim, gen.cfg.w_dim + gen.q_dim):
            raise CheckpointError(f"{encoder_path}: latent_avg has {avg.numel()} values, expected "
                                  f"{gen.cfg.w_dim} or {gen.cfg.w_dim + gen.q_dim}")
        model.latent_avg[: avg.numel()] = avg
    else:
        model.latent_avg[: gen.cfg.w_dim] = gen.mapping.w_avg
    return model


def random_qc_restorer(cfg: StyleGAN2Config, seed: int, q_dim: int = 16) -> QCRestorer:
    """Seeded random weights everywhere (untrained); BatchNorm statistics randomised too."""
    base = random_generator(cfg, seed)
    torch.manual_seed(seed + 1)
    model = QCRestorer(cfg, q_dim).eval()
    own = model.decoder.state_dict()
    own.update({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape})
    model.decoder.load_state_dict(own)
    randomize_batchnorm(model.encoder)
    with torch.no_grad():
        model.latent_avg[: cfg.w_dim] = base.mapping.w_avg
        for enc in (model.encoder.content_encoder, model.encoder.quality_encoder):
            enc.linear.weight.mul_(0.1)
    return model
