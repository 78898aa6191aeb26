"""Synthetic "shapes world" videos: one coloured shape moving (or standing still) on a plain background.

Every clip has a caption from a fixed grammar, "a {colour} {shape} moving {direction} on a {background}
background" or "a {colour} {shape} standing still on a {background} background" ("an" before orange), and a
record with the structured attributes (`clip_record`), so an evaluator can score generated videos.

The world (each choice is a constant below):
- colours COLOURS, shapes circle / square / triangle (pointing up), backgrounds black / gray / white, motions
  left / right / up / down / static in image coordinates (x right, y down: "up" moves towards row 0).
- Size: `object_size` is the side of the object's bounding box as a fraction of the frame side, drawn from
  OBJECT_SIZE_RANGE = [0.125, 0.25] (16-32 px in a 128 px frame). The circle's diameter, the square's side and
  the triangle's base and height all equal that side.
- Speed: SPEEDS in pixels per frame at the REFERENCE_SIZE of 128 px (slow 1, fast 2), scaled with the frame
  (64 px: 0.5 / 1, 256 px: 2 / 4), so a clip looks the same at any size. Static clips have speed "none".
- Placement: `start` = (u, v) in [0, 1]^2 is where the box sits within the free range of each axis, the range
  that keeps the whole box inside the frame for every frame of the motion (`place`). A clip whose object and
  travel do not fit raises a ValueError. With objects at most 0.25 of the frame, clips with fast motion fit
  up to 49 frames and slow-only datasets up to 97 (`max_frames`).
- Contrast: a colour never appears on the background of the same name (white on white). Yellow on white is
  excluded too: it differs from white only in the blue channel (BT.601 luma 0.89 vs 1, WCAG contrast
  1.07:1), which chroma subsampling and a VAE blur away. Cyan on white is kept (luma 0.70, contrast 1.25:1).
  Every allowed pair differs by at least 0.5 in some channel (RGB distance >= 0.59, purple on gray), so an
  evaluator finds the object as the pixels whose largest channel difference from the background exceeds 0.25.
- Rendering: exact inside-tests on a SUPERSAMPLE x SUPERSAMPLE grid per pixel, box-averaged: anti-aliased
  edges; interior pixels are exactly the named colour, the rest exactly the background.
- Sampling (`sample_specs`): balanced. Clips walk through every allowed (colour, shape, motion) triple in a
  seeded shuffled order, a full round before any triple repeats; background, speed, size and start are drawn
  uniformly per clip. The generator is `random.Random("ltxv-synth/{split}/{seed}")` (string seeds are hashed
  with SHA-512), so a seed gives identical specs, captions and pixels on every run and machine.
- Held-out combinations (compositional generalisation): the 8 (colour, shape, motion) triples HOLDOUT_COMBOS,
  one per colour. Split "train" never contains them, with any background, speed, size or position; split
  "holdout" contains only them; split "all" uses every triple. Every colour, shape, motion, and every
  (colour, shape) pair still appears in "train": only the triple is new.
- Files (`write_dataset`, `ltxv data synth DIR`): DIR/videos/000000.mp4, ... and DIR/captions.jsonl. With
  --holdout, captions.jsonl is the "train" split and DIR/holdout/*.mp4 with DIR/holdout.jsonl hold
  --holdout-clips clips of the "holdout" split (default 8: every held-out triple once). `media_path` is
  relative to DIR. The side must be a multiple of 32 (at least 32) so the VAE encodes it without padding;
  8k+1 frames are recommended (the CLI warns otherwise). Videos are H.264 at 24 fps via `media.write_video`.
  With --partial-captions captions.jsonl lists every clip a second time, after all the full rows, with a
  partial caption (`partial_caption_rows`: the colour, the motion or both left out); holdout.jsonl does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import random
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import MAX_SEED
from ..files import write_text_atomic
from ..media import MAX_SIDE, write_video

COLOURS: dict[str, tuple[float, float, float]] = {  # RGB in [0, 1]
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 0.8, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "purple": (0.6, 0.0, 0.8),
    "orange": (1.0, 0.55, 0.0),
    "cyan": (0.0, 1.0, 1.0),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
    "white": (1.0, 1.0, 1.0),
}
EXCLUDED_PAIRS = frozenset({("white", "white"), ("yellow", "white")})  # (colour, background): see docstring
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {  # motion -> unit step (dx, dy) in image coordinates
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "static": (0, 0),
}
MOTIONS = tuple(DIRECTIONS)
REFERENCE_SIZE = 128  # SPEEDS are pixels per frame in a frame of this side; they scale with the frame
SPEEDS: dict[str, float] = {"none": 0.0, "slow": 1.0, "fast": 2.0}
MOVING_SPEEDS = ("slow", "fast")
OBJECT_SIZE_RANGE = (0.125, 0.25)  # bounding-box side / frame side
SUPERSAMPLE = 4  # samples per pixel side for anti-aliasing
HOLDOUT_COMBOS: tuple[tuple[str, str, str], ...] = (  # (colour, shape, motion): never in split "train"
    ("red", "triangle", "up"),
    ("green", "circle", "left"),
    ("blue", "square", "right"),
    ("yellow", "triangle", "down"),
    ("white", "circle", "static"),
    ("purple", "square", "up"),
    ("orange", "circle", "right"),
    ("cyan", "triangle", "left"),
)
SPLITS = ("all", "train", "holdout")
LEAVE_OUTS = (("colour",), ("motion",), ("colour", "motion"))  # the partial captions (`partial_caption_rows`)


def _check_choice(name: str, value: object, choices: Collection[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size_frames(size: int, frames: int) -> None:
    if not _is_int(size) or not 32 <= size <= MAX_SIDE or size % 32:
        raise ValueError(
            f"size must be a multiple of 32 in [32, {MAX_SIDE}] so the VAE can encode it without padding, "
            f"got {size!r}; use e.g. 64, 128 or 256"
        )
    if not _is_int(frames) or frames < 1:
        raise ValueError(f"frames must be a positive integer (8k+1 such as 9, 17 or 25), got {frames!r}")


def _is_fraction(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1


def _check_speeds(speeds: tuple[str, ...]) -> None:
    if not speeds or any(s not in MOVING_SPEEDS for s in speeds):
        raise ValueError(f"speeds must be a non-empty subset of {', '.join(MOVING_SPEEDS)}; got {speeds!r}")


@dataclass(frozen=True)
class ClipSpec:
    """One clip, independent of frame size and length; `place` and `render_clip` resolve it in pixels."""

    colour: str
    shape: str
    motion: str  # a key of DIRECTIONS
    speed: str  # "none" for static clips, else "slow" or "fast"
    background: str
    object_size: float = 0.2  # bounding-box side / frame side
    start: tuple[float, float] = (0.5, 0.5)  # (u, v): position within the free range of x and y

    def __post_init__(self) -> None:
        _check_choice("colour", self.colour, COLOURS)
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("motion", self.motion, MOTIONS)
        _check_choice("speed", self.speed, SPEEDS)
        _check_choice("background", self.background, BACKGROUNDS)
        if (self.motion == "static") != (self.speed == "none"):
            raise ValueError(
                f"speed {self.speed!r} does not match motion {self.motion!r}: static clips have speed "
                f"'none', moving clips one of {', '.join(MOVING_SPEEDS)}"
            )
        if (self.colour, self.background) in EXCLUDED_PAIRS:
            others = [b for b in BACKGROUNDS if (self.colour, b) not in EXCLUDED_PAIRS]
            raise ValueError(
                f"a {self.colour} object on a {self.background} background is excluded (too little "
                f"contrast); use background {' or '.join(others)}"
            )
        if not _is_fraction(self.object_size) or self.object_size in (0, 1):
            raise ValueError(
                f"object_size must be a fraction of the frame side in (0, 1); got {self.object_size!r}"
            )
        start = self.start
        if not isinstance(start, tuple) or len(start) != 2 or not all(_is_fraction(u) for u in start):
            raise ValueError(f"start must be a tuple of two fractions (u, v) in [0, 1], got {start!r}")


@dataclass(frozen=True)
class Placement:
    """A ClipSpec resolved for one frame side and length, in pixels (x right, y down)."""

    object_px: float  # bounding-box side
    speed_px: float  # pixels per frame
    start_xy: tuple[float, float]  # centre of the bounding box at frame 0
    velocity_xy: tuple[float, float]  # pixels per frame

    def centre(self, t: int) -> tuple[float, float]:
        """Centre of the bounding box at frame t."""
        return (self.start_xy[0] + t * self.velocity_xy[0], self.start_xy[1] + t * self.velocity_xy[1])


def max_frames(speeds: tuple[str, ...] = MOVING_SPEEDS) -> int:
    """The longest clip in which the largest sampled object still fits at the fastest of `speeds`."""
    _check_speeds(speeds)
    fastest = max(SPEEDS[s] for s in speeds) / REFERENCE_SIZE  # frame sides per frame
    return math.floor((1 - OBJECT_SIZE_RANGE[1]) / fastest + 1e-9) + 1


def place(spec: ClipSpec, size: int, frames: int) -> Placement:
    """Pixel geometry of `spec` in a size x size frame over `frames` frames; the box stays inside it."""
    _check_size_frames(size, frames)
    obj = spec.object_size * size
    speed = SPEEDS[spec.speed] * size / REFERENCE_SIZE
    travel = speed * (frames - 1)
    if obj + travel > size * (1 + 1e-9):
        fit = math.floor((size - obj) / speed + 1e-9) + 1
        raise ValueError(
            f"{spec} does not fit: a {obj:g} px object moving {speed:g} px/frame travels {travel:g} px in "
            f"{frames} frames, more than a {size} px frame leaves; use at most {fit} frames, a slower "
            "speed or a smaller object"
        )
    direction = DIRECTIONS[spec.motion]
    centre = []
    for step, u in zip(direction, spec.start, strict=True):
        moving = travel if step else 0.0
        free = max(0.0, size - obj - moving)
        low = u * free + (moving if step < 0 else 0.0)  # left/top side of the box at frame 0
        centre.append(low + obj / 2)
    return Placement(obj, speed, (centre[0], centre[1]), (direction[0] * speed, direction[1] * speed))


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Which sample points, at offsets (dx, dy) from the box centre, lie in the shape of box side 2*half."""
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # triangle pointing up: apex (0, -half), base corners (+-half, half); the half-width grows linearly
    return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)


