"""Function-preserving growth of a trained model (depth up-scaling): every new block starts as the identity,
so the grown model computes exactly what the old one did, and training (`ltxv train … --init GROWN`) goes on
from there with more layers. MODELS.md's DiT 8 (4 → 8 transformer blocks) and clip 6g (a deeper encoder)
were grown this way.

- Transformer: each block is preceded by copies of itself whose output projections (self-attention,
  cross-attention, feed-forward) are zero, so a copy adds nothing to the residual stream until it is trained.
  Old block i becomes block i·k + k − 1 (the last of its group, so "the last block" stays an original one):
  STG block numbers and LoRAs keyed by block refer to the old numbering.
- VAE encoder: a one-layer res stage after each compression that is not followed by one, its second
  convolution zero (x + 0): the encoder's width stays, its depth grows where the official encoders have res
  stages and the small presets have none.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import Tensor

from .config import MAX_SEED, ModelSpec, VAEBlock, VAEConfig, block_stride

MAX_FACTOR = 16  # at most this many times the blocks: a guard against a typo building a huge model


@dataclasses.dataclass(frozen=True)
class GrowConfig:
    """What `ltxv grow` adds: `dit_layers` = the grown transformer's block count (a multiple of the current
    one; 0 leaves it), `encoder_res` = a res stage after each encoder compression lacking one."""

    dit_layers: int = 0
    encoder_res: bool = False
    seed: int = 0  # draws the new encoder stages' first convolutions (their second ones are zero)

    def __post_init__(self) -> None:
        if self.dit_layers < 0:
            raise ValueError(f"--dit-layers must be >= 0 (0 leaves the transformer), got {self.dit_layers}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed must be in [0, {MAX_SEED}], got {self.seed}")
        if not self.dit_layers and not self.encoder_res:
            raise ValueError("nothing to grow: pass --dit-layers N and/or --encoder-res")


@dataclasses.dataclass(frozen=True)
class Grown:
    spec: ModelSpec
    notes: tuple[str, ...]  # what the user must carry over by hand


def grow_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], cfg: GrowConfig) -> Grown:
    """Read `src` (any supported format), grow it, write `dst` as a new ltxv file. Every request is checked
    on the headers, before a tensor is read."""
    from .weights import check_new_target, open_checkpoint, read_state_dicts, save_checkpoint

    check_new_target(src, dst, "ltxv")
    ckpt = open_checkpoint(src)
    spec, notes = ckpt.spec, []
    if cfg.dit_layers:
        if ckpt.dit is None:
            raise ValueError(f"--dit-layers: {src} holds no transformer; leave the flag out")
        factor = grown_factor(ckpt.dit.config.num_layers, cfg.dit_layers)
        spec = dataclasses.replace(spec, dit=dataclasses.replace(ckpt.dit.config, num_layers=cfg.dit_layers))
        notes.append(
            f"old transformer block i is now block {factor}·i + {factor - 1}: renumber STG blocks "
            f"(--stg-blocks, generation.json) the same way (e.g. 19 -> {19 * factor + factor - 1}); a LoRA "
            f"trained on {src} names the old blocks"
        )
    if cfg.encoder_res:
        if ckpt.vae is None:
            raise ValueError(f"--encoder-res: {src} holds no VAE; leave the flag out")
        blocks, _ = grown_encoder_blocks(ckpt.vae.config.encoder_blocks)
        spec = dataclasses.replace(spec, vae=dataclasses.replace(ckpt.vae.config, encoder_blocks=blocks))
    vae_sd, dit_sd = read_state_dicts(ckpt)
    if cfg.dit_layers and dit_sd is not None and ckpt.dit is not None:
        dit_sd = grow_dit_state(dit_sd, ckpt.dit.config.num_layers, cfg.dit_layers)
    if cfg.encoder_res and vae_sd is not None and ckpt.vae is not None:
        vae_sd, _ = grow_vae_state(vae_sd, ckpt.vae.config, cfg.seed)
    save_checkpoint(dst, spec, vae_sd, dit_sd)
    folder = Path(src)
    if folder.is_dir() and any((folder / n).exists() for n in ("generation.json", "text_encoder")):
        notes.append(
            f"{src}'s generation.json and text_encoder/ are not in {dst}: for a model folder, copy them "
            "next to it (as model.safetensors)"
        )
    return Grown(spec, tuple(notes))


def grown_factor(num_layers: int, new_layers: int) -> int:
    """How many blocks each block becomes; a bad count is named with the fix."""
    if new_layers <= num_layers or new_layers % num_layers or new_layers > MAX_FACTOR * num_layers:
        raise ValueError(
            f"--dit-layers {new_layers}: the transformer has {num_layers} blocks; give a larger multiple of "
            f"{num_layers} up to {MAX_FACTOR * num_layers} (e.g. {2 * num_layers})"
        )
    return new_layers // num_layers


def grow_dit_state(state: dict[str, Tensor], num_layers: int, new_layers: int) -> dict[str, Tensor]:
    """Transformer state dict with `num_layers` blocks -> `new_layers`: block i becomes block i·k + k − 1,
    preceded by k − 1 copies with zeroed output projections (`DiTBlock.OUTPUT_PROJECTIONS`)."""
    from .dit.model import DiTBlock

    k = grown_factor(num_layers, new_layers)
    outputs = tuple(f"{name}." for name in DiTBlock.OUTPUT_PROJECTIONS)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith("transformer_blocks."):
            out[key] = value
            continue
        _, index, rest = key.split(".", 2)
        for j in range(k):
            if j == k - 1:
                new = value  # the original block, last of its group
            else:  # a copy (its own tensor: safetensors stores no shared memory)
                new = torch.zeros_like(value) if rest.startswith(outputs) else value.clone()
            out[f"transformer_blocks.{int(index) * k + j}.{rest}"] = new
    return out


def grown_encoder_blocks(blocks: tuple[VAEBlock, ...]) -> tuple[tuple[VAEBlock, ...], dict[int, int]]:
    """The encoder block list with a one-layer `res_x` after each compression not followed by a res stage
    (`res_x` or `res_x_y`), and where each old block went (old index -> new index)."""
    grown: list[VAEBlock] = []
    where: dict[int, int] = {}
    for i, block in enumerate(blocks):
        where[i] = len(grown)
        grown.append(block)
        following = blocks[i + 1].kind if i + 1 < len(blocks) else ""
        if block_stride(block.kind) != (1, 1, 1) and following not in ("res_x", "res_x_y"):
            grown.append(VAEBlock("res_x", 1, 1))
    if len(grown) == len(blocks):
        raise ValueError(
            "--encoder-res: every compression of this encoder is already followed by a res stage; "
            "leave the flag out"
        )
    return tuple(grown), where


def grow_vae_state(
    state: dict[str, Tensor], cfg: VAEConfig, seed: int = 0
) -> tuple[dict[str, Tensor], VAEConfig]:
    """VAE state dict and config -> the same grown (`grown_encoder_blocks`): the new res stages' first
    convolutions drawn from `seed`, their output convolutions (`ResBlock.OUTPUT_CONV`) zero."""
    from .vae.blocks import ResBlock
    from .vae.model import Encoder

    blocks, where = grown_encoder_blocks(cfg.encoder_blocks)
    grown = dataclasses.replace(cfg, encoder_blocks=blocks)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder.down_blocks."):
            _, _, index, rest = key.split(".", 3)
            key = f"encoder.down_blocks.{where[int(index)]}.{rest}"
        out[key] = value
    dtype = state["encoder.conv_in.conv.weight"].dtype
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        fresh = {f"encoder.{k}": v for k, v in Encoder(grown).state_dict().items()}
    zero = f".{ResBlock.OUTPUT_CONV}."
    for key in fresh.keys() - out.keys():
        out[key] = torch.zeros_like(fresh[key], dtype=dtype) if zero in key else fresh[key].to(dtype)
    return out, grown
