"""Pipeline comparison with diffusers' LTXPipeline / LTXImageToVideoPipeline / LTXConditionPipeline on a tiny
random model (fp32, CPU): where the semantics coincide the outputs match, and every known difference is shown.

ltxv follows the official LTX-Video code. Differences from diffusers 0.42 (spec §2.7, §5.7, §5.11, §9):
- decode noise: ltxv (official) mixes it into the normalized latents, diffusers after de-normalization;
- LTXImageToVideoPipeline: per-token timestep t·(1 − c) and no image-conditioning noise (official: min(t, 1 − c)
  and `image_cond_noise_scale`); it encodes the image with a posterior *sample* drawn from `generator`
  (ltxv: the mode) and ignores `image` when `latents` are given (their first latent frame is the condition);
- initial noise: ltxv (official) draws (B, N, C) tokens from the seed, diffusers (B, C, F', H', W');
- LTXPipeline / LTXImageToVideoPipeline ignore `causal_temporal_positioning`; LTXConditionPipeline always applies it.
Explicit latents: LTXPipeline and LTXImageToVideoPipeline take them packed (B, N, C); LTXConditionPipeline takes
(B, C, F', H', W') but replaces them by generator noise unless denoise_strength < 1, so it is driven by a seed.
The diffusers pipelines run with text_encoder=None, tokenizer=None and prompt embeddings (tokenizer_max_length
falls back to 128; no stub needed).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize_, rel_err
from einops import rearrange

import ltxv
from ltxv.conditioning import Condition
from ltxv.config import ModelSpec, SampleConfig, SchedulerConfig
from ltxv.pipeline import Pipeline, TextEmbeddings
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
    folder: object


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(causal, scheduler kind) -> the same random weights saved as a diffusers folder, loaded by both sides."""
    cache: dict[tuple[bool, str], Models] = {}

    def get(causal: bool = False, scheduler: SchedulerConfig = SD3) -> Models:
        key = (causal, scheduler.kind)
        if key not in cache:
            tiny = PRESETS["tiny"]
            dit_cfg = dataclasses.replace(tiny.dit, causal_temporal_positioning=causal)
            spec = ModelSpec(vae=tiny.vae, dit=dit_cfg, scheduler=scheduler)
            folder = tmp_path_factory.mktemp("diffusers") / "model"
            vae, dit = randomize_(ltxv.VideoVAE(spec.vae), 1, 0.2), randomize_(ltxv.VideoDiT(spec.dit), 2)
            save_checkpoint(folder, spec, vae, dit, "diffusers")
            ours = Pipeline(load_vae(folder), load_transformer(folder), open_checkpoint(folder).spec)
            assert ours.spec.scheduler.kind == scheduler.kind and ours.dit.cfg.causal_temporal_positioning == causal
            cache[key] = Models(
                ours,
                AutoencoderKLLTXVideo.from_pretrained(folder / "vae").eval(),
                LTXVideoTransformer3DModel.from_pretrained(folder / "transformer").eval(),
                folder,
            )
        return cache[key]

    return get


def _texts() -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(0)
    emb, neg = torch.randn(1, 7, 32, generator=g), torch.randn(1, 7, 32, generator=g)
    mask, neg_mask = torch.ones(1, 7), torch.ones(1, 7)
    mask[:, 5:] = 0
    neg_mask[:, 3:] = 0
    return TextEmbeddings(emb, mask), TextEmbeddings(neg, neg_mask)


def _ours(m: Models, noise: torch.Tensor | None, generator: torch.Generator, conditions=(), **kw):  # noqa: ANN001
    kw = dict(image_cond_noise_scale=0.0, decode_timestep=0.05, decode_noise_scale=0.0) | kw
    cfg = SampleConfig(width=W, height=H, num_frames=FRAMES, frame_rate=FPS, steps=STEPS, guidance=3.0, stg=0.0, **kw)
    text, neg = _texts()
    return m.ours.generate(text, cfg, negative=neg, noise=noise, conditions=list(conditions), generator=generator)


