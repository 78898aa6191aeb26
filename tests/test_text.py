"""TextEncoder: both folder layouts, mask semantics (passed into T5), truncation, refusal of pickles."""

from __future__ import annotations

import pytest
import torch
from tiny_t5 import make_tiny_t5

from ltxv.text import TextEncoder


@pytest.fixture(scope="module")
def t5_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5")
    return make_tiny_t5(root / "root", "root"), make_tiny_t5(root / "flat", "flat")


def test_layouts_load_and_agree(t5_folders):
    a, b = (TextEncoder.from_pretrained(p) for p in t5_folders)
    ea, ma = a.encode(["a red fox"], 24)
    eb, mb = b.encode(["a red fox"], 24)
    assert ea.shape == (1, 24, 32) and a.hidden_size == 32
    torch.testing.assert_close(ea, eb)
    assert torch.equal(ma, mb)
    tokens = a.tokenizer("a red fox").input_ids
    assert int(ma.sum()) == len(tokens) and tokens[-1] == a.tokenizer.eos_token_id  # EOS counted


def test_padding_does_not_change_real_tokens(t5_folders):
    """Why the mask is passed into T5 (official): the same prompt padded to 16 or 40 tokens gives the same
    embeddings for its real tokens."""
    enc = TextEncoder.from_pretrained(t5_folders[0])
    short, m_short = enc.encode(["a cat"], 16)
    long, _ = enc.encode(["a cat"], 40)
    n = int(m_short.sum())
    torch.testing.assert_close(short[0, :n], long[0, :n], atol=1e-5, rtol=1e-5)
    unmasked = enc.model(
        input_ids=enc.tokenizer(["a cat"], padding="max_length", max_length=40, return_tensors="pt").input_ids
    ).last_hidden_state
    assert not torch.allclose(unmasked[0, :n], long[0, :n], atol=1e-4)  # without the mask padding leaks in


def test_strip_truncation_and_batches(t5_folders):
    enc = TextEncoder.from_pretrained(t5_folders[0])
    emb, mask = enc.encode(
        ["  a red fox  ", "a red fox", "a blue square moving left on a white background " * 4], 12
    )
    torch.testing.assert_close(emb[0], emb[1])
    assert mask[2].sum() == 12 and mask[0].sum() < 12 and mask.dtype == torch.int64


def test_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="no such"):
        TextEncoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="expected a T5 folder"):
        TextEncoder.from_pretrained(tmp_path / "empty")
    pick = tmp_path / "pickled"
    (pick / "text_encoder").mkdir(parents=True)
    (pick / "text_encoder" / "config.json").write_text("{}")
    (pick / "text_encoder" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickled"):
        TextEncoder.from_pretrained(pick)
