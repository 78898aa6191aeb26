"""Pipeline API on a tiny random model: shapes, seeds, conditioning invariants, schedules, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize_

import ltxv
from ltxv import Condition, Pipeline, SampleConfig, TextEmbeddings, sampling
from ltxv.config import SchedulerConfig
from ltxv.devices import resolve_device
from ltxv.presets import PRESETS
from ltxv.upsampler import LatentUpsampler, UpsamplerConfig

CFG = SampleConfig(width=64, height=64, num_frames=17, steps=3, stg_blocks=(1,), seed=5)


@pytest.fixture(scope="module")
def pipe():
    spec = PRESETS["tiny"]
    return Pipeline(
        randomize_(ltxv.VideoVAE(spec.vae).eval(), 1, 0.2),
        randomize_(ltxv.VideoDiT(spec.dit).eval(), 2),
        spec,
    )


def _text(seed: int = 0) -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(seed)
    return (
        TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6)),
        TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6)),
    )


def test_shapes_range_and_seed_reproducibility(pipe):
    text, neg = _text()
    a = pipe.generate(text, CFG, negative=neg)
    b = pipe.generate(text, CFG, negative=neg)
    c = pipe.generate(text, dataclasses.replace(CFG, seed=6), negative=neg)
    assert a.video.shape == (1, 3, 17, 64, 64) and a.latents.shape == (1, 16, 3, 2, 2)
    assert 0 <= a.video.min() and a.video.max() <= 1 and a.seed == 5
    assert torch.equal(a.video, b.video) and not torch.equal(a.video, c.video)


def test_odd_sizes_are_padded_and_cropped(pipe):
    text, neg = _text()
    r = pipe.generate(text, dataclasses.replace(CFG, width=70, height=40, num_frames=12), negative=neg)
    assert r.video.shape == (1, 3, 12, 40, 70) and r.latents.shape == (1, 16, 3, 2, 3)  # 96x64x17 generated


def test_image_to_video_keeps_the_encoded_image_in_the_first_latent_frame(pipe):
    text, neg = _text()
    image = torch.rand(1, 3, 1, 64, 64) * 2 - 1
    cfg = dataclasses.replace(CFG, image_cond_noise_scale=0.0)
    r = pipe.generate(text, cfg, negative=neg, conditions=[Condition(image, 0, 1.0)])
    torch.testing.assert_close(r.latents[:, :, :1], pipe.vae.encode(image), atol=1e-6, rtol=0)
    free = pipe.generate(text, cfg, negative=neg)
    assert not torch.allclose(free.latents[:, :, :1], pipe.vae.encode(image), atol=1e-2)


def test_keyframe_extra_tokens_are_dropped_and_change_the_video(pipe):
    text, neg = _text()
    image = torch.rand(1, 3, 1, 64, 64) * 2 - 1
    plain = pipe.generate(text, CFG, negative=neg)
    key = pipe.generate(text, CFG, negative=neg, conditions=[Condition(image, 16, 1.0)])
    assert key.latents.shape == plain.latents.shape  # the extra tokens do not reach the decoder
    assert not torch.allclose(key.latents, plain.latents)


def test_keyframe_guidance_runs_the_unconditional_branch_without_the_keyframes(pipe):
    """keyframe_guidance: with extra tokens, each step is one batched forward of [cond, perturbed] over all
    tokens and one unconditional forward of the video tokens alone; without extra tokens (text, first frame)
    or without CFG it changes nothing."""
    text, neg = _text()
    image = torch.rand(1, 3, 1, 64, 64) * 2 - 1
    first, key = Condition(image, 0, 1.0), Condition(image, 16, 1.0)
    on = dataclasses.replace(CFG, keyframe_guidance=True)
    calls, texts = [], []

    def record(_, args, kwargs):  # noqa: ANN001, ANN202
        calls.append(tuple(args[0].shape[:2]))
        texts.append(kwargs["text_emb"].projected)  # prepared once per set of branches

    hook = pipe.dit.register_forward_pre_hook(record, with_kwargs=True)
    try:
        guided = pipe.generate(text, on, negative=neg, conditions=[first, key])
    finally:
        hook.remove()
    assert calls == [(2, 16), (1, 12)] * 3  # 12 video tokens, 4 of the keyframe; 3 steps
    with torch.no_grad():
        projected = pipe.dit.caption_projection(torch.cat([text.emb, text.emb, neg.emb]))
    torch.testing.assert_close(texts[0], projected[:2])  # cond and perturbed: the prompt
    torch.testing.assert_close(texts[1], projected[2:])  # the unconditional forward: the negative prompt
    plain = pipe.generate(text, CFG, negative=neg, conditions=[first, key])
    assert not torch.allclose(guided.latents, plain.latents)
    for conditions in ([], [first]):  # nothing to leave out
        a = pipe.generate(text, on, negative=neg, conditions=conditions)
        b = pipe.generate(text, CFG, negative=neg, conditions=conditions)
        assert torch.equal(a.latents, b.latents)
    no_cfg = dataclasses.replace(CFG, guidance=1.0)
    a = pipe.generate(text, dataclasses.replace(no_cfg, keyframe_guidance=True), conditions=[key])
    assert torch.equal(a.latents, pipe.generate(text, no_cfg, conditions=[key]).latents)


def test_callback_explicit_noise_and_schedules(pipe):
    text, neg = _text()
    seen = []
    noise = torch.randn(1, 16, 3, 2, 2)
    cfg = dataclasses.replace(CFG, timesteps=(1.0, 0.6, 0.2))
    a = pipe.generate(text, cfg, negative=neg, noise=noise, callback=lambda i, t, x: seen.append((i, t)))
    b = pipe.generate(text, dataclasses.replace(cfg, seed=99), negative=neg, noise=noise)
    assert [t for _, t in seen] == pytest.approx([1.0, 0.6, 0.2]) and a.timesteps == pytest.approx(
        [1.0, 0.6, 0.2]
    )
    torch.testing.assert_close(
        a.latents, b.latents
    )  # explicit noise decides, not the seed (no stochastic draws)
    assert pipe.schedule(dataclasses.replace(CFG, steps=8), 4) == pytest.approx(
        [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875], abs=1e-6
    )
    assert len(pipe.schedule(dataclasses.replace(CFG, steps=8, skip_initial_steps=3), 4)) == 5


def test_video_to_video_starts_from_init_latents(pipe):
    text, neg = _text()
    init = torch.randn(1, 16, 3, 2, 2)
    cfg = dataclasses.replace(CFG, timesteps=(0.3, 0.1))
    r = pipe.generate(text, cfg, negative=neg, init_latents=init)
    far = pipe.generate(text, cfg, negative=neg, init_latents=-init)
    assert (r.latents - init).norm() < (far.latents - init).norm()
    with pytest.raises(ValueError, match="pure noise"):
        pipe.generate(text, CFG, negative=neg, init_latents=init)


def test_multiscale_shapes(pipe):
    text, neg = _text()
    up = randomize_(
        LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)), 3
    )
    first = dataclasses.replace(CFG, width=160, height=96)
    second = dataclasses.replace(CFG, skip_initial_steps=1)
    r = pipe.generate_multiscale(text, first, second, up.eval(), negative=neg)
    assert r.video.shape == (1, 3, 17, 96, 160) and r.latents.shape == (
        1,
        16,
        3,
        4,
        6,
    )  # pass 1 at 64x96, pass 2 at 128x192
    # a size that is not a multiple of 32 runs at its padded size (160x96 here) and keeps the centre, as the
    # official inference pads and crops: the same passes, the same video inside the crop
    odd = pipe.generate_multiscale(
        text, dataclasses.replace(first, width=150, height=90), second, up.eval(), negative=neg
    )
    assert odd.latents.shape == r.latents.shape and odd.video.shape == (1, 3, 17, 90, 150)
    torch.testing.assert_close(odd.video, r.video[..., 3:93, 5:155])


class _RecordingEncoder:
    """Anything with encode(prompts, max_tokens) is a text encoder; this one records what it encodes."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def encode(self, prompts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.prompts += prompts
        g = torch.Generator().manual_seed(len(self.prompts))
        return torch.randn(len(prompts), 6, 32, generator=g), torch.ones(len(prompts), 6)


