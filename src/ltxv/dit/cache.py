"""First-block cache (ParaAttention's FBCache, after TeaCache): skip the DiT's blocks 1.. at a denoising step
when block 0's output residual barely changed since the last fully computed step, and add the residual that
blocks 1.. produced then. Inference only; approximate (see tests/test_fast.py for its measured cost)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class FirstBlockCache:
    """Per-generation state: create one per `generate()` and pass it to every `VideoDiT.forward` step.

    Step k reuses when mean|r0_k - r0_ref| / mean|r0_ref| < threshold, where r0 = block 0's output minus its
    input and r0_ref is r0 at the last fully computed step (ParaAttention keeps the reference there too, so
    consecutive reuses cannot drift away from it unnoticed). threshold 0 never reuses.
    """

    def __init__(self, threshold: float, total: Callable[[Tensor], Tensor] | None = None) -> None:
        """`total` sums a tensor over the processes that share one forward in parts (`ltxv.parallel`), so
        that all of them take the same decision from the whole batch."""
        if threshold < 0:
            raise ValueError(f"first-block cache threshold must be >= 0 (0 = off), got {threshold}")
        self.threshold = threshold
        self.total = total
        self.first: Tensor | None = None  # r0_ref (B, N, D)
        self.key: object = None  # what the reference was computed for (`follow`)
        self.rest: Tensor | None = None  # residual of blocks 1.. at the reference step (B, N, D)
        self.steps = 0
        self.reused = 0

    def follow(self, key: object) -> None:
        """Forget the reference when `key` (e.g. the batched guidance branches) differs from the last."""
        if self.key is not None and key != self.key:
            self.first = self.rest = None
        self.key = key

    def change(self, first: Tensor) -> float:
        """Relative L1 change of block 0's residual against the reference (inf when there is none)."""
        if self.first is None or self.first.shape != first.shape:
            return float("inf")
        f32 = torch.float32
        sums = torch.stack([(first - self.first).abs().sum(dtype=f32), self.first.abs().sum(dtype=f32)])
        if self.total is not None:
            sums = self.total(sums)
        return (sums[0] / sums[1].clamp_min(1e-12)).item()

    def __call__(
        self, x: Tensor, first_block: Callable[[Tensor], Tensor], rest: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """x (B, N, D) -> output of all blocks: first_block(x), then rest() or the cached residual."""
        h = first_block(x)
        first = h - x
        self.steps += 1
        if self.change(first) < self.threshold:
            self.reused += 1
            return h + self.rest
        out = rest(h)
        self.first, self.rest = first, out - h
        return out
