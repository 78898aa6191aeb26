"""`ltxv generate` as a subprocess on a tiny model saved in every supported layout: mp4s with the requested
frame count, size and fps; image-to-video; bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import av
import pytest
import torch
from conftest import randomize_, tiny_random_models
from tiny_t5 import make_tiny_t5

from ltxv.media import write_video
from ltxv.weights import save_checkpoint

SMALL = ["--width", "64", "--height", "64", "--frames", "9", "--fps", "12", "--steps", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    spec, vae, dit = tiny_random_models()
    save_checkpoint(root / "native.safetensors", spec, vae, dit, "native")
    save_checkpoint(root / "ours.safetensors", spec, vae, dit, "ltxv")
    save_checkpoint(root / "diffusers", spec, vae, dit, "diffusers")
    make_tiny_t5(root / "diffusers", "root")  # text_encoder/ + tokenizer/ inside the diffusers root
    t5 = make_tiny_t5(root / "t5", "flat")
    write_video(root / "image.png", torch.rand(1, 3, 1, 64, 64), 1)
    write_video(root / "clip.mp4", torch.rand(1, 3, 9, 64, 80), 12)
    from safetensors.torch import save_file

    save_file(
        {
            "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(2, 16),
            "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(16, 2),
        },
        root / "lora.safetensors",
    )
    return root, t5


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ltxv", "generate", *args], capture_output=True, text=True, timeout=300
    )


def probe(path) -> tuple[int, int, int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return frames, s.height, s.width, float(s.average_rate)


@pytest.mark.parametrize("layout", ["native", "diffusers", "ours"])
def test_text_to_video_in_every_layout(models, layout, tmp_path):
    root, t5 = models
    model = {
        "native": root / "native.safetensors",
        "diffusers": root / "diffusers",
        "ours": root / "ours.safetensors",
    }
    te = [] if layout == "diffusers" else ["--text-encoder", str(t5)]
    out = tmp_path / "out.mp4"
    r = run("a red circle moving right", "--model", str(model[layout]), *te, *SMALL, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert probe(out) == (9, 64, 64, 12.0)
    assert str(out) in r.stdout and "realtime factor" in r.stdout and "seed 1" in r.stdout


def test_image_to_video_and_padding_notice(models, tmp_path):
    root, t5 = models
    out = tmp_path / "i2v.mp4"
    args = ["--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL]
    r = run(
        "the circle moves",
        *args,
        "--image",
        str(root / "image.png"),
        "--width",
        "70",
        "--height",
        "40",
        "--frames",
        "12",
        "--lora",
        f"{root / 'lora.safetensors'}:0.5",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert probe(out) == (12, 40, 70, 12.0) and "cropping to 70x40x12" in r.stderr
    assert "merged 1 LoRA layers" in r.stderr and "(scale 0.5)" in r.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "missing.safetensors"], "no such file"),
        (["--image", "missing.png"], "missing.png"),
        (["--frames", "0"], "--frames must be >= 1"),
        (["--steps", "100000000000"], "--steps 100000000000 is too large (max 1000)"),
        (["--condition", "nope"], "PATH@FRAME"),
        (["--stg-blocks", "9"], "STG blocks [9] do not exist in this 2-block transformer: use indices 0..1"),
        (["--text-encoder", "/nonexistent/t5"], "t5"),
        (["--guidance", "nan"], "--guidance must be a finite number in [0, 100], got nan"),
        (["--guidance", "-2"], "--guidance must be a finite number in [0, 100]"),
        (["--stg", "nan"], "--stg must be a finite number in [0, 100]"),
        (["--stg", "-1"], "--stg must be a finite number in [0, 100]"),
        (["--guidance", "1e308"], "--guidance must be a finite number in [0, 100], got 1e+308"),
        (["--timesteps", "0.2,0.5"], "--timesteps must be strictly decreasing; these neighbours are not"),
        (["--timesteps", "1.5,0.5"], "--timesteps values [1.5] are outside (0, 1]"),
        (["--stg", "1", "--rescale", "nan"], "--rescale must be a finite number in [0, 1]"),
        (["--decode-timestep", "5"], "--decode-timestep must be a finite number in [0, 1]"),
        (["--guidance-until", "2"], "--guidance-until must be a finite number in [0, 1], got 2"),
        (["--decode-noise", "100"], "--decode-noise must be a finite number in [0, 1]"),
        (["--cond-crf", "-1"], "--cond-crf must be in 0..51"),
        (["--stg-blocks", "-1"], "--stg-blocks must be transformer block indices"),
        (["--fps", "1e-9"], "--fps must be a finite number in [0.001, 1000]"),
        (["--device", "foo"], "device 'foo' (--device)"),
        (["--seed", "18446744073709551616"], "--seed must be in [0, 2**64 - 1]"),
        (["--max-tokens", "100000"], "--max-tokens must be in [0, 512]"),
        (["--skip-steps", "1"], "--skip-steps only applies with --video"),
        (["--downscale", "0.5"], "--downscale only applies with --upsampler"),
        (["--image-strength", "0.5"], "--image-strength only applies with --image"),
        (["--condition", "IMAGE@500"], "IMAGE@500: the video has frames 0..8 (-1 is the last)"),
        (["--frames", "10", "--condition", "IMAGE@12"], "the video has frames 0..9"),  # not in the padding
        (["--condition", "IMAGE@-10"], "@-10: the video has only 9 frames; use -1 .. -9 (from the end)"),
        (["--block-cache", "nan"], "block_cache threshold must be a number >= 0"),
        (["--lora", "x.safetensors:nan"], "the scale 'nan' is not a finite number"),
        (["--lora", "IMAGE:0,5"], "the scale '0,5' is not a number"),  # the path exists, the scale is wrong
        (["--lora", "nofile.safetensors"], "--lora 'nofile.safetensors': no such file; pass a LoRA"),
        (["--negative-prompt", "caf\udce9"], "--negative-prompt is not valid Unicode text (character 3"),
        (["--then", "b", "--overlap", "4"], "--overlap must be 1 or 8k+1 frames"),
        (
            ["--then", "b", "--overlap", "9"],
            "--overlap 9 leaves no new frames in a 9-frame segment: use at most 1",
        ),
        (["--overlap", "1"], "--overlap only applies to a chain of segments"),
        (["--segments", "0"], "--segments must be >= 1"),
        (["--then", "b", "--segments", "1"], "--segments 1 is fewer than the 2 prompts given"),
        (["--segments", "2", "--video", "IMAGE"], "--video does not combine with a chain of segments"),
        (["--video", "CLIP", "--skip-steps", "2"], "--skip-steps 2 of 2 steps leaves no step; use 1..1"),
        (
            ["--video", "CLIP", "--skip-steps", "0"],
            "leaves the video replaced by pure noise (t = 1); use 1..1",
        ),
        (["--video", "CLIP", "--steps", "1"], "--video needs 2 or more steps (--steps 1)"),
        (["--segments", "2", "--adain", "2"], "--adain must be a finite number in [0, 1], got 2.0"),
        (
            ["--segments", "2", "--overlap-strength", "0"],
            "--overlap-strength must be a finite number in (0, 1]",
        ),
        (["--segments", "2", "--frames", "1"], "--frames 1: a chain needs segments of 2 frames or more"),
        (["--num-videos", "0"], "--num-videos must be in 1..10000, got 0"),
        (["--num-videos", "100000000"], "--num-videos must be in 1..10000, got 100000000"),
        (["--num-videos", "2", "--out", "OUT.png"], "cannot write 9 frames to image"),
        (["--num-videos", "2", "--seed", str(2**64 - 1)], "passes the largest seed"),
        (["--segments", "2", "--condition", "IMAGE@20"], "in a chain, conditions apply to the first segment"),
    ],
)
def test_bad_input_exits_2(models, tmp_path, extra, message):
    root, t5 = models
    out = tmp_path / "bad.mp4"
    base = ["--model", str(root / "native.safetensors"), "--text-encoder", str(t5), *SMALL, "--out", str(out)]
    extra = [
        a.replace("IMAGE", str(root / "image.png"))
        .replace("CLIP", str(root / "clip.mp4"))
        .replace("OUT", str(tmp_path / "o"))
        for a in extra
    ]
    r = run("a prompt", *base, *extra)
    assert r.returncode == 2, r.stderr
    assert (
        message.replace("IMAGE", str(root / "image.png")) in r.stderr
        and "Traceback" not in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_text_encoder_is_explained(models, tmp_path):
    root, _ = models
    r = run("a prompt", "--model", str(root / "native.safetensors"), *SMALL, "--out", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and "--text-encoder" in r.stderr


def test_a_conditioning_clip_cut_to_fit_is_named(models, tmp_path):
    """A 9-frame clip at frame 8 of a 9-frame video: as the official inference, only its first frame fits
    (the longest 8k+1 prefix); a note says so."""
    root, t5 = models
    out = tmp_path / "cut.mp4"
    r = run("a prompt", "--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL,
            "--condition", f"{root / 'clip.mp4'}@8", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (
        f"note: --condition {root / 'clip.mp4'}@8: using its first 1 of 9 frames (8k+1 from frame 8)"
        in r.stderr
    )


def test_a_negative_condition_frame_counts_from_the_end(models):
    """--condition PATH@-1 is the requested video's last frame (padding aside), -N its first."""
    import argparse

    from ltxv.config import SampleConfig
    from ltxv.generate_cli import _conditions

    image = models[0] / "image.png"
    args = argparse.Namespace(
        image=None, image_strength=None, cond_crf=0, condition=[f"{image}@-1", f"{image}@-12:0.5"]
    )
    cfg = SampleConfig(width=60, height=64, num_frames=12)  # generated as 64 x 64, 17 frames
    placed = _conditions(args, cfg, (64, 64, 17))
    assert [(c.frame, c.strength) for c in placed] == [(11, 1.0), (0, 0.5)]


