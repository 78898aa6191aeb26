"""Latent upsampler of the LTX-Video 0.9.7+ multi-scale pipeline (x2 in H,W or in time) and AdaIN matching.

Reference: Lightricks/LTX-Video `ltx_video/models/autoencoders/latent_upsampler.py` (module, file layout) and
`pipelines/pipeline_ltx_video.py::adain_filter_latent` / `LTXMultiScalePipeline` (spec §5.9). Parameter names
equal the official ones, so `ltxv-spatial-upscaler-0.9.7/0.9.8.safetensors` and
`ltxv-temporal-upscaler-0.9.7.safetensors` load with identical keys. The upsampler works on UN-normalized
latents: the pipeline un-normalizes, upsamples, re-normalizes, then calls `adain_match` against pass 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .weights import Component, atomic_save, build_model, read_header

CLASS_NAMES = ("LatentUpsampler", "LTXLatentUpsamplerModel")  # official native name, diffusers' name
LTX2_KEYS = ("rational_spatial_scale", "use_rational_resampler")  # LTX-2 upsamplers: a different model
MODEL_PREFIXES = ("vae.", "model.diffusion_model.", "dit.", "transformer.")  # official / ltxv model files


@dataclass(frozen=True)
class UpsamplerConfig:
    """Architecture of `LatentUpsampler`; field names and JSON form are the official file's "config" metadata.

    Released models: spatial x2 (0.9.7, 0.9.8) = the defaults; temporal x2 (0.9.7) = spatial_upsample False,
    temporal_upsample True. GroupNorm(32) runs on `mid_channels`, so it must be a multiple of 32.
    """

    in_channels: int = 128  # latent channels of the VAE
    mid_channels: int = 512
    num_blocks_per_stage: int = 4  # ResBlocks before and after the upsampling conv
    dims: int = 3  # 3: Conv3d over (F, H, W); 2: every conv is a per-frame Conv2d (spatial only)
    spatial_upsample: bool = True  # H, W -> 2H, 2W
    temporal_upsample: bool = False  # F -> 2F - 1 (causal: the first of the doubled frames is dropped)

    def __post_init__(self) -> None:
        for f in fields(self):
            want = bool if f.type in ("bool", bool) else int
            value = getattr(self, f.name)
            if type(value) is not want:  # JSON 1.0 / true must not slip in as an int / bool
                raise ValueError(f"upsampler config: {f.name} must be {want.__name__}, got {value!r}")
        if self.in_channels < 1 or self.num_blocks_per_stage < 0:
            raise ValueError(
                f"upsampler config: need in_channels >= 1 and num_blocks_per_stage >= 0, got "
                f"{self.in_channels} and {self.num_blocks_per_stage}"
            )
        if self.mid_channels < 32 or self.mid_channels % 32:
            raise ValueError(
                f"upsampler config: mid_channels must be a positive multiple of 32 (GroupNorm(32)), "
                f"got {self.mid_channels}"
            )
        if self.dims not in (2, 3):
            raise ValueError(f"upsampler config: dims must be 2 or 3, got {self.dims}")
        if not (self.spatial_upsample or self.temporal_upsample):
            raise ValueError("upsampler config: spatial_upsample or temporal_upsample must be true")
        if self.dims == 2 and self.temporal_upsample:
            # The official dims=2 path feeds 4-D per-frame tensors to a Conv3d here; it cannot work.
            raise ValueError("upsampler config: temporal_upsample needs dims=3 (dims=2 convs are per frame)")

    def to_dict(self) -> dict[str, Any]:
        """The official metadata form (what `LatentUpsampler.config()` writes)."""
        return {"_class_name": CLASS_NAMES[0], **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UpsamplerConfig:
        """Parse an official config dict. Every architecture key is required: the official loader's
        fallbacks (in_channels 4, mid_channels 128, dims 2) differ from its constructor's defaults."""
        if d.get("_class_name", CLASS_NAMES[0]) not in CLASS_NAMES:
            raise ValueError(
                f"upsampler config: _class_name {d['_class_name']!r} is not one of {CLASS_NAMES}"
            )
        names = {f.name for f in fields(cls)}
        if ltx2 := sorted(k for k in d if k in LTX2_KEYS):
            raise ValueError(
                f"upsampler config has {ltx2}: an LTX-2 latent upsampler (rational resampler), "
                "not supported; only the LTX-Video 0.9.7/0.9.8 spatial/temporal x2 upsamplers are"
            )
        unknown = sorted(k for k in d if k not in names and not k.startswith("_"))
        missing = sorted(names - d.keys())
        if unknown or missing:
            raise ValueError(f"upsampler config: unknown keys {unknown}, missing keys {missing}")
        return cls(**{k: d[k] for k in names})


