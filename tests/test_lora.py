"""LoRA: every supported key layout merges to W + scale·(alpha/r)·B·A; bad files and targets are clear
errors."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_
from safetensors.torch import save_file

import ltxv
from ltxv.layers.fp8 import Fp8Linear, quantize_linears
from ltxv.lora import merge_lora, read_lora
from ltxv.presets import PRESETS

TARGETS = (
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.1.attn2.to_out.0",
    "transformer_blocks.0.ff.net.2",
)


def _factors(dit, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mods = dict(dit.named_modules())
    return {
        n: (
            torch.randn(rank, mods[n].in_features, generator=g),
            torch.randn(mods[n].out_features, rank, generator=g),
        )
        for n in TARGETS
    }


@pytest.mark.parametrize("layout", ["peft", "comfy", "kohya_alpha"])
def test_layouts_merge_exactly(layout, tmp_path):
    dit = randomize_(ltxv.VideoDiT(PRESETS["tiny"].dit), 1)
    before = {n: dict(dit.named_modules())[n].weight.clone() for n in TARGETS}
    factors = _factors(dit)
    tensors = {}
    for name, (down, up) in factors.items():
        if layout == "peft":
            tensors[f"transformer.{name}.lora_A.weight"], tensors[f"transformer.{name}.lora_B.weight"] = (
                down,
                up,
            )
        elif layout == "comfy":
            (
                tensors[f"diffusion_model.{name}.lora_A.weight"],
                tensors[f"diffusion_model.{name}.lora_B.weight"],
            ) = down, up
        else:
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
            tensors[f"{name}.alpha"] = torch.tensor(2.0)  # alpha 2, rank 4 -> x0.5
    save_file(tensors, tmp_path / "lora.safetensors")
    assert merge_lora(dit, read_lora(tmp_path / "lora.safetensors"), scale=0.8) == 3
    for name, (down, up) in factors.items():
        expected = before[name] + 0.8 * (0.5 if layout == "kohya_alpha" else 1.0) * up @ down
        torch.testing.assert_close(dict(dit.named_modules())[name].weight, expected)


def test_merge_into_fp8_linears(tmp_path):
    """A LoRA merged after --fp8 quantization: the fp8 weight is re-quantized from the dequantized weight plus
    the delta, matching the LoRA merged first and quantized after to fp8 precision."""
    plain = randomize_(ltxv.VideoDiT(PRESETS["tiny"].dit), 1)
    fp8 = randomize_(ltxv.VideoDiT(PRESETS["tiny"].dit), 1)
    quantize_linears(fp8, kernel="reference")
    factors = _factors(plain)
    tensors = {}
    for name, (down, up) in factors.items():
        tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, 0.05 * up
    save_file(tensors, tmp_path / "lora.safetensors")
    layers = read_lora(tmp_path / "lora.safetensors")
    assert merge_lora(plain, layers) == merge_lora(fp8, layers) == 3
    for name in TARGETS:
        merged = dict(plain.named_modules())[name].weight
        q = dict(fp8.named_modules())[name]
        assert isinstance(q, Fp8Linear) and q.weight.dtype == torch.float8_e4m3fn
        # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 per element, plus the scale's flush of tiny ones
        err = (q.dequantized_weight(torch.float32) - merged).abs()
        assert err.max() <= merged.abs().max() / 16, name
        assert (q.dequantized_weight(torch.float32) - merged).norm() < 0.05 * merged.norm(), name


def test_diffusers_module_names_are_mapped(tmp_path):
    dit = ltxv.VideoDiT(PRESETS["tiny"].dit)
    w = dit.patchify_proj.weight.clone()
    save_file(
        {
            "transformer.proj_in.lora_A.weight": torch.ones(1, 16),
            "transformer.proj_in.lora_B.weight": torch.ones(16, 1),
        },
        tmp_path / "l.safetensors",
    )
    merge_lora(dit, read_lora(tmp_path / "l.safetensors"))
    torch.testing.assert_close(dit.patchify_proj.weight, w + 1)


def test_bad_loras(tmp_path):
    dit = ltxv.VideoDiT(PRESETS["tiny"].dit)
    save_file(
        {
            "transformer_blocks.9.attn1.to_q.lora_A.weight": torch.ones(1, 16),
            "transformer_blocks.9.attn1.to_q.lora_B.weight": torch.ones(16, 1),
        },
        tmp_path / "a.safetensors",
    )
    with pytest.raises(ValueError, match="transformer_blocks.9.attn1.to_q"):
        merge_lora(dit, read_lora(tmp_path / "a.safetensors"))
    save_file(
        {
            "transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(1, 7),
            "transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(16, 1),
        },
        tmp_path / "b.safetensors",
    )
    with pytest.raises(ValueError, match="does not fit"):
        merge_lora(dit, read_lora(tmp_path / "b.safetensors"))
    save_file(
        {"transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(1, 16)}, tmp_path / "c.safetensors"
    )
    with pytest.raises(ValueError, match="lacks its up"):
        read_lora(tmp_path / "c.safetensors")
    save_file({"vae.encoder.conv_in.conv.weight": torch.ones(1)}, tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="not a LoRA tensor"):
        read_lora(tmp_path / "d.safetensors")
    q = "transformer_blocks.0.attn1.to_q"
    for tensors, message in (
        ({f"{q}.lora_A.weight": torch.ones(16), f"{q}.lora_B.weight": torch.ones(16, 1)}, "not two matrices"),
        (
            {
                f"{q}.lora_A.weight": torch.ones(1, 16),
                f"{q}.lora_B.weight": torch.ones(16, 1),
                f"{q}.alpha": torch.ones(2),
            },
            r"alpha must be one number, got shape \(2,\)",
        ),
        (
            {"lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(1, 16)},
            "kohya's underscore-joined module names, which are not supported",
        ),
    ):
        save_file(tensors, tmp_path / "e.safetensors")
        with pytest.raises(ValueError, match=message):
            read_lora(tmp_path / "e.safetensors")
