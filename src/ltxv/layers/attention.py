"""attention(q, k, v, bias): the single place where an attention backend is chosen (`attention_backend`), and
`self_attention`, which spans a sequence split across processes (`sequence_parallel`, Ulysses)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

# PyTorch SDPA kernels by name; "auto" lets PyTorch pick, "fa3" calls FlashAttention-3 (Hopper) directly.
SDPA_BACKENDS = {
    "sdpa-math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}
ATTENTION_BACKENDS = ("auto", *SDPA_BACKENDS, "fa3")
NO_MASK_BACKENDS = ("flash", "fa3")  # no additive bias (CUDA): masked attention falls back to "auto"
_backend = "auto"  # set by `attention_backend`; a module global, so that torch.compile guards on it


@dataclass(frozen=True)
class SequenceShards:
    """A token sequence split into `size` equal consecutive shards, one per process of `group` (in rank
    order); the whole has `valid` real tokens and padding after them."""

    group: dist.ProcessGroup
    size: int
    valid: int


_shards: SequenceShards | None = None  # set by `sequence_parallel`


def check_attention_backend(name: str) -> None:
    """ValueError unless `name` is a known backend that can be imported here (fa3: `flash_attn_interface`)."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {name!r}: choose from {', '.join(ATTENTION_BACKENDS)}")
    if name == "fa3" and importlib.util.find_spec("flash_attn_interface") is None:
        raise ValueError(
            "attention backend 'fa3' needs FlashAttention-3 (`flash_attn_interface`, built from "
            f"Dao-AILab/flash-attention/hopper); choose from {', '.join(ATTENTION_BACKENDS[:-1])}"
        )


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run every `attention()` inside the block with backend `name` (one of ATTENTION_BACKENDS; "auto" is
    PyTorch's own choice). Process-wide, not thread-local. A backend that cannot run the given inputs
    (e.g. "efficient" or "cudnn" on the CPU) raises a ValueError at the first call."""
    global _backend
    check_attention_backend(name)
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


@contextlib.contextmanager
def sequence_parallel(shards: SequenceShards) -> Iterator[None]:
    """Inside the block every `self_attention` gets this process's shard of the sequence and attends over
    the whole of it (all processes of `shards.group` must run the same calls). Process-wide."""
    global _shards
    previous, _shards = _shards, shards
    try:
        yield
    finally:
        _shards = previous


def self_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """`attention` of a sequence with itself; inside `sequence_parallel`, q/k/v (B, n, H*d) are this process's
    shard of the sequence and the result is too (Ulysses: an all-to-all trades the sequence split for a head
    split, each process attends over all tokens with H/P heads, a second all-to-all trades back; padding
    keys are masked)."""
    if _shards is None:
        return attention(q, k, v, heads)
    p = _shards.size
    q, k, v = (_sequence_to_heads(x, _shards) for x in (q, k, v))  # (B, P*n, H/P*d)
    bias = None
    if q.shape[1] > _shards.valid:  # padding keys at the end of the sequence
        bias = torch.zeros(q.shape[1], dtype=q.dtype, device=q.device)
        bias[_shards.valid :] = float("-inf")
        bias = bias[None, None, None]  # (1, 1, 1, P*n)
    return _heads_to_sequence(attention(q, k, v, heads // p, bias), _shards)  # (B, n, H*d)


def _sequence_to_heads(x: Tensor, shards: SequenceShards) -> Tensor:
    """(B, n, H*d) sequence shard -> (B, P*n, H*d/P) the whole sequence, this process's heads."""
    b, n, _ = x.shape
    send = x.unflatten(-1, (shards.size, -1)).permute(2, 0, 1, 3).contiguous()  # (P, B, n, H*d/P)
    got = torch.empty_like(send)  # got[j]: sequence shard j, my heads
    dist.all_to_all_single(got, send, group=shards.group)
    return got.permute(1, 0, 2, 3).reshape(b, shards.size * n, -1)


def _heads_to_sequence(x: Tensor, shards: SequenceShards) -> Tensor:
    """(B, P*n, H*d/P) the whole sequence, my heads -> (B, n, H*d) my sequence shard, all heads."""
    b = x.shape[0]
    send = x.unflatten(1, (shards.size, -1)).transpose(0, 1).contiguous()  # (P, B, n, H*d/P)
    got = torch.empty_like(send)  # got[j]: my sequence shard, heads of process j
    dist.all_to_all_single(got, send, group=shards.group)
    return got.permute(1, 2, 0, 3).reshape(b, send.shape[2], -1)


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, bias: Tensor | None = None) -> Tensor:
    """Multi-head scaled dot-product attention on merged heads.

    q (B, N, H*d), k/v (B, L, H*d), bias additive (B, 1, 1, L) or None -> (B, N, H*d).
    Softmax scale 1/sqrt(d). NO_MASK_BACKENDS take no bias: with one (the masked cross-attention to the
    text, ~L/N of the attention work) they fall back to "auto"; self-attention, the N² part, uses them.
    """
    b, n, _ = q.shape
    backend = "auto" if bias is not None and _backend in NO_MASK_BACKENDS else _backend
    if backend == "fa3":
        return _fa3(*(x.unflatten(-1, (heads, -1)) for x in (q, k, v))).reshape(b, n, -1)
    q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in (q, k, v))  # (B, H, N|L, d)
    if backend in SDPA_BACKENDS:
        try:
            with sdpa_kernel(SDPA_BACKENDS[backend]):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, N, d)
        except RuntimeError as err:
            raise ValueError(
                f"attention backend {backend!r} cannot run {q.dtype} q {tuple(q.shape)} on {q.device.type} "
                f"({str(err).splitlines()[0]}); choose from {', '.join(ATTENTION_BACKENDS)}"
            ) from err
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, N, d)
    return out.transpose(1, 2).reshape(b, n, -1)  # (B, N, H*d)


def _fa3(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """FlashAttention-3 on (B, N, H, d) -> (B, N, H, d); older releases also return the log-sum-exp."""
    from flash_attn_interface import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out
