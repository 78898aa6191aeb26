"""ltxv.t5.T5Encoder and ltxv.text.T5Tokenizer against transformers (the reference), on tiny random T5s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_t5 import CAPTIONS, make_tiny_t5

from ltxv.convert import ConversionError, t5_config_from_hf, t5_keys_from_hf
from ltxv.t5 import relative_buckets
from ltxv.text import T5Tokenizer, TextEncoder

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

PROMPTS = [
    CAPTIONS[0],
    "a zebra plays the xylophone",  # unknown characters
    " ".join(CAPTIONS[:5]),  # longer than max_tokens: truncated, EOS kept
    "x",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "flat", "flat", d_model=32, num_layers=3)


def _reference(folder: Path, prompts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    model = transformers.T5EncoderModel.from_pretrained(folder, use_safetensors=True).eval()
    tokenizer = transformers.T5Tokenizer.from_pretrained(folder)
    batch = tokenizer(
        prompts, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return out, batch.attention_mask


@pytest.mark.parametrize("max_tokens", [24, 160])  # 160 > max_distance: the log-spaced far buckets
def test_encoder_matches_transformers(folder: Path, max_tokens: int) -> None:
    ref, ref_mask = _reference(folder, PROMPTS, max_tokens)
    emb, mask = TextEncoder.from_pretrained(folder).encode(PROMPTS, max_tokens)
    assert torch.equal(mask, ref_mask.long())
    torch.testing.assert_close(emb, ref, atol=2e-5, rtol=1e-5)


def test_tokenizer_matches_transformers(folder: Path) -> None:
    reference = transformers.T5Tokenizer.from_pretrained(folder)
    ours = T5Tokenizer(folder)
    for max_tokens in (1, 4, 12, 64):
        batch = reference(
            PROMPTS, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt"
        )
        ids, mask = ours(PROMPTS, max_tokens)
        assert torch.equal(ids, batch.input_ids) and torch.equal(mask, batch.attention_mask), max_tokens


def test_relative_buckets_match_transformers() -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    pos = torch.arange(300)
    ref = T5Attention._relative_position_bucket(pos[None, :] - pos[:, None], True, 32, 128)
    assert torch.equal(relative_buckets(300, 32, 128, torch.device("cpu")), ref)


def test_config_mapping() -> None:
    v11 = {"model_type": "t5", "vocab_size": 9, "d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1,
           "num_heads": 2, "feed_forward_proj": "gated-gelu"}  # fmt: skip
    cfg = t5_config_from_hf(v11)
    assert cfg.gated and cfg.activation == "gelu_new" and cfg.num_buckets == 32 and cfg.eps == 1e-6
    original = t5_config_from_hf({**v11, "feed_forward_proj": "relu"})
    assert not original.gated and original.activation == "relu"
    with pytest.raises(ConversionError, match="model_type 't5'"):
        t5_config_from_hf({**v11, "model_type": "bert"})
    with pytest.raises(ConversionError, match="lacks 'd_ff'"):
        t5_config_from_hf({k: v for k, v in v11.items() if k != "d_ff"})
    with pytest.raises(ConversionError, match="activation 'swish'"):
        t5_config_from_hf({**v11, "dense_act_fn": "swish"})


def test_key_mapping_drops_the_decoder() -> None:
    keys = {
        "shared.weight": 0,
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": 1,
        "encoder.block.1.layer.1.DenseReluDense.wi_0.weight": 2,
        "encoder.final_layer_norm.weight": 3,
        "decoder.block.0.layer.0.SelfAttention.q.weight": 4,
        "lm_head.weight": 5,
    }
    assert t5_keys_from_hf(keys) == {
        "embed.weight": 0,
        "rel_bias.weight": 1,
        "blocks.1.ff.wi_0.weight": 2,
        "final_norm.weight": 3,
    }


def test_loading_does_not_import_transformers(folder: Path) -> None:
    """The point of the native encoder: a CLI start without the ~2.5 s transformers import."""
    code = (
        "import sys; from ltxv.text import TextEncoder; "
        f"TextEncoder.from_pretrained({str(folder)!r}).encode(['a red circle'], 8); "
        "print(sorted(m for m in ('transformers', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
