"""Tests for ltxv.vae.tiling: exact on a local stub VAE, close to untiled on TINY_VAE, TileConfig checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_, rel_err
from torch import Tensor

from ltxv.presets import TINY_VAE
from ltxv.vae.model import VideoVAE
from ltxv.vae.tiling import TileConfig, _axis_spans, _axis_weights, _latent_ranges, tiled_decode, tiled_encode

T = 0.05  # decode timestep (TINY_VAE is timestep-conditioned)


class LocalVAE:
    """A VAE with the real frame/pixel bookkeeping but no receptive field beyond its own latent: encode =
    mean over each latent's pixels (latent 0 = frame 0 alone, latent j = frames 8j-7..8j, causal), decode =
    nearest upsampling. Tiling must reproduce it exactly, which checks spans, crops and blend weights."""

    scale_factors = (8, 32, 32)

    def check_video(self, video: Tensor) -> None:
        assert (video.shape[2] - 1) % 8 == 0 and video.shape[3] % 32 == 0 and video.shape[4] % 32 == 0

    def encode(self, video: Tensor) -> Tensor:
        video = torch.cat([video[:, :, :1].expand(-1, -1, 7, -1, -1), video], dim=2)  # (B, C, 8F', H, W)
        return F.avg_pool3d(video, (8, 32, 32))  # (B, C, F', H/32, W/32)

    def decode(self, latents: Tensor, timestep: float | None = None, generator: object = None) -> Tensor:
        assert timestep == T
        up = latents.repeat_interleave(8, 2).repeat_interleave(32, 3).repeat_interleave(32, 4)
        return up[:, :, 7:]  # (B, C, 8(F'-1)+1, 32H', 32W')


def _tiny_vae(seed: int = 0) -> VideoVAE:
    torch.manual_seed(seed)
    return randomize_(VideoVAE(TINY_VAE), seed).eval()


def _video(f: int, h: int, w: int, batch: int = 1, seed: int = 0) -> Tensor:
    return torch.rand(batch, 3, f, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "n, tile, overlap", [(5, 2, 1), (6, 3, 1), (9, 3, 0), (17, 16, 2), (40, 16, 2), (7, 7, 2)]
)
def test_latent_ranges_cover_with_full_tiles(n: int, tile: int, overlap: int) -> None:
    ranges = _latent_ranges(n, tile, overlap)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(b - a == min(tile, n) for a, b in ranges)
    assert all(b0 - a1 >= overlap for (_, b0), (a1, _) in zip(ranges, ranges[1:], strict=False))


def test_blend_weights_are_linear_ramps() -> None:
    spans = _axis_spans(6, 4, 2, 0, 1, temporal=False, encode=True)  # tiles [0, 4) and [2, 6)
    first, second = _axis_weights(spans, torch.device("cpu"))
    torch.testing.assert_close(first, torch.tensor([1.0, 1.0, 0.75, 0.25]))
    torch.testing.assert_close(second, torch.tensor([0.25, 0.75, 1.0, 1.0]))


@pytest.mark.parametrize(
    "tile",
    [
        TileConfig(
            spatial_tile=2, spatial_overlap=1, temporal_tile=2, temporal_overlap=1, temporal_context=1
        ),
        TileConfig(
            spatial_tile=3, spatial_overlap=0, temporal_tile=3, temporal_overlap=0, temporal_context=2
        ),
        TileConfig(  # 3 tiles overlap in the middle of W
            spatial_tile=4, spatial_overlap=3, temporal_tile=1, temporal_overlap=0, temporal_context=3
        ),
    ],
)
def test_tiling_is_exact_for_a_local_vae(tile: TileConfig) -> None:
    vae, video = LocalVAE(), _video(41, 96, 192, batch=2)  # 6 x 3 x 6 latents
    latents = vae.encode(video)
    torch.testing.assert_close(tiled_encode(vae, video, tile), latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        tiled_decode(vae, latents, tile, timestep=T), vae.decode(latents, T), rtol=0, atol=1e-6
    )


@torch.no_grad()
def test_input_within_one_tile_is_untiled_exactly() -> None:
    vae, video = _tiny_vae(), _video(17, 64, 96, batch=2)
    t = torch.tensor([0.05, 0.5])  # per-sample timesteps pass through
    latents = vae.encode(video)
    tile = TileConfig(spatial_tile=3, temporal_tile=3)  # latents are 3 x 2 x 3
    assert torch.equal(tiled_encode(vae, video, tile), latents)
    assert torch.equal(tiled_decode(vae, latents, tile, timestep=t), vae.decode(latents, t))
    assert torch.equal(vae.encode_tiled(video), latents)  # the VideoVAE methods, default TileConfig
    assert torch.equal(vae.decode_tiled(latents, timestep=t), vae.decode(latents, t))


def _check_tiled(
    vae: VideoVAE, video: Tensor, tile: TileConfig, naive: TileConfig, tol: tuple[float, float]
) -> None:
    """Tiled encode/decode have the untiled shapes, are within `tol` (relative) of the untiled result, and
    closer to it than a naive tiling (no overlap, minimal context)."""
    latents = vae.encode(video)
    decoded = vae.decode(latents, T)
    for name, run, ref, bound in (
        ("encode", lambda c: tiled_encode(vae, video, c), latents, tol[0]),
        ("decode", lambda c: tiled_decode(vae, latents, c, timestep=T), decoded, tol[1]),
    ):
        out, out_naive = run(tile), run(naive)
        assert out.shape == ref.shape == out_naive.shape and out.dtype == ref.dtype
        err, err_naive = rel_err(out, ref), rel_err(out_naive, ref)
        assert err < bound, f"{name}: relative error {err:.4f} >= {bound}"
        assert err < err_naive, f"{name}: blending does not help ({err:.4f} vs naive {err_naive:.4f})"


@torch.no_grad()
def test_spatial_tiling_close_to_untiled() -> None:
    # 9 x 128 x 192 px = 2 x 4 x 6 latents: 2 x 3 tiles of 3 x 3 latents (naive: 2 x 2).
    # Measured relative error, seed 0: 0.077 encode (naive 0.122), 0.067 decode (naive 0.122); max over seeds
    # 0-19: 0.139 encode, 0.077 decode, always below naive (ratio <= 0.77). Bounds: ~3x the max.
    tile, naive = TileConfig(spatial_tile=3, spatial_overlap=1), TileConfig(spatial_tile=3, spatial_overlap=0)
    _check_tiled(_tiny_vae(), _video(9, 128, 192), tile, naive, tol=(0.4, 0.25))


@torch.no_grad()
def test_temporal_tiling_close_to_untiled() -> None:
    # 65 frames = 9 latent frames: 4 chunks of 3 (naive: 3 chunks, no overlap, 1 context frame).
    # Measured relative error, seed 0: 0.0031 encode (naive 0.0086), 6.0e-5 decode (naive 0.023); max over
    # seeds 0-19: 0.0073 encode, 9.0e-5 decode, always below naive (ratio <= 0.42). Bounds: ~3x the max.
    tile = TileConfig(temporal_tile=3, temporal_overlap=1, temporal_context=2)
    naive = TileConfig(temporal_tile=3, temporal_overlap=0, temporal_context=1)
    _check_tiled(_tiny_vae(), _video(65, 64, 64), tile, naive, tol=(0.025, 3e-4))


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, _CUDA])])
@torch.no_grad()
def test_tiling_keeps_dtype_and_device(device: str) -> None:
    vae, video = _tiny_vae().to(device, torch.bfloat16), _video(17, 64, 64).to(device, torch.bfloat16)
    tile = TileConfig(spatial_tile=1, spatial_overlap=0)  # 2 x 2 tiles, blended in fp32, returned in bf16
    latents = tiled_encode(vae, video, tile)
    decoded = tiled_decode(vae, latents, tile, timestep=torch.tensor([T], device=device))
    for out in (latents, decoded):
        assert out.dtype == torch.bfloat16 and out.device == video.device


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_tile=0), "spatial_tile=0"),
        (dict(spatial_tile=4, spatial_overlap=4), "spatial_overlap=4"),
        (dict(temporal_overlap=-1), "temporal_overlap=-1"),
        (dict(temporal_context=0), "temporal_context=0"),
    ],
)
def test_invalid_tile_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TileConfig(**kwargs)
