"""The code diffuser of the VSP restorer (thesis ch. 3.2.2, Eq. 3.3-3.4): four temporal-aware
code-to-code (TACC) blocks denoise W+ codes conditioned on the e4e codes w-hat, in T = 4 steps.

Followed from the public code (VSPBFR `models/CodeDiffuser.py`, `ldm/ddpm.py: My_DDPM`) where it
departs from the thesis, because its checkpoints were trained that way:
- the network predicts w^0 itself (x0 parameterization), not the noise of Eq. 3.3; each step takes
  the posterior mean of q(w^{t-1} | w^t, w^0) and adds no noise, so the only randomness is w^T;
- the betas are LDM's "linear" schedule, linear in sqrt(beta) from sqrt(0.1) to sqrt(0.99); the
  thesis' endpoints beta_1 = 0.1 and beta_T = 0.99 hold, the two middle values differ;
- each TACC block pixel-normalises its input, adds a LayerNorm-ed gate and bias MLP, and feeds
  t / T as a 513th feature next to w-hat; tau_1 is sqrt(18) for any number of codes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TIMESTEPS = 4
BETA_START, BETA_END = 0.1, 0.99  # thesis Sec. 3.3: beta_t from 0.1 to 0.99
TAU1_CODES = 18  # the public code's self.dk


def schedule(timesteps: int = TIMESTEPS, start: float = BETA_START, end: float = BETA_END) -> dict[str, np.ndarray]:
    """betas, alphas_cumprod and the posterior mean coefficients (float64), as My_DDPM registers them."""
    betas = np.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    prev = np.append(1.0, alphas_cumprod[:-1])
    return {"betas": betas, "alphas_cumprod": alphas_cumprod,
            "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)}


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ScaledLeakyReLU(nn.Module):
    def forward(self, x):
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class SpatialAttention(nn.Module):
    """Position-based attention a^p of Eq. 3.4 (tau_2 = sqrt(512)), LayerNorm-ed; keys from the condition
    (cond_dim wide: [w-hat, t] here, FACEMUG's residual codes w^r there)."""

    def __init__(self, dim: int, cond_dim: int | None = None):
        super().__init__()
        self.q_matrix = nn.Linear(dim, dim, bias=False)
        self.k_matrix = nn.Linear(cond_dim or dim + 1, dim, bias=False)
        self.v_matrix = nn.Linear(dim, dim, bias=False)
        self.dim = dim

    def forward(self, w, condition):
        q, k, v = self.q_matrix(w), self.k_matrix(condition).transpose(1, 2), self.v_matrix(w)
        attention = torch.softmax(torch.matmul(k, q) / math.sqrt(self.dim), dim=1)
        return F.layer_norm(torch.matmul(v, attention), (self.dim,))


class TACCBlock(nn.Module):
    """Delta_i = LayerNorm(a^c + a^p) * (1 + xi) + mu  (Eq. 3.4): queries, gate xi and bias mu from the condition,
    keys and values from the codes x. The condition is [w-hat, t] in the diffuser (cond_dim = dim + 1); FACEMUG's
    code-to-code modulation block is the same block on its residual codes w^r (Eq. 6.15, cond_dim = dim)."""

    def __init__(self, dim: int, cond_dim: int | None = None):
        super().__init__()
        cond = cond_dim or dim + 1
        self.pixelnorm = PixelNorm()
        self.q_matrix = nn.Linear(cond, dim, bias=False)
        self.k_matrix = nn.Linear(dim, dim, bias=False)
        self.v_matrix = nn.Linear(dim, dim, bias=False)
        self.gamma_ = nn.Sequential(nn.Linear(cond, dim), nn.LayerNorm(dim), ScaledLeakyReLU(), nn.Linear(dim, dim),
                                    nn.Sigmoid())
        self.beta_ = nn.Sequential(nn.Linear(cond, dim), nn.LayerNorm(dim), ScaledLeakyReLU(), nn.Linear(dim, dim),
                                   ScaledLeakyReLU())
        self.attention_layer = SpatialAttention(dim, cond)
        self.dim = dim

    def forward(self, x, condition):
        x = self.pixelnorm(x)
        k, v = self.k_matrix(x), self.v_matrix(x)
        q = self.q_matrix(condition).transpose(1, 2)
        channel = torch.matmul(torch.softmax(torch.matmul(k, q) / math.sqrt(TAU1_CODES), dim=-1), v)  # a^c
        h = F.layer_norm(channel + self.attention_layer(x, condition), (self.dim,))
        return h * (1.0 + self.gamma_(condition)) + self.beta_(condition)


class CodeDiffuser(nn.Module):
    """P_theta(w^t, w-hat, t) -> predicted w^0; checkpoint key layout `att_mapper.{0..3}.*`."""

    # The fp16 .pte keeps these weights in float32 (mobile.py): the reverse process iterates them, and rounded to
    # float16 they alone put the 256 VSP restorer 7.6e-2 from float64 (random weights; its encoder's: 2.6e-2).
    float32_weights = True

    def __init__(self, dim: int = 512, timesteps: int = TIMESTEPS):
        super().__init__()
        self.att_mapper = nn.ModuleList([TACCBlock(dim) for _ in range(4)])
        self.timesteps = timesteps
        coefs = schedule(timesteps)
        # derived from the schedule, not stored in checkpoints
        self.register_buffer("coef1", torch.tensor(coefs["posterior_mean_coef1"], dtype=torch.float32), persistent=False)
        self.register_buffer("coef2", torch.tensor(coefs["posterior_mean_coef2"], dtype=torch.float32), persistent=False)

    def predict(self, x, w_hat, step: int):
        condition = torch.cat([w_hat, torch.full_like(x[..., :1], step / self.timesteps)], dim=-1)  # [w-hat, t]
        for block in self.att_mapper:
            x = block(x, condition)
        return x

    def forward(self, x_T: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        """The T steps unrolled: w^{t-1} = coef1_t * P(w^t, w-hat, t) + coef2_t * w^t (no added noise)."""
        x = x_T
        for step in reversed(range(self.timesteps)):
            x = self.coef1[step] * self.predict(x, w_hat, step) + self.coef2[step] * x
        return x
