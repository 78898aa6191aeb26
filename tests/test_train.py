"""Training on tiny configs, CPU: every stage learns, runs resume exactly, checkpoints and outputs load."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_t5 import make_tiny_t5

import ltxv
from ltxv.config import TrainConfig, apply_overrides
from ltxv.data.synth import SynthConfig, write_dataset
from ltxv.presets import get_preset
from ltxv.train.loop import build_models, resolve_config, train
from ltxv.train.stages import BatchRandom

BUCKET = "9x64x64"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Four shapes-world clips (64x64, 9 frames) and a tiny T5, shared by the module."""
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", SynthConfig(clips=4, size=64, frames=9, seed=0))
    make_tiny_t5(root / "t5", "flat")
    return root


def config(world: Path, stage: str, steps: int, **overrides) -> TrainConfig:
    cfg = TrainConfig(stage=stage, model=get_preset("tiny"), steps=steps, batch_size=4, log_every=1)
    sets = [
        f"data.path={world / 'data'}",
        f"data.buckets={BUCKET}",
        f"data.text_encoder={world / 't5'}",
        "optim.lr=0.003",
        "save_every=1000",
    ]
    return apply_overrides(cfg, sets + [f"{k}={v}" for k, v in overrides.items()])


def losses(run: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_learns(run: Path, key: str = "loss", factor: float = 0.7) -> None:
    values = losses(run, key)
    k = max(3, len(values) // 5)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    assert last < factor * first, f"{key}: first {first:.4f} -> last {last:.4f} ({values})"


def test_vae_learns_and_writes_everything(world, tmp_path):
    run = tmp_path / "vae"
    final = train(config(world, "vae", 40), run, progress=False)
    assert_learns(run, "mse", 0.5)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "mse", "wavelet", "kl", "grad_norm", "lr"} <= set(record)
    assert record["step"] == 40
    assert (run / "samples" / "step_00000040.mp4").stat().st_size > 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000040"]
    tensors = load_file(final)
    std = tensors["vae.latent_std"]
    assert not torch.allclose(std, torch.ones_like(std)), "latent statistics were not measured"


@pytest.fixture(scope="module")
def trained_vae(world, tmp_path_factory):
    run = tmp_path_factory.mktemp("vae_run")
    return train(config(world, "vae", 30), run, progress=False)


def test_decoder_learns_to_denoise(world, trained_vae, tmp_path):
    run = tmp_path / "dec"
    train(config(world, "decoder", 30, init=trained_vae), run, progress=False)
    assert_learns(run, "mse", 0.8)
    before, after = load_file(trained_vae), load_file(run / "model.safetensors")
    enc = [k for k in before if k.startswith("vae.encoder.")]
    assert all(torch.equal(before[k], after[k]) for k in enc), "the encoder must stay frozen"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vae.decoder."))


def fixed_flow_loss(model_file: Path, world: Path, seeds: int = 6) -> float:
    """Flow loss of a trained transformer on the training clips at fixed t and noise draws."""
    from ltxv.data.dataset import VideoDataset, collate, parse_buckets
    from ltxv.text import TextEncoder
    from ltxv.train.stages import DiTStage
    from ltxv.weights import load_transformer, load_vae

    cfg = replace(
        config(world, "dit", 1), flow=replace(TrainConfig().flow, caption_dropout=0, first_frame_p=0)
    )
    stage = DiTStage(cfg, load_vae(model_file), load_transformer(model_file))
    data = VideoDataset(world / "data", parse_buckets(BUCKET))
    batch = collate([data[i] for i in range(len(data))])
    emb, mask = TextEncoder.from_pretrained(str(world / "t5")).encode(batch["caption"], 128)
    batch |= {"text_emb": emb.clone(), "text_mask": mask.clone()}
    stage.set_null_text(emb[0].clone(), mask[0].clone())
    with torch.no_grad():
        total = [stage(batch, BatchRandom(torch.Generator().manual_seed(s)), 0)["loss"] for s in range(seeds)]
    return float(torch.stack(total).mean())


def test_dit_learns_with_i2v_and_token_drop(world, trained_vae, tmp_path):
    run = tmp_path / "dit"
    cfg = config(world, "dit", 40, init=trained_vae, **{"flow.first_frame_p": 0.5, "flow.token_drop": 0.2})
    final = train(cfg, run, progress=False)
    assert fixed_flow_loss(final, world) < 0.8 * fixed_flow_loss(trained_vae, world)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert any(k.startswith("loss_t") for k in record), "flow stages log the loss per t bin"
    # the validation sample is drawn from the first clip's caption (it was a blank video: never encoded)
    from ltxv.media import read_video

    sample, _ = read_video(run / "samples" / "step_00000040.mp4")
    assert sample.std() > 0.05, "the validation sample is blank"


def test_keyframes_from_videos_are_their_frames_encoded_alone(world, trained_vae):
    """Training on videos (no cache): the keyframe tokens are the frozen VAE's encoding of pixel frame 8 alone
    (9-frame clips: the last frame), as a cache's keyframes and generate()'s image keyframes are."""
    from ltxv.data.dataset import VideoDataset, collate, parse_buckets
    from ltxv.train.stages import DiTStage
    from ltxv.weights import load_transformer, load_vae

    cfg = config(world, "dit", 1, **{"flow.keyframe_p": 1.0})
    vae, dit = load_vae(trained_vae), load_transformer(trained_vae)
    stage = DiTStage(cfg, vae, dit)
    seen = []
    dit.register_forward_pre_hook(lambda _, args: seen.append(args))
    batch = collate([VideoDataset(world / "data", parse_buckets(BUCKET))[i] for i in range(2)])
    c = dit.cfg.caption_channels
    batch |= {"text_emb": torch.randn(2, 4, c), "text_mask": torch.ones(2, 4, dtype=torch.long)}
    stage.set_null_text(torch.zeros(4, c), torch.ones(4, dtype=torch.long))
    with torch.no_grad():
        stage(batch, BatchRandom(torch.Generator().manual_seed(0)), 0)
        expected = vae.encode(batch["video"][:, :, 8:9]).flatten(2).transpose(1, 2)  # (B, H'W', C)
    x, coords = seen[0][0], seen[0][5]
    m = expected.shape[1]
    assert x.shape[1] == m + 2 * m  # one keyframe frame + two latent frames
    torch.testing.assert_close(x[:, :m], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(coords[:, :m, 0], torch.full((2, m), 8.0))


def test_joint_trains_all_three(world, tmp_path):
    run = tmp_path / "joint"
    final = train(config(world, "joint", 60), run, progress=False)
    assert_learns(run, "loss_vae", 0.7)
    tensors = load_file(final)
    assert any(k.startswith("dit.") for k in tensors) and any(k.startswith("vae.encoder.") for k in tensors)


def test_lora_learns_and_loads_at_generation(world, trained_vae, tmp_path):
    from ltxv.lora import read_lora

    base = tmp_path / "dit"
    train(config(world, "dit", 2, init=trained_vae), base, progress=False)
    run = tmp_path / "lora"
    cfg = config(world, "lora", 40, init=base / "model.safetensors", **{"lora.rank": 4})
    cfg = replace(cfg, flow=replace(cfg.flow, caption_dropout=0.0))
    final = train(cfg, run, progress=False)
    assert final.name == "lora.safetensors"
    layers = read_lora(final)
    assert len(layers) == 4 * 2 * get_preset("tiny").dit.num_layers  # q, k, v, out of attn1 and attn2
    assert any(layer.up.abs().sum() > 0 for layer in layers.values())
    merged = tmp_path / "merged.safetensors"
    from ltxv.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(base / "model.safetensors", device="cpu")
    assert pipe.load_lora(final) == len(layers)
    from ltxv.weights import save_checkpoint

    save_checkpoint(merged, pipe.spec, pipe.vae, pipe.dit)
    assert fixed_flow_loss(merged, world) < fixed_flow_loss(base / "model.safetensors", world)


def test_ema_and_resume_by_rerunning(world, tmp_path):
    """A run stopped at step 6 and re-run to 12 ends with the uninterrupted run's weights (and EMA)."""
    full, split = tmp_path / "full", tmp_path / "split"
    cfg = config(world, "dit", 12, ema_decay=0.9, save_every=3)
    train(cfg, full, progress=False)
    train(replace(cfg, steps=6), split, progress=False)
    assert [p.name for p in (split / "checkpoints").iterdir()] == ["step_00000003", "step_00000006"]
    train(cfg, split, progress=False)
    a, b = load_file(full / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert losses(full) == pytest.approx(losses(split), abs=1e-6)
    with pytest.raises(ValueError, match="different config"):
        train(replace(cfg, seed=1), split, progress=False)


def test_a_run_folder_that_no_longer_fits_is_named(world, tmp_path):
    """Resuming loads the last checkpoint; one that does not fit the model (config.json edited or deleted),
    a damaged one, or an unreadable config.json is refused by name instead of training a mix."""
    from ltxv.weights import open_checkpoint

    run = tmp_path / "run"
    cfg = config(world, "dit", 2, save_every=1)
    train(cfg, run, progress=False)
    assert open_checkpoint(run).dit is not None  # a finished run's folder opens as its model.safetensors
    (tmp_path / "lora_run").mkdir()
    (tmp_path / "lora_run" / "lora.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="a LoRA run's folder; pass its base model as the model and --lora"):
        open_checkpoint(tmp_path / "lora_run")
    deeper = apply_overrides(replace(cfg, steps=3), ["model.dit.num_layers=3"])
    config_json = (run / "config.json").read_text()
    (run / "config.json").unlink()
    with pytest.raises(
        ValueError,
        match=r"step_00000002 does not fit this run's model \(25 missing, 0 unexpected.*blocks\.2",
    ):
        train(deeper, run, progress=False)
    (run / "config.json").write_text("{cut")
    with pytest.raises(
        ValueError, match="config.json is not a run config .*restore it or choose a new --out"
    ):
        train(replace(cfg, steps=3), run, progress=False)
    (run / "config.json").write_text(config_json)
    model = run / "checkpoints" / "step_00000002" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(
        ValueError, match="step_00000002 is damaged .*delete that folder to resume from the one"
    ):
        train(replace(cfg, steps=3), run, progress=False)


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ltxv", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def test_kill_9_then_resume_matches_uninterrupted(world, tmp_path):
    common = ["--data", str(world / "data"), "--buckets", BUCKET, "--text-encoder", str(world / "t5")]
    common += ["--steps", "60", "--save-every", "5", "--lr", "0.003", "--ema", "0.9"]
    ref = _cli("train", "dit", *common, "--out", str(tmp_path / "ref"))
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()
    run = tmp_path / "killed"
    proc = _cli("train", "dit", *common, "--out", str(run))
    deadline = time.time() + 300
    while (
        not (run / "checkpoints" / "step_00000010").exists()
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "model.safetensors").exists()
    resumed = _cli("train", "dit", *common, "--out", str(run))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    assert "resuming" in err.decode()
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(run / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == list(
        range(10, 61, 10)
    )


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(world, tmp_path, parallel):
    common = ["--data", str(world / "data"), "--buckets", BUCKET, "--text-encoder", str(world / "t5")]
    common += ["--batch-size", "4", "--log-every", "1", "--lr", "0.003"]
    one = _cli("train", "dit", *common, "--steps", "4", "--out", str(tmp_path / "one"))
    assert one.wait(timeout=600) == 0, one.stderr.read().decode()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as sock:  # a free port (torchrun's port 0 does not work with the static rendezvous)
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    for steps in ("2", "4"):  # two steps, then resumed to four on both processes
        two = subprocess.run(
            [
                *torchrun,
                "-m",
                "ltxv",
                "train",
                "dit",
                *common,
                "--steps",
                steps,
                "--out",
                str(tmp_path / "two"),
            ]
            + ["--set", f"parallel={parallel}"],
            capture_output=True,
            env=env,
            timeout=600,
        )
        assert two.returncode == 0, two.stderr.decode()[-3000:]
    assert "resuming" in two.stderr.decode()
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4)
    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_cli_dry_run_and_errors(world, tmp_path, capsys):
    from ltxv.cli import main

    args = ["train", "dit", "--data", str(world / "data"), "--out", str(tmp_path / "r"), "--steps", "7"]
    assert main([*args, "--dry-run", "--set", "flow.first_frame_p=0.3", "--set", "train.parallel=fsdp"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 7 and printed["flow"]["first_frame_p"] == 0.3 and printed["parallel"] == "fsdp"
    assert printed["model"]["dit"]["num_layers"] == get_preset("tiny").dit.num_layers
    assert main([*args, "--dry-run", "--set", "flow.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err
    # the dry run checks what it can of the data and the config file without reading the clips
    missing = ["train", "dit", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--dry-run"]
    assert main(missing) == 2 and "--data" in capsys.readouterr().err
    assert main([*args, "--dry-run", "--buckets", "10x64x64"]) == 2 and "8k+1" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("not json")
    assert main([*args, "--dry-run", "--config", str(tmp_path / "c.txt")]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert main([*args, "--dry-run", "--config", str(tmp_path / "none.json")]) == 2
    assert "--config" in capsys.readouterr().err
    assert main([*args]) == 2  # a video dataset for `dit` needs a text encoder
    assert "--text-encoder" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "vae",
                "--data",
                str(world / "data"),
                "--out",
                str(tmp_path / "v"),
                "--batch-size",
                "64",
            ]
        )
        == 2
    )
    assert "batch" in capsys.readouterr().err
    assert not (tmp_path / "v" / "model.safetensors").exists()


@pytest.mark.parametrize("stage", ["vae", "decoder"])
def test_vae_gan_trains_the_discriminator_and_resumes_exactly(world, tmp_path, stage):
    """The reconstruction GAN in the VAE stage and in the denoising-decoder stage (the paper trains the
    decoder with it too)."""
    cfg = config(world, stage, 4, save_every=2, **{"vae.gan": 0.1, "vae.gan_start": 1})
    train(cfg, tmp_path / "full", progress=False)
    train(replace(cfg, steps=2), tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", progress=False)
    records = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_disc" not in records[0] and {"loss_disc", "gan"} <= set(records[1])
    ckpt = tmp_path / "full" / "checkpoints" / "step_00000004"
    assert (ckpt / "optim_disc.safetensors").is_file()
    a, b = (
        load_file(tmp_path / r / "checkpoints" / "step_00000004" / "model.safetensors")
        for r in ("full", "split")
    )
    assert any(k.startswith("disc.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_lr_schedule_warmup_then_constant_or_cosine():
    from ltxv.train.loop import lr_scale

    assert [lr_scale(s, 10, 4, "constant") for s in (0, 3, 4, 9)] == [0.25, 1.0, 1.0, 1.0]
    cosine = [lr_scale(s, 10, 4, "cosine") for s in range(10)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0] and cosine[4] == 1.0  # warm-up, then the top of the cosine
    assert all(a > b for a, b in zip(cosine[4:], cosine[5:], strict=False)) and 0 < cosine[-1] < 0.1
    assert lr_scale(5, 11, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 11)))


def test_cosine_decay_reaches_the_optimizer(world, tmp_path):
    from ltxv.train.loop import lr_scale

    run = tmp_path / "cos"
    train(config(world, "vae", 4, **{"optim.decay": "cosine"}), run, progress=False)
    lrs = losses(run, "lr")
    assert lrs[0] == pytest.approx(0.003) and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    with pytest.raises(ValueError, match="optim.decay 'linear'"):
        config(world, "vae", 4, **{"optim.decay": "linear"})
    # stopping early on a longer schedule: the first steps of an 8-step cosine
    train(config(world, "vae", 4, **{"optim.decay": "cosine", "optim.decay_steps": 8}), tmp_path / "early")
    early = losses(tmp_path / "early", "lr")
    assert early == pytest.approx([0.003 * lr_scale(s, 8, 0, "cosine") for s in range(4)])
    with pytest.raises(ValueError, match="optim.decay_steps=3 is shorter than the run"):
        config(world, "vae", 4, **{"optim.decay_steps": 3})


def test_init_dit_puts_another_checkpoints_transformer_on_this_vae(world, trained_vae, tmp_path, capsys):
    """`--init-dit`: the VAE (and its latent statistics) from --init, the transformer from another file."""
    from ltxv.cli import main
    from ltxv.dit.model import VideoDiT
    from ltxv.weights import save_checkpoint

    spec = get_preset("tiny")
    torch.manual_seed(123)
    other = VideoDiT(spec.dit)
    save_checkpoint(tmp_path / "dit.safetensors", spec, dit=other)
    cfg = resolve_config(config(world, "dit", 1, init=trained_vae, init_dit=tmp_path / "dit.safetensors"))
    vae, dit, trained = build_models(cfg)
    assert trained
    theirs = other.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in dit.state_dict().items())
    before = load_file(trained_vae)
    assert all(torch.equal(before[f"vae.{k}"], v) for k, v in vae.state_dict().items())

    save_checkpoint(tmp_path / "vae_only.safetensors", spec, vae=vae)
    args = ["train", "dit", "--data", str(world / "data"), "--out", str(tmp_path / "r"), "--dry-run"]
    vae_only = str(tmp_path / "vae_only.safetensors")
    assert main([*args, "--init", str(trained_vae), "--init-dit", vae_only]) == 2
    assert "has no transformer" in capsys.readouterr().err
    narrow = replace(spec, dit=replace(spec.dit, in_channels=8, out_channels=8))
    save_checkpoint(tmp_path / "narrow.safetensors", narrow, dit=VideoDiT(narrow.dit))
    assert main([*args, "--init", str(trained_vae), "--init-dit", str(tmp_path / "narrow.safetensors")]) == 2
    assert "takes 8 latent channels, the VAE makes 16" in capsys.readouterr().err
    with pytest.raises(ValueError, match="init_dit is for the dit and joint stages"):
        config(world, "vae", 1, init_dit=tmp_path / "dit.safetensors")


@pytest.mark.parametrize("stage", ["dit", pytest.param("joint", marks=pytest.mark.slow)])
def test_compiled_training_matches_eager(world, trained_vae, tmp_path, stage):
    """--compile: regional torch.compile of the DiT's blocks (dit) and also the VAE's (joint); the same losses
    as eager up to kernel rounding, and the same checkpoint keys."""
    from test_fast_compile import _inductor_works

    if (reason := _inductor_works()) is not None:
        pytest.skip(reason)
    torch._dynamo.reset()
    try:
        for run, mode in (("eager", ""), ("compiled", "default")):
            train(config(world, stage, 3, init=trained_vae, compile=mode), tmp_path / run, progress=False)
    finally:
        torch._dynamo.reset()
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled, strict=True):
        assert abs(a - b) <= 1e-3 * abs(a), (eager, compiled)
    keys = [set(load_file(tmp_path / run / "model.safetensors")) for run in ("eager", "compiled")]
    assert keys[0] == keys[1]
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        config(world, "dit", 1, compile="fast")


def test_new_dit_trains_a_transformer_of_another_shape_on_inits_vae(world, trained_vae, tmp_path, capsys):
    """`--init FILE --new-dit --set model.dit.num_layers=3`: FILE's VAE (shape and weights), a new 3-block
    transformer; a --set model.* that --init would silently override is refused instead."""
    from ltxv.cli import main
    from ltxv.dit.model import VideoDiT
    from ltxv.weights import load_vae, open_checkpoint, save_checkpoint

    spec = get_preset("tiny")
    init = tmp_path / "init.safetensors"  # the trained VAE with a 2-block transformer
    save_checkpoint(
        init, spec, load_vae(open_checkpoint(trained_vae), "cpu", torch.float32), VideoDiT(spec.dit)
    )
    data = ["--data", str(world / "data"), "--text-encoder", str(world / "t5"), "--buckets", BUCKET]
    base = ["train", "dit", *data, "--init", str(init), "--steps", "2", "--batch-size", "4"]
    new = [*base, "--new-dit", "--set", "model.dit.num_layers=3"]
    assert main([*new, "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["new_dit"] is True and printed["model"]["dit"]["num_layers"] == 3
    assert main([*new, "--out", str(tmp_path / "r")]) == 0
    out, before = load_file(tmp_path / "r" / "model.safetensors"), load_file(init)
    assert (
        "dit.transformer_blocks.2.ff.net.2.bias" in out
        and "dit.transformer_blocks.3.ff.net.2.bias" not in out
    )
    assert all(torch.equal(out[k], v) for k, v in before.items() if k.startswith("vae."))
    assert open_checkpoint(tmp_path / "r" / "model.safetensors").spec.dit.num_layers == 3

    refused = {
        "--set model.dit.num_layers=3 would be ignored": [*base, "--set", "model.dit.num_layers=3"],
        "--set model.vae.latent_channels=8 would be ignored": [
            *base,
            "--new-dit",
            "--set",
            "model.vae.latent_channels=8",
        ],
        "new_dit and init_dit both": [*base, "--new-dit", "--init-dit", str(init)],
        "--new-dit (model.dit): its transformer takes 8 latent channels, the VAE makes 16": [
            *base,
            "--new-dit",
            "--set",
            "model.dit.in_channels=8",
        ],
    }
    for i, (message, args) in enumerate(refused.items()):
        assert main([*args, "--out", str(tmp_path / f"x{i}")]) == 2, message
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"x{i}" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="new_dit is for the dit and joint stages"):
        config(world, "decoder", 1, new_dit=True)


def test_flow_t_shift_moves_the_training_timesteps():
    """flow.t_shift replaces the token-count μ of the shifted logit-normal t the flow stage trains on."""
    from ltxv.dit.model import VideoDiT
    from ltxv.flow import shift_mu
    from ltxv.train.stages import DiTStage

    spec = get_preset("tiny")
    latents = torch.randn(64, spec.dit.in_channels, 2, 2, 2)
    emb, mask = torch.randn(64, 4, spec.dit.caption_channels), torch.ones(64, 4, dtype=torch.long)
    medians = {}
    for shift in (None, 3.0):
        cfg = apply_overrides(TrainConfig(model=spec), [f"flow.t_shift={json.dumps(shift)}"])
        stage = DiTStage(cfg, None, VideoDiT(spec.dit))
        stage.set_null_text(emb[0], mask[0])
        with torch.no_grad():
            out = stage.flow(latents, emb, mask, BatchRandom(torch.Generator().manual_seed(0)))
        medians[shift] = out["t"].median().item()
    assert abs(medians[None] - torch.sigmoid(torch.tensor(shift_mu(8))).item()) < 0.15
    assert medians[3.0] > 0.9 and medians[3.0] > medians[None] + 0.25


def test_flow_foreground_weights_the_object_tokens_in_the_loss():
    """flow.foreground: a token unlike its frame's others (the object) weighs 1 + foreground in each sample's
    mean. A transformer that predicts 0 makes each token's error |noise − x0|²: the object's dominates."""
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import DiTStage

    spec = get_preset("tiny")
    latents = torch.zeros(4, spec.dit.in_channels, 2, 2, 2)  # (B, C, F, H, W): 8 tokens, 4 per frame
    latents[:, :, :, 0, 1] = 100.0  # one object token per frame: 2 of 8
    emb, mask = torch.randn(4, 4, spec.dit.caption_channels), torch.ones(4, 4, dtype=torch.long)
    dit = VideoDiT(spec.dit)
    torch.nn.init.zeros_(dit.proj_out.weight)
    torch.nn.init.zeros_(dit.proj_out.bias)
    losses = {}
    for weight in (0.0, 9.0):
        cfg = apply_overrides(
            TrainConfig(model=spec),
            ["flow.first_frame_p=0", "flow.caption_dropout=0", f"flow.foreground={weight}"],
        )
        stage = DiTStage(cfg, None, dit)
        stage.set_null_text(emb[0], mask[0])
        with torch.no_grad():
            losses[weight] = stage.flow(latents, emb, mask, BatchRandom(torch.Generator().manual_seed(0)))[
                "total"
            ]
    # object error E ≈ 1e4 dominates: unweighted 2E/8, weighted 2·10·E / (2·10 + 6)
    assert float(losses[9.0] / losses[0.0]) == pytest.approx((20 / 26) / (2 / 8), rel=0.02)
    for bad in ("flow.foreground=-1", "flow.foreground_threshold=0"):
        with pytest.raises(ValueError, match="flow.foreground"):
            apply_overrides(TrainConfig(model=spec), [bad])
    for bad in ("vae.silhouette=-1", "vae.silhouette_width=0.6"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            apply_overrides(TrainConfig(model=spec), [bad])


def test_flow_conditions_the_first_frame_or_a_prefix_of_latent_frames():
    """first_frame_p: latent frame 0 kept clean; extension_p: the first k in 2..F'-1; both as shares of the
    samples, each conditioned sample a prefix of whole latent frames (the extension code path's layout)."""
    from ltxv.config import FlowTrainConfig
    from ltxv.train.stages import _conditioned_tokens

    def draw(flow: FlowTrainConfig, frames: int = 7, b: int = 4000) -> torch.Tensor:
        rng = BatchRandom(torch.Generator().manual_seed(0))
        mask = _conditioned_tokens(rng, frames, 4, flow, b, torch.device("cpu"))  # (B, frames * 4)
        k = mask.sum(1) // 4  # conditioned latent frames per sample
        assert torch.equal(mask, torch.arange(frames * 4)[None] < (k * 4)[:, None])  # whole-frame prefixes
        return k

    k = draw(FlowTrainConfig(first_frame_p=0.3, extension_p=0.2))
    shares = [float((k == i).float().mean()) for i in range(7)]
    assert shares[0] == pytest.approx(0.5, abs=0.03) and shares[1] == pytest.approx(0.3, abs=0.03)
    for i in range(2, 7):  # 2..6 alike; never all 7 (nothing left to generate)
        assert shares[i] == pytest.approx(0.2 / 5, abs=0.015)
    assert int(k.max()) == 6
    # without extension, the draws are the image-conditioning ones alone (earlier runs' random streams kept)
    rng = BatchRandom(torch.Generator().manual_seed(0))
    image_only = rng.rand(4000, torch.device("cpu")) < 0.1
    assert torch.equal(draw(FlowTrainConfig(first_frame_p=0.1)), image_only.long())
    assert int(draw(FlowTrainConfig(first_frame_p=0.0, extension_p=1.0), frames=2).max()) == 0  # no room
    with pytest.raises(ValueError, match=r"flow.first_frame_p \+ flow.extension_p = 1.2 > 1"):
        apply_overrides(TrainConfig(), ["flow.first_frame_p=0.6", "flow.extension_p=0.6"])


def _keyframe_batch(spec, b: int = 3, frames: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = spec.dit.in_channels
    return {
        "latents": torch.randn(b, c, frames, 2, 2, generator=g),
        "keyframes": torch.randn(b, frames - 1, c, 1, 2, 2, generator=g),  # pixel frames 8, 16, ...
        "text_emb": torch.randn(b, 4, spec.dit.caption_channels, generator=g),
        "text_mask": torch.ones(b, 4, dtype=torch.long),
    }


def test_flow_keyframes_enter_as_generate_places_an_image_keyframe():
    """flow.keyframe_p: the transformer sees each sample's keyframe latents (pixel frame 8j) in front of the
    video tokens exactly as `conditioning.build_state` lays out an image condition at frame 8j: the same
    tokens, the same coordinates, t = 0; the loss covers the video tokens only."""
    from ltxv.conditioning import Condition, build_state
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import DiTStage

    spec = get_preset("tiny")
    batch = _keyframe_batch(spec)
    dit = VideoDiT(spec.dit)
    seen = []
    dit.register_forward_pre_hook(lambda _, args: seen.append(args))
    cfg = apply_overrides(
        TrainConfig(model=spec), ["flow.keyframe_p=1", "flow.first_frame_p=0", "flow.caption_dropout=0"]
    )
    stage = DiTStage(cfg, None, dit)
    stage.set_null_text(batch["text_emb"][0], batch["text_mask"][0])
    with torch.no_grad():
        loss = stage(batch, BatchRandom(torch.Generator().manual_seed(0)), 0)["loss"]
    x, t, _, _, _, coords = seen[0]
    assert x.shape == (3, 4 + 12, spec.dit.in_channels) and torch.isfinite(loss)
    assert torch.equal(t[:, :4], torch.zeros(3, 4)) and bool((t[:, 4:] > 0).all())
    grid = dit.token_coords(3, 2, 2, 1, torch.device("cpu"))
    used = set()
    for i in range(3):
        j = next(j for j in range(2) if torch.equal(x[i, :4], batch["keyframes"][i, j].flatten(1).T))
        used.add(j)
        cond = Condition(torch.zeros(1, 3, 1, 64, 64), frame=8 * (j + 1))
        state = build_state(
            torch.zeros(1, spec.dit.in_channels, 3, 2, 2),
            [(cond, batch["keyframes"][i : i + 1, j])],
            grid,
            lambda f, h, w: dit.token_coords(f, h, w, 1, torch.device("cpu"))[0],
            None,
        )
        assert state.num_extra == 4
        torch.testing.assert_close(x[i, :4], state.tokens[0, :4])
        assert torch.equal(coords[i], state.coords[0])  # keyframe and grid coordinates alike
    # the same batch without keyframes: the loss is over the same video tokens (their own draws differ)
    plain = DiTStage(apply_overrides(cfg, ["flow.keyframe_p=0"]), None, dit)
    plain.set_null_text(batch["text_emb"][0], batch["text_mask"][0])
    with torch.no_grad():
        plain(batch, BatchRandom(torch.Generator().manual_seed(0)), 0)
    assert seen[-1][0].shape == (3, 12, spec.dit.in_channels)


def test_keyframes_are_drawn_per_batch_and_uniformly_over_the_later_frames():
    """keyframe_p is the share of batches with keyframes (one token count per batch); j uniform in 1..F'-1;
    keyframe_p = 0 draws nothing (earlier runs' random streams kept); single-frame latents get none."""
    from ltxv.config import FlowTrainConfig
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import _draw_keyframes

    spec = get_preset("tiny")
    dit = VideoDiT(spec.dit)
    batch = _keyframe_batch(spec, b=2000, frames=4)
    flow = FlowTrainConfig(keyframe_p=0.3)
    rngs = [BatchRandom(torch.Generator().manual_seed(s)) for s in range(300)]
    drawn = [_draw_keyframes(rng, batch, None, dit, flow, batch["latents"]) for rng in rngs]
    assert sum(d is not None for d in drawn) / 300 == pytest.approx(0.3, abs=0.08)
    tokens, coords = next(d for d in drawn if d is not None)
    frames = coords[:, 0, 0]  # (B,) the keyframe's pixel frame
    assert set(frames.tolist()) == {8.0, 16.0, 24.0}
    for f in (8, 16, 24):
        assert float((frames == f).float().mean()) == pytest.approx(1 / 3, abs=0.04)
    i = int((frames == 16).nonzero()[0])
    assert torch.equal(tokens[i], batch["keyframes"][i, 1].flatten(1).T)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert _draw_keyframes(BatchRandom(g), batch, None, dit, FlowTrainConfig(), batch["latents"]) is None
    assert torch.equal(g.get_state(), state)
    one = FlowTrainConfig(keyframe_p=1.0)
    assert _draw_keyframes(BatchRandom(g), batch, None, dit, one, batch["latents"][:, :, :1]) is None
    with pytest.raises(ValueError, match=r"keyframe_p > 0 needs keyframe.*preprocess \.\.\. --keyframes"):
        _draw_keyframes(BatchRandom(g), {"latents": batch["latents"]}, None, dit, one, batch["latents"])
    for bad in ("flow.keyframe_p=1.5", "flow.keyframe_p=nan"):
        with pytest.raises(ValueError, match="flow.keyframe_p"):
            apply_overrides(TrainConfig(model=spec), [bad])


def test_distill_with_keyframes_keeps_them_out_of_the_target():
    """The teacher and the student both see the keyframe tokens; with the student as its own one-step
    teacher the loss is still exactly 0 (the keyframe tokens neither move nor count)."""
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import DistillStage

    spec = get_preset("tiny")
    batch = _keyframe_batch(spec)
    dit = VideoDiT(spec.dit)
    sets = ["distill.teacher_steps=1", "distill.guidance=1", "flow.keyframe_p=1"]
    stage = DistillStage(apply_overrides(TrainConfig(stage="distill", model=spec), sets), None, dit)
    seen = []
    for model in (stage.teacher, dit):  # hooked after the teacher's copy was made
        model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    stage.set_null_text(torch.zeros(4, spec.dit.caption_channels), torch.ones(4, dtype=torch.long))
    with torch.no_grad():
        assert stage(batch, BatchRandom(torch.Generator().manual_seed(1)), 0)["loss"].item() == 0.0
    assert seen == [16, 16]  # teacher, then student: 4 keyframe + 12 video tokens
    # with CFG the teacher's empty-prompt branch leaves the keyframe out (distill.keyframe_guidance), or not
    for guide, calls in ((True, [(3, 16), (3, 12), (3, 16)]), (False, [(6, 16), (3, 16)])):
        sets = ["distill.teacher_steps=1", "flow.keyframe_p=1", f"distill.keyframe_guidance={guide}"]
        stage = DistillStage(apply_overrides(TrainConfig(stage="distill", model=spec), sets), None, dit)
        stage.set_null_text(torch.zeros(4, spec.dit.caption_channels), torch.ones(4, dtype=torch.long))
        shapes: list[tuple[int, int]] = []
        hooks = [
            model.register_forward_pre_hook(lambda _, args, out=shapes: out.append(tuple(args[0].shape[:2])))
            for model in (stage.teacher, dit)
        ]
        with torch.no_grad():
            assert stage(batch, BatchRandom(torch.Generator().manual_seed(1)), 0)["loss"].item() > 0
        for hook in hooks:
            hook.remove()
        assert shapes == calls  # teacher call(s), then the student


@pytest.mark.parametrize(
    "bad",
    ["vae.kl=nan", "vae.mse=-1", "vae.foreground=nan", "flow.t_shift=nan", "lora.alpha=nan", "lora.rank=0",
     "joint.flow=-1", "optim.weight_decay=inf", "flow.foreground_threshold=nan", "flow.extension_p=nan",
     "seed=-1", "data.frame_rate=0", "joint.stats_momentum=5", "val_every=-1"],
)  # fmt: skip
def test_nan_and_negative_settings_are_refused_before_training(bad):
    with pytest.raises(ValueError, match=bad.split("=")[0].replace(".", r"\.")):
        apply_overrides(TrainConfig(model=get_preset("tiny")), [bad])


def test_a_training_checkpoint_loads_as_init(world, trained_vae, tmp_path):
    """RUN/checkpoints/step_N/model.safetensors (raw weights) and ema.safetensors (EMA of the trained part)
    open like model files, described by the run's config.json: a new run can start from a mid-run one."""
    from ltxv.weights import open_checkpoint

    run = tmp_path / "run"
    cfg = config(world, "dit", 3, init=trained_vae, save_every=2, ema_decay=0.9)
    train(cfg, run, progress=False)
    step = run / "checkpoints" / "step_00000002"
    raw, ema = open_checkpoint(step / "model.safetensors"), open_checkpoint(step / "ema.safetensors")
    assert raw.vae is not None and raw.dit is not None and ema.vae is None and ema.dit is not None
    assert raw.spec == ema.spec == resolve_config(cfg).model
    train(config(world, "dit", 1, init=step / "model.safetensors"), tmp_path / "next", progress=False)
    vae, dit, trained = build_models(resolve_config(config(world, "dit", 1, init=step / "model.safetensors")))
    weights = load_file(step / "model.safetensors")
    assert trained and all(torch.equal(weights[f"dit.{k}"], v) for k, v in dit.state_dict().items())


def test_vae_on_images_and_clips_together_sets_latent_statistics_over_both(world, tmp_path):
    """A bucketed dataset of still images and clips: batches differ in frames, and the final model's
    normalisation statistics come from both (this crashed at the end of the run, losing the model)."""
    mix = tmp_path / "mix"
    write_dataset(mix / "img", SynthConfig(clips=4, size=64, frames=1, seed=1))
    records = []
    for folder in (mix / "img", world / "data"):
        for line in (folder / "captions.jsonl").read_text().splitlines():
            r = json.loads(line)
            records.append({**r, "media_path": str(folder / r["media_path"])})
    (mix / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = config(world, "vae", 4, **{"data.path": mix, "data.buckets": f"1x64x64;{BUCKET}"})
    final = train(cfg, tmp_path / "run", progress=False)
    sd = load_file(final)
    std = next(v for k, v in sd.items() if k.endswith("latent_std"))
    assert torch.isfinite(std).all() and (std > 0).all()

    from ltxv.train.stages import _channel_stats

    a, b = torch.randn(2, 4, 1, 2, 2), torch.randn(3, 4, 3, 2, 2) * 2 + 1
    mean, sd_ = _channel_stats(a, b)
    flat = torch.cat([a.transpose(0, 1).flatten(1), b.transpose(0, 1).flatten(1)], 1).double()
    torch.testing.assert_close(mean, flat.mean(1).float())
    torch.testing.assert_close(sd_, flat.std(1).float())


def test_a_diverging_run_stops_with_a_message_and_saves_nothing_after_it(world, tmp_path):
    from ltxv.train.loop import TrainingDiverged

    cfg = config(world, "dit", 6, save_every=2, **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
    with pytest.raises(TrainingDiverged, match="diverged.*--lr 1e\\+30"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    for ckpt in (tmp_path / "run" / "checkpoints").glob("step_*"):  # anything saved holds finite weights
        assert all(torch.isfinite(v).all() for v in load_file(ckpt / "model.safetensors").values())


def test_mismatched_text_encoder_or_cache_is_refused_before_the_run_starts(world, tmp_path):
    """A text encoder (or a cache's embeddings / latents) of another width than the transformer takes: one
    ValueError naming both widths and the fix, before config.json or any step."""
    from types import SimpleNamespace

    from ltxv.train.loop import check_inputs_fit

    make_tiny_t5(tmp_path / "t5_64", "flat", d_model=64)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="64-d text embeddings .* caption_channels=32.*--d-model 32"):
        train(config(world, "dit", 2, **{"data.text_encoder": tmp_path / "t5_64"}), run, progress=False)
    assert not (run / "config.json").exists()
    cfg = config(world, "dit", 2)
    dit = ltxv.VideoDiT(cfg.model.dit)
    cache = SimpleNamespace(meta={"latent_channels": 128, "text_hidden_size": 32})
    with pytest.raises(ValueError, match="128-channel latents but the transformer takes 16"):
        check_inputs_fit(cfg, dit, cache, None)
    cache = SimpleNamespace(meta={"latent_channels": 16, "text_hidden_size": 64})
    with pytest.raises(ValueError, match="64-d text embeddings"):
        check_inputs_fit(cfg, dit, cache, None)
    fits = SimpleNamespace(meta={"latent_channels": 16, "text_hidden_size": 32})
    check_inputs_fit(cfg, dit, fits, None)


def _distill_inputs(spec, b: int = 2):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(b, spec.dit.in_channels, 2, 2, 2, generator=g)
    emb, mask = torch.randn(b, 4, spec.dit.caption_channels, generator=g), torch.ones(b, 4, dtype=torch.long)
    return {"latents": latents, "text_emb": emb, "text_mask": mask}


def test_distill_loss_is_zero_when_the_teacher_takes_the_students_step():
    """Student = teacher at the start: with one teacher step and no guidance the target is the student's own
    velocity (loss exactly 0); CFG or more teacher steps make it something else to learn."""
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import DistillStage

    spec = get_preset("tiny")
    batch = _distill_inputs(spec)
    dit = VideoDiT(spec.dit)
    got = {}
    for sets in (["distill.teacher_steps=1", "distill.guidance=1"], ["distill.teacher_steps=1"], []):
        cfg = apply_overrides(TrainConfig(stage="distill", model=spec), ["flow.first_frame_p=0.5", *sets])
        stage = DistillStage(cfg, None, dit)
        stage.set_null_text(torch.zeros(4, spec.dit.caption_channels), torch.ones(4, dtype=torch.long))
        with torch.no_grad():
            got[len(sets)] = stage(batch, BatchRandom(torch.Generator().manual_seed(1)), 0)["loss"].item()
        assert not any(p.requires_grad for p in stage.teacher.parameters())
        assert not any(k.startswith(("teacher.", "_teacher")) for k in stage.state_dict())
        stage.to(torch.float64)  # moves with the stage
        assert stage.teacher.proj_out.weight.dtype == torch.float64
        stage.to(torch.float32)
    assert got[2] == 0.0 and got[1] > 1e-6 and got[0] > 1e-6


def test_distill_teacher_from_a_file(tmp_path):
    """distill.teacher: the teacher is that checkpoint's transformer (the student continues from --init)."""
    from ltxv.dit.model import VideoDiT
    from ltxv.train.stages import DistillStage
    from ltxv.weights import save_checkpoint

    spec = get_preset("tiny")
    batch = _distill_inputs(spec)
    student, other = VideoDiT(spec.dit), VideoDiT(spec.dit)
    for name, dit in (("same", student), ("other", other)):
        save_checkpoint(tmp_path / f"{name}.safetensors", spec, ltxv.VideoVAE(spec.vae), dit)
    got = {}
    for name in ("same", "other"):
        sets = [
            "distill.teacher_steps=1",
            "distill.guidance=1",
            f"distill.teacher={tmp_path / name}.safetensors",
        ]
        cfg = apply_overrides(TrainConfig(stage="distill", model=spec), sets)
        stage = DistillStage(cfg, None, student)
        stage.set_null_text(torch.zeros(4, spec.dit.caption_channels), torch.ones(4, dtype=torch.long))
        with torch.no_grad():
            got[name] = stage(batch, BatchRandom(torch.Generator().manual_seed(1)), 0)["loss"].item()
    assert got["same"] < 1e-10 < got["other"]
    wide = replace(spec.dit, caption_channels=48)
    save_checkpoint(
        tmp_path / "wide.safetensors", replace(spec, dit=wide), ltxv.VideoVAE(spec.vae), VideoDiT(wide)
    )
    cfg = apply_overrides(
        TrainConfig(stage="distill", model=spec), [f"distill.teacher={tmp_path}/wide.safetensors"]
    )
    with pytest.raises(ValueError, match="caption_channels=48, the student 32"):
        DistillStage(cfg, None, student)


def test_distill_trains_a_few_step_student_closer_to_its_guided_teacher(world, trained_vae, tmp_path):
    """`train distill`: the student's 2-step, guidance-free sample moves towards the teacher's 8-step CFG 3
    sample of the same noise and caption (compared with the starting transformer's 2-step sample)."""
    from ltxv.pipeline import Pipeline, TextEmbeddings
    from ltxv.text import TextEncoder

    base = tmp_path / "dit"
    train(config(world, "dit", 2, init=trained_vae), base, progress=False)
    run = tmp_path / "distill"
    sets = {"distill.steps": 2, "distill.teacher_steps": 4, "optim.lr": 0.001}
    final = train(config(world, "distill", 40, init=base / "model.safetensors", **sets), run, progress=False)
    assert_learns(run, factor=0.8)
    assert (run / "samples" / "step_00000040.mp4").stat().st_size > 0
    checkpoints = list(run.glob("checkpoints/step_*/*.safetensors"))
    assert checkpoints, "the run wrote no training checkpoint to check"
    for saved in (final, *checkpoints):
        assert not any("teacher" in k for k in load_file(saved)), saved
    encoder = TextEncoder.from_pretrained(str(world / "t5"))
    caption = json.loads((world / "data" / "captions.jsonl").read_text().splitlines()[0])["caption"]
    text = TextEmbeddings(*encoder.encode([caption], 128))
    null = TextEmbeddings(*encoder.encode([""], 128))
    few = ltxv.SampleConfig(width=64, height=64, num_frames=9, steps=2, guidance=1.0, stg=0.0, seed=3)
    many = replace(few, steps=8, guidance=3.0)
    teacher = Pipeline.from_pretrained(base / "model.safetensors", device="cpu")
    goal = teacher.generate(text, many, negative=null, decode=False).latents
    before = teacher.generate(text, few, decode=False).latents
    after = Pipeline.from_pretrained(final, device="cpu").generate(text, few, decode=False).latents
    assert (after - goal).norm() < 0.7 * (before - goal).norm()  # 0.41-0.47 over seeds 0, 1


def test_distill_needs_a_trained_transformer_and_takes_its_flags(world, trained_vae, tmp_path, capsys):
    from ltxv.cli import main

    args = ["train", "distill", "--data", str(world / "data"), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--dry-run"])  # --init is required
    assert exit_.value.code == 2 and "required: --init" in capsys.readouterr().err
    flags = [
        "--student-steps",
        "3",
        "--teacher-steps",
        "2",
        "--guidance",
        "4.5",
        "--teacher",
        "T",
        "--dry-run",
    ]
    assert main([*args, "--init", str(trained_vae), *flags]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["distill"] == {
        "steps": 3,
        "teacher_steps": 2,
        "guidance": 4.5,
        "teacher": "T",
        "keyframe_guidance": True,
    }
    with pytest.raises(ValueError, match="train distill needs --init MODEL with a trained transformer"):
        build_models(config(world, "distill", 1))
    for bad in ("distill.steps=0", "distill.teacher_steps=0", "distill.guidance=0.5", "distill.guidance=nan"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            apply_overrides(TrainConfig(stage="distill"), [bad])
