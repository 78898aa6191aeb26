"""Test helper: write a tiny random T5 v1.1-style encoder + sentencepiece tokenizer to disk, fully offline."""

from __future__ import annotations

import io
from pathlib import Path

import torch

# A few dozen short captions: enough variety for a ~300-piece unigram vocabulary.
CAPTIONS = [
    "a red circle moving right on a black background",
    "a blue square moving left on a white background",
    "a green triangle rotating slowly in the center of the frame",
    "a yellow star bouncing up and down",
    "two small dots orbiting each other",
    "the camera pans slowly across a quiet mountain lake at dawn",
    "a cat sitting on a wooden table near the window",
    "a dog running through tall grass in the afternoon sun",
    "waves crashing on a sandy beach at sunset",
    "a busy city street at night with neon lights and rain",
    "a woman with long brown hair smiles and turns toward the camera",
    "a man in a dark coat walks along an empty road",
    "close-up of a hand pouring coffee into a white cup",
    "a red car drives fast on a winding coastal highway",
    "snow falls gently on a pine forest",
    "a bird flies over a field of yellow flowers",
    "smoke rises from a small fire in the dark",
    "a child throws a ball to a happy puppy",
    "clouds drift across a bright blue sky",
    "the sun sets behind distant purple hills",
    "a boat sails on calm water under a grey sky",
    "a train crosses a long stone bridge",
    "an old book lies open on a desk next to a candle",
    "leaves fall from a tree in autumn wind",
    "a glass of water on a kitchen counter catches the light",
    "a horse gallops across an open plain",
    "fish swim between colorful coral in clear water",
    "a chef chops vegetables on a wooden board",
    "a person types on a laptop in a bright office",
    "fireworks explode over a river at midnight",
    "a slow zoom into a painting of a sailing ship",
    "rain drops slide down a window pane",
    "a black and white photo of a crowded market",
    "a spinning top wobbles and falls over",
    "a candle flame flickers in a dark room",
    "ice melts into a small puddle on the floor",
    "a butterfly lands on a pink flower",
    "a lighthouse shines its beam over stormy sea",
]


def train_spiece(vocab_size: int = 300) -> bytes:
    """Train a unigram sentencepiece model with T5's special ids: <pad>=0, </s>=1, <unk>=2, no BOS.

    The normalization rule is `identity` (no precompiled charsmap), so the tokenizers-backed T5Tokenizer built
    from the vocabulary alone tokenizes exactly as sentencepiece does."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def make_tokenizer(spiece: bytes):  # noqa: ANN201 - transformers.T5Tokenizer, imported lazily
    """A T5Tokenizer (in transformers 5: backed by `tokenizers`, Unigram model) with the sentencepiece vocab.

    Built from (piece, score) pairs rather than `from_pretrained(spiece.model)`, because transformers 5 needs
    protobuf to convert a `.model` file and it is not a dependency here."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_proto=spiece)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    assert vocab[:3] == [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)], vocab[:3]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_tiny_t5(
    folder: Path,
    layout: str = "root",
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 300,
    seed: int = 0,
) -> Path:
    """Write a random T5 encoder (safetensors) + tokenizer under `folder`; returns `folder`.

    layout "root": `folder/text_encoder/` + `folder/tokenizer/` (diffusers / LTX-Video repo layout);
    layout "flat": model and tokenizer files side by side in `folder/`."""
    from transformers import T5Config, T5EncoderModel

    if layout not in ("root", "flat"):
        raise ValueError(f"layout must be 'root' or 'flat', got {layout!r}")
    model_dir = folder / "text_encoder" if layout == "root" else folder
    tok_dir = folder / "tokenizer" if layout == "root" else folder
    spiece = train_spiece(vocab_size)
    tokenizer = make_tokenizer(spiece)
    tok_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(tok_dir))
    (tok_dir / "spiece.model").write_bytes(spiece)  # as in real T5 repos; tokenizer.json takes precedence
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",  # T5 v1.1
        dropout_rate=0.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config).eval()
    model.save_pretrained(str(model_dir), safe_serialization=True)
    return folder
