"""Inference on several processes (torchrun, one GPU each): the batch of a denoising step, i.e. the guidance
branches times the prompts, split across groups of processes (cfg parallel), and each row's tokens split
across the processes of a group (sequence parallel: Ulysses self-attention, `ltxv.layers.attention`).

Every process ends each step with the whole velocity, so all hold the same latents and decode the same video;
rank 0 writes it. With P processes in a group the transformer's heads must divide by P.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .layers.attention import SequenceShards, sequence_parallel

LAUNCH = "torchrun --nproc-per-node N -m ltxv ..."  # then the same command and flags


def world_size() -> int:
    """Processes of this torchrun job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process speaks for the job (rank 0, or no torchrun): writes outputs, prints progress."""
    return int(os.environ.get("RANK", "0")) == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a bare `cuda` means this process's own GPU (cuda:LOCAL_RANK)."""
    if world_size() > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@dataclass(frozen=True)
class Parallel:
    """This process's place: `groups` groups of `sequence` processes; rank = group * sequence + shard."""

    groups: int  # cfg parallel degree: each group runs its share of the batch rows
    sequence: int  # sequence parallel degree: each process of a group runs its share of the tokens
    rank: int
    group: dist.ProcessGroup  # the processes of this one's group
    device: torch.device  # where this process computes (collectives' tensors live there)

    @property
    def world(self) -> int:
        return self.groups * self.sequence

    def rows(self, total: int, device: torch.device) -> Tensor:
        """The batch rows (of `total`) this process's group runs: an equal share, the last row repeated where
        `total` does not divide (the repeats are dropped again when gathering)."""
        share = math.ceil(total / self.groups)
        start = self.rank // self.sequence * share
        return torch.arange(start, start + share, device=device).clamp(max=total - 1)

    def forward(self, dit: nn.Module, tokens: Tensor, timestep: Tensor, coords: Tensor, **kwargs) -> Tensor:
        """`dit(tokens, timestep, coords=coords, **kwargs)` for the whole batch, computed in parts.

        tokens (R, N, C), timestep (R, N), coords (R, N, 3); kwargs' text must already be this group's
        rows (`rows`); a `skip` mask is cut here. Returns the velocity (R, N, C), the same on every process.
        """
        total, n, _ = tokens.shape
        rows = self.rows(total, tokens.device)
        shard = math.ceil(n / self.sequence)
        lo = self.rank % self.sequence * shard

        def mine(x: Tensor) -> Tensor:  # (R, N, ...) -> (share, shard, ...), zero-padded past the end
            x = x.index_select(0, rows)
            pad = x.new_zeros((x.shape[0], shard * self.sequence - n, *x.shape[2:]))
            return torch.cat([x, pad], 1)[:, lo : lo + shard]

        skip = kwargs.get("skip")
        if skip is not None:
            kwargs["skip"] = dataclasses.replace(skip, batch_mask=skip.batch_mask.index_select(0, rows))
        split = sequence_parallel(SequenceShards(self.group, self.sequence, n))
        with split if self.sequence > 1 else contextlib.nullcontext():  # cfg parallel alone: no all-to-all
            out = dit(mine(tokens), mine(timestep), coords=mine(coords), **kwargs)  # (share, shard, C)
        parts = [torch.empty_like(out) for _ in range(self.world)]
        dist.all_gather(parts, out.contiguous())
        p = self.sequence
        by_group = [torch.cat(parts[g * p : (g + 1) * p], 1) for g in range(self.groups)]  # (share, N', C)
        return torch.cat(by_group)[:total, :n]

    def sum(self, x: Tensor) -> Tensor:
        """x summed over all processes (a copy)."""
        x = x.clone()
        dist.all_reduce(x)
        return x

    def agree(self, value: int) -> int:
        """Rank 0's `value` on every process (e.g. a random seed)."""
        box = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(box, 0)
        return int(box.item())


def check_job(groups: int, sequence: int) -> None:
    """ValueError naming the flags unless this torchrun job has groups x sequence processes (or 1 x 1)."""
    world = world_size()
    if groups * sequence != world:
        where = f"{world} processes" if world > 1 else "one process (not under torchrun)"
        raise ValueError(
            f"--cfg-parallel {groups} x --sequence-parallel {sequence} needs {groups * sequence} processes, "
            f"this job has {where}: start it with `{LAUNCH.replace('N', str(groups * sequence), 1)}` "
            "(the same command and flags)"
        )


def join(groups: int, sequence: int, device: torch.device, heads: int) -> Parallel | None:
    """This process's `Parallel` in a torchrun job of groups x sequence processes (None for 1 x 1), computing
    on `device` (its own GPU: `local_device`): starts the process group (NCCL on GPUs, gloo on the CPU) unless
    it runs. ValueError naming the flags when the degrees
    do not fit the job or the transformer."""
    if groups * sequence == 1:
        return None
    check_job(groups, sequence)
    if heads % sequence:
        raise ValueError(
            f"--sequence-parallel {sequence} splits attention heads across processes, but this transformer "
            f"has {heads}: use a divisor of {heads}, or --cfg-parallel for the rest"
        )
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    rank = dist.get_rank()
    mine = None
    for g in range(groups):  # every process creates every group, in the same order
        group = dist.new_group(list(range(g * sequence, (g + 1) * sequence)))
        if g == rank // sequence:
            mine = group
    return Parallel(groups, sequence, rank, mine, device)


def _leave() -> None:
    """End the process group this module started (gloo can abort at exit with one left running)."""
    if dist.is_initialized():
        dist.destroy_process_group()
