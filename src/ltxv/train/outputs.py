"""What a run leaves on disk: its pinned config, checkpoints (save / resume), the final model and validation
videos. The layout of RUN/ is described in `ltxv.train.state`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..config import TrainConfig, to_dict
from ..vae.model import VideoVAE
from . import state as st
from .distributed import FULL, Dist, full_tensor, like
from .stages import Stage, latent_statistics

# settings that may change between a run and its resumption; everything else must match
RESUMABLE_CHANGES = (
    "steps",
    "log_every",
    "save_every",
    "keep_last",
    "val_every",
    "val_steps",
    "data.workers",
)


def check_run_folder(cfg: TrainConfig, run: Path, d: Dist) -> None:
    """RUN/config.json pins a run that has checkpoints: resuming it with a different config is an error, not a
    silent mix. (Written once set-up succeeded, so a typo in the first attempt does not pin anything.)"""
    path = run / "config.json"
    if path.is_file() and st.checkpoint_dirs(run):
        import json

        try:
            pinned = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not a run config ({err}); restore it or choose a new --out"
            ) from None
        if not isinstance(pinned, dict):
            raise ValueError(
                f"{path} is not a run config (not a JSON object); restore it or choose a new --out"
            )
        diff = sorted(differences(pinned, to_dict(cfg)) - set(RESUMABLE_CHANGES))
        if diff:
            raise ValueError(
                f"{run} holds a run with a different config ({', '.join(diff)}); "
                "resume with the same settings or choose a new --out"
            )


def differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix[:-1]}


# -- checkpoints, resume, final model, validation ----------------------------------------------------------


def save(
    run: Path, step: int, stage: Stage, disc: Any, optimizers: dict, ema: Any, cfg: TrainConfig, d: Dist
):  # noqa: ANN202
    model_sd = get_model_state_dict(stage, options=FULL)
    optim_sds = {"model": get_optimizer_state_dict(stage, optimizers["model"], options=FULL)}
    if disc is not None:
        model_sd |= {f"disc.{k}": v for k, v in get_model_state_dict(disc, options=FULL).items()}
        optim_sds["disc"] = get_optimizer_state_dict(disc, optimizers["disc"], options=FULL)
    ema_sd = {n: full_tensor(s).cpu() for n, s in ema.shadow.items()} if ema is not None else None
    if d.main:
        st.save_training_checkpoint(run, step, model_sd, optim_sds, ema_sd, cfg.keep_last)
    if d.world > 1:
        dist.barrier()


def resume(run: Path, stage: Stage, disc: Any, optimizers: dict, ema: Any, d: Dist) -> int:
    ckpts = st.checkpoint_dirs(run)
    if not ckpts:
        return 0
    step, model_sd, optim_sds, ema_sd = st.load_training_checkpoint(ckpts[-1])
    disc_sd = {k[5:]: v for k, v in model_sd.items() if k.startswith("disc.")}
    model_sd = {k: v for k, v in model_sd.items() if not k.startswith("disc.")}
    check_same_tensors(ckpts[-1], model_sd, get_model_state_dict(stage))  # local shards report full shapes
    set_model_state_dict(stage, model_sd, options=StateDictOptions(full_state_dict=True))
    set_optimizer_state_dict(
        stage, optimizers["model"], optim_sds["model"], options=StateDictOptions(full_state_dict=True)
    )
    if disc is not None:
        set_model_state_dict(disc, disc_sd, options=StateDictOptions(full_state_dict=True))
        set_optimizer_state_dict(
            disc, optimizers["disc"], optim_sds["disc"], options=StateDictOptions(full_state_dict=True)
        )
    if ema is not None and ema_sd is not None:
        for n, p in ema.params.items():
            ema.shadow[n] = like(p, ema_sd[n]).float()
    if d.main:
        st.truncate_metrics(run, step)
        print(f"resuming {run} from step {step} ({ckpts[-1].name})", file=sys.stderr)
    return step


def check_same_tensors(where: Path, saved: dict[str, Any], model: dict[str, Any]) -> None:
    """A checkpoint must hold exactly the model's tensors: loading fills missing ones from the model as it
    is (fresh weights) and would resume a different model silently, e.g. after RUN/config.json was edited."""
    missing, extra = sorted(set(model) - set(saved)), sorted(set(saved) - set(model))
    shapes = [k for k in sorted(set(saved) & set(model)) if tuple(saved[k].shape) != tuple(model[k].shape)]
    if not (missing or extra or shapes):
        return
    if missing or extra:
        first = f"{missing[0]!r} missing" if missing else f"{extra[0]!r} unexpected"
    else:
        key = shapes[0]
        first = f"{key!r} is {tuple(saved[key].shape)}, the model's {tuple(model[key].shape)}"
    raise ValueError(
        f"checkpoint {where} does not fit this run's model ({len(missing)} missing, {len(extra)} unexpected, "
        f"{len(shapes)} reshaped tensors; {first}): resume with the run's settings or choose a new --out"
    )


def set_latent_statistics(
    vae: VideoVAE, data: Any, collate: Any, sampler: Any, d: Dist, batches: int = 8
) -> None:
    """Per-channel latent mean/std from the first batches of the data order (the same on every process)."""
    n = min(batches, sampler.steps_per_epoch)
    videos = [collate([data[i] for i in sampler.global_batch(s)])["video"].to(d.device) for s in range(n)]
    mean, std = latent_statistics(vae, videos)
    vae.latent_mean.copy_(mean)
    vae.latent_std.copy_(std)


def final_model(
    run: Path, stage: Stage, ema: Any, data: Any, collate: Any, sampler: Any, cfg: TrainConfig, d: Dist
) -> Path:
    """RUN/model.safetensors (our format: spec + VAE + DiT, EMA weights when kept) or RUN/lora.safetensors."""
    from ..weights import atomic_save, save_checkpoint

    if ema is not None:
        ema.swap()
    if cfg.stage == "vae":  # the transformer will want latents of zero mean and unit variance per channel
        set_latent_statistics(stage.vae, data, collate, sampler, d, batches=16)
    sd = get_model_state_dict(stage, options=FULL)
    if ema is not None:
        ema.swap()
    path = run / ("lora.safetensors" if cfg.stage == "lora" else "model.safetensors")
    if d.main:
        if cfg.stage == "lora":
            from ..lora import lora_tensors

            atomic_save(lora_tensors(sd, cfg.lora.alpha, "dit."), path, {"format": "peft-lora"})
        else:
            vae_sd = {k[4:]: v for k, v in sd.items() if k.startswith("vae.")}
            dit_sd = {k[4:]: v for k, v in sd.items() if k.startswith("dit.")}
            save_checkpoint(path, cfg.model, vae_sd, dit_sd)
    return path


def validate(
    run: Path, step: int, stage: Stage, ema: Any, first_item: Callable[[], dict], cfg: TrainConfig, d: Dist
) -> None:
    """Validation video: a reconstruction (vae / decoder stages) or a sample for the first caption;
    `first_item()` is the first clip's batch on the device (with text embeddings for the transformer)."""
    from ..media import write_video

    if ema is not None:
        ema.swap()
    try:
        item = first_item()
        with torch.no_grad():
            if cfg.stage in ("vae", "decoder"):
                video = item["video"].to(d.device)
                t = 0.05 if stage.vae.cfg.timestep_conditioning else None
                recon = stage.vae.decode(stage.vae.encode(video), t)
                frames = torch.cat([video, recon.clamp(-1, 1)], dim=-1)[0]  # side by side (3, F, H, 2W)
            else:
                frames = sample(stage, item, cfg, d)
        if d.main:
            write_video(
                run / "samples" / f"step_{step:08d}.mp4", (frames.float().cpu() + 1) / 2, cfg.data.frame_rate
            )
    finally:
        if ema is not None:
            ema.swap()


