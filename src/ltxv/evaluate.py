"""`ltxv eval --suite shapes`: score a model on the held-out shapes-world combinations with the judge.

The suite renders the held-out clips (`synth.write_dataset` with --holdout into a temporary folder: H.264,
as training data is) and reports, each averaged over the clips:
- reference: the judge's accuracy on the rendered clips themselves (should be 1: a check of the judge);
- vae: reconstruction PSNR / SSIM (encode, decode at the sampling decode timestep without decode noise), and
  the judge's accuracy on the reconstructions;
- t2v: per-attribute accuracy (colour, shape, motion, background) of videos generated from the captions;
- i2v: videos conditioned on each clip's first frame (prepared as `ltxv generate --image` does): PSNR of the
  first generated frame against it, and per-attribute accuracy (motion is the one the image cannot give);
- keyframes: videos conditioned on each clip's first frame at 0 and its last frame at F - 1 (a keyframe, as
  `ltxv generate --condition last.png@F-1` gives it): PSNR of the last generated frame against it, the
  distance of the object's centroid in that frame from the clip's (px), and per-attribute accuracy;
- temporal: area coefficient of variation and colour std of the object across frames (t2v videos);
- speed: wall seconds per text-to-video generation and the realtime factor (video seconds / wall seconds).
vae, t2v and i2v also give the shape accuracy per shape asked for (`shape_accuracy`: {circle, square,
triangle}); reference, vae, t2v and i2v the median of the judge's fill ratio per shape asked for
(`shape_fill`; a square is judged one above judge.SQUARE_FILL, 0.893; rendered squares read ~1, circles
~0.79): how near the cut a model's shapes fall where the accuracy alone reads 0 or 1. Every clip's row holds
its videos' fill and row skew.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import judge
from .config import MAX_SEED, SampleConfig
from .data import synth
from .files import check_writable, write_text_atomic
from .media import read_video

SUITES = ("shapes",)
SAMPLING_KEYS = (
    "steps",
    "guidance",
    "guidance_until",
    "stg",
    "decode_timestep",
    "keyframe_guidance",
)  # the report records
SPLITS = ("holdout", "train")


@dataclass(frozen=True)
class ShapesEval:
    """Settings of the shapes suite; the defaults of `ltxv eval`."""

    model: str
    text_encoder: str | None = None
    clips: int = len(synth.HOLDOUT_COMBOS)  # held-out clips (the default covers every held-out triple once)
    size: int = 128  # frame side, a multiple of 32
    frames: int = 25  # 8k+1
    steps: int | None = None  # None: the checkpoint's default
    guidance: float | None = None  # CFG scale; None: the checkpoint's default
    guidance_until: float | None = None  # SampleConfig.guidance_until; None: the checkpoint's default
    keyframe_guidance: bool | None = None  # SampleConfig.keyframe_guidance; None: the checkpoint's default
    seed: int = 0  # clips and generation noise
    fps: float = 24.0
    split: str = (
        "holdout"  # "train": seen combinations (tuning generation settings without the held-out ones)
    )

    def __post_init__(self) -> None:
        if not isinstance(self.frames, int) or self.frames < 1 or self.frames % 8 != 1:
            raise ValueError(f"frames must be 8k+1 (9, 17, 25, ...) for the VAE, got {self.frames!r}")
        if not isinstance(self.clips, int) or self.clips < 1:
            raise ValueError(
                f"clips must be a positive integer (held-out clips to evaluate), got {self.clips!r}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 1.0):
            raise ValueError(
                f"guidance must be a finite number >= 1 (1 = no guidance), got {self.guidance!r}"
            )
        if self.guidance_until is not None:
            SampleConfig(guidance_until=self.guidance_until)  # SampleConfig's own range check
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        synth.SynthConfig(size=self.size, frames=self.frames, seed=self.seed)  # synth's own checks
        if self.seed + self.clips - 1 > MAX_SEED:  # clip i generates with seed + i
            raise ValueError(
                f"seed + clips - 1 must be <= 2**64 - 1, got seed {self.seed} with {self.clips} clips"
            )


def eval_clips(cfg: ShapesEval, folder: Path) -> list[tuple[dict, Tensor]]:
    """Write `cfg.clips` clips of `cfg.split` into `folder`; (record, video (1, 3, F, H, W) in [0, 1]) each.
    The train split draws new clips of the training combinations (a seed other than the training data's
    gives clips the model has not seen)."""
    synth_cfg = synth.SynthConfig(
        clips=cfg.clips if cfg.split == "train" else 1,
        size=cfg.size,
        frames=cfg.frames,
        seed=cfg.seed,
        fps=cfg.fps,
        holdout=True,
        holdout_clips=cfg.clips if cfg.split == "holdout" else 1,
    )
    synth.write_dataset(folder, synth_cfg)
    index = "holdout.jsonl" if cfg.split == "holdout" else "captions.jsonl"
    lines = (folder / index).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [(r, (read_video(folder / r["media_path"])[0] + 1) / 2) for r in records]


def _mean(values: list) -> float | None:
    """Mean of the values that are not None (bools count as 0/1); None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _accuracy(scores: list[dict[str, bool]]) -> dict[str, float | None]:
    out = {a: _mean([s[a] for s in scores]) for a in judge.ATTRIBUTES}
    out["all"] = _mean([all(s.values()) for s in scores])
    return out


