"""Model-independent judge of shapes-world videos: segment the object, name its colour, shape, motion and
background, and score image quality (PSNR, SSIM).

Every function takes a video (3, F, H, W) (or (1, 3, F, H, W)) float in [0, 1]. The thresholds are set on
clips rendered by `ltxv.data.synth` (and their H.264 round trips), never on a model's output:
- background: the per-channel median of the border pixels over all frames, named by the nearest of
  synth.BACKGROUNDS;
- object: pixels whose largest channel difference from the background exceeds OBJECT_THRESHOLD (every allowed
  colour/background pair differs by >= 0.5 in some channel, see synth), then the largest 8-connected
  component per frame (specks and noise blobs dropped);
- colour: the median of the component's interior pixels, named by the nearest of synth.COLOURS (RGB distance);
- shape: per frame, the soft coverage a = <p - bg, c - bg> / |c - bg|^2 gives area, extents and the skewness
  of the row profile; fill = area / (width * height) is 1 for a square, pi/4 for a circle, 1/2 for a triangle,
  whose row profile is also skewed (apex up: -2*sqrt(2)/5); medians over frames, each cut halfway between
  the ideal values (measured on rendered clips: triangles' fill rises to 0.75 after H.264, their skew stays);
- motion: least-squares velocity of the soft centroid; "static" below half the slowest synth speed, else the
  dominant axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.synth import BACKGROUNDS, COLOURS, REFERENCE_SIZE, SPEEDS

OBJECT_THRESHOLD = 0.25  # largest channel difference from the background that makes a pixel "object"
MIN_AREA_FRACTION = 1e-3  # components below this share of the frame (and below 4 px) are not an object
STATIC_SPEED = 0.5 * SPEEDS["slow"] / REFERENCE_SIZE  # frame sides per frame: slower counts as standing still
TRIANGLE_SKEW = -math.sqrt(2) / 5  # halfway from a symmetric shape (0) to an apex-up triangle (-2*sqrt(2)/5)
SQUARE_FILL = (1 + math.pi / 4) / 2  # halfway from a circle's fill ratio (pi/4) to a square's (1)
ATTRIBUTES = ("colour", "shape", "motion", "background")


@dataclass
class Judgement:
    """What the judge read off one video; per-frame lists hold None for frames without an object."""

    found: bool  # an object was segmented in at least one frame
    background: str
    colour: str | None = None
    shape: str | None = None
    motion: str | None = None
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    colour_rgb: tuple[float, float, float] | None = None
    centroids: list[tuple[float, float] | None] = field(default_factory=list)  # (x, y) px, x right, y down
    areas: list[float] = field(default_factory=list)  # soft area per frame, px (0 without an object)
    colours: list[tuple[float, float, float] | None] = field(default_factory=list)  # mean object RGB
    velocity: tuple[float, float] = (0.0, 0.0)  # px per frame
    fill: float | None = None  # median fill ratio (area / extent box)
    skew: float | None = None  # median skewness of the row profile


def _frames(video: Tensor) -> Tensor:
    """(3, F, H, W) or (1, 3, F, H, W) -> (3, F, H, W) float32."""
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video (3, F, H, W) or (1, 3, F, H, W), got {tuple(video.shape)}")
    return video.detach().float().cpu()


def _nearest(rgb: Tensor, palette: dict[str, tuple[float, float, float]]) -> str:
    names = list(palette)
    dist = (torch.tensor([palette[n] for n in names]) - rgb).norm(dim=1)
    return names[int(dist.argmin())]


def estimate_background(video: Tensor) -> Tensor:
    """(3,): the per-channel median of the one-pixel border of every frame."""
    v = _frames(video)
    border = torch.cat([v[..., 0, :], v[..., -1, :], v[..., :, 0], v[..., :, -1]], dim=-1)  # (3, F, 2H+2W)
    return border.flatten(1).median(dim=1).values


def _largest_components(mask: Tensor) -> Tensor:
    """(F, H, W) bool -> the largest 8-connected component of each frame (label propagation by max-pooling;
    converges in about the diameter of the largest component)."""
    out = torch.zeros_like(mask)
    if not mask.any():
        return out
    f, h, w = mask.shape
    rows, cols = mask.any(dim=(0, 2)).nonzero()[:, 0], mask.any(dim=(0, 1)).nonzero()[:, 0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[:, y0:y1, x0:x1]  # (F, h', w'): the box around every frame's candidate pixels
    dtype = torch.float32 if crop[0].numel() < 2**24 else torch.float64  # labels must be exact integers
    keep = crop.to(dtype)
    labels = torch.arange(1, keep[0].numel() + 1, dtype=dtype).view(keep[0].shape) * keep  # own label each
    for _ in range(keep[0].numel()):
        before = labels
        for _ in range(4):  # a label spreads one pixel per pass; test for the fixed point every 4 passes
            labels = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * keep
        if torch.equal(before, labels):
            break
    min_area = max(4.0, MIN_AREA_FRACTION * h * w)
    for t in range(f):
        values, counts = labels[t][crop[t]].unique(return_counts=True)
        if len(counts) and counts.max() >= min_area:
            out[t, y0:y1, x0:x1] = labels[t] == values[counts.argmax()]
    return out


def segment(video: Tensor, background: Tensor) -> Tensor:
    """(F, H, W) bool: the largest component per frame of the pixels far from `background` (3,)."""
    v = _frames(video)
    far = (v - background.view(3, 1, 1, 1)).abs().amax(dim=0) > OBJECT_THRESHOLD  # (F, H, W)
    return _largest_components(far)


def _erode(mask: Tensor) -> Tensor:
    return -F.max_pool2d(-mask[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5


def _dilate(mask: Tensor) -> Tensor:
    return F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5


def _shape_features(alpha: Tensor) -> tuple[float, float, float, float, float]:
    """(H, W) soft coverage of one frame -> (area, centroid x, centroid y, fill ratio, row skewness)."""
    area = float(alpha.sum())
    width, height = float(alpha.amax(dim=0).sum()), float(alpha.amax(dim=1).sum())
    rows, cols = alpha.sum(dim=1), alpha.sum(dim=0)  # (H,), (W,) mass profiles
    ys = torch.arange(alpha.shape[0], dtype=alpha.dtype) + 0.5  # pixel centres: pixel i spans [i, i + 1]
    xs = torch.arange(alpha.shape[1], dtype=alpha.dtype) + 0.5
    cx, cy = float((cols * xs).sum() / area), float((rows * ys).sum() / area)
    var = float((rows * (ys - cy) ** 2).sum() / area)
    skew = float((rows * (ys - cy) ** 3).sum() / area) / max(var, 1e-6) ** 1.5
    return area, cx, cy, area / max(width * height, 1e-6), skew


def _classify_shape(fill: float, skew: float) -> str:
    """The skew separates triangles even when blur (H.264 chroma, small objects) raises their fill ratio."""
    if skew < TRIANGLE_SKEW:
        return "triangle"
    return "square" if fill > SQUARE_FILL else "circle"


def _velocity(track: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Least-squares slope (px per frame) of x and y against the frame index; (0, 0) below two frames."""
    if len(track) < 2:
        return 0.0, 0.0
    t, x, y = (torch.tensor(c, dtype=torch.float64) for c in zip(*track, strict=True))
    dt = t - t.mean()
    denom = float((dt**2).sum())
    return float((dt * (x - x.mean())).sum()) / denom, float((dt * (y - y.mean())).sum()) / denom


