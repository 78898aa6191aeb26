"""Tests for ltxv.judge (on clips rendered by synth, raw and after H.264) and the `ltxv eval` shapes suite."""

from __future__ import annotations

import argparse
import json
import math
import random

import pytest
import torch

from ltxv import evaluate, judge
from ltxv.data import synth
from ltxv.data.synth import BACKGROUNDS, EXCLUDED_PAIRS, MOTIONS, SHAPES, ClipSpec
from ltxv.media import read_video, write_video


@pytest.fixture(autouse=True)
def _one_thread():
    """The judge's small ops gain nothing from threads, and on a shared machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _specs() -> list[tuple[ClipSpec, int, int]]:
    """60 random clips + every (shape, motion) pair once, at sizes 64 / 128 and 9-25 frames; seeded."""
    rng = random.Random("test_judge")
    specs = synth.sample_specs(60, seed=3, split="all")
    for shape in SHAPES:
        for motion in MOTIONS:
            colour = rng.choice(list(synth.COLOURS))
            background = rng.choice([b for b in BACKGROUNDS if (colour, b) not in EXCLUDED_PAIRS])
            speed = "none" if motion == "static" else rng.choice(synth.MOVING_SPEEDS)
            size = round(rng.uniform(*synth.OBJECT_SIZE_RANGE), 4)
            start = (round(rng.random(), 4), round(rng.random(), 4))
            specs.append(ClipSpec(colour, shape, motion, speed, background, size, start))
    return [(s, rng.choice((64, 128)), rng.choice((9, 17, 25))) for s in specs]


def _expected(spec: ClipSpec) -> dict:
    return {a: getattr(spec, a) for a in judge.ATTRIBUTES}


def _accuracy(videos: list[tuple[torch.Tensor, ClipSpec]]) -> dict[str, float]:
    scores = [judge.score(judge.judge_video(v), _expected(s)) for v, s in videos]
    return {a: sum(s[a] for s in scores) / len(scores) for a in judge.ATTRIBUTES}


def test_judge_reads_rendered_clips():
    videos = [(synth.render_clip(s, size, frames)[0], s) for s, size, frames in _specs()]
    acc = _accuracy(videos)
    print(f"judge accuracy on {len(videos)} rendered clips: {acc}")
    assert acc["colour"] == acc["background"] == acc["motion"] == 1.0
    assert acc["shape"] >= 0.95


def test_judge_survives_h264(tmp_path):
    videos = []
    for i, (spec, size, frames) in enumerate(_specs()[::3]):  # every third clip: 25 H.264 round trips
        path = write_video(tmp_path / f"{i}.mp4", synth.render_clip(spec, size, frames), 24.0)
        videos.append(((read_video(path)[0][0] + 1) / 2, spec))
    acc = _accuracy(videos)
    print(f"judge accuracy on {len(videos)} H.264 clips: {acc}")
    assert min(acc.values()) >= 0.95


def test_measurements_match_placement():
    spec = ClipSpec("orange", "square", "down", "fast", "gray", 0.2, (0.3, 0.1))
    video = synth.render_clip(spec, 128, 17)[0]
    j = judge.judge_video(video)
    p = synth.place(spec, 128, 17)
    assert j.velocity == pytest.approx(p.velocity_xy, abs=0.02)
    for t in (0, 8, 16):
        assert j.centroids[t] == pytest.approx(p.centre(t), abs=0.05)
        assert j.areas[t] == pytest.approx(p.object_px**2, rel=0.01)
    assert j.fill == pytest.approx(1.0, abs=0.01)
    assert j.colour_rgb == pytest.approx(synth.COLOURS["orange"], abs=1e-3)
    assert j.background_rgb == pytest.approx(BACKGROUNDS["gray"], abs=1e-3)


def test_centroid_errors_give_the_keyframe_sections_end_error():
    """judge.centroid_errors(...)[-1], the keyframe section's end error: 0 against the clip itself; against
    the clip ending at another frame, how far the object moved between those frames; None when a video shows
    no object."""
    spec = ClipSpec("orange", "square", "down", "fast", "gray", 0.2, (0.3, 0.1))
    clip = synth.render_clip(spec, 128, 17)
    p = synth.place(spec, 128, 17)
    assert judge.centroid_errors(clip, clip)[-1] == pytest.approx(0.0, abs=1e-6)
    expected = math.dist(p.centre(12), p.centre(16))
    ends_early = torch.cat([clip[:, :, :16], clip[:, :, 12:13]], 2)  # its last frame is frame 12
    assert judge.centroid_errors(ends_early, clip)[-1] == pytest.approx(expected, abs=0.1)
    with pytest.raises(ValueError, match="equal frame counts, got 13 and 17"):
        judge.centroid_errors(clip[:, :, :13], clip)
    assert expected > 5
    assert judge.centroid_errors(torch.full_like(clip, 0.5), clip)[-1] is None


def test_segment_drops_specks_and_noise():
    spec = ClipSpec("blue", "circle", "right", "slow", "white", 0.25, (0.0, 0.5))
    video = synth.render_clip(spec, 64, 9)[0]
    clean = judge.segment(video, judge.estimate_background(video))
    noisy = video.clone()
    noisy[:, :, 2, 60] = 0.0  # a one-pixel speck in every frame, far from the object
    noisy = (noisy + 0.03 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    mask = judge.segment(noisy, judge.estimate_background(noisy))
    assert not mask[:, 2, 60].any()
    assert (mask ^ clean).sum() <= 0.05 * clean.sum()
    assert judge.judge_video(noisy).motion == "right"


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_blank_video_has_no_object(value):
    j = judge.judge_video(torch.full((3, 9, 64, 64), value))
    assert not j.found and j.colour is None
    assert j.background == {0.0: "black", 0.5: "gray", 1.0: "white"}[value]
    assert judge.score(j, {"colour": "red", "shape": "circle", "background": j.background}) == {
        "colour": False,
        "shape": False,
        "background": False,
    }


def test_judge_copes_with_noise_video():
    """A generated video may be anything: the judge still answers, with finite measurements."""
    j = judge.judge_video(torch.rand(3, 9, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert j.found and j.shape in SHAPES and j.motion in MOTIONS and j.colour in synth.COLOURS
    values = [*j.velocity, j.fill, j.skew, *j.areas] + [x for c in j.centroids if c is not None for x in c]
    assert all(math.isfinite(x) for x in values)


def test_temporal_consistency():
    spec = ClipSpec("green", "triangle", "left", "slow", "black", 0.2, (1.0, 0.5))
    video = synth.render_clip(spec, 64, 17)[0]
    mask = judge.segment(video, judge.estimate_background(video))
    steady = judge.temporal_consistency(video, mask)
    assert steady["found"] == 1.0 and steady["colour_std"] < 0.005 and steady["area_cv"] < 0.05
    flicker = video.clone()
    flicker[:, ::2] = torch.where(
        mask[None, ::2], flicker[:, ::2] * 0.7, flicker[:, ::2]
    )  # darker every other
    assert judge.temporal_consistency(flicker, mask)["colour_std"] > 0.02
    empty = judge.temporal_consistency(video, torch.zeros_like(mask))
    assert empty == {"found": 0.0, "area_cv": None, "colour_std": None}


def test_psnr():
    a = torch.zeros(3, 2, 16, 16)
    assert judge.psnr(a, a) == math.inf
    assert judge.psnr(a, a + 0.1) == pytest.approx(20.0)  # mse 0.01
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    assert judge.psnr(a + 0.5, a + 0.5 + 0.01 * noise) > judge.psnr(a + 0.5, a + 0.5 + 0.1 * noise)


def test_ssim():
    video = synth.render_clip(ClipSpec("red", "circle", "up", "fast", "gray", 0.25, (0.5, 1.0)), 64, 9)[0]
    assert judge.ssim(video, video) == pytest.approx(1.0)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(0))
    mild, strong = judge.ssim(video, video + 0.02 * noise), judge.ssim(video, video + 0.2 * noise)
    assert 1.0 > mild > strong
    # constant frames: sigma = 0, so SSIM is the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert judge.ssim(torch.full((3, 1, 16, 16), a), torch.full((3, 1, 16, 16), b)) == pytest.approx(expected)


# the `ltxv eval --suite shapes` command --------------------------------------------------------------
def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_eval_requires_model(monkeypatch, tmp_path):
    from ltxv import demo

    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "nothing")  # a checkout without the bundled model
    with pytest.raises(ValueError, match="--model"):
        evaluate.run(_args())
    with pytest.raises(ValueError, match="8k\\+1"):
        evaluate.ShapesEval(model="m", frames=10)
    with pytest.raises(ValueError, match="guidance must be a finite number >= 1"):
        evaluate.ShapesEval(model="m", guidance=0.5)
    for bad in (3.0, float("nan")):
        with pytest.raises(ValueError, match=r"guidance_until must be a finite number in \[0, 1\]"):
            evaluate.ShapesEval(model="m", guidance_until=bad)


def test_eval_splits(tmp_path):
    from ltxv.data import synth

    held = {tuple(c) for c in synth.HOLDOUT_COMBOS}
    for split, n in (("holdout", 3), ("train", 5)):
        cfg = evaluate.ShapesEval(model="m", clips=n, size=32, frames=9, seed=5, split=split)
        clips = evaluate.eval_clips(cfg, tmp_path / split)
        triples = {(r["colour"], r["shape"], r["motion"]) for r, _ in clips}
        assert len(clips) == n and all(v.shape == (1, 3, 9, 32, 32) for _, v in clips)
        assert triples <= held if split == "holdout" else not triples & held
    with pytest.raises(ValueError, match="split"):
        evaluate.ShapesEval(model="m", split="test")


def test_shape_accuracy_is_per_shape_asked_for():
    def row(shape: str, right: bool) -> dict:
        return {"shape": shape, "t2v": {"score": {"shape": right, "colour": True}}}

    rows = [row("square", False), row("square", True), row("circle", True), row("square", False)]
    assert evaluate._accuracy_by_shape(rows, "t2v") == {"circle": 1.0, "square": pytest.approx(1 / 3)}


def test_shape_fill_is_the_median_per_shape_asked_for():
    def row(shape: str, fill: float | None) -> dict:
        return {"shape": shape, "t2v": {"fill": fill}}

    rows = [row("square", 0.86), row("square", 0.95), row("square", 0.90), row("circle", None)]
    assert evaluate._fill_by_shape(rows, "t2v") == {"circle": None, "square": pytest.approx(0.90)}


def _numbers(value) -> list:  # noqa: ANN001 - any JSON value
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_eval_shapes_end_to_end(tmp_path, capsys):
    from tiny_t5 import make_tiny_t5

    from ltxv.dit.model import VideoDiT
    from ltxv.presets import get_preset
    from ltxv.vae.model import VideoVAE
    from ltxv.weights import save_checkpoint

    torch.manual_seed(0)
    spec = get_preset("tiny")
    save_checkpoint(tmp_path / "tiny.safetensors", spec, vae=VideoVAE(spec.vae), dit=VideoDiT(spec.dit))
    make_tiny_t5(tmp_path / "t5", "flat")
    out = tmp_path / "report" / "eval.json"
    args = _args(
        model=str(tmp_path / "tiny.safetensors"), text_encoder=str(tmp_path / "t5"), clips=2, size=64
    )
    args.frames, args.steps, args.guidance, args.json_out = 9, 2, 2.5, str(out)
    args.keyframe_guidance = True
    assert evaluate.run(args) == 0
    printed = capsys.readouterr().out
    assert "t2v.accuracy.colour" in printed and "sampling.guidance" in printed
    report = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temporary file left
    assert report["reference"]["accuracy"]["all"] == 1.0  # the judge reads the rendered references
    assert report["sampling"]["steps"] == 2 and report["sampling"]["guidance"] == 2.5
    assert report["sampling"]["keyframe_guidance"] is True  # a bare file's default (False) overridden
    for section, keys in {
        "vae": ("psnr", "ssim", "accuracy"),
        "t2v": ("accuracy", "found"),
        "i2v": ("first_frame_psnr", "accuracy"),
        "keyframes": ("last_frame_psnr", "end_error_px", "accuracy"),
        "temporal": ("area_cv", "colour_std", "found"),
        "speed": ("seconds_per_video", "realtime_factor"),
    }.items():
        assert set(keys) <= set(report[section]), section
    assert set(report["t2v"]["accuracy"]) == {"colour", "shape", "motion", "background", "all"}
    for section in ("vae", "t2v", "i2v"):  # per shape asked for: the clips' shapes, each a share in [0, 1]
        by_shape = report[section]["shape_accuracy"]
        assert set(by_shape) == {c["shape"] for c in report["clips"]}
        assert all(0 <= v <= 1 for v in by_shape.values())
    for section in ("reference", "vae", "t2v", "i2v"):  # median fill ratio per shape asked for
        fills = report[section]["shape_fill"]
        assert set(fills) == {c["shape"] for c in report["clips"]}
        assert all(v is None or 0 < v <= 1 for v in fills.values())
    for c in report["clips"]:  # the rendered clips: each shape's fill on its side of the judge's cut
        assert (c["reference"]["fill"] > judge.SQUARE_FILL) == (c["shape"] == "square"), c["caption"]
    assert len(report["clips"]) == 2 and report["clips"][0]["caption"].endswith("background")
    for key in ("psnr", "ssim"):
        assert math.isfinite(report["vae"][key])
    assert math.isfinite(report["i2v"]["first_frame_psnr"]) and report["speed"]["realtime_factor"] > 0
    assert math.isfinite(report["keyframes"]["last_frame_psnr"])
    assert all(math.isfinite(x) for x in _numbers(report))