def _accuracy_by_shape(rows: list[dict], section: str) -> dict[str, float | None]:
    """{shape asked for: share of those clips whose `section` video the judge names that shape}: where the
    shape accuracy is lost (e.g. squares drawn with round corners)."""
    shapes = sorted({r["shape"] for r in rows})
    return {s: _mean([r[section]["score"]["shape"] for r in rows if r["shape"] == s]) for s in shapes}


def _fill_by_shape(rows: list[dict], section: str) -> dict[str, float | None]:
    """{shape asked for: median fill ratio of those clips' `section` videos that hold an object}; None where
    none does."""
    fills: dict[str, list[float]] = {r["shape"]: [] for r in rows}
    for r in rows:
        if r[section]["fill"] is not None:
            fills[r["shape"]].append(r[section]["fill"])
    return {s: statistics.median(f) if f else None for s, f in sorted(fills.items())}


def _judged(video: Tensor, record: dict) -> dict:
    """The judgement of one video as JSON-friendly fields, with its score against `record`."""
    j = judge.judge_video(video)
    return {
        "found": j.found,
        **{a: getattr(j, a) for a in judge.ATTRIBUTES},
        "velocity": list(j.velocity),
        "fill": j.fill,
        "skew": j.skew,
        "score": judge.score(j, record),
    }


def _consistency(video: Tensor) -> dict[str, float | None]:
    mask = judge.segment(video, judge.estimate_background(video))
    return judge.temporal_consistency(video, mask)


def _reconstruct(pipe, video: Tensor, decode_timestep: float) -> Tensor:  # noqa: ANN001 - Pipeline
    """(1, 3, F, H, W) in [0, 1] -> the VAE round trip in [0, 1] (no decode noise: deterministic)."""
    latents = pipe.encode_video(video * 2 - 1)
    timestep = decode_timestep if pipe.vae.cfg.timestep_conditioning else None
    with torch.inference_mode():
        recon = pipe.vae.decode(latents, timestep=timestep)
    return ((recon.float().cpu() + 1) / 2).clamp(0, 1)


def _image_condition(video: Tensor, frame: int = 0):  # noqa: ANN202 - Condition
    """The clip's frame `frame` as `ltxv generate --image` / `--condition PATH@FRAME` prepares it (official
    blur + H.264, crf 29), placed at that frame."""
    from .conditioning import Condition
    from .media import preprocess_condition

    image = video[:, :, frame : frame + 1] * 2 - 1
    return Condition(preprocess_condition(image), frame=frame, strength=1.0)


