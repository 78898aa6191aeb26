"""Run by tests/test_parallel.py under torchrun: the tiny pipeline's generations with the processes split
`--cfg-parallel G --sequence-parallel S`; each rank saves its latents to OUT.RANK (safetensors)."""

from __future__ import annotations

import dataclasses
import sys

import torch
from conftest import randomize_

import ltxv
from ltxv import Condition, Pipeline, SampleConfig, SpeedConfig, TextEmbeddings
from ltxv.presets import PRESETS

# 96x96x17 -> 3x3x3 = 27 tokens: sequence shards need padding
CFG = SampleConfig(
    width=96, height=96, num_frames=17, steps=3, guidance=3.0, stg=1.0, stg_blocks=(1,), seed=5
)


def build(speed: SpeedConfig) -> Pipeline:
    spec = PRESETS["tiny"]
    vae = randomize_(ltxv.VideoVAE(spec.vae).eval(), 1, 0.2)
    dit = randomize_(ltxv.VideoDiT(spec.dit).eval(), 2)
    return Pipeline(vae, dit, spec, speed=speed)


def cases(pipe: Pipeline) -> dict[str, torch.Tensor]:
    """Latents of: two prompts with CFG + STG; image-to-video with a keyframe (extra tokens with their own
    timesteps), also with keyframe guidance (the unconditional branch a forward of its own); an unseeded
    config (the seed drawn once for all processes); and a chain of two segments (its video too: the second
    segment is conditioned on the first's decoded frames)."""
    g = torch.Generator().manual_seed(0)
    text = TextEmbeddings(torch.randn(2, 6, 32, generator=g), torch.ones(2, 6))
    neg = TextEmbeddings(torch.randn(2, 6, 32, generator=g), torch.ones(2, 6))
    image, key = (
        torch.rand(1, 3, 1, 96, 96, generator=g) * 2 - 1,
        torch.rand(1, 3, 9, 96, 96, generator=g) * 2 - 1,
    )
    one = TextEmbeddings(text.emb[:1], text.mask[:1]), TextEmbeddings(neg.emb[:1], neg.mask[:1])
    conditions = [Condition(image, 0, 1.0), Condition(key, 8, 0.8)]
    unseeded = pipe.generate(*one[:1], dataclasses.replace(CFG, seed=None), negative=one[1], decode=False)
    words = {"a": one[0], "b": TextEmbeddings(text.emb[1:], text.mask[1:])}  # else the negative prompt
    pipe.encode_text = lambda prompts, _: words.get(prompts[0], one[1])
    chain = pipe.generate_chain(["a", "b"], dataclasses.replace(CFG, num_frames=9), ltxv.ChainConfig())
    return {
        "chain": chain.latents,
        "chain_video": chain.video,
        "two_prompts": pipe.generate(text, CFG, negative=neg, decode=False).latents,
        "conditions": pipe.generate(
            one[0], CFG, negative=one[1], conditions=conditions, decode=False
        ).latents,
        "keyframe_guidance": pipe.generate(
            one[0],
            dataclasses.replace(CFG, keyframe_guidance=True),
            negative=one[1],
            conditions=conditions,
            decode=False,
        ).latents,
        "unseeded": unseeded.latents,
        "unseeded_seed": torch.tensor([unseeded.seed]),
    }


if __name__ == "__main__":
    from safetensors.torch import save_file

    groups, sequence, block_cache, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    pipe = build(SpeedConfig(cfg_parallel=groups, sequence_parallel=sequence, block_cache=block_cache))
    results = cases(pipe)
    save_file({k: v.contiguous() for k, v in results.items()}, f"{out}.{pipe.parallel.rank}")
