"""Causal 3-D convolution, input patchify, and the space-to-depth / depth-to-space resamplers of the VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def patchify(video: Tensor, patch: int) -> Tensor:
    """(B, C, F, H, W) -> (B, C*p*p, F, H/p, W/p), channel = c*p*p + w_off*p + h_off (official LTX order)."""
    return rearrange(video, "b c f (h q) (w r) -> b (c r q) f h w", q=patch, r=patch)


def unpatchify(x: Tensor, patch: int) -> Tensor:
    """Exact inverse of `patchify`."""
    return rearrange(x, "b (c r q) f h w -> b c f (h q) (w r)", q=patch, r=patch)


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """(B, C, F, H, W) -> (B, C*st*sh*sw, F/st, H/sh, W/sw)."""
    return rearrange(
        x, "b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w", p1=stride[0], p2=stride[1], p3=stride[2]
    )


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """Inverse of `space_to_depth`."""
    return rearrange(
        x, "b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)", p1=stride[0], p2=stride[1], p3=stride[2]
    )


class CausalConv3d(nn.Module):
    """Conv3d, spatial padding by the conv itself, temporal padding by frame replication.

    causal: prepend k-1 copies of frame 0; otherwise 1 copy of the first frame before and of the last after
    (k = 3), so that frame counts follow the official formulas. A single frame (images) pads to k copies of
    itself either way, so its output is the 2-D conv with the kernel summed over time: computed that way,
    k times fewer FLOPs (and oneDNN's faster 2-D kernels) for the same result.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.kernel = kernel
        pad = kernel // 2
        self.conv = nn.Conv3d(
            in_ch, out_ch, kernel, stride=stride, padding=(0, pad, pad), padding_mode=padding_mode
        )

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        k = self.kernel
        if x.shape[2] == 1:
            return self._single_frame(x)
        if causal:
            x = torch.cat([x[:, :, :1].expand(-1, -1, k - 1, -1, -1), x], dim=2)
        elif k > 1:
            r = (k - 1) // 2
            x = torch.cat(
                [x[:, :, :1].expand(-1, -1, r, -1, -1), x, x[:, :, -1:].expand(-1, -1, r, -1, -1)], dim=2
            )
        return self.conv(x)

    def _single_frame(self, x: Tensor) -> Tensor:
        """(B, C, 1, H, W) -> (B, C_out, 1, H', W'): conv2d with weight.sum(time), same spatial padding."""
        conv = self.conv
        weight = conv.weight.sum(2)  # (C_out, C_in, k, k)
        pad = conv.padding[1:]
        image = x[:, :, 0]  # (B, C, H, W)
        if conv.padding_mode != "zeros":
            image = F.pad(image, (pad[1], pad[1], pad[0], pad[0]), mode=conv.padding_mode)
            pad = (0, 0)
        out = F.conv2d(image, weight, conv.bias, stride=conv.stride[1:], padding=pad)
        return out[:, :, None]


class SpaceToDepthDownsample(nn.Module):
    """0.9.5+ encoder downsample: conv to C_out/P channels then space-to-depth, plus a channel-averaged
    space-to-depth skip. Odd frame counts get the first frame duplicated when striding in time."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        self.stride = stride
        prod = stride[0] * stride[1] * stride[2]
        self.group = in_ch * prod // out_ch
        self.conv = CausalConv3d(in_ch, out_ch // prod, 3, padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C, F+1, H, W): even frame count
        skip = space_to_depth(x, self.stride)  # (B, C*P, F', H', W')
        skip = skip.unflatten(1, (-1, self.group)).mean(2)  # (B, C_out, F', H', W')
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsample: conv to P*C/r channels, depth-to-space, drop the first frame when striding in time.
    With `residual`, adds the depth-to-space of the input tiled (repeat, not interleave) to C/r channels."""

    def __init__(
        self, in_ch: int, stride: tuple[int, int, int], reduction: int, residual: bool, padding_mode: str
    ):
        super().__init__()
        self.stride, self.residual = stride, residual
        self.prod = stride[0] * stride[1] * stride[2]
        self.repeats = self.prod // reduction
        self.conv = CausalConv3d(in_ch, self.prod * in_ch // reduction, 3, padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        drop = self.stride[0] - 1  # the first output frame duplicates frame 0 when time is upsampled
        out = depth_to_space(self.conv(x, causal), self.stride)[:, :, drop:]  # (B, C/r, 2F-1, 2H, 2W)
        if self.residual:
            out = out + depth_to_space(x, self.stride).repeat(1, self.repeats, 1, 1, 1)[:, :, drop:]
        return out
