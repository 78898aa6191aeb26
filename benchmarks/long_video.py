"""Long videos of the bundled model (`Pipeline.generate_chain`, `ltxv generate --then`), scored by the judge.

    python benchmarks/long_video.py [--model src/ltxv/assets/demo] [--json out.json]

Two probes, each for every (overlap, AdaIN) setting asked for (default: overlap 1 and 9, AdaIN 0 and 1):
- turns: one chain of 4 segments per colour (8), the prompt's direction reversed in every segment ("moving
  right", "moving left", "moving right", "moving left"; shapes and backgrounds alternate). Reports how often
  segments 2-4 move the way their prompt says and keep the colour, the object's jump at each seam (centroid
  of the last frame before the seam against the first frame after it, px; about 1-2 px is one frame of
  motion), and seconds per chain.
- still: a standing object chained over 8 segments (16 s at the bundled defaults), 3 objects: the mean
  object area of the last segment over the first's (1 = no drift).
- extend (`--extend K`, repeatable): 24 (`--clips`) moving clips of training combinations rendered anew,
  their first K frames given at frame 0 with the caption (K = 1: image-to-video; 17: extension), one video
  generated each; the object's centroid error against the clip's true continuation (frames K..F-1, px) and
  its PSNR.
- keyframes (`--keyframes`): the same clips, their last frame given as a keyframe at frame F-1 (extra
  tokens), alone and with the first frame at 0; the object's centroid error at the last frame and over all
  frames against the clip (px), and the last frame's PSNR. Without the keyframe (the last row, text only for
  "last", image-to-video for "first+last") the error shows what the prompt alone gives.
Sampling is the model's (generation.json) but for `--guidance` and `--[no-]keyframe-guidance`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time

import torch

from ltxv import judge
from ltxv.conditioning import Condition
from ltxv.config import ChainConfig
from ltxv.data import synth
from ltxv.demo import demo_model
from ltxv.pipeline import Pipeline

KEYFRAME_GIVENS = ("last", "first+last", "none", "first")
OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}
DIRECTIONS = ("right", "down", "left", "up")
STILL = (("red", "circle", "black"), ("blue", "triangle", "white"), ("yellow", "square", "gray"))


def caption(colour: str, shape: str, motion: str, background: str) -> str:
    speed = "none" if motion == "static" else "slow"
    return synth.caption(synth.ClipSpec(colour, shape, motion, speed, background))


def segments(video: torch.Tensor, frames: int, overlap: int, count: int) -> list[torch.Tensor]:
    """The chain's video (1, 3, F_total, H, W) cut back into its segments' new frames."""
    starts = [0] + [frames + k * (frames - overlap) for k in range(count - 1)]
    ends = starts[1:] + [video.shape[2]]
    return [video[:, :, a:b] for a, b in zip(starts, ends, strict=True)]


def mean_area(video: torch.Tensor) -> float:
    areas = judge.judge_video(video).areas
    return sum(areas) / len(areas) if areas else 0.0


def turns(pipe: Pipeline, cfg, chain: ChainConfig) -> dict:
    ok_dir = ok_colour = n = 0
    jumps, seconds = [], []
    for i, colour in enumerate(synth.COLOURS):
        shape, background = ("circle", "triangle")[i % 2], ("black", "white", "gray")[i % 3]
        if (colour, background) in synth.EXCLUDED_PAIRS:
            background = "black"
        start = DIRECTIONS[i % 4]
        wants = [start if k % 2 == 0 else OPPOSITE[start] for k in range(4)]
        prompts = [caption(colour, shape, want, background) for want in wants]
        started = time.perf_counter()
        video = pipe.generate_chain(prompts, dataclasses.replace(cfg, seed=i), chain).video
        seconds.append(time.perf_counter() - started)
        parts = segments(video, cfg.num_frames, chain.overlap, len(prompts))
        for k in range(1, len(parts)):
            verdict = judge.judge_video(parts[k])
            n += 1
            ok_dir += verdict.motion == wants[k]
            ok_colour += verdict.colour == colour
            before, after = judge.judge_video(
                torch.cat([parts[k - 1][:, :, -1:], parts[k][:, :, :1]], 2)
            ).centroids
            if before and after:
                jumps.append(math.dist(before, after))
    return {
        "direction": ok_dir / n,
        "colour": ok_colour / n,
        "seams_found": len(jumps) / n,
        "seam_jump_px_median": statistics.median(jumps) if jumps else None,
        "seam_jump_px_max": max(jumps) if jumps else None,
        "seconds_per_chain": statistics.median(seconds),
        "segments_judged": n,
    }


def still(pipe: Pipeline, cfg, chain: ChainConfig, count: int = 8) -> dict:
    ratios = {}
    for i, (colour, shape, background) in enumerate(STILL):
        prompts = [caption(colour, shape, "static", background)] * count
        video = pipe.generate_chain(prompts, dataclasses.replace(cfg, seed=i), chain).video
        parts = segments(video, cfg.num_frames, chain.overlap, count)
        first = mean_area(parts[0])
        ratios[f"{colour} {shape}"] = mean_area(parts[-1]) / first if first else None
    return {"area_last_over_first": ratios}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def extend(pipe: Pipeline, cfg, given: int, clips: int = 24) -> dict:
    specs = [s for s in synth.sample_specs(2 * clips, 21, "train") if s.motion != "static"][:clips]
    errors, psnrs = [], []
    for i, spec in enumerate(specs):
        clip = synth.render_clip(spec, cfg.width, cfg.num_frames)  # (1, 3, F, H, W) in [0, 1]
        condition = Condition(clip[:, :, :given] * 2 - 1, 0, 1.0)
        video = pipe.generate(
            synth.caption(spec), dataclasses.replace(cfg, seed=i), conditions=[condition]
        ).video
        found = [e for e in judge.centroid_errors(video, clip)[given:] if e is not None]
        if found:
            errors.append(statistics.mean(found))
        psnrs.append(judge.psnr(video[:, :, given:], clip[:, :, given:]))
    return {
        "given_frames": given,
        "centroid_error_px": statistics.mean(errors) if errors else None,
        "object_found": len(errors) / len(specs),
        "psnr": statistics.mean(psnrs),
    }


def keyframes(pipe: Pipeline, cfg, clips: int = 24, givens: tuple[str, ...] = KEYFRAME_GIVENS) -> list[dict]:
    specs = [s for s in synth.sample_specs(2 * clips, 21, "train") if s.motion != "static"][:clips]
    last = cfg.num_frames - 1
    rows = []
    for given in givens:
        errors_last, errors_all, psnrs = [], [], []
        for i, spec in enumerate(specs):
            clip = synth.render_clip(spec, cfg.width, cfg.num_frames) * 2 - 1  # (1, 3, F, H, W)
            conditions = []
            if given.startswith("first"):
                conditions.append(Condition(clip[:, :, :1], 0, 1.0))
            if given.endswith("last"):
                conditions.append(Condition(clip[:, :, last:], last, 1.0))
            video = pipe.generate(
                synth.caption(spec), dataclasses.replace(cfg, seed=i), conditions=conditions
            ).video
            errors = judge.centroid_errors(video, (clip + 1) / 2)
            if errors[-1] is not None:
                errors_last.append(errors[-1])
            found = [e for e in errors if e is not None]
            if found:
                errors_all.append(statistics.mean(found))
            psnrs.append(judge.psnr(video[:, :, last:], (clip[:, :, last:] + 1) / 2))
        rows.append(
            {
                "given": given,
                "last_frame_error_px": statistics.mean(errors_last) if errors_last else None,
                "mean_error_px": statistics.mean(errors_all) if errors_all else None,
                "last_frame_psnr": statistics.mean(psnrs),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(demo_model()))
    p.add_argument("--overlap", type=int, action="append", help="repeatable (default: 1 and 9)")
    p.add_argument("--adain", type=float, action="append", help="repeatable (default: 0 and 1)")
    p.add_argument(
        "--extend", type=int, action="append", default=[], help="given frames K (1 or 8k+1); repeatable"
    )
    p.add_argument("--keyframes", action="store_true", help="the keyframe probe")
    p.add_argument(
        "--keyframe-given", action="append", choices=KEYFRAME_GIVENS, help="repeatable (default: all four)"
    )
    p.add_argument("--clips", type=int, default=24, help="clips of the extend and keyframe probes")
    p.add_argument("--guidance", type=float, help="CFG scale (default: the model's)")
    p.add_argument(
        "--keyframe-guidance", action=argparse.BooleanOptionalAction, help="(default: the model's)"
    )
    p.add_argument("--no-chains", action="store_true", help="skip the turns and still probes")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.clips < 1:
        p.error(f"--clips {args.clips}: at least 1")
    if args.keyframe_given and not args.keyframes:
        p.error("--keyframe-given picks rows of the keyframe probe: add --keyframes")
    torch.set_grad_enabled(False)
    pipe = Pipeline.from_pretrained(args.model)
    cfg = pipe.default_config()
    if args.guidance is not None:
        cfg = dataclasses.replace(cfg, guidance=args.guidance)
    if args.keyframe_guidance is not None:
        cfg = dataclasses.replace(cfg, keyframe_guidance=args.keyframe_guidance)
    rows = []
    for overlap in () if args.no_chains else args.overlap or (1, 9):
        for adain in args.adain or (0.0, 1.0):
            chain = ChainConfig(overlap=overlap, adain=adain)
            row = {"overlap": overlap, "adain": adain, **turns(pipe, cfg, chain), **still(pipe, cfg, chain)}
            rows.append(row)
            drift = " ".join(_fmt(v) for v in row["area_last_over_first"].values())
            print(
                f"overlap {overlap:2d} adain {adain:.2f}: direction {row['direction']:.1%} colour "
                f"{row['colour']:.1%}; seams: object found {row['seams_found']:.0%}, jump median "
                f"{_fmt(row['seam_jump_px_median'])} px, max {_fmt(row['seam_jump_px_max'])} px; "
                f"{row['seconds_per_chain']:.2f} s per 4-segment chain; still objects' area after 8 "
                f"segments / first: {drift}",
                flush=True,
            )
    extended = []
    for given in args.extend:
        if given % 8 != 1 or given >= cfg.num_frames or cfg.width != cfg.height:
            p.error(
                f"--extend {given}: 1 or 8k+1 frames below {cfg.num_frames}, on a model of square "
                f"videos ({cfg.width}x{cfg.height})"
            )
        extended.append(extend(pipe, cfg, given, args.clips))
        row = extended[-1]
        print(
            f"extend from {given} given frames: centroid error {_fmt(row['centroid_error_px'])} px, PSNR "
            f"{row['psnr']:.2f} dB (object found in {row['object_found']:.0%})",
            flush=True,
        )
    givens = tuple(args.keyframe_given or KEYFRAME_GIVENS)
    keyed = keyframes(pipe, cfg, args.clips, givens) if args.keyframes else []
    for row in keyed:
        print(
            f"keyframes, given {row['given']:>10}: centroid error at the last frame "
            f"{_fmt(row['last_frame_error_px'])} px, over all frames {_fmt(row['mean_error_px'])} px; "
            f"last frame PSNR {row['last_frame_psnr']:.2f} dB",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            out = {
                "model": args.model,
                "sample": dataclasses.asdict(cfg),
                "rows": rows,
                "extend": extended,
                "keyframes": keyed,
            }
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
