"""The bundled demo model: where it lives in the package, and the generation defaults a model folder carries.

A model *folder* (the bundled one, or any the user assembles) may hold `model.safetensors` (our format),
`text_encoder/` + `tokenizer/` (a T5-style encoder) and `generation.json`: SampleConfig fields this model was
tuned for (size, frames, steps, guidance, ...), which `ltxv generate` uses for every flag not given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .config import SampleConfig, SampleConfigError, coerce_fields

DEMO_DIR = Path(__file__).parent / "assets" / "demo"
GENERATION_FILE = "generation.json"

# command-line flags whose defaults a model folder may set (generation.json) -> SampleConfig field
GENERATION_FLAGS = {
    "negative_prompt": "negative_prompt",
    "width": "width",
    "height": "height",
    "frames": "num_frames",
    "fps": "frame_rate",
    "steps": "steps",
    "guidance": "guidance",
    "guidance_until": "guidance_until",
    "stg": "stg",
    "stg_mode": "stg_mode",
    "rescale": "rescale",
    "cfg_star": "cfg_star",
    "keyframe_guidance": "keyframe_guidance",
    "image_cond_noise": "image_cond_noise_scale",
    "decode_timestep": "decode_timestep",
    "decode_noise": "decode_noise_scale",
    "tone_map": "tone_map",
    "max_tokens": "max_tokens",
}
# SampleConfig field -> the flag that sets it, for error messages (`sample_config`)
FIELD_FLAGS = {field: "--" + flag.replace("_", "-") for flag, field in GENERATION_FLAGS.items()} | {
    "seed": "--seed",
    "stg_blocks": "--stg-blocks",
    "timesteps": "--timesteps",
    "skip_initial_steps": "--skip-steps",
}


def demo_model() -> Path:
    """The bundled model folder, or a ValueError saying how to get a model when the package has none."""
    if not (DEMO_DIR / "model.safetensors").is_file():
        raise ValueError(
            f"this installation has no bundled demo model ({DEMO_DIR}); pass --model CHECKPOINT "
            "(an official LTX-Video file or folder, or one trained with `ltxv train`)"
        )
    return DEMO_DIR


def generation_defaults(model: str | os.PathLike[str]) -> dict[str, Any]:
    """The SampleConfig fields stored in `model`/generation.json ({} when there is none)."""
    path = Path(model) / GENERATION_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return coerce_fields(SampleConfig, values, str(path))


def add_generation_flag(parser: argparse.ArgumentParser, flag: str, text: str, **kw: Any) -> None:
    """A GENERATION_FLAGS flag: absent from the parsed namespace unless given, so that the model's
    generation.json, else SampleConfig's default, fills it in (`given_fields`, `sample_fields`)."""
    default = getattr(SampleConfig(), GENERATION_FLAGS[flag.removeprefix("--").replace("-", "_")])
    shown = f"{default:g}" if isinstance(default, float) else repr(default)
    parser.add_argument(
        flag, default=argparse.SUPPRESS, help=f"{text} (default: the model's, else {shown})", **kw
    )


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The SampleConfig fields of the GENERATION_FLAGS given on the command line."""
    return {field: getattr(args, flag) for flag, field in GENERATION_FLAGS.items() if hasattr(args, flag)}


def sample_fields(model: str | os.PathLike[str] | None, given: dict[str, Any]) -> dict[str, Any]:
    """SampleConfig keyword arguments: each field `given`, else `model`'s generation.json (none for None),
    else SampleConfig's default. The one rule `ltxv generate` and `ltxv bench` share."""
    fields = dataclasses.asdict(SampleConfig())
    if model is not None:
        fields.update(generation_defaults(model))
    return fields | given


def sample_config(
    model: str | os.PathLike[str] | None, given: dict[str, Any], names: dict[str, str] = FIELD_FLAGS
) -> SampleConfig:
    """The validated SampleConfig of `sample_fields`. A bad value is reported by where it came from: its name
    in `names` (the command line's flags; `ltxv serve` passes its request keys) when `given`, else the model's
    generation.json."""
    try:
        return SampleConfig(**sample_fields(model, given))
    except SampleConfigError as err:
        if err.field in given and err.field in names:
            raise ValueError(f"{names[err.field]} {err.text}") from None
        if model is not None and err.field in generation_defaults(model):
            raise ValueError(f"{Path(model) / GENERATION_FILE}: {err}") from None
        raise
