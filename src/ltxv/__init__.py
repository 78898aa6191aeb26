"""ltxv: realtime video latent diffusion in the LTX-Video family (Video-VAE, DiT, rectified flow).

The public names below load their modules (and torch) on first use: `ltxv --version` needs no torch, and the
`ltxv` command's start-up decides how torch is imported (`cli.console`)."""

from __future__ import annotations

import importlib
from typing import Any

from . import _clock  # noqa: F401 - first: its time is when the package began loading

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it
    "ChainConfig": "config",
    "Condition": "conditioning",
    "GenerationResult": "pipeline",
    "Pipeline": "pipeline",
    "SampleConfig": "config",
    "SpeedConfig": "speed",
    "TrainConfig": "config",
    "TextEmbeddings": "pipeline",
    "CheckpointError": "weights",
    "convert_checkpoint": "weights",
    "load_transformer": "weights",
    "load_vae": "weights",
    "open_checkpoint": "weights",
    "save_checkpoint": "weights",
    "DiTConfig": "config",
    "ModelSpec": "config",
    "PRESETS": "presets",
    "SchedulerConfig": "config",
    "SkipLayers": "dit.model",
    "VAEBlock": "config",
    "VAEConfig": "config",
    "VideoDiT": "dit.model",
    "VideoVAE": "vae.model",
    "get_preset": "presets",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ltxv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