def _diffusers(cls, m: Models, seed: int = 0, **kw):  # noqa: ANN001
    """Run a diffusers pipeline; returns (normalized latents (B, C, F', H', W'), video (B, 3, F, H, W), pipe)."""
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(m.folder / "scheduler")
    pipe = cls(scheduler=sched, vae=m.vae, text_encoder=None, tokenizer=None, transformer=m.dit)
    pipe.set_progress_bar_config(disable=True)
    last = {}

    def grab(_pipe, _i, _t, tensors):  # noqa: ANN001, ANN202
        last["tokens"] = tensors["latents"]  # (B, N, C) after the step, video tokens only here
        return {}

    text, neg = _texts()
    kw = dict(decode_timestep=0.05, decode_noise_scale=0.0) | kw
    video = pipe(height=H, width=W, num_frames=FRAMES, frame_rate=FPS, num_inference_steps=STEPS, guidance_scale=3.0,
                 prompt_embeds=text.emb, prompt_attention_mask=text.mask, negative_prompt_embeds=neg.emb,
                 negative_prompt_attention_mask=neg.mask, generator=torch.Generator().manual_seed(seed),
                 output_type="pt", callback_on_step_end=grab, **kw).frames  # fmt: skip
    latents = rearrange(last["tokens"], "b (f h w) c -> b c f h w", f=LATENT[2], h=LATENT[3])
    return latents, video.permute(0, 2, 1, 3, 4), pipe  # diffusers "pt" video is (B, F, 3, H, W)


def _noise(seed: int = 3) -> torch.Tensor:
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))


def _pack(z: torch.Tensor) -> torch.Tensor:
    return rearrange(z, "b c f h w -> b (f h w) c")


def _image(seed: int = 4) -> torch.Tensor:
    return torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(seed))  # [0, 1], diffusers' range


def test_t2v_matches_ltx_pipeline(models):
    """SD3 schedule + terminal 0.1, CFG 3, no STG/rescale, decode at 0.05 without noise, same initial latents."""
    m = models(causal=False)
    noise = _noise()
    ours = _ours(m, noise, torch.Generator().manual_seed(1))
    latents, video, pipe = _diffusers(LTXPipeline, m, latents=_pack(noise))
    sigmas = pipe.scheduler.sigmas.tolist()
    assert len(ours.timesteps) == STEPS and sigmas[-1] == 0.0
    assert ours.timesteps == pytest.approx(sigmas[:-1], abs=1e-6)  # [1.0, 0.7752, 0.4860, 0.1]
    assert ours.timesteps[-1] == pytest.approx(0.1)
    assert rel_err(ours.latents, latents) < TOL  # measured 8.6e-8
    assert rel_err(ours.video, video) < TOL  # measured 4.4e-8
    assert video.std() > 0.05  # not a saturated / constant video


def test_decode_noise_is_mixed_in_normalized_space(models):
    """ltxv: decode(z(1 − s) + s·ε) on normalized z; diffusers: decode(denorm(z)(1 − s) + s·ε) on raw latents."""
    m = models(causal=False)
    vae, s = m.ours.vae, 0.025
    mean, std = vae.latent_mean.view(1, -1, 1, 1, 1), vae.latent_std.view(1, -1, 1, 1, 1)
    assert (mean.abs().max() > 0.1) and ((std - 1).abs().max() > 0.1)  # normalization is not the identity
    z = _noise(5)
    eps = torch.randn(LATENT, generator=torch.Generator().manual_seed(7))
    cfg = SampleConfig(decode_timestep=0.05, decode_noise_scale=s)
    with torch.inference_mode():
        got = m.ours._decode(z, cfg, torch.Generator().manual_seed(7))
        official = vae.decode(z * (1 - s) + eps * s, timestep=0.05)
        raw = vae.denormalize(z) * (1 - s) + eps * s  # diffusers' formula, mapped back to normalized space
        diffusers_style = vae.decode(vae.normalize(raw), timestep=0.05)
    assert rel_err(got, official) < 1e-6
    assert rel_err(got, diffusers_style) > 1e-3  # measured 5.5e-3

    # The whole pipelines with the same decode ε (both draw it first from `generator` when latents are given):
    # the latents agree, the videos differ by exactly the normalized-vs-raw mixing.
    noise = _noise()
    ours = _ours(m, noise, torch.Generator().manual_seed(7), decode_noise_scale=s)
    latents, video, _ = _diffusers(LTXPipeline, m, seed=7, latents=_pack(noise), decode_noise_scale=s)
    assert rel_err(ours.latents, latents) < TOL
    with torch.inference_mode():
        raw = vae.denormalize(latents) * (1 - s) + eps * s
        expected = ((vae.decode(vae.normalize(raw), timestep=0.05) + 1) / 2).clamp(0, 1)
    assert rel_err(video, expected) < TOL  # diffusers == decode of the raw-space mix
    assert rel_err(ours.video, video) > 1e-3  # measured 4.4e-3


