"""T5 text encoder: prompts -> (text_emb (B, L, D), text_mask (B, L)).

As the official LTX-Video pipeline: T5 v1.1 encoder only, prompts `strip()`ped, padded/truncated to
`max_tokens` with EOS appended, and the padding mask passed *into* T5 and reused as the cross-attention mask
(diffusers' LTXPipeline runs T5 without it, so its real-token embeddings depend on the padding).

Runs without transformers: the network is `ltxv.t5.T5Encoder` (weights renamed by `convert.t5_keys_from_hf`),
the tokenizer is `tokenizers` on a tokenizer.json or `sentencepiece` on a spiece.model (what transformers'
T5Tokenizer wraps). transformers is only needed to *build* a small T5 (`build_small_t5`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .convert import ConversionError, t5_config_from_hf, t5_keys_from_hf
from .t5 import T5Encoder

_LAYOUTS = "a root with text_encoder/ + tokenizer/, a folder with a T5 config.json + tokenizer, or a hub id"


def check_prompt(text: str, name: str = "the prompt") -> None:
    """ValueError unless `text` can be tokenized: valid Unicode, without lone surrogates (what Python makes of
    command-line bytes that are not UTF-8, or JSON's unpaired \\ud800 escapes; the tokenizer raised a
    TypeError on them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{name} is not valid Unicode text (character {err.start}, {text[err.start]!r}): send it as UTF-8"
        ) from None


