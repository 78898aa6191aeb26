"""A tiny T5 encoder + sentencepiece tokenizer built offline (random weights; the tokenizer trained on a few
lines)."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "a red circle moving right on a black background",
    "a blue square moving left on a white background",
    "a green triangle moving up on a gray background",
    "a yellow circle standing still on a black background",
    "a purple square moving down on a white background",
    "an orange triangle and a cyan circle on a gray background",
    "a red fox running through fresh snow, tracking shot",
    "worst quality, inconsistent motion, blurry, jittery, distorted",
    "the camera pans slowly across a quiet lake at sunset",
    "a white cat jumps onto the table and looks at the camera",
]


def make_tiny_t5(folder: Path, layout: str = "root", d_model: int = 32, seed: int = 0) -> Path:
    """Write a T5 encoder (safetensors) and tokenizer: layout "root" -> text_encoder/ + tokenizer/, "flat" ->
    one
    folder. Returns `folder`."""
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        vocab_size=80,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    vocab = [
        (sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())
    ]  # transformers 5: Unigram
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    model = T5EncoderModel(config).eval()
    enc_dir, tok_dir = (
        (folder / "text_encoder", folder / "tokenizer") if layout == "root" else (folder, folder)
    )
    model.save_pretrained(enc_dir, safe_serialization=True)
    tokenizer.save_pretrained(tok_dir)
    for f in ("corpus.txt", "spiece.model", "spiece.vocab"):
        if layout == "root":
            (folder / f).unlink()
    return folder
