"""Captioned video/image datasets for training (LTX-Video-Trainer convention) and a resumable bucket sampler.

A caption file is CSV, JSON (a list of objects) or JSONL with `media_path` (relative to the caption file's
folder, or absolute) and `caption` columns; a dataset folder holding one of CAPTION_FILES works too. Every
clip is probed once (PyAV / Pillow headers) and given a (frames, height, width) bucket; clips that are
missing, unreadable or shorter than every bucket are skipped and counted. Images are 1-frame videos.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..media import (
    IMAGE_SUFFIXES,
    MAX_FRAMES,
    MAX_SIDE,
    VIDEO_SUFFIXES,
    check_pixel_mode,
    display_quarter_turns,
    read_media,
    resize_center_crop,
    stream_rate,
)

COLUMNS = ("media_path", "caption")
CAPTION_FILES = tuple(
    f"{stem}.{ext}" for stem in ("captions", "metadata") for ext in ("jsonl", "json", "csv")
)
SKIP_REASONS = ("missing", "corrupt", "too short", "too large")
EXIF_ORIENTATION = 0x0112  # 5-8 turn the image by 90 degrees (read_image applies it): the probe swaps sides
CACHED_EPOCHS = 4  # epoch plans a BucketBatchSampler keeps


@dataclass(frozen=True)
class MediaItem:
    """One row of a caption file: the media file (resolved), its caption and its 0-based row."""

    media_path: Path
    caption: str
    row: int


# caption files --------------------------------------------------------------------------------------------
def read_captions(path: str | os.PathLike[str]) -> list[MediaItem]:
    """Rows of a CSV / JSON / JSONL caption file, or of the caption file in a dataset folder. Bad input
    raises a one-line ValueError naming the file, the line (or JSON entry) and the fix."""
    path = _caption_file(Path(path))
    if path.suffix.lower() not in (".csv", ".json", ".jsonl"):
        raise ValueError(f"{path}: unsupported caption file type; use .csv, .json or .jsonl")
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheet CSVs often start with a BOM
    except UnicodeDecodeError as err:
        raise ValueError(
            f"cannot read caption file {path}: not UTF-8 ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise ValueError(f"cannot read caption file {path}: {err}") from None
    records = _records(path, text)
    if not records:
        raise ValueError(f"{path}: no rows; add one row per clip with 'media_path' and 'caption'")
    return [_item(path, where, row, record) for row, (where, record) in enumerate(records)]


def _caption_file(path: Path) -> Path:
    if path.is_dir():
        for name in CAPTION_FILES:
            if (path / name).is_file():
                return path / name
        raise ValueError(f"{path}: no caption file found; add one of {', '.join(CAPTION_FILES)}")
    if not path.is_file():
        raise ValueError(f"{path}: no such caption file or dataset folder")
    return path


def _records(path: Path, text: str) -> list[tuple[str, Any]]:
    """(where, record) pairs: "line N" for CSV / JSONL, "entry N" for JSON; syntax errors raise."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}, line 1: missing column(s) {', '.join(missing)} in the header {reader.fieldnames}; "
                "name them exactly, separated by ',' without spaces"
            )
        return [(f"line {reader.line_num}", record) for record in reader]  # line_num: the row's last line
    if path.suffix.lower() == ".jsonl":
        records = []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a caption
            try:
                records += [(f"line {n}", json.loads(line))] if line.strip() else []
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {n}: invalid JSON ({err.msg} at column {err.colno}); write one object "
                    'per line, e.g. {"media_path": "videos/a.mp4", "caption": "..."}'
                ) from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}, line {err.lineno}: invalid JSON ({err.msg} at column {err.colno}); "
            "a .json caption file is one list of objects"
        ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of objects, got a {type(data).__name__}; or use .jsonl")
    return [(f"entry {i}", record) for i, record in enumerate(data)]