def _resolve(path: str) -> tuple[str, str, str]:
    """-> (location, encoder subfolder, tokenizer subfolder); "" means the location itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "text_encoder").is_dir():
            return str(p), "text_encoder", "tokenizer" if (p / "tokenizer").is_dir() else "text_encoder"
        if (p / "config.json").is_file():
            return str(p), "", ""
        raise ValueError(f"{path}: expected a T5 folder: {_LAYOUTS}")
    if p.exists() or path.count("/") != 1 or path.startswith((".", "/", "~")):
        raise ValueError(f"{path}: no such text-encoder folder (expected {_LAYOUTS})")
    return path, "text_encoder", "tokenizer"  # hub id, e.g. PixArt-alpha/PixArt-XL-2-1024-MS


def _check_local(encoder_dir: Path, tokenizer_dir: Path) -> None:
    """Fail early, with one line, on folders that are not a T5 encoder + tokenizer (or hold only pickles)."""
    config_file = encoder_dir / "config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "t5":
        raise ValueError(f"{encoder_dir}: expected a T5 config.json (model_type 't5'), got {model_type!r}")
    has_safetensors = any(encoder_dir.glob("*.safetensors"))
    pickles = sorted(f.name for f in encoder_dir.glob("*.bin"))
    if not has_safetensors and pickles:
        raise ValueError(
            f"{encoder_dir}: only pickled weights {pickles}; pickle files are refused. Convert once where you"
            " trust them: T5EncoderModel.from_pretrained(d, use_safetensors=False).save_pretrained(d)"
        )
    if not has_safetensors:
        raise ValueError(f"{encoder_dir}: expected T5 weights as *.safetensors, found none")
    if not any((tokenizer_dir / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise ValueError(f"{tokenizer_dir}: expected a T5 tokenizer (tokenizer.json or spiece.model)")


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one T5 checkpoint: a sharded index's files, else model.safetensors, else the
    folder's only *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        names = [f.name for f in files]
        raise ValueError(f"{folder}: expected model.safetensors or one *.safetensors, found {names}")
    return files


def load_t5(folder: Path, device: str | torch.device, dtype: torch.dtype) -> T5Encoder:
    """A transformers-format T5 encoder folder (config.json + safetensors) -> T5Encoder on `device`."""
    from .weights import open_safetensors

    try:
        cfg = t5_config_from_hf(json.loads((folder / "config.json").read_text()))
    except ConversionError as err:
        raise ValueError(f"{folder}: {err}") from None
    sd: dict[str, Tensor] = {}
    for file in _weight_files(folder):
        try:
            with open_safetensors(str(file), str(torch.device(device))) as f:
                # cast tensor by tensor: an fp32 T5-XXL never sits on the device twice
                sd.update({key: f.get_tensor(key).to(dtype) for key in f.keys()})  # noqa: SIM118
        except Exception as err:
            raise ValueError(f"{file}: cannot read tensors ({str(err).splitlines()[0]})") from None
    sd = t5_keys_from_hf(sd)
    with torch.device("meta"):
        model = T5Encoder(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: not a T5 encoder of its config.json (missing {missing[:4]}, unexpected"
            f" {unexpected[:4]})"
        )
    bad = [k for k, v in model.state_dict().items() if v.shape != sd[k].shape]
    if bad:
        raise ValueError(f"{folder}: tensor shapes differ from config.json for {bad[:4]}")
    model.load_state_dict(sd, strict=True, assign=True)
    return model


class T5Tokenizer:
    """Prompts -> (ids, mask) (B, L) int64, as transformers' T5Tokenizer with padding="max_length",
    truncation=True: the pieces, truncated to L - 1, then EOS, then PAD up to L; mask 1 on pieces and EOS.

    Backed by `tokenizers` (tokenizer.json, preferred when present) or `sentencepiece` (spiece.model)."""

    def __init__(self, folder: Path) -> None:
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._pieces = lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
            self.eos_id, self.pad_id = tok.token_to_id("</s>"), tok.token_to_id("<pad>")
            self.unk_id = tok.token_to_id("<unk>")
        else:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
            self._pieces = lambda texts: sp.encode(texts)
            self.eos_id, self.pad_id = sp.eos_id(), sp.pad_id()
            self.unk_id = sp.unk_id() if sp.unk_id() >= 0 else None
        if self.eos_id is None or self.pad_id is None or min(self.eos_id, self.pad_id) < 0:
            raise ValueError(f"{folder}: tokenizer lacks T5's </s> or <pad> token")

    def unknown_words(self, text: str) -> list[str]:
        """The whitespace-separated words of `text` that the vocabulary can only spell with <unk>."""
        words = text.split()
        if self.unk_id is None or not words:
            return []
        return [w for w, pieces in zip(words, self._pieces(words), strict=True) if self.unk_id in pieces]

    def ids(self, text: str) -> list[int]:
        """One prompt's ids with EOS, untruncated."""
        return [*self._pieces([text])[0], self.eos_id]

    def __call__(self, prompts: list[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        rows = [[*pieces[: max_tokens - 1], self.eos_id] for pieces in self._pieces(prompts)]
        ids = torch.full((len(rows), max_tokens), self.pad_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(rows), max_tokens), dtype=torch.long)  # (B, L)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask


def _download(repo: str, enc_sub: str, tok_sub: str) -> str:
    """A hub id -> the local snapshot folder holding its text encoder and tokenizer (safetensors only)."""
    from huggingface_hub import snapshot_download

    names = ("*.json", "*.safetensors", "*.model")
    patterns = [f"{sub}/{name}" for sub in {enc_sub, tok_sub} for name in names]
    try:
        return snapshot_download(repo, allow_patterns=patterns)
    except Exception as err:  # network, auth or a missing repo: one line, not a traceback
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{repo}: cannot download the text encoder ({why})") from None


class TextEncoder:
    """T5 encoder + tokenizer. `encode` returns embeddings in the encoder's dtype and an int64 0/1 mask.

    Memory: `to("cpu")` parks T5 off the GPU between prompts (the pipeline's offload moves `.model`);
    `free()` drops it for good once the prompts are encoded (T5-XXL is ~9.5 GB in bf16)."""

    def __init__(self, model: T5Encoder, tokenizer: T5Tokenizer) -> None:
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEncoder:
        """Load safetensors weights + tokenizer (see `_LAYOUTS`) onto `device` (default CPU) in `dtype`
        (default float32; the official pipeline uses bfloat16 on GPU; float16 overflows in T5)."""
        location, enc_sub, tok_sub = _resolve(os.fspath(path))
        if not Path(location).is_dir():
            location = _download(location, enc_sub, tok_sub)
        _check_local(Path(location, enc_sub), Path(location, tok_sub))
        model = load_t5(Path(location, enc_sub), device or "cpu", dtype or torch.float32)
        return cls(model, T5Tokenizer(Path(location, tok_sub)))

    @property
    def hidden_size(self) -> int:
        return self.model.cfg.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TextEncoder:
        self.model.to(device)
        return self

    def free(self) -> None:
        """Release the encoder's memory; `encode` fails afterwards."""
        on_cuda = self.device.type == "cuda"
        self.model = self.tokenizer = None
        if on_cuda:
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def encode(self, prompts: list[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        """prompts -> text_emb (B, max_tokens, D), text_mask (B, max_tokens) int64: 1 = real token or EOS."""
        if self.model is None:
            raise RuntimeError("TextEncoder.encode after free(): load it again")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        ids, mask = self.tokenizer([p.strip() for p in prompts], max_tokens)  # (B, L) each
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.model(ids, mask), mask


# ---------------------------------------------------------------------------------------------------------
# Building a small T5-style encoder offline (the demo model's; the tests')
# ---------------------------------------------------------------------------------------------------------


def train_spiece(corpus: list[str], vocab_size: int = 300, model_type: str = "unigram") -> bytes:
    """Train a unigram sentencepiece model with T5's special ids: <pad>=0, </s>=1, <unk>=2, no BOS.

    The normalization rule is `identity` (no precompiled charsmap), so the tokenizers-backed T5Tokenizer built
    from the vocabulary alone tokenizes exactly as sentencepiece does."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        model_type=model_type,
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
    if vocab[:3] != [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]:
        raise ValueError(f"sentencepiece vocabulary lacks T5's special pieces: {vocab[:3]}")
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_small_t5(
    folder: Path,
    corpus: list[str],
    layout: str = "flat",
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 300,
    seed: int = 0,
    tokenizer_type: str = "unigram",
) -> Path:
    """Write a random T5 v1.1-style encoder (safetensors) + a sentencepiece tokenizer trained on `corpus`
    under `folder`, fully offline; returns `folder`. Random but fixed weights still give every word and
    position a distinct feature, which is all a small model trained on a closed caption grammar (the shapes
    world) needs.

    layout "root": `folder/text_encoder/` + `folder/tokenizer/` (diffusers / LTX-Video repo layout);
    layout "flat": model and tokenizer files side by side in `folder/`."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)

    if layout not in ("root", "flat"):
        raise ValueError(f"layout must be 'root' or 'flat', got {layout!r}")
    model_dir = folder / "text_encoder" if layout == "root" else folder
    tok_dir = folder / "tokenizer" if layout == "root" else folder
    spiece = train_spiece(corpus, vocab_size, tokenizer_type)
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
