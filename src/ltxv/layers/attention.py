"""attention(q, k, v, bias): the single place where an attention backend is chosen (SDPA today)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, bias: Tensor | None = None) -> Tensor:
    """Multi-head scaled dot-product attention on merged heads.

    q (B, N, H*d), k/v (B, L, H*d), bias additive (B, 1, 1, L) or None -> (B, N, H*d).
    Softmax scale 1/sqrt(d).
    """
    b, n, _ = q.shape
    q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in (q, k, v))  # (B, H, N|L, d)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, N, d)
    return out.transpose(1, 2).reshape(b, n, -1)  # (B, N, H*d)
