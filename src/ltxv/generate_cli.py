"""`ltxv generate`: its flags, their checks, and one run (flags -> SampleConfig -> Pipeline -> file).

Reads top-down: the flags (sampling, conditioning, runtime), the parsing of the flags SampleConfig does not
hold, then `run` and the steps it is made of.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the imports that pull torch stay inside the functions: `ltxv --help` stays fast
    from torch import Tensor

    from .config import ChainConfig, SampleConfig, SampleConfigError
    from .pipeline import Pipeline
    from .speed import SpeedConfig
    from .upsampler import LatentUpsampler


# -- flags ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="what the video shows")
    add_model_flags(p)
    p.add_argument("-o", "--out", default="out.mp4", help="output .mp4 (a single frame is written as .png)")
    p.add_argument(
        "--num-videos",
        type=int,
        default=1,
        help="videos to make, the model loaded once: seeds SEED, SEED+1, ... (each the video that --seed "
        "alone gives), written to OUT with _0, _1, ... (_00, ... from 11 videos) before the extension",
    )
    _add_sampling_flags(p)
    _add_conditioning_flags(p)
    _add_chain_flags(p)
    add_runtime_flags(p)
    p.set_defaults(handler=run)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --text-encoder, --lora: what `load_pipeline` loads (`ltxv generate`, `ltxv serve`)."""
    p.add_argument(
        "--model",
        default=argparse.SUPPRESS,
        help="checkpoint: official .safetensors, diffusers folder, ltxv file or model folder "
        "(default: the bundled demo model)",
    )
    p.add_argument(
        "--text-encoder", help="T5 folder (text_encoder/ + tokenizer/, or both in one folder) or hub id"
    )
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="LoRA file merged into the transformer (peft, diffusers or ComfyUI keys); repeatable",
    )


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    from .demo import add_generation_flag

    tuned = functools.partial(add_generation_flag, p)  # defaults: the model's generation.json
    tuned("--negative-prompt", "what to steer away from (CFG)")
    tuned("--width", "pixels; padded up to a multiple of 32, cropped back", type=int)
    tuned("--height", "pixels; padded up to a multiple of 32, cropped back", type=int)
    tuned("--frames", "frames; padded up to 8k+1, cropped back", type=int)
    tuned("--fps", "frame rate (also enters the RoPE positions)", type=float)
    tuned("--steps", "denoising steps", type=int)
    p.add_argument("--timesteps", help="explicit schedule, comma-separated descending values in (0, 1]")
    tuned("--guidance", "classifier-free guidance scale, 1 = off", type=float)
    tuned(
        "--guidance-until",
        "guidance (CFG, STG) only at steps with t >= this (1 = noise, 0 = data); below it one transformer "
        "forward per step instead of two; 0 = every step",
        type=float,
    )
    tuned("--stg", "spatiotemporal guidance scale, 0 = off", type=float)
    tuned("--stg-mode", "STG variant", choices=("attention_values", "attention_skip", "transformer_block"))
    p.add_argument(
        "--stg-blocks",
        help="comma-separated STG block indices (default: 19, or the last block of smaller models)",
    )
    tuned("--rescale", "STG rescale towards the conditional std", type=float)
    tuned("--cfg-star", "CFG-zero* rescaling of the unconditional velocity", action="store_true")
    tuned(
        "--keyframe-guidance",
        "CFG's unconditional branch without the keyframes (conditions at frame > 0), so guidance pulls "
        "towards them",
        action=argparse.BooleanOptionalAction,
    )
    p.add_argument("--seed", type=int, help="random seed (printed when not given)")
    tuned("--image-cond-noise", "I2V conditioning noise", type=float)
    tuned("--decode-timestep", "noise level for the decoder", type=float)
    tuned("--decode-noise", "noise mixed in before decode", type=float)
    tuned("--tone-map", "latent tone-mapping compression in [0, 1]", type=float)
    p.add_argument("--stochastic", action="store_true", help="stochastic sampling (re-noise every step)")
    tuned("--max-tokens", "T5 tokens (0 = the checkpoint era's: 128 or 256)", type=int)


