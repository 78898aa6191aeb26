"""Video and image I/O (PyAV, Pillow), [0, 1] <-> uint8 frames, official pad-to-/32-and-8k+1 then crop back.

Conventions: `video` is (B, 3, F, H, W) float; readers return model space [-1, 1]; writers take user space
[0, 1]. Writes are atomic (`files.atomic_file`), so a half-written file never exists. PyAV and Pillow are
imported inside the functions that need them.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .files import atomic_file, check_writable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")  # readable by PyAV
VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # writable: H.264 in these containers
MAX_SIDE = 8192  # pixels; far beyond any LTX-Video resolution, catches swapped or garbage arguments
MAX_FRAMES = 1025  # 8 * 128 + 1
RANGE_SLACK = 0.5  # values this far outside [0, 1] are another range ([-1, 1], 0-255), not overshoot
_NTSC_BASES = (24, 30, 48, 60, 120)  # 23.976, 29.97, ... are written as exact n * 1000 / 1001


# uint8 frames ----------------------------------------------------------------------------------------
def to_uint8_frames(video: Tensor) -> np.ndarray:
    """(3, F, H, W) or (1, 3, F, H, W) in [0, 1] -> (F, H, W, 3) uint8, clamped and rounded to nearest."""
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(
            f"expected a video of shape (3, F, H, W) or (1, 3, F, H, W), got {tuple(video.shape)}; "
            "for a batch pass one sample, e.g. video[i]"
        )
    if not video.is_floating_point():
        raise ValueError(
            f"expected a float video in [0, 1], got dtype {video.dtype}; for 0-255 frames pass video / 255"
        )
    if video.shape[1] == 0:
        raise ValueError(f"the video has no frames (shape {tuple(video.shape)}); nothing to write")
    if not torch.isfinite(video).all():
        bad = int((~torch.isfinite(video)).sum())
        raise ValueError(f"video has {bad} NaN/inf values; it cannot be written (the generation diverged)")
    low, high = float(video.min()), float(video.max())
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:  # clamping would silently destroy the picture
        hint = "(video + 1) / 2 (read_video returns [-1, 1])" if low < -RANGE_SLACK else "video / 255"
        raise ValueError(f"expected a video in [0, 1], got values in [{low:.3g}, {high:.3g}]; pass {hint}")
    frames = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()  # (3, F, H, W) -> (F, H, W, 3)


def from_uint8_frames(frames: np.ndarray) -> Tensor:
    """(F, H, W, 3) uint8 -> (1, 3, F, H, W) float32 in [-1, 1]."""
    frames = np.asarray(frames)
    if not frames.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only arrays
        frames = frames.copy()
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.dtype} of shape {frames.shape}")
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()  # (F, H, W, 3) -> (3, F, H, W)
    return video.float().div_(127.5).sub_(1)[None]


# sizes -----------------------------------------------------------------------------------------------
def _check_size(name: str, value: int, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an integer in [1, {limit}], got {value!r}")


def padded_size(
    height: int, width: int, frames: int, spatial: int = 32, temporal: int = 8
) -> tuple[int, int, int]:
    """Official `inference.py` padding: sides up to multiples of `spatial`, frames up to temporal*k + 1
    (F_pad = ((F - 2) // 8 + 1) * 8 + 1 for F >= 2; one frame stays one). Returns (H_pad, W_pad, F_pad)."""
    _check_size("height", height, MAX_SIDE)
    _check_size("width", width, MAX_SIDE)
    _check_size("frames", frames, MAX_FRAMES)
    padded_frames = frames if frames == 1 else ((frames - 2) // temporal + 1) * temporal + 1
    return -(-height // spatial) * spatial, -(-width // spatial) * spatial, padded_frames


def _centre_offsets(video: Tensor, height: int, width: int) -> tuple[int, int]:
    """Official `calculate_padding`: pad_top = (H_pad - H) // 2, pad_left = (W_pad - W) // 2."""
    return (video.shape[-2] - height) // 2, (video.shape[-1] - width) // 2


def crop_video(video: Tensor, height: int, width: int, frames: int) -> Tensor:
    """Undo `padded_size` on an output (B, C, F_pad, H_pad, W_pad): the first `frames` frames and the centre
    height x width window, where the official `inference.py` put the unpadded picture (top offset
    (H_pad - H) // 2, left offset (W_pad - W) // 2; zero offsets when only frames were padded)."""
    _check_size("height", height, MAX_SIDE)
    _check_size("width", width, MAX_SIDE)
    _check_size("frames", frames, MAX_FRAMES)
    have = tuple(video.shape[-3:])
    if video.ndim != 5 or frames > have[0] or height > have[1] or width > have[2]:
        raise ValueError(
            f"cannot crop a video of shape {tuple(video.shape)} to (frames, height, width) = "
            f"{(frames, height, width)}; crop_video expects the padded (B, C, F, H, W) output"
        )
    top, left = _centre_offsets(video, height, width)
    return video[:, :, :frames, top : top + height, left : left + width]


def pad_video(video: Tensor, height: int, width: int) -> Tensor:
    """Zero-pad (B, C, F, h, w) in space to height x width, centred as official `inference.py` pads
    conditioning media (0 is mid-grey in [-1, 1]); `crop_video` removes exactly this padding."""
    _check_size("height", height, MAX_SIDE)
    _check_size("width", width, MAX_SIDE)
    h, w = video.shape[-2:]
    if video.ndim != 5 or h > height or w > width:
        raise ValueError(f"cannot pad a video of shape {tuple(video.shape)} to {height}x{width}")
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(video, (left, width - w - left, top, height - h - top))


def resize_center_crop(video: Tensor, height: int, width: int) -> Tensor:
    """Fit (B, 3, F, h, w) to height x width without distortion, as the official image loader does: crop the
    centre to the target aspect (its integer window), then resize bilinearly with antialiasing (the
    official loader uses PIL's bicubic). Works in any value range; returns the input dtype."""
    _check_size("height", height, MAX_SIDE)
    _check_size("width", width, MAX_SIDE)
    if video.ndim != 5:
        raise ValueError(f"expected a (B, C, F, H, W) video, got shape {tuple(video.shape)}")
    b, c, f, h, w = video.shape
    aspect = width / height  # the official window arithmetic, float rounding included
    if w / h > aspect:  # too wide: keep the full height
        crop_h, crop_w = h, max(1, int(h * aspect))
    else:  # too tall: keep the full width
        crop_h, crop_w = max(1, int(w / aspect)), w
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    video = video[..., top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (height, width):
        return video
    frames = video.reshape(b, c * f, crop_h, crop_w).float()  # (B, C*F, h, w): frames resized independently
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return frames.reshape(b, c, f, height, width).to(video.dtype)


# writing ---------------------------------------------------------------------------------------------
def output_path(path: str | os.PathLike[str], num_frames: int) -> Path:
    """The file `write_video` will write for `num_frames` frames, or a ValueError naming it; call it before a
    long generation to validate `path` (its extension, and that a file can be created there). One frame to
    .mp4/.mov/.mkv becomes a .png next to it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ValueError(
            f"cannot write {str(path)!r}: it is a folder; give a file name, e.g. {str(path / 'video.mp4')!r}"
        )
    if suffix in VIDEO_FORMATS:
        path = path.with_suffix(".png") if num_frames == 1 else path
    elif suffix in IMAGE_SUFFIXES:
        if num_frames != 1:
            raise ValueError(f"cannot write {num_frames} frames to image {str(path)!r}; use a .mp4 path")
    else:
        raise ValueError(
            f"cannot write {str(path)!r}: unsupported extension {path.suffix!r}; use .mp4 (or .mov/.mkv) for "
            f"video, .png (or {', '.join(IMAGE_SUFFIXES[1:])}) for a single frame"
        )
    return check_writable(path)


def write_video(path: str | os.PathLike[str], video01: Tensor, fps: float, crf: int = 18) -> Path:
    """Write a (3, F, H, W) or (1, 3, F, H, W) video in [0, 1]; returns the path written (see `output_path`).

    Video: H.264 (libx264 when available, `crf`, preset medium), yuv420p tagged BT.601, at `fps` as an exact
    fraction (23.976 -> 24000/1001). yuv420p needs even sides, so an odd height or width gets one extra
    bottom row / right column replicated from the edge: the file is then 1 pixel larger than the tensor.
    A single frame is written losslessly as PNG (a video path gets its suffix replaced by .png).
    """
    path = output_path(path, video01.shape[-3])
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with atomic_file(path) as tmp:
            _save_image(str(tmp), to_uint8_frames(video01)[0], path.suffix)
        return path
    with video_writer(path, fps, crf) as write:
        write(video01)
    return path


@contextmanager
def video_writer(
    path: str | os.PathLike[str], fps: float, crf: int = 18
) -> Iterator[Callable[[Tensor], None]]:
    """H.264 video written as it comes (`write_video`'s format): the block gets `write(video01)` to call with
    (3, f, H, W) or (1, 3, f, H, W) chunks in [0, 1], all of one size. The file appears at `path` when the
    block ends without an error (built under a hidden temporary name), else nothing is left. Memory: one
    chunk, however long the video."""
    import av

    path = output_path(path, 2)  # a video path (a frame count above 1 refuses image suffixes)
    if not (isinstance(crf, int) and 0 <= crf <= 51):
        raise ValueError(f"crf must be an integer in [0, 51] (lower = better), got {crf!r}")
    rate = _frame_rate(fps)
    container_format = VIDEO_FORMATS[path.suffix.lower()]
    with atomic_file(path) as tmp, av.open(str(tmp), mode="w", format=container_format) as container:
        streams = []  # (the stream, the first chunk's (H, W)): made for the first chunk

        def write(video01: Tensor) -> None:
            frames = to_uint8_frames(video01)  # (f, H, W, 3)
            h, w = frames.shape[1:3]
            if streams and streams[0][1] != (h, w):
                raise ValueError(f"a {w}x{h} chunk in a {streams[0][1][1]}x{streams[0][1][0]} video")
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # even sides
            if not streams:
                streams.append((_h264_stream(container, rate, crf, frames.shape[1:3]), (h, w)))
            stream = streams[0][0]
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

        yield write
        if not streams:
            raise ValueError(f"no frames were written to {str(path)!r}")
        container.mux(streams[0][0].encode())  # flush delayed frames


def _save_image(tmp: str, frame: np.ndarray, suffix: str) -> None:
    from PIL import Image

    kind = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix.lower())
    Image.fromarray(frame).save(tmp, format=kind or suffix[1:].upper())


def _frame_rate(fps: float) -> Fraction:
    """fps as an exact fraction; NTSC rates (23.976, 29.97, 59.94, ...) snap to n * 1000 / 1001."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps <= 1000:
        raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}")
    for base in _NTSC_BASES:
        if abs(fps - base * 1000 / 1001) < 5e-3:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _h264_encoder() -> str:
    """libx264, else another software H.264 encoder, else FFmpeg's default H.264 encoder."""
    import av

    for name in ("libx264", "libopenh264", "h264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions for a missing codec
            continue
    raise RuntimeError("this PyAV build has no H.264 encoder; install the PyPI wheel (`pip install av`)")


def _h264_stream(container, rate: Fraction, crf: int, size: tuple[int, int]):  # noqa: ANN001, ANN202 - PyAV
    """A new H.264 yuv420p stream of (height, width) `size` (even) in `container`."""
    encoder = _h264_encoder()
    stream = container.add_stream(encoder, rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    if encoder == "libx264":
        stream.options = {"crf": str(crf), "preset": "medium"}
    ctx = stream.codec_context
    if hasattr(ctx, "colorspace"):  # rgb24 -> yuv420p uses BT.601 limited range: say so for players
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 6, 6, 6, 1
    return stream


# reading ---------------------------------------------------------------------------------------------
def _reason(err: BaseException, path: Path) -> str:
    """One line, without the file name that PyAV and Pillow often repeat."""
    text = str(getattr(err, "strerror", None) or err or type(err).__name__)
    text = text.replace(repr(str(path)), "").replace(str(path), "").rstrip(" :'\"")
    return " ".join(text.split())


def _existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"cannot read {str(path)!r}: no such file")
    if not path.is_file():
        raise ValueError(f"cannot read {str(path)!r}: not a file")
    return path


def read_video(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[Tensor, float]:
    """Decode the first video stream -> ((1, 3, F, H, W) float32 in [-1, 1], fps), at most `max_frames`
    frames. Missing, unreadable or corrupt files raise a one-line ValueError naming the path."""
    import av

    path = _existing_file(path)
    if max_frames is not None:
        _check_size("max_frames", max_frames, 1 << 30)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            _check_media_size(stream.codec_context.width, stream.codec_context.height)
            stream.thread_type = "AUTO"
            rate = stream_rate(stream)
            for frame in container.decode(stream):
                frames.append(np.rot90(frame.to_ndarray(format="rgb24"), display_quarter_turns(frame)))
                if len(frames) == max_frames:
                    break
    except (av.FFmpegError, OSError, ValueError) as err:
        kind = MediaTooLarge if isinstance(err, MediaTooLarge) else ValueError
        raise kind(f"cannot read video {str(path)!r}: {_reason(err, path)}") from None
    if not frames:
        raise ValueError(f"cannot read video {str(path)!r}: it has no decodable frames")
    if not rate:
        raise ValueError(f"cannot read video {str(path)!r}: it has no frame rate")
    return from_uint8_frames(np.stack(frames)), float(rate)


class MediaTooLarge(ValueError):
    """A file wider or taller than MAX_SIDE, refused before its pixels are decoded."""


def _check_media_size(width: int, height: int) -> None:
    """MediaTooLarge for a file wider or taller than MAX_SIDE, before its pixels are decoded (a 12000x12000
    PNG of 0.4 MB decodes to 1.7 GB of float32)."""
    if max(width, height) > MAX_SIDE:
        raise MediaTooLarge(f"{width}x{height} pixels; at most {MAX_SIDE} a side: scale it down first")


def display_quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns that show a decoded PyAV frame upright, from its file's display matrix
    (portrait phone videos store landscape frames and a -90 degree rotation); 0 for PyAV without it."""
    return round(getattr(frame, "rotation", 0) / 90) % 4


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """An image file -> (1, 3, 1, H, W) float32 in [-1, 1]: RGB (alpha dropped, as the official loader does),
    EXIF orientation applied; 16-bit grey scaled from [0, 65535], float grey taken as [0, 1]. Missing,
    unreadable or out-of-range files raise a one-line ValueError naming the path."""
    from PIL import Image, ImageOps

    path = _existing_file(path)
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before the pixels
            _check_media_size(image.width, image.height)
            upright = ImageOps.exif_transpose(image)
            grey = _deep_grey(upright, image.format)
            array = None if grey is not None else np.asarray(upright.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        kind = MediaTooLarge if isinstance(err, MediaTooLarge) else ValueError
        raise kind(f"cannot read image {str(path)!r}: {_reason(err, path)}") from None
    if grey is None:
        return from_uint8_frames(array[None])
    video = torch.from_numpy(grey).mul_(2).sub_(1)
    return video.expand(1, 3, 1, *grey.shape).contiguous()  # (H, W) -> (1, 3, 1, H, W)


def _deep_grey(image, file_format: str | None) -> np.ndarray | None:  # noqa: ANN001 - a PIL image
    """(H, W) float32 in [0, 1] for the grey modes deeper than 8 bits, None for the others. Pillow's
    convert("RGB") clips these to [0, 255]: 16-bit grey would read as white and float [0, 1] as black."""
    mode = image.mode
    if mode.startswith("I;16") or (mode == "I" and file_format == "PNG"):  # a PNG holds at most 16 bits
        return np.asarray(image).astype(np.float32) / 65535
    if mode == "F":
        grey = np.asarray(image).astype(np.float32)
        if not (np.isfinite(grey).all() and grey.min() >= 0 and grey.max() <= 1):
            raise ValueError(
                f"float pixels (mode 'F') must lie in [0, 1], found [{grey.min():g}, {grey.max():g}]; "
                "rescale the image or save it as 8- or 16-bit"
            )
        return grey
    check_pixel_mode(mode, file_format)
    return None


def check_pixel_mode(mode: str, file_format: str | None) -> None:
    """ValueError for the pixels `read_image` cannot map to [0, 1] (the dataset probe refuses them too)."""
    if mode == "I" and file_format != "PNG":  # a PNG's mode "I" holds at most 16 bits
        raise ValueError("32-bit integer pixels (mode 'I') have no defined white; save it as 8- or 16-bit")


def stream_rate(stream: Any) -> Fraction | None:
    """A PyAV video stream's frame rate from its header, None (or 0) when it has none."""
    return stream.average_rate or stream.guessed_rate or stream.base_rate


def read_media(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[Tensor, float | None]:
    """Image or video -> ((1, 3, F, H, W) in [-1, 1], fps or None for an image). Chosen by extension;
    an unknown extension is tried as an image, then as a video."""
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return read_image(path), None
    if suffix in VIDEO_SUFFIXES:
        return read_video(path, max_frames)
    try:
        return read_image(path), None
    except MediaTooLarge:  # an image, and too large: say that, not "neither"
        raise
    except ValueError:
        try:
            return read_video(path, max_frames)
        except MediaTooLarge:
            raise
        except ValueError:
            raise ValueError(f"cannot read {str(path)!r}: neither a readable image nor video") from None


# I2V preprocessing -----------------------------------------------------------------------------------
def gaussian_blur(video: Tensor, sigma: float = 1.0, kernel: int = 3) -> Tensor:
    """Per-frame separable Gaussian blur with reflect padding (torchvision `gaussian_blur`, which the official
    conditioning preprocessing applies with kernel 3, sigma 1.0); (B, C, F, H, W) -> same shape."""
    x = torch.arange(kernel, dtype=torch.float32, device=video.device) - (kernel - 1) / 2
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    frames = video.float().reshape(-1, 1, *video.shape[-2:])  # (B*C*F, 1, H, W)
    frames = F.pad(frames, (kernel // 2,) * 4, mode="reflect")
    frames = F.conv2d(frames, weights.view(1, 1, 1, kernel))  # along rows
    frames = F.conv2d(frames, weights.view(1, 1, kernel, 1))  # along columns
    return frames.reshape(video.shape).to(video.dtype)


def preprocess_condition(media: Tensor, crf: int = 29) -> Tensor:
    """Official conditioning-media preprocessing (`inference.py`): blur (3x3, sigma 1), then one H.264 round
    trip per frame at crf 29, so conditioning frames look like decoded video. (B, 3, F, H, W) in [-1, 1]."""
    blurred = (gaussian_blur((media.float() + 1) / 2) * 2 - 1).clamp(-1, 1)
    return encode_as_h264_like(blurred.to(media.dtype), crf)


def encode_as_h264_like(image: Tensor, crf: int = 29) -> Tensor:
    """Give (B, 3, F, H, W) frames in [-1, 1] the artefacts of video compression, as the official I2V
    preprocessing does (`ltx_video/pipelines/crf_compressor.py`, spec §5.7): each frame alone goes through
    libx264 (crf 29, preset veryfast, yuv420p) in memory and is decoded back. Same shape, dtype and device;
    crf 0 returns the input. Differences from official: values are rounded (not truncated) to uint8, which
    is identical for images that came from uint8; odd sides are edge-padded to even and cropped back
    instead of losing their last row/column."""
    if image.ndim != 5 or image.shape[1] != 3:
        raise ValueError(f"expected (B, 3, F, H, W) frames in [-1, 1], got shape {tuple(image.shape)}")
    if not (isinstance(crf, int) and 0 <= crf <= 51):
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    if crf == 0:
        return image
    if _h264_encoder() != "libx264":
        raise RuntimeError(
            "encode_as_h264_like needs libx264; install the PyPI wheel of PyAV (`pip install av`)"
        )
    b, _, _, h, w = image.shape
    out = torch.empty_like(image)
    for i in range(b):
        frames = to_uint8_frames((image[i] + 1) / 2)  # (F, H, W, 3)
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        decoded = np.stack([_h264_round_trip(frame, crf) for frame in frames])[:, :h, :w]
        out[i] = from_uint8_frames(decoded)[0].to(image)
    return out


def _h264_round_trip(frame: np.ndarray, crf: int) -> np.ndarray:
    """(H, W, 3) uint8 with even sides -> the same frame after a one-frame libx264 mp4 in memory."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = frame.shape[:2]
        stream.pix_fmt = "yuv420p"
        yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(yuv))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")
