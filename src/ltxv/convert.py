"""The only module that knows foreign names: official (native) and diffusers configs and key rename tables.

Our module names are the official LTX-Video names, so native <-> ltxv is a prefix change plus the latent
statistics; diffusers <-> ltxv is a rename table generated from the VAE block list (diffusers groups the
official blocks into down/up blocks) and a fixed table for the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from .config import DiTConfig, SchedulerConfig, T5Config, VAEBlock, VAEConfig

V = TypeVar("V")  # state-dict values: tensors, or foreign key names when only the mapping is wanted


class ConversionError(ValueError):
    """A config or state dict that cannot be expressed in the requested format."""


# ----------------------------------------------------------------------------------------------------------
# Native (official single-file) configs
# ------------------------------------------------------------------------------------------------------------

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
    """Official `RectifiedFlowScheduler` JSON: shifting "SD3" -> sd3; otherwise linear-quadratic (0.9.5+)."""
    if not d:
        return SchedulerConfig()
    if d.get("shifting") == "SD3":
        return SchedulerConfig(kind="sd3", shift_terminal=d.get("target_shift_terminal"))
    return SchedulerConfig(kind="linear_quadratic", shift_terminal=None)


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
        raise ConversionError(f"unexpected keys outside vae./model.diffusion_model.: {_names(stray)}")
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


# ----------------------------------------------------------------------------------------------------------
# Diffusers transformer
# ------------------------------------------------------------------------------------------------------------

# ours -> diffusers, applied as substring replacements in this order (the inverse reverses pairs)
DIT_DIFFUSERS_RENAMES = (
    ("patchify_proj", "proj_in"),
    ("adaln_single", "time_embed"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)


def dit_keys_to_diffusers(sd: dict[str, V]) -> dict[str, V]:
    return {_replace_all(k, DIT_DIFFUSERS_RENAMES): v for k, v in sd.items()}


def dit_keys_from_diffusers(sd: dict[str, V]) -> dict[str, V]:
    return {_replace_all(k, tuple((b, a) for a, b in DIT_DIFFUSERS_RENAMES)): v for k, v in sd.items()}


def dit_config_from_diffusers(d: dict[str, Any]) -> DiTConfig:
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
    # not in diffusers' schema; diffusers ignores it, we write and read it to keep round trips lossless
    return replace(cfg, causal_temporal_positioning=bool(d.get("causal_temporal_positioning", False)))


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


# ----------------------------------------------------------------------------------------------------------
# Diffusers VAE: diffusers groups the official blocks as
#   encoder down block = resnets -> downsampler -> conv_out (channel change); last res_x = mid_block
#   decoder: first res_x = mid_block; up block = conv_in (width change) -> upsampler -> resnets, time_embedder
# ------------------------------------------------------------------------------------------------------------

# inside a block: ours -> diffusers
VAE_INNER_RENAMES = (
    ("res_blocks.", "resnets."),
    ("norm3.norm.", "norm3."),
    ("conv_shortcut.", "conv_shortcut.conv."),
)
VAE_TOP_RENAMES = {
    "latent_mean": "latents_mean",
    "latent_std": "latents_std",
    "decoder.last_time_embedder.": "decoder.time_embedder.",
    "decoder.last_scale_shift_table": "decoder.scale_shift_table",
}
_ROLE_PHASE = {"resnets": 0, "downsampler": 1, "conv_out": 2, "conv_in": 0, "upsampler": 1, "up_resnets": 2}


def _group(
    blocks: list[tuple[int, VAEBlock]], role_of: dict[str, str]
) -> list[dict[str, tuple[int, VAEBlock]]]:
    """Greedy grouping of our blocks into diffusers blocks: roles inside one group strictly follow the order
    of `_ROLE_PHASE`; a role that cannot come next starts a new group. Returns role -> (our index, block)."""
    groups: list[dict[str, tuple[int, VAEBlock]]] = []
    last_phase = 99
    for i, b in blocks:
        role = role_of[b.kind]
        if _ROLE_PHASE[role] <= last_phase:
            groups.append({})
        groups[-1][role] = (i, b)
        last_phase = _ROLE_PHASE[role]
    return groups


@dataclass(frozen=True)
class DiffusersVAELayout:
    """A diffusers `AutoencoderKLLTXVideo` config plus the module prefix table ours -> diffusers."""

    config: dict[str, Any]
    prefixes: dict[str, str]


def vae_to_diffusers_layout(cfg: VAEConfig) -> DiffusersVAELayout:
    """Express a VAEConfig in diffusers' schema, or raise ConversionError naming what it cannot hold."""
    if cfg.spatial_padding_mode != "zeros" or cfg.latent_log_var != "uniform" or cfg.in_channels != 3:
        raise ConversionError("diffusers' LTX VAE supports only zero padding, uniform log-variance and RGB")
    prefixes: dict[str, str] = {}
    enc = _encoder_layout(cfg, prefixes)
    dec = _decoder_layout(cfg, prefixes)
    config = {
        "_class_name": "AutoencoderKLLTXVideo",
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": cfg.latent_channels,
        **enc,
        **dec,
        "timestep_conditioning": cfg.timestep_conditioning,
        "patch_size": cfg.patch_size,
        "patch_size_t": 1,
        "resnet_norm_eps": cfg.norm_eps,
        "scaling_factor": 1.0,
        "encoder_causal": True,
        "decoder_causal": cfg.causal_decoder,
        "spatial_compression_ratio": cfg.spatial_compression,
        "temporal_compression_ratio": cfg.temporal_compression,
    }
    return DiffusersVAELayout(config, prefixes)


