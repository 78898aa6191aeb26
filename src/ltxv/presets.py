"""Named model sizes (the only place sizes live): tiny for tests and laptops, official 2B / 13B."""

from __future__ import annotations

from .config import DiTConfig, ModelSpec, SchedulerConfig, VAEBlock, VAEConfig

# 0.9.0 encoder (also the 0.9.1 encoder): stride-2 causal convs and channel-doubling res blocks.
VAE_090_ENCODER = (
    VAEBlock("res_x", 4),
    VAEBlock("compress_all"),
    VAEBlock("res_x_y"),
    VAEBlock("res_x", 3),
    VAEBlock("compress_all"),
    VAEBlock("res_x_y"),
    VAEBlock("res_x", 3),
    VAEBlock("compress_all"),
    VAEBlock("res_x", 3),
    VAEBlock("res_x", 4),
)
VAE_090 = VAEConfig(
    encoder_blocks=VAE_090_ENCODER, decoder_blocks=VAE_090_ENCODER, timestep_conditioning=False
)
VAE_091 = VAEConfig(
    encoder_blocks=VAE_090_ENCODER,
    decoder_blocks=(
        VAEBlock("res_x", 5, inject_noise=True),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 6, inject_noise=True),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 7, inject_noise=True),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 8),
    ),
    timestep_conditioning=True,
)
VAE_095 = VAEConfig()  # the defaults are the 0.9.5+ VAE (0.9.6, 0.9.7, 0.9.8 share it)

DIT_2B = DiTConfig()
DIT_13B = DiTConfig(num_layers=48, head_dim=128)

SD3 = SchedulerConfig(kind="sd3", shift_terminal=0.1)
LINEAR_QUADRATIC = SchedulerConfig(kind="linear_quadratic")

# Tiny but complete: the real 32x32x8 compression with a few channels, a 2-block DiT; runs in ms on CPU.
TINY_VAE = VAEConfig(
    encoder_blocks=(
        VAEBlock("res_x", 1),
        VAEBlock("compress_space_res"),
        VAEBlock("compress_time_res"),
        VAEBlock("compress_all_res"),
        VAEBlock("compress_all_res"),
        VAEBlock("res_x", 1),
    ),
    decoder_blocks=(
        VAEBlock("res_x", 1),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 1),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 1),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 1),
    ),
    latent_channels=16,
    encoder_base_channels=8,
    decoder_base_channels=8,
)
TINY_DIT = DiTConfig(
    in_channels=16, out_channels=16, num_layers=2, num_heads=2, head_dim=8, caption_channels=32
)

# The bundled demo model (shapes world, CPU): the real 32x32x8, 128-channel latent at small widths, a 4-block
# DiT over 64-d text features from a small T5-style encoder (see MODELS.md for the recipe).
DEMO_VAE = VAEConfig(
    encoder_blocks=TINY_VAE.encoder_blocks,
    decoder_blocks=TINY_VAE.decoder_blocks,
    latent_channels=128,
    encoder_base_channels=16,
    decoder_base_channels=16,
)
DEMO_DIT = DiTConfig(
    in_channels=128, out_channels=128, num_layers=4, num_heads=8, head_dim=32, caption_channels=64
)

PRESETS: dict[str, ModelSpec] = {
    "demo": ModelSpec(
        vae=DEMO_VAE, dit=DEMO_DIT, scheduler=SchedulerConfig(kind="sd3", shift_terminal=None), version="demo"
    ),
    "tiny": ModelSpec(vae=TINY_VAE, dit=TINY_DIT, scheduler=LINEAR_QUADRATIC, version="tiny"),
    "ltxv-2b-0.9": ModelSpec(vae=VAE_090, dit=DIT_2B, scheduler=SD3, version="0.9.0"),
    "ltxv-2b-0.9.1": ModelSpec(vae=VAE_091, dit=DIT_2B, scheduler=SD3, version="0.9.1"),
    "ltxv-2b-0.9.5": ModelSpec(
        vae=VAE_095,
        dit=DiTConfig(causal_temporal_positioning=True),
        scheduler=LINEAR_QUADRATIC,
        version="0.9.5",
    ),
    "ltxv-13b-0.9.7": ModelSpec(
        vae=VAE_095,
        dit=DiTConfig(num_layers=48, head_dim=128, causal_temporal_positioning=True),
        scheduler=LINEAR_QUADRATIC,
        version="0.9.7",
    ),
}
PRESETS["2b"] = PRESETS["ltxv-2b-0.9.5"]
PRESETS["13b"] = PRESETS["ltxv-13b-0.9.7"]


def get_preset(name: str) -> ModelSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