def _add_conditioning_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image (or video) that becomes the first frame (image-to-video)")
    p.add_argument(
        "--image-strength", type=float, help="conditioning strength of --image, in (0, 1] (default: 1)"
    )
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="PATH@FRAME[:STRENGTH]",
        help="image or 8k+1-frame clip placed at FRAME (keyframes, extension); FRAME < 0 counts from the end "
        "(-1: the last frame); repeatable",
    )
    add_cond_crf_flag(p)
    p.add_argument("--video", help="video-to-video: start from this video's latents instead of pure noise")
    p.add_argument(
        "--skip-steps", type=int, help="video-to-video: skip this many initial steps (default: half)"
    )
    p.add_argument("--upsampler", help="latent upsampler file: enables the multi-scale pipeline (0.9.7+)")
    p.add_argument(
        "--downscale", type=float, help="multi-scale: first-pass size factor in (0, 1] (default: 2/3)"
    )
    p.add_argument("--second-timesteps", help="multi-scale: explicit second-pass schedule (e.g. distilled)")
    p.add_argument(
        "--second-skip",
        type=int,
        help="multi-scale: skip this many initial second-pass steps "
        "(default: 17/30 of --steps, as the official dev configs)",
    )


def _add_chain_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--then",
        action="append",
        default=[],
        metavar="PROMPT",
        help="a long video: one more segment of --frames frames, continuing the one before, that shows "
        "PROMPT; repeatable",
    )
    p.add_argument(
        "--segments",
        type=int,
        help="segments in the video, the last prompt repeating (default: 1 + the number of --then)",
    )
    p.add_argument(
        "--overlap",
        type=int,
        help="frames each segment continues from the one before: 1 or 8k+1 (default: 1)",
    )
    p.add_argument(
        "--overlap-strength", type=float, help="conditioning strength of those frames, in (0, 1] (default: 1)"
    )
    p.add_argument(
        "--adain",
        type=float,
        help="pull each segment's latent statistics towards the first's, in [0, 1] (default: 1; 0 = off)",
    )


COND_CRF = 29  # the official conditioning media's H.264 round trip


def add_cond_crf_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cond-crf", type=int, default=COND_CRF, help="conditioning media get the official blur "
                   "and H.264 round trip at this crf, 1..51 (0 = use them unchanged)")  # fmt: skip


def check_cond_crf(crf: int, name: str = "--cond-crf") -> None:
    if not 0 <= crf <= 51:
        raise ValueError(f"{name} must be in 0..51 (0 = no H.264 round trip), got {crf}")


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    from .speed import add_speed_arguments

    p.add_argument(
        "--offload", action="store_true", help="keep models on the CPU between uses (low GPU memory)"
    )
    p.add_argument("--t5-cpu", action="store_true", help="run the text encoder on the CPU")
    add_speed_arguments(p)  # --attention, --compile, --fp8, --no-text-cache, --block-cache
    p.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto", help="tiled VAE decode")
    p.add_argument("--device", help="cuda, cpu, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")


# -- the flags SampleConfig does not hold --------------------------------------------------------------------


def _parse_condition(spec: str) -> tuple[str, int, float]:
    path, at, rest = spec.rpartition("@")
    frame, _, strength = rest.partition(":")
    try:
        if not at or not path:
            raise ValueError
        return path, int(frame), float(strength) if strength else 1.0
    except ValueError:
        raise ValueError(f"--condition {spec!r}: use PATH@FRAME[:STRENGTH], e.g. end.png@120:1.0") from None


def parse_lora(spec: str) -> tuple[str, float]:
    path, sep, scale = spec.rpartition(":")
    try:
        parsed = (path, float(scale)) if sep and path else (spec, 1.0)
    except ValueError:
        if os.path.exists(path) and not os.path.exists(spec):  # "file:0,5": the scale, not the path, is wrong
            raise ValueError(
                f"--lora {spec!r}: the scale {scale!r} is not a number; use PATH[:SCALE]"
            ) from None
        return spec, 1.0  # a path that contains ':' and no scale
    if not math.isfinite(parsed[1]):
        raise ValueError(f"--lora {spec!r}: the scale {scale!r} is not a finite number; use PATH[:SCALE]")
    return parsed


def check_lora(spec: str) -> None:
    """ValueError naming --lora unless SPEC's scale parses and its file exists."""
    path, _ = parse_lora(spec)
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "no such file"
        raise ValueError(f"--lora {spec!r}: {what}; pass a LoRA .safetensors file (PATH[:SCALE])")


