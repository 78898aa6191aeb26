"""The `ltxv` command: one entry point with subcommands; the only module that reads argv."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ltxv", description="Realtime video latent diffusion (LTX-Video family).", formatter_class=fmt
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_generate(
        sub.add_parser(
            "generate", help="generate a video from a prompt (and images/clips)", formatter_class=fmt
        )
    )

    from . import bench
    from .data import synth

    p = sub.add_parser(
        "bench", help="time the pipeline at a named shape (random weights by default)", formatter_class=fmt
    )
    bench.add_arguments(p)
    p.set_defaults(handler=bench.run)

    data = sub.add_parser("data", help="datasets: the synthetic shapes world", formatter_class=fmt)
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser(
        "synth", help="render a shapes-world dataset (mp4 + captions.jsonl)", formatter_class=fmt
    )
    synth.add_arguments(p)
    p.set_defaults(handler=synth.run)
    p = data_sub.add_parser(
        "text-encoder",
        help="build a small random T5-style encoder + tokenizer trained on a dataset's captions (offline)",
        formatter_class=fmt,
    )
    p.add_argument("out", help="folder to write (config.json, model.safetensors, tokenizer files)")
    p.add_argument("--captions", required=True, nargs="+", help="caption files or dataset folders (corpus)")
    p.add_argument("--d-model", type=int, default=64, help="hidden size (the DiT's caption_channels)")
    p.add_argument("--layers", type=int, default=2, help="encoder layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--vocab-size", type=int, default=300, help="sentencepiece pieces (at most)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument(
        "--tokenizer",
        choices=("word", "unigram", "bpe"),
        default="word",
        help="sentencepiece model type (word: one piece per word of the corpus, for closed caption grammars)",
    )
    p.set_defaults(handler=cmd_text_encoder)

    from . import evaluate
    from .data import cache
    from .train import command as train_command

    p = sub.add_parser("eval", help="score a model on the held-out shapes world", formatter_class=fmt)
    evaluate.add_arguments(p)
    p.set_defaults(handler=evaluate.run)

    p = sub.add_parser(
        "preprocess", help="precompute VAE latents + T5 embeddings of a dataset", formatter_class=fmt
    )
    cache.add_preprocess_arguments(p)
    p.set_defaults(handler=cache.run_preprocess)
    train_command.add_subcommands(sub, fmt)

    p = sub.add_parser("info", help="show what a checkpoint contains", formatter_class=fmt)
    p.add_argument(
        "path", help="official .safetensors file, diffusers folder (root, vae/ or transformer/), or ltxv file"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser(
        "convert", help="convert a checkpoint between formats (tensors unchanged)", formatter_class=fmt
    )
    p.add_argument("src", help="checkpoint to read (any supported format)")
    p.add_argument("dst", help="file (ltxv, native) or new folder (diffusers) to write")
    p.add_argument("--to", required=True, choices=("ltxv", "native", "diffusers"), help="target format")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="cast floating tensors (default: keep)")
    p.set_defaults(handler=cmd_convert)
    return parser


def _add_generate(p: argparse.ArgumentParser) -> None:
    from .demo import add_generation_flag

    p.add_argument("prompt", help="what the video shows")
    p.add_argument(
        "--model",
        default=argparse.SUPPRESS,
        help="checkpoint: official .safetensors, diffusers folder, ltxv file or model folder "
        "(default: the bundled demo model)",
    )
    p.add_argument(
        "--text-encoder", help="T5 folder (text_encoder/ + tokenizer/, or both in one folder) or hub id"
    )
    p.add_argument("--out", default="out.mp4", help="output .mp4 (a single frame is written as .png)")

    tuned = functools.partial(add_generation_flag, p)  # defaults: the model's generation.json
    tuned("--negative-prompt", "what to steer away from (CFG)")
    tuned("--width", "pixels; padded up to a multiple of 32, cropped back", type=int)
    tuned("--height", "pixels; padded up to a multiple of 32, cropped back", type=int)
    tuned("--frames", "frames; padded up to 8k+1, cropped back", type=int)
    tuned("--fps", "frame rate (also enters the RoPE positions)", type=float)
    tuned("--steps", "denoising steps", type=int)
    p.add_argument("--timesteps", help="explicit schedule, comma-separated descending values in (0, 1]")
    tuned("--guidance", "classifier-free guidance scale, 1 = off", type=float)
    tuned("--stg", "spatiotemporal guidance scale, 0 = off", type=float)
    tuned("--stg-mode", "STG variant", choices=("attention_values", "attention_skip", "transformer_block"))
    p.add_argument(
        "--stg-blocks",
        help="comma-separated STG block indices (default: 19, or the last block of smaller models)",
    )
    tuned("--rescale", "STG rescale towards the conditional std", type=float)
    tuned("--cfg-star", "CFG-zero* rescaling of the unconditional velocity", action="store_true")
    p.add_argument("--seed", type=int, help="random seed (printed when not given)")
    p.add_argument("--image", help="image (or video) that becomes the first frame (image-to-video)")
    p.add_argument(
        "--image-strength", type=float, help="conditioning strength of --image, in (0, 1] (default: 1)"
    )
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="PATH@FRAME[:STRENGTH]",
        help="image or 8k+1-frame clip placed at FRAME (keyframes, extension); repeatable",
    )
    p.add_argument("--cond-crf", type=int, default=29, help="conditioning media get the official blur and "
                   "H.264 round trip at this crf, 1..51 (0 = use them unchanged)")  # fmt: skip
    p.add_argument("--video", help="video-to-video: start from this video's latents instead of pure noise")
    p.add_argument(
        "--skip-steps", type=int, help="video-to-video: skip this many initial steps (default: half)"
    )
    tuned("--image-cond-noise", "I2V conditioning noise", type=float)
    tuned("--decode-timestep", "noise level for the decoder", type=float)
    tuned("--decode-noise", "noise mixed in before decode", type=float)
    tuned("--tone-map", "latent tone-mapping compression in [0, 1]", type=float)
    p.add_argument("--stochastic", action="store_true", help="stochastic sampling (re-noise every step)")
    tuned("--max-tokens", "T5 tokens (0 = the checkpoint era's: 128 or 256)", type=int)
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="LoRA file merged into the transformer (peft, diffusers or ComfyUI keys); repeatable",
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
    p.add_argument(
        "--offload", action="store_true", help="keep models on the CPU between uses (low GPU memory)"
    )
    p.add_argument("--t5-cpu", action="store_true", help="run the text encoder on the CPU")
    from .speed import add_speed_arguments

    add_speed_arguments(p)  # --attention, --compile, --fp8, --no-text-cache, --block-cache
    p.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto", help="tiled VAE decode")
    p.add_argument("--device", help="cuda, cpu, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")
    p.set_defaults(handler=cmd_generate)


def _parse_condition(spec: str) -> tuple[str, int, float]:
    path, at, rest = spec.rpartition("@")
    frame, _, strength = rest.partition(":")
    try:
        if not at or not path:
            raise ValueError
        return path, int(frame), float(strength) if strength else 1.0
    except ValueError:
        raise ValueError(f"--condition {spec!r}: use PATH@FRAME[:STRENGTH], e.g. end.png@120:1.0") from None


def _parse_lora(spec: str) -> tuple[str, float]:
    path, sep, scale = spec.rpartition(":")
    try:
        return (path, float(scale)) if sep and path else (spec, 1.0)
    except ValueError:
        return spec, 1.0  # a path that contains ':' and no scale


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


def _check_generate_flags(args: argparse.Namespace) -> None:
    """The checks of flags that SampleConfig does not hold; ValueError naming the flag."""
    for flag, name, partner, partner_name in _PARTNER_FLAGS:
        if getattr(args, name) is not None and getattr(args, partner_name) is None:
            raise ValueError(f"{flag} only applies with {partner}: add {partner} or drop {flag}")
    if args.video is not None and args.upsampler is not None:
        raise ValueError("--video (video-to-video) does not combine with --upsampler: drop one")
    if not 0 <= args.cond_crf <= 51:
        raise ValueError(f"--cond-crf must be in 0..51 (0 = no H.264 round trip), got {args.cond_crf}")
    if args.downscale is not None and not (math.isfinite(args.downscale) and 0 < args.downscale <= 1):
        raise ValueError(f"--downscale must be a finite number in (0, 1], got {args.downscale}")
    for flag, value in (("--skip-steps", args.skip_steps), ("--second-skip", args.second_skip)):
        if value is not None and value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")


def cmd_generate(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import torch

    from .conditioning import Condition
    from .devices import resolve_device
    from .media import (
        output_path,
        pad_video,
        padded_size,
        preprocess_condition,
        read_media,
        resize_center_crop,
        write_video,
    )
    from .pipeline import Pipeline
    from .speed import speed_from_args

    started = time.perf_counter()
    _check_generate_flags(args)
    device = resolve_device(args.device)  # a bad or unavailable --device fails before any loading
    blocks = _ints(args.stg_blocks, "--stg-blocks")  # () = the model's default
    if getattr(args, "model", None) is None:
        from .demo import demo_model

        args.model = str(demo_model())
    from .demo import given_fields, sample_config

    given = given_fields(args)  # flag > the model folder's generation.json > default
    if args.timesteps:
        given["timesteps"] = _floats(args.timesteps, "--timesteps")
    if args.seed is not None:
        given["seed"] = args.seed
    if blocks:
        given["stg_blocks"] = blocks
    if args.skip_steps is not None:
        given["skip_initial_steps"] = args.skip_steps
    if args.vae_tiling != "auto":
        given["vae_tiling"] = args.vae_tiling == "on"
    cfg = sample_config(args.model, given)  # validated here, before any model is loaded
    if not args.prompt.strip():  # the trained unconditional prompt (caption dropout), so allowed, not silent
        print("note: the prompt is empty: generating unconditionally", file=sys.stderr)
    height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames)
    output_path(args.out, cfg.num_frames)  # a bad output name fails now, not after the generation
    strength = 1.0 if args.image_strength is None else args.image_strength
    items = [(args.image, 0, strength)] if args.image else []
    conditions = []
    for path, frame, strength in items + [_parse_condition(c) for c in args.condition]:
        media, _ = read_media(path, max_frames=frames)
        fitted = resize_center_crop(media, cfg.height, cfg.width)
        if args.cond_crf > 0:  # official: blur + H.264 round trip, so conditions look like decoded video
            fitted = preprocess_condition(fitted, args.cond_crf)
        fitted = pad_video(fitted, height, width)  # official geometry: centred
        conditions.append(Condition(fitted, frame, strength))
    source = None
    if args.video:
        source, _ = read_media(args.video, max_frames=frames)
        if source.shape[2] < frames:
            raise ValueError(f"--video {args.video}: {source.shape[2]} frames, the request needs {frames}")
        source = pad_video(resize_center_crop(source, cfg.height, cfg.width), height, width)[:, :, :frames]
        if args.skip_steps is None:
            cfg = dataclasses.replace(cfg, skip_initial_steps=cfg.steps // 2)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype or "")
    pipe = Pipeline.from_pretrained(
        args.model,
        args.text_encoder,
        device,
        dtype,
        offload=args.offload,
        text_encoder_on_cpu=args.t5_cpu,
        speed=speed_from_args(args),
    )
    for spec in args.lora:
        path, scale = _parse_lora(spec)
        print(
            f"merged {pipe.load_lora(path, scale)} LoRA layers from {path} (scale {scale:g})", file=sys.stderr
        )
    loaded = time.perf_counter()
    defaults = pipe.default_config()
    cfg = dataclasses.replace(
        cfg, stg_blocks=blocks or defaults.stg_blocks, stochastic=args.stochastic or defaults.stochastic
    )
    if (height, width, frames) != (cfg.height, cfg.width, cfg.num_frames):
        print(
            f"note: generating {width}x{height}x{frames} (sides /32, frames 8k+1) and cropping to "
            f"{cfg.width}x{cfg.height}x{cfg.num_frames}",
            file=sys.stderr,
        )
    if args.upsampler:
        from .upsampler import load_upsampler

        skip = round(cfg.steps * 17 / 30) if args.second_skip is None else args.second_skip
        second_ts = _floats(args.second_timesteps, "--second-timesteps")
        second = dataclasses.replace(cfg, timesteps=second_ts, skip_initial_steps=0 if second_ts else skip)
        steps = len(pipe.schedule(cfg, 1)) + len(pipe.schedule(second, 1))
        upsampler = load_upsampler(args.upsampler, "cpu" if args.offload else pipe.device, pipe.dtype)
        result = pipe.generate_multiscale(
            args.prompt,
            cfg,
            second,
            upsampler,
            2 / 3 if args.downscale is None else args.downscale,
            conditions=conditions,
            callback=_progress(steps),
        )
    else:
        progress = _progress(len(pipe.schedule(cfg, 1)))
        init = pipe.encode_video(source) if source is not None else None
        result = pipe.generate(args.prompt, cfg, conditions=conditions, init_latents=init, callback=progress)
    generating = time.perf_counter() - loaded
    out = write_video(args.out, result.video[0], cfg.frame_rate)
    wall = _process_seconds() or time.perf_counter() - started  # start-up and imports count too
    print(
        f"wrote {out} ({result.video.shape[2]} frames, {cfg.width}x{cfg.height} @ {cfg.frame_rate:g} fps, "
        f"seed {result.seed}) in {wall:.1f} s from process start, {generating:.1f} s of it generating; "
        f"realtime factor {result.seconds / wall:.2f} end to end, "
        f"{result.seconds / generating:.2f} generating"
    )
    return EXIT_OK


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
    import time

    start = time.perf_counter()
    tty = sys.stderr.isatty()
    calls = [0]  # counts steps across passes (the multi-scale pipeline restarts i at 0)

    def report(i: int, t: float, _: object) -> None:
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


def cmd_text_encoder(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.dataset import read_captions
    from .text import build_small_t5

    corpus = sorted({item.caption for source in args.captions for item in read_captions(source)})
    if args.d_model % args.heads:
        raise ValueError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    out = build_small_t5(
        Path(args.out),
        corpus,
        "flat",
        args.d_model,
        args.layers,
        args.heads,
        args.vocab_size,
        args.seed,
        args.tokenizer,
    )
    print(f"wrote a {args.d_model}-d, {args.layers}-layer T5-style encoder to {out} ({len(corpus)} captions)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from . import convert
    from .config import to_dict
    from .weights import open_checkpoint, summarize

    ckpt = open_checkpoint(args.path)
    summary = summarize(ckpt)
    if args.json:
        print(json.dumps({**summary, "spec": to_dict(ckpt.spec)}, indent=2))
        return EXIT_OK
    print(f"path:     {ckpt.path}")
    print(f"format:   {ckpt.format}")
    print(f"version:  {ckpt.version}")
    native = {"vae": convert.vae_config_to_native, "transformer": convert.dit_config_to_native}
    for name, comp in summary["components"].items():
        print(
            f"{name + ':':9} {comp['params']:,} parameters, {comp['tensors']} tensors, dtype {comp['dtypes']}"
        )
        config = native[name](ckpt.vae.config if name == "vae" else ckpt.dit.config)
        print(f"          config (official schema) {json.dumps(config, separators=(',', ':'))}")
    print(f"schedule: {json.dumps(to_dict(ckpt.spec.scheduler))}")
    for note in ckpt.notes:
        print(f"note:     {note}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .weights import convert_checkpoint

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype or "")
    ckpt = convert_checkpoint(args.src, args.dst, args.to, dtype)
    parts = [n for n, c in (("vae", ckpt.vae), ("transformer", ckpt.dit)) if c is not None]
    print(f"wrote {args.dst} ({args.to}; {' + '.join(parts)} from {ckpt.format} {ckpt.version})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return EXIT_OK
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    return run_handler(handler, args)


def console() -> None:
    """The `ltxv` executable: `main()`, then, after `generate`, leave without the interpreter's teardown:
    finalising torch's modules takes ~0.45 s on a 2-core CPU (measured), a fifth of the bundled model's whole
    run. Its output is complete by then (written to a temporary name, renamed) and the streams are flushed."""
    code = main()
    if sys.argv[1:2] == ["generate"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Bad input -> one line on stderr and exit 2; anything else unexpected -> exit 1 with the traceback."""
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
        print(f"ltxv {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ltxv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    console()
