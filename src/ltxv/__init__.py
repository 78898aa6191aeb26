"""ltxv: realtime video latent diffusion in the LTX-Video family (Video-VAE, DiT, rectified flow)."""

from .config import DiTConfig, ModelSpec, SchedulerConfig, VAEBlock, VAEConfig
from .dit.model import SkipLayers, VideoDiT
from .presets import PRESETS, get_preset
from .vae.model import VideoVAE

__version__ = "0.1.0"

__all__ = [
    "DiTConfig", "ModelSpec", "PRESETS", "SchedulerConfig", "SkipLayers", "VAEBlock", "VAEConfig", "VideoDiT",
    "VideoVAE", "__version__", "get_preset",
]  # fmt: skip
