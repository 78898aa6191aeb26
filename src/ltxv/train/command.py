"""`ltxv train STAGE` flags -> one resolved TrainConfig -> `train()` (wired into the CLI by cli.py)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..config import COMPILE_MODES, TRAIN_STAGES, TrainConfig, apply_overrides, from_dict, to_dict

STAGE_HELP = {
    "vae": "train the Video-VAE (pixel MSE + DWT L1 + KL, optional GAN / LPIPS)",
    "decoder": "train the decoder as the final denoising step (latents noised to t <= 0.2)",
    "dit": "train the transformer with rectified flow (T2V and I2V together)",
    "joint": "train encoder, decoder and transformer together in one loop",
    "lora": "train LoRA adapters on a loaded transformer (--base MODEL)",
    "distill": "distill a transformer (--init MODEL) into a few-step, guidance-free one",
}
# flag -> dotted TrainConfig key; the defaults live in TrainConfig, a flag only overrides when given
FLAGS = {
    "data": "data.path",
    "buckets": "data.buckets",
    "text_encoder": "data.text_encoder",
    "init": "init",
    "init_dit": "init_dit",
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "seed": "seed",
    "log_every": "log_every",
    "save_every": "save_every",
    "val_every": "val_every",
    "ema": "ema_decay",
    "new_dit": "new_dit",
    "compile": "compile",
    "student_steps": "distill.steps",
    "teacher_steps": "distill.teacher_steps",
    "guidance": "distill.guidance",
    "teacher": "distill.teacher",
}


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    d = TrainConfig()
    parser.add_argument(
        "--data", help="caption file (csv/json/jsonl) or dataset folder; dit/lora: or a cache"
    )
    parser.add_argument(
        "-o", "--out", required=True, help="run folder (re-running resumes from its last checkpoint)"
    )
    parser.add_argument("--preset", default="tiny", help="model size preset (ignored with --init/--base)")
    if stage == "lora":
        parser.add_argument("--base", dest="init", required=True, help="model whose transformer is adapted")
    elif stage == "distill":
        parser.add_argument("--init", required=True, help="model to distill (the teacher and the start)")
        parser.add_argument(
            "--student-steps", type=int, help=f"steps the result samples in (default {d.distill.steps})"
        )
        parser.add_argument(
            "--teacher-steps",
            type=int,
            help=f"teacher Euler steps per student step (default {d.distill.teacher_steps})",
        )
        parser.add_argument(
            "--guidance", type=float, help=f"the teacher's CFG scale (default {d.distill.guidance:g})"
        )
        parser.add_argument(
            "--teacher",
            help="the teacher's checkpoint (default: --init's transformer; set it when --init is "
            "an earlier student)",
        )
    else:
        parser.add_argument("--init", help="checkpoint to start from (e.g. the VAE of an earlier stage)")
    if stage in ("dit", "joint"):
        parser.add_argument(
            "--new-dit",
            action="store_const",
            const=True,
            help="a new transformer (the preset's shape, changed with --set model.dit.*) on --init's VAE",
        )
        parser.add_argument(
            "--init-dit", help="transformer from this checkpoint instead of --init's (e.g. onto a new VAE)"
        )
    parser.add_argument("--text-encoder", help="T5 folder, for captions of video datasets")
    parser.add_argument("--buckets", help=f"'FxHxW;...' clip sizes (default {d.data.buckets})")
    parser.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, help=f"global batch (default {d.batch_size})")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {d.optim.lr})")
    parser.add_argument("--seed", type=int, help=f"seed of weights, data order and noise (default {d.seed})")
    parser.add_argument("--log-every", type=int, help=f"metrics.jsonl every N steps (default {d.log_every})")
    parser.add_argument("--save-every", type=int, help=f"checkpoint every N steps (default {d.save_every})")
    parser.add_argument("--val-every", type=int, help="validation mp4 every N steps (default: at the end)")
    parser.add_argument("--ema", type=float, help="EMA decay, e.g. 0.999 (default: off)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        help="torch.compile the trained blocks (regional) with this mode (bare flag: default); the first "
        "steps include compile time",
    )
    parser.add_argument("--config", help="a JSON TrainConfig (as printed by --dry-run) to start from")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set flow.first_frame_p=0.5 --set train.parallel=fsdp",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    parser.set_defaults(handler=run, stage=stage)


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Preset (or --config file) -> flags -> --set overrides: the config a run is pinned to."""
    from ..presets import get_preset

    if args.config:
        cfg = replace(_config_file(args.config), stage=args.stage)
    else:
        cfg = TrainConfig(stage=args.stage, model=get_preset(args.preset))
    overrides = [
        f"{key}={json.dumps(value) if isinstance(value, bool) else value}"
        for flag, key in FLAGS.items()
        if (value := getattr(args, flag, None)) is not None
    ]
    # `train.x` is accepted as a synonym of `x` (the spelling: --set train.parallel=fsdp)
    sets = [s[len("train.") :] if s.startswith("train.") else s for s in args.set]
    cfg = apply_overrides(cfg, overrides + sets)
    # with --init the checkpoint describes the model: only a new transformer's shape may be set
    ignored = [s for s in sets if s.startswith("model.") and not (cfg.new_dit and s.startswith("model.dit."))]
    if cfg.init and ignored:
        raise ValueError(
            f"{'--base' if cfg.stage == 'lora' else '--init'} {cfg.init} describes the model, so --set "
            f"{ignored[0]} would be ignored; "
            "for a new transformer of another shape add --new-dit (then --set model.dit.* applies)"
        )
    if cfg.init or cfg.init_dit:
        from .loop import resolve_config

        cfg = resolve_config(cfg)
    return cfg


def _config_file(path: str) -> TrainConfig:
    """--config: a JSON TrainConfig, as --dry-run prints it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: no such file (`ltxv train STAGE --dry-run` writes one)")
    try:
        return from_dict(TrainConfig, json.loads(p.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"--config {path} is not JSON ({err}); `ltxv train STAGE --dry-run` writes one"
        raise ValueError(msg) from None


def check_data_settings(cfg: TrainConfig) -> None:
    """What --dry-run can check of the data without reading it: the path exists, the buckets parse."""
    from ..data.cache import is_cache
    from ..data.dataset import parse_buckets

    if cfg.data.path and not Path(cfg.data.path).exists():
        raise FileNotFoundError(f"--data {cfg.data.path}: no such file or folder")
    if not (cfg.data.path and is_cache(cfg.data.path)):
        parse_buckets(cfg.data.buckets)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    if args.dry_run:
        check_data_settings(cfg)
        print(json.dumps(to_dict(cfg), indent=1))
        return 0
    from .loop import train

    train(cfg, args.out)
    return 0


def add_stages(train: argparse.ArgumentParser, fmt: type[argparse.HelpFormatter]) -> None:
    """`ltxv train`'s subcommands, one per stage."""
    stages = train.add_subparsers(dest="stage_command", metavar="STAGE", required=True)
    for stage in TRAIN_STAGES:
        add_arguments(stages.add_parser(stage, help=STAGE_HELP[stage], formatter_class=fmt), stage)
