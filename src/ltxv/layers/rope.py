"""3-D fractional RoPE of LTX-Video: positions in seconds and pixels, rotations over the full hidden dim."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def latent_pixel_coords(
    num_frames: int, height: int, width: int, scale: tuple[int, int, int], causal: bool, device: torch.device
) -> Tensor:
    """Pixel coordinates (frame, y, x) of each latent token's top-left-first corner -> (N, 3) fp32.

    Token order is frame-major, then row, then column (n = (f*H + h)*W + w). With `causal` (0.9.5+
    `causal_temporal_positioning`) the first latent frame sits at pixel frame 0: t = max(0, 8f + 1 - 8).
    """
    f, h, w = torch.meshgrid(
        *(torch.arange(n, device=device, dtype=torch.float32) for n in (num_frames, height, width)),
        indexing="ij",
    )
    coords = torch.stack([f * scale[0], h * scale[1], w * scale[2]], dim=-1).reshape(-1, 3)  # (N, 3)
    if causal:
        coords[:, 0] = (coords[:, 0] + 1 - scale[0]).clamp(min=0)
    return coords


def rope_cos_sin(
    coords: Tensor, frame_rate: float, dim: int, theta: float, max_pos: tuple[float, float, float]
) -> tuple[Tensor, Tensor]:
    """coords (B, N, 3) in (pixel frames, pixels, pixels) -> cos, sin (B, N, dim) fp32.

    Spec (LTX `precompute_freqs_cis`, "exp" spacing): frac = (t/fps/20, y/2048, x/2048); n = dim // 6
    frequencies f_k = theta^(k/(n-1)) * pi/2; angle[k, a] = f_k * (2 frac_a - 1), flattened k-major,
    each repeated for an adjacent channel pair, left-padded with dim % 6 identity channels.
    """
    coords = coords.float()
    frac = torch.stack(
        [coords[..., 0] / frame_rate / max_pos[0], coords[..., 1] / max_pos[1], coords[..., 2] / max_pos[2]],
        -1,
    )  # (B, N, 3)
    n = dim // 6
    exponent = torch.linspace(0.0, 1.0, n, device=coords.device, dtype=torch.float32)
    freqs = theta**exponent * (math.pi / 2)  # (n,)
    angles = (freqs[:, None] * (2 * frac[..., None, :] - 1)).flatten(-2)  # (B, N, n*3), index 3k + a
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    pad = dim % 6
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs: out = x cos + rot(x) sin, rot(x)_{2i} = -x_{2i+1}, rot(x)_{2i+1} = x_{2i}.

    x (B, N, D) any dtype; the product runs in fp32.
    """
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, N, D/2) each
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)  # (B, N, D)
    return (x.float() * cos + rotated * sin).to(x.dtype)
