"""Latent upsampler: every variant's shape, official-layout save/load, strict errors, AdaIN, parity."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from ltxv.upsampler import (
    LatentUpsampler,
    UpsamplerConfig,
    adain_match,
    load_upsampler,
    save_upsampler,
)

TINY = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
VARIANTS = {
    "spatial": TINY,  # the released 0.9.7/0.9.8 spatial upscalers, shrunk
    "temporal": replace(TINY, spatial_upsample=False, temporal_upsample=True),  # released 0.9.7 temporal
    "spatiotemporal": replace(TINY, temporal_upsample=True),
    "dims2": replace(TINY, dims=2),
}


def tiny_model(cfg: UpsamplerConfig = TINY, seed: int = 0) -> LatentUpsampler:
    torch.manual_seed(seed)
    model = LatentUpsampler(cfg).eval()
    with torch.no_grad():  # GroupNorm starts at identity; randomize it so the norms' weights are exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    return model


def latents(cfg: UpsamplerConfig = TINY, f: int = 3, h: int = 4, w: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, f, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("spatial", (2, 16, 3, 8, 10)),
        ("temporal", (2, 16, 5, 4, 5)),
        ("spatiotemporal", (2, 16, 5, 8, 10)),
        ("dims2", (2, 16, 3, 8, 10)),
    ],
)
def test_output_shape(name, expected):
    cfg = VARIANTS[name]
    with torch.no_grad():
        out = tiny_model(cfg)(latents(cfg))
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()


def test_official_key_names():
    keys = set(LatentUpsampler(replace(TINY, num_blocks_per_stage=2)).state_dict())
    for stage in ("res_blocks", "post_upsample_res_blocks"):
        for i in range(2):
            for part in ("conv1", "norm1", "conv2", "norm2"):
                assert {f"{stage}.{i}.{part}.weight", f"{stage}.{i}.{part}.bias"} <= keys
    for part in ("initial_conv", "initial_norm", "upsampler.0", "final_conv"):
        assert {f"{part}.weight", f"{part}.bias"} <= keys
    assert len(keys) == 2 * (4 + 2 * 2 * 4)


def test_dims2_is_per_frame():
    """dims=2 convolves every frame alone: changing the last frame leaves frame 0's output unchanged."""
    model, x = tiny_model(VARIANTS["dims2"]), latents(VARIANTS["dims2"])
    y = x.clone()
    y[:, :, -1] += 1.0
    with torch.no_grad():
        assert torch.equal(model(x)[:, :, 0], model(y)[:, :, 0])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(mid_channels=48), "multiple of 32"),
        (dict(spatial_upsample=False), "spatial_upsample or temporal_upsample"),
        (dict(dims=2, temporal_upsample=True), "needs dims=3"),
        (dict(dims=1), "dims must be 2 or 3"),
        (dict(in_channels=16.0), "in_channels must be int"),
    ],
)
def test_config_rejects(change, match):
    with pytest.raises(ValueError, match=match):
        replace(TINY, **change)


def test_config_dict_round_trip_and_rejects():
    d = TINY.to_dict()
    assert d["_class_name"] == "LatentUpsampler"
    assert UpsamplerConfig.from_dict(json.loads(json.dumps(d))) == TINY
    with pytest.raises(ValueError, match="LTX-2"):
        UpsamplerConfig.from_dict({**d, "rational_spatial_scale": 1.5, "use_rational_resampler": True})
    with pytest.raises(ValueError, match=r"unknown keys \['spatial_scale'\]"):
        UpsamplerConfig.from_dict({**d, "spatial_scale": 2})
    with pytest.raises(ValueError, match=r"missing keys \['dims'\]"):
        UpsamplerConfig.from_dict({k: v for k, v in d.items() if k != "dims"})
    with pytest.raises(ValueError, match="_class_name"):
        UpsamplerConfig.from_dict({**d, "_class_name": "CausalVideoAutoencoder"})


@pytest.mark.parametrize("name", ["spatial", "temporal"])
def test_save_load_round_trip_bit_identical(tmp_path, name):
    cfg = VARIANTS[name]
    model = tiny_model(cfg)
    path = tmp_path / "up.safetensors"
    save_upsampler(path, model)
    assert [p.name for p in tmp_path.iterdir()] == ["up.safetensors"]  # temp file replaced, none left
    loaded = load_upsampler(path)
    assert loaded.config == cfg and not loaded.training
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = latents(cfg)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_upsampler(path, dtype=torch.bfloat16).final_conv.weight.dtype == torch.bfloat16


