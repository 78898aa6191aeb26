"""Model folders (model + text encoder + generation.json), the bundled model, `ltxv data text-encoder`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_t5 import make_tiny_t5

from ltxv import demo
from ltxv.cli import main
from ltxv.dit.model import VideoDiT
from ltxv.media import read_video
from ltxv.presets import get_preset
from ltxv.vae.model import VideoVAE
from ltxv.weights import save_checkpoint


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny random model assembled like the bundled one: model.safetensors, text_encoder/, tokenizer/,
    generation.json."""
    root = tmp_path_factory.mktemp("folder")
    spec = get_preset("tiny")
    save_checkpoint(root / "model.safetensors", spec, VideoVAE(spec.vae), VideoDiT(spec.dit))
    make_tiny_t5(root, "root")
    (root / "generation.json").write_text(
        json.dumps({"width": 64, "height": 32, "num_frames": 9, "steps": 2})
    )
    return root


def test_generation_defaults_come_from_the_folder_and_flags_win(model_folder, tmp_path):
    out = tmp_path / "a.mp4"
    assert (
        main(["generate", "a red circle", "--model", str(model_folder), "--out", str(out), "--seed", "1"])
        == 0
    )
    video, _ = read_video(out)
    assert tuple(video.shape[-3:]) == (9, 32, 64)  # generation.json's size and frames
    out2 = tmp_path / "b.mp4"
    args = ["generate", "a red circle", "--model", str(model_folder), "--out", str(out2), "--width", "32"]
    assert main(args) == 0
    assert read_video(out2)[0].shape[-1] == 32


def test_python_api_defaults_come_from_the_folder(model_folder):
    """Pipeline.from_pretrained(folder).default_config() is the folder's generation.json over the defaults,
    so the README's Python snippet runs the model at its own settings; a bare file has none."""
    from ltxv import Pipeline

    cfg = Pipeline.from_pretrained(model_folder).default_config()
    assert (cfg.width, cfg.height, cfg.num_frames, cfg.steps) == (64, 32, 9, 2)
    assert cfg.stg_blocks == (1,)  # the tiny transformer's last block, not the 2B's 19
    bare = Pipeline.from_pretrained(model_folder / "model.safetensors").default_config()
    assert (bare.width, bare.steps) == (768, 40)


def test_every_generation_setting_of_the_folder_reaches_the_sampler(model_folder, tmp_path, monkeypatch):
    """generation.json may set any SampleConfig field (the eval reads them all); so must `ltxv generate`."""
    from ltxv.pipeline import Pipeline

    folder = tmp_path / "m"
    folder.mkdir()
    for item in model_folder.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "generation.json").unlink()
    settings = {"width": 64, "height": 32, "num_frames": 9, "steps": 2, "negative_prompt": "",
                "max_tokens": 16, "decode_timestep": 0.1, "rescale": 0.5,
                "keyframe_guidance": True}  # fmt: skip
    (folder / "generation.json").write_text(json.dumps(settings))
    seen = []
    generate = Pipeline.generate
    monkeypatch.setattr(
        Pipeline, "generate", lambda self, p, cfg, **kw: seen.append(cfg) or generate(self, p, cfg, **kw)
    )
    out = tmp_path / "a.mp4"
    assert (
        main(["generate", "a red circle", "--model", str(folder), "--out", str(out), "--rescale", "0.7"]) == 0
    )
    (cfg,) = seen
    assert {k: getattr(cfg, k) for k in settings} == {**settings, "rescale": 0.7}  # the flag wins
    args = ["generate", "a red circle", "--model", str(folder), "--out", str(out), "--no-keyframe-guidance"]
    assert main(args) == 0 and seen[1].keyframe_guidance is False  # a model's True can be turned off


