"""Function-preserving growth of a trained model (depth up-scaling): every new block starts as the identity,
so the grown model computes exactly what the old one did, and training (`ltxv train … --init GROWN`) goes on
from there with more layers. MODELS.md's DiT 8 (4 → 8 transformer blocks) and clip 6g (a deeper encoder)
were grown this way.

- Transformer: each block is followed by copies of itself whose output projections (self-attention,
  cross-attention, feed-forward) are zero, so a copy adds nothing to the residual stream until it is trained.
- VAE encoder: a one-layer res stage after each compression that is not followed by one, its second
  convolution zero (x + 0): the encoder's width stays, its depth grows where the official encoders have res
  stages and the small presets have none.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import Tensor

from .config import ModelSpec, VAEBlock, VAEConfig

# The transformer block's output projections: zero in a copy, the copy adds nothing (DiTBlock.forward).
DIT_OUTPUT_WEIGHTS = ("attn1.to_out.0.", "attn2.to_out.0.", "ff.net.2.")


@dataclasses.dataclass(frozen=True)
class GrowConfig:
    """What `ltxv grow` adds: `dit_layers` = the grown transformer's block count (a multiple of the current
    one; 0 leaves it), `encoder_res` = a res stage after each encoder compression lacking one."""

    dit_layers: int = 0
    encoder_res: bool = False
    seed: int = 0  # draws the new encoder stages' first convolutions (their second ones are zero)

    def __post_init__(self) -> None:
        if self.dit_layers < 0:
            raise ValueError(f"--dit-layers must be a positive block count, got {self.dit_layers}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must be in [0, 2**63), got {self.seed}")


def grow_dit_state(state: dict[str, Tensor], num_layers: int, new_layers: int) -> dict[str, Tensor]:
    """Transformer state dict with `num_layers` blocks -> `new_layers` (a multiple): block i becomes block
    i·k, followed by k − 1 copies with zeroed output projections."""
    if new_layers <= num_layers or new_layers % num_layers:
        raise ValueError(
            f"--dit-layers {new_layers}: the transformer has {num_layers} blocks; give a larger multiple of "
            f"{num_layers} (e.g. {2 * num_layers})"
        )
    k = new_layers // num_layers
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith("transformer_blocks."):
            out[key] = value
            continue
        _, index, rest = key.split(".", 2)
        for j in range(k):
            zero = j > 0 and rest.startswith(DIT_OUTPUT_WEIGHTS)
            out[f"transformer_blocks.{int(index) * k + j}.{rest}"] = (
                torch.zeros_like(value) if zero else value.clone()
            )
    return out


def _is_compression(block: VAEBlock) -> bool:
    return block.kind.startswith("compress")


def grown_encoder_blocks(blocks: tuple[VAEBlock, ...]) -> tuple[tuple[VAEBlock, ...], dict[int, int]]:
    """The encoder block list with a one-layer `res_x` after each compression not followed by a res stage, and
    where each old block went (old index -> new index)."""
    grown: list[VAEBlock] = []
    where: dict[int, int] = {}
    for i, block in enumerate(blocks):
        where[i] = len(grown)
        grown.append(block)
        following = blocks[i + 1].kind if i + 1 < len(blocks) else ""
        if _is_compression(block) and following not in ("res_x", "res_x_y"):
            grown.append(VAEBlock("res_x", 1, 1))
    return tuple(grown), where


def grow_vae_state(
    state: dict[str, Tensor], cfg: VAEConfig, seed: int = 0
) -> tuple[dict[str, Tensor], VAEConfig]:
    """VAE state dict + config -> the same with res stages added to the encoder (`grown_encoder_blocks`)."""
    from .vae.model import Encoder

    blocks, where = grown_encoder_blocks(cfg.encoder_blocks)
    if len(blocks) == len(cfg.encoder_blocks):
        raise ValueError(
            "--encoder-res: every compression of this encoder is already followed by a res stage"
        )
    new_cfg = dataclasses.replace(cfg, encoder_blocks=blocks)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder.down_blocks."):
            _, _, index, rest = key.split(".", 3)
            key = f"encoder.down_blocks.{where[int(index)]}.{rest}"
        out[key] = value
    dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        fresh = {f"encoder.{k}": v for k, v in Encoder(new_cfg).state_dict().items()}  # new stages' init
    for key in fresh.keys() - out.keys():
        value = fresh[key].to(dtype)
        out[key] = torch.zeros_like(value) if ".conv2." in key else value
    return out, new_cfg


def grow_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], cfg: GrowConfig) -> ModelSpec:
    """Read `src` (any supported format), grow it, write `dst` as a new ltxv file; returns the grown spec."""
    from .weights import check_new_target, open_checkpoint, read_state_dicts, save_checkpoint

    if not cfg.dit_layers and not cfg.encoder_res:
        raise ValueError("nothing to grow: pass --dit-layers N and/or --encoder-res")
    check_new_target(src, dst, "ltxv")
    ckpt = open_checkpoint(src)
    vae_sd, dit_sd = read_state_dicts(ckpt)
    spec = ckpt.spec
    if cfg.dit_layers:
        if dit_sd is None:
            raise ValueError(f"--dit-layers: {src} holds no transformer")
        dit_sd = grow_dit_state(dit_sd, spec.dit.num_layers, cfg.dit_layers)
        spec = dataclasses.replace(spec, dit=dataclasses.replace(spec.dit, num_layers=cfg.dit_layers))
    if cfg.encoder_res:
        if vae_sd is None:
            raise ValueError(f"--encoder-res: {src} holds no VAE")
        vae_sd, vae_cfg = grow_vae_state(vae_sd, spec.vae, cfg.seed)
        spec = dataclasses.replace(spec, vae=vae_cfg)
    save_checkpoint(dst, spec, vae_sd, dit_sd)
    return spec