def _floats(text: str | None, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected comma-separated numbers") from None


def _ints(text: str | None, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected comma-separated integers") from None


# (flag, attribute, partner flag, partner attribute): flags that do nothing without their partner
_PARTNER_FLAGS = (
    ("--image-strength", "image_strength", "--image", "image"),
    ("--skip-steps", "skip_steps", "--video", "video"),
    ("--downscale", "downscale", "--upsampler", "upsampler"),
    ("--second-timesteps", "second_timesteps", "--upsampler", "upsampler"),
    ("--second-skip", "second_skip", "--upsampler", "upsampler"),
)


def _check_flags(args: argparse.Namespace, segments: int) -> None:
    """The checks of flags that SampleConfig does not hold; ValueError naming the flag."""
    for flag, name, partner, partner_name in _PARTNER_FLAGS:
        if getattr(args, name) is not None and getattr(args, partner_name) is None:
            raise ValueError(f"{flag} only applies with {partner}: add {partner} or drop {flag}")
    if segments > 1:
        if args.video is not None:
            raise ValueError("--video does not combine with a chain of segments (--then, --segments)")
    else:
        for flag in ("--overlap", "--overlap-strength", "--adain"):
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise ValueError(f"{flag} only applies to a chain of segments: add --then or --segments 2+")
    if args.video is not None and args.upsampler is not None:
        raise ValueError("--video (video-to-video) does not combine with --upsampler: drop one")
    check_cond_crf(args.cond_crf)
    if args.downscale is not None and not (math.isfinite(args.downscale) and 0 < args.downscale <= 1):
        raise ValueError(f"--downscale must be a finite number in (0, 1], got {args.downscale}")
    for flag, value in (("--skip-steps", args.skip_steps), ("--second-skip", args.second_skip)):
        if value is not None and value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
    for spec in args.lora:  # the scales and files now, before minutes of loading
        check_lora(spec)


def _segment_prompts(args: argparse.Namespace) -> list[str]:
    """The prompt of every segment: the prompt, each --then, the last repeated up to --segments."""
    prompts = [args.prompt, *args.then]
    if args.segments is None:
        return prompts
    if args.segments < 1:
        raise ValueError(f"--segments must be >= 1, got {args.segments}")
    if args.segments < len(prompts):
        raise ValueError(
            f"--segments {args.segments} is fewer than the {len(prompts)} prompts given (the prompt and each "
            "--then): raise it or drop it"
        )
    return prompts + [prompts[-1]] * (args.segments - len(prompts))


def _chain_config(args: argparse.Namespace) -> ChainConfig:
    """--overlap, --overlap-strength, --adain (ChainConfig's defaults where not given); ValueError naming
    the flag."""
    from .config import ChainConfig, SampleConfigError

    given = {name: getattr(args, name) for name in ("overlap", "overlap_strength", "adain")}
    try:
        return ChainConfig(**{name: value for name, value in given.items() if value is not None})
    except SampleConfigError as err:
        raise _flag_error(err) from None


def _chain_frames(chain: ChainConfig, cfg: SampleConfig, segments: int) -> int:
    """The frames the output will have (one segment: --frames); ValueError naming the flag."""
    from .config import SampleConfigError

    try:
        return chain.total_frames(cfg.num_frames, segments)
    except SampleConfigError as err:
        raise _flag_error(err) from None


def _flag_error(err: SampleConfigError) -> ValueError:
    """A config field's error, reworded with the flag that sets the field."""
    from .demo import FIELD_FLAGS

    flag = FIELD_FLAGS.get(err.field, "--" + err.field.replace("_", "-"))
    return ValueError(f"{flag} {err.text}")


# -- the run -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from .config import MAX_SEED
    from .devices import resolve_device
    from .media import output_path, padded_size
    from .parallel import is_main
    from .speed import speed_from_args
    from .text import check_prompt

    prompts, chain = _segment_prompts(args), _chain_config(args)  # one prompt per segment
    for i, prompt in enumerate(prompts[: len(args.then) + 1]):  # --segments repeats the last
        check_prompt(prompt, "the prompt" if i == 0 else f"--then {prompt!r}")
    _check_flags(args, len(prompts))
    speed = speed_from_args(args)  # the speed-ups, and the torchrun job they split across
    device = resolve_device(args.device)  # a bad or unavailable --device fails before any loading
    cfg = _sample_config(args)  # validated here, before any model is loaded
    check_prompt(cfg.negative_prompt, "--negative-prompt")
    if not all(p.strip() for p in prompts):  # the trained unconditional prompt (caption dropout): not silent
        _note(f"note: {'a' if len(prompts) > 1 else 'the'} prompt is empty: generating unconditionally")
    size = padded_size(cfg.height, cfg.width, cfg.num_frames)
    total_frames = _chain_frames(chain, cfg, len(prompts))
    if not 1 <= args.num_videos <= MAX_VIDEOS:
        raise ValueError(f"--num-videos must be in 1..{MAX_VIDEOS}, got {args.num_videos}")
    if args.seed is not None and args.seed + args.num_videos - 1 > MAX_SEED:  # drawn seeds are < 2**62
        raise ValueError(
            f"--seed {args.seed} + --num-videos {args.num_videos} passes the largest seed, {MAX_SEED}"
        )
    # a bad output name fails now, not after the work; the numbered names share its folder and suffix
    outs = _numbered(output_path(args.out, total_frames), args.num_videos)
    conditions = _conditions(args, cfg, size, chained=len(prompts) > 1)
    source = _source_video(args, cfg, size)
    if source is not None:
        cfg = dataclasses.replace(cfg, skip_initial_steps=_video_skip(args.skip_steps, cfg))
    if len(prompts) > 1:
        _note(
            f"note: {len(prompts)} segments of {cfg.num_frames} frames, each continuing the last "
            f"{chain.overlap} of the one before: {total_frames} frames, "
            f"{total_frames / cfg.frame_rate:.1f} s"
        )
    pipe = load_pipeline(args, device, speed)
    loaded = time.perf_counter()
    for note in prompt_notes(pipe, prompts, cfg):
        _note(note)
    stochastic = True if args.stochastic else None  # the flag turns it on; else the model's default
    cfg = with_model_defaults(pipe, cfg, stg_blocks_given=bool(args.stg_blocks), stochastic=stochastic)
    if size != (cfg.height, cfg.width, cfg.num_frames):
        height, width, frames = size
        _note(
            f"note: generating {width}x{height}x{frames} (sides /32, frames 8k+1) and cropping to "
            f"{cfg.width}x{cfg.height}x{cfg.num_frames}"
        )
    multiscale = _multiscale(args, pipe, cfg)
    init = pipe.encode_video(source) if source is not None else None  # video-to-video: once for every video
    first = pipe.pick_seed(cfg)  # --seed, else one drawn (by rank 0 for every process of a torchrun job)
    seconds = total_frames / cfg.frame_rate
    image = total_frames == 1  # no frame rate, no realtime factor
    if image:
        size_text = f"1 frame, {cfg.width}x{cfg.height}"
    else:
        size_text = f"{total_frames} frames, {cfg.width}x{cfg.height} @ {cfg.frame_rate:g} fps"
    steps = len(prompts) * (
        len(pipe.schedule(cfg)) + (len(pipe.schedule(multiscale[0])) if multiscale else 0)
    )
    for i, out in enumerate(outs):
        begun = time.perf_counter()
        video_cfg = dataclasses.replace(cfg, seed=first + i)
        render_video(pipe, video_cfg, prompts, chain, conditions, init, multiscale, out, _progress(steps))
        if not is_main():
            continue
        made = f"wrote {out} ({size_text}, seed {first + i})"
        if i > 0:  # the model was loaded before the first
            took = time.perf_counter() - begun
            factor = "" if image else f"; realtime factor {seconds / took:.2f}"
            print(f"{made} in {took:.1f} s after the one before{factor}")
            continue
        wall = program_seconds()  # start-up and imports count too
        generating = time.perf_counter() - loaded  # the writing included
        factor = ""
        if not image:
            factor = (
                f"; realtime factor {seconds / wall:.2f} end to end, {seconds / generating:.2f} generating"
            )
        print(f"{made} in {wall:.1f} s from process start, {generating:.1f} s of it generating{factor}")
    return 0


def render_video(
    pipe: Pipeline,
    cfg: SampleConfig,
    prompts: list[str],
    chain: ChainConfig,
    conditions: list[Any],
    init: Tensor | None,
    multiscale: tuple[SampleConfig, LatentUpsampler, float] | None,
    out: Path,
    progress: Callable[[int, float, object], None] | None = None,
) -> Path:
    """One video to `out` (`ltxv generate`, `ltxv serve`): one pass (text/image-to-video, video-to-video) or
    two (multi-scale), or a chain of such segments, each written to the file when it is made (memory: one
    segment); `progress` is the pipeline's step callback. Under torchrun every process makes the same video;
    rank 0 writes it. Returns the path written (a .png for one frame; `out` on the other ranks)."""
    from .media import video_writer, write_video
    from .parallel import is_main

    if len(prompts) > 1:
        with contextlib.ExitStack() as stack:
            write = stack.enter_context(video_writer(out, cfg.frame_rate)) if is_main() else _discard
            pipe.generate_chain(
                prompts, cfg, chain, conditions=conditions, callback=progress, on_frames=write,
                multiscale=multiscale,
            )  # fmt: skip
        return out  # a chain has frames enough for a video
    if multiscale is not None:
        result = pipe.generate_multiscale(
            prompts[0], cfg, *multiscale, conditions=conditions, callback=progress
        )
    else:  # init: --video's latents (video-to-video)
        result = pipe.generate(prompts[0], cfg, conditions=conditions, init_latents=init, callback=progress)
    return write_video(out, result.video[0], cfg.frame_rate) if is_main() else out


def _discard(frames: object) -> None:
    """A chain's frames on the processes that do not write them."""


MAX_VIDEOS = 10_000  # --num-videos: a typo such as 100000000 fails at once


def _numbered(path: Path, count: int) -> list[Path]:
    """`count` output paths: `path` itself for one, else path_0, path_1, ... (zero-padded to one width)."""
    if count == 1:
        return [path]
    width = len(str(count - 1))
    return [path.with_name(f"{path.stem}_{i:0{width}d}{path.suffix}") for i in range(count)]


def _sample_config(args: argparse.Namespace) -> SampleConfig:
    """Flag > the model folder's generation.json > SampleConfig's default; sets args.model to the bundled
    model when none is given."""
    from .demo import given_fields, sample_config

    resolve_model(args)
    given: dict[str, Any] = given_fields(args)
    if args.timesteps:
        given["timesteps"] = _floats(args.timesteps, "--timesteps")
    if args.seed is not None:
        given["seed"] = args.seed
    blocks = _ints(args.stg_blocks, "--stg-blocks")  # () = the model's default
    if blocks:
        given["stg_blocks"] = blocks
    if args.skip_steps is not None:
        given["skip_initial_steps"] = args.skip_steps
    if args.vae_tiling != "auto":
        given["vae_tiling"] = args.vae_tiling == "on"
    return sample_config(args.model, given)


def _conditions(
    args: argparse.Namespace, cfg: SampleConfig, size: tuple[int, int, int], chained: bool = False
) -> list[Any]:
    """--image and --condition media, fitted to the request (`fit_conditions`). In a chain they condition
    the first segment."""
    strength = 1.0 if args.image_strength is None else args.image_strength
    items = [(args.image, 0, strength, f"--image {args.image}")] if args.image else []
    for spec in args.condition:
        path, frame, strength = _parse_condition(spec)
        items.append((path, frame, strength, f"--condition {spec}"))
    conditions, notes = fit_conditions(items, cfg, size, args.cond_crf, chained)
    for note in notes:
        _note(note)
    return conditions


def fit_conditions(
    items: list[tuple[str, int, float, str]],
    cfg: SampleConfig,
    size: tuple[int, int, int],
    cond_crf: int,
    chained: bool = False,
) -> tuple[list[Any], list[str]]:
    """(conditions, notes) from (media file, frame, strength, its name in messages) items: each read,
    resized, centre-cropped and padded to `size` = (H, W, F) padded; a frame < 0 counts from the end of the
    requested `cfg.num_frames`; `cond_crf` > 0: the official blur and H.264 round trip. ValueError naming the
    item."""
    from .conditioning import Condition, trim_frames
    from .media import pad_video, preprocess_condition, read_media, resize_center_crop

    height, width, frames = size
    conditions, notes = [], []
    for path, frame, strength, name in items:
        if frame < 0:  # from the end of the requested video (of the first segment in a chain)
            if frame + cfg.num_frames < 0:
                raise ValueError(
                    f"{name}: the video has only {cfg.num_frames} frames; use -1 .. "
                    f"-{cfg.num_frames} (from the end) or 0 .. {cfg.num_frames - 1}"
                )
            frame += cfg.num_frames
        if frame >= cfg.num_frames:  # past the end, or in the padding to 8k+1 frames that is cropped away
            where = "in a chain, conditions apply to the first segment" if chained else "the video has"
            raise ValueError(
                f"{name}: {where} frames 0..{cfg.num_frames - 1} (-1 is the last); place it there, or ask "
                "for more frames"
            )
        media, _ = read_media(path, max_frames=frames)
        n = media.shape[2]
        used = trim_frames(n, frame, frames) if frame < frames else n  # past the end: check_condition says
        if used < n:  # as the official inference: the longest 8k+1 prefix that fits
            notes.append(f"note: {name}: using its first {used} of {n} frames (8k+1 from frame {frame})")
        fitted = resize_center_crop(media, cfg.height, cfg.width)
        if cond_crf > 0:  # official: blur + H.264 round trip, so conditions look like decoded video
            fitted = preprocess_condition(fitted, cond_crf)
        conditions.append(Condition(pad_video(fitted, height, width), frame, strength))  # centred
    return conditions, notes


def _source_video(args: argparse.Namespace, cfg: SampleConfig, size: tuple[int, int, int]) -> Tensor | None:
    """--video (video-to-video), fitted to the request like the conditions; None without it."""
    from .media import pad_video, read_media, resize_center_crop

    if not args.video:
        return None
    height, width, frames = size
    source, _ = read_media(args.video, max_frames=frames)
    if source.shape[2] < frames:
        raise ValueError(f"--video {args.video}: {source.shape[2]} frames, the request needs {frames}")
    return pad_video(resize_center_crop(source, cfg.height, cfg.width), height, width)[:, :, :frames]


def resolve_model(args: argparse.Namespace) -> str:
    """args.model, set to the bundled model's folder when not given (a ValueError when there is none)."""
    from .demo import demo_model

    if getattr(args, "model", None) is None:
        args.model = str(demo_model())
    return args.model


def load_pipeline(args: argparse.Namespace, device: Any, speed: SpeedConfig) -> Pipeline:
    """--model (`resolve_model`) with --text-encoder, --dtype, --offload, --t5-cpu, each --lora merged."""
    import torch

    from .pipeline import Pipeline

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype or "")
    pipe = Pipeline.from_pretrained(
        args.model,
        args.text_encoder,
        device,
        dtype,
        offload=args.offload,
        text_encoder_on_cpu=args.t5_cpu,
        speed=speed,
    )
    for spec in args.lora:
        path, scale = parse_lora(spec)
        merged = pipe.load_lora(path, scale)
        _note(f"merged {merged} LoRA layers from {path} (scale {scale:g})")
    return pipe


def _multiscale(
    args: argparse.Namespace, pipe: Pipeline, cfg: SampleConfig
) -> tuple[SampleConfig, LatentUpsampler, float] | None:
    """With --upsampler: (the second pass's settings, the upsampler, the first pass's downscale)."""
    if not args.upsampler:
        return None
    from .upsampler import load_upsampler

    skip = round(cfg.steps * 17 / 30) if args.second_skip is None else args.second_skip
    second_ts = _floats(args.second_timesteps, "--second-timesteps")
    second = dataclasses.replace(cfg, timesteps=second_ts, skip_initial_steps=0 if second_ts else skip)
    upsampler = load_upsampler(args.upsampler, "cpu" if args.offload else pipe.device, pipe.dtype)
    up, channels = upsampler.config, pipe.dit.cfg.in_channels
    if up.temporal_upsample or not up.spatial_upsample:
        raise ValueError(
            f"--upsampler {args.upsampler}: not a spatial-only x2 upsampler (temporal: "
            f"{up.temporal_upsample}); the second pass needs ltxv-spatial-upscaler-*.safetensors"
        )
    if up.in_channels != channels:
        raise ValueError(
            f"--upsampler {args.upsampler}: made for {up.in_channels}-channel latents; "
            f"this model's have {channels}"
        )
    return second, upsampler, 2 / 3 if args.downscale is None else args.downscale


def _video_skip(given: int | None, cfg: SampleConfig) -> int:
    """Video-to-video's --skip-steps: given, else half the steps (of --timesteps when given); the start must
    leave a step and lie below t = 1, or a ValueError says what to use."""
    n = len(cfg.timesteps) or cfg.steps
    skip = n // 2 if given is None else given
    lowest = 0 if cfg.timesteps and cfg.timesteps[0] < 1 else 1  # skipping 0 steps starts at t = 1 otherwise
    if n <= lowest:
        raise ValueError(f"--video needs 2 or more steps (--steps {n}) to start part-way down")
    if not lowest <= skip < n:
        left = "no step" if skip >= n else "the video replaced by pure noise (t = 1)"
        raise ValueError(f"--video: --skip-steps {skip} of {n} steps leaves {left}; use {lowest}..{n - 1}")
    return skip


def with_model_defaults(
    pipe: Pipeline, cfg: SampleConfig, *, stg_blocks_given: bool, stochastic: bool | None
) -> SampleConfig:
    """`cfg` with the loaded model's STG blocks unless some were given, and its stochastic sampling unless
    `stochastic` says (None: the model's)."""
    defaults = pipe.default_config()
    return dataclasses.replace(
        cfg,
        stg_blocks=cfg.stg_blocks if stg_blocks_given else defaults.stg_blocks,
        stochastic=defaults.stochastic if stochastic is None else stochastic,
    )


NOTE_WORDS = 12  # unknown words a note lists (a pasted essay would make a note, or a header, of 64 KiB)


def prompt_notes(pipe: Pipeline, prompts: list[str], cfg: SampleConfig) -> list[str]:
    """Notes on what the text encoder will not read as written: unknown words (the bundled model knows only
    its captions'), and prompts longer than its tokens (cut)."""
    notes = []
    tokenizer = getattr(pipe.text_encoder, "tokenizer", None)
    words = " ".join(dict.fromkeys(prompts))
    unknown = tokenizer.unknown_words(words) if hasattr(tokenizer, "unknown_words") else []
    unknown = list(dict.fromkeys(unknown))  # each word once, however many prompts have it
    if unknown:
        listed = ", ".join(map(repr, unknown[:NOTE_WORDS]))
        more = f" and {len(unknown) - NOTE_WORDS} more" if len(unknown) > NOTE_WORDS else ""
        notes.append(f"note: the text encoder does not know {listed}{more} (read as <unk>)")
    limit = pipe.text_tokens(cfg)
    for prompt in dict.fromkeys(prompts):
        n = len(tokenizer.ids(prompt)) if hasattr(tokenizer, "ids") else 0
        if n > limit:
            notes.append(
                f"note: a prompt of {n} tokens is read as its first {limit} (--max-tokens); the rest is cut"
            )
    return notes


def _note(message: str) -> None:
    """A note on stderr; under torchrun from rank 0 only."""
    from .parallel import is_main

    if is_main():
        print(message, file=sys.stderr)


def program_seconds() -> float:
    """Seconds since this program started: since its process started (Linux /proc: the interpreter's own
    start-up counts), unless that was well before the package began loading: a shell that `exec`s the last
    command of `pip install ... && ltxv generate ...` hands its own, older process to ltxv, and the time of
    everything before it would count (50 s of pip, measured); then since the package began loading."""
    from ._clock import STARTED

    since_import = time.perf_counter() - STARTED
    process = _process_seconds()
    return since_import if process is None or process > since_import + STARTUP_SLACK else process


STARTUP_SLACK = 2.0  # seconds: more than an interpreter takes to reach `import ltxv`


def _process_seconds() -> float | None:
    """Wall seconds since this process started (Linux /proc, 10 ms ticks); None where /proc is missing."""
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: starttime, after "pid (comm)"
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _progress(total: int) -> Callable[[int, float, object], None]:
    """Progress with steps/s and ETA: one updating line on a terminal, plain lines otherwise."""
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    calls = [0]  # counts steps across passes (the multi-scale pipeline restarts i at 0)

    from .parallel import is_main

    def report(i: int, t: float, _: object) -> None:
        if not is_main():
            return
        calls[0] += 1
        done = calls[0]
        elapsed = time.perf_counter() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        line = f"step {done}/{total}  t={t:.3f}  {rate:.2f} steps/s  ETA {eta:.0f} s"
        print(
            ("\r" + line) if tty else line,
            end="" if tty and done < total else "\n",
            file=sys.stderr,
            flush=True,
        )

    return report
