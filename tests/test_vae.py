"""Video-VAE: parity with diffusers for the 0.9.0 / 0.9.1 / 0.9.5 generations, causality, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import DIFFUSERS_VAE_CONFIGS, randomize_, rel_err

from ltxv.convert import vae_config_from_diffusers, vae_keys_from_diffusers, vae_to_diffusers_layout
from ltxv.presets import TINY_VAE
from ltxv.vae.conv import patchify, unpatchify
from ltxv.vae.model import VideoVAE

diffusers = pytest.importorskip("diffusers")
TOL = 1e-4  # relative error bound required by the core issue (fp32); measured: <= 3e-7


def _pair(version: str) -> tuple[VideoVAE, torch.nn.Module]:
    ref = randomize_(diffusers.AutoencoderKLLTXVideo(**DIFFUSERS_VAE_CONFIGS[version]).eval(), seed=1)
    cfg = vae_config_from_diffusers(dict(ref.config))
    ours = VideoVAE(cfg).eval()
    ours.load_state_dict(vae_keys_from_diffusers(ref.state_dict(), vae_to_diffusers_layout(cfg)), strict=True)
    return ours, ref


def _stats(ref: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return ref.latents_mean.view(1, -1, 1, 1, 1), ref.latents_std.view(1, -1, 1, 1, 1)


@pytest.mark.parametrize("version", list(DIFFUSERS_VAE_CONFIGS))
@pytest.mark.parametrize("shape", [(2, 3, 9, 64, 96), (1, 3, 17, 96, 64), (1, 3, 1, 32, 64)])
def test_encode_decode_match_diffusers(version, shape):
    ours, ref = _pair(version)
    video = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    mean, std = _stats(ref)
    t = torch.linspace(0.0, 0.2, shape[0])
    with torch.no_grad():
        z = ours.encode(video)
        z_ref = (ref.encode(video).latent_dist.mean - mean) / std
        torch.manual_seed(7)  # 0.9.1 decoders inject noise from the global RNG in both implementations
        x = ours.decode(z, timestep=t)
        torch.manual_seed(7)
        x_ref = ref.decode(z_ref * std + mean, temb=t).sample
    f = (shape[2] - 1) // 8 + 1
    assert z.shape == (shape[0], 16, f, shape[3] // 32, shape[4] // 32)
    assert x.shape == shape
    assert rel_err(z, z_ref) < TOL
    assert rel_err(x, x_ref) < TOL


@pytest.mark.parametrize("version", list(DIFFUSERS_VAE_CONFIGS))
def test_config_round_trips_through_diffusers_schema(version):
    cfg = vae_config_from_diffusers(DIFFUSERS_VAE_CONFIGS[version])
    layout = vae_to_diffusers_layout(cfg)
    for key, value in DIFFUSERS_VAE_CONFIGS[version].items():
        got = layout.config[key]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == value, key
    assert cfg.temporal_compression == 8 and cfg.spatial_compression == 32


def test_encoder_is_causal():
    """As the official test: frame 0 alone -> latent frame 0; the first 9 frames -> latent frames 0..1."""
    vae = randomize_(VideoVAE(TINY_VAE).eval(), seed=2, scale=0.2)
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    with torch.no_grad():
        full = vae.encode(video)
        first = vae.encode(video[:, :, :1])
        nine = vae.encode(video[:, :, :9])
        changed = video.clone()
        changed[:, :, 9:] = torch.rand_like(changed[:, :, 9:])
        prefix = vae.encode(changed)[:, :, :2]
    torch.testing.assert_close(first, full[:, :, :1], atol=1e-6, rtol=0)
    torch.testing.assert_close(nine, full[:, :, :2], atol=1e-6, rtol=0)
    torch.testing.assert_close(prefix, full[:, :, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(vae.encode(changed)[:, :, 2:], full[:, :, 2:])  # later frames do matter


def test_patchify_channel_order_is_official():
    """channel = c*16 + w_off*4 + h_off (column offset is the slower index)."""
    video = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 3, 1, 4, 4)
    x = patchify(video, 4)
    for c in range(3):
        for h in range(4):
            for w in range(4):
                assert x[0, c * 16 + w * 4 + h, 0, 0, 0] == video[0, c, 0, h, w]
    torch.testing.assert_close(unpatchify(x, 4), video)


def test_normalize_round_trip_and_decoder_timestep_used():
    vae = randomize_(VideoVAE(TINY_VAE).eval(), seed=4)
    z = torch.randn(1, 16, 2, 2, 2)
    torch.testing.assert_close(vae.normalize(vae.denormalize(z)), z, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        a, b = vae.decode(z, timestep=0.0), vae.decode(z, timestep=0.2)
    assert a.shape == (1, 3, 9, 64, 64)
    assert not torch.allclose(a, b)  # the 0.9.5-style decoder is timestep-conditioned


def test_noise_injection_is_reproducible_with_generator():
    ours, _ = _pair("0.9.1")
    z = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        a = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(0))
        b = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(0))
        c = ours.decode(z, 0.05, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("shape", [(1, 3, 8, 64, 64), (1, 3, 9, 48, 64), (1, 4, 9, 64, 64), (3, 9, 64, 64)])
def test_bad_video_shapes_are_named(shape):
    vae = VideoVAE(TINY_VAE)
    with pytest.raises(ValueError, match="video"):
        vae.encode(torch.zeros(shape))
