"""TextEncoder on a tiny random T5: folder layouts, tokenization, mask semantics (passed into T5), errors.

Parity of the network and tokenizer with transformers (the reference) is in tests/test_t5.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_t5 import CAPTIONS, make_tiny_t5

from ltxv.text import TextEncoder, _resolve

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

D_MODEL = 32


@pytest.fixture(scope="module")
def t5_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root layout, flat layout) of the same tiny T5, built once per module."""
    base = tmp_path_factory.mktemp("tiny_t5")
    return make_tiny_t5(base / "root", "root", d_model=D_MODEL), make_tiny_t5(
        base / "flat", "flat", d_model=D_MODEL
    )


@pytest.fixture(scope="module")
def encoder(t5_folders: tuple[Path, Path]) -> TextEncoder:
    return TextEncoder.from_pretrained(t5_folders[0])


def test_both_layouts_load_and_agree(t5_folders: tuple[Path, Path]) -> None:
    root, flat = (TextEncoder.from_pretrained(p) for p in t5_folders)
    emb, mask = root.encode(["a red circle moving right on a black background"], 24)
    emb_flat, mask_flat = flat.encode(["a red circle moving right on a black background"], 24)
    assert emb.shape == (1, 24, D_MODEL) and mask.shape == (1, 24) and root.hidden_size == D_MODEL
    assert emb.dtype == torch.float32 and mask.dtype == torch.int64
    torch.testing.assert_close(emb, emb_flat, atol=0, rtol=0)
    assert torch.equal(mask, mask_flat)


def test_mask_counts_real_tokens_and_eos(encoder: TextEncoder) -> None:
    ids = encoder.tokenizer.ids("a red circle")
    assert ids[-1] == encoder.tokenizer.eos_id == 1 and encoder.tokenizer.pad_id == 0
    _, mask = encoder.encode(["a red circle"], 16)
    assert int(mask.sum()) == len(ids)
    assert mask[0, : len(ids)].eq(1).all() and mask[0, len(ids) :].eq(0).all()  # real tokens first, then pad


def test_tokenizer_matches_sentencepiece(t5_folders: tuple[Path, Path], encoder: TextEncoder) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(t5_folders[0] / "tokenizer" / "spiece.model"))
    for text in [*CAPTIONS[:5], "a zebra plays the xylophone"]:  # the last one has unknown characters
        assert encoder.tokenizer.ids(text) == sp.encode(text) + [sp.eos_id()], text


def test_padding_does_not_change_real_tokens(encoder: TextEncoder) -> None:
    """Why the mask goes into T5 (official pipeline): real-token embeddings are independent of the padding."""
    short, mask = encoder.encode(["a cat sitting on a table"], 16)
    long, _ = encoder.encode(["a cat sitting on a table"], 32)
    n = int(mask.sum())
    torch.testing.assert_close(short[0, :n], long[0, :n], atol=1e-5, rtol=1e-5)
    ids, _ = encoder.tokenizer(["a cat sitting on a table"], 32)
    unmasked = encoder.model(ids)  # without the mask: diffusers' LTXPipeline way
    assert not torch.allclose(unmasked[0, :n], long[0, :n], atol=1e-4)  # without the mask, padding leaks in


def test_truncation_keeps_eos(encoder: TextEncoder) -> None:
    long_prompt = " ".join(CAPTIONS[:6])
    emb, mask = encoder.encode([long_prompt], 8)
    assert emb.shape == (1, 8, D_MODEL) and mask.eq(1).all()
    ids, _ = encoder.tokenizer([long_prompt], 8)
    assert ids.shape == (1, 8) and ids[0, -1] == encoder.tokenizer.eos_id
    assert ids[0, :-1].tolist() == encoder.tokenizer.ids(long_prompt)[:7]