def test_multiscale_guidance_schedule_and_frame_rate(pipe):
    """The official 13B dev setup: scalar guidance 1 in both passes, CFG only in pass 1's per-step schedule:
    the negative prompt must still be encoded; pass 2 runs at the requested (first's) frame rate."""
    up = randomize_(
        LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)), 3
    )
    encoder = _RecordingEncoder()
    p = Pipeline(pipe.vae, pipe.dit, pipe.spec, text_encoder=encoder)
    first = dataclasses.replace(
        CFG, width=96, height=96, guidance=1.0, stg=0.0, frame_rate=30.0,
        guidance_timesteps=(1.0, 0.9), guidance_schedule=(1.0, 4.0),
    )  # fmt: skip
    second = dataclasses.replace(CFG, guidance=1.0, stg=0.0, skip_initial_steps=1)  # frame_rate 24
    rates: list[float] = []
    hook = p.dit.register_forward_pre_hook(
        lambda _m, _args, kwargs: rates.append(kwargs["frame_rate"]), with_kwargs=True
    )
    try:
        r = p.generate_multiscale("a cat", first, second, up.eval())
    finally:
        hook.remove()
    assert encoder.prompts == ["a cat", first.negative_prompt]
    assert r.frame_rate == 30.0 and set(rates) == {30.0}, rates


