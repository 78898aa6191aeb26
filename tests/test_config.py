"""Configs: presets round-trip, overrides, official JSON parsing, and the official parameter counts."""

from __future__ import annotations

import re

import pytest
import torch

from ltxv.config import (
    DiTConfig,
    ModelSpec,
    SampleConfig,
    SampleConfigError,
    VAEBlock,
    VAEConfig,
    apply_overrides,
    from_dict,
    to_dict,
)
from ltxv.convert import (
    dit_config_from_native,
    dit_config_to_native,
    vae_config_from_native,
    vae_config_to_native,
)
from ltxv.dit.model import VideoDiT
from ltxv.presets import PRESETS, VAE_090, VAE_091, VAE_095, get_preset
from ltxv.vae.model import VideoVAE

# Official configs as embedded in the single-file checkpoints (ltx_spec.md §2.5, §3.1).
NATIVE_VAE_090 = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "blocks": [
        ["res_x", 4],
        ["compress_all", 1],
        ["res_x_y", 1],
        ["res_x", 3],
        ["compress_all", 1],
        ["res_x_y", 1],
        ["res_x", 3],
        ["compress_all", 1],
        ["res_x", 3],
        ["res_x", 4],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
}
NATIVE_VAE_091 = {
    **NATIVE_VAE_090,
    "timestep_conditioning": True,
    "encoder_blocks": NATIVE_VAE_090["blocks"],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 6, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 7, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 8, "inject_noise": False}],
    ],
}
NATIVE_VAE_095 = {
    **NATIVE_VAE_090,
    "timestep_conditioning": True,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ],
}
NATIVE_DIT_2B = {
    "_class_name": "Transformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "attention_type": "default",
    "caption_channels": 4096,
    "cross_attention_dim": 2048,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "project_to_2d_pos": True,
    "upcast_attention": False,
    "use_linear_projection": False,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
}


def _params(module_cls, cfg) -> int:
    with torch.device("meta"):
        model = module_cls(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("native", "preset", "encoder", "decoder"),
    [
        (NATIVE_VAE_090, VAE_090, 180_404_353, 238_789_296),
        (NATIVE_VAE_091, VAE_091, 180_404_353, 754_572_081),
        (NATIVE_VAE_095, VAE_095, 694_098_881, 552_814_641),
    ],
)
def test_official_vae_configs_parse_and_have_the_official_sizes(native, preset, encoder, decoder):
    cfg = vae_config_from_native(native)
    assert cfg == preset
    assert vae_config_from_native(vae_config_to_native(cfg)) == cfg
    with torch.device("meta"):
        vae = VideoVAE(cfg)
    assert sum(p.numel() for p in vae.encoder.parameters()) == encoder
    assert sum(p.numel() for p in vae.decoder.parameters()) == decoder


def test_official_transformer_sizes():
    cfg = dit_config_from_native(NATIVE_DIT_2B)
    assert cfg == PRESETS["ltxv-2b-0.9"].dit
    assert dit_config_from_native(dit_config_to_native(cfg)) == cfg
    assert _params(VideoDiT, cfg) == 1_923_385_472
    assert _params(VideoDiT, PRESETS["13b"].dit) == 13_042_569_344


def test_native_key_shapes_of_the_095_vae():
    """A few shapes from the official key listing (ltx_spec.md appendix A)."""
    with torch.device("meta"):
        sd = VideoVAE(VAE_095).state_dict()
    assert tuple(sd["encoder.down_blocks.1.conv.conv.weight"].shape) == (64, 128, 3, 3, 3)
    assert tuple(sd["encoder.down_blocks.7.conv.conv.weight"].shape) == (256, 1024, 3, 3, 3)
    assert tuple(sd["encoder.conv_out.conv.weight"].shape) == (129, 2048, 3, 3, 3)
    assert tuple(sd["decoder.up_blocks.1.conv.conv.weight"].shape) == (4096, 1024, 3, 3, 3)
    assert tuple(sd["decoder.up_blocks.0.time_embedder.timestep_embedder.linear_1.weight"].shape) == (
        4096,
        256,
    )
    assert tuple(sd["decoder.last_scale_shift_table"].shape) == (2, 128)
    assert tuple(sd["decoder.timestep_scale_multiplier"].shape) == ()


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(name):
    spec = get_preset(name)
    assert from_dict(ModelSpec, to_dict(spec)) == spec


