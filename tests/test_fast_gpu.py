"""Speed-ups on a CUDA device (skipped elsewhere): SDPA kernels vs "auto", fp8 `_scaled_mm` vs the reference
kernel, and a bf16 tiny generate with every option on."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_, rel_err

import ltxv
from ltxv import Pipeline, SampleConfig, TextEmbeddings
from ltxv.layers import attention as attn
from ltxv.layers.fp8 import Fp8Linear
from ltxv.presets import PRESETS
from ltxv.speed import SpeedConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("backend", ["sdpa-math", "flash", "efficient", "cudnn"])
def test_sdpa_kernels_agree_with_auto(backend):
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (
        torch.randn(2, 256, 8 * 64, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    auto = attn.attention(q, k, v, 8)
    try:
        with attn.attention_backend(backend):
            out = attn.attention(q, k, v, 8)
    except ValueError as err:  # e.g. cuDNN attention not built in, or an older GPU
        pytest.skip(str(err))
    assert rel_err(out.float(), auto.float()) < 1e-2


def test_fp8_scaled_mm_matches_the_reference_kernel():
    linear = torch.nn.Linear(256, 512, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4, 100, 256, device="cuda", dtype=torch.bfloat16)
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need Ada (sm_89) or Hopper (sm_90)")
    fast, ref = Fp8Linear(linear, "auto"), Fp8Linear(linear, "reference")
    assert fast.uses_scaled_mm(x)
    assert rel_err(fast(x).float(), ref(x).float()) < 1e-2
    assert rel_err(fast(x).float(), linear(x).float()) < 0.08


def test_tiny_generate_bf16_with_every_speedup():
    spec = PRESETS["tiny"]
    g = torch.Generator().manual_seed(0)
    text = TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6))
    neg = TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6))
    text, neg = (TextEmbeddings(e.emb.cuda().bfloat16(), e.mask.cuda()) for e in (text, neg))
    cfg = SampleConfig(width=64, height=64, num_frames=17, steps=3, stg_blocks=(1,), seed=5)

    def pipe(speed: SpeedConfig) -> Pipeline:
        vae = randomize_(ltxv.VideoVAE(spec.vae), 1, 0.2).cuda().bfloat16().eval()
        return Pipeline(
            vae, randomize_(ltxv.VideoDiT(spec.dit), 2).cuda().bfloat16().eval(), spec, speed=speed
        )

    plain = pipe(SpeedConfig(text_cache=False)).generate(text, cfg, negative=neg)
    fast = pipe(SpeedConfig(attention="flash", compile="default", fp8=True)).generate(text, cfg, negative=neg)
    assert rel_err(fast.latents.float(), plain.latents.float()) < 0.1