def _write(path, tensors, config: dict | None) -> None:
    meta = None if config is None else {"config": json.dumps(config)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def test_strict_errors_name_keys(tmp_path):
    sd = tiny_model().state_dict()
    path = tmp_path / "up.safetensors"

    _write(path, sd, replace(TINY, num_blocks_per_stage=2).to_dict())
    with pytest.raises(ValueError, match=r"missing: .*res_blocks\.1\.conv1\.weight") as err:
        load_upsampler(path)
    assert "post_upsample_res_blocks.1.norm2.bias" in str(err.value)

    _write(path, {**sd, "extra.weight": torch.zeros(3)}, TINY.to_dict())
    with pytest.raises(ValueError, match=r"unexpected: extra\.weight"):
        load_upsampler(path)

    _write(path, sd, replace(TINY, in_channels=8).to_dict())
    with pytest.raises(
        ValueError, match=r"wrong shape .*initial_conv\.weight \(32, 16, 3, 3, 3\) vs \(32, 8,"
    ):
        load_upsampler(path)

    _write(path, sd, VARIANTS["temporal"].to_dict())  # spatial weights, temporal config: upsampler.0 differs
    with pytest.raises(ValueError, match=r"upsampler\.0\.weight \(128, 32, 3, 3\) vs \(64, 32, 3, 3, 3\)"):
        load_upsampler(path)


def test_wrong_kind_files(tmp_path):
    model_file = tmp_path / "ltxv-13b.safetensors"
    _write(model_file, {"vae.encoder.conv_in.conv.weight": torch.zeros(2, 2)}, {"vae": {}})
    with pytest.raises(ValueError, match="an LTX-Video model checkpoint, not a latent upsampler"):
        load_upsampler(model_file)

    other = tmp_path / "other.safetensors"
    _write(other, {"weight": torch.zeros(2)}, None)
    with pytest.raises(ValueError, match="not an LTX-Video latent upsampler"):
        load_upsampler(other)

    no_meta = tmp_path / "no_meta.safetensors"
    _write(no_meta, tiny_model().state_dict(), None)
    with pytest.raises(ValueError, match="no 'config' metadata"):
        load_upsampler(no_meta)

    pickle = tmp_path / "up.pt"
    torch.save(tiny_model().state_dict(), pickle)
    with pytest.raises(ValueError, match="not a readable safetensors file") as err:
        load_upsampler(pickle)
    assert "\n" not in str(err.value)

    with pytest.raises(ValueError, match="no such file"):
        load_upsampler(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="is a folder"):
        load_upsampler(tmp_path)


def test_adain_matches_reference_stats():
    x = latents(f=5, h=8, w=10, seed=2) * 3.0 + 1.0
    ref = latents(f=3, h=4, w=5, seed=3) * torch.linspace(0.5, 2.0, 16).view(1, 16, 1, 1, 1) - 0.7
    out = adain_match(x, ref)
    std, mean = torch.std_mean(out, dim=(2, 3, 4))
    ref_std, ref_mean = torch.std_mean(ref, dim=(2, 3, 4))
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=1e-6)  # Bessel-corrected, as torch.std_mean
    # the per-channel shape is kept: out is an affine map of x with positive slope
    corr = torch.corrcoef(torch.stack([x[0, 0].flatten(), out[0, 0].flatten()]))[0, 1]
    assert corr > 0.9999

    assert torch.equal(adain_match(x, ref, factor=0.0), x)
    torch.testing.assert_close(adain_match(x, ref, factor=0.5), (x + out) / 2, rtol=0, atol=1e-5)
    assert adain_match(x.bfloat16(), ref, factor=1.0).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="equal B, C"):
        adain_match(x, ref[:, :8])


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_with_official_module(tmp_path, name):
    official = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    cfg = VARIANTS[name]
    ours = tiny_model(cfg)
    theirs = official.LatentUpsampler(**{k: v for k, v in cfg.to_dict().items() if k != "_class_name"})
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval()
    x = latents(cfg)
    with torch.no_grad():
        err = _rel_err(ours(x), theirs(x))
    assert err <= 1e-5, f"relative error {err:.2e}"

    # Both directions of the file format: the official loader reads our file, we read a file in its layout.
    save_upsampler(tmp_path / "ours.safetensors", ours)
    reloaded = official.LatentUpsampler.from_pretrained(tmp_path / "ours.safetensors").eval()
    _write(tmp_path / "theirs.safetensors", theirs.state_dict(), theirs.config())
    ours2 = load_upsampler(tmp_path / "theirs.safetensors")
    with torch.no_grad():
        assert torch.equal(reloaded(x), theirs(x))
        assert torch.equal(ours2(x), ours(x))


def test_adain_parity_with_official():
    pipeline = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    x, ref = latents(f=5, h=8, w=10, seed=4) * 2.0, latents(seed=5) + 0.3
    for factor in (1.0, 0.25):
        expected = pipeline.adain_filter_latent(x, ref, factor=factor)
        assert _rel_err(adain_match(x, ref, factor), expected) <= 1e-6