def test_video_to_video(models, tmp_path):
    root, t5 = models
    out = tmp_path / "v2v.mp4"
    r = run("the same clip", "--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL,
            "--video", str(root / "clip.mp4"), "--skip-steps", "1", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert probe(out) == (9, 64, 64, 12.0) and "step 1/1" in r.stderr  # 2 steps, the first skipped
    # the default skip (half the steps) counts --timesteps when given, not --steps
    timesteps = ["--steps", "20", "--timesteps", "0.9,0.5"]
    r = run("the same clip", "--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL,
            *timesteps, "--video", str(root / "clip.mp4"), "--out", str(out))  # fmt: skip
    assert r.returncode == 0 and "step 1/1" in r.stderr, r.stderr


def test_a_chain_of_segments_writes_one_long_video(models, tmp_path):
    """--then adds segments of --frames frames; each repeats --overlap frames of the one before (dropped).
    Padded sizes (60 wide, 12 frames per segment: generated as 64 x 17) report the frames written."""
    root, t5 = models
    out = tmp_path / "long.mp4"
    args = ["--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL, "--out", str(out)]
    more = ["--then", "a blue circle", "--segments", "3", "--adain", "0.5", "--width", "60", "--frames", "12"]
    r = run("a red circle", *args, *more, "--image", str(root / "image.png"))
    assert r.returncode == 0, r.stderr
    assert probe(out) == (12 + 2 * 11, 64, 60, 12.0) and "(34 frames" in r.stdout
    assert "realtime factor" in r.stdout and f"{34 / 12:.1f} s" in r.stderr  # the note on the chain's length
    assert "step 6/6" in r.stderr  # one progress count over every segment's steps


def test_several_videos_load_the_model_once_and_are_each_seeds_video(models, tmp_path):
    """--num-videos 2 --seed 1: out_0 (seed 1) and out_1, the video --seed 2 gives alone; one frame each, so
    that the files are lossless PNGs and the comparison exact (H.264 encodes are not bit-reproducible)."""
    from ltxv.media import read_image

    root, t5 = models
    args = ["--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL, "--frames", "1"]
    r = run("a red circle", *args, "--num-videos", "2", "--out", str(tmp_path / "out.mp4"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_0.png", "out_1.png"]
    assert "seed 1)" in r.stdout and "seed 2)" in r.stdout
    assert "(1 frame, 64x64, seed 1)" in r.stdout and "realtime" not in r.stdout  # an image has no frame rate
    alone = run("a red circle", *args, "--seed", "2", "--out", str(tmp_path / "alone.png"))
    assert alone.returncode == 0, alone.stderr
    second = read_image(tmp_path / "out_1.png")
    assert torch.equal(second, read_image(tmp_path / "alone.png"))
    assert not torch.equal(second, read_image(tmp_path / "out_0.png"))


def test_a_multiscale_chain(models, tmp_path):
    """--upsampler with --then: every segment is the two-pass pipeline (one progress count over all)."""
    from ltxv.upsampler import LatentUpsampler, UpsamplerConfig, save_upsampler

    root, t5 = models
    upsampler = tmp_path / "up.safetensors"
    config = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
    save_upsampler(upsampler, randomize_(LatentUpsampler(config), 3))
    out = tmp_path / "ms.mp4"
    args = ["--model", str(root / "ours.safetensors"), "--text-encoder", str(t5), *SMALL, "--out", str(out)]
    r = run("a red circle", *args, "--upsampler", str(upsampler), "--then", "a blue circle")
    assert r.returncode == 0, r.stderr
    assert probe(out) == (9 + 8, 64, 64, 12.0) and "(17 frames" in r.stdout
    assert "step 6/6" in r.stderr  # 2 first-pass steps + 1 second-pass step, per segment
    # a temporal upsampler, or one for other latents, is refused before the first pass
    wrong = tmp_path / "wrong.safetensors"
    for bad, message in (
        (
            dict(spatial_upsample=False, temporal_upsample=True),
            "not a spatial-only x2 upsampler (temporal: True)",
        ),
        (dict(in_channels=32), "made for 32-channel latents; this model's have 16"),
    ):
        save_upsampler(wrong, LatentUpsampler(dataclasses.replace(config, **bad)))
        r = run("a red circle", *args[:-2], "--out", str(tmp_path / "no.mp4"), "--upsampler", str(wrong))
        assert r.returncode == 2 and message in r.stderr and "step" not in r.stderr, r.stderr


def test_the_clock_is_the_programs_even_when_the_process_is_older(monkeypatch):
    """`pip install ... && ltxv generate ...` run by `bash -c` may hand the shell's own, older process to ltxv
    (exec of the last command): its start time would count the install too. Then the clock starts when the
    package began loading."""
    import time

    from ltxv import _clock, generate_cli

    monkeypatch.setattr(_clock, "STARTED", time.perf_counter() - 1.5)  # ltxv began loading 1.5 s ago
    monkeypatch.setattr(generate_cli, "_process_seconds", lambda: 1.6)  # the interpreter started 0.1 s before
    assert generate_cli.program_seconds() == 1.6
    monkeypatch.setattr(generate_cli, "_process_seconds", lambda: 50.0)  # the shell's process, 50 s old
    assert 1.5 <= generate_cli.program_seconds() < 2.0
    monkeypatch.setattr(generate_cli, "_process_seconds", lambda: None)  # no /proc
    assert 1.5 <= generate_cli.program_seconds() < 2.0
