"""Video and image I/O (PyAV, Pillow): read media as (1, 3, F, H, W) in [-1, 1], write [0, 1] videos as H.264
mp4
(or PNG for one frame) through a temporary file that is renamed into place."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")


def to_uint8_frames(video: Tensor) -> np.ndarray:
    """(3, F, H, W) or (1, 3, F, H, W) in [0, 1] -> (F, H, W, 3) uint8."""
    if video.ndim == 5:
        video = video[0]
    frames = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return rearrange(frames, "c f h w -> f h w c").cpu().numpy()


def from_uint8_frames(frames: np.ndarray) -> Tensor:
    """(F, H, W, 3) uint8 -> (1, 3, F, H, W) float32 in [-1, 1]."""
    video = torch.from_numpy(np.array(frames, dtype=np.uint8)).float() / 127.5 - 1
    return rearrange(video, "f h w c -> 1 c f h w")


def _atomic(path: Path, write) -> Path:  # noqa: ANN001 - write(tmp_path) produces the file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_video(path: str | os.PathLike[str], video: Tensor, fps: float, crf: int = 18) -> Path:
    """Write a (3, F, H, W) / (1, 3, F, H, W) video in [0, 1]. .mp4 -> H.264 (yuv420p, odd sides padded by one
    replicated pixel, as yuv420p needs even sides); a single frame is written as PNG next to it (path.png),
    and
    an image suffix writes the first frame. Returns the path written."""
    path = Path(path)
    frames = to_uint8_frames(video)
    if path.suffix.lower() in IMAGE_SUFFIXES or (len(frames) == 1 and path.suffix.lower() == ".mp4"):
        from PIL import Image

        path = path if path.suffix.lower() in IMAGE_SUFFIXES else path.with_suffix(".png")
        return _atomic(path, lambda tmp: Image.fromarray(frames[0]).save(tmp, format=_pil_format(path)))
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"cannot write {path.name!r}: use .mp4 for video or .png/.jpg for a single frame")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return _atomic(path, lambda tmp: _encode_h264(tmp, frames, fps, crf))


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), path.suffix[1:].upper()
    )


def _encode_h264(path: str, frames: np.ndarray, fps: float, crf: int) -> None:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[Tensor, float]:
    """Decode a video -> ((1, 3, F, H, W) in [-1, 1], fps). Errors name the file and the reason."""
    import av

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 24)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise ValueError(f"{path}: not a readable video ({err})") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return from_uint8_frames(np.stack(frames)), fps


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """An image file -> (1, 3, 1, H, W) in [-1, 1] (RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    return from_uint8_frames(array[None])


def read_media(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[Tensor, float | None]:
    """Image or video by suffix -> ((1, 3, F, H, W) in [-1, 1], fps or None for images)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return read_image(path), None
    if suffix in VIDEO_SUFFIXES:
        return read_video(path, max_frames)
    raise ValueError(
        f"{path}: unknown media type {suffix!r}; use an image ({', '.join(IMAGE_SUFFIXES)}) or a video"
    )


def resize_center_crop(video: Tensor, height: int, width: int) -> Tensor:
    """Scale (B, 3, F, h, w) so that it covers height x width (aspect kept), then crop the centre."""
    b, _, f, h, w = video.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    frames = rearrange(video, "b c f h w -> (b f) c h w").float()
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(
            frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )
    top, left = (new_h - height) // 2, (new_w - width) // 2
    frames = frames[:, :, top : top + height, left : left + width]
    return rearrange(frames, "(b f) c h w -> b c f h w", b=b, f=f).to(video.dtype)
