"""Pipeline comparison with diffusers' LTXPipeline / LTXImageToVideoPipeline / LTXConditionPipeline on a tiny
random model (fp32, CPU): where the semantics coincide the outputs match; every known difference is shown.

ltxv follows the official LTX-Video code. Differences of diffusers 0.42 (spec §2.7, §5.7, §5.11, §9):
- decode noise: official mixes it into the normalized latents, diffusers after de-normalization;
- LTXImageToVideoPipeline: per-token timestep t·(1 − c), no image-conditioning noise (official: min(t, 1 − c)
  and `image_cond_noise_scale`); it encodes the image as a posterior *sample* drawn from `generator` (ltxv:
  the mode) and ignores `image` when `latents` are given (their first latent frame is the condition);
- initial noise: official draws (B, N, C) tokens from the seed, diffusers (B, C, F', H', W');
- LTXPipeline / LTXImageToVideoPipeline ignore `causal_temporal_positioning`; LTXConditionPipeline always
  applies it (`_scale_video_ids`).
Explicit latents: LTXPipeline and LTXImageToVideoPipeline take them packed (B, N, C); LTXConditionPipeline
takes (B, C, F', H', W') but replaces them by generator noise unless denoise_strength < 1 (so it is seeded).
The diffusers pipelines run with text_encoder=None, tokenizer=None and prompt embeddings; no stub is needed
(tokenizer_max_length falls back to 128).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from conftest import position_sensitive_dit, randomize_, rel_err
from einops import rearrange

import ltxv
from ltxv.conditioning import Condition
from ltxv.config import ModelSpec, SampleConfig, SchedulerConfig
from ltxv.pipeline import GenerationResult, Pipeline, TextEmbeddings
from ltxv.presets import PRESETS
from ltxv.weights import load_transformer, load_vae, open_checkpoint, save_checkpoint

pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXImageToVideoPipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

TOL = 1e-4
H, W, FRAMES, FPS, STEPS = 64, 96, 17, 25, 4
LATENT = (1, 16, 3, 2, 3)  # (B, C, F', H', W') of a 17x64x96 video
SD3, LQ = SchedulerConfig("sd3", 0.1), SchedulerConfig("linear_quadratic", None)


@dataclasses.dataclass
class Models:
    ours: Pipeline
    vae: AutoencoderKLLTXVideo
    dit: LTXVideoTransformer3DModel
    folder: Path


def _tiny_dit(causal: bool) -> ltxv.VideoDiT:
    return position_sensitive_dit(causal)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(causal, scheduler) -> the same random weights saved as a diffusers folder and loaded by both sides."""
    cache: dict[tuple[bool, str], Models] = {}

    def get(causal: bool = False, scheduler: SchedulerConfig = SD3) -> Models:
        if (causal, scheduler.kind) not in cache:
            dit = _tiny_dit(causal)
            spec = ModelSpec(vae=PRESETS["tiny"].vae, dit=dit.cfg, scheduler=scheduler)
            folder = tmp_path_factory.mktemp("diffusers") / "model"
            save_checkpoint(folder, spec, randomize_(ltxv.VideoVAE(spec.vae), 1, 0.2), dit, "diffusers")
            ours = Pipeline(load_vae(folder), load_transformer(folder), open_checkpoint(folder).spec)
            assert ours.spec.scheduler.kind == scheduler.kind
            assert ours.dit.cfg.causal_temporal_positioning == causal
            cache[causal, scheduler.kind] = Models(
                ours,
                AutoencoderKLLTXVideo.from_pretrained(folder / "vae").eval(),
                LTXVideoTransformer3DModel.from_pretrained(folder / "transformer").eval(),
                folder,
            )
        return cache[causal, scheduler.kind]

    return get


