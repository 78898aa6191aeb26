"""ltxv: realtime video latent diffusion in the LTX-Video family (Video-VAE, DiT, rectified flow)."""

from . import _clock  # noqa: F401 - first: its time is when the package began loading
from .conditioning import Condition
from .config import (
    ChainConfig,
    DiTConfig,
    ModelSpec,
    SampleConfig,
    SchedulerConfig,
    TrainConfig,
    VAEBlock,
    VAEConfig,
)
from .dit.model import SkipLayers, VideoDiT
from .pipeline import GenerationResult, Pipeline, TextEmbeddings
from .presets import PRESETS, get_preset
from .speed import SpeedConfig
from .vae.model import VideoVAE
from .weights import (
    CheckpointError,
    convert_checkpoint,
    load_transformer,
    load_vae,
    open_checkpoint,
    save_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "ChainConfig",
    "Condition",
    "GenerationResult",
    "Pipeline",
    "SampleConfig",
    "SpeedConfig",
    "TrainConfig",
    "TextEmbeddings",
    "CheckpointError",
    "convert_checkpoint",
    "load_transformer",
    "load_vae",
    "open_checkpoint",
    "save_checkpoint",
    "DiTConfig",
    "ModelSpec",
    "PRESETS",
    "SchedulerConfig",
    "SkipLayers",
    "VAEBlock",
    "VAEConfig",
    "VideoDiT",
    "VideoVAE",
    "__version__",
    "get_preset",
]