def test_whitespace_is_stripped(encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    tokenizer = encoder.tokenizer

    def spy(texts: list[str], max_tokens: int) -> object:
        seen.append(list(texts))
        return tokenizer(texts, max_tokens)

    monkeypatch.setattr(encoder, "tokenizer", spy)
    emb, mask = encoder.encode(["  \ta red circle moving right \n ", "a red circle moving right"], 16)
    assert seen == [["a red circle moving right"] * 2]  # the official preprocessing is exactly strip()
    torch.testing.assert_close(emb[0], emb[1], atol=0, rtol=0)
    assert torch.equal(mask[0], mask[1])


def test_batch_rows_match_single_prompts(encoder: TextEncoder) -> None:
    prompts = ["a dog", "waves crashing on a sandy beach at sunset while clouds drift across the sky"]
    emb, mask = encoder.encode(prompts, 32)
    assert emb.shape == (2, 32, D_MODEL) and int(mask[0].sum()) < int(mask[1].sum())
    for i, prompt in enumerate(prompts):
        single, single_mask = encoder.encode([prompt], 32)
        n = int(single_mask.sum())
        torch.testing.assert_close(emb[i, :n], single[0, :n], atol=1e-5, rtol=1e-5)
        assert torch.equal(mask[i], single_mask[0])


def test_pickled_weights_are_refused(t5_folders: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(t5_folders[1], folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04.")  # never opened
    with pytest.raises(ValueError, match="pickle") as err:
        TextEncoder.from_pretrained(folder)
    assert "safetensors" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_missing_or_wrong_folders_error_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such text-encoder folder"):
        TextEncoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="expected a T5 folder"):
        TextEncoder.from_pretrained(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 't5'.*'bert'"):
        TextEncoder.from_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "config.json").write_text("{cut off")
    with pytest.raises(ValueError, match=r"bert/config.json: not valid JSON"):
        TextEncoder.from_pretrained(tmp_path / "bert")


def test_hub_ids_resolve_to_subfolders() -> None:
    assert _resolve("PixArt-alpha/PixArt-XL-2-1024-MS") == (
        "PixArt-alpha/PixArt-XL-2-1024-MS",
        "text_encoder",
        "tokenizer",
    )


def test_spiece_only_tokenizer(t5_folders: tuple[Path, Path], encoder: TextEncoder, tmp_path: Path) -> None:
    """Real T5 repos ship spiece.model, no tokenizer.json: read by sentencepiece, same ids."""
    folder = tmp_path / "spiece_only"
    shutil.copytree(t5_folders[0], folder)
    (folder / "tokenizer" / "tokenizer.json").unlink()
    converted = TextEncoder.from_pretrained(folder)
    for text in [*CAPTIONS[:8], "a zebra plays the xylophone"]:
        assert converted.tokenizer.ids(text) == encoder.tokenizer.ids(text), text
    (folder / "tokenizer" / "spiece.model").unlink()
    with pytest.raises(ValueError, match="tokenizer.json or spiece.model"):
        TextEncoder.from_pretrained(folder)


def test_sharded_weights_load(t5_folders: tuple[Path, Path], encoder: TextEncoder, tmp_path: Path) -> None:
    """T5-XXL repos store the encoder in shards listed by model.safetensors.index.json."""
    from conftest import shard_safetensors

    folder = tmp_path / "sharded"
    shutil.copytree(t5_folders[1], folder)
    shard_safetensors(folder / "model.safetensors", "model.safetensors.index.json")
    emb, _ = TextEncoder.from_pretrained(folder).encode([CAPTIONS[1]], 16)
    torch.testing.assert_close(emb, encoder.encode([CAPTIONS[1]], 16)[0], atol=0, rtol=0)


def test_mismatched_weights_error_clearly(t5_folders: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mismatch"
    shutil.copytree(t5_folders[1], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": config["num_layers"] + 1}))
    with pytest.raises(ValueError, match="missing") as err:
        TextEncoder.from_pretrained(folder)
    assert "blocks.2." in str(err.value) and len(str(err.value).splitlines()) == 1
    (folder / "config.json").write_text(json.dumps({**config, "d_ff": config["d_ff"] * 2}))
    with pytest.raises(ValueError, match="shapes differ"):
        TextEncoder.from_pretrained(folder)


def test_to_and_free(t5_folders: tuple[Path, Path]) -> None:
    enc = TextEncoder.from_pretrained(t5_folders[1], device="cpu", dtype=torch.bfloat16)
    assert enc.to("cpu") is enc and enc.device == torch.device("cpu")
    emb, _ = enc.encode(["a red circle"], 8)
    assert emb.dtype == torch.bfloat16 and not emb.requires_grad
    enc.free()
    with pytest.raises(RuntimeError, match="free"):
        enc.encode(["a red circle"], 8)


def test_hub_ids_download_only_the_encoder_and_tokenizer(
    t5_folders: tuple[Path, Path], encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id goes through huggingface_hub.snapshot_download (faked here: a local root layout)."""
    import huggingface_hub

    calls: list[tuple[str, list[str]]] = []

    def fake_download(repo: str, allow_patterns: list[str]) -> str:
        calls.append((repo, sorted(allow_patterns)))
        return str(t5_folders[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    emb, _ = TextEncoder.from_pretrained("someone/some-model").encode(["a red circle"], 8)
    torch.testing.assert_close(emb, encoder.encode(["a red circle"], 8)[0], atol=0, rtol=0)
    assert calls[0][0] == "someone/some-model"
    assert {p.split("/")[0] for p in calls[0][1]} == {"text_encoder", "tokenizer"}
    assert not any(p.endswith(".bin") for p in calls[0][1])  # never fetch pickles

    def offline(repo: str, allow_patterns: list[str]) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ValueError, match="someone/some-model: cannot download the text encoder") as err:
        TextEncoder.from_pretrained("someone/some-model")
    assert len(str(err.value).splitlines()) == 1
