"""Official LTX-Video single-file checkpoints: configs in the safetensors metadata, keys by prefix."""

from __future__ import annotations

from typing import Any

from ..config import DiTConfig, SchedulerConfig, VAEBlock, VAEConfig
from .common import ConversionError, V, names

NATIVE_VAE_PREFIX = "vae."
NATIVE_DIT_PREFIX = "model.diffusion_model."
# our buffer <-> native `per_channel_statistics.*` (the other three native statistics are unused by inference)
NATIVE_STATS = {
    "latent_mean": "per_channel_statistics.mean-of-means",
    "latent_std": "per_channel_statistics.std-of-means",
}
NATIVE_UNUSED_STATS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


def vae_config_from_native(d: dict[str, Any]) -> VAEConfig:
    """Official `CausalVideoAutoencoder` JSON -> VAEConfig (shorthands expanded, official defaults)."""
    if d.get("dims", 3) not in (3, [3]):
        raise ConversionError(f"VAE dims={d.get('dims')!r}: only 3-D VAEs are supported")
    if d.get("norm_layer", "group_norm") != "pixel_norm":
        raise ConversionError(
            f"VAE norm_layer={d.get('norm_layer')!r}: only 'pixel_norm' (all releases) is supported"
        )
    if d.get("use_quant_conv", True) or d.get("normalize_latent_channels", False):
        raise ConversionError("VAE with quant convs or latent BatchNorm is not an LTX-Video release layout")
    log_var = d.get("latent_log_var", "per_channel" if d.get("double_z", True) else "none")

    def blocks(key: str) -> tuple[VAEBlock, ...]:
        raw = d.get(key, d.get("blocks"))
        if not raw:
            raise ConversionError(f"VAE config has neither {key!r} nor 'blocks'")
        out = []
        for name, params in raw:
            params = {"num_layers": params} if isinstance(params, int) else dict(params)
            unknown = set(params) - {"num_layers", "multiplier", "inject_noise", "residual"}
            if name == "attn_res_x" or unknown:
                raise ConversionError(f"VAE block {name} {params}: not supported (unused by every release)")
            out.append(VAEBlock(name, **params))
        return tuple(out)

    return VAEConfig(
        encoder_blocks=blocks("encoder_blocks"),
        decoder_blocks=blocks("decoder_blocks"),
        in_channels=d.get("in_channels", 3),
        latent_channels=d["latent_channels"],
        patch_size=d.get("patch_size", 1),
        encoder_base_channels=d.get("encoder_base_channels", 128),
        decoder_base_channels=d.get("decoder_base_channels", 128),
        timestep_conditioning=d.get("timestep_conditioning", False),
        spatial_padding_mode=d.get("spatial_padding_mode", "zeros"),
        causal_decoder=d.get("causal_decoder", False),
        latent_log_var=log_var,
    )


def _native_blocks(blocks: tuple[VAEBlock, ...]) -> list[list[Any]]:
    out = []
    for b in blocks:
        params: dict[str, Any] = {"num_layers": b.num_layers} if b.kind == "res_x" else {}
        if b.kind != "res_x" and b.multiplier != 1:
            params["multiplier"] = b.multiplier
        if b.inject_noise:
            params["inject_noise"] = True
        if b.residual:
            params["residual"] = True
        out.append([b.kind, params])
    return out


def vae_config_to_native(cfg: VAEConfig) -> dict[str, Any]:
    return {
        "_class_name": "CausalVideoAutoencoder",
        "dims": 3,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.in_channels,
        "latent_channels": cfg.latent_channels,
        "encoder_blocks": _native_blocks(cfg.encoder_blocks),
        "decoder_blocks": _native_blocks(cfg.decoder_blocks),
        "encoder_base_channels": cfg.encoder_base_channels,
        "decoder_base_channels": cfg.decoder_base_channels,
        "scaling_factor": 1.0,
        "norm_layer": "pixel_norm",
        "patch_size": cfg.patch_size,
        "latent_log_var": cfg.latent_log_var,
        "use_quant_conv": False,
        "causal_decoder": cfg.causal_decoder,
        "timestep_conditioning": cfg.timestep_conditioning,
        "spatial_padding_mode": cfg.spatial_padding_mode,
    }


# Native transformer keys whose values must match the only architecture LTX-Video ships.
_NATIVE_DIT_FIXED = {
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "adaptive_norm": "single_scale_shift",
    "positional_embedding_type": "rope",
    "norm_elementwise_affine": False,
}


def dit_config_from_native(d: dict[str, Any]) -> DiTConfig:
    for key, want in _NATIVE_DIT_FIXED.items():
        if key in d and d[key] != want:
            raise ConversionError(f"transformer {key}={d[key]!r} is not supported (LTX-Video uses {want!r})")
    cfg = DiTConfig(
        in_channels=d["in_channels"],
        out_channels=d.get("out_channels") or d["in_channels"],
        num_layers=d["num_layers"],
        num_heads=d["num_attention_heads"],
        head_dim=d["attention_head_dim"],
        caption_channels=d["caption_channels"],
        norm_eps=d.get("norm_eps", 1e-6),
        attention_bias=d.get("attention_bias", True),
        timestep_scale_multiplier=float(d.get("timestep_scale_multiplier") or 1.0),
        rope_theta=float(d.get("positional_embedding_theta", 10000.0)),
        rope_max_pos=tuple(float(v) for v in d.get("positional_embedding_max_pos", (20, 2048, 2048))),
        causal_temporal_positioning=d.get("causal_temporal_positioning", False),
    )
    if d.get("cross_attention_dim", cfg.hidden_dim) != cfg.hidden_dim:
        raise ConversionError(
            f"cross_attention_dim {d['cross_attention_dim']} must equal the hidden size {cfg.hidden_dim}"
        )
    return cfg


