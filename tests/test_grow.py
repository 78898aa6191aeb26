"""`ltxv grow`: the grown model computes what the old one did, its new layers train, bad requests named."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_
from safetensors.torch import load_file

import ltxv
from ltxv.cli import main
from ltxv.config import STG_MODES
from ltxv.data.synth import SynthConfig, write_dataset
from ltxv.dit.model import SkipLayers
from ltxv.grow import GrowConfig, grow_checkpoint, grown_encoder_blocks
from ltxv.presets import PRESETS
from ltxv.weights import open_checkpoint, save_checkpoint

SPEC = PRESETS["tiny"]


@pytest.fixture
def model_file(tmp_path):
    """A tiny model with every weight random (zero-initialised layers would hide a copy that is not inert)."""
    vae, dit = randomize_(ltxv.VideoVAE(SPEC.vae), 1), randomize_(ltxv.VideoDiT(SPEC.dit), 2)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, SPEC, vae, dit)
    return path, vae, dit


def _dit_inputs():
    g = torch.Generator().manual_seed(0)
    latents, t = torch.randn(2, 16, 2, 2, 3, generator=g), torch.rand(2, generator=g)
    return latents, t, torch.randn(2, 5, 32, generator=g), torch.ones(2, 5)


def test_grown_transformer_gives_the_same_velocity_and_its_copies_train(model_file, tmp_path):
    path, vae, dit = model_file
    grown_file = tmp_path / "g.safetensors"
    grown_spec = grow_checkpoint(path, grown_file, GrowConfig(dit_layers=3 * SPEC.dit.num_layers))
    assert grown_spec.spec.dit.num_layers == 6
    assert "old transformer block i is now block 3·i + 2" in grown_spec.notes[0]
    grown = ltxv.load_transformer(grown_file)
    assert len(grown.transformer_blocks) == 6
    inputs = _dit_inputs()
    with torch.no_grad():
        torch.testing.assert_close(grown(*inputs), dit(*inputs), atol=1e-6, rtol=1e-5)
        # per-token timesteps (conditioning tokens) and the once-per-generation text keys/values
        latents, t, text, mask = inputs
        per_token = torch.rand(2, 2 * 2 * 3, generator=torch.Generator().manual_seed(5))
        ctx_old, ctx_new = dit.prepare_text(text, mask), grown.prepare_text(text, mask)
        torch.testing.assert_close(
            grown(latents, per_token, ctx_new), dit(latents, per_token, ctx_old), atol=1e-6, rtol=1e-5
        )
        # STG on old block 1 is STG on new block 3·1 + 2 (the last block stays an original one)
        skip = dict(batch_mask=torch.tensor([True, False]))
        for mode in STG_MODES:
            old = dit(*inputs, skip=SkipLayers((1,), mode=mode, **skip))
            assert not torch.allclose(old, dit(*inputs)), mode  # the perturbation does something
            new = grown(*inputs, skip=SkipLayers((5,), mode=mode, **skip))
            torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)
    # old block i is new block 3i + 2; the copies 3i, 3i + 1 have its weights but zero output projections
    old_sd, new_sd = dit.state_dict(), grown.state_dict()
    q = "attn1.to_q.weight"
    assert torch.equal(new_sd[f"transformer_blocks.5.{q}"], old_sd[f"transformer_blocks.1.{q}"])
    assert torch.equal(new_sd[f"transformer_blocks.3.{q}"], old_sd[f"transformer_blocks.1.{q}"])
    assert not new_sd["transformer_blocks.3.ff.net.2.weight"].any()
    assert torch.equal(
        new_sd["transformer_blocks.5.ff.net.2.weight"], old_sd["transformer_blocks.1.ff.net.2.weight"]
    )
    grown(*inputs).square().mean().backward()
    for name in ("attn1.to_out.0", "attn2.to_out.0", "ff.net.2"):
        assert grown.transformer_blocks[3].get_submodule(name).weight.grad.abs().sum() > 0
    # the VAE is copied bit for bit
    grown_vae = ltxv.load_vae(grown_file).state_dict()
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in grown_vae.items())


def test_grown_encoder_encodes_the_same_and_trains_from_init(model_file, tmp_path):
    path, vae, _ = model_file
    spec = grow_checkpoint(path, tmp_path / "g.safetensors", GrowConfig(encoder_res=True)).spec
    kinds = [b.kind for b in spec.vae.encoder_blocks]
    # the tiny encoder: res, space, time, all, all, res -> a res stage after the first three compressions
    assert kinds == [
        "res_x",
        "compress_space_res",
        "res_x",
        "compress_time_res",
        "res_x",
        "compress_all_res",
        "res_x",
        "compress_all_res",
        "res_x",
    ]
    grown = ltxv.load_vae(tmp_path / "g.safetensors")
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for a, b in zip(grown.encoder(video), vae.encoder(video), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(v, vae.decoder.state_dict()[k]) for k, v in grown.decoder.state_dict().items())
    assert open_checkpoint(tmp_path / "g.safetensors").spec.vae.encoder_blocks == spec.vae.encoder_blocks
    with pytest.raises(ValueError, match="already followed by a res stage"):
        grow_checkpoint(tmp_path / "g.safetensors", tmp_path / "gg.safetensors", GrowConfig(encoder_res=True))

    # `ltxv train vae --init GROWN`: the new stages' zero convolutions move
    write_dataset(tmp_path / "data", SynthConfig(clips=2, size=64, frames=9, seed=0))
    run = tmp_path / "run"
    args = ["train", "vae", "--init", str(tmp_path / "g.safetensors"), "--data", str(tmp_path / "data")]
    args += ["--buckets", "9x64x64", "--out", str(run), "--steps", "2", "--batch-size", "2", "--lr", "1e-3"]
    assert main(args) == 0
    trained = load_file(run / "model.safetensors")
    assert trained["vae.encoder.down_blocks.2.res_blocks.0.conv2.conv.weight"].abs().sum() > 0


def test_official_encoders_have_nothing_to_grow():
    for preset in ("2b", "ltxv-2b-0.9"):  # official encoders: a res stage after every compression
        with pytest.raises(ValueError, match="already followed by a res stage; leave the flag out"):
            grown_encoder_blocks(PRESETS[preset].vae.encoder_blocks)


def test_grow_cli_writes_and_names_bad_requests(model_file, tmp_path, capsys):
    path, _, _ = model_file
    out = tmp_path / "g.safetensors"
    assert main(["grow", str(path), str(out), "--dit-layers", "4", "--encoder-res"]) == 0
    printed = capsys.readouterr().out
    assert "4 transformer blocks; encoder res_x compress_space_res res_x" in printed
    assert "renumber STG blocks" in printed
    cases = {
        "nothing to grow": [],
        "give a larger multiple of 2 up to 32 (e.g. 4)": ["--dit-layers", "3"],
        "up to 32": ["--dit-layers", "1000000000000"],
        "--dit-layers must be >= 0": ["--dit-layers", "-2"],
        "--seed must be in": ["--encoder-res", "--seed", "-1"],
    }
    for message, flags in cases.items():
        assert main(["grow", str(path), str(tmp_path / "x.safetensors"), *flags]) == 2, message
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x.safetensors").exists()
    assert main(["grow", str(path), str(out), "--dit-layers", "4"]) == 2
    assert "already exists" in capsys.readouterr().err
    save_checkpoint(tmp_path / "vae.safetensors", SPEC, vae=ltxv.VideoVAE(SPEC.vae))
    vae_only = str(tmp_path / "vae.safetensors")
    assert main(["grow", vae_only, str(tmp_path / "x.safetensors"), "--dit-layers", "4"]) == 2
    assert "holds no transformer" in capsys.readouterr().err
