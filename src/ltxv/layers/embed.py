"""Timestep sinusoid + MLP embedders (PixArt-alpha AdaLN-single) and the caption projection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_sinusoid(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoid, cos half first (diffusers `Timesteps(256, flip_sin_to_cos=True, shift=0)`).

    t (N,) float -> (N, dim) fp32; omega_j = exp(-ln(max_period) * j / (dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepMLP(nn.Module):
    """linear_1 (256 -> D) -> SiLU -> linear_2 (D -> D)."""

    def __init__(self, dim: int, in_dim: int = 256) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbedding(nn.Module):
    """Scaled timestep -> sinusoid -> MLP (PixArt combined embedder, no size conditions)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepMLP(dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """t (N,) already multiplied by the timestep scale -> (N, dim)."""
        return self.timestep_embedder(timestep_sinusoid(t).to(dtype))


class AdaLNSingle(nn.Module):
    """AdaLN-single (PixArt-alpha): one shared MLP maps t to 6 modulation vectors for every block."""

    def __init__(self, dim: int, num_mod: int = 6) -> None:
        super().__init__()
        self.emb = TimestepEmbedding(dim)
        self.linear = nn.Linear(dim, num_mod * dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """t (N,) scaled -> (modulation (N, 6D), embedding (N, D))."""
        emb = self.emb(t, dtype)
        return self.linear(F.silu(emb)), emb


class TextProjection(nn.Module):
    """Caption projection (PixArt): linear_1 -> GELU(tanh) -> linear_2, caption_channels -> D."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))