class ResBlock(nn.Module):
    """conv-GN-SiLU-conv-GN, then SiLU(x + residual) (the activation comes after the skip sum)."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv1 = conv(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = conv(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + x)


class LatentUpsampler(nn.Module):
    """(B, C, F, H, W) un-normalized latents -> (B, C, F, 2H, 2W), or F -> 2F-1 if temporal (see config).

    initial conv -> GN -> SiLU -> N ResBlocks -> conv to (factor x mid) channels + pixel shuffle
    -> N ResBlocks -> final conv. Spatial-only upsampling uses a per-frame Conv2d even when dims=3, as the
    official model does."""

    def __init__(self, config: UpsamplerConfig):
        super().__init__()
        self.config = config
        c, mid, n, dims = config.in_channels, config.mid_channels, config.num_blocks_per_stage, config.dims
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.initial_conv = conv(c, mid, kernel_size=3, padding=1)
        self.initial_norm = nn.GroupNorm(32, mid)
        self.res_blocks = nn.ModuleList([ResBlock(mid, dims) for _ in range(n)])
        factor = (2 if config.temporal_upsample else 1) * (4 if config.spatial_upsample else 1)
        up_conv = nn.Conv3d if config.temporal_upsample else nn.Conv2d
        # A Sequential only to keep the official key `upsampler.0`; the pixel shuffle is done in `_upsample`.
        self.upsampler = nn.Sequential(up_conv(mid, factor * mid, kernel_size=3, padding=1))
        self.post_upsample_res_blocks = nn.ModuleList([ResBlock(mid, dims) for _ in range(n)])
        self.final_conv = conv(mid, c, kernel_size=3, padding=1)

    def _upsample(self, x: Tensor) -> Tensor:
        """Conv to factor x mid channels, then pixel shuffle; channel order (c p1 p2 p3) as the official."""
        x = self.upsampler[0](x)
        if not self.config.temporal_upsample:  # x: (B*F, 4*mid, H, W), per-frame Conv2d
            return rearrange(x, "bf (c p1 p2) h w -> bf c (h p1) (w p2)", p1=2, p2=2)
        if self.config.spatial_upsample:  # x: (B, 8*mid, F, H, W)
            x = rearrange(x, "b (c p1 p2 p3) f h w -> b c (f p1) (h p2) (w p3)", p1=2, p2=2, p3=2)
        else:  # x: (B, 2*mid, F, H, W)
            x = rearrange(x, "b (c p) f h w -> b c (f p) h w", p=2)
        return x[:, :, 1:]  # (B, mid, 2F-1, ...): the first latent frame stands for one pixel frame

    def forward(self, latents: Tensor) -> Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.config.in_channels:
            raise ValueError(
                f"LatentUpsampler expects (B, {self.config.in_channels}, F, H, W) latents, "
                f"got {tuple(latents.shape)}"
            )
        b = latents.shape[0]
        per_frame = self.config.dims == 2
        x = rearrange(latents, "b c f h w -> (b f) c h w") if per_frame else latents
        x = F.silu(self.initial_norm(self.initial_conv(x)))  # (B, mid, F, H, W) or (B*F, mid, H, W)
        for block in self.res_blocks:
            x = block(x)
        if per_frame or self.config.temporal_upsample:
            x = self._upsample(x)
        else:  # dims=3, spatial only: the upsampling conv is per frame
            x = rearrange(x, "b c f h w -> (b f) c h w")
            x = rearrange(self._upsample(x), "(b f) c h w -> b c f h w", b=b)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x)  # (B, C, F', H', W') or (B*F, C, 2H, 2W)
        return rearrange(x, "(b f) c h w -> b c f h w", b=b) if per_frame else x


def adain_match(latents: Tensor, reference: Tensor, factor: float = 1.0) -> Tensor:
    """AdaIN (Huang & Belongie 2017, Eq. 8) per (sample, channel) over (F, H, W), blended by `factor`.

    out = lerp(latents, (latents - mean) / std * ref_std + ref_mean, factor), as the official
    `adain_filter_latent`: std with Bessel's correction (torch.std_mean's default), no epsilon (a constant
    channel gives NaN there and here). `reference` may differ from `latents` in F, H, W (pass-1 latents).
    Computed in fp32, returned in `latents.dtype`.
    """
    if latents.ndim != 5 or reference.ndim != 5 or latents.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"adain_match needs (B, C, F, H, W) tensors with equal B, C; got {tuple(latents.shape)} "
            f"and {tuple(reference.shape)}"
        )
    x, ref = latents.float(), reference.float()
    std, mean = torch.std_mean(x, dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    ref_std, ref_mean = torch.std_mean(ref, dim=(2, 3, 4), keepdim=True)
    matched = (x - mean) / std * ref_std + ref_mean
    return torch.lerp(x, matched, factor).to(latents.dtype)


def _read_config(path: str, keys: list[str], meta: dict[str, str]) -> UpsamplerConfig:
    if meta.get("format") == "ltxv" or any(k.startswith(MODEL_PREFIXES) for k in keys):
        raise ValueError(f"{path}: an LTX-Video model checkpoint, not a latent upsampler")
    if "initial_conv.weight" not in keys:
        raise ValueError(f"{path}: not an LTX-Video latent upsampler (no 'initial_conv.weight' tensor)")
    if "config" not in meta:
        raise ValueError(f"{path}: latent upsampler tensors but no 'config' metadata to build the model from")
    try:
        raw = json.loads(meta["config"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: 'config' metadata is not JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: 'config' metadata is not a JSON object")
    try:
        return UpsamplerConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def load_upsampler(
    path: str | os.PathLike[str], device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> LatentUpsampler:
    """Load an official `ltxv-*-upscaler-*.safetensors` (config in the "config" metadata), strictly.

    Built on the meta device and filled with `assign=True`; `dtype` defaults to the file's float dtype.
    """
    path = str(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; expected the official single-file upsampler .safetensors")
    keys, meta = read_header(path)
    config = _read_config(path, keys, meta)
    return build_model(LatentUpsampler, Component(config, {k: (path, k) for k in keys}), path, device, dtype)


def save_upsampler(path: str | os.PathLike[str], model: LatentUpsampler) -> None:
    """Write `model` in the official layout (flat keys + "config" metadata), atomically (temp + replace)."""
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    atomic_save(state, Path(path), {"config": json.dumps(model.config.to_dict())})