def _motion(velocity: tuple[float, float], side: int) -> str:
    vx, vy = velocity
    if math.hypot(vx, vy) < STATIC_SPEED * side:
        return "static"
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def judge_video(video: Tensor) -> Judgement:
    """Read background, object colour, shape and motion (and the measurements behind them) off `video`."""
    v = _frames(video)
    bg = estimate_background(v)
    bg_rgb = tuple(round(float(c), 4) for c in bg)
    mask = segment(v, bg)  # (F, H, W)
    if not mask.any():
        return Judgement(False, _nearest(bg, BACKGROUNDS), background_rgb=bg_rgb)
    interior = _erode(mask)
    core = interior if interior.any() else mask
    pixels = v.permute(1, 2, 3, 0)[core]  # (N, 3)
    rgb = pixels.median(dim=0).values
    contrast = rgb - bg
    region = _dilate(mask)  # the component with its anti-aliased rim
    alpha = torch.einsum(
        "cfhw,c->fhw", v - bg.view(3, 1, 1, 1), contrast
    ) / contrast.square().sum().clamp_min(1e-6)
    alpha = alpha.clamp(0, 1) * region  # (F, H, W) soft coverage of the object
    centroids, areas, colours, fills, skews, track = [], [], [], [], [], []
    for t in range(v.shape[1]):
        area, cx, cy, fill, skew = _shape_features(alpha[t]) if mask[t].any() else (0.0,) * 5
        if area < 1:  # no object, or none of it along the median object colour (possible in generated video)
            centroids.append(None)
            areas.append(0.0)
            colours.append(None)
            continue
        frame_core = core[t] if core[t].any() else mask[t]
        mean = v[:, t][:, frame_core].mean(dim=1)
        centroids.append((cx, cy))
        areas.append(area)
        colours.append(tuple(float(c) for c in mean))
        fills.append(fill)
        skews.append(skew)
        track.append((t, cx, cy))
    if not track:
        return Judgement(False, _nearest(bg, BACKGROUNDS), background_rgb=bg_rgb)
    fill, skew = float(torch.tensor(fills).median()), float(torch.tensor(skews).median())
    velocity = _velocity(track)
    return Judgement(
        found=True,
        background=_nearest(bg, BACKGROUNDS),
        colour=_nearest(rgb, COLOURS),
        shape=_classify_shape(fill, skew),
        motion=_motion(velocity, max(v.shape[-2:])),
        background_rgb=bg_rgb,
        colour_rgb=tuple(round(float(c), 4) for c in rgb),
        centroids=centroids,
        areas=areas,
        colours=colours,
        velocity=velocity,
        fill=fill,
        skew=skew,
    )


