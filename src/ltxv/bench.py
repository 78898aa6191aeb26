"""`ltxv bench`: time the real pipeline at a named shape (random weights unless given a checkpoint) and report
stage timings, DiT TFLOP/s and MFU from the §A.5 FLOP model, the realtime factor and peak memory."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .bench_report import format_report
from .config import ModelSpec, SampleConfig
from .demo import DEMO_DIR, GENERATION_FILE, add_generation_flag, given_fields, sample_config
from .devices import resolve_device
from .dit.model import VideoDiT
from .files import check_writable, write_text_atomic
from .flops import PEAK_TFLOPS, dit_flops, peak_tflops, text_flops  # noqa: F401 - PEAK_TFLOPS re-exported
from .media import crop_video, padded_size
from .parallel import is_main, local_device
from .pipeline import Pipeline, TextEmbeddings
from .presets import PRESETS, get_preset
from .sampling import guidance_settings
from .speed import SpeedConfig, add_speed_arguments, speed_from_args
from .vae.model import VideoVAE

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark; `sample` carries the shape and guidance (validated by SampleConfig)."""

    sample: SampleConfig
    preset: str = "tiny"
    model: str | None = None  # checkpoint path; None = random weights of `preset`
    text_encoder: str | None = None  # T5 path; None = random prompt embeddings
    prompt: str = "a red fox running through fresh snow, golden hour"
    device: str = "cpu"
    dtype: str = "fp32"
    repeats: int = 3
    warmup: int = 1
    compare: str | None = None  # "diffusers": also time diffusers' LTXPipeline on the same weights
    speed: SpeedConfig = SpeedConfig()  # ltxv's speed-ups (not applied to the diffusers comparison)
    stream_chunk: int | None = None  # decode streamed in chunks of this many latent frames; None = whole


@dataclass
class RunTimes:
    """Wall seconds of one generation: total = text (if encoded) + denoising (steps) + decode. The first step
    also holds generate()'s set-up (schedule, initial noise), which is small next to a DiT forward."""

    total: float
    text: float | None
    steps: list[float]
    decode: float
    first_frame: float | None = None  # from the start until the first decoded frames exist

    @property
    def denoise(self) -> float:
        return sum(self.steps)


# ----------------------------------------------------------------------------------------------------------
# Models and inputs
# ------------------------------------------------------------------------------------------------------------


