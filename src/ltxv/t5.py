"""T5 encoder network in plain PyTorch: token ids + padding mask -> hidden states (B, L, D).

The same computation as transformers' `T5EncoderModel` (checked to float32 rounding in tests/test_t5.py), so
`ltxv` runs T5-XXL and the bundled model's small T5 without importing transformers (~2.5 s of every CLI
start). Weight names are ours; `convert.t5_keys_from_hf` maps a transformers checkpoint onto them.

T5 specifics: no embedding scaling, no attention scaling (1/sqrt(d) is folded into the trained weights),
RMSNorm without bias or mean subtraction, and one learned relative-position bias (from the first block)
added to every layer's attention scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import T5Config
from .layers.init import normal_parameter
from .layers.norm import RMSNorm, rms_norm

_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


def relative_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """Bidirectional T5 buckets of (key - query) offsets -> (L, L) int64 in [0, num_buckets).

    Half the buckets per direction; in each half, offsets below a quarter of `num_buckets` get one bucket
    each, larger ones share log-spaced buckets up to `max_distance`."""
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]  # (L, L): key position - query position
    half = num_buckets // 2
    exact = half // 2
    bucket = (offset > 0).long() * half
    dist = offset.abs()
    log_ratio = torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, far)


class T5Norm(RMSNorm):
    """RMSNorm scaled in the weight's dtype rather than fp32 (as T5LayerNorm; differs only in bf16)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * rms_norm(x, self.eps).to(self.weight.dtype)


class T5Attention(nn.Module):
    """Multi-head self-attention with an additive bias (relative positions + padding) and no 1/sqrt(d)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.heads = cfg.num_heads
        self.q, self.k, self.v = (nn.Linear(cfg.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, n, _ = x.shape
        heads = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        q, k, v = heads  # (B, H, L, d_kv) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # (B, H, L, d)
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


class T5FeedForward(nn.Module):
    """wo(act(wi_0 x) * wi_1 x) when gated (v1.1), else wo(act(wi x))."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        if cfg.gated:
            self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
            self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        else:
            self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.act, self.gated = _ACTIVATIONS[cfg.activation], cfg.gated

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))  # (B, L, d_ff)
        return self.wo(h.to(self.wo.weight.dtype))


class T5Block(nn.Module):
    """x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.attn_norm, self.attn = T5Norm(cfg.d_model, cfg.eps), T5Attention(cfg)
        self.ff_norm, self.ff = T5Norm(cfg.d_model, cfg.eps), T5FeedForward(cfg)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), bias)
        return x + self.ff(self.ff_norm(x))


class T5Encoder(nn.Module):
    """ids (B, L) int64, mask (B, L) 1 = attend -> last hidden state (B, L, d_model)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(
            cfg.vocab_size, cfg.d_model, _weight=normal_parameter(cfg.vocab_size, cfg.d_model, std=1.0)
        )
        self.rel_bias = nn.Embedding(  # bucket -> per-head score bias
            cfg.num_buckets, cfg.num_heads, _weight=normal_parameter(cfg.num_buckets, cfg.num_heads, std=1.0)
        )
        self.blocks = nn.ModuleList(T5Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = T5Norm(cfg.d_model, cfg.eps)

    def attention_bias(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, L) padding mask -> (B, H, L, L) additive bias: relative positions, dtype-min on padded keys."""
        buckets = relative_buckets(mask.shape[1], self.cfg.num_buckets, self.cfg.max_distance, mask.device)
        positions = self.rel_bias(buckets).permute(2, 0, 1)[None].to(dtype)  # (1, H, L, L)
        padding = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, L)
        return positions + padding

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.embed(ids)  # (B, L, D)
        mask = torch.ones_like(ids) if mask is None else mask
        bias = self.attention_bias(mask, x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)