_DOWNSAMPLE_TYPES = {
    "compress_all": "conv",
    "compress_space_res": "spatial",
    "compress_time_res": "temporal",
    "compress_all_res": "spatiotemporal",
}


def _encoder_layout(cfg: VAEConfig, prefixes: dict[str, str]) -> dict[str, Any]:
    blocks = list(enumerate(cfg.encoder_blocks))
    mid_layers = 0
    if blocks and blocks[-1][1].kind == "res_x":
        i, b = blocks.pop()
        prefixes[f"encoder.down_blocks.{i}."] = "encoder.mid_block."
        mid_layers = b.num_layers
    v095 = any(b.kind.endswith("_res") for _, b in blocks)
    role_of = {"res_x": "resnets", "res_x_y": "conv_out", **{k: "downsampler" for k in _DOWNSAMPLE_TYPES}}
    for _, b in blocks:
        if b.kind not in role_of or (v095 and b.kind == "res_x_y"):
            raise ConversionError(f"encoder block {b.kind!r} has no diffusers equivalent in this block list")
    ch = cfg.encoder_base_channels
    outs, layers, scaling, dtypes = [ch], [], [], []
    for g, grp in enumerate(_group(blocks, role_of)):
        for role, (i, _) in grp.items():
            sub = {"resnets": "", "downsampler": "downsamplers.0.", "conv_out": "conv_out."}[role]
            prefixes[f"encoder.down_blocks.{i}."] = f"encoder.down_blocks.{g}.{sub}"
        layers.append(grp["resnets"][1].num_layers if "resnets" in grp else 0)
        down = grp.get("downsampler")
        scaling.append(down is not None)
        dtypes.append(_DOWNSAMPLE_TYPES[down[1].kind] if down else "conv")
        for role in ("downsampler", "conv_out"):
            if role in grp and grp[role][1].kind != "compress_all":
                ch *= grp[role][1].multiplier
        outs.append(ch)
    if v095:  # diffusers: n blocks, block_out_channels has n+1 entries (input of block 0 first)
        return {
            "block_out_channels": tuple(outs),
            "down_block_types": ("LTXVideo095DownBlock3D",) * len(layers),
            "layers_per_block": (*layers, mid_layers),
            "spatio_temporal_scaling": tuple(scaling),
            "downsample_type": tuple(dtypes),
        }
    if (
        len(outs) < 2 or outs[-1] != outs[-2]
    ):  # diffusers' last down block cannot change width: add an empty one
        layers.append(0)
        scaling.append(False)
        outs.append(outs[-1])
    return {
        "block_out_channels": tuple(outs[:-1]),
        "down_block_types": ("LTXVideoDownBlock3D",) * len(layers),
        "layers_per_block": (*layers, mid_layers),
        "spatio_temporal_scaling": tuple(scaling),
        "downsample_type": ("conv",) * len(layers),
    }


