"""Encoder, Decoder and VideoVAE: video (B,3,F,H,W) in [-1,1] <-> normalized latents (B,C,F',H',W')."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import VAEConfig, block_stride
from ..layers.embed import TimestepEmbedding
from ..layers.init import normal_parameter
from ..layers.norm import modulate, pixel_norm
from .blocks import ResBlock, ResStage
from .conv import CausalConv3d, DepthToSpaceUpsample, SpaceToDepthDownsample, patchify, unpatchify
from .tiling import STREAM_TILE, TileConfig, tiled_decode, tiled_decode_stream, tiled_encode


class Encoder(nn.Module):
    """patchify -> conv_in -> down_blocks (all causal) -> PixelNorm -> SiLU -> conv_out -> (mean, logvar)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.spatial_padding_mode
        ch = cfg.encoder_base_channels
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, ch, 3, padding_mode=pad)
        blocks: list[nn.Module] = []
        for b in cfg.encoder_blocks:
            stride = block_stride(b.kind)
            if b.kind == "res_x":
                blocks.append(ResStage(ch, b.num_layers, cfg.norm_eps, pad))
            elif b.kind == "res_x_y":
                blocks.append(ResBlock(ch, ch * b.multiplier, cfg.norm_eps, pad))
                ch *= b.multiplier
            elif b.kind.endswith("_res"):
                blocks.append(SpaceToDepthDownsample(ch, ch * b.multiplier, stride, pad))
                ch *= b.multiplier
            else:  # bare strided causal conv; only compress_all_x_y changes the width (as the official code)
                out = ch * b.multiplier if b.kind == "compress_all_x_y" else ch
                blocks.append(CausalConv3d(ch, out, 3, stride=stride, padding_mode=pad))
                ch = out
        self.down_blocks = nn.ModuleList(blocks)
        out_ch = cfg.latent_channels + (1 if cfg.latent_log_var == "uniform" else cfg.latent_channels)
        self.conv_out = CausalConv3d(ch, out_ch, 3, padding_mode=pad)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """video (B, 3, F, H, W) -> mean, logvar (B, C, F', H', W'), logvar clamped to [-30, 20]."""
        x = self.conv_in(patchify(video, self.cfg.patch_size), causal=True)  # (B, C0, F, H/4, W/4)
        for block in self.down_blocks:
            x = block(x, True)
        x = self.conv_out(F.silu(pixel_norm(x)), causal=True)  # (B, C+1 | 2C, F', H', W')
        c = self.cfg.latent_channels
        mean, logvar = x[:, :c], x[:, c:]
        if self.cfg.latent_log_var == "uniform":
            logvar = logvar.expand_as(mean)  # one shared log-variance for every channel
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """conv_in -> up_blocks (reversed list) -> PixelNorm [-> AdaLN(t)] -> SiLU -> conv_out -> unpatchify."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pad, eps, tc = cfg.spatial_padding_mode, cfg.norm_eps, cfg.timestep_conditioning
        ch = cfg.decoder_width
        self.conv_in = CausalConv3d(cfg.latent_channels, ch, 3, padding_mode=pad)
        blocks: list[nn.Module] = []
        for b in reversed(cfg.decoder_blocks):
            if b.kind == "res_x":
                blocks.append(ResStage(ch, b.num_layers, eps, pad, b.inject_noise, tc))
            elif b.kind == "res_x_y":
                blocks.append(ResBlock(ch, ch // b.multiplier, eps, pad, b.inject_noise))
                ch //= b.multiplier
            else:
                blocks.append(DepthToSpaceUpsample(ch, block_stride(b.kind), b.multiplier, b.residual, pad))
                ch //= b.multiplier
        self.up_blocks = nn.ModuleList(blocks)
        if tc:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedding(2 * ch)
            self.last_scale_shift_table = normal_parameter(2, ch, std=ch**-0.5)
        self.conv_out = CausalConv3d(ch, cfg.in_channels * cfg.patch_size**2, 3, padding_mode=pad)

    def forward(self, z: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z (B, C, F', H', W') un-normalized latents, t (B,) decode timestep in [0, 1] -> (B, 3, F, H, W)."""
        causal = self.cfg.causal_decoder
        x = self.conv_in(z, causal)
        ts = t * self.timestep_scale_multiplier if self.cfg.timestep_conditioning else None
        for block in self.up_blocks:
            if isinstance(block, ResStage):
                x = block(x, causal, ts, generator)
            elif isinstance(block, ResBlock):
                x = block(x, causal, generator=generator)
            else:
                x = block(x, causal)
        x = pixel_norm(x)
        if ts is not None:
            emb = self.last_time_embedder(ts, x.dtype)[:, :, None, None, None]  # (B, 2C, 1, 1, 1)
            shift, scale = (
                self.last_scale_shift_table[None, :, :, None, None, None] + emb.unflatten(1, (2, -1))
            ).unbind(1)
            x = modulate(x, shift, scale)
        x = self.conv_out(F.silu(x), causal)  # (B, 48, F, H/4, W/4)
        return unpatchify(x, self.cfg.patch_size)