def test_overrides_coerce_and_reject_unknown_keys():
    spec = apply_overrides(
        PRESETS["tiny"], ["dit.num_layers=4", "dit.causal_temporal_positioning=true", "version=x"]
    )
    assert spec.dit.num_layers == 4 and spec.dit.causal_temporal_positioning is True and spec.version == "x"
    with pytest.raises(ValueError, match="unknown key 'num_layerz'"):
        apply_overrides(PRESETS["tiny"], ["dit.num_layerz=4"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(PRESETS["tiny"], ["dit.num_layers"])
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(PRESETS["tiny"], ["dit.num_layers=four"])
    with pytest.raises(ValueError, match="unknown DiTConfig keys"):
        from_dict(DiTConfig, {"num_layerz": 1})
    with pytest.raises(ValueError, match="expected an integer, got 1.5"):  # not truncated to 1
        apply_overrides(PRESETS["tiny"], ["dit.num_layers=1.5"])
    assert apply_overrides(PRESETS["tiny"], ["dit.num_layers=2.0"]).dit.num_layers == 2


@pytest.mark.parametrize(
    "key, value",
    [
        ("optim.lr", "Infinity"),
        ("optim.lr", "NaN"),
        ("optim.lr", "0"),
        ("optim.grad_clip", "-1"),
        ("vae.disc_lr", "NaN"),
        ("vae.gan_foreground", "-1"),
    ],
)
def test_train_config_rejects_a_non_finite_or_non_positive_learning_rate(key, value):
    from ltxv.config import TrainConfig

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        apply_overrides(TrainConfig(), [f"{key}={value}"])


def test_vae_config_validation():
    with pytest.raises(ValueError, match="unknown encoder block kind"):
        VAEConfig(encoder_blocks=(VAEBlock("bogus"),))
    with pytest.raises(ValueError, match="same factor"):
        VAEConfig(encoder_blocks=(VAEBlock("compress_all"),), decoder_blocks=(VAEBlock("res_x"),))
    with pytest.raises(ValueError, match="padding"):
        VAEConfig(spatial_padding_mode="mirror")


def test_unsupported_native_configs_are_rejected():
    with pytest.raises(ValueError, match="norm_layer"):
        vae_config_from_native({**NATIVE_VAE_090, "norm_layer": "group_norm"})
    with pytest.raises(ValueError, match="activation_fn"):
        dit_config_from_native({**NATIVE_DIT_2B, "activation_fn": "geglu"})


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("guidance", float("nan"), "in [0, 100]"),
        ("guidance", -2.0, "in [0, 100]"),
        ("guidance", float("inf"), "in [0, 100]"),
        ("guidance", 1e308, "in [0, 100]"),  # finite, and made a video of NaN
        ("stg", float("nan"), "in [0, 100]"),
        ("stg", -1.0, "in [0, 100]"),
        ("rescale", float("nan"), "in [0, 1]"),
        ("decode_timestep", 5.0, "in [0, 1]"),
        ("decode_noise_scale", 100.0, "in [0, 1]"),
        ("image_cond_noise_scale", float("nan"), "in [0, 1]"),
        ("tone_map", float("nan"), "in [0, 1]"),
        ("frame_rate", 1e-9, "in [0.001, 1000]"),
        ("frame_rate", float("nan"), "in [0.001, 1000]"),
        ("frame_rate", 5000.0, "in [0.001, 1000]"),
        ("guidance_schedule", (float("nan"),), "in [0, 100]"),
        ("guidance_until", 1.5, "in [0, 1]"),
        ("guidance_until", float("nan"), "in [0, 1]"),
    ],
)
def test_sample_config_rejects_non_finite_and_out_of_range_floats(field, value, allowed):
    extra = {"guidance_timesteps": (1.0,)} if field.endswith("schedule") else {}
    message = rf"^{field} must be a finite number {re.escape(allowed)}"
    with pytest.raises(SampleConfigError, match=message) as e:
        SampleConfig(**{field: value}, **extra)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"stg_blocks": (-1,)}, "stg_blocks"),
        ({"width": 9000}, "width"),
        ({"skip_initial_steps": -1}, "skip_initial_steps"),
        ({"steps": 2.5}, "steps"),  # types: each field's declared one
        ({"stg_blocks": 1}, "stg_blocks"),
        ({"timesteps": 0.5}, "timesteps"),
        ({"negative_prompt": None}, "negative_prompt"),
        ({"cfg_star": 1}, "cfg_star"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_sample_config_rejects_bad_integers(change, field):
    with pytest.raises(SampleConfigError, match=f"^{field} ") as e:
        SampleConfig(**change)
    assert e.value.field == field


def test_sample_config_takes_lists_as_tuples():
    cfg = SampleConfig(stg_blocks=[1, 2], guidance_timesteps=[1.0, 0.5], stg_blocks_schedule=[[1], [2]])
    assert cfg.stg_blocks == (1, 2) and cfg.stg_blocks_schedule == ((1,), (2,))
    hash(cfg)  # frozen and hashable: no list left inside
    import numpy as np

    typed = SampleConfig(steps=np.int64(3), frame_rate=np.float32(12), timesteps=np.array([1.0, 0.5]))
    assert (type(typed.steps), type(typed.frame_rate), typed.timesteps) == (int, float, (1.0, 0.5))


def test_sample_config_accepts_the_edges():
    SampleConfig(guidance=0.0, stg=0.0, rescale=1.0, decode_timestep=1.0, decode_noise_scale=0.0,
                 frame_rate=1000.0, seed=2**64 - 1, max_tokens=512, stg_blocks=(0,))  # fmt: skip


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ((0.2, 0.5), "timesteps must be strictly decreasing; these neighbours are not: [(0.2, 0.5)]"),
        ((1.5, 0.5), "timesteps values [1.5] are outside (0, 1]"),
        ((1.0, 0.0), "timesteps values [0.0] are outside (0, 1]"),
    ],
)
def test_sample_config_checks_explicit_timesteps(timesteps, message):
    """Checked with the config (the flag or request key named), not after the model has loaded."""
    with pytest.raises(SampleConfigError) as e:
        SampleConfig(timesteps=timesteps)
    assert str(e.value).startswith(message) and e.value.field == "timesteps"
