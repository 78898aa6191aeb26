"""Tiled (memory-saving) VAE encode/decode: overlapping space-time tiles blended with linear ramps.

One mechanism serves all four cases. Each axis (f, h, w) is split into overlapping ranges of LATENT indices;
every range becomes a `_Span` (what to feed the VAE, what part of its output to keep, where that goes) and
the outputs of the grid of tiles are accumulated with separable linear-ramp weights that sum to 1.

- Space (encode and decode): tiles of `spatial_tile` latents (x32 px), no context, blended over the overlap.
- Time, decode: the decoder is non-causal, so a chunk [a, b) is decoded together with `temporal_context`
  latent frames on each side. Decoding latents [s, e) yields 8(e-s-1)+1 frames starting at pixel frame 8s;
  latent a >= 1 covers pixel frames 8a-7..8a, so the chunk keeps frames [8a-7, 8b-7) (from 0 when a = 0).
- Time, encode: the encoder is causal (latent j sees pixel frames <= 8j only), so a chunk [a, b) encodes
  pixel frames [8s, 8(b-1)] with s = a - context: a chunk starting on the last frame of latent group s.
  Its first frame is encoded as an image (the approximation); the context latents s..a-1 are dropped.
  The first chunk (a = 0) is exact.
- An axis whose input fits in one tile is not tiled, so small inputs give exactly the untiled result.
- Streaming (`tiled_decode_stream`): the same decode chunk by chunk in time, each run of frames handed out as
  soon as no later chunk overlaps it (see STREAM_TILE for its default and measured error).

Accuracy: relative error ||tiled - untiled|| / ||untiled|| on `TINY_VAE` with random weights (conftest
`randomize_`; a harsh case, random nets have no smoothness to hide seams), max over 20 seeds, bounds used in
tests/test_tiling.py in brackets: 3x3-latent tiles overlapping by 1: encode 0.14 [0.4], decode 0.077 [0.25];
chunks of 3 latent frames, overlap 1, context 2: encode 0.0073 [0.025], decode 9e-5 [3e-4]. Overlap and
context always beat a naive tiling (no overlap, context 1). With PyTorch's default init (more chaotic) the
same spatial tiling is off by up to 0.54 (encode) / 0.63 (decode); trained VAEs are smoother.
Noise-injecting decoders (0.9.1) draw independent noise per tile.
Run under `torch.no_grad()`: with autograd on, every tile's activations are kept and nothing is saved.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .model import VideoVAE


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes in LATENT units (always valid in pixels): 1 latent = 32 px in space, 8 frames in time.

    Defaults: 512 px tiles blended over 64 px; chunks of 8 latent frames (57-64 pixel frames) blended over 8
    pixel frames, each with 2 latent frames (16 pixel frames) of context.
    """

    spatial_tile: int = 16  # latent px per tile side (16 = 512 px)
    spatial_overlap: int = 2  # latent px shared by neighbouring tiles (2 = 64 px), linearly blended
    temporal_tile: int = 8  # latent frames per chunk
    temporal_overlap: int = 1  # latent frames shared by neighbouring chunks, linearly blended
    temporal_context: int = 2  # latent frames processed then dropped: both sides (decode), before (encode)

    def __post_init__(self) -> None:
        for axis in ("spatial", "temporal"):
            tile, overlap = getattr(self, f"{axis}_tile"), getattr(self, f"{axis}_overlap")
            if tile < 1:
                raise ValueError(f"{axis}_tile={tile} must be >= 1 latent (32 px / 8 frames per latent)")
            if not 0 <= overlap < tile:
                raise ValueError(
                    f"{axis}_overlap={overlap} must satisfy 0 <= overlap < {axis}_tile={tile}; "
                    f"use e.g. {axis}_overlap={tile // 4}"
                )
        if self.temporal_context < 1:
            raise ValueError(
                f"temporal_context={self.temporal_context} must be >= 1 (use 1 or more): a chunk needs the "
                "latent frame before it to produce its first 7 pixel frames (decode) or first latent (encode)"
            )


# Streaming decode (`tiled_decode_stream`): context matters more than overlap there, and without overlap every
# chunk's frames are final as soon as it is decoded. Measured on TINY_VAE (randomize_) from random latents
# (12 x 2 x 2, 4 seeds), max relative error vs the untiled decode, chunks of 2 / 3 / 4 latent frames:
# overlap 0, context 3: 1.7e-3 / 1.1e-3 / 1.2e-3; overlap 1, context 2 (TileConfig's default): 5.0e-3 /
# 3.2e-3 / 2.9e-3; overlap 0, context 2: 8.0e-3 / 6.7e-3 / 5.5e-3. The price: a chunk of c latent frames
# decodes c + 6 of them (c + 3 at the ends), i.e. ~2.5x the untiled decode's work for c = 4 on long videos.
STREAM_TILE = TileConfig(temporal_overlap=0, temporal_context=3)


