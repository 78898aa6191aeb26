"""Latent cache: preprocess -> LatentDataset returns exactly vae.encode(video) and the T5 embedding of the
right caption, the empty-prompt embedding, atomic and self-invalidating writes, errors, and the CLI glue."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import randomize_
from tiny_t5 import make_tiny_t5

import ltxv.data.cache as cache
from ltxv.data.cache import (
    LatentDataset,
    add_preprocess_arguments,
    collate_latents,
    is_cache,
    preprocess,
    run_preprocess,
)
from ltxv.data.dataset import Bucket, BucketBatchSampler, VideoDataset, parse_buckets
from ltxv.data.synth import SynthConfig, write_dataset
from ltxv.presets import get_preset
from ltxv.text import TextEncoder
from ltxv.vae.model import VideoVAE
from ltxv.weights import load_vae, save_checkpoint

MAX_TOKENS = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synth dataset whose caption file has a missing clip between real ones, a tiny VAE and T5."""
    root = tmp_path_factory.mktemp("cache")
    records = write_dataset(root / "data", SynthConfig(clips=3, size=64, frames=9, seed=4))
    rows = [{"media_path": r["media_path"], "caption": r["caption"]} for r in records]
    rows.insert(1, {"media_path": "videos/gone.mp4", "caption": "a missing clip"})
    (root / "data" / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoDataset(root / "data", parse_buckets("9x64x64"))
    vae = randomize_(VideoVAE(get_preset("tiny").vae), 1, 0.2).eval()
    t5 = make_tiny_t5(root / "t5", "flat")
    return root, dataset, vae, TextEncoder.from_pretrained(t5, device="cpu", dtype=torch.float32), t5


@pytest.mark.parametrize("batch_size", [1, 2])
def test_round_trip_gives_the_vae_latents_and_the_right_caption_embedding(world, tmp_path, batch_size):
    _, dataset, vae, t5, _ = world
    calls = []
    progress = lambda *a: calls.append(a)  # noqa: E731
    meta = preprocess(dataset, vae, t5, tmp_path, MAX_TOKENS, batch_size, progress=progress, keyframes=True)
    assert calls[-1] == (3, 3) and len(calls) == (3 if batch_size == 1 else 2)
    assert is_cache(tmp_path) and meta == json.loads((tmp_path / "meta.json").read_text())
    assert meta["count"] == 3 and meta["latent_channels"] == 16 and meta["max_tokens"] == MAX_TOKENS
    assert meta["text_hidden_size"] == 32 and meta["skipped"] == "kept 3 of 4 clips: 1 missing"
    assert meta["vae"]["latent_channels"] == 16
    assert "keyframes" not in LatentDataset(tmp_path)[0]  # read only when asked for
    cached = LatentDataset(tmp_path, keyframes=True)
    assert len(cached) == 3 and cached.buckets_of == [Bucket(2, 2, 2)] * 3
    tol = 0.0 if batch_size == 1 else 1e-5  # bit-exact alone; batched convolutions may round differently
    with torch.inference_mode():
        for i in range(3):
            sample, item = cached[i], dataset[i]
            assert sample["caption"] == item["caption"] and sample["row"] == item["row"] == [0, 2, 3][i]
            assert sample["bucket"] == Bucket(2, 2, 2) and sample["latents"].dtype == torch.float32
            expected = vae.encode(item["video"][None])[0]  # (C, F', H', W')
            torch.testing.assert_close(sample["latents"], expected, atol=tol, rtol=tol)
            emb, mask = t5.encode([item["caption"]], MAX_TOKENS)
            torch.testing.assert_close(sample["text_emb"], emb[0], atol=1e-5, rtol=1e-5)
            assert torch.equal(sample["text_mask"], mask[0])
            assert sample["text_mask"].dtype == torch.int64 and sample["text_emb"].shape == (MAX_TOKENS, 32)
            # keyframe latents: pixel frame 8 (the clip's last) encoded alone, as generate() encodes an image
            keyframe = vae.encode(item["video"][None, :, 8:9])[0]  # (C, 1, H', W')
            assert sample["keyframes"].shape == (1, 16, 1, 2, 2)
            torch.testing.assert_close(sample["keyframes"][0], keyframe, atol=1e-5, rtol=1e-5)
        null_emb, null_mask = cached.null_text()
        emb, mask = t5.encode([""], MAX_TOKENS)
    assert torch.allclose(null_emb, emb[0], atol=1e-6) and torch.equal(null_mask, mask[0])
    assert null_mask.sum() == 1  # only the EOS token
    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [e["file"] for e in index] == [f"latents/{i:06d}.safetensors" for i in range(3)]
    assert len({e["caption"] for e in index}) == 3  # distinct captions: a mix-up would show
    assert index[1]["row"] == 2 and index[1]["bucket"] == "9x64x64"
    assert index[1]["latent_shape"] == [16, 2, 2, 2]
    assert index[1]["media_path"] == str(dataset.items[1].media_path)
    sampler = BucketBatchSampler(cached.buckets_of, batch_size=3, seed=0)
    batch = collate_latents([cached[i] for i in sampler.batch(0)])
    assert batch["latents"].shape == (3, 16, 2, 2, 2) and batch["text_emb"].shape == (3, MAX_TOKENS, 32)
    assert batch["text_mask"].shape == (3, MAX_TOKENS) and sorted(batch["row"]) == [0, 2, 3]
    assert batch["keyframes"].shape == (3, 1, 16, 1, 2, 2) and cached.has_keyframes()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.pt"))


def test_a_clip_listed_with_several_captions_is_encoded_once(world, tmp_path, monkeypatch):
    root, _, vae, t5, _ = world
    records = [json.loads(x) for x in (root / "data" / "captions.jsonl").read_text().splitlines()]
    first, second = records[0], records[2]  # two real clips (row 1 is the missing one)
    rows = [first, second | {"caption": "another caption"}, first | {"caption": "a partial caption"}, second]
    (root / "data" / "twice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoDataset(root / "data" / "twice.jsonl", parse_buckets("9x64x64"))
    encoded = []
    encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda video: encoded.append(video.shape[0]) or encode(video))
    meta = preprocess(dataset, vae, t5, tmp_path, MAX_TOKENS, batch_size=4)
    assert encoded == [2] and meta["count"] == 4  # one VAE call for the two distinct clips, four entries
    cached = LatentDataset(tmp_path)
    with torch.inference_mode():
        for i, row in enumerate(rows):
            sample = cached[i]
            assert sample["caption"] == row["caption"] and sample["row"] == i
            emb, _ = t5.encode([row["caption"]], MAX_TOKENS)
            torch.testing.assert_close(sample["text_emb"], emb[0], atol=1e-5, rtol=1e-5)
            alone = encode(dataset[i]["video"][None])[0]
            torch.testing.assert_close(sample["latents"], alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached[0]["latents"], cached[2]["latents"])
    assert torch.equal(cached[1]["latents"], cached[3]["latents"])
    assert not torch.equal(cached[0]["latents"], cached[1]["latents"])


def test_interrupted_rewrite_leaves_no_cache_and_no_temporary_files(world, tmp_path, monkeypatch):
    _, dataset, vae, t5, _ = world
    preprocess(dataset, vae, t5, tmp_path, MAX_TOKENS)
    assert is_cache(tmp_path)
    saved = []

    def failing_save(tensors, path, metadata):
        if saved:
            raise OSError("disk full")
        saved.append(path)
        real_save(tensors, path, metadata)

    real_save = cache.atomic_save
    monkeypatch.setattr(cache, "atomic_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        preprocess(dataset, vae, t5, tmp_path, MAX_TOKENS)
    assert not is_cache(tmp_path) and not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="not a latent cache"):
        LatentDataset(tmp_path)


def test_cache_files_get_the_umask_mode(world, tmp_path):
    _, dataset, vae, t5, _ = world
    umask = os.umask(0o027)
    try:
        preprocess(dataset, vae, t5, tmp_path / "out", MAX_TOKENS)
    finally:
        os.umask(umask)
    made = list((tmp_path / "out").rglob("*"))
    assert {p.stat().st_mode & 0o777 for p in made if p.is_file()} == {0o640}  # was 0600
    assert {p.stat().st_mode & 0o777 for p in made if p.is_dir()} == {0o750}


def test_cache_errors(world, tmp_path):
    _, dataset, vae, t5, _ = world
    with pytest.raises(ValueError, match="not a latent cache .* run `ltxv preprocess"):
        LatentDataset(tmp_path)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        preprocess(dataset, vae, t5, tmp_path, 0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        preprocess(dataset, vae, t5, tmp_path / "file", MAX_TOKENS)
    out = tmp_path / "out"
    preprocess(dataset, vae, t5, out, MAX_TOKENS)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "latents/000001.safetensors").unlink()
    with pytest.raises(ValueError, match=r"1 file\(s\) in index.jsonl are missing \(first: latents/000001"):
        LatentDataset(broken)
    (broken / "index.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="index.jsonl, line 1: not a cache entry"):
        LatentDataset(broken)
    (out / "null.safetensors").unlink()
    with pytest.raises(ValueError, match="null.safetensors is missing"):
        LatentDataset(out).null_text()
    (out / "meta.json").write_text("[]")
    assert not is_cache(out) and not is_cache(tmp_path / "nowhere")


def test_a_cache_without_keyframes_still_trains_but_not_for_keyframes(world, tmp_path):
    """A cache written without --keyframes (the default, and every cache from before it existed): batches
    without "keyframes", and flow.keyframe_p > 0 refused before the run starts, naming the fix."""
    from safetensors.torch import load_file

    from ltxv.config import TrainConfig, apply_overrides
    from ltxv.train.loop import build_data

    _, dataset, vae, t5, _ = world
    meta = preprocess(dataset, vae, t5, tmp_path, MAX_TOKENS)
    assert meta["keyframes"] is False
    assert set(load_file(tmp_path / "latents/000000.safetensors")) == {"latents", "text_emb", "text_mask"}
    cached = LatentDataset(tmp_path)
    assert not cached.has_keyframes() and "keyframes" not in cached[0]
    assert "keyframes" not in collate_latents([cached[0], cached[1]])
    cfg = TrainConfig(stage="dit", model=get_preset("tiny"))
    cfg = replace(cfg, data=replace(cfg.data, path=str(tmp_path)))
    assert len(build_data(cfg, None)[0]) == 3
    needs = r"no keyframe latents, which flow.keyframe_p > 0 needs.*preprocess \.\.\. --keyframes"
    with pytest.raises(ValueError, match=needs):
        build_data(apply_overrides(cfg, ["flow.keyframe_p=0.5"]), None)


def test_cli_preprocess(world, tmp_path, capsys):
    root, dataset, vae, _, t5_dir = world
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, get_preset("tiny"), vae=vae)
    parser = argparse.ArgumentParser()
    add_preprocess_arguments(parser)
    out = tmp_path / "cache"
    argv = [str(root / "data"), "--model", str(ckpt), "--text-encoder", str(t5_dir), "--out", str(out)]
    args = parser.parse_args([*argv, "--max-tokens", str(MAX_TOKENS), "--device", "cpu", "--batch-size", "2"])
    assert args.buckets == "9x64x64" and not args.keyframes and run_preprocess(args) == 0
    printed = capsys.readouterr().out
    assert "kept 3 of 4 clips: 1 missing; buckets: 9x64x64 x3" in printed and f"to {out}" in printed
    cached, loaded = LatentDataset(out), load_vae(ckpt, "cpu", torch.float32)
    with torch.inference_mode():
        expected = loaded.encode(dataset[2]["video"][None])[0]
    assert (
        torch.allclose(cached[2]["latents"], expected, atol=1e-5) and cached.meta["max_tokens"] == MAX_TOKENS
    )
    with pytest.raises(ValueError, match="already holds a latent cache; pass --overwrite"):
        run_preprocess(args)
    keyed = parser.parse_args([*argv, "--max-tokens", str(MAX_TOKENS), "--overwrite", "--keyframes"])
    assert run_preprocess(keyed) == 0 and LatentDataset(out).has_keyframes()
    assert LatentDataset(out, keyframes=True)[2]["keyframes"].shape == (1, 16, 1, 2, 2)

    with pytest.raises(ValueError, match="bad bucket '9x64x65'"):
        run_preprocess(parser.parse_args([*argv, "--overwrite", "--buckets", "9x64x65"]))
    with pytest.raises(ValueError, match="--max-tokens must be >= 1"):
        run_preprocess(parser.parse_args([*argv, "--overwrite", "--max-tokens", "0"]))
    with pytest.raises(ValueError, match="'tpu'.*--device"):  # named before the dataset is probed
        run_preprocess(parser.parse_args([*argv, "--overwrite", "--device", "tpu"]))
    # without --text-encoder: the model folder's text_encoder/, as generate finds it; a bare file says how
    without = [str(root / "data"), "--model", str(ckpt), "--out", str(out), "--overwrite"]
    with pytest.raises(ValueError, match="has no text_encoder/ folder: pass --text-encoder"):
        run_preprocess(parser.parse_args(without))
    folder = tmp_path / "folder"
    folder.mkdir()
    save_checkpoint(folder / "model.safetensors", get_preset("tiny"), vae=vae)
    shutil.copytree(t5_dir, folder / "text_encoder")
    args = parser.parse_args([*without[:2], str(folder), *without[3:], "--max-tokens", str(MAX_TOKENS)])
    assert (
        run_preprocess(args) == 0
        and LatentDataset(out).meta["text_hidden_size"] == cached.meta["text_hidden_size"]
    )


def test_keyframe_latents_are_each_clips_frames_8_16_encoded_alone(world):
    """Two 17-frame clips in one call: entry [i, k] is clip i's pixel frame 8(k + 1) encoded alone."""
    _, _, vae, _, _ = world
    video = torch.rand(2, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        keyed = cache.keyframe_latents(vae, video)  # (2, 2, C, 1, H', W')
        assert keyed.shape == (2, 2, 16, 1, 2, 2)
        for i in range(2):
            for k in range(2):
                expected = vae.encode(video[i : i + 1, :, 8 * (k + 1) : 8 * (k + 1) + 1])[0]
                torch.testing.assert_close(keyed[i, k], expected, atol=1e-5, rtol=1e-5)
        assert cache.keyframe_latents(vae, video[:, :, :1]).shape[1] == 0  # an image has no later frame