def _item(path: Path, where: str, row: int, record: Any) -> MediaItem:
    """Validate one record (a dict from any of the three formats) and resolve its media path."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}, {where}: expected an object with 'media_path' and 'caption'")
    media, caption = (record.get(c) for c in COLUMNS)
    if not isinstance(media, str) or not media.strip():
        raise ValueError(
            f"{path}, {where}: missing media_path; every row needs 'media_path' (a file relative to "
            f"{path.parent}, or absolute) and 'caption'"
        )
    if not isinstance(caption, str) or not caption.strip():
        kind = "missing" if caption is None else f"{type(caption).__name__} (not text)"
        what = "empty" if isinstance(caption, str) else kind
        raise ValueError(f"{path}, {where}: {what} caption for {media!r}; write a caption or remove the row")
    return MediaItem(path.parent / Path(media.strip()).expanduser(), caption.strip(), row)


# buckets --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Bucket:
    """A training shape shared by every clip of a batch: pixels for VideoDataset, latents for a cache."""

    frames: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


BUCKETS_HELP = "write buckets as FRAMESxHEIGHTxWIDTH joined by ';', e.g. '9x64x64;17x64x96'"


def parse_buckets(spec: str) -> tuple[Bucket, ...]:
    """'9x64x64;17x64x96' -> buckets in the given order (duplicates dropped). Frames must be 8k+1 (images:
    1), sides multiples of 32, as the VAE needs; errors name the bad entry and a valid neighbour."""
    entries = [e.strip() for e in spec.split(";") if e.strip()]
    if not entries:
        raise ValueError(f"no buckets in {spec!r}; {BUCKETS_HELP}")
    buckets: list[Bucket] = []
    for entry in entries:
        parts = [p.strip() for p in entry.lower().split("x")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"bad bucket {entry!r}: not three integers; {BUCKETS_HELP}")
        frames, height, width = (int(p) for p in parts)
        if not 1 <= frames <= MAX_FRAMES or (frames - 1) % 8:
            lower = min(max(1, (frames - 1) // 8 * 8 + 1), MAX_FRAMES - 8)
            raise ValueError(
                f"bad bucket {entry!r}: {frames} frames is not 8k+1 (at most {MAX_FRAMES}); "
                f"use e.g. {lower} or {lower + 8}"
            )
        for name, side in (("height", height), ("width", width)):
            if not 32 <= side <= MAX_SIDE or side % 32:
                lower = min(max(32, side // 32 * 32), MAX_SIDE)
                raise ValueError(
                    f"bad bucket {entry!r}: {name} {side} is not a multiple of 32 in [32, {MAX_SIDE}]; "
                    f"use e.g. {lower}"
                )
        if Bucket(frames, height, width) not in buckets:
            buckets.append(Bucket(frames, height, width))
    return tuple(buckets)


def choose_bucket(frames: int, height: int, width: int, buckets: Sequence[Bucket]) -> Bucket | None:
    """Among buckets with at most `frames` frames (for a video, multi-frame ones when any fits), the closest
    in aspect ratio (distance |log(a_b / a)|, so 2:1 and 1:2 are equally far from 1:1); ties: most frames,
    then largest area. None when none fits."""
    fitting = [b for b in buckets if b.frames <= frames]
    if frames > 1 and any(b.frames > 1 for b in fitting):  # a video stays a video where a video bucket fits
        fitting = [b for b in fitting if b.frames > 1]
    if not fitting:
        return None
    aspect = width / height
    return min(
        fitting,
        key=lambda b: (round(abs(math.log(b.width / b.height / aspect)), 9), -b.frames, -b.height * b.width),
    )


# probing --------------------------------------------------------------------------------------------------
def probe_media(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) of an image (1 frame) or a video, from headers where possible (a video whose
    container has no frame count is decoded once to count). Unreadable files raise ValueError."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _probe_video(path)
    try:  # an image, or an unknown extension: as read_media, try image then video
        return _probe_image(path)
    except ValueError:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise
        return _probe_video(path)


def _probe_image(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
            check_pixel_mode(image.mode, image.format)  # what read_image refuses is skipped here, counted
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return 1, height, width


def _probe_video(path: Path) -> tuple[int, int, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            decoded = container.decode(stream)
            first = next(
                decoded, None
            )  # its rotation; every frame is decoded only when the header has no count
            turns = display_quarter_turns(first) if first is not None else 0
            frames = stream.frames or (first is not None) + sum(1 for _ in decoded)
            if not stream_rate(stream):  # read_video refuses it: skipped here, counted
                raise ValueError("no frame rate")
            height, width = stream.codec_context.height, stream.codec_context.width
            if turns % 2:  # a portrait phone clip: read_video turns its frames upright
                height, width = width, height
    except (av.FFmpegError, OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read video {path}: {err}") from None
    if not (frames and height and width):
        raise ValueError(f"cannot read video {path}: no decodable frames")
    return frames, height, width


def _assign(path: Path, buckets: Sequence[Bucket]) -> tuple[Bucket | None, str]:
    """(bucket, "") for a usable clip, else (None, one of SKIP_REASONS)."""
    if not path.is_file():
        return None, "missing"
    try:
        frames, height, width = probe_media(path)
    except ValueError:
        return None, "corrupt"
    if max(height, width) > MAX_SIDE:  # read_media refuses it (before decoding): it would fail mid-training
        return None, "too large"
    bucket = choose_bucket(frames, height, width, buckets)
    return (bucket, "") if bucket is not None else (None, "too short")


# dataset --------------------------------------------------------------------------------------------------
class VideoDataset(torch.utils.data.Dataset):
    """Captioned clips of a caption file or dataset folder, each probed once and assigned a bucket.

    `items[i]` and `buckets_of[i]` are parallel; `skipped` maps a reason (SKIP_REASONS) to the paths left
    out. `self[i]` decodes the first `bucket.frames` frames and fits them to the bucket's size (centre crop
    to its aspect, then resize) -> {"video": (3, F, H, W) float32 in [-1, 1], "caption", "row", "bucket"}.
    """

    def __init__(self, source: str | os.PathLike[str], buckets: tuple[Bucket, ...]) -> None:
        if not buckets:
            raise ValueError(f"no buckets given; {BUCKETS_HELP}")
        self.source, self.buckets = Path(source), tuple(buckets)
        rows = read_captions(source)
        self.total = len(rows)
        self.items: list[MediaItem] = []
        self.buckets_of: list[Bucket] = []
        self.skipped: dict[str, list[str]] = {}
        for item in rows:
            bucket, reason = _assign(item.media_path, self.buckets)
            if bucket is None:
                self.skipped.setdefault(reason, []).append(str(item.media_path))
            else:
                self.items.append(item)
                self.buckets_of.append(bucket)
        if not self.items:
            short = self.skipped.get("too short", [])
            images = any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in short)
            hint = "; for still images add a 1-frame bucket, e.g. --buckets 1x512x512" if images else ""
            raise ValueError(f"{self.source}: {self.summary()}; nothing to train on{hint}")

    def summary(self) -> str:
        """e.g. 'kept 10 of 13 clips: 1 missing, 1 corrupt, 1 too short (fewer than 9 frames)'."""
        shortest = min(b.frames for b in self.buckets)
        label = {
            "too short": f"too short (fewer than {shortest} frame{'s' * (shortest > 1)})",
            "too large": f"too large (over {MAX_SIDE} pixels a side)",
        }
        parts = [f"{len(self.skipped[r])} {label.get(r, r)}" for r in SKIP_REASONS if r in self.skipped]
        return f"kept {len(self.items)} of {self.total} clips" + (": " + ", ".join(parts) if parts else "")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, bucket = self.items[i], self.buckets_of[i]
        video, _ = read_media(item.media_path, max_frames=bucket.frames)  # (1, 3, F, H, W) in [-1, 1]
        if video.shape[2] < bucket.frames:
            raise ValueError(
                f"{item.media_path}: decoded {video.shape[2]} frames, but its header promised at least "
                f"{bucket.frames}; re-encode the file or remove row {item.row} from the caption file"
            )
        video = resize_center_crop(video[:, :, : bucket.frames], bucket.height, bucket.width)[0]
        return {"video": video.clamp(-1, 1), "caption": item.caption, "row": item.row, "bucket": bucket}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples of one bucket -> {"video": (B, 3, F, H, W), "caption": [...], "row": [...], "bucket"}."""
    bucket = batch_bucket(samples)  # first: stacking mixed shapes fails obscurely
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "row": [s["row"] for s in samples],
        "bucket": bucket,
    }