@dataclass(frozen=True)
class _Span:
    """One tile range along one axis."""

    src: slice  # the range of the input fed to the VAE
    keep: slice  # the part of the VAE's output kept (tile-local indices)
    dst: slice  # where the kept part goes in the output


def _latent_ranges(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Cover [0, n) with the fewest ranges of length `tile` overlapping by >= `overlap`, evenly spread with
    the first starting at 0 and the last ending at n (shifted back rather than padded)."""
    if n <= tile:
        return [(0, n)]
    count = -(-(n - overlap) // (tile - overlap))  # >= 2
    starts = [round(k * (n - tile) / (count - 1)) for k in range(count)]
    return [(a, a + tile) for a in starts]


def _axis_spans(
    n: int, tile: int, overlap: int, context: int, scale: int, temporal: bool, encode: bool
) -> list[_Span]:
    """Spans along one axis of n latents for a VAE mapping 1 latent to `scale` pixels.

    A tile processed from latent s on starts at pixel scale*s (its first input frame when encoding, its first
    output frame when decoding); bound(x) is the first pixel of latent x (in time 8x-7, since latent x >= 1
    covers frames 8x-7..8x, and 0 for x = 0).
    """

    def bound(x: int) -> int:
        return max(scale * x - scale + 1, 0) if temporal else scale * x

    spans = []
    for a, b in _latent_ranges(n, tile, overlap):
        s, e = max(a - context, 0), min(b + context, n)
        if encode:  # causal in time: only context before the tile matters
            spans.append(_Span(slice(scale * s, bound(b)), slice(a - s, b - s), slice(a, b)))
        else:
            keep = slice(bound(a) - scale * s, bound(b) - scale * s)  # decoded frame 0 is pixel frame 8s
            spans.append(_Span(slice(s, e), keep, slice(bound(a), bound(b))))
    return spans


def _axis_weights(spans: list[_Span], device: torch.device) -> list[Tensor]:
    """Per-tile weights over each tile's `dst`: linear ramps across the overlaps with its neighbours,
    normalised so that the weights of all tiles sum to 1 at every output position."""
    weights = []
    for k, span in enumerate(spans):
        w = torch.ones(span.dst.stop - span.dst.start, device=device)
        if k > 0:  # ramp up across the overlap with the previous tile
            ov = spans[k - 1].dst.stop - span.dst.start
            w[:ov] *= (torch.arange(ov, device=device) + 0.5) / ov
        if k < len(spans) - 1:  # ramp down across the overlap with the next tile
            ov = span.dst.stop - spans[k + 1].dst.start
            w[len(w) - ov :] *= (ov - 0.5 - torch.arange(ov, device=device)) / ov
        weights.append(w)
    total = torch.zeros(spans[-1].dst.stop, device=device)
    for span, w in zip(spans, weights, strict=True):
        total[span.dst] += w
    return [w / total[span.dst] for span, w in zip(spans, weights, strict=True)]


def _tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, grid: tuple[list[_Span], ...]) -> Tensor:
    """Run `fn` on every (f, h, w) tile of x (B, C, F, H, W) and blend: sum over tiles of weight * output."""
    if all(len(spans) == 1 for spans in grid):
        return fn(x)
    out, dtype = _blend(fn, x, grid)
    return out.to(dtype)


def _blend(
    fn: Callable[[Tensor], Tensor], x: Tensor, grid: tuple[list[_Span], ...]
) -> tuple[Tensor, torch.dtype]:
    """`_tiled_apply` on any grid -> (the blend, accumulated in at least fp32; fn's output dtype)."""
    axis_weights = [_axis_weights(spans, x.device) for spans in grid]
    out = None
    for (sf, wf), (sh, wh), (sw, ww) in itertools.product(
        *(zip(g, w, strict=True) for g, w in zip(grid, axis_weights, strict=True))
    ):
        y = fn(x[:, :, sf.src, sh.src, sw.src])[:, :, sf.keep, sh.keep, sw.keep]  # (B, C', f, h, w)
        if out is None:  # accumulate in at least fp32, whatever the VAE's dtype
            size = tuple(spans[-1].dst.stop for spans in grid)
            out = y.new_zeros(*y.shape[:2], *size, dtype=torch.promote_types(y.dtype, torch.float32))
        w = wf[:, None, None] * wh[None, :, None] * ww[None, None, :]  # (f, h, w)
        out[:, :, sf.dst, sh.dst, sw.dst] += w * y
    return out, y.dtype


def _grid(
    vae: VideoVAE, latent_shape: tuple[int, int, int], tile: TileConfig, encode: bool
) -> tuple[list[_Span], list[_Span], list[_Span]]:
    """The (f, h, w) spans for latents of shape (F', H', W')."""
    (st, sh, sw), (f, h, w) = vae.scale_factors, latent_shape
    return (
        _axis_spans(f, tile.temporal_tile, tile.temporal_overlap, tile.temporal_context, st, True, encode),
        _axis_spans(h, tile.spatial_tile, tile.spatial_overlap, 0, sh, False, encode),
        _axis_spans(w, tile.spatial_tile, tile.spatial_overlap, 0, sw, False, encode),
    )


def tiled_encode(vae: VideoVAE, video: Tensor, tile: TileConfig | None = None) -> Tensor:
    """`vae.encode` tile by tile: video (B, 3, F, H, W) -> latents (B, C, (F-1)/8+1, H/32, W/32)."""
    vae.check_video(video)
    st, sh, sw = vae.scale_factors
    f, h, w = video.shape[2:]
    latent_shape = ((f - 1) // st + 1, h // sh, w // sw)
    return _tiled_apply(vae.encode, video, _grid(vae, latent_shape, tile or TileConfig(), encode=True))


def tiled_decode(
    vae: VideoVAE,
    latents: Tensor,
    tile: TileConfig | None = None,
    timestep: float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`vae.decode` tile by tile: latents (B, C, F', H', W') -> video (B, 3, 8(F'-1)+1, 32H', 32W')."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, C, F', H', W'), got {tuple(latents.shape)}")
    decode = functools.partial(vae.decode, timestep=timestep, generator=generator)
    grid = _grid(vae, tuple(latents.shape[2:]), tile or TileConfig(), encode=False)
    return _tiled_apply(decode, latents, grid)


def tiled_decode_stream(
    vae: VideoVAE,
    latents: Tensor,
    tile: TileConfig | None = None,
    timestep: float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """`tiled_decode` one temporal chunk at a time, yielding each run of pixel frames (B, 3, f, H, W) as soon
    as no later chunk overlaps it; concatenated along f they equal `tiled_decode` with the same `tile` (bit
    for bit without spatial tiling, to rounding with it). The first frames are out after one chunk's decode:
    latents [0, temporal_tile + temporal_context)."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, C, F', H', W'), got {tuple(latents.shape)}")
    decode = functools.partial(vae.decode, timestep=timestep, generator=generator)
    f_spans, h_spans, w_spans = _grid(vae, tuple(latents.shape[2:]), tile or TileConfig(), encode=False)
    f_weights = _axis_weights(f_spans, latents.device)
    done, pending = 0, None  # frames yielded; weighted sum of frames [done, done + len) from earlier chunks
    for k, (span, weight) in enumerate(zip(f_spans, f_weights, strict=True)):
        whole = _Span(slice(None), span.keep, slice(0, span.dst.stop - span.dst.start))  # chunk-local
        chunk, dtype = _blend(decode, latents[:, :, span.src], ([whole], h_spans, w_spans))
        acc = weight[:, None, None] * chunk  # (B, 3, f, H, W) over span.dst, at least fp32
        if pending is not None:
            acc[:, :, : pending.shape[2]] += pending
        final = (f_spans[k + 1].dst.start if k + 1 < len(f_spans) else span.dst.stop) - done
        yield acc[:, :, :final].to(dtype)
        done, pending = done + final, acc[:, :, final:]


def should_tile(setting: bool | None, latents: Tensor, device: torch.device) -> bool:
    """Explicit setting, else tile when the decoder's largest activations (~128 channels at full resolution,
    several live copies) would not fit in the free GPU memory. Never automatic on the CPU."""
    if setting is not None:
        return setting
    if device.type != "cuda":
        return False
    b, _, f, h, w = latents.shape
    needed = b * (8 * (f - 1) + 1) * (32 * h) * (32 * w) * 128 * latents.element_size() * 4
    return needed > torch.cuda.mem_get_info(device)[0]
