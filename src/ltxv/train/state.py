"""A run folder on disk: atomic training checkpoints (keep-last-N), EMA, and metrics.jsonl.

RUN/
  config.json                 the resolved TrainConfig (written once; a resumed run must match it)
  metrics.jsonl               one JSON object per logged step
  checkpoints/step_00000100/  model.safetensors (every tensor of the stage, our names), ema.safetensors,
                              optim.safetensors + state.json (step, optimiser param groups)
  samples/                    validation videos
  model.safetensors           the final model, in the ltxv checkpoint format (loads in `ltxv generate`)

No pickle anywhere: optimiser states are flattened into safetensors, their hyper-parameters into JSON.
There is no RNG state to store: every random draw of step k comes from a generator seeded with (seed, k),
and the data order is a pure function of (seed, step), so the step number is the whole position.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..files import atomic_folder, write_text_atomic

CHECKPOINTS = "checkpoints"


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of every random draw of one training step (the same on every process)."""
    return torch.Generator(device).manual_seed(hash((seed, step)) & (2**63 - 1))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


# -- EMA ------------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of the trainable parameters, in float32: s ← decay·s + (1 − decay)·p."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.params = dict(named_params)
        self.shadow = {n: p.detach().float().clone() for n, p in named_params}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach().float(), 1 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call twice to restore)."""
        for n, p in self.params.items():
            live = p.detach().clone()
            p.copy_(self.shadow[n].to(p.dtype))
            self.shadow[n].copy_(live.float())


# -- optimiser state <-> safetensors + JSON ---------------------------------------------------------------


def flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """A full (name-keyed) optimiser state dict -> tensors "state/<param>/<key>" and JSON-safe groups."""
    tensors = {
        f"state/{name}/{key}": torch.as_tensor(value).detach().cpu().contiguous()
        for name, state in sd["state"].items()
        for key, value in state.items()
    }
    return tensors, sd["param_groups"]


def unflatten_optimizer(tensors: dict[str, Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, name, field = key.split("/", 2)
        state.setdefault(name, {})[field] = value
    return {"state": state, "param_groups": groups}


# -- checkpoints --------------------------------------------------------------------------------------------


def checkpoint_dirs(run: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder only gets its final name once complete)."""
    root = run / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step_") and (p / "state.json").is_file())


def save_training_checkpoint(
    run: Path,
    step: int,
    model: dict[str, Tensor],
    optimizers: dict[str, dict[str, Any]],
    ema: dict[str, Tensor] | None,
    keep_last: int,
) -> Path:
    """Write RUN/checkpoints/step_N atomically (a temporary folder renamed into place); keep the last N."""
    final = run / CHECKPOINTS / f"step_{step:08d}"
    with atomic_folder(final, replace=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, tmp / "model.safetensors")
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
        groups = {}
        for name, sd in optimizers.items():
            tensors, groups[name] = flatten_optimizer(sd)
            save_file(tensors, tmp / f"optim_{name}.safetensors")
        write_json_atomic(tmp / "state.json", {"step": step, "param_groups": groups})
    for old in checkpoint_dirs(run)[:-keep_last]:
        shutil.rmtree(old)
    return final


def load_training_checkpoint(
    path: Path,
) -> tuple[int, dict[str, Tensor], dict[str, dict[str, Any]], dict[str, Tensor] | None]:
    """(step, model tensors, optimiser state dicts by name, EMA tensors or None) of one checkpoint; a damaged
    one (a file cut short, edited or missing) is a one-line ValueError naming it."""
    try:
        state = json.loads((path / "state.json").read_text())
        optimizers = {
            name: unflatten_optimizer(load_file(path / f"optim_{name}.safetensors"), groups)
            for name, groups in state["param_groups"].items()
        }
        ema = load_file(path / "ema.safetensors") if (path / "ema.safetensors").is_file() else None
        return int(state["step"]), load_file(path / "model.safetensors"), optimizers, ema
    except (OSError, MemoryError):  # the disk or the machine, not the checkpoint: never "delete it"
        raise
    except Exception as err:  # safetensors, json and a hand-edited state.json raise many kinds
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {path} is damaged ({reason}); delete that folder to resume from the one before it"
        ) from None


# -- metrics ----------------------------------------------------------------------------------------------


def truncate_metrics(run: Path, step: int) -> None:
    """Drop records after `step` (written by a run that was killed before its next checkpoint)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
