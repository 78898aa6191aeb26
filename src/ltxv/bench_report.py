"""The human-readable summary `ltxv bench` prints from its report dict (bench.run_bench)."""

from __future__ import annotations

from typing import Any


def format_report(r: dict[str, Any]) -> str:
    """The human-readable summary `ltxv bench` prints."""
    st, cfg = r["stages"], r["settings"]
    w, h, f = r["shape"]["padded_whf"]
    text = "random embeddings (no text encoder)" if st["text_s"] is None else _dur(st["text_s"])
    if r["mfu"] is not None:
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:g} TFLOP/s" + (
            " per GPU" if r.get("processes", 1) > 1 else ""
        )
    elif not r["device"].startswith("cuda"):
        mfu = "n/a on CPU"
    else:
        mfu = (
            "n/a ("
            + ("the peak table is for bf16/fp16" if cfg["dtype"] == "fp32" else "GPU not in the peak table")
            + ")"
        )
    lines = [
        f"ltxv {r['version']} bench: {cfg['model'] or 'preset ' + cfg['preset'] + ' (random weights)'}",
        f"device: {r['device']} ({r['device_name']}, {r['threads']} threads), {cfg['dtype']}, "
        f"torch {r['torch']}"
        + ("" if r.get("processes", 1) == 1 else f"; {r['processes']} processes (figures of rank 0)"),
        f"shape: {cfg['width']}x{cfg['height']}x{cfg['num_frames']} (computed {w}x{h}x{f}) -> latents "
        f"{'x'.join(map(str, r['shape']['latent_fhw']))} = {r['shape']['tokens']} tokens, "
        f"{r['text_tokens']} text tokens",
        f"sampling: {st['steps']} steps, guidance {cfg['guidance']:g}"
        + (f" at t >= {cfg['guidance_until']:g}" if cfg.get("guidance_until") else "")
        + f", STG {cfg['stg']:g} -> {r['forwards_per_step']} DiT forwards/step; warm-up {cfg['warmup']}, "
        f"repeats {cfg['repeats']}",
        f"total wall (median):  {_dur(r['wall_s'])}   [{', '.join(_dur(x) for x in r['wall_s_all'])}]",
        f"  text encoding:      {text}",
        f"  denoising:          {_dur(st['denoise_s'])}   (per step: mean {_dur(st['step_mean_s'])}, "
        f"median {_dur(st['step_median_s'])})",
        f"  decode:             {_dur(st['decode_s'])}"
        + (
            ""
            if cfg["stream_chunk"] is None
            else f"   (streamed in chunks of {cfg['stream_chunk']} latent frames)"
        ),
        f"time to first frame:  {_dur(r['time_to_first_frame_s'])}",
        f"speed-ups: {_speed_line(cfg['speed'])}",
        f"DiT: {_si(r['dit_tflop_per_forward'])}FLOP/forward (FLOP model), "
        f"{_si(r['dit_tflop_total'])}FLOP/generation; achieved {_si(r['achieved_tflops'])}FLOP/s while "
        f"denoising; MFU {mfu}",
        f"realtime factor: {r['realtime_factor']:.3f} ({r['video_seconds']:.3f} s of video in "
        f"{r['wall_s']:.3f} s)",
        f"peak memory: {r['peak_mem_gb']:.2f} GB ({r['peak_mem_kind']})",
    ]
    c = r["compare"]
    if c is not None and "error" in c:
        lines.append(f"diffusers: skipped, {c['error']}")
    elif c is not None:
        cs = c["stages"]
        lines += [
            f"diffusers {c['diffusers_version']} LTXPipeline, same weights: {_dur(c['wall_s'])} (median; "
            f"denoising {_dur(cs['denoise_s'])}, step median {_dur(cs['step_median_s'])}, "
            f"decode {_dur(cs['decode_s'])})",
            f"diffusers / ltxv time: {c['ratio']:.2f}x total (ltxv {c['ltxv_wall_s_without_text']:.3f} s "
            f"without text encoding), {c['step_ratio']:.2f}x per step",
        ]
    return "\n".join(lines)


def _speed_line(speed: dict[str, Any]) -> str:
    on = [
        "text K/V cache" if speed["text_cache"] else "no text K/V cache",
        f"attention {speed['attention']}",
        f"compile {speed['compile']}" if speed["compile"] else "eager",
    ]
    on += ["fp8 linears"] if speed["fp8"] else []
    on += [f"first-block cache {speed['block_cache']:g}"] if speed["block_cache"] else []
    groups, sequence = speed.get("cfg_parallel", 1), speed.get("sequence_parallel", 1)
    on += [f"cfg parallel {groups} x sequence parallel {sequence}"] if groups * sequence > 1 else []
    return ", ".join(on)


def _dur(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.3f} s"


def _si(tera: float) -> str:
    """A value given in units of 1e12 with an SI prefix: 29.15 -> '29.15 T', 1.3e-6 -> '1.3 M'."""
    value = tera * 1e12
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g} {prefix}"
    return f"{value:.4g} "