def _decoder_layout(cfg: VAEConfig, prefixes: dict[str, str]) -> dict[str, Any]:
    role_of = {"res_x_y": "conv_in", "compress_all": "upsampler", "res_x": "up_resnets"}
    blocks = list(enumerate(reversed(cfg.decoder_blocks)))  # our up_blocks order
    if any(b.kind not in role_of for _, b in blocks):
        raise ConversionError("decoder compress_time/compress_space blocks have no diffusers equivalent")
    ch = cfg.decoder_width
    mid_layers, mid_noise = 0, False
    if blocks and blocks[0][1].kind == "res_x":
        j, b = blocks.pop(0)
        prefixes[f"decoder.up_blocks.{j}."] = "decoder.mid_block."
        mid_layers, mid_noise = b.num_layers, b.inject_noise
    elif cfg.timestep_conditioning:
        raise ConversionError(
            "a timestep-conditioned decoder must start with res_x to map to diffusers' mid block"
        )
    outs, layers, scaling, noise, residual, factor = [], [], [], [], [], []
    for g, grp in enumerate(_group(blocks, role_of)):
        for role, (j, _) in grp.items():
            sub = {"conv_in": "conv_in.", "upsampler": "upsamplers.0.", "up_resnets": ""}[role]
            prefixes[f"decoder.up_blocks.{j}."] = f"decoder.up_blocks.{g}.{sub}"
        up = grp["upsampler"][1] if "upsampler" in grp else None
        f = up.multiplier if up else 1
        if (
            "conv_in" in grp
        ):  # diffusers runs conv_in before the upsampler but sizes it after: only f == 1 works
            if cfg.timestep_conditioning or g == 0 or f != 1:
                raise ConversionError(
                    "this decoder's channel-changing res block has no place in diffusers' layout"
                )
            ch //= grp["conv_in"][1].multiplier
        if cfg.timestep_conditioning and "up_resnets" not in grp:
            raise ConversionError(
                "diffusers gives every timestep-conditioned up block a time embedder: need res_x"
            )
        block_noise = {b.inject_noise for r, (_, b) in grp.items() if r != "upsampler"}
        if len(block_noise) > 1:
            raise ConversionError("diffusers shares inject_noise between the res blocks of one up block")
        outs.append(ch)  # the width entering the upsampler
        ch //= f
        layers.append(grp["up_resnets"][1].num_layers if "up_resnets" in grp else 0)
        scaling.append(up is not None)
        noise.append(block_noise == {True})
        residual.append(bool(up and up.residual))
        factor.append(f)

    def rev(xs: list[Any]) -> tuple[Any, ...]:  # diffusers lists the decoder in encoder order
        return tuple(reversed(xs))

    return {
        "decoder_block_out_channels": rev(outs),
        "decoder_layers_per_block": rev([mid_layers, *layers]),
        "decoder_spatio_temporal_scaling": rev(scaling),
        "decoder_inject_noise": rev([mid_noise, *noise]),
        "upsample_residual": rev(residual),
        "upsample_factor": rev(factor),
    }