class VideoVAE(nn.Module):
    """Video-VAE with per-channel latent normalisation (statistics from the checkpoint)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    @property
    def scale_factors(self) -> tuple[int, int, int]:
        """Pixels per latent voxel (t, h, w): (8, 32, 32) for every official VAE."""
        return (self.cfg.temporal_compression, self.cfg.spatial_compression, self.cfg.spatial_compression)

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    def check_video(self, video: Tensor) -> None:
        st, ss, _ = self.scale_factors
        if video.ndim != 5 or video.shape[1] != self.cfg.in_channels:
            raise ValueError(f"video must be (B, {self.cfg.in_channels}, F, H, W), got {tuple(video.shape)}")
        f, h, w = video.shape[2:]
        if (f - 1) % st or h % ss or w % ss:
            raise ValueError(
                f"video of {f} frames at {h}x{w} (HxW): frames must be {st}k+1 and sides multiples of {ss}; "
                f"pad to {((f - 2) // st + 1) * st + 1} frames and {-(-h // ss) * ss}x{-(-w // ss) * ss}"
            )

    def encode_moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Raw (un-normalized) posterior mean and log-variance, for training."""
        self.check_video(video)
        return self.encoder(video)

    def encode(self, video: Tensor) -> Tensor:
        """video (B, 3, F, H, W) in [-1, 1] -> normalized latents (B, C, F', H', W'): the posterior mode."""
        return self.normalize(self.encode_moments(video)[0])

    def decode(
        self,
        latents: Tensor,
        timestep: float | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Normalized latents -> video in about [-1, 1].

        timestep: float or (B,), the noise level the decoder denoises from (timestep-conditioned decoders
        only; None means 0). Adds no noise to the latents; decoders with noise injection (0.9.1) draw their
        injected noise from `generator` (global RNG when None).
        """
        if latents.ndim != 5 or latents.shape[1] != self.cfg.latent_channels:
            raise ValueError(
                f"latents must be (B, {self.cfg.latent_channels}, F', H', W'), got {tuple(latents.shape)}"
            )
        t = None
        if self.cfg.timestep_conditioning:
            t = torch.as_tensor(
                0.0 if timestep is None else timestep, dtype=torch.float32, device=latents.device
            )
            t = t.expand(latents.shape[0]) if t.ndim == 0 else t
        return self.decoder(self.denormalize(latents), t, generator)

    def encode_tiled(self, video: Tensor, tile: TileConfig | None = None) -> Tensor:
        """`encode` in overlapping space-time tiles to bound memory (approximate; see `ltxv.vae.tiling`)."""
        return tiled_encode(self, video, tile)

    def decode_tiled(
        self,
        latents: Tensor,
        timestep: float | Tensor | None = None,
        tile: TileConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """`decode` in overlapping space-time tiles to bound memory (approximate; see `ltxv.vae.tiling`)."""
        return tiled_decode(self, latents, tile, timestep, generator)

    def decode_stream(
        self,
        latents: Tensor,
        timestep: float | Tensor | None = None,
        chunk_frames: int = 4,
        tile: TileConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """`decode_tiled` in chunks of `chunk_frames` latent frames (8 pixel frames each), yielding frames
        (B, 3, f, H, W) as soon as they are final; concatenated, they are `decode_tiled` with `tile` and
        temporal_tile = chunk_frames. `tile` sets the overlap, context and spatial tiling (default
        STREAM_TILE: no overlap, 3 context latents each side; see `ltxv.vae.tiling` for its error). The first
        frames need one decode of chunk_frames + temporal_context latent frames."""
        tile = dataclasses.replace(tile or STREAM_TILE, temporal_tile=chunk_frames)
        return tiled_decode_stream(self, latents, tile, timestep, generator)