def test_i2v_matches_image_to_video_pipeline(models):
    """Hard first-frame conditioning without image-conditioning noise: min(t, 1 − c) == t·(1 − c) for c ∈ {0, 1}
    and diffusers steps only frames 1:, which ltxv's update mask also leaves fixed -> same result, given the same
    condition latent. LTXImageToVideoPipeline takes that latent from `latents` (image is then unused)."""
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
    assert rel_err(ours.latents, latents) < TOL  # measured 5.8e-8
    assert rel_err(ours.video, video) < TOL

    # official image_cond_noise_scale (0.15): no counterpart in LTXImageToVideoPipeline
    noisy = _ours(m, noise, torch.Generator().manual_seed(1), [Condition(media)], image_cond_noise_scale=0.15)
    assert rel_err(noisy.latents, latents) > 1e-2  # measured 0.30

    # without `latents`, diffusers encodes the image as a posterior *sample* drawn from `generator` (ltxv: the mode)
    own, _, _ = _diffusers(LTXImageToVideoPipeline, m, seed=5, image=image)
    with torch.no_grad():
        dist = m.vae.encode(media).latent_dist
        sample = dist.sample(torch.Generator().manual_seed(5))
    sample = (sample - m.vae.latents_mean.view(1, -1, 1, 1, 1)) / m.vae.latents_std.view(1, -1, 1, 1, 1)
    assert rel_err(own[:, :, :1], sample) < TOL
    assert rel_err(own[:, :, :1], cond) > 1e-2  # measured 0.54


def test_i2v_matches_condition_pipeline(models, monkeypatch):
    """LTXConditionPipeline follows the official I2V (min(t, 1 − c), image_cond_noise 0.15, causal positions)."""
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    m = models(causal=True, scheduler=LQ)
    image = _image()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(LATENT, generator=g)  # diffusers: 5-D noise first, then per-step (B, N, C) draws
    ours = _ours(m, noise, g, [Condition(image[:, :, None] * 2 - 1)], image_cond_noise_scale=0.15)
    latents, video, pipe = _diffusers(LTXConditionPipeline, m, seed=0, image=image, image_cond_noise_scale=0.15)
    assert ours.timesteps == pytest.approx(pipe.scheduler.sigmas[:-1].tolist(), abs=1e-6)
    assert rel_err(ours.latents, latents) < TOL  # measured 1.1e-7
    assert rel_err(ours.video, video) < TOL


def test_initial_noise_layout(models):
    """Same seed: ltxv (official) draws (B, N, C) tokens, diffusers (B, C, F', H', W') -> different fields; with
    each side's field passed explicitly to the other, the results are the same."""
    m = models(causal=False)
    tokens = torch.randn(LATENT[0], 18, LATENT[1], generator=torch.Generator().manual_seed(9))
    official = rearrange(tokens, "b (f h w) c -> b c f h w", f=LATENT[2], h=LATENT[3])
    grid = _noise(9)
    assert rel_err(official, grid) > 0.5  # unrelated fields

    seeded = _ours(m, None, torch.Generator().manual_seed(9))
    assert torch.equal(seeded.latents, _ours(m, official, torch.Generator().manual_seed(9)).latents)
    latents, _, _ = _diffusers(LTXPipeline, m, seed=9)
    assert rel_err(_ours(m, grid, torch.Generator().manual_seed(9)).latents, latents) < TOL
    assert rel_err(seeded.latents, latents) > 0.1  # measured 1.3


def test_causal_temporal_positioning(models):
    """LTXPipeline ignores `causal_temporal_positioning` (not in its transformer config); LTXConditionPipeline
    always shifts the first latent frame to pixel frame 0. ltxv follows the checkpoint's flag."""
    causal, plain = models(causal=True), models(causal=False)
    assert "causal_temporal_positioning" not in causal.dit.config
    noise = _noise()
    latents, _, _ = _diffusers(LTXPipeline, causal, latents=_pack(noise))
    assert rel_err(_ours(plain, noise, torch.Generator()).latents, latents) < TOL
    assert rel_err(_ours(causal, noise, torch.Generator()).latents, latents) > 1e-2  # measured 0.56

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(LATENT, generator=g)  # the noise LTXConditionPipeline draws from seed 0
    for flag in (True, False):
        m = models(causal=flag, scheduler=LQ)
        ours = _ours(m, noise, torch.Generator())
        latents, video, _ = _diffusers(LTXConditionPipeline, m, seed=0)
        if flag:
            assert rel_err(ours.latents, latents) < TOL  # measured 8.0e-8
            assert rel_err(ours.video, video) < TOL
        else:
            assert rel_err(ours.latents, latents) > 1e-2  # measured 0.55