def _texts() -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(0)
    emb, neg = torch.randn(1, 7, 32, generator=g), torch.randn(1, 7, 32, generator=g)
    mask, neg_mask = torch.ones(1, 7), torch.ones(1, 7)
    mask[:, 5:] = 0
    neg_mask[:, 3:] = 0
    return TextEmbeddings(emb, mask), TextEmbeddings(neg, neg_mask)


def _ours(m: Models, noise, generator, conditions=(), **kw) -> GenerationResult:
    """ltxv with CFG 3, no STG (so no rescale), decode at t = 0.05; no decode / image-conditioning noise."""
    kw = dict(image_cond_noise_scale=0.0, decode_timestep=0.05, decode_noise_scale=0.0) | kw
    size = dict(width=W, height=H, num_frames=FRAMES, frame_rate=FPS)
    cfg = SampleConfig(**size, steps=STEPS, guidance=3.0, stg=0.0, **kw)
    text, neg = _texts()
    return m.ours.generate(
        text, cfg, negative=neg, noise=noise, conditions=list(conditions), generator=generator
    )


def _diffusers(cls, m: Models, seed: int = 0, **kw):
    """Run a diffusers pipeline (guidance 3, guidance_rescale 0, decode at 0.05 without noise unless given);
    returns (normalized latents (B, C, F', H', W'), video (B, 3, F, H, W) in [0, 1], pipeline)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(m.folder / "scheduler")
    pipe = cls(scheduler=scheduler, vae=m.vae, text_encoder=None, tokenizer=None, transformer=m.dit)
    pipe.set_progress_bar_config(disable=True)
    last = {}

    def grab(_pipe, _i, _t, tensors):
        last["tokens"] = tensors["latents"]  # (B, N, C) after the step (no extra tokens in these tests)
        return {}

    text, neg = _texts()
    kw = dict(decode_timestep=0.05, decode_noise_scale=0.0) | kw
    video = pipe(
        height=H,
        width=W,
        num_frames=FRAMES,
        frame_rate=FPS,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        prompt_embeds=text.emb,
        prompt_attention_mask=text.mask,
        negative_prompt_embeds=neg.emb,
        negative_prompt_attention_mask=neg.mask,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        callback_on_step_end=grab,
        **kw,
    ).frames
    latents = rearrange(last["tokens"], "b (f h w) c -> b c f h w", f=LATENT[2], h=LATENT[3])
    return latents, video.permute(0, 2, 1, 3, 4), pipe  # diffusers' "pt" video is (B, F, 3, H, W)


def _noise(seed: int = 3) -> torch.Tensor:
    """(B, C, F', H', W') normal noise: also what diffusers' prepare_latents draws from `seed`."""
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))


def _pack(z: torch.Tensor) -> torch.Tensor:
    return rearrange(z, "b c f h w -> b (f h w) c")


def _image(seed: int = 4) -> torch.Tensor:
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(seed))  # [0, 1]: diffusers' range


def test_t2v_matches_ltx_pipeline(models):
    """SD3 shift + terminal 0.1, CFG 3, no STG / guidance rescale, decode at 0.05, no decode noise."""
    m = models(causal=False)
    noise = _noise()
    ours = _ours(m, noise, torch.Generator().manual_seed(1))
    latents, video, pipe = _diffusers(LTXPipeline, m, latents=_pack(noise))
    sigmas = pipe.scheduler.sigmas.tolist()  # diffusers' schedule, followed by the final 0
    assert len(ours.timesteps) == STEPS and sigmas[-1] == 0.0
    assert ours.timesteps == pytest.approx(sigmas[:-1], abs=1e-6)  # [1.0, 0.7752, 0.4860, 0.1]
    assert ours.timesteps[-1] == pytest.approx(0.1)
    assert rel_err(ours.latents, latents) < TOL  # measured 8.3e-6
    assert rel_err(ours.video, video) < TOL  # measured 6.0e-7
    assert video.std() > 0.05  # not a saturated or constant video


def test_decode_noise_is_mixed_in_normalized_space(models):
    """Official: decode(z(1 − s) + s·ε) on normalized z; diffusers: decode(denorm(z)(1 − s) + s·ε)."""
    m = models(causal=False)
    vae = m.ours.vae
    s = 0.1  # official default 0.025; larger so that the gap clearly shows through the tiny decoder
    mean, std = vae.latent_mean, vae.latent_std
    assert mean.abs().max() > 0.1 and (std - 1).abs().max() > 0.1  # the normalization is not the identity
    eps = torch.randn(LATENT, generator=torch.Generator().manual_seed(7))

    def decode(z: torch.Tensor, raw_space: bool) -> torch.Tensor:  # -> video in about [-1, 1]
        mixed = vae.normalize(vae.denormalize(z) * (1 - s) + eps * s) if raw_space else z * (1 - s) + eps * s
        return vae.decode(mixed, timestep=0.05)

    z = _noise(5)
    with torch.inference_mode():
        got = m.ours._decode(z, SampleConfig(decode_noise_scale=s), torch.Generator().manual_seed(7))
        assert rel_err(got, decode(z, raw_space=False)) < 1e-6  # measured 0
        assert rel_err(got, decode(z, raw_space=True)) > 1e-3  # measured 4.8e-3

    # Whole pipelines with the same decode ε (both draw it first from `generator` when latents are given):
    # the latents agree, each video is its own formula applied to them, and the two formulas differ.
    noise = _noise()
    ours = _ours(m, noise, torch.Generator().manual_seed(7), decode_noise_scale=s)
    latents, video, _ = _diffusers(LTXPipeline, m, seed=7, latents=_pack(noise), decode_noise_scale=s)
    assert rel_err(ours.latents, latents) < TOL
    with torch.inference_mode():
        official, raw = (((decode(latents, flag) + 1) / 2).clamp(0, 1) for flag in (False, True))
    assert rel_err(ours.video, official) < TOL  # measured 5.5e-7
    assert rel_err(video, raw) < TOL  # measured 4.3e-8
    assert rel_err(ours.video, video) > 3e-4  # measured 9.1e-4 (the tiny decoder damps latent changes)


def test_i2v_matches_image_to_video_pipeline(models):
    """Hard first-frame conditioning, no image-conditioning noise: min(t, 1 − c) == t·(1 − c) for c in {0, 1};
    diffusers steps only frames 1:, which ltxv's update mask leaves fixed too -> the same result, given the
    same condition latent (LTXImageToVideoPipeline takes it from `latents`; `image` is then unused)."""
    m = models(causal=False)
    image = _image()
    media = image[:, :, None] * 2 - 1  # (1, 3, 1, H, W) in [-1, 1]
    with torch.inference_mode():
        cond = m.ours.vae.encode(media)  # normalized posterior mode (1, C, 1, H', W')
    noise = _noise()
    start = torch.cat([cond, noise[:, :, 1:]], dim=2)
    ours = _ours(m, noise, torch.Generator().manual_seed(1), [Condition(media)])
    latents, video, _ = _diffusers(LTXImageToVideoPipeline, m, image=image, latents=_pack(start))
    assert torch.equal(ours.latents[:, :, :1], cond)  # the conditioned frame never moves
    assert rel_err(ours.latents, latents) < TOL  # measured 2.7e-7
    assert rel_err(ours.video, video) < TOL  # measured 5.1e-8

    # the official image_cond_noise_scale (0.15) has no counterpart in LTXImageToVideoPipeline
    noisy = _ours(m, noise, torch.Generator().manual_seed(1), [Condition(media)], image_cond_noise_scale=0.15)
    assert rel_err(noisy.latents, latents) > 1e-2  # measured 0.086

    # without `latents`, diffusers encodes the image as a posterior sample drawn from `generator`
    own, _, _ = _diffusers(LTXImageToVideoPipeline, m, seed=5, image=image)
    with torch.no_grad():
        sample = m.vae.encode(media).latent_dist.sample(torch.Generator().manual_seed(5))
    sample = (sample - m.vae.latents_mean.view(1, -1, 1, 1, 1)) / m.vae.latents_std.view(1, -1, 1, 1, 1)
    assert rel_err(own[:, :, :1], sample) < TOL  # measured 0
    assert rel_err(own[:, :, :1], cond) > 0.1  # measured 2.9 (a random VAE has a wide posterior)


def test_i2v_matches_condition_pipeline(models, monkeypatch):
    """LTXConditionPipeline follows the official I2V: min(t, 1 − c), image_cond_noise 0.15, causal positions,
    linear-quadratic schedule. Its VAE posterior sample is patched to the mode (as in the official test)."""
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    m = models(causal=True, scheduler=LQ)
    image = _image()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(LATENT, generator=g)  # diffusers' draw order: this noise, then per-step (B, N, C)
    ours = _ours(m, noise, g, [Condition(image[:, :, None] * 2 - 1)], image_cond_noise_scale=0.15)
    latents, video, pipe = _diffusers(LTXConditionPipeline, m, image=image, image_cond_noise_scale=0.15)
    assert ours.timesteps == pytest.approx(pipe.scheduler.sigmas[:-1].tolist(), abs=1e-6)
    assert rel_err(ours.latents, latents) < TOL  # measured 1.7e-6
    assert rel_err(ours.video, video) < TOL  # measured 1.4e-7


def test_initial_noise_layout(models):
    """Same seed: official (B, N, C) tokens vs diffusers' (B, C, F', H', W') -> different noise and results;
    given diffusers' noise explicitly, ltxv reproduces diffusers' seeded result."""
    m = models(causal=False)
    b, c, f, h, w = LATENT
    tokens = torch.randn(b, f * h * w, c, generator=torch.Generator().manual_seed(9))
    official = rearrange(tokens, "b (f h w) c -> b c f h w", f=f, h=h)
    assert rel_err(official, _noise(9)) > 0.5  # unrelated fields (measured 1.4)

    seeded = _ours(m, None, torch.Generator().manual_seed(9))
    assert torch.equal(seeded.latents, _ours(m, official, torch.Generator().manual_seed(9)).latents)
    latents, _, _ = _diffusers(LTXPipeline, m, seed=9)
    assert rel_err(_ours(m, _noise(9), torch.Generator()).latents, latents) < TOL  # measured 4.5e-6
    assert rel_err(seeded.latents, latents) > 0.1  # measured 0.61


def test_causal_temporal_positioning(models):
    """LTXPipeline ignores `causal_temporal_positioning` (its transformer has no such option);
    LTXConditionPipeline always puts the first latent frame at pixel frame 0. ltxv follows the checkpoint."""
    assert "causal_temporal_positioning" not in inspect.signature(LTXVideoTransformer3DModel).parameters
    noise = _noise()
    latents, _, _ = _diffusers(LTXPipeline, models(causal=True), latents=_pack(noise))
    assert rel_err(_ours(models(causal=False), noise, torch.Generator()).latents, latents) < TOL  # 8.3e-6
    assert rel_err(_ours(models(causal=True), noise, torch.Generator()).latents, latents) > 1e-2  # 0.12

    noise = _noise(0)  # what LTXConditionPipeline draws from seed 0 (it replaces `latents` by it)
    causal = _ours(models(causal=True, scheduler=LQ), noise, torch.Generator())
    for flag in (True, False):  # same weights; diffusers' result does not depend on the flag
        latents, video, _ = _diffusers(LTXConditionPipeline, models(causal=flag, scheduler=LQ), seed=0)
        assert rel_err(causal.latents, latents) < TOL  # measured 3.0e-6
        assert rel_err(causal.video, video) < TOL  # measured 2.1e-7
    plain = _ours(models(causal=False, scheduler=LQ), noise, torch.Generator())
    assert rel_err(plain.latents, latents) > 1e-2  # measured 0.13
