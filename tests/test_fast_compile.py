"""Regional torch.compile (ltxv.speed.compile_blocks): compiled DiT blocks against eager on the tiny model.

Inductor needs a working C++ compiler on the CPU; without one the tests are skipped, saying so."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import randomize_, rel_err

import ltxv
from ltxv import Pipeline, SampleConfig, TextEmbeddings
from ltxv.presets import PRESETS
from ltxv.speed import SpeedConfig, compile_blocks

SPEC = PRESETS["tiny"]


@functools.cache
def _inductor_works() -> str | None:
    """None when torch.compile runs here, else why not."""
    try:
        torch.compile(lambda x: torch.sin(x) + 1)(torch.randn(4))
        return None
    except Exception as err:  # noqa: BLE001 - any backend failure means "cannot test here"
        return f"torch.compile (inductor) does not work on this machine: {type(err).__name__}: {err}"


@pytest.fixture(autouse=True)
def _needs_inductor():
    reason = _inductor_works()
    if reason is not None:
        pytest.skip(reason)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _dit() -> ltxv.VideoDiT:
    return randomize_(ltxv.VideoDiT(SPEC.dit).eval(), 2, 1.0)


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_keep_the_state_dict():
    eager, compiled = _dit(), _dit()
    keys = list(compiled.state_dict())
    assert compile_blocks(compiled) == 2 and compile_blocks(compiled) == 0  # idempotent
    assert list(compiled.state_dict()) == keys  # nn.Module.compile: no `_orig_mod.` prefixes
    g = torch.Generator().manual_seed(0)
    latents, t = torch.randn(2, 16, 3, 2, 4, generator=g), torch.rand(2, generator=g)
    text, mask = torch.randn(2, 5, 32, generator=g), torch.ones(2, 5)
    with torch.no_grad():
        ctx = eager.prepare_text(text, mask)
        for step in (0.9, 0.5):  # the second call reuses the compiled code
            v_eager = eager(latents, t * step, ctx)
            v_compiled = compiled(latents, t * step, compiled.prepare_text(text, mask))
            assert rel_err(v_compiled, v_eager) < 1e-4


@pytest.mark.slow
def test_generate_with_compile_matches_eager():
    g = torch.Generator().manual_seed(0)
    text = TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6))
    cfg = SampleConfig(width=64, height=64, num_frames=9, steps=2, guidance=1.0, stg=0.0, seed=1)
    vae = randomize_(ltxv.VideoVAE(SPEC.vae).eval(), 1, 0.2)
    eager = Pipeline(vae, _dit(), SPEC).generate(text, cfg, decode=False)
    compiled = Pipeline(vae, _dit(), SPEC, speed=SpeedConfig(compile="default")).generate(
        text, cfg, decode=False
    )
    assert rel_err(compiled.latents, eager.latents) < 1e-4