def test_guidance_until_runs_the_low_noise_steps_unguided(pipe):
    """CFG + STG at the steps with t >= guidance_until (three branches in one forward), the conditional branch
    alone below it; the same video as the per-step schedule that says so."""
    text, neg = _text()
    cfg = dataclasses.replace(CFG, steps=4, guidance_until=0.9)
    ts = sampling.schedule(pipe.spec.scheduler, cfg, 12)
    rows: list[int] = []
    key = Condition(torch.rand(1, 3, 1, 64, 64) * 2 - 1, 16, 1.0)  # keyframe guidance: guided at every step
    hook = pipe.dit.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        until = pipe.generate(text, cfg, negative=neg)
        assert rows == [3 if t >= 0.9 else 1 for t in ts] and 1 in rows and 3 in rows, (rows, ts)
        rows.clear()
        pipe.generate(text, dataclasses.replace(cfg, keyframe_guidance=True), negative=neg, conditions=[key])
        assert rows == [2, 1] * len(ts)  # [cond, perturbed] and the unconditional branch apart, every step
        rows.clear()
        pipe.generate(text, cfg, negative=neg, conditions=[key])  # keyframes without keyframe guidance
        assert rows == [3 if t >= 0.9 else 1 for t in ts]
    finally:
        hook.remove()
    scheduled = dataclasses.replace(
        CFG, steps=4, guidance_timesteps=(0.9, 0.0), guidance_schedule=(CFG.guidance, 1.0),
        stg_schedule=(CFG.stg, 0.0),
    )  # fmt: skip
    torch.testing.assert_close(until.video, pipe.generate(text, scheduled, negative=neg).video)
    assert not torch.equal(
        until.video, pipe.generate(text, dataclasses.replace(cfg, guidance_until=0.0), negative=neg).video
    )


def test_offload_and_tiling_options_run(pipe):
    text, neg = _text()
    plain = pipe.generate(text, CFG, negative=neg)
    off = Pipeline(pipe.vae, pipe.dit, pipe.spec, offload=True)
    torch.testing.assert_close(off.generate(text, CFG, negative=neg).video, plain.video)
    tiled = pipe.generate(text, dataclasses.replace(CFG, vae_tiling=True), negative=neg)
    torch.testing.assert_close(tiled.video, plain.video)  # fits in one tile: exactly the untiled decode


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"stg_blocks": (7,)}, "STG blocks"),
        ({"width": 0}, "width"),
        ({"num_frames": 5000}, "too large"),
        ({"stg_mode": "bogus"}, "stg_mode"),
        ({"guidance_schedule": (3.0,)}, "guidance_schedule"),
        ({"skip_initial_steps": 3}, "leaves none"),
    ],
)
def test_bad_settings_are_clear_errors(pipe, change, match):
    text, neg = _text()
    with pytest.raises(ValueError, match=match):
        pipe.generate(text, dataclasses.replace(CFG, **change), negative=neg)


def test_conditions_are_validated(pipe):
    text, neg = _text()
    with pytest.raises(ValueError, match="strength"):
        Condition(torch.zeros(1, 3, 1, 64, 64), 0, 0.0)
    with pytest.raises(ValueError, match="multiple of 8"):
        pipe.generate(text, CFG, negative=neg, conditions=[Condition(torch.zeros(1, 3, 9, 64, 64), 4)])
    with pytest.raises(ValueError, match="negative"):
        pipe.generate(text, CFG)
    with pytest.raises(ValueError, match="text encoder"):
        pipe.generate("a prompt", CFG)


