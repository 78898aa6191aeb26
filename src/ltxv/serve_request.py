"""The JSON request of `ltxv serve` (`parse_request`: JSON -> SampleConfig fields and conditioning media) and
one request made into a file (`render`: as `ltxv generate` makes it), without the HTTP around them.

Keys: `ltxv generate`'s sampling flags without the dashes (`SAMPLE_KEYS`), `prompt`, the conditioning media
(`MEDIA_KEYS`: `image`, `image_strength`, `conditions`), and a long video's later prompts (`then`) with its
`CHAIN_KEYS`. A value of null is as if the key were left out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo import GENERATION_FLAGS
from .generate_cli import COND_CRF

if TYPE_CHECKING:  # torch stays out of `ltxv --help`
    from .pipeline import Pipeline

MAX_PIXELS = 1280 * 720 * 257  # a request's width x height x frames (`ltxv serve --max-pixels`)

# -- parsing -------------------------------------------------------------------------------------------------

# request key -> SampleConfig field; the keys are `ltxv generate`'s flags without "--", "-" as "_"
SAMPLE_KEYS = GENERATION_FLAGS | {
    "seed": "seed",
    "timesteps": "timesteps",
    "stg_blocks": "stg_blocks",
    "stochastic": "stochastic",
}
KEY_NAMES = {field: f'"{key}"' for key, field in SAMPLE_KEYS.items()}  # for `sample_config`'s messages
MEDIA_KEYS = ("image", "image_strength", "conditions")
CHAIN_KEYS = ("overlap", "overlap_strength", "adain")  # ChainConfig fields: with "then" (a long video)
REQUEST_KEYS = ("prompt", "then", *SAMPLE_KEYS, *MEDIA_KEYS, *CHAIN_KEYS)
MAX_BODY = 64 * 1024 * 1024  # bytes: a request's media are base64 images or short clips
_SUFFIXES = {  # data-URL media types -> the file suffix `read_media` reads them by
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
}


@dataclasses.dataclass
class Media:
    """A conditioning image or clip of a request: its file's bytes, placed at `frame` (< 0: from the end)."""

    data: bytes
    suffix: str  # "" when unknown: read as an image, else as a video
    frame: int
    strength: float
    name: str  # in messages: "image", "conditions[1]"


@dataclasses.dataclass
class Request:
    prompt: str
    given: dict[str, Any]  # SampleConfig fields the request sets (the rest: the model's generation.json)
    media: list[Media]
    then: list[str] = dataclasses.field(default_factory=list)  # later segments' prompts (generate's --then)
    chain: dict[str, Any] = dataclasses.field(default_factory=dict)  # the ChainConfig fields it sets


