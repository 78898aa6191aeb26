"""One or many processes: the process group (torchrun), DDP / FSDP2 wrapping, and tensor helpers that work the
same for plain, DDP and FSDP2 (DTensor) parameters."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions

from ..config import TRANSFORMER_STAGES, TrainConfig
from .stages import Stage

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors on the CPU, on rank 0 only


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    cuda = torch.cuda.is_available() if cfg.device == "auto" else cfg.device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, torch.device("cuda" if cuda else cfg.device if cfg.device != "auto" else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu"))


# -- state dicts that work the same for plain, DDP and FSDP2 modules ---------------------------------------


def full_tensor(t: Tensor) -> Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(param: Tensor, full: Tensor) -> Tensor:
    """`full` laid out like `param` (sharded again for FSDP2 DTensor parameters)."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements)
    return full.to(param.device, torch.float32)


def wrap(stage: Stage, cfg: TrainConfig, d: Dist) -> nn.Module:
    if d.world == 1:
        return stage
    if cfg.parallel == "fsdp":  # FSDP2 shards the transformer (per block); a frozen VAE stays replicated
        if cfg.stage not in TRANSFORMER_STAGES:
            raise ValueError(
                f"parallel=fsdp shards the transformer; use parallel=ddp for `train {cfg.stage}`"
            )
        from torch.distributed.fsdp import fully_shard

        for block in stage.dit.transformer_blocks:
            fully_shard(block)
        fully_shard(stage.dit)
        return stage
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(stage, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def gather(x: Tensor, d: Dist) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
