"""transformers `T5EncoderModel` folders (config.json + safetensors) -> `ltxv.t5.T5Encoder`."""

from __future__ import annotations

from typing import Any

from ..config import T5Config
from .common import ConversionError, V, replace_all

T5_RENAMES = (
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.", "rel_bias."),
    ("encoder.block.", "blocks."),
    (".layer.0.SelfAttention.", ".attn."),
    (".layer.0.layer_norm.", ".attn_norm."),
    (".layer.1.DenseReluDense.", ".ff."),
    (".layer.1.layer_norm.", ".ff_norm."),
    ("encoder.final_layer_norm.", "final_norm."),
)
T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")  # tied: either may be stored
T5_IGNORED_PREFIXES = ("decoder.", "lm_head.")  # a full encoder-decoder checkpoint's other half


def t5_config_from_hf(d: dict[str, Any]) -> T5Config:
    """transformers T5 config.json -> T5Config; only encoder-relevant fields are read."""
    if d.get("model_type") != "t5":
        raise ConversionError(f"expected a T5 config.json (model_type 't5'), got {d.get('model_type')!r}")
    proj = d.get("feed_forward_proj", "relu")  # "relu" | "gated-gelu" | "gated-silu" ...
    gated = d.get("is_gated_act", proj.startswith("gated-"))
    act = d.get("dense_act_fn", "gelu_new" if proj == "gated-gelu" else proj.removeprefix("gated-"))
    try:
        return T5Config(
            vocab_size=d["vocab_size"],
            d_model=d["d_model"],
            d_kv=d["d_kv"],
            d_ff=d["d_ff"],
            num_layers=d["num_layers"],
            num_heads=d["num_heads"],
            num_buckets=d.get("relative_attention_num_buckets", 32),
            max_distance=d.get("relative_attention_max_distance", 128),
            eps=d.get("layer_norm_epsilon", 1e-6),
            gated=gated,
            activation=act,
        )
    except KeyError as err:
        raise ConversionError(f"T5 config.json lacks {err.args[0]!r}") from None
    except ValueError as err:
        raise ConversionError(f"T5 config.json: {err}") from None


def t5_keys_from_hf(sd: dict[str, V]) -> dict[str, V]:
    """transformers T5 encoder state dict -> ours (`ltxv.t5.T5Encoder`); decoder / LM-head keys dropped."""
    out: dict[str, V] = {}
    for key, value in sd.items():
        if key in T5_EMBEDDINGS:
            out["embed.weight"] = value
        elif not key.startswith(T5_IGNORED_PREFIXES):
            out[replace_all(key, T5_RENAMES)] = value
    return out
