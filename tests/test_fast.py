"""Speed-ups (ltxv.speed) against the plain path on tiny random models: text K/V cache (exact), attention
backends, fp8 linears and the first-block cache (approximate, with their measured error)."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_, rel_err

import ltxv
from ltxv import Pipeline, SampleConfig, TextEmbeddings
from ltxv.dit.cache import FirstBlockCache
from ltxv.layers import attention as attn
from ltxv.layers.fp8 import Fp8Linear, quantize_e4m3, quantize_linears
from ltxv.presets import PRESETS
from ltxv.speed import SpeedConfig

CFG = SampleConfig(width=64, height=64, num_frames=17, steps=4, stg_blocks=(1,), seed=5)
SPEC = PRESETS["tiny"]


def _dit(seed: int = 2, scale: float = 0.3) -> ltxv.VideoDiT:
    """scale 0.3 (randomize_'s default): the blocks make ~36% of the velocity; 1.0: ~95% (harsher)."""
    return randomize_(ltxv.VideoDiT(SPEC.dit).eval(), seed, scale)


def _pipe(speed: SpeedConfig | None = None, dit: ltxv.VideoDiT | None = None) -> Pipeline:
    vae = randomize_(ltxv.VideoVAE(SPEC.vae).eval(), 1, 0.2)
    return Pipeline(vae, dit or _dit(), SPEC, speed=speed)


def _text(seed: int = 0) -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, 6)
    mask[0, 4:] = 0
    return (
        TextEmbeddings(torch.randn(1, 6, 32, generator=g), mask),
        TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6)),
    )


def _inputs(seed: int = 0, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(b, 16, 3, 2, 4, generator=g)
    text, mask = torch.randn(b, 5, 32, generator=g), torch.ones(b, 5)
    mask[-1, 2:] = 0
    return latents, torch.rand(b, generator=g), text, mask


# -- 1. text keys/values once per generation -----------------------------------------------------------------


def test_prepared_text_is_bit_identical():
    dit = _dit()
    latents, t, text, mask = _inputs()
    with torch.no_grad():
        plain = dit(latents, t, text, mask)
        prepared = dit(latents, t, dit.prepare_text(text, mask))
    assert torch.equal(plain, prepared)
    with pytest.raises(ValueError, match="text_mask must be None"):
        dit(latents, t, dit.prepare_text(text, mask), mask)


@pytest.mark.parametrize(
    "schedule",
    [
        {},  # CFG + STG at every step: one branch set
        dict(guidance_timesteps=(1.0, 0.5), guidance_schedule=(1.0, 3.0), stg_schedule=(1.0, 0.0)),
    ],
)
def test_generate_with_text_cache_equals_without(schedule, monkeypatch):
    text, neg = _text()
    cfg = dataclasses.replace(CFG, **schedule)
    plain = _pipe(SpeedConfig(text_cache=False)).generate(text, cfg, negative=neg)
    pipe = _pipe()
    calls = []
    prepare = pipe.dit.prepare_text
    monkeypatch.setattr(pipe.dit, "prepare_text", lambda *a: calls.append(1) or prepare(*a))
    cached = pipe.generate(text, cfg, negative=neg)
    assert torch.equal(plain.latents, cached.latents) and torch.equal(plain.video, cached.video)
    assert len(calls) == (2 if schedule else 1)  # once per set of guidance branches, not once per step


# -- 2. attention backends -----------------------------------------------------------------------------------


def _qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, n, 4 * 8, generator=g) for n in (10, 7, 7))
    bias = torch.zeros(2, 1, 1, 7)
    bias[1, ..., 4:] = -10000.0
    return q, k, v, bias


@pytest.mark.parametrize("backend", ["sdpa-math", "flash"])  # the SDPA kernels that exist on the CPU
@pytest.mark.parametrize("masked", [False, True])
def test_cpu_backends_agree_with_auto(backend, masked):
    q, k, v, bias = _qkv()
    bias = bias if masked else None
    auto = attn.attention(q, k, v, 4, bias)
    with attn.attention_backend(backend):
        out = attn.attention(q, k, v, 4, bias)
    assert attn._backend == "auto"  # restored on exit
    torch.testing.assert_close(out, auto, atol=1e-6, rtol=1e-5)
    ref = torch.softmax(
        q.view(2, 10, 4, 8).transpose(1, 2) @ k.view(2, 7, 4, 8).permute(0, 2, 3, 1) / 8**0.5
        + (0 if bias is None else bias),
        -1,
    ) @ v.view(2, 7, 4, 8).transpose(1, 2)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(2, 10, 32), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="these kernels may exist on a GPU")
@pytest.mark.parametrize("backend", ["efficient", "cudnn"])
def test_unavailable_backend_raises_a_value_error_naming_the_choices(backend):
    q, k, v, _ = _qkv()
    with attn.attention_backend(backend), pytest.raises(ValueError, match=f"'{backend}'.*choose from auto"):
        attn.attention(q, k, v, 4)