def _coverage(shape: str, centre: tuple[float, float], half: float, size: int) -> np.ndarray:
    """(S, S) float64: the share of each pixel's SUPERSAMPLE^2 sample points inside the shape; only the
    pixels under the bounding box are sampled."""
    k, (cx, cy) = SUPERSAMPLE, centre
    x0, x1 = max(0, math.floor(cx - half)), min(size, math.ceil(cx + half))
    y0, y1 = max(0, math.floor(cy - half)), min(size, math.ceil(cy + half))
    dx = (np.arange(x0 * k, x1 * k) + 0.5) / k - cx  # sample offsets from the centre, px
    dy = (np.arange(y0 * k, y1 * k) + 0.5) / k - cy
    inside = _inside(shape, dx[None, :], dy[:, None], half)  # (h*k, w*k)
    coverage = np.zeros((size, size))
    coverage[y0:y1, x0:x1] = inside.reshape(y1 - y0, k, x1 - x0, k).mean(axis=(1, 3))  # (h, w)
    return coverage


def render_clip(spec: ClipSpec, size: int, frames: int) -> Tensor:
    """(1, 3, F, S, S) float32 in [0, 1]: the clip, anti-aliased by SUPERSAMPLE^2 samples per pixel.
    Rendered with numpy (single-threaded, independent of torch's thread count)."""
    p = place(spec, size, frames)
    colour = np.array(COLOURS[spec.colour]).reshape(3, 1, 1)
    background = np.array(BACKGROUNDS[spec.background]).reshape(3, 1, 1)
    video = np.empty((3, frames, size, size), dtype=np.float32)
    for t in range(frames):
        coverage = _coverage(spec.shape, p.centre(t), p.object_px / 2, size)
        video[:, t] = background * (1 - coverage) + colour * coverage  # exact colours at coverage 0 and 1
    return torch.from_numpy(video)[None]


