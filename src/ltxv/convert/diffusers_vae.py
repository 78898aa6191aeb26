"""diffusers `AutoencoderKLLTXVideo` configs and keys (a layout generated from our block list).

diffusers groups the official blocks as
  encoder down block = resnets -> downsampler -> conv_out (channel change); last res_x = mid_block
  decoder: first res_x = mid_block; up block = conv_in (width change) -> upsampler -> resnets, time_embedder
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import VAEBlock, VAEConfig
from .common import ConversionError, V, replace_all

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
    return table[best] + replace_all(key[len(best) :], inner)


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
