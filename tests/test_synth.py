"""Tests for ltxv.data.synth: captions, motion, placement, colours, determinism, held-out split, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltxv.data import synth
from ltxv.data.synth import (
    BACKGROUNDS,
    COLOURS,
    EXCLUDED_PAIRS,
    HOLDOUT_COMBOS,
    MOTIONS,
    OBJECT_SIZE_RANGE,
    SHAPES,
    ClipSpec,
    caption,
    combos,
    place,
    render_clip,
    sample_specs,
)


def _object_mask(video: torch.Tensor, background: str) -> torch.Tensor:
    """(1, 3, F, S, S) -> (F, S, S) bool: pixels whose largest channel difference from the background > 0.25
    (every allowed colour differs from its background by >= 0.5 in some channel)."""
    bg = torch.tensor(BACKGROUNDS[background]).view(3, 1, 1, 1)
    return (video[0] - bg).abs().amax(dim=0) > 0.25


def _coverage(video: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """(1, 3, F, S, S) -> (F, S, S): the object's share of each pixel, read off the background difference in
    the channel where object and background differ most (video = bg + (colour - bg) * coverage)."""
    bg, rgb = torch.tensor(BACKGROUNDS[spec.background]), torch.tensor(COLOURS[spec.colour])
    c = (rgb - bg).abs().argmax()
    return (video[0, c] - bg[c]) / (rgb[c] - bg[c])


def _centroids(weights: torch.Tensor) -> torch.Tensor:
    """(F, S, S) weights -> (F, 2) weighted centroid (x, y), pixel centres at i + 0.5."""
    s = weights.shape[-1]
    coords = torch.arange(s, dtype=torch.float64) + 0.5
    weights = weights.double()
    area = weights.sum(dim=(1, 2))
    x = (weights.sum(dim=1) * coords).sum(dim=1) / area
    y = (weights.sum(dim=2) * coords).sum(dim=1) / area
    return torch.stack([x, y], dim=1)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    return parser.parse_args(argv)


def _first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# captions ---------------------------------------------------------------------------------------------
def test_caption_grammar_moving_and_static():
    moving = ClipSpec("red", "circle", "left", "fast", "black")
    still = ClipSpec("blue", "triangle", "static", "none", "gray")
    assert caption(moving) == "a red circle moving left on a black background"
    assert caption(still) == "a blue triangle standing still on a gray background"
    orange = ClipSpec("orange", "square", "up", "slow", "white")
    assert caption(orange) == "an orange square moving up on a white background"
    for spec in sample_specs(60, seed=3):
        action = "standing still" if spec.motion == "static" else f"moving {spec.motion}"
        assert f"{spec.colour} {spec.shape} {action} on a {spec.background} background" in caption(spec)


def test_partial_captions_leave_out_the_named_phrases():
    moving = ClipSpec("orange", "square", "up", "slow", "white")
    still = ClipSpec("blue", "circle", "static", "none", "gray")
    assert caption(moving, ("colour",)) == "a square moving up on a white background"
    assert caption(moving, ("motion",)) == "an orange square on a white background"
    assert caption(still, ("motion",)) == "a blue circle on a gray background"
    assert caption(still, ("colour", "motion")) == "a circle on a gray background"
    assert caption(still, ()) == caption(still)
    with pytest.raises(ValueError, match="leave_out must be one of colour, motion; got 'shape'"):
        caption(still, ("shape",))


# motion and placement ---------------------------------------------------------------------------------
@pytest.mark.parametrize("speed", ["slow", "fast"])
@pytest.mark.parametrize("motion", ["left", "right", "up", "down"])
def test_centroid_moves_in_direction_by_speed(motion, speed):
    size, frames = 64, 17
    spec = ClipSpec("yellow", "triangle", motion, speed, "gray", object_size=0.2, start=(0.3, 0.7))
    video = render_clip(spec, size, frames)
    mask = _object_mask(video, "gray")
    xy = _centroids(_coverage(video, spec))
    assert (_centroids(mask) - xy).abs().max() < 0.6  # the thresholded object is where the coverage says
    step = {"slow": 0.5, "fast": 1.0}[speed]  # documented: 1 and 2 px/frame at 128 px, scaled to 64 px
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[motion]  # y points down
    moved = xy[-1] - xy[0]
    assert moved[0].item() == pytest.approx(dx * step * (frames - 1), abs=0.1)
    assert moved[1].item() == pytest.approx(dy * step * (frames - 1), abs=0.1)
    per_frame = (xy[1:] - xy[:-1]) @ torch.tensor([dx, dy], dtype=torch.float64)  # along the motion
    assert (per_frame - step).abs().max() < 0.1  # every frame, not only the ends
    assert mask[:, 0].sum() + mask[:, -1].sum() + mask[:, :, 0].sum() + mask[:, :, -1].sum() == 0


def test_objects_stay_fully_inside_the_frame():
    """Area is conserved (nothing clipped) for random specs and the extreme corners, at the longest length."""
    size, frames = 64, synth.max_frames()
    corners = [
        ClipSpec("white", "square", m, "fast", "black", OBJECT_SIZE_RANGE[1], (u, v))
        for m in ("left", "right", "up", "down")
        for u, v in ((0.0, 0.0), (1.0, 1.0))
    ]
    for spec in corners + sample_specs(24, seed=7):
        area = _coverage(render_clip(spec, size, frames), spec).sum(dim=(1, 2))  # (F,)
        assert (area - area[0]).abs().max() < 1e-3 * area[0], spec
        p = place(spec, size, frames)
        for t in (0, frames - 1):
            for c in p.centre(t):
                assert p.object_px / 2 - 1e-6 <= c <= size - p.object_px / 2 + 1e-6, (spec, t)


def test_static_object_stays_still():
    spec = ClipSpec("green", "circle", "static", "none", "black", object_size=0.2, start=(0.2, 0.9))
    video = render_clip(spec, 64, 9)
    assert torch.equal(video, video[:, :, :1].expand_as(video))
    assert _object_mask(video, "black")[0].sum() > 0


def test_clip_that_cannot_fit_raises():
    spec = ClipSpec("red", "square", "right", "fast", "black", object_size=0.25)
    with pytest.raises(ValueError, match="does not fit.*at most 49 frames"):
        render_clip(spec, 64, 50)


# colours ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_object_has_its_named_colour_and_never_the_background(shape):
    for colour, rgb in COLOURS.items():
        for background, bg_rgb in BACKGROUNDS.items():
            if (colour, background) in EXCLUDED_PAIRS:
                with pytest.raises(ValueError, match="excluded"):
                    ClipSpec(colour, shape, "static", "none", background)
                continue
            assert max(abs(a - b) for a, b in zip(rgb, bg_rgb, strict=True)) >= 0.5
            frame = render_clip(ClipSpec(colour, shape, "static", "none", background), 64, 1)[0, :, 0]
            pixels = frame.reshape(3, -1).T  # (S*S, 3)
            is_colour = (pixels == torch.tensor(rgb)).all(dim=1)
            is_background = (pixels == torch.tensor(bg_rgb)).all(dim=1)
            assert is_colour.sum() > 0.3 * (0.2 * 64) ** 2, (colour, background)  # the interior
            assert is_background.sum() > 0.5 * 64**2
    assert ("white", "white") in EXCLUDED_PAIRS
    for spec in sample_specs(300, seed=0):
        assert spec.colour != spec.background and (spec.colour, spec.background) not in EXCLUDED_PAIRS


# determinism ------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_dataset(tmp_path):
    for name in ("a", "b", "c"):
        seed = "2" if name == "c" else "1"
        args = _parse([str(tmp_path / name), "--clips", "3", "--size", "32", "--frames", "9", "--seed", seed])
        assert synth.run(args) == 0
    captions = {n: (tmp_path / n / "captions.jsonl").read_bytes() for n in "abc"}
    assert captions["a"] == captions["b"]
    assert captions["a"] != captions["c"]
    for line in captions["a"].decode().splitlines():
        media = json.loads(line)["media_path"]
        assert np.array_equal(_first_frame(tmp_path / "a" / media), _first_frame(tmp_path / "b" / media))
    assert sample_specs(20, seed=5) == sample_specs(20, seed=5)
    assert sample_specs(20, seed=5, speeds=("fast", "slow")) == sample_specs(20, seed=5)
    assert sample_specs(20, seed=5) != sample_specs(20, seed=6)
    spec = sample_specs(1, seed=5)[0]
    assert torch.equal(render_clip(spec, 64, 9), render_clip(spec, 64, 9))


# held-out combinations --------------------------------------------------------------------------------
def test_holdout_combos_never_in_train_and_all_in_holdout():
    held = set(HOLDOUT_COMBOS)
    assert len(held) == 8
    train = sample_specs(500, seed=0, split="train")
    assert not {(s.colour, s.shape, s.motion) for s in train} & held
    assert {(s.colour, s.shape, s.motion) for s in sample_specs(8, seed=0, split="holdout")} == held
    train_combos = set(combos("train"))
    assert train_combos == set(combos("all")) - held
    assert {(s.colour, s.shape, s.motion) for s in train} == train_combos  # balanced: all seen
    for colour, shape, motion in HOLDOUT_COMBOS:  # each part, and each (colour, shape), is still trained on
        assert any(c == colour and s == shape for c, s, _ in train_combos)
        assert any(m == motion for _, _, m in train_combos)
    assert {c for c, _, _ in HOLDOUT_COMBOS} == set(COLOURS) and {m for _, _, m in HOLDOUT_COMBOS} == set(
        MOTIONS
    )


def test_cli_holdout_writes_separate_split(tmp_path):
    args = _parse(
        [str(tmp_path), "--clips", "20", "--size", "32", "--frames", "1", "--seed", "0", "--holdout"]
    )
    assert synth.run(args) == 0
    train = [json.loads(x) for x in (tmp_path / "captions.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (tmp_path / "holdout.jsonl").read_text().splitlines()]
    assert len(train) == 20 and {r["split"] for r in train} == {"train"}
    assert {(r["colour"], r["shape"], r["motion"]) for r in held} == set(HOLDOUT_COMBOS)
    assert not {(r["colour"], r["shape"], r["motion"]) for r in train} & set(HOLDOUT_COMBOS)
    assert all((tmp_path / r["media_path"]).is_file() for r in train + held)
    assert synth.spec_from_record(held[0]) == sample_specs(8, seed=0, split="holdout")[0]


def _partial_flags(clips: int) -> list[str]:
    """`ltxv data synth` flags: a held-out split and partial captions, 1-frame 32 px clips, seed 5."""
    return ["--clips", str(clips), "--size", "32", "--frames", "1", "--seed", "5"] + [
        "--holdout",
        "--partial-captions",
    ]


def test_cli_partial_captions_list_each_training_clip_again(tmp_path):
    flags = _partial_flags(30)
    assert synth.run(_parse([str(tmp_path / "a"), *flags])) == 0
    rows = [json.loads(x) for x in (tmp_path / "a" / "captions.jsonl").read_text().splitlines()]
    full, partial = rows[:30], rows[30:]
    assert len(partial) == 30 and not any("leaves_out" in r for r in full)
    assert [r["media_path"] for r in partial] == [r["media_path"] for r in full]  # no new videos
    assert len(list((tmp_path / "a" / "videos").iterdir())) == 30
    for whole, part in zip(full, partial, strict=True):
        assert part["caption"] == caption(synth.spec_from_record(whole), part["leaves_out"])
        assert part["caption"] != whole["caption"] and whole["shape"] in part["caption"]
        assert (whole["colour"] in part["caption"]) == ("colour" not in part["leaves_out"])
        assert {k: v for k, v in part.items() if k != "leaves_out"} == whole | {"caption": part["caption"]}
    assert {tuple(r["leaves_out"]) for r in partial} == set(synth.LEAVE_OUTS)  # 30 draws: each one appears
    held = (tmp_path / "a" / "holdout.jsonl").read_text().splitlines()
    assert len(held) == 8 and "leaves_out" not in held[0]  # the held-out split keeps its full captions
    assert synth.run(_parse([str(tmp_path / "b"), *flags])) == 0
    assert (tmp_path / "b" / "captions.jsonl").read_text() == (tmp_path / "a" / "captions.jsonl").read_text()


def test_dry_run_prints_the_partial_captions_it_would_write(tmp_path, capsys):
    flags = _partial_flags(12)
    assert synth.run(_parse([str(tmp_path / "dry"), *flags, "--dry-run"])) == 0
    printed = capsys.readouterr().out.splitlines()[1:]  # after the config line
    assert not (tmp_path / "dry").exists()
    assert synth.run(_parse([str(tmp_path / "a"), *flags])) == 0
    rows = [json.loads(x) for x in (tmp_path / "a" / "captions.jsonl").read_text().splitlines()]
    assert printed == [r["caption"] for r in rows] and len(printed) == 24


# command line -----------------------------------------------------------------------------------------
def test_cli_writes_readable_clips_and_captions(tmp_path):
    out = tmp_path / "data"
    args = _parse([str(out), "--clips", "6", "--size", "64", "--frames", "9", "--seed", "1"])
    assert synth.run(args) == 0
    assert len(list(out.rglob("*.mp4"))) == 6
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for line in lines:
        record = json.loads(line)
        path = out / record["media_path"]
        assert path.is_file() and not Path(record["media_path"]).is_absolute()
        frames = _frames(path)
        assert len(frames) == 9 and frames[0].shape == (64, 64, 3)
        assert record["caption"] == caption(synth.spec_from_record(record))
        median = np.median(frames[0].reshape(-1, 3), axis=0) / 255  # the background covers most pixels
        assert np.abs(median - record["background_rgb"]).max() < 0.05
        for key in ("colour", "shape", "motion", "speed", "background", "start_xy", "size_px", "split"):
            assert key in record
    with pytest.raises(FileExistsError, match="--overwrite"):
        synth.run(args)
    assert synth.run(_parse([str(out), "--clips", "2", "--size", "64", "--frames", "9", "--overwrite"])) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clips", "0"], "clips must be a positive integer"),
        (["--clips", "-3"], "clips must be a positive integer"),
        (["--size", "48"], "size must be a multiple of 32"),
        (["--size", "16"], "size must be a multiple of 32"),
        (["--frames", "0"], "frames must be a positive integer"),
        (["--frames", "57"], "use at most 49 frames, or --speeds slow"),
        (["--frames", "105", "--speeds", "slow"], "use at most 97 frames"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        synth.run(_parse([str(tmp_path / "x"), *flags]))
    assert not (tmp_path / "x").exists()  # validated before anything is written


def test_non_8k_plus_1_frames_warn(tmp_path, capsys):
    assert synth.run(_parse([str(tmp_path), "--clips", "1", "--size", "32", "--frames", "10"])) == 0
    assert "not 8k+1 (e.g. 9 or 17)" in capsys.readouterr().err
