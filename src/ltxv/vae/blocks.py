"""VAE residual blocks: ResBlock (PixelNorm, SiLU, causal conv; optional timestep modulation and noise
injection) and ResStage (the official `res_x` block: several ResBlocks sharing one timestep embedder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.embed import TimestepEmbedding
from ..layers.init import normal_parameter
from ..layers.norm import modulate, pixel_norm
from .conv import CausalConv3d


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of (B, C, F, H, W) (key `norm3.norm.*`)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def spatial_noise(x: Tensor, scale: Tensor, generator: torch.Generator | None) -> Tensor:
    """StyleGAN explicit noise: one N(0,1) map (H, W) shared over batch, frames, channels, times a learned
    per-channel scale (C, 1, 1) -> broadcastable (1, C, 1, H, W)."""
    noise = torch.randn(x.shape[-2:], generator=generator, device=x.device, dtype=x.dtype)
    return (noise[None] * scale)[None, :, None]


class ResBlock(nn.Module):
    """x + conv2(act(norm(conv1(act(norm(x)))))); shortcut: LayerNorm + 1x1x1 conv when widths differ."""

    OUTPUT_CONV = "conv2"  # zero (and equal widths): the block is the identity

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        eps: float,
        padding_mode: str,
        inject_noise: bool = False,
        timestep: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_ch, out_ch, 3, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(out_ch, out_ch, 3, padding_mode=padding_mode)
        if in_ch != out_ch:
            self.norm3 = ChannelLayerNorm(in_ch, eps)
            self.conv_shortcut = nn.Conv3d(in_ch, out_ch, kernel_size=1)
        if inject_noise:
            self.per_channel_scale1 = nn.Parameter(torch.zeros(in_ch, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(in_ch, 1, 1))
        if timestep:
            self.scale_shift_table = normal_parameter(4, in_ch, std=in_ch**-0.5)
        self.inject_noise, self.timestep = inject_noise, timestep

    def forward(
        self, x: Tensor, causal: bool, temb: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """x (B, C, F, H, W); temb (B, 4C, 1, 1, 1) from the enclosing ResStage's embedder."""
        h = pixel_norm(x)
        if self.timestep:
            ada = self.scale_shift_table[None, :, :, None, None, None] + temb.unflatten(
                1, (4, -1)
            )  # (B,4,C,1,1,1)
            shift1, scale1, shift2, scale2 = ada.unbind(1)
            h = modulate(h, shift1, scale1)
        h = self.conv1(F.silu(h), causal)
        if self.inject_noise:
            h = h + spatial_noise(h, self.per_channel_scale1, generator)
        h = pixel_norm(h)
        if self.timestep:
            h = modulate(h, shift2, scale2)
        h = self.conv2(F.silu(h), causal)
        if self.inject_noise:
            h = h + spatial_noise(h, self.per_channel_scale2, generator)
        if hasattr(self, "conv_shortcut"):
            x = self.conv_shortcut(self.norm3(x))
        return x + h


class ResStage(nn.Module):
    """`res_x`: num_layers ResBlocks at one width; if timestep-conditioned, one t -> 4C embedder feeds all."""

    def __init__(
        self,
        ch: int,
        num_layers: int,
        eps: float,
        padding_mode: str,
        inject_noise: bool = False,
        timestep: bool = False,
    ) -> None:
        super().__init__()
        if timestep:
            self.time_embedder = TimestepEmbedding(4 * ch)
        self.res_blocks = nn.ModuleList(
            [ResBlock(ch, ch, eps, padding_mode, inject_noise, timestep) for _ in range(num_layers)]
        )

    def forward(
        self, x: Tensor, causal: bool, t: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """t (B,) already multiplied by the decoder's timestep_scale_multiplier."""
        temb = None
        if hasattr(self, "time_embedder"):
            temb = self.time_embedder(t, x.dtype)[:, :, None, None, None]  # (B, 4C, 1, 1, 1)
        for block in self.res_blocks:
            x = block(x, causal, temb, generator)
        return x
