"""The only package that knows foreign names: official (native) and diffusers configs and key rename tables,
and transformers' T5 encoder.

Our module names are the official LTX-Video names, so native <-> ltxv is a prefix change plus the latent
statistics (`native`); diffusers <-> ltxv is a rename table generated from the VAE block list (diffusers
groups the official blocks into down/up blocks, `diffusers_vae`) and a fixed table for the transformer
(`diffusers_dit`); `t5` renames transformers' T5 encoder keys.
"""

from .common import ConversionError, names
from .diffusers_dit import (
    DIT_DIFFUSERS_RENAMES,
    dit_config_from_diffusers,
    dit_config_to_diffusers,
    dit_keys_from_diffusers,
    dit_keys_to_diffusers,
    scheduler_from_diffusers,
    scheduler_to_diffusers,
)
from .diffusers_vae import (
    VAE_INNER_RENAMES,
    VAE_TOP_RENAMES,
    DiffusersVAELayout,
    vae_config_from_diffusers,
    vae_keys_from_diffusers,
    vae_keys_to_diffusers,
    vae_to_diffusers_layout,
)
from .native import (
    NATIVE_DIT_PREFIX,
    NATIVE_STATS,
    NATIVE_UNUSED_STATS,
    NATIVE_VAE_PREFIX,
    dit_config_from_native,
    dit_config_to_native,
    guess_native_version,
    ltxv_to_native,
    native_to_ltxv,
    scheduler_from_native,
    scheduler_to_native,
    vae_config_from_native,
    vae_config_to_native,
)
from .t5 import T5_EMBEDDINGS, T5_IGNORED_PREFIXES, T5_RENAMES, t5_config_from_hf, t5_keys_from_hf

__all__ = [
    "DIT_DIFFUSERS_RENAMES",
    "NATIVE_DIT_PREFIX",
    "NATIVE_STATS",
    "NATIVE_UNUSED_STATS",
    "NATIVE_VAE_PREFIX",
    "T5_EMBEDDINGS",
    "T5_IGNORED_PREFIXES",
    "T5_RENAMES",
    "VAE_INNER_RENAMES",
    "VAE_TOP_RENAMES",
    "ConversionError",
    "DiffusersVAELayout",
    "dit_config_from_diffusers",
    "dit_config_from_native",
    "dit_config_to_diffusers",
    "dit_config_to_native",
    "dit_keys_from_diffusers",
    "dit_keys_to_diffusers",
    "guess_native_version",
    "ltxv_to_native",
    "names",
    "native_to_ltxv",
    "scheduler_from_diffusers",
    "scheduler_from_native",
    "scheduler_to_diffusers",
    "scheduler_to_native",
    "t5_config_from_hf",
    "t5_keys_from_hf",
    "vae_config_from_diffusers",
    "vae_config_from_native",
    "vae_config_to_native",
    "vae_keys_from_diffusers",
    "vae_keys_to_diffusers",
    "vae_to_diffusers_layout",
]
