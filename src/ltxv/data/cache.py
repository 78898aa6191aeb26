"""Precomputed training inputs: VAE latents and T5 embeddings of a VideoDataset, written once by `preprocess`
(`ltxv preprocess`) so that training runs on latents only. A cache folder OUT holds:

    OUT/latents/000000.safetensors latents (C, F', H', W') float32, normalized (the VAE posterior mode),
                                   with --keyframes also keyframes (F' - 1, C, 1, H', W') float32: pixel
                                   frames 8, 16, ..., 8(F' - 1) each encoded alone, as an image keyframe is
                                   (for flow.keyframe_p; ~75 % more disk), text_emb (L, D) float32,
                                   text_mask (L,) int64; file k = dataset item k (rows that list
                                   one clip with different captions share its latents, encoded once)
    OUT/null.safetensors           text_emb, text_mask of the empty prompt "" (for caption dropout)
    OUT/index.jsonl                one CacheEntry per line (file, caption, media_path, row, bucket, ...)
    OUT/meta.json                  format, vae config, latent_channels, max_tokens, text_hidden_size, count,
                                   keyframes (bool), skipped (the dataset summary) and skipped_paths

Each file is written to a temporary name and renamed. meta.json is removed first and written last, so a
folder with meta.json holds a complete cache. Only safetensors and JSON are read or written, never pickle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..config import DataConfig, to_dict
from ..files import write_text_atomic
from ..vae.model import VideoVAE
from ..weights import atomic_save
from .dataset import (
    Bucket,
    MediaItem,
    VideoDataset,
    batch_bucket,
    collate,
    group_by_bucket,
    parse_buckets,
)

CACHE_FORMAT = "ltxv-latent-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CacheEntry:
    """One line of index.jsonl."""

    file: str  # relative to the cache folder
    caption: str
    media_path: str
    row: int  # row in the caption file
    bucket: str  # pixel bucket "FxHxW" the clip was cut to
    latent_shape: tuple[int, int, int, int]  # (C, F', H', W')


# writing --------------------------------------------------------------------------------------------------
def preprocess(
    dataset: VideoDataset,
    vae: VideoVAE,
    text_encoder: Any,  # anything with .encode(prompts, max_tokens) -> (emb (B, L, D), mask (B, L))
    out: str | os.PathLike[str],
    max_tokens: int,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    num_workers: int = 0,
    keyframes: bool = False,
) -> dict[str, Any]:
    """Encode every clip of `dataset` (batches of `batch_size` clips of one bucket) and its caption into
    `out` (layout in the module docstring); returns the meta.json contents. `progress(done, total)` is
    called after each batch; `num_workers` DataLoader processes decode the videos; `keyframes` also stores
    each clip's `keyframe_latents`."""
    for name, value in (("max_tokens", max_tokens), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the latent cache")
    (out / "meta.json").unlink(missing_ok=True)  # an interrupted rewrite must not look like a cache
    vae = vae.eval().to(device)
    dtype = next(vae.parameters()).dtype
    rows_of = _rows_by_clip(dataset)  # a clip listed with several captions is encoded once
    batches = _bucket_batches(dataset.buckets_of, batch_size, list(rows_of))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers
    )
    entries: list[CacheEntry] = []
    with torch.inference_mode():
        for indices, batch in zip(batches, loader, strict=True):
            video = batch["video"].to(device, dtype)
            latents = vae.encode(video)  # (B, C, F', H', W')
            keyed = keyframe_latents(vae, video) if keyframes else None  # (B, F' - 1, C, 1, H', W')
            rows = [(j, i) for j, first in enumerate(indices) for i in rows_of[first]]  # (clip in batch, row)
            captions = [dataset.items[i].caption for _, i in rows]
            emb, mask = text_encoder.encode(captions, max_tokens)  # (R, L, D), (R, L)
            for r, (j, i) in enumerate(rows):
                tensors = {"latents": latents[j], "text_emb": emb[r], "text_mask": mask[r]}
                if keyed is not None:
                    tensors["keyframes"] = keyed[j]
                entries.append(_save_item(out, i, dataset.items[i], dataset.buckets_of[i], tensors))
            if progress is not None:
                progress(len(entries), len(dataset))
        null_emb, null_mask = text_encoder.encode([""], max_tokens)  # (1, L, D), (1, L)
    null = {"text_emb": null_emb[0].float().cpu(), "text_mask": null_mask[0].long().cpu()}
    atomic_save(null, out / "null.safetensors", {})
    entries.sort(key=lambda e: e.file)  # dataset order
    write_text_atomic(out / "index.jsonl", "".join(json.dumps(dataclasses.asdict(e)) + "\n" for e in entries))
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "vae": to_dict(vae.cfg),
        "latent_channels": vae.cfg.latent_channels,
        "max_tokens": max_tokens,
        "text_hidden_size": int(null_emb.shape[-1]),
        "count": len(entries),
        "keyframes": keyframes,
        "skipped": dataset.summary(),
        "skipped_paths": dataset.skipped,
    }
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def keyframe_latents(vae: VideoVAE, video: Tensor) -> Tensor:
    """video (B, 3, F, H, W) in [-1, 1] -> (B, F' - 1, C, 1, H', W'): pixel frames t, 2t, ..., (F' - 1)t
    (t = the VAE's temporal factor, 8) each encoded alone and normalized, as `generate` encodes an image
    keyframe; the last one is the clip's last frame."""
    step = vae.scale_factors[0]
    frames = video[:, :, step::step]  # (B, 3, F' - 1, H, W)
    b, k = frames.shape[0], frames.shape[2]
    if k == 0:
        return video.new_zeros(b, 0, vae.cfg.latent_channels, 1, 1, 1)
    images = rearrange(frames, "b c k h w -> (b k) c 1 h w")
    return rearrange(vae.encode(images), "(b k) c f h w -> b k c f h w", b=b)