def random_models(
    spec: ModelSpec, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[VideoVAE, VideoDiT]:
    """VAE and DiT with their constructors' random init, created on `device` in `dtype` (no file I/O, no fp32
    copy). Compute does not depend on the weight values; this init keeps activations finite."""
    previous = torch.get_default_dtype()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            vae, dit = VideoVAE(spec.vae), VideoDiT(spec.dit)
        finally:
            torch.set_default_dtype(previous)
    return vae.eval().requires_grad_(False), dit.eval().requires_grad_(False)


def build_pipeline(s: BenchSettings) -> Pipeline:
    """The checkpoint at `s.model`, else random weights of `s.preset`; plus the T5 at `s.text_encoder`; with
    the speed-ups `s.speed`."""
    device, dtype = local_device(torch.device(s.device)), DTYPES[s.dtype]
    if s.model is not None:
        return Pipeline.from_pretrained(s.model, s.text_encoder, device, dtype, speed=s.speed)
    spec = get_preset(s.preset)
    vae, dit = random_models(spec, device, dtype)
    encoder = None
    if s.text_encoder is not None:
        from .text import TextEncoder

        encoder = TextEncoder.from_pretrained(s.text_encoder, device="cpu", dtype=dtype)  # as from_pretrained
    return Pipeline(vae, dit, spec, encoder, device, speed=s.speed)


def text_tokens(pipe: Pipeline, cfg: SampleConfig) -> int:
    """T5 length: `max_tokens`, else the checkpoint era's (128 for 0.9.0/0.9.1, 256 after), as generate()."""
    return cfg.max_tokens or (128 if pipe.spec.scheduler.kind == "sd3" else 256)


def random_text(pipe: Pipeline, cfg: SampleConfig, seed: int = 0) -> tuple[TextEmbeddings, TextEmbeddings]:
    """Random (prompt, negative) embeddings (1, L, caption_channels) with all L tokens valid."""
    g = torch.Generator(pipe.device).manual_seed(seed)
    shape = (1, text_tokens(pipe, cfg), pipe.dit.cfg.caption_channels)
    mask = torch.ones(shape[:2], dtype=torch.int64, device=pipe.device)
    emb = [torch.randn(shape, generator=g, device=pipe.device, dtype=pipe.dtype) for _ in range(2)]
    return TextEmbeddings(emb[0], mask), TextEmbeddings(emb[1], mask.clone())


# ----------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------


def clock(device: torch.device) -> Callable[[], float]:
    """perf_counter after the device's queued work is done (CUDA kernels are asynchronous)."""

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


def time_ltxv(
    pipe: Pipeline,
    cfg: SampleConfig,
    text: TextEmbeddings | None,
    neg: TextEmbeddings | None,
    prompt: str,
    stream_chunk: int | None = None,
) -> RunTimes:
    """One generate(): text encoding when `text` is None, steps timed by the callback, then the official
    decode (`Pipeline._decode`: decode noise + timestep, tiling when needed) and crop, timed separately;
    with `stream_chunk`, `Pipeline.decode_stream` instead, noting when its first frames arrive."""
    now = clock(pipe.device)
    start = now()
    text_s = None
    if text is None:
        tokens = text_tokens(pipe, cfg)
        text = pipe.encode_text([prompt], tokens)
        neg = pipe.encode_text([cfg.negative_prompt], tokens) if cfg.guidance > 1 else None
        text_s = now() - start
    marks = [now()]
    generator = torch.Generator(pipe.device).manual_seed(cfg.seed or 0)
    result = pipe.generate(
        text,
        cfg,
        negative=neg,
        generator=generator,
        callback=lambda i, t, x: marks.append(now()),
        decode=False,
    )
    first = None
    if stream_chunk is not None:
        for _frames in pipe.decode_stream(result.latents, cfg, generator, stream_chunk):
            first = now() if first is None else first  # a player would show/encode them here
    else:
        with torch.inference_mode():
            video = pipe._decode(result.latents, cfg, generator)  # the same generator, as generate() does
            video = ((crop_video(video, cfg.height, cfg.width, cfg.num_frames).float() + 1) / 2).clamp(0, 1)
    end = now()
    steps = [b - a for a, b in itertools.pairwise(marks)]
    return RunTimes(end - start, text_s, steps, end - marks[-1], (first or end) - start)


def measure(
    runners: dict[str, Callable[[], RunTimes]], repeats: int, warmup: int, device: torch.device
) -> dict[str, tuple[list[RunTimes], float]]:
    """Warm-up runs (discarded), then `repeats` timed rounds. Each round runs every runner in turn
    (interleaved, so that drift and other load on the machine hit all of them alike).
    -> name: (runs, peak memory in GB = 1e9 bytes: CUDA max_memory_allocated during that runner's timed runs,
    or on the CPU the process's lifetime max RSS)."""
    for name, run_once in runners.items():
        for i in range(warmup):
            _log(f"{name}: warm-up {i + 1}/{warmup} ({run_once().total:.3f} s)")
    runs: dict[str, list[RunTimes]] = {name: [] for name in runners}
    peaks = dict.fromkeys(runners, 0.0)
    for i in range(repeats):
        for name, run_once in runners.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            runs[name].append(run_once())
            peaks[name] = max(peaks[name], peak_memory_gb(device))
            _log(f"{name}: repeat {i + 1}/{repeats} ({runs[name][-1].total:.3f} s)")
    return {name: (runs[name], peaks[name]) for name in runners}


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss * (1 if sys.platform == "darwin" else 1024) / 1e9


def _log(message: str) -> None:
    if is_main():  # under torchrun, rank 0 speaks for the job
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# The benchmark and its report
# ------------------------------------------------------------------------------------------------------------


def stage_figures(runs: list[RunTimes]) -> dict[str, Any]:
    """Medians over repeats (steps: mean and median over every step of every repeat)."""
    steps = [s for r in runs for s in r.steps]
    texts = [r.text for r in runs if r.text is not None]
    firsts = [r.first_frame for r in runs if r.first_frame is not None]
    return {
        "wall_s": statistics.median(r.total for r in runs),
        "wall_s_all": [r.total for r in runs],
        "time_to_first_frame_s": statistics.median(firsts) if firsts else None,
        "stages": {
            "text_s": statistics.median(texts) if texts else None,
            "denoise_s": statistics.median(r.denoise for r in runs),
            "steps": len(runs[0].steps),
            "step_mean_s": statistics.fmean(steps),
            "step_median_s": statistics.median(steps),
            "decode_s": statistics.median(r.decode for r in runs),
        },
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_bench(s: BenchSettings) -> dict[str, Any]:
    """Build the pipeline, time `s.repeats` generations (after `s.warmup`), with diffusers interleaved."""
    device = torch.device(s.device)
    _log(f"building {'random ' + s.preset if s.model is None else s.model} models on {device} ({s.dtype})")
    pipe = build_pipeline(s)
    defaults = pipe.default_config()
    cfg = dataclasses.replace(s.sample, stg_blocks=defaults.stg_blocks, stochastic=defaults.stochastic)
    text, neg = (None, None) if pipe.text_encoder is not None else random_text(pipe, cfg)
    runners = {"ltxv": lambda: time_ltxv(pipe, cfg, text, neg, s.prompt, s.stream_chunk)}
    compare: dict[str, Any] | None = None
    if s.compare == "diffusers":
        from .bench_diffusers import diffusers_runner
        from .convert import ConversionError

        try:
            runners["diffusers"] = diffusers_runner(pipe, cfg, text, neg, s.prompt)
        except ConversionError as err:
            compare = {"error": f"this model cannot be expressed in diffusers: {err}"}
        except ImportError as err:
            compare = {"error": f"diffusers is not importable ({err}); pip install diffusers"}
    measured = measure(runners, s.repeats, s.warmup, pipe.device)
    report = _report(s, pipe, cfg, *measured["ltxv"])
    if "diffusers" in measured:
        from .bench_diffusers import compare_figures

        compare = compare_figures(*measured["diffusers"], measured["ltxv"][0], device)
    return report | {"compare": compare}


def _report(
    s: BenchSettings, pipe: Pipeline, cfg: SampleConfig, runs: list[RunTimes], peak_gb: float
) -> dict[str, Any]:
    """Every figure of the ltxv runs: timings, FLOPs, MFU, realtime factor, memory, settings."""
    from . import __version__

    device = pipe.device
    processes = pipe.parallel.world if pipe.parallel else 1
    st, ss, _ = pipe.vae.scale_factors
    height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames, ss, st)
    latent = ((frames - 1) // st + 1, height // ss, width // ss)
    n, t = latent[0] * latent[1] * latent[2], text_tokens(pipe, cfg)
    rows = batch_rows(cfg, pipe.schedule(cfg, n))  # generate() batches [uncond?, cond, perturbed?] per step
    figures = stage_figures(runs)
    cached = pipe.speed.text_cache  # then the text's share is computed once per set of branches, not per step
    per_forward = dit_flops(pipe.dit.cfg, n, t, text_cached=cached)
    total_flops = per_forward * sum(rows)
    total_flops += text_flops(pipe.dit.cfg, t) * sum(set(rows)) if cached else 0.0
    per_step = sum(rows) / len(rows)
    achieved = total_flops / figures["stages"]["denoise_s"] / 1e12
    peak = peak_tflops(device_name(device)) if device.type == "cuda" and s.dtype != "fp32" else None
    video_s = cfg.num_frames / cfg.frame_rate
    return {
        "version": __version__,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": _settings_dict(s, cfg),
        "shape": {"padded_whf": [width, height, frames], "latent_fhw": list(latent), "tokens": n},
        "text_tokens": t,
        "forwards_per_step": int(per_step) if per_step.is_integer() else round(per_step, 2),  # the mean
        "dit_forwards": sum(rows),
        **figures,
        "video_seconds": video_s,
        "realtime_factor": video_s / figures["wall_s"],
        "dit_tflop_per_forward": per_forward / 1e12,
        "dit_tflop_total": total_flops / 1e12,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "processes": processes,
        "mfu": achieved / (peak * processes) if peak else None,  # per GPU
        "peak_mem_gb": peak_gb,
        "peak_mem_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process max RSS",
    }


def batch_rows(cfg: SampleConfig, ts: list[float]) -> list[int]:
    """The DiT's batch rows at each step time (one video, no keyframes): 1 + CFG's + STG's branch, where
    `guidance_settings` turns them on (a per-step schedule, `guidance_until`)."""
    settings = (guidance_settings(cfg, t) for t in ts)
    return [1 + (g > 1) + (s > 0) for g, s, _, _ in settings]


def _settings_dict(s: BenchSettings, cfg: SampleConfig) -> dict[str, Any]:
    keys = ("width", "height", "num_frames", "frame_rate", "steps", "guidance", "guidance_until", "stg")
    keys += ("stg_blocks", "seed")
    return {
        "preset": None if s.model else s.preset,
        "model": s.model,
        "text_encoder": s.text_encoder,
        "dtype": s.dtype,
        "repeats": s.repeats,
        "warmup": s.warmup,
        "compare": s.compare,
        "speed": dataclasses.asdict(s.speed),
        "stream_chunk": s.stream_chunk,
        **{k: getattr(cfg, k) for k in keys},
    }


# ----------------------------------------------------------------------------------------------------------
# Command line (wired as `ltxv bench` by cli.py)
# ------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ltxv bench` flags. The shape and sampling flags default to the model's generation.json (for
    `--preset demo`: the bundled model's), else to SampleConfig's defaults, as `ltxv generate`."""
    parser.add_argument(
        "--preset", default="tiny", help=f"model size with random weights: {', '.join(PRESETS)}"
    )
    parser.add_argument("--model", help="checkpoint to benchmark instead of random weights (any format)")
    parser.add_argument("--text-encoder", help="T5 to time text encoding with (default: random embeddings)")
    parser.add_argument("--prompt", default=BenchSettings.prompt, help="prompt for --text-encoder")

    add_generation_flag(parser, "--width", "pixels (padded to /32 as generate)", type=int)
    add_generation_flag(parser, "--height", "pixels (padded to /32 as generate)", type=int)
    add_generation_flag(parser, "--frames", "frames (padded to 8k+1)", type=int)
    add_generation_flag(parser, "--fps", "frame rate of the video", type=float)
    add_generation_flag(parser, "--steps", "denoising steps", type=int)
    add_generation_flag(parser, "--guidance", "CFG scale (1 = off)", type=float)
    add_generation_flag(parser, "--guidance-until", "guidance only at t >= this (0 = every step)", type=float)
    add_generation_flag(parser, "--stg", "STG scale (0 = off; forced off by --compare)", type=float)
    add_generation_flag(parser, "--max-tokens", "text tokens (0 = the era's: 128 or 256)", type=int)
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generations (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed generations first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument(
        "--compare", choices=("diffusers",), help="also time diffusers' LTXPipeline on the same weights"
    )
    add_speed_arguments(parser)
    parser.add_argument(
        "--stream",
        type=int,
        nargs="?",
        const=4,
        metavar="CHUNK",
        help="stream the decode in chunks of CHUNK latent frames (bare flag: 4), timing the first frames",
    )
    parser.add_argument("--json", help="write every figure to this JSON file")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validate the flags (ValueError naming the flag) before any model is built."""
    for flag, value, low in (
        ("--width", getattr(args, "width", None), 1),
        ("--height", getattr(args, "height", None), 1),
        ("--frames", getattr(args, "frames", None), 1),
        ("--steps", getattr(args, "steps", None), 1),
        ("--repeats", args.repeats, 1),
        ("--warmup", args.warmup, 0),
        ("--max-tokens", getattr(args, "max_tokens", None), 0),
        ("--stream", args.stream, 1),
    ):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.model is None:
        try:
            get_preset(args.preset)
        except ValueError as err:
            raise ValueError(f"--preset: {err}") from None
    if args.dtype is not None and args.dtype not in DTYPES:
        raise ValueError(f"--dtype {args.dtype!r}: choose from {', '.join(DTYPES)}")
    if args.compare not in (None, "diffusers"):
        raise ValueError(f"--compare {args.compare!r}: only 'diffusers' is supported")
    device = str(resolve_device(args.device))
    sample = sample_config(_tuned_model(args), given_fields(args) | {"seed": args.seed})
    if args.compare and sample.stg > 0:
        _log(f"note: --compare diffusers runs both without STG (diffusers has none): {sample.stg:g} -> 0")
        sample = dataclasses.replace(sample, stg=0.0)
    if args.compare and sample.guidance_until > 0:
        _log(
            "note: --compare diffusers runs both with guidance at every step (diffusers' LTXPipeline has no "
            f"guidance interval): --guidance-until {sample.guidance_until:g} -> 0"
        )
        sample = dataclasses.replace(sample, guidance_until=0.0)
    speed = speed_from_args(args)  # ValueError for an unknown backend or a negative threshold
    if args.compare and speed.cfg_parallel * speed.sequence_parallel > 1:
        raise ValueError(
            "--compare diffusers times one process; run it without torchrun / --cfg-parallel / "
            "--sequence-parallel"
        )
    return BenchSettings(
        sample=sample,
        preset=args.preset,
        model=args.model,
        text_encoder=args.text_encoder,
        prompt=args.prompt,
        device=device,
        dtype=args.dtype or ("bf16" if torch.device(device).type == "cuda" else "fp32"),
        repeats=args.repeats,
        warmup=args.warmup,
        compare=args.compare,
        speed=speed,
        stream_chunk=args.stream,
    )


def _tuned_model(args: argparse.Namespace) -> str | None:
    """Whose generation.json sets the unset flags: --model's; for `--preset demo`, the bundled model's."""
    if args.model is not None:
        return args.model
    if args.preset == "demo" and (DEMO_DIR / GENERATION_FILE).is_file():
        return str(DEMO_DIR)
    return None


def run(args: argparse.Namespace) -> int:
    """`ltxv bench`: print the summary, and write the JSON figures when --json is given."""
    settings = settings_from_args(args)
    if args.json:
        check_writable(args.json)  # before the timing, not after
    report = run_bench(settings)
    if not is_main():
        return 0
    print(format_report(report))
    if args.json:
        path = write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
