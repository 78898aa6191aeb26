"""Normalisations: RMSNorm (optionally affine, computed in fp32), PixelNorm over channels, AdaLN modulate."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rms_norm(x: Tensor, eps: float, weight: Tensor | None = None) -> Tensor:
    """x * rsqrt(mean(x^2, last dim) + eps) [* weight], computed in fp32, returned in x's dtype."""
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight.float()
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-channel weight (the DiT's q/k norms across all heads)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.eps, self.weight)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """PixelNorm (Karras et al. 2018): x / sqrt(mean over channels(x^2) + eps); x (B, C, ...)."""
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN modulation x * (1 + scale) + shift."""
    return x * (1 + scale) + shift