def _save_item(out: Path, i: int, item: MediaItem, bucket: Bucket, tensors: dict[str, Tensor]) -> CacheEntry:
    """Write item i's tensors (latents (C, F', H', W'), keyframes, text_emb (L, D), text_mask (L,)); return
    its index entry."""
    file = f"latents/{i:06d}.safetensors"
    tensors = {k: (v.long() if k == "text_mask" else v.float()).cpu() for k, v in tensors.items()}
    atomic_save(tensors, out / file, {"caption": item.caption, "row": str(item.row)})
    shape = tuple(tensors["latents"].shape)
    return CacheEntry(file, item.caption, str(item.media_path), item.row, str(bucket), shape)


def _rows_by_clip(dataset: VideoDataset) -> dict[int, list[int]]:
    """{first row of each (media file, bucket): every row of it}, in dataset order: a caption file may list
    one clip several times with different captions (e.g. `ltxv data synth --partial-captions`)."""
    first: dict[tuple[str, Bucket], int] = {}
    rows_of: dict[int, list[int]] = {}
    for i, (item, bucket) in enumerate(zip(dataset.items, dataset.buckets_of, strict=True)):
        rows_of.setdefault(first.setdefault((str(item.media_path), bucket), i), []).append(i)
    return rows_of


def _bucket_batches(buckets_of: list[Bucket], batch_size: int, indices: list[int]) -> list[list[int]]:
    """`indices`, each once, in batches of one bucket (the last batch of a bucket may be smaller)."""
    groups = group_by_bucket([buckets_of[i] for i in indices]).values()
    return [
        [indices[g] for g in group[k : k + batch_size]]
        for group in groups
        for k in range(0, len(group), batch_size)
    ]


