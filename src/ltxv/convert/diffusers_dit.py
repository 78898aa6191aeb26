"""diffusers `LTXVideoTransformer3DModel` and `FlowMatchEulerDiscreteScheduler` configs and keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config import DiTConfig, SchedulerConfig
from .common import ConversionError, V, replace_all

# ours -> diffusers, applied as substring replacements in this order (the inverse reverses pairs)
DIT_DIFFUSERS_RENAMES = (
    ("patchify_proj", "proj_in"),
    ("adaln_single", "time_embed"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)


def dit_keys_to_diffusers(sd: dict[str, V]) -> dict[str, V]:
    return {replace_all(k, DIT_DIFFUSERS_RENAMES): v for k, v in sd.items()}


def dit_keys_from_diffusers(sd: dict[str, V]) -> dict[str, V]:
    return {replace_all(k, tuple((b, a) for a, b in DIT_DIFFUSERS_RENAMES)): v for k, v in sd.items()}


def dit_config_from_diffusers(d: dict[str, Any], causal_default: bool = False) -> DiTConfig:
    """diffusers transformer config.json -> DiTConfig. diffusers' schema has no `causal_temporal_positioning`
    (its `LTXConditionPipeline` always applies the causal offset, `LTXPipeline` never): when the key is
    absent it is `causal_default` (true for the 0.9.5+ models, spec §3.7; the caller knows the VAE beside
    it)."""
    if d.get("patch_size", 1) != 1 or d.get("patch_size_t", 1) != 1:
        raise ConversionError("diffusers transformer with patch_size != 1 is not an LTX-Video layout")
    if d.get("activation_fn", "gelu-approximate") != "gelu-approximate" or d.get(
        "norm_elementwise_affine", False
    ):
        raise ConversionError(
            "diffusers transformer: only gelu-approximate and non-affine block norms are supported"
        )
    cfg = DiTConfig(
        in_channels=d.get("in_channels", 128),
        out_channels=d.get("out_channels") or d.get("in_channels", 128),
        num_layers=d.get("num_layers", 28),
        num_heads=d.get("num_attention_heads", 32),
        head_dim=d.get("attention_head_dim", 64),
        caption_channels=d.get("caption_channels", 4096),
        norm_eps=d.get("norm_eps", 1e-6),
        attention_bias=d.get("attention_bias", True),
        attention_out_bias=d.get("attention_out_bias", True),
    )
    if d.get("cross_attention_dim", 2048) != cfg.hidden_dim:
        raise ConversionError(
            f"cross_attention_dim {d.get('cross_attention_dim')} must equal hidden size {cfg.hidden_dim}"
        )
    # not in diffusers' schema; we write and read it to keep round trips lossless
    causal = bool(d.get("causal_temporal_positioning", causal_default))
    return replace(cfg, causal_temporal_positioning=causal)


def dit_config_to_diffusers(cfg: DiTConfig) -> dict[str, Any]:
    if (
        cfg.rope_theta != 10000.0
        or cfg.rope_max_pos != (20.0, 2048.0, 2048.0)
        or cfg.timestep_scale_multiplier != 1000
    ):
        raise ConversionError(
            "diffusers' LTX transformer hard-codes RoPE theta/max_pos and the timestep scale"
        )
    return {
        "_class_name": "LTXVideoTransformer3DModel",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "cross_attention_dim": cfg.hidden_dim,
        "num_layers": cfg.num_layers,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps,
        "caption_channels": cfg.caption_channels,
        "attention_bias": cfg.attention_bias,
        "attention_out_bias": cfg.attention_out_bias,
        "causal_temporal_positioning": cfg.causal_temporal_positioning,
    }


def scheduler_from_diffusers(d: dict[str, Any] | None) -> SchedulerConfig:
    """FlowMatchEulerDiscreteScheduler + dynamic shift = SD3-style schedule; else linear-quadratic."""
    if d and d.get("use_dynamic_shifting"):
        return SchedulerConfig(kind="sd3", shift_terminal=d.get("shift_terminal"))
    return SchedulerConfig(kind="linear_quadratic", shift_terminal=None)


def scheduler_to_diffusers(cfg: SchedulerConfig) -> dict[str, Any]:
    sd3 = cfg.kind == "sd3"
    return {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": sd3,
        "base_shift": 0.95,
        "max_shift": 2.05,
        "base_image_seq_len": 1024,
        "max_image_seq_len": 4096,
        "shift_terminal": cfg.shift_terminal if sd3 else None,
    }