def test_bad_generation_file_is_reported(model_folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "generation.json").write_text(json.dumps({"widht": 64}))
    with pytest.raises(ValueError, match=r"generation.json: unknown SampleConfig keys \['widht'\]"):
        demo.generation_defaults(bad)
    (bad / "generation.json").write_text(json.dumps({"steps": "ten"}))
    with pytest.raises(ValueError, match=r"generation.json: steps: expected int, got 'ten'"):
        demo.generation_defaults(bad)
    (bad / "generation.json").write_text(json.dumps({"guidance": True}))
    with pytest.raises(ValueError, match=r"generation.json: guidance: expected float, got True"):
        demo.generation_defaults(bad)
    (bad / "generation.json").write_text(json.dumps({"negative_prompt": None}))
    with pytest.raises(ValueError, match=r"negative_prompt: expected a string, got None"):
        demo.generation_defaults(bad)
    (bad / "generation.json").write_text("20")
    with pytest.raises(
        ValueError, match="generation.json: expected a mapping of SampleConfig fields, got 20"
    ):
        demo.generation_defaults(bad)
    (bad / "generation.json").write_text(json.dumps({"steps": "20", "stg_blocks": [1, 2]}))
    assert demo.generation_defaults(bad) == {
        "steps": 20,
        "stg_blocks": (1, 2),
    }  # the fields' types
    args = ["generate", "a red circle", "--model", str(bad), "--out", str(tmp_path / "x.mp4")]
    (bad / "generation.json").write_text(json.dumps({"steps": "ten"}))
    assert main(args) == 2 and "steps: expected int, got 'ten'" in capsys.readouterr().err
    assert demo.generation_defaults(tmp_path) == {}


def test_without_model_uses_the_bundled_one_or_says_how(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "nothing")
    assert main(["generate", "a red circle", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "no bundled demo model" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_text_encoder_command_builds_a_word_tokenizer(tmp_path, capsys):
    from ltxv.data.synth import SynthConfig, write_dataset
    from ltxv.text import TextEncoder

    write_dataset(tmp_path / "data", SynthConfig(clips=6, size=32, frames=1, seed=0))
    assert main(["data", "text-encoder", str(tmp_path / "t5"), "--captions", str(tmp_path / "data")]) == 0
    encoder = TextEncoder.from_pretrained(str(tmp_path / "t5"))
    caption = json.loads((tmp_path / "data" / "captions.jsonl").read_text().splitlines()[0])["caption"]
    assert len(encoder.tokenizer.ids(caption)) == len(caption.split()) + 1  # one piece per word, then </s>
    emb, mask = encoder.encode([caption], 16)
    assert emb.shape == (1, 16, 64) and int(mask.sum()) == len(caption.split()) + 1  # + </s>
    capsys.readouterr()
    # bad sizes and an existing folder are refused before anything is written; --overwrite replaces
    base = ["data", "text-encoder", str(tmp_path / "t5"), "--captions", str(tmp_path / "data")]
    before = sorted(p.name for p in (tmp_path / "t5").iterdir())
    for extra, message in (
        ([], "already exists; give a new folder, or pass --overwrite"),
        (["--overwrite", "--heads", "0"], "--heads must be >= 1, got 0"),
        (["--overwrite", "--layers", "0"], "--layers must be >= 1, got 0"),
    ):
        assert main([*base, *extra]) == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "t5").iterdir()) == before
    assert main([*base, "--overwrite", "--d-model", "32"]) == 0
    assert TextEncoder.from_pretrained(str(tmp_path / "t5")).encode([caption], 16)[0].shape == (1, 16, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "t5"]  # no temporary folder left


# --- The bundled model itself (skipped in a checkout without one) -----------------------------------------

bundled = pytest.mark.skipif(
    not (demo.DEMO_DIR / "model.safetensors").is_file(), reason="this checkout has no bundled demo model"
)


