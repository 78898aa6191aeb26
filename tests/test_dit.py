"""VideoDiT: parity with diffusers (per-sample/per-token t, masks, shapes), RoPE, STG, coordinates."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DIFFUSERS_DIT_CONFIG, randomize_, rel_err

from ltxv.config import DiTConfig
from ltxv.convert import dit_config_from_diffusers, dit_keys_from_diffusers
from ltxv.dit.model import SkipLayers, VideoDiT
from ltxv.layers.rope import apply_rope, latent_pixel_coords, rope_cos_sin

diffusers = pytest.importorskip("diffusers")
TOL = 1e-4  # required relative error (fp32); measured 0.0 (bit-identical on CPU)


def _pair() -> tuple[VideoDiT, torch.nn.Module]:
    ref = randomize_(diffusers.LTXVideoTransformer3DModel(**DIFFUSERS_DIT_CONFIG).eval(), seed=5)
    ours = VideoDiT(dit_config_from_diffusers(dict(ref.config))).eval()
    ours.load_state_dict(dit_keys_from_diffusers(ref.state_dict()), strict=True)
    return ours, ref


def _reference(ref, latents, t, text, mask, fps):
    b, c, f, h, w = latents.shape
    tokens = latents.flatten(2).transpose(1, 2)  # (B, N, C), frame-major
    t = t if t.ndim == 2 else t[:, None]
    out = ref(
        tokens,
        text,
        t * 1000,
        mask,
        num_frames=f,
        height=h,
        width=w,
        rope_interpolation_scale=(8 / fps, 32, 32),
        return_dict=False,
    )[0]
    return out.transpose(1, 2).reshape(b, c, f, h, w)


@pytest.mark.parametrize("shape", [(2, 16, 3, 4, 6), (1, 16, 1, 5, 3), (2, 16, 2, 2, 2)])
@pytest.mark.parametrize("per_token", [False, True])
def test_matches_diffusers(shape, per_token):
    ours, ref = _pair()
    g = torch.Generator().manual_seed(0)
    b, _, f, h, w = shape
    latents = torch.randn(shape, generator=g)
    t = torch.rand((b, f * h * w) if per_token else (b,), generator=g)
    text = torch.randn(b, 7, 24, generator=g)
    mask = torch.ones(b, 7)
    mask[-1, 3:] = 0
    with torch.no_grad():
        v = ours(latents, t, text, mask, frame_rate=24.0)
        v_ref = _reference(ref, latents, t, text, mask, 24.0)
    assert v.shape == latents.shape
    assert rel_err(v, v_ref) < TOL


def test_text_mask_hides_padding():
    ours, _ = _pair()
    latents, text = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 6, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    other = text.clone()
    other[:, 3:] = torch.randn(1, 3, 24) * 10
    with torch.no_grad():
        a, b = ours(latents, 0.5, text, mask), ours(latents, 0.5, other, mask)
        c = ours(latents, 0.5, other, torch.ones(1, 6))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_token_input_with_coords_equals_grid_input():
    ours, _ = _pair()
    latents, text = torch.randn(2, 16, 2, 3, 2), torch.randn(2, 5, 24)
    tokens = latents.flatten(2).transpose(1, 2)
    coords = ours.token_coords(2, 3, 2, 2, torch.device("cpu"))
    with torch.no_grad():
        grid = ours(latents, torch.tensor([0.3, 0.9]), text)
        tok = ours(tokens, torch.tensor([0.3, 0.9]), text, coords=coords)
    torch.testing.assert_close(tok, grid.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="coords"):
        ours(tokens, 0.5, text)
    with pytest.raises(ValueError, match="timestep"):
        ours(latents, torch.zeros(3), text)


def test_per_token_timestep_equals_per_sample_when_constant():
    ours, _ = _pair()
    latents, text = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 4, 24)
    with torch.no_grad():
        a = ours(latents, torch.tensor([0.4]), text)
        b = ours(latents, torch.full((1, 8), 0.4), text)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rope_follows_the_spec():
    """Channels 0..(D mod 6)-1 unrotated; pair (p + 2m, p + 2m + 1) rotates by f_k * pi/2 * (2 frac_a - 1),
    m = 3k + a, f_k = theta^(k / (n - 1)); time in seconds / 20, space in pixels / 2048."""
    dim, theta = 16, 10000.0
    coords = torch.tensor([[[16.0, 64.0, 96.0]]])  # pixel frame 16 at 24 fps, y 64, x 96
    cos, sin = rope_cos_sin(coords, 24.0, dim, theta, (20.0, 2048.0, 2048.0))
    n, pad = dim // 6, dim % 6
    frac = [16 / 24 / 20, 64 / 2048, 96 / 2048]
    for k in range(n):
        for a in range(3):
            angle = theta ** (k / (n - 1)) * math.pi / 2 * (2 * frac[a] - 1)
            m = 3 * k + a
            tol = 1e-6 + 1e-6 * abs(
                angle
            )  # fp32 angles up to ~1.6e4 rad: float32 rounding of the angle itself
            for ch in (pad + 2 * m, pad + 2 * m + 1):
                assert cos[0, 0, ch].item() == pytest.approx(math.cos(angle), abs=tol)
                assert sin[0, 0, ch].item() == pytest.approx(math.sin(angle), abs=tol)
    x = torch.randn(1, 1, dim)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out[..., :pad], x[..., :pad])
    torch.testing.assert_close(out.norm(), x.norm())  # rotations preserve length


def test_causal_temporal_positioning_coordinates():
    plain = latent_pixel_coords(3, 1, 2, (8, 32, 32), causal=False, device=torch.device("cpu"))
    causal = latent_pixel_coords(3, 1, 2, (8, 32, 32), causal=True, device=torch.device("cpu"))
    assert plain[:, 0].tolist() == [0, 0, 8, 8, 16, 16]
    assert causal[:, 0].tolist() == [0, 0, 1, 1, 9, 9]  # latent frame f>=1 starts at pixel frame 8f-7
    assert plain[:, 2].tolist() == [0, 32] * 3


@pytest.mark.parametrize("mode", ["attention_values", "attention_skip", "transformer_block"])
def test_stg_perturbs_only_selected_batch_elements_and_blocks(mode):
    ours, _ = _pair()
    latents = torch.randn(1, 16, 2, 2, 2).expand(2, -1, -1, -1, -1)
    text = torch.randn(1, 4, 24).expand(2, -1, -1)
    skip = SkipLayers(blocks=(1,), batch_mask=torch.tensor([False, True]), mode=mode)
    with torch.no_grad():
        plain = ours(latents, 0.5, text)
        perturbed = ours(latents, 0.5, text, skip=skip)
    torch.testing.assert_close(perturbed[0], plain[0])
    assert not torch.allclose(perturbed[1], plain[1], atol=1e-4)
    with torch.no_grad():
        none_selected = ours(latents, 0.5, text, skip=SkipLayers((5,), torch.tensor([True, True]), mode))
    torch.testing.assert_close(none_selected, plain)  # block 5 does not exist in a 2-block model


def test_stg_transformer_block_skip_is_identity_block():
    """Skipping every block with transformer_block leaves only the embedding/output path."""
    ours, _ = _pair()
    latents, text = torch.randn(1, 16, 1, 2, 2), torch.randn(1, 3, 24)
    skip = SkipLayers((0, 1), torch.tensor([True]), "transformer_block")
    stripped = VideoDiT(ours.cfg).eval()
    stripped.load_state_dict(ours.state_dict())
    stripped.transformer_blocks = torch.nn.ModuleList()
    with torch.no_grad():
        torch.testing.assert_close(ours(latents, 0.3, text, skip=skip), stripped(latents, 0.3, text))


def test_bad_stg_mode():
    with pytest.raises(ValueError, match="STG mode"):
        SkipLayers((0,), torch.tensor([True]), "residual")


def test_config_validation():
    with pytest.raises(ValueError):
        DiTConfig(num_layers=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    """Blocks recomputed in backward (text keys/values prepared once, outside the checkpoints)."""
    from ltxv.presets import PRESETS

    g = torch.Generator().manual_seed(0)
    latents, t = torch.randn(2, 16, 2, 2, 3, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 5, 32, generator=g), torch.ones(2, 5)
    grads = []
    for checkpointed in (False, True):
        dit = randomize_(VideoDiT(PRESETS["tiny"].dit), 3)
        dit.gradient_checkpointing = checkpointed
        dit(latents, t, text, mask).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in dit.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
