"""`train(cfg, run)`: one loop for every stage, on one process or under torchrun (DDP or FSDP2).

Set-up (models, data, wrappers, resume) -> for each step: seeded generator, forward, backward, clip, step,
EMA, log, checkpoint, validation -> the final model. Re-running the same command on the same RUN folder
resumes from its newest checkpoint and reaches the weights an uninterrupted run would have.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..config import TEXT_STAGES, TRANSFORMER_STAGES, TrainConfig, to_dict
from ..dit.model import VideoDiT
from ..flow import mean_by_t_bin
from ..vae.model import VideoVAE
from . import state as st
from .distributed import Dist, full_tensor, gather, setup_distributed, wrap
from .outputs import check_run_folder, final_model, resume, save, set_latent_statistics, validate
from .stages import STAGES, BatchRandom, Stage, init_vae_for_training, trainable_modules


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """The model spec comes from `init` when one is given (the checkpoint describes itself), the
    transformer's from `init_dit` when that is given, or stays cfg.model's with `new_dit`."""
    from ..weights import CheckpointError, open_checkpoint

    spec = open_checkpoint(cfg.init).spec if cfg.init else cfg.model
    source = ""  # what chose a transformer other than init's
    if cfg.new_dit:
        spec, source = replace(spec, dit=cfg.model.dit), "--new-dit (model.dit)"
    if cfg.init_dit:
        ckpt = open_checkpoint(cfg.init_dit)
        if ckpt.dit is None:
            raise CheckpointError(f"--init-dit {cfg.init_dit}: that checkpoint has no transformer")
        spec, source = replace(spec, dit=ckpt.dit.config), f"--init-dit {cfg.init_dit}"
    if source and spec.dit.in_channels != spec.vae.latent_channels:
        raise CheckpointError(
            f"{source}: its transformer takes {spec.dit.in_channels} latent channels, the VAE makes "
            f"{spec.vae.latent_channels}"
        )
    return replace(cfg, model=spec)


# -- models and data ---------------------------------------------------------------------------------------


def build_models(cfg: TrainConfig) -> tuple[VideoVAE, VideoDiT, bool]:
    """(vae, dit, vae_is_trained): from `init` where it has them (the transformer from `init_dit` when given),
    else (and the transformer with `new_dit`) freshly initialised from the spec."""
    from ..weights import load_transformer, load_vae, open_checkpoint

    torch.manual_seed(cfg.seed)  # the same initial weights on every process and every run
    vae, dit, trained = VideoVAE(cfg.model.vae), VideoDiT(cfg.model.dit), False
    ckpt = open_checkpoint(cfg.init) if cfg.init else None
    if ckpt is not None and ckpt.vae is not None:
        vae, trained = load_vae(ckpt, "cpu", torch.float32), True
    init_has_dit = ckpt is not None and ckpt.dit is not None
    dit_source = None if cfg.new_dit else cfg.init_dit or (ckpt if init_has_dit else None)
    if dit_source is not None:
        dit = load_transformer(dit_source, "cpu", torch.float32)
    if not trained and cfg.stage in ("vae", "joint"):
        init_vae_for_training(vae)
    if cfg.stage == "distill" and not (cfg.init and init_has_dit):
        raise ValueError("train distill needs --init MODEL with a trained transformer (the teacher)")
    if cfg.stage == "lora":
        if not cfg.init:
            raise ValueError("train lora needs --base MODEL (the checkpoint whose transformer is adapted)")
        from ..lora import inject_lora

        inject_lora(dit, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha)
    return vae, dit, trained


def build_data(cfg: TrainConfig, d: Dist) -> tuple[Any, Any, Any]:
    """(dataset, collate, text encoder or None). A `ltxv preprocess` cache feeds dit/lora stages directly."""
    from ..data.cache import LatentDataset, collate_latents, is_cache
    from ..data.dataset import VideoDataset, collate, parse_buckets

    if not cfg.data.path:
        raise ValueError("no training data: pass --data (a caption file, dataset folder or preprocess cache)")
    if is_cache(cfg.data.path):
        if cfg.stage not in TRANSFORMER_STAGES:
            raise ValueError(f"{cfg.data.path} is a latent cache; `train {cfg.stage}` needs the videos")
        return LatentDataset(cfg.data.path, keyframes=cfg.flow.keyframe_p > 0), collate_latents, None
    data = VideoDataset(cfg.data.path, parse_buckets(cfg.data.buckets))
    if d.main:
        print(data.summary(), file=sys.stderr)
    encoder = None
    if cfg.stage in TEXT_STAGES:
        if not cfg.data.text_encoder:
            raise ValueError(
                f"`train {cfg.stage}` on videos needs --text-encoder T5_DIR "
                "(or a cache from `ltxv preprocess`)"
            )
        from ..text import TextEncoder

        encoder = TextEncoder.from_pretrained(cfg.data.text_encoder, device="cpu", dtype=torch.float32)
    return data, collate, encoder


def lr_scale(step: int, steps: int, warmup: int, decay: str) -> float:
    """The learning rate's factor at 0-based `step` of `steps`: linear warm-up over `warmup` steps, then 1
    ("constant") or a half cosine from 1 towards 0 over the remaining steps ("cosine")."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)  # [0, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _Steps:
    """Batch sampler over steps [start, end): the data position is the step number."""

    def __init__(self, sampler: Any, start: int, end: int) -> None:
        self.sampler, self.start, self.end = sampler, start, end

    def __iter__(self):  # noqa: ANN204
        return (self.sampler.batch(s) for s in range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def _to_device(batch: dict, device: torch.device, encoder: Any, max_tokens: int) -> dict:
    """A collated batch on `device`, its captions encoded by `encoder` (when given and not cached)."""
    out = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if encoder is not None and "text_emb" not in out:
        with torch.no_grad():
            emb, mask = encoder.encode(list(out["caption"]), max_tokens)
        # clones: the encoder runs in inference mode, and autograd may not save inference tensors
        out["text_emb"], out["text_mask"] = emb.to(device, torch.float32).clone(), mask.to(device).clone()
    return out


# -- the loop ----------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, run: str | os.PathLike[str], progress: bool | None = None) -> Path:
    """Run (or resume) training into the folder `run`; returns the path of the final model file."""
    cfg, run = resolve_config(cfg), Path(run)
    d = setup_distributed(cfg)
    if cfg.batch_size % d.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {d.world} processes")
    check_run_folder(cfg, run, d)
    from ..data.dataset import BucketBatchSampler

    data, collate, encoder = build_data(cfg, d)
    stage = _build_stage(cfg, d, data, encoder)
    disc = _discriminator(cfg, d)
    sampler = BucketBatchSampler(data.buckets_of, cfg.batch_size, cfg.seed, d.rank, d.world)
    model = wrap(stage, cfg, d)
    optimizers = {"model": _adamw([p for p in stage.parameters() if p.requires_grad], cfg.optim.lr, cfg)}
    if disc is not None:
        optimizers["disc"] = _adamw(list(disc.parameters()), cfg.vae.disc_lr, cfg)
    named = [(n, p) for n, p in stage.named_parameters() if p.requires_grad]
    ema = st.EMA(named, cfg.ema_decay) if cfg.ema_decay > 0 else None

    start = resume(run, stage, disc, optimizers, ema, d)
    if d.main:
        st.write_json_atomic(run / "config.json", to_dict(cfg))
    if d.world > 1:
        dist.barrier()
    if start == 0 and cfg.stage == "joint":  # fix the latent normalisation from the initial encoder
        set_latent_statistics(stage.vae, data, collate, sampler, d)
    if start >= cfg.steps and d.main:
        print(f"{run}: already trained to step {start} (>= --steps {cfg.steps}); writing the final model")
    loader = DataLoader(
        data,
        batch_sampler=_Steps(sampler, start, cfg.steps),
        collate_fn=collate,
        num_workers=cfg.data.workers,
    )
    step_fn = _Step(model, stage, disc, optimizers, cfg, d)

    def batch0() -> dict:  # the validation item: the first clip, its caption encoded for the samples
        return _to_device(collate([data[0]]), d.device, encoder, cfg.data.max_tokens)

    show = (sys.stderr.isatty() if progress is None else progress) and d.main
    t_start, window = time.perf_counter(), []
    finite = torch.ones((), dtype=torch.bool, device=d.device)  # all gradient norms so far; no sync per step
    for step, batch in enumerate(loader, start=start):
        out, record, grad_norm = step_fn(_to_device(batch, d.device, encoder, cfg.data.max_tokens), step)
        finite &= torch.isfinite(grad_norm).to(finite.device)  # the same on every process (reduced gradients)
        if ema is not None:
            ema.update()
        window.append(time.perf_counter())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            record |= _metrics(out, grad_norm, d)
            record["steps_per_s"] = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else None
            window = window[-1:]
            if d.main:
                st.append_metrics(
                    run, {k: float(v) if isinstance(v, Tensor) else v for k, v in record.items()}
                )
                if not show:
                    print(_line(record, cfg.steps), file=sys.stderr)
            _check_finite(finite, step + 1, cfg, run)
        if show:
            print("\r" + _line(record | _metrics(out, grad_norm, None), cfg.steps), end="", file=sys.stderr)
        if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            _check_finite(finite, step + 1, cfg, run)
            save(run, step + 1, stage, disc, optimizers, ema, cfg, d)
        if cfg.val_every and (step + 1) % cfg.val_every == 0:
            validate(run, step + 1, stage, ema, batch0, cfg, d)
    if show:
        print(file=sys.stderr)
    if start < cfg.steps:
        _check_finite(finite, cfg.steps, cfg, run)
        save(run, cfg.steps, stage, disc, optimizers, ema, cfg, d)
    final = final_model(run, stage, ema, data, collate, sampler, cfg, d)
    validate(run, cfg.steps, stage, ema, batch0, cfg, d)
    if d.main:
        elapsed = time.perf_counter() - t_start
        print(f"trained {cfg.stage} to step {cfg.steps} in {elapsed:.1f} s; wrote {final}", file=sys.stderr)
    if d.world > 1:
        dist.barrier()
    return final


def _build_stage(cfg: TrainConfig, d: Dist, data: Any, encoder: Any) -> Stage:
    """The stage module on the device: its models (`build_models`), only the trained parameters requiring
    grad (LoRA: only the adapters), the null text for caption dropout, LPIPS when used, compiled if asked."""
    vae, dit, vae_trained = build_models(cfg)
    check_inputs_fit(cfg, dit, data, encoder)
    if cfg.stage == "dit" and not vae_trained and d.main:
        print("note: no trained VAE given (--init); validation samples will decode with an untrained one")
    stage: Stage = STAGES[cfg.stage](cfg, vae, dit)
    stage.requires_grad_(False)
    for module in trainable_modules(stage):
        if cfg.stage == "lora":
            for name, p in module.named_parameters():
                p.requires_grad_(".lora_" in name)
        else:
            module.requires_grad_(True)
    dit.gradient_checkpointing = cfg.grad_checkpointing
    stage.set_null_text(*_null_text(data, encoder, cfg))
    if cfg.vae.lpips > 0:
        from .losses import LPIPS

        stage.lpips_net = (LPIPS.from_file(cfg.vae.lpips_path).to(d.device).requires_grad_(False),)
    stage.to(d.device)
    if cfg.compile:
        _compile(stage, cfg.compile)
    return stage


def check_inputs_fit(cfg: TrainConfig, dit: VideoDiT, data: Any, encoder: Any) -> None:
    """Before any step: the text encoder's width (or a cache's text width and latent channels) must be what
    the transformer takes; else a ValueError naming both and the fix."""
    if cfg.stage not in TEXT_STAGES:
        return
    want_text, want_latent = dit.cfg.caption_channels, dit.cfg.in_channels
    meta = getattr(data, "meta", None)
    if meta is not None:  # a preprocess cache
        text, latent = meta.get("text_hidden_size"), meta.get("latent_channels")
        where = f"the cache {cfg.data.path}"
        if latent is not None and latent != want_latent:
            raise ValueError(
                f"{where} holds {latent}-channel latents but the transformer takes {want_latent}: "
                "preprocess the data with this model's VAE (ltxv preprocess DATA --model MODEL --out CACHE)"
            )
    else:
        text, where = getattr(encoder, "hidden_size", None), f"the text encoder {cfg.data.text_encoder}"
    if text is not None and text != want_text:
        if meta is not None:
            fix = f"preprocess the data again with a {want_text}-d T5 (ltxv preprocess ... --text-encoder T5)"
        else:
            fix = f"use a T5 that wide (new: ltxv data text-encoder T5 --captions DATA --d-model {want_text})"
        wants = f"the transformer takes caption_channels={want_text}"
        raise ValueError(f"{where} gives {text}-d text embeddings but {wants}: {fix}")


class _Step:
    """One optimiser step at `step`: learning rates from the schedule, the stage's forward and backward under
    the step's seeded generator, gradients clipped per trained model (in `joint` the flow loss's large
    gradients must not shrink the VAE's step), then the discriminator's step when there is one.
    Returns (the stage's outputs, the record to log, the gradient norm before clipping)."""

    def __init__(
        self,
        model: nn.Module,
        stage: Stage,
        disc: nn.Module | None,
        optimizers: dict,
        cfg: TrainConfig,
        d: Dist,
    ) -> None:
        self.model, self.disc, self.optimizers, self.cfg, self.d = model, disc, optimizers, cfg, d
        self.clip_groups = [[p for p in m.parameters() if p.requires_grad] for m in trainable_modules(stage)]
        self.autocast = _autocast(cfg, d)

    def __call__(self, batch: dict, step: int) -> tuple[dict[str, Tensor], dict[str, Any], Tensor]:
        cfg, disc, opt = self.cfg, self.disc, self.optimizers
        rng = BatchRandom(st.step_generator(cfg.seed, step, self.d.device), self.d.rank, self.d.world)
        scale = lr_scale(step, cfg.optim.decay_steps or cfg.steps, cfg.optim.warmup_steps, cfg.optim.decay)
        for name, optimizer in opt.items():
            for group in optimizer.param_groups:
                group["lr"] = (cfg.vae.disc_lr if name == "disc" else cfg.optim.lr) * scale
        gan = disc is not None and step >= cfg.vae.gan_start
        with self.autocast:
            out = self.model(batch, rng, step, disc if gan else None)
        out["loss"].backward()
        grad_norm = _clip(self.clip_groups, cfg.optim.grad_clip)
        opt["model"].step()
        opt["model"].zero_grad(set_to_none=True)
        record: dict[str, Any] = {"step": step + 1, "lr": cfg.optim.lr * scale}
        if disc is not None:
            disc.zero_grad(set_to_none=True)  # the adversarial term's gradients are the autoencoder's
        if gan:
            from .losses import discriminator_loss

            with self.autocast:
                d_loss = discriminator_loss(
                    disc, batch["video"], out["recon"].detach(), rng.generator, cfg.vae.gan_foreground
                )
            d_loss.backward()
            opt["disc"].step()
            opt["disc"].zero_grad(set_to_none=True)
            record["loss_disc"] = d_loss.detach()
        return out, record, grad_norm


def _compile(stage: Stage, mode: str) -> None:
    """Regional torch.compile of what the stage runs every step: the DiT's blocks and/or the VAE's blocks."""
    from ..speed import compile_blocks, compile_vae_blocks

    if stage.cfg.stage in TEXT_STAGES:
        compile_blocks(stage.dit, mode)
    if stage.cfg.stage in ("vae", "decoder", "joint"):
        compile_vae_blocks(stage.vae, mode)


def _null_text(data: Any, encoder: Any, cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    if hasattr(data, "null_text"):
        return data.null_text()
    if encoder is None:  # vae / decoder stages never read it
        return torch.zeros(1, cfg.model.dit.caption_channels), torch.ones(1, dtype=torch.long)
    emb, mask = encoder.encode([""], cfg.data.max_tokens)
    return emb[0].clone(), mask[0].clone()


def _discriminator(cfg: TrainConfig, d: Dist) -> nn.Module | None:
    if cfg.vae.gan <= 0 or cfg.stage not in ("vae", "decoder", "joint"):
        return None
    from .losses import DiscriminatorConfig, PairDiscriminator

    torch.manual_seed((cfg.seed + 1) % 2**64)
    disc = PairDiscriminator(DiscriminatorConfig()).to(d.device)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        disc = DistributedDataParallel(disc, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return disc


def _adamw(params: list[nn.Parameter], lr: float, cfg: TrainConfig) -> torch.optim.AdamW:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=lr, betas=o.betas, weight_decay=o.weight_decay, foreach=False)


def _autocast(cfg: TrainConfig, d: Dist) -> Any:
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and d.device.type == "cuda")
    return torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16)


