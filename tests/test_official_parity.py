"""Parity with the official `ltx_video` package on the same native single-file checkpoint.

Skipped unless `ltx_video` is importable: it pins old transformers and pulls torchvision, so CI does not
install it. Run with its sources on the path: `pip download --no-deps ltx-video`, unzip, then
`PYTHONPATH=<unzipped> pytest tests/test_official_parity.py`.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import randomize_, rel_err
from safetensors import safe_open
from safetensors.torch import load_file

import ltxv
from ltxv.config import DiTConfig, ModelSpec
from ltxv.presets import PRESETS, TINY_VAE, VAE_090, VAE_091
from ltxv.weights import save_checkpoint

vae_mod = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
dit_mod = pytest.importorskip("ltx_video.models.transformers.transformer3d")
TOL = 1e-4


def _shrink(cfg):
    """The 0.9.0 / 0.9.1 block lists with few channels (same block language, official code paths)."""
    from dataclasses import replace

    return replace(cfg, latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)


def _write(tmp_path, spec: ModelSpec):
    vae, dit = randomize_(ltxv.VideoVAE(spec.vae), 1), randomize_(ltxv.VideoDiT(spec.dit), 2)
    path = tmp_path / "native.safetensors"
    save_checkpoint(path, spec, vae, dit, fmt="native")
    with safe_open(path, framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    return path, config, load_file(path)


@pytest.mark.parametrize(
    "vae_cfg", [TINY_VAE, _shrink(VAE_090), _shrink(VAE_091)], ids=["0.9.5", "0.9.0", "0.9.1"]
)
def test_vae_matches_official(vae_cfg, tmp_path):
    path, config, tensors = _write(tmp_path, ModelSpec(vae=vae_cfg, dit=PRESETS["tiny"].dit))
    ref = vae_mod.CausalVideoAutoencoder.from_config(config["vae"])
    ref.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("vae.")})
    ref.eval()
    ours = ltxv.load_vae(path)
    video = torch.rand(2, 3, 17, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.tensor([0.05, 0.1])
    with torch.no_grad():
        z = ours.encode(video)
        z_ref = ref.encode(video).latent_dist.mode()
        z_ref = (z_ref - ref.mean_of_means.view(1, -1, 1, 1, 1)) / ref.std_of_means.view(1, -1, 1, 1, 1)
        torch.manual_seed(3)
        x = ours.decode(z, timestep=t)
        torch.manual_seed(3)
        raw = z * ref.std_of_means.view(1, -1, 1, 1, 1) + ref.mean_of_means.view(1, -1, 1, 1, 1)
        x_ref = ref.decode(
            raw, target_shape=video.shape, timestep=t if vae_cfg.timestep_conditioning else None
        ).sample
    assert rel_err(z, z_ref) < TOL
    assert rel_err(x, x_ref) < TOL


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_matches_official(causal, tmp_path):
    dit_cfg = DiTConfig(**{**PRESETS["tiny"].dit.__dict__, "causal_temporal_positioning": causal})
    path, config, tensors = _write(tmp_path, ModelSpec(vae=TINY_VAE, dit=dit_cfg))
    prefix = "model.diffusion_model."
    ref = dit_mod.Transformer3DModel.from_config(config["transformer"])
    ref.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    ref.eval()
    ours = ltxv.load_transformer(path)
    g = torch.Generator().manual_seed(1)
    b, f, h, w = 2, 3, 2, 4
    latents = torch.randn(b, 16, f, h, w, generator=g)
    t = torch.rand(b, f * h * w, generator=g)
    text = torch.randn(b, 6, 32, generator=g)
    mask = torch.ones(b, 6)
    mask[1, 2:] = 0
    coords = ours.token_coords(f, h, w, b, torch.device("cpu"))  # pixel coords, causal fix per config
    grid = coords.clone()
    grid[..., 0] = grid[..., 0] / 24.0  # the official pipeline passes time in seconds
    with torch.no_grad():
        v = ours(latents, t, text, mask, frame_rate=24.0)
        tokens = latents.flatten(2).transpose(1, 2)
        v_ref = ref(
            tokens,
            grid.transpose(1, 2),
            encoder_hidden_states=text,
            timestep=t,
            encoder_attention_mask=mask,
            return_dict=False,
        )[0]
    assert rel_err(v.flatten(2).transpose(1, 2), v_ref) < TOL
