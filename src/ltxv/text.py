"""T5 text encoder (transformers): prompts -> (embeddings (B, L, D), mask (B, L)); the only module that
imports
transformers. As the official pipeline: padding to max length, the padding mask passed *into* T5 and reused as
the cross-attention mask (diffusers' LTXPipeline runs T5 without it)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor


def _resolve(path: str) -> tuple[str, str | None, str | None]:
    """(location, encoder subfolder, tokenizer subfolder): a model root with text_encoder/ + tokenizer/, a
    folder
    holding both side by side, or a hub id (resolved by transformers; subfolders as in the LTX-Video repo)."""
    p = Path(path)
    if p.is_dir():
        if (p / "text_encoder").is_dir():
            return str(p), "text_encoder", "tokenizer" if (p / "tokenizer").is_dir() else "text_encoder"
        if (p / "config.json").is_file():
            return str(p), None, None
        raise ValueError(
            f"{path}: expected a T5 folder (config.json + weights + tokenizer) or text_encoder/ + tokenizer/"
        )
    if path.count("/") != 1 or path.startswith((".", "/", "~")):
        raise ValueError(f"{path}: no such text-encoder folder (or hub id like Lightricks/LTX-Video)")
    return path, "text_encoder", "tokenizer"  # hub id: downloaded by transformers when online


def _refuse_pickles(location: str, sub: str | None) -> None:
    folder = Path(location) / (sub or "")
    if folder.is_dir() and not list(folder.glob("*.safetensors")) and list(folder.glob("*.bin")):
        raise ValueError(
            f"{folder}: only pickled weights (*.bin), which ltxv never loads; convert them to safetensors"
        )


class TextEncoder:
    """T5 encoder + tokenizer. `encode` returns embeddings in the model's dtype and an int64 0/1 mask."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:  # noqa: ANN001 - a transformers tokenizer
        self.model, self.tokenizer = model.eval(), tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEncoder:
        from transformers import AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep stderr to our own progress and one-line errors
        hf_logging.set_verbosity_error()

        location, enc_sub, tok_sub = _resolve(str(path))
        _refuse_pickles(location, enc_sub)
        try:
            model = T5EncoderModel.from_pretrained(
                location, subfolder=enc_sub or "", use_safetensors=True, dtype=dtype or torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(location, subfolder=tok_sub or "")
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{path}: cannot load a T5 encoder and tokenizer ({str(err).splitlines()[0]})"
            ) from None
        return cls(model.to(device or "cpu"), tokenizer)

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @torch.inference_mode()
    def encode(self, prompts: list[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        """prompts -> emb (B, max_tokens, D), mask (B, max_tokens) with 1 for real tokens (EOS included)."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            [p.strip() for p in prompts],
            padding="max_length",
            max_length=max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        emb = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        return emb, mask.long()