def test_unknown_backend_and_missing_fa3():
    with pytest.raises(ValueError, match="choose from auto, sdpa-math, flash, efficient, cudnn, fa3"):
        SpeedConfig(attention="xformers")
    if importlib.util.find_spec("flash_attn_interface") is None:
        with pytest.raises(ValueError, match="flash_attn_interface"):
            SpeedConfig(attention="fa3")


def test_fa3_path_layout_with_a_stand_in_module(monkeypatch):
    """The FA3 call takes and returns (B, N, H, d); a stand-in built on SDPA checks the plumbing."""
    fake = types.ModuleType("flash_attn_interface")
    fake.__spec__ = importlib.machinery.ModuleSpec("flash_attn_interface", None)
    fake.flash_attn_func = lambda q, k, v: (
        F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2),
        None,  # older FA3 releases also return the log-sum-exp
    )
    monkeypatch.setitem(sys.modules, "flash_attn_interface", fake)
    q, k, v, bias = _qkv()
    with attn.attention_backend("fa3"):
        out, masked = attn.attention(q, k, v, 4), attn.attention(q, k, v, 4, bias)  # masked: SDPA fallback
    torch.testing.assert_close(out, attn.attention(q, k, v, 4), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(masked, attn.attention(q, k, v, 4, bias), atol=0, rtol=0)


def test_maskless_backends_leave_masked_attention_to_auto(monkeypatch):
    """CUDA flash attention (and FA3) take no additive bias: the masked cross-attention runs on "auto"."""
    forced = []
    kernel = attn.sdpa_kernel
    monkeypatch.setattr(attn, "sdpa_kernel", lambda b: forced.append(b) or kernel(b))
    q, k, v, bias = _qkv()
    with attn.attention_backend("flash"):
        attn.attention(q, k, v, 4, bias)
        assert forced == []
        attn.attention(q, k, v, 4)
    with attn.attention_backend("sdpa-math"):
        attn.attention(q, k, v, 4, bias)
    assert forced == [attn.SDPBackend.FLASH_ATTENTION, attn.SDPBackend.MATH]


def test_generate_with_math_attention_matches_auto():
    text, neg = _text()
    auto = _pipe().generate(text, CFG, negative=neg)
    math = _pipe(SpeedConfig(attention="sdpa-math")).generate(text, CFG, negative=neg)
    assert rel_err(math.latents, auto.latents) < 1e-5


# -- 5. fp8 linears ------------------------------------------------------------------------------------------


def test_e4m3_quantization_error():
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    q, scale = quantize_e4m3(x)
    assert q.dtype == torch.float8_e4m3fn and q.float().abs().max() <= 448
    assert rel_err(q.float() * scale, x) < 0.04  # 3 mantissa bits: rounding error <= 2^-4 relative


def _scaled_mm_runs_here() -> bool:
    try:
        one = torch.tensor(1.0)
        a = torch.zeros(16, 16, dtype=torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return True
    except (RuntimeError, NotImplementedError):
        return False


def test_fp8_linear_kernels_agree_and_approximate_the_linear():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(32, 48)
    x = torch.randn(3, 5, 32, generator=g)
    ref = Fp8Linear(linear, "reference")
    y = ref(x)
    assert y.shape == (3, 5, 48) and rel_err(y, linear(x)) < 0.08
    if not _scaled_mm_runs_here():
        pytest.skip("torch._scaled_mm does not run on this device; the reference kernel was tested")
    torch.testing.assert_close(Fp8Linear(linear, "scaled_mm")(x), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale, max_fp8, max_bf16", [(0.3, 0.02, 0.02), (1.0, 0.1, 0.02)])
def test_quantize_linears_swaps_every_block_linear_and_bounds_the_velocity_error(scale, max_fp8, max_bf16):
    """Velocity relative error vs fp32, measured: weights at scale 0.3: fp8 0.0052, bf16 0.0045; at scale 1.0
    (the blocks dominate the velocity): fp8 0.060, bf16 0.014."""
    dit = _dit(scale=scale)
    latents, t, text, mask = _inputs()
    with torch.no_grad():
        v32 = dit(latents, t, text, mask)
        bf16 = _dit(scale=scale).to(torch.bfloat16)
        v16 = bf16(latents.bfloat16(), t, text.bfloat16(), mask).float()
        assert quantize_linears(dit.transformer_blocks) == 2 * 10  # attn1 4 + attn2 4 + ff 2 per block
        assert quantize_linears(dit.transformer_blocks) == 0  # idempotent: no nn.Linear left
        v8 = dit(latents, t, text, mask)
    err8, err16 = rel_err(v8, v32), rel_err(v16, v32)
    print(f"velocity relative error vs fp32 (weights x{scale}): fp8 {err8:.4f}, bf16 {err16:.4f}")
    assert err16 < max_bf16 and err8 < max_fp8


def test_generate_with_fp8():
    text, neg = _text()
    plain = _pipe().generate(text, CFG, negative=neg)
    pipe = _pipe(SpeedConfig(fp8=True))
    assert isinstance(pipe.dit.transformer_blocks[0].ff.net[2], Fp8Linear)
    fp8 = pipe.generate(text, CFG, negative=neg)
    assert 0 < rel_err(fp8.latents, plain.latents) < 0.15


# -- 6. first-block cache ------------------------------------------------------------------------------------


def test_block_cache_threshold_zero_is_exact_and_huge_reuses_every_step_after_the_first():
    dit = _dit()
    latents, _, text, mask = _inputs()
    ctx = dit.prepare_text(text, mask)
    never, always = FirstBlockCache(0.0), FirstBlockCache(1e9)
    with torch.no_grad():
        for t in (0.9, 0.6, 0.3):
            plain = dit(latents, t, ctx)
            assert torch.equal(dit(latents, t, ctx, block_cache=never), plain)
            reused = dit(latents, t, ctx, block_cache=always)
    assert (never.reused, always.reused, always.steps) == (0, 2, 3)
    assert not torch.equal(reused, plain)
    with pytest.raises(ValueError, match=">= 0"):
        FirstBlockCache(-1.0)


@pytest.mark.parametrize(
    "threshold, reused, max_err", [(0.05, (0, 0), 0.0), (0.2, (3, 12), 0.03), (0.4, (15, 19), 0.3)]
)
def test_block_cache_quality_on_the_tiny_model(threshold, reused, max_err, capsys):
    """Quality cost: relative error of the final latents vs no cache, 20 steps, CFG + STG, weights at scale
    1.0 (at 0.3 the blocks change so little that 19/20 steps reuse at any threshold, error 0.001). Measured:
    0.05: 0/20 reused; 0.2: 7/20, 0.0096; 0.4: 19/20, 0.195."""
    text, neg = _text()
    cfg = dataclasses.replace(CFG, steps=20)
    plain = _pipe(dit=_dit(scale=1.0)).generate(text, cfg, negative=neg, decode=False)
    pipe = _pipe(SpeedConfig(block_cache=threshold), _dit(scale=1.0))
    seen = []
    forward = pipe.dit.forward
    pipe.dit.forward = lambda *a, **k: seen.append(k["block_cache"]) or forward(*a, **k)
    cached = pipe.generate(text, cfg, negative=neg, decode=False)
    err, cache = rel_err(cached.latents, plain.latents), seen[0]
    with capsys.disabled():
        print(
            f"\nblock cache {threshold}: reused {cache.reused}/{cache.steps} steps, latent rel err {err:.4f}"
        )
    assert reused[0] <= cache.reused <= reused[1] and err <= max_err


@pytest.mark.parametrize("padding_mode", ["zeros", "replicate", "reflect"])
@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_single_frame_conv_is_the_padded_3d_conv(padding_mode, stride, causal):
    """CausalConv3d on one frame runs conv2d with the kernel summed over time; the plain path pads the frame
    to 3 copies and runs conv3d. Same output and same weight/input gradients (fp32 rounding only)."""
    from ltxv.vae.conv import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(5, 7, 3, stride, padding_mode)
    x = torch.randn(2, 5, 1, 8, 12, requires_grad=True)
    fast = conv(x, causal)
    fast.square().sum().backward()
    grads = x.grad.clone(), conv.conv.weight.grad.clone(), conv.conv.bias.grad.clone()
    x.grad, conv.conv.weight.grad, conv.conv.bias.grad = None, None, None
    plain = conv.conv(x.expand(-1, -1, 3, -1, -1))  # what both paddings make of a single frame
    plain.square().sum().backward()
    assert fast.shape == plain.shape == (2, 7, 1, 8 // stride[1], 12 // stride[2])
    assert rel_err(fast, plain) < 1e-6
    for got, want in zip(grads, (x.grad, conv.conv.weight.grad, conv.conv.bias.grad), strict=True):
        assert rel_err(got, want) < 1e-5


def test_first_block_cache_starts_over_when_the_branches_change():
    cache = FirstBlockCache(1e9)  # reuse whenever it can
    x = torch.ones(1, 2, 3)
    cache.follow(("uncond", "cond"))
    cache(x, lambda h: h + 1, lambda h: h + 5)
    cache.follow(("uncond", "cond"))
    assert torch.equal(cache(x, lambda h: h + 1, lambda h: h + 7), x + 6) and cache.reused == 1
    cache.follow(("cond", "perturbed"))  # same shape, other branches: computed again
    assert torch.equal(cache(x, lambda h: h + 1, lambda h: h + 7), x + 8) and cache.reused == 1