def caption(spec: ClipSpec, leave_out: Collection[str] = ()) -> str:
    """'a {colour} {shape} moving {direction} on a {background} background', or 'standing still' if static;
    the article is "an" before a vowel ("an orange circle"). `leave_out` drops the colour and/or the
    motion phrase: 'a square moving right on a black background', 'a blue square on a black background'."""
    for part in leave_out:
        _check_choice("leave_out", part, ("colour", "motion"))
    words = [spec.shape] if "colour" in leave_out else [spec.colour, spec.shape]
    if "motion" not in leave_out:
        words.append("standing still" if spec.motion == "static" else f"moving {spec.motion}")
    article = "an" if words[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words)} on a {spec.background} background"


def partial_caption_rows(records: list[dict], seed: int) -> list[dict]:
    """One more row per record: the same clip with a partial caption, its colour, its motion or both left
    out (`draw_leave_outs`), and "leaves_out" naming them. Training on such rows as well ties each word to
    what it names alone rather than to the whole (colour, shape, motion) triple."""
    return [
        record | {"caption": caption(spec_from_record(record), leave_out), "leaves_out": list(leave_out)}
        for record, leave_out in zip(records, draw_leave_outs(len(records), seed), strict=True)
    ]


def draw_leave_outs(n: int, seed: int) -> list[tuple[str, ...]]:
    """What each of n clips' partial caption leaves out: one of LEAVE_OUTS per clip, drawn with
    `random.Random("ltxv-synth/partial/{seed}")`."""
    rng = random.Random(f"ltxv-synth/partial/{seed}")
    return [rng.choice(LEAVE_OUTS) for _ in range(n)]