def sample(stage: Stage, item: dict, cfg: TrainConfig, d: Dist) -> Tensor:
    from ..config import SampleConfig
    from ..pipeline import Pipeline, TextEmbeddings
    from ..speed import SpeedConfig

    if "latents" in item:  # cache: the latent grid tells the pixel size
        _, _, f, h, w = item["latents"].shape
        st_, ss, _ = stage.vae.scale_factors
        frames, height, width = (f - 1) * st_ + 1, h * ss, w * ss
        emb, mask = item["text_emb"], item["text_mask"]
    else:
        _, _, frames, height, width = item["video"].shape
        emb, mask = item.get("text_emb"), item.get("text_mask")
    if emb is None:
        return torch.zeros(3, frames, height, width)
    text = TextEmbeddings(emb.to(d.device), mask.to(d.device))
    negative = TextEmbeddings(stage.null_emb[None], stage.null_mask[None])
    sample = SampleConfig(
        width=width,
        height=height,
        num_frames=frames,
        steps=cfg.distill.steps if cfg.stage == "distill" else cfg.val_steps,
        guidance=1.0 if cfg.stage == "distill" else 3.0,  # a distilled student samples without CFG
        stg=0.0,
        frame_rate=cfg.data.frame_rate,
        seed=cfg.seed,
    )
    # FSDP gathers a block's weights in its forward only: the prompt's key/value cache, computed outside it,
    # would read shards
    speed = SpeedConfig(text_cache=not (cfg.parallel == "fsdp" and d.world > 1))
    pipe = Pipeline(stage.vae, stage.dit, cfg.model, None, d.device, speed=speed)
    return pipe.generate(text, sample, negative=negative).video[0] * 2 - 1