def evaluate_shapes(cfg: ShapesEval, log=print) -> dict:  # noqa: ANN001 - log(str)
    """Run the shapes suite (see the module docstring); returns the report (JSON-safe but for NaN/inf)."""
    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(cfg.model, cfg.text_encoder)
    base = pipe.default_config()  # with the model folder's generation.json
    sample = dataclasses.replace(
        base,
        width=cfg.size,
        height=cfg.size,
        num_frames=cfg.frames,
        frame_rate=cfg.fps,
        steps=cfg.steps or base.steps,
        guidance=base.guidance if cfg.guidance is None else cfg.guidance,
        guidance_until=base.guidance_until if cfg.guidance_until is None else cfg.guidance_until,
        keyframe_guidance=base.keyframe_guidance if cfg.keyframe_guidance is None else cfg.keyframe_guidance,
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ltxv-eval-") as tmp:
        clips = eval_clips(cfg, Path(tmp))
    for i, (record, clip) in enumerate(clips):
        log(f"[{i + 1}/{len(clips)}] {record['caption']}")
        row = {"caption": record["caption"], **{a: record[a] for a in judge.ATTRIBUTES}}
        row["reference"] = _judged(clip, record)
        row["reference_temporal"] = _consistency(clip)
        recon = _reconstruct(pipe, clip, sample.decode_timestep)
        row["vae"] = {
            "psnr": judge.psnr(recon, clip),
            "ssim": judge.ssim(recon, clip),
            **_judged(recon, record),
        }
        config = dataclasses.replace(sample, seed=cfg.seed + i)
        started = time.perf_counter()
        video = pipe.generate(record["caption"], config).video.float().cpu()
        row["seconds"] = time.perf_counter() - started
        row["t2v"] = _judged(video, record)
        row["temporal"] = _consistency(video)
        i2v = (
            pipe.generate(record["caption"], config, conditions=[_image_condition(clip)]).video.float().cpu()
        )
        row["i2v"] = {"first_frame_psnr": judge.psnr(i2v[:, :, :1], clip[:, :, :1]), **_judged(i2v, record)}
        ends = [_image_condition(clip), _image_condition(clip, clip.shape[2] - 1)]
        keyed = pipe.generate(record["caption"], config, conditions=ends).video.float().cpu()
        row["keyframes"] = {
            "last_frame_psnr": judge.psnr(keyed[:, :, -1:], clip[:, :, -1:]),
            "end_error_px": judge.centroid_errors(keyed, clip)[-1],  # None: no object in either
            **_judged(keyed, record),
        }
        rows.append(row)
    return summarize(cfg, rows, str(pipe.device), sample)


def summarize(cfg: ShapesEval, rows: list[dict], device: str, sample: SampleConfig) -> dict:
    """The report: settings, per-section means over the clips, and every clip's row."""
    seconds = _mean([r["seconds"] for r in rows])
    video_seconds = cfg.frames / cfg.fps
    return {
        "suite": "shapes",
        "settings": {**dataclasses.asdict(cfg), "device": device},
        "sampling": {k: getattr(sample, k) for k in SAMPLING_KEYS},
        "reference": {
            "accuracy": _accuracy([r["reference"]["score"] for r in rows]),
            "shape_fill": _fill_by_shape(rows, "reference"),
            "area_cv": _mean([r["reference_temporal"]["area_cv"] for r in rows]),
        },
        "vae": {
            "psnr": _mean([r["vae"]["psnr"] for r in rows]),
            "ssim": _mean([r["vae"]["ssim"] for r in rows]),
            "accuracy": _accuracy([r["vae"]["score"] for r in rows]),
            "shape_accuracy": _accuracy_by_shape(rows, "vae"),
            "shape_fill": _fill_by_shape(rows, "vae"),
        },
        "t2v": {
            "accuracy": _accuracy([r["t2v"]["score"] for r in rows]),
            "shape_accuracy": _accuracy_by_shape(rows, "t2v"),
            "shape_fill": _fill_by_shape(rows, "t2v"),
            "found": _mean([r["t2v"]["found"] for r in rows]),
        },
        "i2v": {
            "first_frame_psnr": _mean([r["i2v"]["first_frame_psnr"] for r in rows]),
            "accuracy": _accuracy([r["i2v"]["score"] for r in rows]),
            "shape_accuracy": _accuracy_by_shape(rows, "i2v"),
            "shape_fill": _fill_by_shape(rows, "i2v"),
        },
        "keyframes": {
            "last_frame_psnr": _mean([r["keyframes"]["last_frame_psnr"] for r in rows]),
            "end_error_px": _mean([r["keyframes"]["end_error_px"] for r in rows]),
            "accuracy": _accuracy([r["keyframes"]["score"] for r in rows]),
        },
        "temporal": {
            "area_cv": _mean([r["temporal"]["area_cv"] for r in rows]),
            "colour_std": _mean([r["temporal"]["colour_std"] for r in rows]),
            "found": _mean([r["temporal"]["found"] for r in rows]),
        },
        "speed": {
            "seconds_per_video": seconds,
            "realtime_factor": video_seconds / seconds if seconds else None,
            "video_seconds": video_seconds,
        },
        "clips": rows,
    }


def _finite(value):  # noqa: ANN001, ANN202 - any JSON-like value
    """NaN and inf (e.g. the PSNR of identical images) become None: strict JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], report: dict) -> Path:
    """Write `report` as strict JSON, atomically."""
    return write_text_atomic(path, json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")


def format_table(report: dict) -> str:
    """The section means as an aligned two-column table."""

    def fmt(v: object) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = []
    for section in ("sampling", "reference", "vae", "t2v", "i2v", "keyframes", "temporal", "speed"):
        for key, value in report[section].items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in items:
                name = f"{section}.{key}" + (f".{sub}" if sub else "")
                lines.append(f"{name:<30} {fmt(v)}")
    return "\n".join(lines)


# command line (wired by cli.py as `ltxv eval`) -----------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `ltxv eval`; defaults come from ShapesEval."""
    d = ShapesEval(model="")
    parser.add_argument("--suite", choices=SUITES, default="shapes", help="what to evaluate")
    parser.add_argument("--model", help="checkpoint file or folder (default: the bundled demo model)")
    parser.add_argument("--text-encoder", help="T5 folder (default: the model folder's text_encoder/)")
    parser.add_argument("--clips", type=int, default=d.clips, help="clips to render and generate")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=d.split,
        help="holdout: never-trained combinations (the report); train: seen ones (for tuning settings)",
    )
    parser.add_argument("--size", type=int, help=f"frame side, /32 (default: the model's, else {d.size})")
    parser.add_argument(
        "--frames", type=int, help=f"frames per video, 8k+1 (default: the model's, else {d.frames})"
    )
    parser.add_argument(
        "--steps", type=int, default=d.steps, help="sampling steps (default: the checkpoint's)"
    )
    parser.add_argument(
        "--guidance", type=float, default=d.guidance, help="CFG scale (default: the checkpoint's)"
    )
    parser.add_argument(
        "--guidance-until",
        type=float,
        default=d.guidance_until,
        help="guidance only at steps with t >= this, 0 = every step (default: the checkpoint's)",
    )
    parser.add_argument(
        "--keyframe-guidance",
        action=argparse.BooleanOptionalAction,
        default=d.keyframe_guidance,
        help="keyframe guidance in the keyframes section (default: the checkpoint's)",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="clips and generation noise")
    parser.add_argument("--json", dest="json_out", help="write the full report here (JSON)")


def run(args: argparse.Namespace) -> int:
    """`ltxv eval`: validate, run the suite, print the table, write the JSON report."""
    from .demo import demo_model, generation_defaults

    model = args.model or str(demo_model())
    tuned = generation_defaults(model)  # size and frames the model was made for, unless given
    cfg = ShapesEval(
        model=model,
        text_encoder=args.text_encoder,
        clips=args.clips,
        size=tuned.get("width", ShapesEval.size) if args.size is None else args.size,  # --size 0 is refused
        frames=tuned.get("num_frames", ShapesEval.frames) if args.frames is None else args.frames,
        steps=args.steps,
        guidance=args.guidance,
        guidance_until=args.guidance_until,
        keyframe_guidance=args.keyframe_guidance,
        seed=args.seed,
        split=args.split,
    )
    if args.json_out:
        check_writable(args.json_out)  # before the work, not after it
    report = evaluate_shapes(cfg, log=lambda line: print(line, file=sys.stderr))
    print(format_table(report))
    if args.json_out:
        print(f"wrote {write_json(args.json_out, report)}")
    return 0