def vae_config_from_diffusers(d: dict[str, Any]) -> VAEConfig:
    """diffusers `AutoencoderKLLTXVideo` config -> VAEConfig (the inverse of `vae_to_diffusers_layout`)."""
    if d.get("patch_size_t", 1) != 1 or not d.get("encoder_causal", True):
        raise ConversionError(
            "diffusers VAE with patch_size_t != 1 or a non-causal encoder is not an LTX layout"
        )
    boc = list(d.get("block_out_channels", (128, 256, 512, 512)))
    layers = list(d.get("layers_per_block", (4, 3, 3, 3, 4)))
    scaling = list(d.get("spatio_temporal_scaling", (True, True, True, False)))
    types_ = list(d.get("down_block_types", ("LTXVideoDownBlock3D",) * len(boc)))
    dtypes = list(d.get("downsample_type", ("conv",) * len(boc)))
    v095 = types_[-1] == "LTXVideo095DownBlock3D"
    if len(set(types_)) > 1:
        raise ConversionError(f"mixed diffusers down block types {types_} are not supported")
    enc: list[VAEBlock] = []
    n = len(boc) - 1 if v095 else len(boc)
    for i in range(n):
        cin, cout = boc[i], boc[i + 1] if (v095 or i + 1 < n) else boc[i]
        if layers[i]:
            enc.append(VAEBlock("res_x", layers[i]))
        if scaling[i]:
            kind = {v: k for k, v in _DOWNSAMPLE_TYPES.items()}[dtypes[i] if v095 else "conv"]
            enc.append(VAEBlock(kind, multiplier=1 if kind == "compress_all" else _ratio(cout, cin)))
        if cin != cout and not (v095 and scaling[i] and dtypes[i] != "conv"):
            if v095:
                raise ConversionError(f"diffusers 0.9.5 down block {i} changes width without a downsampler")
            enc.append(VAEBlock("res_x_y", multiplier=_ratio(cout, cin)))
    if layers[-1]:
        enc.append(VAEBlock("res_x", layers[-1]))

    boc_r = list(reversed(d.get("decoder_block_out_channels", (128, 256, 512, 512))))
    layers_r = list(reversed(d.get("decoder_layers_per_block", (4, 3, 3, 3, 4))))
    scaling_r = list(reversed(d.get("decoder_spatio_temporal_scaling", (True, True, True, False))))
    noise_r = list(reversed(d.get("decoder_inject_noise", (False,) * (len(boc_r) + 1))))
    residual_r = list(reversed(d.get("upsample_residual", (False,) * len(boc_r))))
    factor_r = list(reversed(d.get("upsample_factor", (1,) * len(boc_r))))
    dec = [VAEBlock("res_x", layers_r[0], inject_noise=noise_r[0])] if layers_r[0] else []
    ch = boc_r[0]
    for i in range(len(boc_r)):
        f = factor_r[i]
        cin, cout = ch // f, boc_r[i] // f
        if cin != cout:
            if f != 1 or i == 0:
                raise ConversionError(
                    f"diffusers up block {i}: conv_in with upsample_factor {f} does not run"
                )
            dec.append(VAEBlock("res_x_y", multiplier=_ratio(cin, cout), inject_noise=noise_r[i + 1]))
        if scaling_r[i]:
            dec.append(VAEBlock("compress_all", multiplier=f, residual=residual_r[i]))
        if layers_r[i + 1]:
            dec.append(VAEBlock("res_x", layers_r[i + 1], inject_noise=noise_r[i + 1]))
        ch = cout
    return VAEConfig(
        encoder_blocks=tuple(enc),
        decoder_blocks=tuple(reversed(dec)),
        in_channels=d.get("in_channels", 3),
        latent_channels=d.get("latent_channels", 128),
        patch_size=d.get("patch_size", 4),
        encoder_base_channels=boc[0],
        decoder_base_channels=ch,
        timestep_conditioning=d.get("timestep_conditioning", False),
        causal_decoder=d.get("decoder_causal", False),
        norm_eps=d.get("resnet_norm_eps", 1e-6),
    )


def _ratio(big: int, small: int) -> int:
    if big % small:
        raise ConversionError(f"channel change {small} -> {big} is not an integer multiple")
    return big // small