class TrainingDiverged(ValueError):
    """The gradients became NaN or infinite: the weights are lost from that step on, so nothing more is saved.
    A ValueError: the CLI reports it in one line with exit 2, as the settings (learning rate, losses) are the
    usual cause."""


def _check_finite(finite: Tensor, step: int, cfg: TrainConfig, run: Path) -> None:
    """Raise TrainingDiverged, before anything is saved, once any gradient norm was NaN or infinite."""
    if bool(finite):
        return
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    kept = f"the last checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written"
    raise TrainingDiverged(
        f"training diverged: a gradient norm became NaN or infinite by step {step} (--lr {cfg.optim.lr:g}); "
        f"nothing after it is saved ({kept}). Lower --lr, keep optim.grad_clip > 0, or check the data"
    )


def _clip(groups: list[list[nn.Parameter]], max_norm: float) -> Tensor:
    """Clip each group's gradient norm to max_norm (0 = off); returns the total norm before clipping."""
    norms = []
    for params in groups:
        if max_norm > 0:
            norms.append(full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        else:
            norms += [full_tensor(p.grad).float().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def _metrics(out: dict[str, Tensor], grad_norm: Tensor, d: Dist | None) -> dict[str, Any]:
    """Scalar losses averaged over processes (so the curve is the global batch's), and per-t-bin flow loss."""
    scalars = {k: v.detach().float() for k, v in out.items() if v.ndim == 0}  # every loss term, diagnostics
    if d is not None and d.world > 1:
        names = sorted(scalars)
        packed = torch.stack([scalars[k] for k in names]).to(d.device)
        dist.all_reduce(packed)
        scalars = dict(zip(names, packed / d.world, strict=True))
    record: dict[str, Any] = {k: v.item() for k, v in scalars.items()}
    record["grad_norm"] = float(grad_norm)
    if "t" in out:
        t, per = out["t"].detach().float(), out["per_sample"].detach().float()
        if d is not None and d.world > 1:
            t, per = gather(t, d), gather(per, d)
        record |= mean_by_t_bin(per, t)
    return record


def _line(record: dict[str, Any], steps: int) -> str:
    shown = " ".join(
        f"{k} {v:.4g}"
        for k, v in record.items()
        if k.startswith("loss") and isinstance(v, float) and "_t" not in k
    )
    rate = record.get("steps_per_s")
    return f"step {record['step']}/{steps} {shown}" + (f" {rate:.2f} steps/s" if rate else "")
