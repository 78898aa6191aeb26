"""Media I/O: mp4 round trips at several frame rates, PNG for one frame, atomic writes, clear read errors."""

from __future__ import annotations

import pytest
import torch

from ltxv.media import read_image, read_media, read_video, resize_center_crop, write_video
from ltxv.pipeline import padded_size


def _gradient(frames: int = 9, h: int = 64, w: int = 96) -> torch.Tensor:
    x = torch.zeros(1, 3, frames, h, w)
    x[:, 0] = torch.linspace(0, 1, w)
    x[:, 1] = torch.linspace(0, 1, h)[:, None]
    x[:, 2] = torch.linspace(0, 1, frames)[:, None, None]
    return x


@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001])
def test_mp4_round_trip(tmp_path, fps):
    video = _gradient()
    path = write_video(tmp_path / "a.mp4", video, fps)
    back, got_fps = read_video(path)
    assert back.shape == (1, 3, 9, 64, 96) and got_fps == pytest.approx(fps, rel=1e-3)
    assert ((back + 1) / 2 - video).abs().mean() < 0.02  # measured 0.0066 at crf 18 for this gradient
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left behind


def test_single_frame_is_png_and_exact(tmp_path):
    video = torch.randint(0, 256, (1, 3, 1, 32, 48)).float() / 255
    path = write_video(tmp_path / "one.mp4", video, 24)
    assert path.suffix == ".png"
    torch.testing.assert_close((read_image(path) + 1) / 2, video, atol=1e-6, rtol=0)


def test_odd_sizes_are_padded_by_one_pixel(tmp_path):
    back, _ = read_video(write_video(tmp_path / "odd.mp4", torch.rand(1, 3, 9, 33, 45), 24))
    assert back.shape[-2:] == (34, 46)


def test_failed_writes_leave_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=".mp4"):
        write_video(tmp_path / "a.avi", _gradient(), 24)
    import ltxv.media

    def boom(*args):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(ltxv.media, "_encode_h264", boom)
    with pytest.raises(RuntimeError):
        write_video(tmp_path / "b.mp4", _gradient(), 24)
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_the_file(tmp_path):
    for name in ("missing.mp4", "missing.png"):
        with pytest.raises(ValueError, match=name):
            read_media(tmp_path / name)
    for name in ("junk.mp4", "junk.png"):
        (tmp_path / name).write_bytes(b"garbage" * 10)
        with pytest.raises(ValueError, match=name):
            read_media(tmp_path / name)
    with pytest.raises(ValueError, match="unknown media type"):
        read_media(tmp_path / "x.txt")


def test_resize_center_crop_keeps_the_centre():
    video = torch.zeros(1, 3, 1, 100, 300)
    video[..., 100:200] = 1.0  # a bright centre third
    out = resize_center_crop(video, 64, 64)
    assert out.shape == (1, 3, 1, 64, 64) and out.mean() > 0.95


def test_padded_size_follows_official_inference():
    assert padded_size(100, 130, 10) == (128, 160, 17)
    assert padded_size(512, 768, 121) == (512, 768, 121)
    assert padded_size(512, 768, 1) == (512, 768, 1)
    assert padded_size(480, 704, 2) == (480, 704, 9)
