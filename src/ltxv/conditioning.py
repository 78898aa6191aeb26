"""Conditioning items (images or 8k+1-frame clips at frame indices) -> latent tokens with per-token strength.

Official LTX-Video semantics (`prepare_conditioning`): an item at frame 0 is written into the start of the
latent grid (lerp by strength); an item at frame > 0 puts its latent frames after a 2-frame prefix into the
grid at latent index frame/8 + 2, and its prefix (or the single latent frame of an image) becomes *extra
tokens* in front of the video tokens, with their own RoPE coordinates; extra tokens are dropped before
decoding. A token's conditioning strength c gives it the timestep min(t, 1 - c): c = 1 tokens stay clean."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

NUM_PREFIX_LATENT_FRAMES = 2  # official `num_prefix_latent_frames`
MEDIA_SLACK = 0.05  # resampling overshoot allowed outside [-1, 1]; 0-255 pixels are far outside


@dataclass(frozen=True)
class Condition:
    """An image (n = 1) or clip (n = 8k+1 frames) placed at pixel frame `frame` with a strength in (0, 1]."""

    media: Tensor  # (1 or B, 3, n, H, W) float in [-1, 1]; another size is stretched to the generation's, as
    # the official pipeline does (`ltxv.media.resize_center_crop` first keeps the aspect, as `--image` does)
    frame: int = 0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.media.ndim != 5 or self.media.shape[1] != 3:
            hint = "; an image (3, H, W) is media[None, :, None]" if self.media.ndim == 3 else ""
            raise ValueError(f"condition media must be (B, 3, n, H, W), got {tuple(self.media.shape)}{hint}")
        if self.media.numel() == 0:
            raise ValueError(f"condition media is empty: shape {tuple(self.media.shape)}")
        if not self.media.is_floating_point():
            raise ValueError(
                f"condition media must be float in [-1, 1], got {self.media.dtype}; from 0-255: x / 127.5 - 1"
            )
        low, high = float(self.media.min()), float(self.media.max())
        if not (-1 - MEDIA_SLACK <= low and high <= 1 + MEDIA_SLACK):  # NaN fails too
            raise ValueError(f"condition media must be in [-1, 1], got values in [{low:.3g}, {high:.3g}]")
        if self.frame < 0:
            raise ValueError(f"condition frame {self.frame} must be >= 0")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"condition strength {self.strength} must be in (0, 1]")


@dataclass
class LatentState:
    """Sampling state in token layout: extra conditioning tokens first, then the F'·H'·W' video tokens."""

    tokens: Tensor  # (B, N, C)
    coords: Tensor  # (B, N, 3) pixel coordinates (frame, y, x)
    strength: Tensor  # (B, N) conditioning strength per token, 0 = generate freely
    clean: Tensor  # (B, N, C) tokens as conditioned before any step (for image_cond_noise)
    num_extra: int  # leading extra tokens to drop before decoding


def trim_frames(num_media_frames: int, start: int, num_frames: int, temporal: int = 8) -> int:
    """Official `trim_conditioning_sequence`: the longest 8k+1 prefix that fits into the video from
    `start`; at least 1 (a start past the video's end is `Pipeline.generate`'s error, not an empty clip)."""
    n = max(min(num_media_frames, num_frames - start), 1)
    return (n - 1) // temporal * temporal + 1


def check_condition(cond: Condition, num_frames: int, temporal: int = 8) -> None:
    """A trimmed condition fits the padded `num_frames` (its start frame is checked against the requested
    frames before, in `Pipeline.generate`)."""
    n = cond.media.shape[2]
    if n % temporal != 1:
        raise ValueError(
            f"condition clip has {n} frames; use 1 or {temporal}k+1 frames (trim_frames does this)"
        )
    if cond.frame + n > num_frames:
        raise ValueError(
            f"condition at frame {cond.frame} with {n} frames exceeds the {num_frames}-frame video"
        )
    if cond.frame > 0 and n > 1 and cond.frame % temporal:
        raise ValueError(
            f"a clip condition must start at a multiple of {temporal} frames, got frame {cond.frame}"
        )


def build_state(
    noise: Tensor,
    cond_latents: list[tuple[Condition, Tensor]],
    grid_coords: Tensor,
    latent_coords_fn,  # (f, h, w) -> (N, 3) pixel coords for a latent block, as the DiT computes them
    generator: torch.Generator | None,
) -> LatentState:
    """noise (B, C, F', H', W') normalized; cond_latents: (condition, normalized latents (B, C, f, H',
    W'))."""
    b, _, f, h, w = noise.shape
    grid = noise.clone()
    mask = torch.zeros(b, f, h, w, device=noise.device, dtype=torch.float32)
    extra_tokens, extra_coords, extra_strength = [], [], []
    for cond, z in cond_latents:
        z = z.to(noise.dtype).expand(b, -1, -1, -1, -1)
        if cond.frame == 0:  # write the item's latent frames at the start of the grid
            n = z.shape[2]
            grid[:, :, :n] = torch.lerp(grid[:, :, :n], z, cond.strength)
            mask[:, :n] = cond.strength
            continue
        if z.shape[2] > NUM_PREFIX_LATENT_FRAMES:  # frames after the prefix go into the grid
            start = cond.frame // 8 + NUM_PREFIX_LATENT_FRAMES
            end = start + z.shape[2] - NUM_PREFIX_LATENT_FRAMES
            grid[:, :, start:end] = torch.lerp(
                grid[:, :, start:end], z[:, :, NUM_PREFIX_LATENT_FRAMES:], cond.strength
            )
            mask[:, start:end] = cond.strength
        prefix = z[:, :, :NUM_PREFIX_LATENT_FRAMES]  # (B, C, f_p, H', W') -> extra tokens
        fresh = torch.randn(prefix.shape, generator=generator, device=prefix.device, dtype=prefix.dtype)
        prefix = torch.lerp(fresh, prefix, cond.strength)
        coords = latent_coords_fn(*prefix.shape[2:]).clone()  # (n, 3)
        coords[:, 0] += cond.frame
        extra_tokens.append(rearrange(prefix, "b c f h w -> b (f h w) c"))
        extra_coords.append(coords.expand(b, -1, -1))
        extra_strength.append(torch.full(extra_tokens[-1].shape[:2], cond.strength, device=noise.device))
    tokens = torch.cat([*extra_tokens, rearrange(grid, "b c f h w -> b (f h w) c")], dim=1)  # (B, N, C)
    coords = torch.cat([*extra_coords, grid_coords], dim=1)
    strength = torch.cat([*extra_strength, mask.flatten(1)], dim=1)
    num_extra = sum(t.shape[1] for t in extra_tokens)
    return LatentState(tokens, coords, strength, tokens.clone(), num_extra)