def batch_bucket(samples: list[dict[str, Any]]) -> Bucket:
    """The one bucket all samples share (ValueError otherwise): what every collate function checks."""
    buckets = {s["bucket"] for s in samples}
    if len(buckets) != 1:
        names = ", ".join(sorted(map(str, buckets))) or "none"
        raise ValueError(f"a batch must hold samples of one bucket, got {names}; use BucketBatchSampler")
    return buckets.pop()


# sampler --------------------------------------------------------------------------------------------------
def group_by_bucket(buckets_of: Sequence[Bucket]) -> dict[Bucket, list[int]]:
    """bucket -> the indices that have it, in index order (buckets in order of first appearance)."""
    groups: dict[Bucket, list[int]] = {}
    for i, bucket in enumerate(buckets_of):
        groups.setdefault(bucket, []).append(i)
    return groups


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed from (seed, epoch), the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(f"ltxv-buckets/{seed}/{epoch}".encode()).digest()[:8], "little")


class BucketBatchSampler:
    """Batches of dataset indices that share a bucket; a pure function of (seed, step), so a resumed run
    sees exactly the batches it would have seen.

    Epoch e: with a torch.Generator seeded from (seed, e), shuffle each bucket's indices (buckets in sorted
    order), cut them into batches of `batch_size` (the GLOBAL batch; an incomplete remainder is dropped),
    then shuffle the order of all batches. Step s is batch s % steps_per_epoch of epoch s // steps_per_epoch.
    Rank r of `world_size` processes takes `global_batch(s)[r::world_size]`.
    """

    def __init__(
        self, buckets_of: Sequence[Bucket], batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank!r} of world_size {world_size!r}")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} must be a multiple of world_size {world_size}")
        groups = group_by_bucket(buckets_of)
        self.groups = [torch.tensor(groups[b]) for b in sorted(groups)]  # indices per bucket
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        if self.steps_per_epoch == 0:
            size, largest = max(((len(v), b) for b, v in groups.items()), default=(0, None))
            raise ValueError(
                f"no bucket holds batch_size={batch_size} clips (the largest, {largest}, has {size}); "
                f"use a smaller --batch-size (at most {size}) or add clips"
            )
        self._plans: dict[int, list[list[int]]] = {}

    @property
    def steps_per_epoch(self) -> int:
        return sum(len(g) // self.batch_size for g in self.groups)

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """Every global batch of `epoch`, in order (the last CACHED_EPOCHS plans are kept)."""
        if epoch not in self._plans:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            batches: list[list[int]] = []
            for group in self.groups:
                usable = len(group) // self.batch_size * self.batch_size
                shuffled = group[torch.randperm(len(group), generator=g)][:usable]
                batches += shuffled.view(-1, self.batch_size).tolist()  # (n_batches, batch_size)
            order = torch.randperm(len(batches), generator=g).tolist()
            if len(self._plans) >= CACHED_EPOCHS:
                del self._plans[min(self._plans)]
            self._plans[epoch] = [batches[j] for j in order]
        return self._plans[epoch]

    def global_batch(self, step: int) -> list[int]:
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        epoch, k = divmod(step, self.steps_per_epoch)
        return list(self.epoch_plan(epoch)[k])

    def batch(self, step: int) -> list[int]:
        """This rank's share of the global batch of `step`."""
        return self.global_batch(step)[self.rank :: self.world_size]