def combos(split: str) -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) triples a split draws from (see the module docstring)."""
    _check_choice("split", split, SPLITS)
    if split == "holdout":
        return list(HOLDOUT_COMBOS)
    every = [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]
    return [x for x in every if split == "all" or x not in HOLDOUT_COMBOS]


def sample_specs(
    n: int, seed: int, split: str = "all", speeds: tuple[str, ...] = MOVING_SPEEDS
) -> list[ClipSpec]:
    """n clip specs of `split` ("all", "train" or "holdout"), balanced over its triples; pure in (n, seed)."""
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative integer (the number of clips), got {n!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    _check_speeds(speeds)
    speeds = tuple(s for s in MOVING_SPEEDS if s in speeds)  # the order given must not change the draws
    triples = combos(split)
    rng = random.Random(f"ltxv-synth/{split}/{seed}")
    order: list[tuple[str, str, str]] = []
    specs = []
    for _ in range(n):
        if not order:  # a new round: every triple once, in a fresh random order
            order = triples.copy()
            rng.shuffle(order)
        colour, shape, motion = order.pop()
        backgrounds = [b for b in BACKGROUNDS if (colour, b) not in EXCLUDED_PAIRS]
        background = rng.choice(backgrounds)
        speed = "none" if motion == "static" else rng.choice(speeds)
        object_size = round(rng.uniform(*OBJECT_SIZE_RANGE), 4)
        start = (round(rng.random(), 4), round(rng.random(), 4))
        specs.append(ClipSpec(colour, shape, motion, speed, background, object_size, start))
    return specs


def clip_record(spec: ClipSpec, size: int, frames: int, fps: float, media_path: str, split: str) -> dict:
    """The captions.jsonl line of one clip: media_path, caption, split and everything an evaluator needs."""
    p = place(spec, size, frames)
    r4 = lambda xs: [round(x, 4) for x in xs]  # noqa: E731 - keeps float noise out of the JSON
    return {
        "media_path": media_path,
        "caption": caption(spec),
        "split": split,
        "colour": spec.colour,
        "shape": spec.shape,
        "motion": spec.motion,
        "speed": spec.speed,
        "background": spec.background,
        "object_size": spec.object_size,
        "start": list(spec.start),
        "size_px": round(p.object_px, 4),
        "speed_px_per_frame": round(p.speed_px, 4),
        "start_xy": r4(p.start_xy),
        "end_xy": r4(p.centre(frames - 1)),
        "velocity_xy": r4(p.velocity_xy),
        "colour_rgb": list(COLOURS[spec.colour]),
        "background_rgb": list(BACKGROUNDS[spec.background]),
        "width": size,
        "height": size,
        "frames": frames,
        "fps": fps,
    }


def spec_from_record(record: dict) -> ClipSpec:
    """The ClipSpec behind a captions.jsonl record, e.g. to re-render the reference clip for evaluation."""
    fields = ("colour", "shape", "motion", "speed", "background", "object_size")
    return ClipSpec(*(record[f] for f in fields), start=tuple(record["start"]))


@dataclass(frozen=True)
class SynthConfig:
    """What `write_dataset` writes; the defaults of `ltxv data synth`."""

    clips: int = 64  # clips in captions.jsonl
    size: int = 128  # frame side in pixels (square), a multiple of 32
    frames: int = 25  # frames per clip, 8k+1 recommended
    seed: int = 0
    fps: float = 24.0
    holdout: bool = False  # hold HOLDOUT_COMBOS out of captions.jsonl and write them to holdout.jsonl
    holdout_clips: int = len(HOLDOUT_COMBOS)  # clips in holdout.jsonl
    speeds: tuple[str, ...] = MOVING_SPEEDS  # speeds moving clips are drawn from
    partial_captions: bool = False  # list each clip of captions.jsonl again with a partial caption

    def __post_init__(self) -> None:
        if not _is_int(self.clips) or self.clips < 1:
            raise ValueError(f"clips must be a positive integer (videos to write), got {self.clips!r}")
        _check_size_frames(self.size, self.frames)
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {self.seed!r}")
        if not isinstance(self.fps, numbers.Real) or not 0 < self.fps <= 1000:
            raise ValueError(f"fps must be a number in (0, 1000], got {self.fps!r}")
        if self.holdout and (not _is_int(self.holdout_clips) or self.holdout_clips < 1):
            raise ValueError(f"holdout_clips must be a positive integer, got {self.holdout_clips!r}")
        limit = max_frames(self.speeds)
        if self.frames > limit:
            slow = "" if self.speeds == ("slow",) else f", or --speeds slow (up to {max_frames(('slow',))})"
            raise ValueError(
                f"frames={self.frames} is too long: with speeds {', '.join(self.speeds)} the largest objects "
                f"leave the frame after {limit} frames; use at most {limit} frames{slow}"
            )


def _write_split(root: Path, folder: str, specs: list[ClipSpec], split: str, cfg: SynthConfig) -> list[dict]:
    records = []
    for i, spec in enumerate(specs):
        path = write_video(root / folder / f"{i:06d}.mp4", render_clip(spec, cfg.size, cfg.frames), cfg.fps)
        media_path = path.relative_to(root).as_posix()  # a 1-frame clip is written as .png
        records.append(clip_record(spec, cfg.size, cfg.frames, cfg.fps, media_path, split))
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, written atomically."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_dataset(out_dir: str | os.PathLike[str], cfg: SynthConfig) -> list[dict]:
    """Render and write the dataset described in the module docstring; returns every record written.
    The index files are written last, so each media_path they list exists."""
    root = Path(out_dir)
    split = "train" if cfg.holdout else "all"
    records = _write_split(root, "videos", sample_specs(cfg.clips, cfg.seed, split, cfg.speeds), split, cfg)
    if cfg.partial_captions:
        records += partial_caption_rows(records, cfg.seed)
    _write_jsonl(root / "captions.jsonl", records)
    if not cfg.holdout:
        return records
    specs = sample_specs(cfg.holdout_clips, cfg.seed, "holdout", cfg.speeds)
    held = _write_split(root, "holdout", specs, "holdout", cfg)
    _write_jsonl(root / "holdout.jsonl", held)
    return records + held


# command line (wired by cli.py as `ltxv data synth`) -----------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `ltxv data synth`; defaults come from SynthConfig."""
    d = SynthConfig()
    parser.add_argument("dir", help="output folder: videos/, captions.jsonl (and holdout/, holdout.jsonl)")
    parser.add_argument("--clips", type=int, default=d.clips, help="clips in captions.jsonl")
    parser.add_argument("--size", type=int, default=d.size, help="frame side in pixels, a multiple of 32")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per clip (8k+1 recommended)")
    parser.add_argument("--seed", type=int, default=d.seed, help="same seed -> identical dataset")
    parser.add_argument("--fps", type=float, default=d.fps, help="frame rate of the mp4 files")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help="keep the fixed held-out (colour, shape, motion) triples out of captions.jsonl; "
        "write them to holdout/ and holdout.jsonl",
    )
    parser.add_argument("--holdout-clips", type=int, default=d.holdout_clips, help="clips in holdout.jsonl")
    parser.add_argument(
        "--speeds", nargs="+", choices=MOVING_SPEEDS, default=list(d.speeds), help="speeds of moving clips"
    )
    parser.add_argument(
        "--partial-captions",
        action="store_true",
        help="list every clip of captions.jsonl a second time with its colour, its motion or both left out "
        "of the caption (compositional training; `ltxv preprocess` encodes each clip once)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the dataset in DIR (unlisted old files stay)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the config and captions, write nothing")