def score(judgement: Judgement, expected: dict) -> dict[str, bool]:
    """{attribute: judged == expected} for the ATTRIBUTES that `expected` names (all False when not found)."""
    return {a: judgement.found and getattr(judgement, a) == expected[a] for a in ATTRIBUTES if a in expected}


def temporal_consistency(video: Tensor, mask: Tensor) -> dict[str, float | None]:
    """Stability of the object across the frames where `mask` (F, H, W) has it: area_cv (std / mean of the
    pixel area), colour_std (std over frames of the mean object colour, averaged over channels), found (share
    of frames with an object). None where undefined (fewer than 2 frames with an object)."""
    v = _frames(video)
    present = mask.flatten(1).any(dim=1)  # (F,)
    out: dict[str, float | None] = {
        "found": float(present.float().mean()),
        "area_cv": None,
        "colour_std": None,
    }
    if int(present.sum()) < 2:
        return out
    areas = mask[present].flatten(1).sum(dim=1).double()
    out["area_cv"] = float(areas.std() / areas.mean())
    means = torch.stack([v[:, t][:, mask[t]].mean(dim=1) for t in range(v.shape[1]) if present[t]])  # (n, 3)
    out["colour_std"] = float(means.std(dim=0).mean())
    return out


def centroid_errors(made: Tensor, truth: Tensor) -> list[float | None]:
    """Per frame of two equally long videos: the distance (px) between the object's centroids, None where
    either shows no object (every frame, when one of them has none at all)."""
    if made.shape[-3] != truth.shape[-3]:
        frames = f"{made.shape[-3]} and {truth.shape[-3]}"
        raise ValueError(f"centroid_errors needs videos of equal frame counts, got {frames}")
    a, b = judge_video(made).centroids, judge_video(truth).centroids
    if not (a and b):
        return [None] * truth.shape[-3]
    return [math.dist(p, q) if p and q else None for p, q in zip(a, b, strict=True)]


# image metrics ---------------------------------------------------------------------------------------
def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape tensors in [0, 1], from the mean squared error over
    all elements (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = float((a.double() - b.double()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity (Wang et al. 2004, Eq. 13) of two videos (3, F, H, W) in [0, 1]: an 11x11
    Gaussian window (sigma 1.5, valid positions only), C1 = 0.01^2, C2 = 0.03^2, per channel and frame,
    averaged."""
    x, y = _frames(a).double(), _frames(b).double()
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"ssim needs frames of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    x, y = x.flatten(0, 1)[:, None], y.flatten(0, 1)[:, None]  # (3F, 1, H, W)
    win = _gaussian_window()
    mx, my = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mx**2
    syy = F.conv2d(y * y, win) - my**2
    sxy = F.conv2d(x * y, win) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
