"""The diffusers side of `ltxv bench --compare diffusers`: LTXPipeline on the same weights (shared tensors),
timed like ltxv, and the ratio figures."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from typing import Any

import torch

from .bench import RunTimes, clock, stage_figures, text_tokens
from .config import SampleConfig
from .media import padded_size
from .pipeline import Pipeline, TextEmbeddings


def diffusers_pipeline(pipe: Pipeline) -> Any:
    """A diffusers.LTXPipeline sharing `pipe`'s tensors (renamed in memory, no copy); raises
    convert.ConversionError when the VAE or DiT has no diffusers equivalent."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    from . import convert

    layout = convert.vae_to_diffusers_layout(pipe.vae.cfg)
    dit_config = convert.dit_config_to_diffusers(pipe.dit.cfg)
    dit_config.pop("causal_temporal_positioning")  # ours only: LTXPipeline has no such option
    with torch.device("meta"):
        vae = AutoencoderKLLTXVideo.from_config(layout.config)
        dit = LTXVideoTransformer3DModel.from_config(dit_config)
    vae.load_state_dict(
        convert.vae_keys_to_diffusers(pipe.vae.state_dict(), layout), strict=True, assign=True
    )
    dit.load_state_dict(convert.dit_keys_to_diffusers(pipe.dit.state_dict()), strict=True, assign=True)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        convert.scheduler_to_diffusers(pipe.spec.scheduler)
    )
    out = LTXPipeline(
        scheduler=scheduler, vae=vae.eval(), text_encoder=None, tokenizer=None, transformer=dit.eval()
    )
    out.set_progress_bar_config(disable=True)
    return out


def time_diffusers(
    dpipe: Any, cfg: SampleConfig, text: TextEmbeddings, neg: TextEmbeddings | None
) -> RunTimes:
    """One LTXPipeline call on prompt embeddings (padded size, as diffusers requires), steps timed by
    callback_on_step_end; decode = the rest (un-pack, decode noise, VAE decode, postprocess)."""
    device = dpipe.transformer.proj_in.weight.device
    now = clock(device)
    height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames)

    def on_step(_pipe, _i, _t, _tensors):  # noqa: ANN001, ANN202
        marks.append(now())
        return {}

    marks = [now()]
    dpipe(
        height=height,
        width=width,
        num_frames=frames,
        frame_rate=cfg.frame_rate,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        prompt_embeds=text.emb,
        prompt_attention_mask=text.mask,
        negative_prompt_embeds=None if neg is None else neg.emb,
        negative_prompt_attention_mask=None if neg is None else neg.mask,
        decode_timestep=cfg.decode_timestep,
        decode_noise_scale=cfg.decode_noise_scale,
        generator=torch.Generator(device).manual_seed(cfg.seed or 0),
        output_type="pt",
        callback_on_step_end=on_step,
    )
    end = now()
    return RunTimes(end - marks[0], None, [b - a for a, b in itertools.pairwise(marks)], end - marks[-1])


def diffusers_runner(
    pipe: Pipeline, cfg: SampleConfig, text: TextEmbeddings | None, neg: TextEmbeddings | None, prompt: str
) -> Callable[[], RunTimes]:
    """One timed diffusers LTXPipeline generation on `pipe`'s weights with the same shape, steps and CFG (STG
    must be off: LTXPipeline has none), fed the embeddings ltxv uses (from its text encoder, untimed, when it
    has one). Raises convert.ConversionError when the model cannot be expressed in diffusers."""
    dpipe = diffusers_pipeline(pipe)
    if text is None:
        tokens = text_tokens(pipe, cfg)
        text = pipe.encode_text([prompt], tokens)
        neg = pipe.encode_text([cfg.negative_prompt], tokens) if cfg.guidance > 1 else None
    return lambda: time_diffusers(dpipe, cfg, text, neg)


def compare_figures(
    runs: list[RunTimes], peak_gb: float, ours: list[RunTimes], device: torch.device
) -> dict[str, Any]:
    """diffusers' figures and ratio = diffusers / ltxv median wall time, ltxv's without text encoding."""
    import diffusers

    figures = stage_figures(runs)
    ours_wall = statistics.median(r.total - (r.text or 0.0) for r in ours)
    ours_step = statistics.median(x for r in ours for x in r.steps)
    return {
        "diffusers_version": diffusers.__version__,
        **figures,
        "peak_mem_gb": peak_gb if device.type == "cuda" else None,
        "ltxv_wall_s_without_text": ours_wall,
        "ratio": figures["wall_s"] / ours_wall,
        "step_ratio": figures["stages"]["step_median_s"] / ours_step,
    }