def test_condition_media_and_prompts_of_the_wrong_kind_are_named(pipe):
    with pytest.raises(ValueError, match=r"float in \[-1, 1\], got torch.uint8; from 0-255: x / 127.5 - 1"):
        Condition(torch.zeros(1, 3, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"in \[-1, 1\], got values in \[0, 255\]"):
        Condition(torch.full((1, 3, 1, 64, 64), 255.0).index_fill_(-1, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"an image \(3, H, W\) is media\[None, :, None\]"):
        Condition(torch.zeros(3, 64, 64))
    text, neg = _text()
    pair = Condition(torch.zeros(2, 3, 1, 64, 64))  # a batch of 2 for a batch-1 generation
    with pytest.raises(ValueError, match="a batch of 2; this generation's batch is 1"):
        pipe.generate(text, CFG, negative=neg, conditions=[pair])
    with pytest.raises(ValueError, match="non-empty list of strings, got \\[\\]"):
        pipe.generate([], CFG)
    with pytest.raises(ValueError, match="LoRA scale must be a finite number, got nan"):
        pipe.load_lora("unused.safetensors", float("nan"))


def test_a_condition_past_the_last_frame_names_it(pipe):
    text, neg = _text()
    with pytest.raises(ValueError, match=r"frame 500: the video has frames 0\.\.16"):
        pipe.generate(text, CFG, negative=neg, conditions=[Condition(torch.zeros(1, 3, 1, 64, 64), 500)])
    clip = Condition(torch.zeros(1, 3, 97, 64, 64), 24)  # a long clip: was trimmed to a misleading length
    with pytest.raises(ValueError, match="frame 24: the video has"):
        pipe.generate(text, CFG, negative=neg, conditions=[clip])
    ten = dataclasses.replace(CFG, num_frames=10)  # padded to 17: frame 12 would be generated, then cropped
    with pytest.raises(ValueError, match=r"frame 12: the video has frames 0\.\.9"):
        pipe.generate(text, ten, negative=neg, conditions=[Condition(torch.zeros(1, 3, 1, 64, 64), 12)])


def test_a_schedule_that_collapses_in_float32_is_refused(pipe):
    no_terminal = Pipeline(
        pipe.vae, pipe.dit, dataclasses.replace(pipe.spec, scheduler=SchedulerConfig("sd3", None))
    )
    with pytest.raises(ValueError, match="repeated timesteps"):
        no_terminal.schedule(dataclasses.replace(CFG, steps=4), 10**8)  # every step at t = 1.0
    terminal = Pipeline(
        pipe.vae, pipe.dit, dataclasses.replace(pipe.spec, scheduler=SchedulerConfig("sd3", 0.1))
    )
    assert terminal.schedule(dataclasses.replace(CFG, steps=4), 10**8)[-1] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("device", "match"),
    [("foo", "use cpu, cuda, cuda:N"), ("meta", "use cpu"), ("cuda:x", "use cpu"), (7.5, "use cpu")],
)
def test_bad_devices_are_named(device, match):
    with pytest.raises(ValueError, match=rf"device '.*' \(--device\): {match}"):
        resolve_device(device)


def test_unavailable_cuda_is_said_plainly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        resolve_device("cuda")
    assert resolve_device(None) == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


def test_a_text_encoder_of_another_width_is_refused(pipe):
    class Wide(_RecordingEncoder):
        hidden_size = 64  # the tiny transformer takes 32

    with pytest.raises(ValueError, match="64-d embeddings .* caption_channels=32"):
        Pipeline(pipe.vae, pipe.dit, pipe.spec, text_encoder=Wide())


def test_chain_continues_each_segment_from_the_last_frames_of_the_one_before(pipe, monkeypatch):
    """Three segments of 17 frames with an overlap of 9: 17 + 2 * 8 frames; each later segment is conditioned
    at frame 0 on the 9 last frames of the one before (padded as --condition pads), with its own prompt; the
    first segment is exactly generate()'s video for the same seed."""
    from ltxv.config import ChainConfig

    texts = {p: _text(i)[0] for i, p in enumerate(("a", "b"))}
    encoded = []
    monkeypatch.setattr(pipe, "encode_text", lambda prompts, _: encoded.append(prompts) or texts[prompts[0]])
    cfg = dataclasses.replace(CFG, guidance=1.0, stg=0.0, width=60)  # padded to 64, cropped back
    calls = []
    plain_generate = pipe.generate

    def spy(prompt, config, **kw):
        calls.append((prompt, kw["conditions"]))
        return plain_generate(prompt, config, **kw)

    monkeypatch.setattr(pipe, "generate", spy)
    chain = ChainConfig(overlap=9, overlap_strength=0.8, adain=0.0)
    r = pipe.generate_chain(["a", "b", "b"], cfg, chain)
    assert r.video.shape == (1, 3, 33, 64, 60) and r.seed == 5 and len(r.timesteps) == 9
    names = {id(emb): name for name, emb in texts.items()}
    assert [names[id(p)] for p, _ in calls] == ["a", "b", "b"] and calls[0][1] == ()
    assert encoded == [["a"], ["b"]]  # each prompt encoded once (guidance 1: no negative prompt)
    # segment 2's first 9 frames redraw its condition and are dropped: its tail's last 8 frames are kept
    for (_, conditions), kept in zip(calls[1:], (r.video[:, :, 8:17], r.video[:, :, 17:25]), strict=True):
        (cond,) = conditions
        assert (cond.frame, cond.strength) == (0, 0.8) and cond.media.shape == (1, 3, 9, 64, 64)
        n = kept.shape[2]
        torch.testing.assert_close(cond.media[:, :, -n:, :, 2:62], kept * 2 - 1)  # the centre: the video
        assert cond.media[..., :2].abs().max() == 0  # the padding (0 = mid-grey)
    monkeypatch.setattr(pipe, "generate", plain_generate)
    assert torch.equal(r.video[:, :, :17], pipe.generate("a", cfg).video)
    chunks = []  # on_frames: each segment's new frames as they are made, nothing gathered
    again = pipe.generate_chain(["a", "b", "b"], cfg, chain, on_frames=chunks.append)
    assert again.video is None and [c.shape[2] for c in chunks] == [17, 8, 8]
    assert again.seconds == r.seconds == 33 / cfg.frame_rate  # the frames streamed
    assert torch.equal(torch.cat(chunks, dim=2), r.video)  # one seed reproduces the whole chain


def test_chain_adain_matches_the_first_segments_statistics(pipe, monkeypatch):
    from ltxv.config import ChainConfig

    text, _ = _text()
    monkeypatch.setattr(pipe, "encode_text", lambda prompts, _: text)
    cfg = dataclasses.replace(CFG, guidance=1.0, stg=0.0)
    first = pipe.generate_chain(["a"], cfg).latents
    free = pipe.generate_chain(["a", "a"], cfg, ChainConfig(adain=0.0)).latents
    matched = pipe.generate_chain(["a", "a"], cfg, ChainConfig(adain=1.0)).latents
    stats = [torch.std_mean(x, dim=(2, 3, 4)) for x in (first, free, matched)]
    torch.testing.assert_close(stats[2], stats[0], atol=1e-4, rtol=1e-4)  # per channel: std and mean
    assert not torch.allclose(stats[1][0], stats[0][0], atol=1e-2)  # without AdaIN they differ


@pytest.mark.parametrize(
    ("prompts", "chain", "match"),
    [
        ([], {}, "non-empty list of prompts"),
        ("ab", {}, "non-empty list of prompts"),
        (["a", "b"], {"overlap": 17}, "overlap 17 leaves no new frames in a 17-frame segment: use at most 9"),
    ],
)
def test_bad_chains_are_clear_errors(pipe, prompts, chain, match):
    from ltxv.config import ChainConfig

    with pytest.raises(ValueError, match=match):
        pipe.generate_chain(prompts, CFG, ChainConfig(**chain))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"overlap": 4}, "overlap must be 1 or 8k\\+1"),
        ({"overlap_strength": 0.0}, "overlap_strength must be a finite number in \\(0, 1\\], got 0.0"),
        (
            {"overlap_strength": float("nan")},
            "overlap_strength must be a finite number in \\(0, 1\\], got nan",
        ),
        ({"adain": float("nan")}, "adain must be a finite number in \\[0, 1\\]"),
    ],
)
def test_bad_chain_settings_are_named(fields, match):
    from ltxv.config import ChainConfig

    with pytest.raises(ValueError, match=match):
        ChainConfig(**fields)


def test_a_chain_of_multiscale_segments(pipe, monkeypatch):
    """multiscale=(second, upsampler, downscale): every segment is the two-pass pipeline; the first is
    exactly generate_multiscale's video for the same seed; padded sizes keep their centre."""
    from ltxv.config import ChainConfig

    text, _ = _text()
    monkeypatch.setattr(pipe, "encode_text", lambda prompts, _: text)
    up = randomize_(
        LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)), 3
    ).eval()
    first = dataclasses.replace(CFG, width=150, height=90, guidance=1.0, stg=0.0)
    second = dataclasses.replace(first, skip_initial_steps=1)
    r = pipe.generate_chain(["a", "a"], first, ChainConfig(overlap=9), multiscale=(second, up, 2 / 3))
    assert r.video.shape == (1, 3, 17 + 8, 90, 150) and r.latents.shape == (1, 16, 3, 4, 6)
    assert len(r.timesteps) == 2 * (3 + 2)  # two passes per segment
    alone = pipe.generate_multiscale("a", first, second, up, 2 / 3)
    assert torch.equal(r.video[:, :, :17], alone.video)