def run(args: argparse.Namespace) -> int:
    """`ltxv data synth`: validate, warn about non-8k+1 frame counts, write the dataset, print a summary."""
    cfg = SynthConfig(
        clips=args.clips,
        size=args.size,
        frames=args.frames,
        seed=args.seed,
        fps=args.fps,
        holdout=args.holdout,
        holdout_clips=args.holdout_clips,
        speeds=tuple(args.speeds),
        partial_captions=args.partial_captions,
    )
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file; give a folder to write the dataset into")
    if (cfg.frames - 1) % 8:
        lower = (cfg.frames - 1) // 8 * 8 + 1
        print(
            f"warning: {cfg.frames} frames is not 8k+1 (e.g. {lower} or {lower + 8}); "
            "the VAE will pad these clips",
            file=sys.stderr,
        )
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(cfg)))
        split = "train" if cfg.holdout else "all"
        specs = sample_specs(cfg.clips, cfg.seed, split, cfg.speeds)
        for spec in specs:
            print(caption(spec))
        if cfg.partial_captions:  # the rows write_dataset lists after them
            for spec, leave_out in zip(specs, draw_leave_outs(len(specs), cfg.seed), strict=True):
                print(caption(spec, leave_out))
        return 0
    if (root / "captions.jsonl").exists():
        if not args.overwrite:
            raise FileExistsError(f"{root / 'captions.jsonl'} exists; pass --overwrite to replace it")
        (root / "holdout.jsonl").unlink(missing_ok=True)  # stale if this run has no holdout
    records = write_dataset(root, cfg)
    held = sum(r["split"] == "holdout" for r in records)
    partial = sum("leaves_out" in r for r in records)
    extra = f" and {held} held-out clips (holdout.jsonl)" if held else ""
    rows = f" with {partial} more partial-caption rows" if partial else ""
    print(f"wrote {len(records) - held - partial} clips (captions.jsonl{rows}){extra} to {root}")
    return 0
