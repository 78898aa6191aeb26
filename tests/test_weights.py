"""Checkpoints: every format loads, conversions are bit-identical round trips, errors name the problem."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import DIFFUSERS_DIT_CONFIG, DIFFUSERS_VAE_CONFIGS, randomize_, shard_safetensors
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ltxv
import ltxv.weights as weights
from ltxv.convert import vae_config_to_native
from ltxv.presets import PRESETS
from ltxv.weights import CheckpointError, convert_checkpoint, open_checkpoint, save_checkpoint

SPEC = PRESETS["tiny"]


@pytest.fixture
def native_file(tmp_path):
    """A tiny model in the official single-file layout (incl. the unused statistics official files carry)."""
    vae, dit = randomize_(ltxv.VideoVAE(SPEC.vae), 1), randomize_(ltxv.VideoDiT(SPEC.dit), 2)
    path = tmp_path / "tiny-native.safetensors"
    save_checkpoint(path, SPEC, vae, dit, fmt="native")
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    for name in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means"):
        tensors[f"vae.per_channel_statistics.{name}"] = torch.rand(16)
    save_file(tensors, path, metadata=meta)
    return path, vae, dit


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_every_format_loads_the_same_weights(native_file, tmp_path):
    path, vae, dit = native_file
    convert_checkpoint(path, tmp_path / "ours.safetensors", "ltxv")
    convert_checkpoint(path, tmp_path / "diff", "diffusers")
    for src in (path, tmp_path / "ours.safetensors", tmp_path / "diff", tmp_path / "diff" / "vae"):
        assert _same(ltxv.load_vae(src).state_dict(), vae.state_dict()), src
    for src in (path, tmp_path / "ours.safetensors", tmp_path / "diff", tmp_path / "diff" / "transformer"):
        assert _same(ltxv.load_transformer(src).state_dict(), dit.state_dict()), src


def test_round_trip_native_ltxv_diffusers_native_is_bit_identical(native_file, tmp_path):
    path, _, _ = native_file
    convert_checkpoint(path, tmp_path / "a.safetensors", "ltxv")
    convert_checkpoint(tmp_path / "a.safetensors", tmp_path / "b", "diffusers")
    convert_checkpoint(tmp_path / "b", tmp_path / "c.safetensors", "native")
    original, back = load_file(path), load_file(tmp_path / "c.safetensors")
    unused = {
        k
        for k in original
        if k.split(".")[-1] in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")
    }
    assert len(unused) == 3  # the three statistics inference never uses are not carried (as diffusers does)
    assert _same({k: v for k, v in original.items() if k not in unused}, back)
    with safe_open(tmp_path / "c.safetensors", framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    assert config["vae"] == vae_config_to_native(SPEC.vae)


@pytest.mark.parametrize("version", list(DIFFUSERS_VAE_CONFIGS))
def test_real_diffusers_folders_load(version, tmp_path):
    """Folders written by diffusers itself (save_pretrained), root and component layouts."""
    diffusers = pytest.importorskip("diffusers")
    vae = randomize_(diffusers.AutoencoderKLLTXVideo(**DIFFUSERS_VAE_CONFIGS[version]), 3)
    dit = randomize_(diffusers.LTXVideoTransformer3DModel(**DIFFUSERS_DIT_CONFIG), 4)
    vae.save_pretrained(tmp_path / "vae")
    dit.save_pretrained(tmp_path / "transformer")
    ours = ltxv.load_vae(tmp_path)
    assert torch.equal(ours.latent_std, vae.latents_std)
    assert ltxv.load_transformer(tmp_path / "transformer").cfg.num_layers == 2
    # diffusers' schema has no causal_temporal_positioning: on beside a 0.9.5+ VAE (the official models'
    # positions, with a note), off for older ones and for a transformer folder alone (nothing tells)
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.spec.dit.causal_temporal_positioning == (version == "0.9.5")
    assert bool(ckpt.notes) == (version == "0.9.5")
    assert not open_checkpoint(tmp_path / "transformer").spec.dit.causal_temporal_positioning
    # and back: our diffusers export loads in diffusers with every key consumed
    save_checkpoint(tmp_path / "export", open_checkpoint(tmp_path).spec, ours, fmt="diffusers")
    again = diffusers.AutoencoderKLLTXVideo.from_pretrained(tmp_path / "export" / "vae")
    assert all(
        torch.equal(a, b) for a, b in zip(again.state_dict().values(), vae.state_dict().values(), strict=True)
    )


def test_meta_load_with_dtype_and_no_leftover_meta_tensors(native_file):
    path, _, dit = native_file
    loaded = ltxv.load_transformer(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in loaded.state_dict().values())
    torch.testing.assert_close(loaded.proj_out.weight.float(), dit.proj_out.weight.bfloat16().float())


def test_missing_unexpected_and_shape_errors_name_the_keys(native_file, tmp_path):
    path, _, _ = native_file
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    broken = dict(tensors)
    del broken["model.diffusion_model.proj_out.bias"]
    broken["model.diffusion_model.extra.weight"] = torch.zeros(1)
    broken["model.diffusion_model.patchify_proj.weight"] = torch.zeros(3, 3)
    save_file(broken, tmp_path / "broken.safetensors", metadata=meta)
    with pytest.raises(CheckpointError) as err:
        ltxv.load_transformer(tmp_path / "broken.safetensors")
    msg = str(err.value)
    assert "proj_out.bias" in msg and "extra.weight" in msg and "patchify_proj.weight (3, 3)" in msg
    assert "\n" not in msg
    stray = dict(tensors, **{"text_encoder.weight": torch.zeros(1)})
    save_file(stray, tmp_path / "stray.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="text_encoder.weight"):
        open_checkpoint(tmp_path / "stray.safetensors")


def test_unreadable_and_wrong_kind_files(native_file, tmp_path):
    path, vae, _ = native_file
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ltxv.load_vae(junk)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="truncated|readable|cannot read"):
        ltxv.load_vae(truncated)
    with pytest.raises(CheckpointError, match="no such file"):
        ltxv.load_vae(tmp_path / "missing.safetensors")
    vae_only = tmp_path / "vae.safetensors"
    save_checkpoint(vae_only, SPEC, vae=vae)
    with pytest.raises(CheckpointError, match="holds no transformer"):
        ltxv.load_transformer(vae_only)
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"architectures": ["T5EncoderModel"], "d_model": 8}))
    with pytest.raises(CheckpointError, match="'T5EncoderModel'.*a text encoder: pass it as --text-encoder"):
        open_checkpoint(t5)
    other = tmp_path / "other.safetensors"
    save_file({"initial_conv.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="upsampler"):
        ltxv.load_vae(other)


def test_sharded_diffusers_folders_load_and_bad_shards_are_named(native_file, tmp_path):
    """Large diffusers components come as shards listed in an index; a cut download leaves one truncated."""
    path, _, dit = native_file
    convert_checkpoint(path, tmp_path / "diff", "diffusers")
    folder = tmp_path / "diff" / "transformer"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    weight_map = shard_safetensors(folder / "diffusion_pytorch_model.safetensors", index.name)
    assert _same(ltxv.load_transformer(tmp_path / "diff").state_dict(), dit.state_dict())
    shard = folder / "model-00002-of-00002.safetensors"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        open_checkpoint(tmp_path / "diff")
    shard.write_bytes(whole)
    index.write_text(
        json.dumps({"weight_map": {**weight_map, "extra.weight": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="1 tensors it lists are not in their shard .*'extra.weight'"):
        open_checkpoint(tmp_path / "diff")


def test_pickle_folders_are_refused(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo"}))
    (tmp_path / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickles"):
        ltxv.load_vae(tmp_path)


def test_native_file_without_metadata_uses_key_based_version_guess(tmp_path):
    with torch.device("meta"):
        keys = ltxv.VideoVAE(PRESETS["ltxv-2b-0.9.1"].vae).state_dict().keys()
    # headers only: a tiny stand-in tensor per key is enough for identification
    save_file({f"vae.{k}": torch.zeros(1) for k in keys}, tmp_path / "old.safetensors")
    ckpt = open_checkpoint(tmp_path / "old.safetensors")
    assert ckpt.version == "0.9.1" and ckpt.spec.vae == PRESETS["ltxv-2b-0.9.1"].vae and ckpt.notes
    with pytest.raises(CheckpointError, match="wrong shape"):  # the stand-in shapes are then caught
        ltxv.load_vae(tmp_path / "old.safetensors")


def test_saving_is_atomic_and_refuses_to_clobber_folders(native_file, tmp_path):
    path, vae, _ = native_file
    (tmp_path / "exists").mkdir()
    with pytest.raises(ValueError, match="exists'.*already exists"):
        convert_checkpoint(path, tmp_path / "exists", "diffusers")
    save_checkpoint(tmp_path / "v.safetensors", SPEC, vae=vae)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") or p.startswith(".")]


def test_convert_refuses_bad_targets_before_reading_any_tensor(native_file, tmp_path, monkeypatch):
    path, _, _ = native_file
    (tmp_path / "y.png").write_bytes(b"a picture")
    (tmp_path / "d.safetensors").mkdir()
    (tmp_path / "t.txt").write_text("a file")
    monkeypatch.setattr(weights, "read_state_dicts", lambda ckpt: pytest.fail("converted before refusing"))
    cases = [
        (path, "ltxv", "onto itself"),
        (tmp_path / "." / path.name, "native", "onto itself"),
        (tmp_path / "y.png", "native", r"y\.png' already exists; give a new name or remove it"),
        (
            tmp_path / "new.png",
            "native",
            r"new\.png'.*one \.safetensors file; give a path ending in \.safetensors",
        ),
        (tmp_path / "d.safetensors", "ltxv", r"d\.safetensors': it is a folder"),
        (
            tmp_path / "d.safetensors",
            "diffusers",
            r"d\.safetensors'.*a folder; give a name without \.safetensors",
        ),
        (tmp_path / "t.txt" / "a.safetensors", "ltxv", r"t\.txt' is a file, not a folder"),
    ]
    for dst, fmt, message in cases:
        with pytest.raises(ValueError, match=message):
            convert_checkpoint(path, dst, fmt)
    assert (tmp_path / "y.png").read_bytes() == b"a picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors", "t.txt", path.name, "y.png"]


@pytest.mark.parametrize("fmt, name", [("ltxv", "o.safetensors"), ("diffusers", "dif")])
def test_converted_files_get_the_umask_mode_in_new_parent_folders(native_file, tmp_path, fmt, name):
    path, _, _ = native_file
    root = tmp_path
    if os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        root = Path(tempfile.mkdtemp(dir="/dev/shm"))  # a target on another filesystem than /tmp
    try:
        umask = os.umask(0o027)
        try:
            convert_checkpoint(path, root / "x" / "sub" / name, fmt)
        finally:
            os.umask(umask)
        made = sorted((root / "x").rglob("*"))
        assert {p.stat().st_mode & 0o777 for p in made if p.is_dir()} == {0o750}  # x, x/sub, ...
        assert {p.stat().st_mode & 0o777 for p in made if p.is_file()} == {0o640}
        assert not [p for p in made if p.name.startswith(".")]
    finally:
        if root != tmp_path:
            shutil.rmtree(root)


def test_fp8_files_load_in_bf16(native_file, tmp_path):
    path, _, dit = native_file
    tensors = {
        k: v.to(torch.float8_e4m3fn) if k.endswith("weight") and v.ndim == 2 else v
        for k, v in load_file(path).items()
    }
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, tmp_path / "fp8.safetensors", metadata=meta)
    loaded = ltxv.load_transformer(tmp_path / "fp8.safetensors")
    assert loaded.proj_out.weight.dtype == torch.bfloat16
    expected = dit.proj_out.weight.to(torch.float8_e4m3fn).to(torch.bfloat16)
    assert torch.equal(loaded.proj_out.weight, expected)


def test_convert_can_cast_to_bf16(tmp_path):
    import torch

    from ltxv.config import ModelSpec
    from ltxv.dit.model import VideoDiT
    from ltxv.presets import get_preset
    from ltxv.vae.model import VideoVAE
    from ltxv.weights import convert_checkpoint, load_transformer, save_checkpoint

    spec: ModelSpec = get_preset("tiny")
    dit = VideoDiT(spec.dit)
    save_checkpoint(tmp_path / "a.safetensors", spec, VideoVAE(spec.vae), dit)
    convert_checkpoint(tmp_path / "a.safetensors", tmp_path / "b.safetensors", "ltxv", torch.bfloat16)
    half = load_transformer(tmp_path / "b.safetensors")
    assert (tmp_path / "b.safetensors").stat().st_size < 0.6 * (tmp_path / "a.safetensors").stat().st_size
    for (name, p), q in zip(dit.named_parameters(), half.parameters(), strict=True):
        assert q.dtype == torch.bfloat16
        torch.testing.assert_close(q.float(), p.detach().to(torch.bfloat16).float(), msg=name)


@pytest.mark.parametrize(
    "scheduler, kind",
    [
        ({"shifting": "SD3", "sampler": "Uniform", "target_shift_terminal": 0.1}, "sd3"),
        ({"shifting": "SD3", "target_shift_terminal": 0.1}, "sd3"),  # sampler's default is Uniform
        ({"shifting": None, "sampler": "LinearQuadratic"}, "linear_quadratic"),
        ({"shifting": None}, "linear_quadratic"),  # spec §5.4: an unshifted 0.9.5+ file
        ({"shifting": "SD3", "sampler": "LinearQuadratic"}, None),
        ({"shifting": "SimpleDiffusion", "sampler": "Uniform"}, None),
        ({"shifting": None, "sampler": "Uniform"}, None),
        ({"shifting": None, "sampler": "Constant"}, None),
    ],
)
def test_native_scheduler_metadata(native_file, tmp_path, scheduler, kind):
    """The official scheduler's sampler (base timesteps) and shifting are independent: the two combinations
    the checkpoints use load; any other is refused by name rather than sampled with the wrong schedule."""
    path = tmp_path / "s.safetensors"
    with safe_open(native_file[0], framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config["scheduler"] = {"_class_name": "RectifiedFlowScheduler", **scheduler}
    save_file(tensors, path, metadata={**meta, "config": json.dumps(config)})
    if kind is None:
        with pytest.raises(CheckpointError, match=f"sampler={scheduler['sampler']!r}"):
            open_checkpoint(path)
    else:
        assert open_checkpoint(path).spec.scheduler.kind == kind