def dit_config_to_native(cfg: DiTConfig) -> dict[str, Any]:
    return {
        "_class_name": "Transformer3DModel",
        **_NATIVE_DIT_FIXED,
        "attention_bias": cfg.attention_bias,
        "attention_head_dim": cfg.head_dim,
        "num_attention_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "caption_channels": cfg.caption_channels,
        "cross_attention_dim": cfg.hidden_dim,
        "norm_eps": cfg.norm_eps,
        "dropout": 0.0,
        "attention_type": "default",
        "num_embeds_ada_norm": 1000,
        "project_to_2d_pos": True,
        "use_linear_projection": False,
        "only_cross_attention": False,
        "double_self_attention": False,
        "upcast_attention": False,
        "positional_embedding_theta": cfg.rope_theta,
        "positional_embedding_max_pos": list(cfg.rope_max_pos),
        "timestep_scale_multiplier": cfg.timestep_scale_multiplier,
        "causal_temporal_positioning": cfg.causal_temporal_positioning,
    }


def scheduler_from_native(d: dict[str, Any] | None) -> SchedulerConfig:
    """Official `RectifiedFlowScheduler` JSON -> our schedule. There `sampler` picks the base timesteps
    ("Uniform" linspace by default, "LinearQuadratic", "Constant") and `shifting` ("SD3",
    "SimpleDiffusion", none) shifts them; the checkpoints use two of the combinations: Uniform + SD3 (0.9.0,
    0.9.1) -> "sd3" and LinearQuadratic unshifted (0.9.5+) -> "linear_quadratic". Without a `sampler` key an
    unshifted file is read as 0.9.5+ (spec §5.4); any other combination raises a ConversionError naming it
    (rather than sampling a schedule the model was not made for)."""
    if not d:
        return SchedulerConfig()
    sampler, shifting = d.get("sampler"), d.get("shifting")
    if shifting == "SD3" and sampler in (None, "Uniform"):
        return SchedulerConfig(kind="sd3", shift_terminal=d.get("target_shift_terminal"))
    if shifting is None and sampler in (None, "LinearQuadratic"):
        return SchedulerConfig(kind="linear_quadratic", shift_terminal=None)
    raise ConversionError(
        f"scheduler sampler={sampler!r} with shifting={shifting!r} is not a schedule ltxv samples (the "
        "official checkpoints use 'Uniform' with 'SD3', or 'LinearQuadratic' unshifted)"
    )


def scheduler_to_native(cfg: SchedulerConfig) -> dict[str, Any]:
    if cfg.kind == "sd3":
        return {
            "_class_name": "RectifiedFlowScheduler",
            "num_train_timesteps": 1000,
            "shifting": "SD3",
            "base_resolution": None,
            "target_shift_terminal": cfg.shift_terminal,
            "sampler": "Uniform",
        }
    return {
        "_class_name": "RectifiedFlowScheduler",
        "num_train_timesteps": 1000,
        "shifting": None,
        "base_resolution": None,
        "target_shift_terminal": None,
        "sampler": "LinearQuadratic",
    }


def native_to_ltxv(sd: dict[str, V]) -> tuple[dict[str, V], dict[str, V]]:
    """Official single-file state dict -> (vae, dit) state dicts in our names. Unused statistics are dropped;
    any other key outside the two prefixes is an error."""
    vae, dit, stray = {}, {}, []
    stats = {v: k for k, v in NATIVE_STATS.items()}
    for key, value in sd.items():
        if key.startswith(NATIVE_DIT_PREFIX):
            dit[key[len(NATIVE_DIT_PREFIX) :]] = value
        elif key.startswith(NATIVE_VAE_PREFIX):
            name = key[len(NATIVE_VAE_PREFIX) :]
            if name.startswith("per_channel_statistics."):
                if name.split(".", 1)[1] in NATIVE_UNUSED_STATS:
                    continue
                if name not in stats:
                    stray.append(key)
                    continue
                name = stats[name]
            vae[name] = value
        else:
            stray.append(key)
    if stray:
        raise ConversionError(f"unexpected keys outside vae./model.diffusion_model.: {names(stray)}")
    return vae, dit


def ltxv_to_native(vae: dict[str, V] | None, dit: dict[str, V] | None) -> dict[str, V]:
    out = {}
    for key, value in (vae or {}).items():
        out[NATIVE_VAE_PREFIX + NATIVE_STATS.get(key, key)] = value
    for key, value in (dit or {}).items():
        out[NATIVE_DIT_PREFIX + key] = value
    return out


def guess_native_version(keys: set[str]) -> str:
    """Release guess from tensor names (as diffusers' single-file loader does)."""
    if any(k.endswith("transformer_blocks.47.scale_shift_table") for k in keys):
        return "0.9.7+ (13B)"
    if "vae.encoder.down_blocks.8.res_blocks.0.conv1.conv.weight" in keys and not any(
        k.startswith("vae.encoder.down_blocks.9.") for k in keys
    ):
        return "0.9.5+"
    if "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" in keys:
        return "0.9.1"
    return "0.9.0"