def _prefix_map(key: str, table: dict[str, str], inner: tuple[tuple[str, str], ...]) -> str:
    """Longest matching module prefix from `table`, then the inner renames on the rest of the key."""
    best = max((p for p in table if key.startswith(p)), key=len, default=None)
    if best is None:
        return key
    return table[best] + _replace_all(key[len(best) :], inner)


def vae_keys_to_diffusers(sd: dict[str, V], layout: DiffusersVAELayout) -> dict[str, V]:
    out = {}
    for key, value in sd.items():
        top = next((p for p in VAE_TOP_RENAMES if key.startswith(p)), None)
        new = (
            VAE_TOP_RENAMES[top] + key[len(top) :]
            if top
            else _prefix_map(key, layout.prefixes, VAE_INNER_RENAMES)
        )
        out[new] = value
    return out


def vae_keys_from_diffusers(sd: dict[str, V], layout: DiffusersVAELayout) -> dict[str, V]:
    inverse = {v: k for k, v in layout.prefixes.items()}
    inner = tuple((b, a) for a, b in VAE_INNER_RENAMES)
    top_inv = {v: k for k, v in VAE_TOP_RENAMES.items()}
    out = {}
    for key, value in sd.items():
        top = next((p for p in top_inv if key.startswith(p)), None)
        out[top_inv[top] + key[len(top) :] if top else _prefix_map(key, inverse, inner)] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# T5 text encoder (transformers `T5EncoderModel` folders: config.json + safetensors)
# ------------------------------------------------------------------------------------------------------------

T5_RENAMES = (
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.", "rel_bias."),
    ("encoder.block.", "blocks."),
    (".layer.0.SelfAttention.", ".attn."),
    (".layer.0.layer_norm.", ".attn_norm."),
    (".layer.1.DenseReluDense.", ".ff."),
    (".layer.1.layer_norm.", ".ff_norm."),
    ("encoder.final_layer_norm.", "final_norm."),
)
T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")  # tied: either may be stored
T5_IGNORED_PREFIXES = ("decoder.", "lm_head.")  # a full encoder-decoder checkpoint's other half


def t5_config_from_hf(d: dict[str, Any]) -> T5Config:
    """transformers T5 config.json -> T5Config; only encoder-relevant fields are read."""
    if d.get("model_type") != "t5":
        raise ConversionError(f"expected a T5 config.json (model_type 't5'), got {d.get('model_type')!r}")
    proj = d.get("feed_forward_proj", "relu")  # "relu" | "gated-gelu" | "gated-silu" ...
    gated = d.get("is_gated_act", proj.startswith("gated-"))
    act = d.get("dense_act_fn", "gelu_new" if proj == "gated-gelu" else proj.removeprefix("gated-"))
    try:
        return T5Config(
            vocab_size=d["vocab_size"],
            d_model=d["d_model"],
            d_kv=d["d_kv"],
            d_ff=d["d_ff"],
            num_layers=d["num_layers"],
            num_heads=d["num_heads"],
            num_buckets=d.get("relative_attention_num_buckets", 32),
            max_distance=d.get("relative_attention_max_distance", 128),
            eps=d.get("layer_norm_epsilon", 1e-6),
            gated=gated,
            activation=act,
        )
    except KeyError as err:
        raise ConversionError(f"T5 config.json lacks {err.args[0]!r}") from None
    except ValueError as err:
        raise ConversionError(f"T5 config.json: {err}") from None


def t5_keys_from_hf(sd: dict[str, V]) -> dict[str, V]:
    """transformers T5 encoder state dict -> ours (`ltxv.t5.T5Encoder`); decoder / LM-head keys dropped."""
    out: dict[str, V] = {}
    for key, value in sd.items():
        if key in T5_EMBEDDINGS:
            out["embed.weight"] = value
        elif not key.startswith(T5_IGNORED_PREFIXES):
            out[_replace_all(key, T5_RENAMES)] = value
    return out


def _replace_all(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for a, b in pairs:
        key = key.replace(a, b)
    return key


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
