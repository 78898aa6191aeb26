"""Caption files (CSV / JSON / JSONL / folder) and their errors, bucket parsing and assignment, probing real
files, skipped-clip accounting, caption-to-clip alignment, and the resumable bucket batch sampler."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from ltxv.data.dataset import (
    Bucket,
    BucketBatchSampler,
    MediaItem,
    VideoDataset,
    choose_bucket,
    collate,
    parse_buckets,
    probe_media,
    read_captions,
)
from ltxv.media import read_media, write_video

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}


def solid_clip(path: Path, colour: str, frames: int = 9, height: int = 32, width: int = 32) -> Path:
    rgb = torch.tensor(COLOURS[colour]).view(1, 3, 1, 1, 1)
    return write_video(path, rgb.expand(1, 3, frames, height, width).clone(), 12)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# caption files --------------------------------------------------------------------------------------------
ROWS = [
    {"media_path": "videos/a.mp4", "caption": " a red circle "},
    {"media_path": "/abs/b.png", "caption": "b"},
]


def test_csv_json_jsonl_and_folder_read_the_same_rows(tmp_path):
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["caption", "extra", "media_path"])  # any column order
        writer.writeheader()
        writer.writerows([{**r, "extra": "x"} for r in ROWS])
    (tmp_path / "captions.json").write_text(json.dumps(ROWS))
    write_jsonl(tmp_path / "captions.jsonl", ROWS)
    expected = [
        MediaItem(tmp_path / "videos/a.mp4", "a red circle", 0),
        MediaItem(Path("/abs/b.png"), "b", 1),
    ]
    for name in ("captions.csv", "captions.json", "captions.jsonl"):
        assert read_captions(tmp_path / name) == expected, name
    odd = tmp_path / "odd.jsonl"  # a caption with U+2028, written unescaped: still one JSON line
    odd.write_text(
        json.dumps({"media_path": "a.mp4", "caption": "two\u2028lines"}, ensure_ascii=False) + "\r\n"
    )
    assert read_captions(odd) == [MediaItem(tmp_path / "a.mp4", "two\u2028lines", 0)]
    (tmp_path / "metadata.csv").write_text("media_path,caption\nother.mp4,other\n")
    assert read_captions(tmp_path) == expected  # a folder: captions.jsonl comes first
    (tmp_path / "captions.jsonl").write_text("\n" + json.dumps(ROWS[1]) + "\n\n")  # blank lines skipped
    assert read_captions(str(tmp_path)) == [MediaItem(Path("/abs/b.png"), "b", 0)]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("d.csv", "media_path,text\na.mp4,x\n", ["d.csv, line 1", "missing column(s) caption", "header"]),
        ("d.csv", "media_path,caption\na.mp4,ok\nb.mp4,\n", ["d.csv, line 3", "empty caption for 'b.mp4'"]),
        ("d.jsonl", '{"media_path": "a", "caption": "x"}\n{"media_path": "b",\n', ["line 2", "invalid JSON"]),
        (
            "d.jsonl",
            '{"media_path": "a", "caption": "x"}\n\n{"media_path": "b"}\n',
            ["line 3", "missing caption"],
        ),
        ("d.jsonl", '{"caption": "x"}\n', ["line 1", "missing media_path", "relative to"]),
        ("d.jsonl", '{"media_path": "a", "caption": "  "}\n', ["line 1", "empty caption", "remove the row"]),
        ("d.jsonl", "[1, 2]\n", ["line 1", "expected an object"]),
        (
            "d.json",
            '[{"media_path": "a", "caption": "x"}, {"media_path": "b"}]',
            ["entry 1", "missing caption"],
        ),
        ("d.json", '{"media_path": "a", "caption": "x"}', ["expected a list of objects", ".jsonl"]),
        ("d.json", '[{"media_path": "a",,}]', ["d.json, line 1", "invalid JSON"]),
        ("d.json", "[]", ["no rows"]),
        ("d.txt", "a.mp4 caption", ["unsupported", ".csv, .json or .jsonl"]),
        (
            "d.csv",
            "media_path, caption\na.mp4,x\n",
            ["missing column(s) caption", "' caption'", "without spaces"],
        ),
        ("d.jsonl", '{"media_path": "a", "caption": 5}\n', ["line 1", "int (not text) caption for 'a'"]),
        ("d.csv", "media_path,caption\na.mp4,caf\xe9\n".encode("cp1252"), ["not UTF-8", "save it as UTF-8"]),
    ],
)
def test_caption_file_errors_name_file_line_and_fix(tmp_path, name, text, expected):
    if isinstance(text, bytes):
        (tmp_path / name).write_bytes(text)
    else:
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as err:
        read_captions(tmp_path / name)
    message = str(err.value)
    assert "\n" not in message and all(part in message for part in expected), message


def test_missing_caption_file_or_folder(tmp_path):
    with pytest.raises(ValueError, match="no caption file found; add one of captions.jsonl"):
        read_captions(tmp_path)
    with pytest.raises(ValueError, match="no such caption file or dataset folder"):
        read_captions(tmp_path / "nope.jsonl")


# buckets --------------------------------------------------------------------------------------------------
def test_parse_buckets():
    buckets = parse_buckets(" 9x64x64; 17X64x96;9x64x64;1x32x32; ")
    assert buckets == (Bucket(9, 64, 64), Bucket(17, 64, 96), Bucket(1, 32, 32))
    assert [str(b) for b in buckets] == ["9x64x64", "17x64x96", "1x32x32"]
    assert sorted(buckets)[0] == Bucket(1, 32, 32)  # ordered by (frames, height, width)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("", "no buckets"),
        ("9x64x64;10x64x64", "bad bucket '10x64x64': 10 frames is not 8k+1 (at most 1025); use e.g. 9 or 17"),
        ("9x64x60", "bad bucket '9x64x60': width 60 is not a multiple of 32"),
        ("9x16x64", "height 16 is not a multiple of 32"),
        ("9x64", "bad bucket '9x64': not three integers"),
        ("9x64xabc", "FRAMESxHEIGHTxWIDTH"),
        ("0x64x64", "0 frames is not 8k+1"),
    ],
)
def test_parse_buckets_errors_name_the_entry(spec, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        parse_buckets(spec)


def test_choose_bucket_aspect_then_frames_then_area():
    buckets = parse_buckets("9x64x64;9x64x128;17x64x128;9x96x96;1x64x96")
    assert choose_bucket(9, 64, 128, buckets) == Bucket(9, 64, 128)  # 17 frames do not fit
    assert choose_bucket(40, 100, 200, buckets) == Bucket(17, 64, 128)  # same aspect: most frames
    assert choose_bucket(9, 50, 50, buckets) == Bucket(9, 96, 96)  # same aspect and frames: largest area
    assert choose_bucket(9, 128, 64, buckets) == Bucket(9, 96, 96)  # 1:2 is closer to 1:1 than to 2:1
    assert choose_bucket(1, 64, 90, buckets) == Bucket(1, 64, 96)  # an image only fits 1-frame buckets
    assert choose_bucket(5, 64, 64, parse_buckets("9x64x64")) is None
    mixed = parse_buckets("1x64x96;49x64x64")  # a 96x64 video stays a video (not a still of its first frame)
    assert (
        choose_bucket(49, 64, 96, mixed) == Bucket(49, 64, 64) and choose_bucket(1, 64, 96, mixed).frames == 1
    )


# files ----------------------------------------------------------------------------------------------------
def _rotated_clip(path, frames):
    """A phone-style clip: 64x32 frames (a white stripe at the left) stored with a -90 degree rotation."""
    import av
    import numpy as np

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix")
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :8] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_probe_matches_decoded_shape_including_exif_rotation(tmp_path):
    clip = write_video(tmp_path / "c.mp4", torch.rand(1, 3, 9, 32, 64), 12)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: 64x32 stored, 32x64 shown
    Image.new("RGB", (64, 32), (255, 0, 0)).save(tmp_path / "r.jpg", exif=exif)
    mkv = write_video(
        tmp_path / "c.mkv", torch.rand(1, 3, 17, 32, 64), 12
    )  # no frame count: decoded to count
    phone = [
        _rotated_clip(tmp_path / f"phone{suffix}", frames) for suffix, frames in ((".mp4", 9), (".mkv", 17))
    ]
    for path in (clip, mkv, tmp_path / "r.jpg", *phone):
        assert probe_media(path) == tuple(read_media(path)[0].shape[2:]), path
    upright = read_media(phone[0])[0]  # 64x32 stored with a -90 degree display matrix: shown 32 wide, 64 high
    assert upright.shape[2:] == (9, 64, 32)
    assert upright[0, 0, 0, :8].mean() > 0.9 and upright[0, 0, 0, -8:].mean() < -0.9  # left stripe -> top
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="cannot read video"):
        probe_media(tmp_path / "bad.mp4")
    import numpy as np

    Image.fromarray(np.zeros((32, 32), np.int32)).save(
        tmp_path / "deep.tif"
    )  # read_image refuses it: so must
    with pytest.raises(ValueError, match="32-bit integer pixels"):  # the probe, or one file stops preprocess
        probe_media(tmp_path / "deep.tif")


def test_bucketing_of_videos_and_images(tmp_path):
    write_video(tmp_path / "wide.mp4", torch.rand(1, 3, 17, 64, 128), 12)
    write_video(tmp_path / "tall.mp4", torch.rand(1, 3, 10, 128, 64), 12)
    write_video(tmp_path / "img.png", torch.rand(1, 3, 1, 64, 96), 1)
    rows = [{"media_path": f, "caption": f} for f in ("wide.mp4", "tall.mp4", "img.png")]
    ds = VideoDataset(
        write_jsonl(tmp_path / "c.jsonl", rows), parse_buckets("1x64x96;9x64x64;9x64x128;17x64x128")
    )
    assert ds.buckets_of == [Bucket(17, 64, 128), Bucket(9, 64, 64), Bucket(1, 64, 96)]
    assert ds.summary() == "kept 3 of 3 clips"
    for i, shape in enumerate([(3, 17, 64, 128), (3, 9, 64, 64), (3, 1, 64, 96)]):
        sample = ds[i]
        video = sample["video"]
        assert video.shape == shape and video.dtype == torch.float32
        assert video.min() >= -1 and video.max() <= 1
        assert sample["bucket"] == ds.buckets_of[i] and sample["caption"] == rows[i]["caption"]


def test_skipped_clips_are_counted_and_captions_stay_aligned(tmp_path):
    (tmp_path / "v").mkdir()
    rows = []
    for i, colour in enumerate(["red", "MISSING", "green", "CORRUPT", "blue", "SHORT", "white", "HUGE"]):
        path = tmp_path / "v" / f"{i}.mp4"
        if colour == "HUGE":  # read_media refuses it before decoding: skipped here, not a crash mid-training
            path = path.with_suffix(".png")
            Image.new("RGB", (9000, 2)).save(path)
        elif colour == "CORRUPT":
            path.write_bytes(torch.randint(0, 256, (3000,), dtype=torch.uint8).numpy().tobytes())
        elif colour == "SHORT":
            solid_clip(path, "red", frames=5)
        elif colour != "MISSING":
            solid_clip(path, colour)
        rows.append({"media_path": f"v/{path.name}", "caption": f"a {colour.lower()} clip"})
    ds = VideoDataset(write_jsonl(tmp_path / "captions.jsonl", rows), parse_buckets("9x32x32"))
    assert ds.summary() == (
        "kept 4 of 8 clips: 1 missing, 1 corrupt, 1 too short (fewer than 9 frames), "
        "1 too large (over 8192 pixels a side)"
    )
    assert ds.skipped == {
        "missing": [str(tmp_path / "v/1.mp4")],
        "corrupt": [str(tmp_path / "v/3.mp4")],
        "too short": [str(tmp_path / "v/5.mp4")],
        "too large": [str(tmp_path / "v/7.png")],
    }
    assert [item.row for item in ds.items] == [0, 2, 4, 6]
    sampler = BucketBatchSampler(ds.buckets_of, batch_size=2, seed=3)
    seen = []
    for step in range(4):
        batch = collate([ds[i] for i in sampler.batch(step)])
        assert batch["video"].shape == (2, 3, 9, 32, 32) and batch["bucket"] == Bucket(9, 32, 32)
        for video, caption, row in zip(batch["video"], batch["caption"], batch["row"], strict=True):
            rgb = (video.mean(dim=(1, 2, 3)) + 1) / 2  # (3,) in [0, 1]
            nearest = min(COLOURS, key=lambda c: float((torch.tensor(COLOURS[c]) - rgb).abs().sum()))
            assert caption == f"a {nearest} clip" == rows[row]["caption"], (caption, rgb)
            seen.append(row)
    assert sorted(seen) == [0, 0, 2, 2, 4, 4, 6, 6]  # two epochs of two batches


def test_nothing_kept_raises_with_the_summary(tmp_path):
    rows = [{"media_path": "a.mp4", "caption": "a"}, {"media_path": "b.mp4", "caption": "b"}]
    with pytest.raises(ValueError, match="kept 0 of 2 clips: 2 missing; nothing to train on"):
        VideoDataset(write_jsonl(tmp_path / "c.jsonl", rows), parse_buckets("9x32x32"))
    with pytest.raises(ValueError, match="no buckets"):
        VideoDataset(tmp_path / "c.jsonl", ())
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "still.png")
    images = write_jsonl(tmp_path / "i.jsonl", [{"media_path": "still.png", "caption": "a"}])
    with pytest.raises(
        ValueError, match="1 too short .*for still images add a 1-frame bucket, e.g. --buckets 1x"
    ):
        VideoDataset(images, parse_buckets("9x32x32"))


def test_collate_refuses_mixed_buckets():
    a = {"video": torch.zeros(3, 1, 32, 32), "caption": "a", "row": 0, "bucket": Bucket(1, 32, 32)}
    b = {"video": torch.zeros(3, 9, 32, 32), "caption": "b", "row": 1, "bucket": Bucket(9, 32, 32)}
    with pytest.raises(ValueError, match="one bucket, got 1x32x32, 9x32x32"):
        collate([a, b])


# sampler --------------------------------------------------------------------------------------------------
BUCKETS_OF = [Bucket(9, 64, 64)] * 23 + [Bucket(17, 64, 96)] * 10 + [Bucket(1, 64, 64)] * 3  # 36 items


def test_sampler_epoch_covers_each_bucket_without_repeats():
    sampler = BucketBatchSampler(BUCKETS_OF, batch_size=4, seed=0)
    assert sampler.steps_per_epoch == 23 // 4 + 10 // 4 + 0  # remainders and the 3-item bucket dropped
    for epoch in range(2):
        batches = [sampler.global_batch(epoch * sampler.steps_per_epoch + k) for k in range(7)]
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat)) == 28
        assert all(len(b) == 4 and len({BUCKETS_OF[i] for i in b}) == 1 for b in batches)
        assert sum(BUCKETS_OF[b[0]] == Bucket(17, 64, 96) for b in batches) == 2
    assert sampler.epoch_plan(0) != sampler.epoch_plan(1)  # reshuffled every epoch


def test_sampler_is_deterministic_and_resumes_from_any_step():
    a = BucketBatchSampler(BUCKETS_OF, batch_size=4, seed=7)
    history = [a.global_batch(s) for s in range(40)]  # crosses five epochs
    assert history == [
        BucketBatchSampler(BUCKETS_OF, batch_size=4, seed=7).global_batch(s) for s in range(40)
    ]
    for step in (0, 6, 7, 23, 39, 1000):  # a fresh sampler (a resumed run) jumps straight to `step`
        assert BucketBatchSampler(BUCKETS_OF, 4, 7).global_batch(step) == a.global_batch(step)
    assert [BucketBatchSampler(BUCKETS_OF, 4, 8).global_batch(s) for s in range(40)] != history


def test_sampler_rank_split():
    world = [BucketBatchSampler(BUCKETS_OF, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(20):
        parts = [s.batch(step) for s in world]
        assert all(len(p) == 2 for p in parts) and not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(world[0].global_batch(step))
        assert world[0].global_batch(step) == BucketBatchSampler(BUCKETS_OF, 4, 1).global_batch(step)
    with pytest.raises(ValueError, match="global batch_size 3 must be a multiple of world_size 2"):
        BucketBatchSampler(BUCKETS_OF, batch_size=3, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(BUCKETS_OF, batch_size=4, seed=0, rank=2, world_size=2)


def test_sampler_errors():
    with pytest.raises(ValueError, match=r"the largest, 9x64x64, has 23\); use a smaller --batch-size"):
        BucketBatchSampler(BUCKETS_OF, batch_size=24, seed=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        BucketBatchSampler(BUCKETS_OF, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        BucketBatchSampler(BUCKETS_OF, batch_size=2, seed=0).batch(-1)
