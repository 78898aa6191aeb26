"""Streaming VAE decode (VideoVAE.decode_stream, Pipeline.decode_stream) vs the tiled and full decodes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize_, rel_err

import ltxv
from ltxv import Pipeline, SampleConfig
from ltxv.media import crop_video
from ltxv.presets import PRESETS, TINY_VAE
from ltxv.vae.model import VideoVAE
from ltxv.vae.tiling import STREAM_TILE, TileConfig, _latent_ranges

T = 0.05  # decode timestep (TINY_VAE is timestep-conditioned)


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    return randomize_(VideoVAE(TINY_VAE), 0).eval()


def _latents(f: int, h: int = 1, w: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, f, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("f, chunk", [(7, 2), (7, 3), (5, 4), (2, 2), (12, 4)])
@pytest.mark.parametrize("tile", [STREAM_TILE, TileConfig()])  # overlap 0 / context 3, overlap 1 / context 2
@torch.no_grad()
def test_stream_concatenates_to_the_temporally_tiled_decode_bit_for_bit(vae, f, chunk, tile):
    z = _latents(f)
    parts = list(vae.decode_stream(z, T, chunk_frames=chunk, tile=tile))
    tiled = vae.decode_tiled(z, T, dataclasses.replace(tile, temporal_tile=chunk))
    assert torch.equal(torch.cat(parts, dim=2), tiled)
    assert len(parts) == len(_latent_ranges(f, chunk, tile.temporal_overlap)) and min(
        p.shape[2] for p in parts
    )


@torch.no_grad()
def test_stream_with_spatial_tiles_matches_to_rounding_and_the_full_decode_closely(vae):
    z = _latents(6, 2, 3, seed=1)
    tile = dataclasses.replace(STREAM_TILE, spatial_tile=2, spatial_overlap=1)
    stream = torch.cat(list(vae.decode_stream(z, T, chunk_frames=3, tile=tile)), dim=2)
    tiled = vae.decode_tiled(z, T, dataclasses.replace(tile, temporal_tile=3))
    torch.testing.assert_close(stream, tiled, atol=1e-6, rtol=1e-5)
    temporal_only = torch.cat(list(vae.decode_stream(z, T, chunk_frames=2)), dim=2)
    assert rel_err(temporal_only, vae.decode(z, T)) < 5e-3  # ltxv.vae.tiling.STREAM_TILE: measured <= 1.7e-3


def test_chunk_must_exceed_the_overlap(vae):
    with pytest.raises(ValueError, match="temporal_overlap=1"):
        next(vae.decode_stream(_latents(3), T, chunk_frames=1, tile=TileConfig()))
    assert [p.shape[2] for p in vae.decode_stream(_latents(3), T, chunk_frames=1)] == [1, 8, 8]


def test_pipeline_decode_stream_crops_and_matches_the_tiled_decode():
    spec = PRESETS["tiny"]
    pipe = Pipeline(randomize_(ltxv.VideoVAE(spec.vae).eval(), 1, 0.2), ltxv.VideoDiT(spec.dit).eval(), spec)
    cfg = SampleConfig(width=40, height=64, num_frames=30, seed=3)  # padded to 64x64x33: 5 latent frames
    latents = _latents(5, 2, 2, seed=2)
    parts = list(pipe.decode_stream(latents, cfg, torch.Generator().manual_seed(7), chunk_frames=2))
    assert [p.shape[2] for p in parts] == [9, 8, 13] and parts[0].shape[-2:] == (64, 40)
    z, t = pipe._decoder_input(latents, cfg, torch.Generator().manual_seed(7))
    with torch.no_grad():
        tiled = pipe.vae.decode_tiled(z, t, dataclasses.replace(STREAM_TILE, temporal_tile=2))
    expected = ((crop_video(tiled, 64, 40, 30) + 1) / 2).clamp(0, 1)
    assert torch.equal(torch.cat(parts, dim=2), expected)