@bundled
def test_bundled_model_is_small_and_complete():
    files = [p for p in demo.DEMO_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20  # the budget
    defaults = demo.generation_defaults(demo.DEMO_DIR)
    assert defaults["width"] >= 128 and defaults["height"] >= 128
    assert defaults["num_frames"] / defaults["frame_rate"] >= 2.0  # at least 2 s of video


@bundled
def test_default_command_draws_the_prompt(tmp_path, capsys):
    """The README's first command: no --model, the bundled defaults. The judge reads back what this model gets
    right reliably (MODELS.md): the object is there, in the prompt's colour, on the prompt's background."""
    from ltxv import judge

    out = tmp_path / "out.mp4"
    prompt = "a red circle moving right on a black background"
    assert main(["generate", prompt, "--out", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr()
    assert "realtime factor" in printed.out and "does not know" not in printed.err
    video, fps = read_video(out)
    defaults = demo.generation_defaults(demo.DEMO_DIR)
    assert tuple(video.shape) == (1, 3, 49, defaults["height"], defaults["width"]) and fps == 24
    verdict = judge.judge_video((video + 1) / 2)  # (1, 3, F, H, W) in [0, 1]
    assert verdict.found and (verdict.colour, verdict.background) == ("red", "black")


@bundled
def test_bundled_model_image_to_video_keeps_the_first_frame(tmp_path):
    from PIL import Image

    from ltxv import judge
    from ltxv.data import synth

    spec = synth.sample_specs(1, 5, "holdout")[0]  # a never-trained (colour, shape, motion) triple
    size = demo.generation_defaults(demo.DEMO_DIR)["width"]  # the model's own (square) size
    clip = synth.render_clip(spec, size, 49)  # (1, 3, F, H, W) in [0, 1]
    image = tmp_path / "first.png"
    Image.fromarray((clip[0, :, 0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(image)
    out = tmp_path / "i2v.mp4"
    args = ["generate", synth.caption(spec), "--image", str(image), "--out", str(out), "--seed", "0"]
    assert main(args) == 0
    video = (read_video(out)[0] + 1) / 2
    assert judge.psnr(video[:, :, :1], clip[:, :, :1]) > 20  # 25 dB on average in the eval (MODELS.md)
    verdict = judge.judge_video(video)
    assert verdict.found and (verdict.colour, verdict.background) == (spec.colour, spec.background)


@bundled
def test_bundled_model_chains_segments_that_follow_their_prompts(tmp_path):
    """--then: the second segment turns the object round where the first left it (MODELS.md, Long videos)."""
    from ltxv import judge

    out = tmp_path / "long.mp4"
    prompt = "a red circle moving {} on a black background"
    args = [
        "generate",
        prompt.format("right"),
        "--then",
        prompt.format("left"),
        "--out",
        str(out),
        "--seed",
        "0",
    ]
    assert main(args) == 0
    video = (read_video(out)[0] + 1) / 2
    assert video.shape[2] == 49 + 48  # the second segment's first frame redraws the first's last
    first, second = judge.judge_video(video[:, :, :49]), judge.judge_video(video[:, :, 49:])
    assert (first.motion, second.motion) == ("right", "left") and second.colour == "red"
    before, after = judge.judge_video(video[:, :, 48:50]).centroids  # the seam: no jump, no restart
    assert before and after and abs(before[0] - after[0]) < 4 and abs(before[1] - after[1]) < 4


@bundled
def test_words_outside_the_vocabulary_are_named(tmp_path, capsys):
    """The bundled tokenizer knows only its captions' words: a prompt with others gets a one-line note."""
    from ltxv.text import TextEncoder

    tokenizer = TextEncoder.from_pretrained(demo.DEMO_DIR / "text_encoder").tokenizer
    assert tokenizer.unknown_words("a red circle moving right on a black background") == []
    assert tokenizer.unknown_words("a red dog moving left in a park") == ["dog", "in", "park"]
    args = ["generate", "a red dog moving left", "--out", str(tmp_path / "dog.mp4"), "--steps", "2"]
    assert main(args) == 0
    assert "note: the text encoder does not know 'dog' (read as <unk>)" in capsys.readouterr().err
    long = " ".join(["a red circle moving right on a black background"] * 10)  # 91 tokens with EOS
    assert main([*args[:1], long, *args[2:], "--max-tokens", "32"]) == 0
    assert "note: a prompt of 91 tokens is read as its first 32 (--max-tokens)" in capsys.readouterr().err