def parse_request(body: dict[str, Any]) -> Request:
    """A decoded JSON request -> Request, or a ValueError naming the key, the value and what to send."""
    from .config import ChainConfig, SampleConfig, coerce_value
    from .text import check_prompt

    if not isinstance(body, dict):
        raise ValueError(
            f'the request must be a JSON object such as {{"prompt": "a red circle"}}, got {body!r}'
        )
    unknown = sorted(set(body) - set(REQUEST_KEYS))
    if unknown:
        raise ValueError(f"unknown request keys {unknown}; known keys: {sorted(REQUEST_KEYS)}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f'"prompt" must be a string (the video\'s description), got {prompt!r}')
    check_prompt(prompt, '"prompt"')
    if isinstance(body.get("negative_prompt"), str):
        check_prompt(body["negative_prompt"], '"negative_prompt"')
    body = {key: value for key, value in body.items() if value is not None}  # null: as if left out
    if body.get("stg_blocks") == []:  # as an empty --stg-blocks: the model's blocks
        del body["stg_blocks"]
    given = {}
    for key, field in SAMPLE_KEYS.items():
        if key in body:
            given[field] = coerce_value(SampleConfig, field, body[key], f'"{key}"')
    media = []
    if "image" in body:
        strength = _strength(body.get("image_strength", 1.0), '"image_strength"')
        media.append(_media(body["image"], 0, strength, "image"))
    elif "image_strength" in body:
        raise ValueError('"image_strength" only applies with "image": add "image" or drop "image_strength"')
    conditions = body.get("conditions", [])
    if not isinstance(conditions, list):
        raise ValueError(
            f'"conditions" must be a list of {{"media", "frame", "strength"}} objects, got {conditions!r}'
        )
    for i, item in enumerate(conditions):
        name = f"conditions[{i}]"
        if not isinstance(item, dict) or "media" not in item or "frame" not in item:
            raise ValueError(f'{name} must be an object with "media" (base64 or a data URL) and "frame"')
        extra = sorted(set(item) - {"media", "frame", "strength"})
        if extra:
            raise ValueError(f'{name}: unknown keys {extra}; known keys: ["frame", "media", "strength"]')
        frame = item["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f'{name}: "frame" must be an integer (-1 is the last frame), got {frame!r}')
        strength = _strength(item.get("strength", 1.0), f'{name}: "strength"')
        media.append(_media(item["media"], frame, strength, name))
    then = body.get("then", [])
    if not (isinstance(then, list) and all(isinstance(p, str) for p in then)):
        raise ValueError(
            f'"then" must be a list of prompts, one per later segment of a long video; got {then!r}'
        )
    for i, later in enumerate(then):
        check_prompt(later, f'"then"[{i}]')
    chain = {key: coerce_value(ChainConfig, key, body[key], f'"{key}"') for key in CHAIN_KEYS if key in body}
    if chain and not then:
        raise ValueError(
            f'{sorted(chain)} only apply to a long video: add "then" (later prompts) or drop them'
        )
    return Request(prompt, given, media, then, chain)


def _strength(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def _media(value: Any, frame: int, strength: float, name: str) -> Media:
    """Base64 text or a data URL ("data:image/png;base64,...") -> Media."""
    if not isinstance(value, str):
        raise ValueError(
            f"{name}: expected an image or clip as base64 text or a data URL, got {type(value).__name__}"
        )
    suffix = ""
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        media_type = head[5:].split(";")[0].lower()
        if ";base64" not in head:
            raise ValueError(f"{name}: a data URL must be base64 (data:{media_type};base64,...)")
        if media_type not in _SUFFIXES:
            raise ValueError(
                f"{name}: media type {media_type!r} is not read; send one of {sorted(_SUFFIXES)}"
            )
        suffix = _SUFFIXES[media_type]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not valid base64") from None
    if not data:
        raise ValueError(f"{name}: empty")
    return Media(data, suffix, frame, strength, name)


# -- one request ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Rendered:
    data: bytes  # the file: H.264 mp4, or PNG for one frame
    media_type: str  # "video/mp4" or "image/png"
    seed: int
    seconds: float  # generating and encoding
    notes: list[str]


def render(
    pipe: Pipeline,
    model: str,
    request: Request,
    base: dict[str, Any] | None = None,
    cond_crf: int = COND_CRF,
    max_pixels: int = MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> Rendered:
    """One request as `ltxv generate` makes it: `request.given` > `base` (the server's own settings) >
    `model`'s generation.json; conditioning media fitted as --image/--condition are; `progress(step, steps)`
    after each denoising step. ValueError for bad input, before the model runs."""
    from .config import ChainConfig, SampleConfigError
    from .demo import sample_config
    from .generate_cli import check_cond_crf, fit_conditions, prompt_notes, render_video, with_model_defaults
    from .media import padded_size

    begun = time.perf_counter()
    check_cond_crf(cond_crf, "cond_crf")
    given = (base or {}) | request.given
    cfg = sample_config(model, given, KEY_NAMES)
    prompts = [request.prompt, *request.then]  # one per segment
    try:
        chain = ChainConfig(**request.chain)
        frames = chain.total_frames(cfg.num_frames, len(prompts))
    except SampleConfigError as err:
        name = KEY_NAMES.get(err.field, f'"{err.field}"')
        raise ValueError(f"{name} {err.text}") from None
    size = padded_size(cfg.height, cfg.width, cfg.num_frames)
    if size[0] * size[1] * frames > max_pixels:
        raise ValueError(
            f"{cfg.width}x{cfg.height}x{frames} (width x height x frames; sides padded to {size[1]}x"
            f"{size[0]}) is over this server's limit of {max_pixels} pixels (ltxv serve --max-pixels)"
        )
    stochastic = given.get("stochastic")  # None: the model's
    cfg = with_model_defaults(pipe, cfg, stg_blocks_given="stg_blocks" in given, stochastic=stochastic)
    with tempfile.TemporaryDirectory(prefix="ltxv-serve-") as tmp:
        items = []
        for media in request.media:
            path = Path(tmp) / f"{media.name}{media.suffix}"  # so that a message names the request's key
            path.write_bytes(media.data)
            items.append((str(path), media.frame, media.strength, media.name))
        try:
            conditions, notes = fit_conditions(items, cfg, size, cond_crf, chained=len(prompts) > 1)
        except (ValueError, OSError) as err:  # an unreadable upload: name it, not the temporary folder
            raise ValueError(str(err).replace(str(Path(tmp)) + "/", "")) from None
        notes += prompt_notes(pipe, prompts, cfg)
        if not all(p.strip() for p in prompts):
            notes.append("note: a prompt is empty: generating that segment unconditionally")
        cfg = dataclasses.replace(cfg, seed=pipe.pick_seed(cfg))
        steps, done = len(prompts) * len(pipe.schedule(cfg)), [0]  # every segment's steps

        def step_done(i: int, t: float, latents: object) -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], steps)

        out = render_video(
            pipe, cfg, prompts, chain, conditions, None, None, Path(tmp) / "out.mp4", step_done
        )
        data = out.read_bytes()  # one frame: out.png
    media_type = "image/png" if out.suffix == ".png" else "video/mp4"
    return Rendered(data, media_type, cfg.seed, time.perf_counter() - begun, notes)
