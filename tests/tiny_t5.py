"""Test helper: write a tiny random T5 v1.1-style encoder + sentencepiece tokenizer to disk, fully offline."""

from __future__ import annotations

from pathlib import Path

from ltxv.text import build_small_t5

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


def make_tiny_t5(
    folder: Path,
    layout: str = "root",
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 300,
    seed: int = 0,
) -> Path:
    """A tiny random T5 + tokenizer trained on CAPTIONS (see `ltxv.text.build_small_t5`)."""
    return build_small_t5(folder, CAPTIONS, layout, d_model, num_layers, num_heads, vocab_size, seed)
