"""SpeedConfig: a Pipeline's switchable inference speed-ups, independent of what is sampled (SampleConfig).

Exact ones are on by default (text_cache); approximate or hardware-dependent ones are opt-in. Model changes
(regional compile, fp8 linears) are applied once, in place, by `apply_to_dit`, and cannot be undone.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from .config import COMPILE_MODES
from .layers.attention import ATTENTION_BACKENDS, check_attention_backend
from .layers.fp8 import Fp8Linear, quantize_linears
from .parallel import check_job, world_size


@dataclass(frozen=True)
class SpeedConfig:
    """Inference speed-ups; the defaults are exact (bit-identical to the plain path)."""

    text_cache: bool = True  # prompt's cross-attention keys/values computed once per generate() (exact)
    attention: str = "auto"  # attention kernel, one of ltxv.layers.attention.ATTENTION_BACKENDS
    compile: str | None = None  # torch.compile mode applied to each DiT block (regional); None = eager
    fp8: bool = False  # e4m3 linears with per-tensor scales in the DiT blocks (approximate)
    block_cache: float = 0.0  # first-block cache: reuse blocks 1.. below this relative change (0 = off)
    cfg_parallel: int = 1  # torchrun: groups of processes, each running a share of the guidance branches
    sequence_parallel: int = 1  # torchrun: processes per group, each running a share of the tokens (Ulysses)

    def __post_init__(self) -> None:
        check_attention_backend(self.attention)
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile mode {self.compile!r}: choose from {', '.join(COMPILE_MODES)}")
        if not self.block_cache >= 0:  # NaN too
            raise ValueError(f"block_cache threshold must be a number >= 0 (0 = off), got {self.block_cache}")
        for name in ("cfg_parallel", "sequence_parallel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be a whole number of processes >= 1, got {value!r}")


def compile_blocks(dit: nn.Module, mode: str = "default") -> int:
    """Regional torch.compile: compile each of `dit.transformer_blocks` in place (nn.Module.compile, so the
    state_dict keys are unchanged). The blocks share one code object and their parameters are graph inputs,
    so one compilation serves them all (diffusers' `compile_repeated_blocks`). Returns the blocks compiled."""
    return _compile_each(dit.transformer_blocks, mode)


def compile_vae_blocks(vae: nn.Module, mode: str = "default") -> int:
    """Regional torch.compile of a VideoVAE for training: conv_in/out stay eager, each encoder down block
    and decoder up block is compiled in place (state_dict keys unchanged). Returns the blocks compiled."""
    return _compile_each([*vae.encoder.down_blocks, *vae.decoder.up_blocks], mode)


def _compile_each(modules: Iterable[nn.Module], mode: str) -> int:
    """nn.Module.compile each module not compiled yet (idempotent); returns how many were compiled now."""
    todo = [m for m in modules if getattr(m, "_compiled_call_impl", None) is None]
    for module in todo:
        module.compile(mode=mode)
    return len(todo)


def apply_to_dit(dit: nn.Module, speed: SpeedConfig) -> None:
    """The model changes of `speed`, idempotent: fp8 linears in the blocks, then regional compile."""
    if speed.fp8 and not any(isinstance(m, Fp8Linear) for m in dit.transformer_blocks.modules()):
        quantize_linears(dit.transformer_blocks)
    if speed.compile is not None:
        compile_blocks(dit, speed.compile)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The SpeedConfig flags shared by `ltxv generate` and `ltxv bench`."""
    parser.add_argument(
        "--attention", default="auto", choices=ATTENTION_BACKENDS, help="attention kernel (auto: PyTorch's)"
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        help="torch.compile each DiT block (regional) with this mode (bare flag: default); compile time "
        "falls in the warm-up",
    )
    parser.add_argument("--fp8", action="store_true", help="e4m3 linears in the DiT blocks (approximate)")
    parser.add_argument(
        "--no-text-cache", action="store_true", help="recompute the text's cross-attention K/V every step"
    )
    parser.add_argument(
        "--block-cache",
        type=float,
        default=0.0,
        metavar="THRESHOLD",
        help="first-block cache threshold: skip blocks 1.. when block 0's residual changed less (0 = off; "
        "the FLOP figures still count the skipped blocks)",
    )
    parser.add_argument(
        "--cfg-parallel",
        type=int,
        default=1,
        metavar="N",
        help="under torchrun: N groups of processes share each step's guidance branches (2 with CFG)",
    )
    parser.add_argument(
        "--sequence-parallel",
        type=int,
        metavar="N",
        help="under torchrun: N processes per group share each branch's tokens (Ulysses attention; N must "
        "divide the heads; default: the processes --cfg-parallel leaves)",
    )


def speed_from_args(args: argparse.Namespace) -> SpeedConfig:
    """The flags' SpeedConfig. Under torchrun without --sequence-parallel, the processes that --cfg-parallel
    leaves split the sequence."""
    groups, sequence = args.cfg_parallel, args.sequence_parallel
    if sequence is None:
        fits = groups >= 1 and world_size() % groups == 0
        sequence = world_size() // groups if fits else 1
    speed = SpeedConfig(  # ValueError for a degree < 1, an unknown backend, a negative threshold
        text_cache=not args.no_text_cache,
        attention=args.attention,
        compile=args.compile,
        fp8=args.fp8,
        block_cache=args.block_cache,
        cfg_parallel=groups,
        sequence_parallel=sequence,
    )
    check_job(groups, sequence)  # before minutes of loading
    return speed