# reading --------------------------------------------------------------------------------------------------
def is_cache(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding a complete cache written by `preprocess`."""
    root = Path(path)
    if not ((root / "meta.json").is_file() and (root / "index.jsonl").is_file()):
        return False
    try:
        return json.loads((root / "meta.json").read_text(encoding="utf-8"))["format"] == CACHE_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


class LatentDataset(torch.utils.data.Dataset):
    """A cache folder written by `preprocess`. `buckets_of[i]` is the latent shape as Bucket(F', H', W'),
    so BucketBatchSampler batches equal shapes. self[i] -> {"latents": (C, F', H', W'), "text_emb": (L, D),
    "text_mask": (L,), "caption", "row", "bucket"}, and with `keyframes` also "keyframes" (F' - 1, C, 1,
    H', W'), which the cache must have (`has_keyframes`: written with --keyframes); otherwise they are not
    read."""

    def __init__(self, root: str | os.PathLike[str], keyframes: bool = False) -> None:
        self.root = Path(root)
        if not is_cache(self.root):
            raise ValueError(
                f"{self.root}: not a latent cache (needs meta.json and index.jsonl written by preprocess); "
                f"run `ltxv preprocess DATA --out {self.root} ...` first"
            )
        self.meta: dict[str, Any] = json.loads((self.root / "meta.json").read_text(encoding="utf-8"))
        self.entries = _read_index(self.root / "index.jsonl")
        missing = [e.file for e in self.entries if not (self.root / e.file).is_file()]
        if missing:
            raise ValueError(
                f"{self.root}: {len(missing)} file(s) in index.jsonl are missing (first: {missing[0]}); "
                "rerun `ltxv preprocess` into this folder"
            )
        if len(self.entries) != self.meta["count"]:
            raise ValueError(
                f"{self.root}: index.jsonl lists {len(self.entries)} items but meta.json says "
                f"{self.meta['count']}; rerun `ltxv preprocess` into this folder"
            )
        self.buckets_of = [Bucket(*e.latent_shape[1:]) for e in self.entries]
        if keyframes and not self.has_keyframes():
            raise ValueError(
                f"{self.root}: no keyframe latents, which flow.keyframe_p > 0 needs (written without "
                "--keyframes); rerun `ltxv preprocess ... --keyframes` into a new folder"
            )
        self.names = ("latents", "text_emb", "text_mask") + (("keyframes",) if keyframes else ())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.entries[i]
        with safe_open(self.root / entry.file, "pt") as f:
            tensors = {name: f.get_tensor(name) for name in self.names}
        item = {
            "latents": tensors["latents"],  # (C, F', H', W')
            "text_emb": tensors["text_emb"],  # (L, D)
            "text_mask": tensors["text_mask"],  # (L,)
            "caption": entry.caption,
            "row": entry.row,
            "bucket": self.buckets_of[i],
        }
        if "keyframes" in tensors:
            item["keyframes"] = tensors["keyframes"]  # (F' - 1, C, 1, H', W')
        return item

    def has_keyframes(self) -> bool:
        """Whether the cache holds keyframe latents (`ltxv preprocess --keyframes`)."""
        return bool(self.meta.get("keyframes", False))

    def null_text(self) -> tuple[Tensor, Tensor]:
        """Embedding of the empty prompt: (L, D) float32, mask (L,) int64."""
        path = self.root / "null.safetensors"
        if not path.is_file():
            raise ValueError(f"{path} is missing; rerun `ltxv preprocess` into {self.root}")
        tensors = load_file(path)
        return tensors["text_emb"], tensors["text_mask"]


def _read_index(path: Path) -> list[CacheEntry]:
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = CacheEntry(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(
                f"{path}, line {n}: not a cache entry ({err}); rerun `ltxv preprocess`"
            ) from None
        entries.append(dataclasses.replace(entry, latent_shape=tuple(entry.latent_shape)))
    return entries


def collate_latents(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples of one latent shape -> {"latents": (B, C, F', H', W'), "text_emb": (B, L, D),
    "text_mask": (B, L), "caption": [...], "row": [...], "bucket"} and "keyframes" (B, F' - 1, C, 1, H', W')
    when every sample has them."""
    bucket = batch_bucket(samples)  # first: stacking mixed shapes fails obscurely
    batch = {
        "latents": torch.stack([s["latents"] for s in samples]),
        "text_emb": torch.stack([s["text_emb"] for s in samples]),
        "text_mask": torch.stack([s["text_mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "row": [s["row"] for s in samples],
        "bucket": bucket,
    }
    if all("keyframes" in s for s in samples):
        batch["keyframes"] = torch.stack([s["keyframes"] for s in samples])  # (B, F' - 1, C, 1, H', W')
    return batch


# command line (wired by cli.py as `ltxv preprocess`) ------------------------------------------------------
def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `ltxv preprocess`; defaults come from DataConfig."""
    d = DataConfig()
    parser.add_argument("data", help="caption file (CSV/JSON/JSONL: media_path, caption) or dataset folder")
    parser.add_argument("--model", required=True, help="checkpoint holding the VAE (any supported format)")
    parser.add_argument(
        "--text-encoder", help="T5 folder (model + tokenizer; default: the model folder's text_encoder/)"
    )
    parser.add_argument("-o", "--out", required=True, help="cache folder to write")
    parser.add_argument(
        "--buckets", default=d.buckets, help="FRAMESxHEIGHTxWIDTH;...: frames 8k+1 (images 1), sides /32"
    )
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens, help="T5 tokens per caption")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per VAE / T5 call")
    parser.add_argument("--workers", type=int, default=d.workers, help="video-decoding worker processes")
    parser.add_argument("--device", help="cuda, cpu, cuda:1 ... for the VAE (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="replace the cache in --out")
    parser.add_argument(
        "--keyframes",
        action="store_true",
        help="also store pixel frames 8, 16, ... each encoded alone, for training with flow.keyframe_p",
    )


def run_preprocess(args: argparse.Namespace) -> int:
    """`ltxv preprocess`: probe and bucket the dataset, print its summary, encode it into --out."""
    from ..devices import resolve_device
    from ..text import TextEncoder
    from ..weights import load_vae

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the latent cache")
    if is_cache(out) and not args.overwrite:
        raise ValueError(f"--out {out} already holds a latent cache; pass --overwrite to replace it")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    for flag, value in (("--max-tokens", args.max_tokens), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    device = resolve_device(args.device)  # before probing the dataset: a bad --device is named at once
    text_path = args.text_encoder
    if text_path is None:
        if not (Path(args.model) / "text_encoder").is_dir():
            raise ValueError(
                f"--model {args.model} has no text_encoder/ folder: pass --text-encoder T5_DIR (captions)"
            )
        text_path = args.model
    dataset = VideoDataset(args.data, parse_buckets(args.buckets))
    counts = sorted(Counter(dataset.buckets_of).items())
    print(f"{dataset.summary()}; buckets: " + ", ".join(f"{b} x{n}" for b, n in counts))
    vae = load_vae(args.model, device, torch.float32)
    text_encoder = TextEncoder.from_pretrained(text_path, device="cpu", dtype=torch.float32)

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:  # one updating line on terminals, every ~10% in logs
        if tty:
            print(f"\rencoded {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total or done * 10 // total > (done - args.batch_size) * 10 // total:
            print(f"encoded {done}/{total}", file=sys.stderr, flush=True)

    meta = preprocess(
        dataset,
        vae,
        text_encoder,
        out,
        args.max_tokens,
        args.batch_size,
        device,
        progress,
        args.workers,
        args.keyframes,
    )
    print(f"wrote {meta['count']} latents and text embeddings to {out}")
    return 0
