"""Shared fixtures: tiny configs of every official VAE variant (in diffusers' schema), tiny DiT, helpers."""

from __future__ import annotations

import pytest
import torch

# Tiny instances of the three official VAE generations, written in diffusers' AutoencoderKLLTXVideo schema.
DIFFUSERS_VAE_CONFIGS = {
    "0.9.0": dict(
        latent_channels=16,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=(1, 1, 2, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_block_out_channels=(8, 16, 32, 32),
        decoder_layers_per_block=(1, 2, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=False,
    ),
    "0.9.1": dict(
        latent_channels=16,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_block_out_channels=(8, 16, 32),
        decoder_layers_per_block=(1, 2, 1, 2),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(True, True, True, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
    ),
    "0.9.5": dict(
        latent_channels=16,
        block_out_channels=(8, 16, 32, 64, 128),
        layers_per_block=(1, 2, 1, 1, 1),
        down_block_types=("LTXVideo095DownBlock3D",) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        spatio_temporal_scaling=(True,) * 4,
        decoder_block_out_channels=(8, 16, 32),
        decoder_layers_per_block=(1, 1, 2, 1),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False,) * 4,
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    ),
}

DIFFUSERS_DIT_CONFIG = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    num_layers=2,
    caption_channels=24,
)


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Give every parameter and float buffer random values (zero-initialised scales included) so that parity
    tests exercise every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("latents_std") or name.endswith("latent_std"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("timestep_scale_multiplier"):
                t.fill_(900.0)
            else:
                t.copy_(
                    torch.randn(t.shape, generator=g) * scale / max(1.0, t[0].numel() ** 0.5)
                    if t.ndim > 1
                    else torch.randn(t.shape, generator=g) * scale
                )
    return module


def tiny_random_models():
    """(spec, vae, dit): the tiny preset with random weights (randomize_), as CLI and server tests save."""
    import ltxv
    from ltxv.presets import PRESETS

    spec = PRESETS["tiny"]
    return spec, randomize_(ltxv.VideoVAE(spec.vae), 1, 0.2), randomize_(ltxv.VideoDiT(spec.dit), 2)


def position_sensitive_dit(causal: bool, seed: int = 2):
    """Tiny DiT whose output depends on token positions: head_dim 24 (8 RoPE frequencies, not 2), weights at
    scale 1 and self-attention q/k norms x10. With the tiny preset at randomize_'s default scale, attention is
    almost uniform: causal_temporal_positioning on/off moved the T2V latents by only 4e-7 (< the 1e-4 bound);
    with this model it moves them by ~12%."""
    import dataclasses

    import ltxv
    from ltxv.presets import PRESETS

    cfg = dataclasses.replace(PRESETS["tiny"].dit, head_dim=24, causal_temporal_positioning=causal)
    dit = randomize_(ltxv.VideoDiT(cfg), seed, 1.0)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if ".attn1." in name and name.endswith("_norm.weight"):
                p.mul_(10)
    return dit


def shard_safetensors(file, index_name: str) -> dict[str, str]:
    """Split a safetensors `file` into two shards beside it (tensors alternately), listed by a Hugging Face
    index `index_name` there, as large repos store weights; the file itself is removed. -> the weight map."""
    import json

    from safetensors.torch import load_file, save_file

    tensors = load_file(file)
    file.unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, file.parent / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (file.parent / index_name).write_text(json.dumps({"weight_map": weight_map}))
    return weight_map


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.fixture
def tmp_path_str(tmp_path):
    return str(tmp_path)
