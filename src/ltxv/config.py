"""All typed configuration objects of ltxv, with JSON-safe to_dict/from_dict and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

# -----------------------------------------------------------------------------------------------------------
# Video-VAE: the official "block language" (LTX-Video `encoder_blocks` / `decoder_blocks`), made typed.
# ------------------------------------------------------------------------------------------------------------

ENCODER_BLOCK_KINDS = (
    "res_x",  # num_layers residual blocks at constant width
    "res_x_y",  # one residual block that multiplies the width by `multiplier`
    "compress_time",  # bare causal conv, stride (2,1,1)
    "compress_space",  # bare causal conv, stride (1,2,2)
    "compress_all",  # bare causal conv, stride (2,2,2)                       (0.9.0/0.9.1)
    "compress_all_x_y",  # bare causal conv, stride (2,2,2), width x multiplier
    "compress_time_res",  # space-to-depth residual downsample, stride (2,1,1)  (0.9.5+)
    "compress_space_res",  # space-to-depth residual downsample, stride (1,2,2)
    "compress_all_res",  # space-to-depth residual downsample, stride (2,2,2)
)
DECODER_BLOCK_KINDS = (
    "res_x",  # num_layers residual blocks (timestep-conditioned when the VAE is), optional noise injection
    "res_x_y",  # one residual block that divides the width by `multiplier`
    "compress_time",  # depth-to-space upsample, stride (2,1,1)
    "compress_space",  # depth-to-space upsample, stride (1,2,2)
    "compress_all",  # depth-to-space upsample, stride (2,2,2), width / multiplier, optional residual
)
# Official defaults of `multiplier` per block kind (official code); encoder/decoder differ.
_ENCODER_MULTIPLIER = {
    "res_x_y": 2,
    "compress_all_x_y": 2,
    "compress_time_res": 2,
    "compress_space_res": 2,
    "compress_all_res": 2,
}
_DECODER_MULTIPLIER = {"res_x_y": 2}

STRIDES = {"time": (2, 1, 1), "space": (1, 2, 2), "all": (2, 2, 2)}


def block_stride(kind: str) -> tuple[int, int, int]:
    """Stride (t, h, w) of a compress* block kind, (1, 1, 1) for residual blocks."""
    if not kind.startswith("compress_"):
        return (1, 1, 1)
    return STRIDES[kind.split("_")[1]]


@dataclass(frozen=True)
class VAEBlock:
    """One entry of the encoder or decoder block list, in the official order (high resolution first)."""

    kind: str
    num_layers: int = 1
    multiplier: int = 0  # 0 = the official default for this kind (2 for *_x_y and *_res blocks, else 1)
    inject_noise: bool = False  # decoder res_x / res_x_y only (0.9.1 StyleGAN-style noise)
    residual: bool = False  # decoder compress_* only (0.9.1+ residual depth-to-space)

    def resolved(self, decoder: bool) -> VAEBlock:
        if self.multiplier:
            return self
        table = _DECODER_MULTIPLIER if decoder else _ENCODER_MULTIPLIER
        return dataclasses.replace(self, multiplier=table.get(self.kind, 1))


@dataclass(frozen=True)
class VAEConfig:
    """Causal Video-VAE (LTX-Video `CausalVideoAutoencoder`); defaults are the 0.9.5+ architecture."""

    encoder_blocks: tuple[VAEBlock, ...] = (
        VAEBlock("res_x", 4),
        VAEBlock("compress_space_res"),
        VAEBlock("res_x", 6),
        VAEBlock("compress_time_res"),
        VAEBlock("res_x", 6),
        VAEBlock("compress_all_res"),
        VAEBlock("res_x", 2),
        VAEBlock("compress_all_res"),
        VAEBlock("res_x", 2),
    )
    decoder_blocks: tuple[VAEBlock, ...] = (
        VAEBlock("res_x", 5),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 5),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 5),
        VAEBlock("compress_all", residual=True, multiplier=2),
        VAEBlock("res_x", 5),
    )
    in_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    timestep_conditioning: bool = True
    spatial_padding_mode: str = "zeros"
    causal_decoder: bool = False
    latent_log_var: str = "uniform"  # "uniform" (one shared log-variance channel) or "per_channel"
    norm_eps: float = 1e-6  # LayerNorm of the channel-changing shortcut

    def __post_init__(self) -> None:
        enc = tuple(b.resolved(decoder=False) for b in self.encoder_blocks)
        dec = tuple(b.resolved(decoder=True) for b in self.decoder_blocks)
        object.__setattr__(self, "encoder_blocks", enc)
        object.__setattr__(self, "decoder_blocks", dec)
        for blocks, kinds, side in (
            (enc, ENCODER_BLOCK_KINDS, "encoder"),
            (dec, DECODER_BLOCK_KINDS, "decoder"),
        ):
            for b in blocks:
                if b.kind not in kinds:
                    raise ValueError(f"unknown {side} block kind {b.kind!r}; choose from {', '.join(kinds)}")
                if b.num_layers < 1 or b.multiplier < 1:
                    raise ValueError(f"{side} block {b} needs num_layers >= 1 and multiplier >= 1")
        if self.spatial_padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"spatial_padding_mode {self.spatial_padding_mode!r} is not a Conv3d padding mode"
            )
        if self.latent_log_var not in ("uniform", "per_channel"):
            raise ValueError(f"latent_log_var {self.latent_log_var!r}: use 'uniform' or 'per_channel'")
        if self.temporal_compression != _product(block_stride(b.kind)[0] for b in dec):
            raise ValueError("encoder and decoder must compress time by the same factor")
        if self.spatial_compression != self.patch_size * _product(block_stride(b.kind)[1] for b in dec):
            raise ValueError("encoder and decoder must compress space by the same factor")

    @property
    def decoder_width(self) -> int:
        """Width of the decoder's conv_in: base x every width-dividing block on the way up (official rule)."""
        return self.decoder_base_channels * _product(
            b.multiplier for b in self.decoder_blocks if b.kind != "res_x"
        )

    @property
    def temporal_compression(self) -> int:
        return _product(block_stride(b.kind)[0] for b in self.encoder_blocks)

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * _product(block_stride(b.kind)[1] for b in self.encoder_blocks)


def _product(values: Any) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# ----------------------------------------------------------------------------------------------------------
# Diffusion transformer
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTConfig:
    """LTX-Video `Transformer3DModel`; defaults are the 2B model."""

    in_channels: int = 128
    out_channels: int = 128
    num_layers: int = 28
    num_heads: int = 32
    head_dim: int = 64
    caption_channels: int = 4096  # T5-XXL hidden size
    norm_eps: float = 1e-6  # block RMSNorms and the final LayerNorm
    qk_norm_eps: float = 1e-5  # RMSNorm over all heads of q and k
    attention_bias: bool = True
    attention_out_bias: bool = True
    timestep_scale_multiplier: float = 1000.0  # t in [0,1] -> [0,1000] before the sinusoid
    rope_theta: float = 10000.0
    rope_max_pos: tuple[float, float, float] = (20.0, 2048.0, 2048.0)  # seconds, pixels, pixels
    latent_scale: tuple[int, int, int] = (8, 32, 32)  # pixels per latent voxel (t, h, w) of the paired VAE
    causal_temporal_positioning: bool = False  # first latent frame sits at pixel frame 0 (0.9.5+ metadata)

    def __post_init__(self) -> None:
        if min(self.num_layers, self.num_heads, self.head_dim, self.in_channels, self.out_channels) < 1:
            raise ValueError(f"DiTConfig sizes must be positive: {self}")

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim


# ----------------------------------------------------------------------------------------------------------
# Text encoder
# ------------------------------------------------------------------------------------------------------------

T5_ACTIVATIONS = ("gelu_new", "gelu", "relu")


@dataclass(frozen=True)
class T5Config:
    """T5 encoder (v1.1 gated-GELU, as T5-XXL in LTX-Video; original T5 with relu); defaults are T5-XXL."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64  # per head
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    num_buckets: int = 32  # relative-position buckets (half per direction)
    max_distance: int = 128  # distances beyond this share the last bucket
    eps: float = 1e-6
    gated: bool = True  # wo(act(wi_0 x) * wi_1 x) (v1.1) vs wo(act(wi x)) (original T5)
    activation: str = "gelu_new"  # see T5_ACTIVATIONS; gelu_new is the tanh approximation

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.d_model, self.d_kv, self.d_ff, self.num_layers, self.num_heads) < 1:
            raise ValueError(f"T5Config sizes must be positive: {self}")
        if self.activation not in T5_ACTIVATIONS:
            raise ValueError(f"T5 activation {self.activation!r}: supported {', '.join(T5_ACTIVATIONS)}")


# ----------------------------------------------------------------------------------------------------------
# Inference schedule stored with a checkpoint, and the full model spec
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfig:
    """How the checkpoint wants its timesteps: "sd3" (resolution shift + terminal) or "linear_quadratic"."""

    kind: str = "linear_quadratic"
    shift_terminal: float | None = 0.1  # "sd3" only: the last timestep is stretched to this value
    stochastic: bool = False  # 0.9.6-distilled: re-noise x0 at every step
    timesteps: tuple[float, ...] = ()  # explicit list (distilled models); overrides `kind` when non-empty

    def __post_init__(self) -> None:
        if self.kind not in ("sd3", "linear_quadratic"):
            raise ValueError(f"scheduler kind {self.kind!r}: use 'sd3' or 'linear_quadratic'")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile
NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"  # official default
STG_MODES = ("attention_values", "attention_skip", "transformer_block")
# fps a video file can carry (media writes the rate as a fraction n/d with d <= 1001)
MIN_FRAME_RATE, MAX_FRAME_RATE = 0.001, 1000.0
MAX_TEXT_TOKENS = 512  # T5's training length; its relative-position attention has no hard limit, memory does
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds


@dataclass(frozen=True)
class SampleConfig:
    """Every generation knob, with the official defaults (2B dev configs: 40 steps, CFG 3, STG 1 on block 19,
    rescale 0.7; decode at t = 0.05 with noise 0.025; I2V conditioning noise 0.15)."""

    width: int = 768
    height: int = 512
    num_frames: int = 121
    frame_rate: float = 24.0
    steps: int = 40
    timesteps: tuple[float, ...] = ()  # explicit schedule (descending, in (0, 1]); overrides steps
    skip_initial_steps: int = 0  # start later in the schedule (video-to-video, multi-scale second pass)
    skip_final_steps: int = 0
    guidance: float = 3.0  # classifier-free guidance scale; <= 1 disables the unconditional branch
    # guidance (CFG and STG) only at steps with t >= guidance_until (t: 1 = noise .. 0 = data); the steps
    # below run the conditional branch alone, one forward instead of two or three. 0 = every step. Not with
    # keyframes under keyframe guidance: that guidance runs at every step
    guidance_until: float = 0.0
    stg: float = 1.0  # spatiotemporal guidance scale; 0 disables the perturbed branch
    stg_mode: str = "attention_values"
    stg_blocks: tuple[int, ...] = (19,)
    rescale: float = 0.7  # STG rescaling towards the conditional velocity's std (0 and 1 = off, as official)
    cfg_star: bool = False
    # keyframe guidance: CFG's unconditional branch runs without the extra tokens of conditions at frame > 0,
    # so that guidance pulls towards the keyframes instead of away (the official pipeline keeps them: False)
    keyframe_guidance: bool = False
    # per-step schedules (official 13B configs): value i applies from guidance_timesteps[i] downwards
    guidance_timesteps: tuple[float, ...] = ()
    guidance_schedule: tuple[float, ...] = ()
    stg_schedule: tuple[float, ...] = ()
    rescale_schedule: tuple[float, ...] = ()
    stg_blocks_schedule: tuple[tuple[int, ...], ...] = ()
    negative_prompt: str = NEGATIVE_PROMPT
    max_tokens: int = 0  # T5 tokens; 0 = the checkpoint era's (128 for 0.9.0/0.9.1, 256 after)
    image_cond_noise_scale: float = 0.15
    stochastic: bool = False  # re-noise x0 at every step (0.9.6-distilled)
    decode_timestep: float = 0.05
    decode_noise_scale: float = (
        0.025  # mixed into the normalized latents before a timestep-conditioned decode
    )
    tone_map: float = 0.0  # 0.9.8 latent tone-mapping compression in [0, 1]
    vae_tiling: bool | None = None  # tiled decode (approximate, saves memory); None = when the GPU needs it
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.stg_mode not in STG_MODES:
            raise SampleConfigError("stg_mode", f"{self.stg_mode!r}: choose from {', '.join(STG_MODES)}")
        for name in ("width", "height", "num_frames", "steps"):
            if getattr(self, name) < 1:
                raise SampleConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("skip_initial_steps", "skip_final_steps"):
            if getattr(self, name) < 0:
                raise SampleConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        # steps: 20-50 in the official configs; 1e30 (a typo, or JSON to `ltxv serve`) would build a schedule
        # that never finishes
        for name, most in (("width", 8192), ("height", 8192), ("num_frames", 1025), ("steps", MAX_STEPS)):
            if getattr(self, name) > most:
                raise SampleConfigError(name, f"{getattr(self, name)} is too large (max {most})")
        if len(self.timesteps) > MAX_STEPS:
            raise SampleConfigError("timesteps", f"has {len(self.timesteps)} values (max {MAX_STEPS})")
        if self.timesteps:
            try:
                validate_schedule(self.timesteps)
            except ValueError as err:
                raise SampleConfigError("timesteps", str(err).removeprefix("schedule ")) from None
        # name: (low, high), both inclusive; every float must also be finite (NaN would pass `x >= 0`)
        ranges = {
            "frame_rate": (MIN_FRAME_RATE, MAX_FRAME_RATE),  # a video container needs a usable rate
            "guidance": (0.0, MAX_GUIDANCE),  # <= 1 = off
            "guidance_until": (0.0, 1.0),  # a timestep: 0 = guidance at every step
            "stg": (0.0, MAX_GUIDANCE),  # 0 = off
            "rescale": (0.0, 1.0),  # a blend factor towards the conditional std
            "image_cond_noise_scale": (0.0, 1.0),
            "decode_timestep": (0.0, 1.0),  # a timestep: 0 = data, 1 = noise
            "decode_noise_scale": (0.0, 1.0),  # lerp weight of the noise mixed into the latents
            "tone_map": (0.0, 1.0),
        }
        for name, (low, high) in ranges.items():
            _check_range(name, getattr(self, name), low, high)
        for name, values, (low, high) in (
            ("guidance_schedule", self.guidance_schedule, ranges["guidance"]),
            ("stg_schedule", self.stg_schedule, ranges["stg"]),
            ("rescale_schedule", self.rescale_schedule, ranges["rescale"]),
            ("guidance_timesteps", self.guidance_timesteps, (0.0, 1.0)),
        ):
            for value in values:
                _check_range(name, value, low, high)
        blocks = (*self.stg_blocks, *(i for bl in self.stg_blocks_schedule for i in bl))
        if any(i < 0 for i in blocks):
            raise SampleConfigError(
                "stg_blocks", f"must be transformer block indices in 0 .. num_layers - 1, got {list(blocks)}"
            )
        if not 0 <= self.max_tokens <= MAX_TEXT_TOKENS:
            raise SampleConfigError(
                "max_tokens",
                f"must be in [0, {MAX_TEXT_TOKENS}] (T5's training length; 0 = the checkpoint era's 128 or "
                f"256), got {self.max_tokens}",
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise SampleConfigError("seed", f"must be in [0, 2**64 - 1] (torch.Generator), got {self.seed}")
        n = len(self.guidance_timesteps)
        for name in ("guidance_schedule", "stg_schedule", "rescale_schedule", "stg_blocks_schedule"):
            if len(getattr(self, name)) not in (0, n) or (getattr(self, name) and not n):
                raise SampleConfigError(name, f"needs one entry per guidance_timesteps entry ({n})")


@dataclass(frozen=True)
class ChainConfig:
    """A long video as a chain of segments (`Pipeline.generate_chain`): each segment after the first is
    conditioned at its frame 0 on the last `overlap` frames of the one before (the extension code path; the
    model redraws them, and the chain keeps only the new frames), so a video of S segments of F frames has
    F + (S - 1)(F - overlap) frames. `overlap_strength` is that conditioning's strength; `adain` blends each
    later segment's latents towards the first segment's per-channel statistics (AdaIN, as the official
    looping sampler), which stops a slow drift of size and colour (MODELS.md, "Long videos")."""

    overlap: int = 1  # frames shared with the previous segment: 1 (its last frame) or 8k+1
    overlap_strength: float = 1.0  # in (0, 1]; 1 = those frames are kept exactly as conditioned
    adain: float = 1.0  # in [0, 1]; 0 = off

    def __post_init__(self) -> None:
        if self.overlap < 1 or self.overlap % 8 != 1:
            raise SampleConfigError(
                "overlap",
                f"must be 1 or 8k+1 frames (1, 9, 17, ...: a conditioning clip), got {self.overlap}",
            )
        if not (math.isfinite(self.overlap_strength) and 0 < self.overlap_strength <= 1):
            raise SampleConfigError(
                "overlap_strength", f"must be a finite number in (0, 1], got {self.overlap_strength}"
            )
        _check_range("adain", self.adain, 0.0, 1.0)

    def total_frames(self, frames: int, segments: int) -> int:
        """Frames of a chain of `segments` segments of `frames` frames; ValueError when they cannot chain."""
        if segments < 1:
            raise SampleConfigError("segments", f"must be >= 1, got {segments}")
        if segments > 1 and frames < 2:
            raise SampleConfigError("num_frames", f"{frames}: a chain needs segments of 2 frames or more")
        if segments > 1 and self.overlap >= frames:
            raise SampleConfigError(
                "overlap",
                f"{self.overlap} leaves no new frames in a {frames}-frame segment: use at most "
                f"{(frames - 2) // 8 * 8 + 1}",
            )
        return frames + (segments - 1) * (frames - self.overlap)


MAX_STEPS = 1000  # sampling steps (SampleConfig.steps)
MAX_GUIDANCE = 100.0  # CFG and STG scales (the official configs use <= 8); 1e308 made NaN videos


def validate_schedule(ts: Sequence[float]) -> list[float]:
    """Check a schedule is non-empty, in (0, 1] and strictly decreasing; returns it as a list of floats."""
    ts = [float(t) for t in ts]
    if not ts:
        raise ValueError("schedule is empty; pass at least one timestep in (0, 1], e.g. [1.0].")
    outside = [t for t in ts if not 0 < t <= 1]
    if outside:
        raise ValueError(f"schedule values {outside} are outside (0, 1]; t=0 is implied as the final step.")
    rising = [(a, b) for a, b in pairwise(ts) if b >= a]
    if rising:
        raise ValueError(f"schedule must be strictly decreasing; these neighbours are not: {rising}.")
    return ts


class SampleConfigError(ValueError):
    """A SampleConfig (or ChainConfig) field out of range. `field` names it, so that a command line can name
    its flag; the message reads "<field> <text>"."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f"{field} {text}")
        self.field, self.text = field, text


def _check_field_types(cfg: Any) -> None:
    """Each field of dataclass `cfg` as its declared type (lists -> tuples, numpy numbers -> Python's), or a
    SampleConfigError naming the first that is not (a string for a number, a number for a tuple, ...)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        try:
            value = _coerce(hints[f.name], getattr(cfg, f.name), f.name, strict=True)
        except ValueError as err:
            raise SampleConfigError(f.name, str(err).removeprefix(f"{f.name}: ")) from None
        object.__setattr__(cfg, f.name, value)  # frozen: __post_init__ may still normalise


def _check_range(name: str, value: float, low: float, high: float) -> None:
    """SampleConfigError unless `value` is a finite number in [low, high]."""
    if not (math.isfinite(value) and low <= value <= high):
        allowed = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise SampleConfigError(name, f"must be a finite number {allowed}, got {value}")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a full model: what our checkpoints embed in their metadata."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    version: str = ""  # e.g. "0.9.5", for display and defaults (text tokens, guidance)


# ----------------------------------------------------------------------------------------------------------
# Training (`ltxv train STAGE`): one TrainConfig per run, printed in full by --dry-run
# ------------------------------------------------------------------------------------------------------------

TRAIN_STAGES = ("vae", "decoder", "dit", "joint", "lora", "distill")
TEXT_STAGES = ("dit", "joint", "lora", "distill")  # train the transformer on captions
TRANSFORMER_STAGES = ("dit", "lora", "distill")  # train only the transformer: latent caches and FSDP work


@dataclass(frozen=True)
class DataConfig:
    """Where the training clips come from and how they are cut."""

    path: str = ""  # caption file or dataset folder (media + captions), or an `ltxv preprocess` cache
    buckets: str = "9x64x64"  # "FxHxW;FxHxW": frames 8k+1, sides multiples of 32 (images: 1xHxW)
    frame_rate: float = 24.0  # RoPE time scale of the training clips
    text_encoder: str = ""  # T5 folder for captions of pixel datasets (dit / joint / lora stages)
    max_tokens: int = 128  # T5 tokens per caption
    workers: int = 0  # DataLoader worker processes


LR_DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, then a constant learning rate or a cosine decay towards 0."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay: str = "constant"  # "constant" | "cosine" (see train.loop.lr_scale)
    decay_steps: int = 0  # the schedule's length; 0 = the run's steps (more: stop early on a longer schedule)
    grad_clip: float = 1.0  # max global grad norm; 0 = off


@dataclass(frozen=True)
class FlowTrainConfig:
    """Rectified-flow transformer training (spec §5.2; LTX-Video-Trainer defaults where it has them)."""

    t_sampling: str = "shifted_logit_normal"  # see flow.SAMPLE_T_MODES
    t_shift: float | None = None  # shifted_logit_normal's μ; None = by token count (flow.shift_mu)
    caption_dropout: float = 0.1  # probability a caption is replaced by the empty prompt (for CFG)
    first_frame_p: float = 0.1  # I2V: latent frame 0 kept clean at t = 0 and left out of the loss
    # extension (a clip conditioned at frame 0: `--condition clip@0`, chains with --overlap 9+): the first k
    # latent frames, k uniform in 2 .. F' - 1, kept clean and out of the loss; drawn apart from first_frame_p
    extension_p: float = 0.0
    # keyframes (`--condition image@FRAME`, FRAME > 0): with this probability a batch's samples each get one
    # image keyframe, pixel frame 8j (j uniform in 1 .. F' - 1) encoded alone, as extra tokens at its own
    # position, clean and out of the loss (the whole batch, for one token count); drawn apart from the above
    keyframe_p: float = 0.0
    token_drop: float = 0.0  # max fraction of tokens dropped per step, drawn uniformly in [0, token_drop]
    # extra loss weight on tokens unlike their latent frame's median token (flow.foreground_token_weights):
    # small objects on plain backgrounds otherwise carry a few percent of the loss; 0 = off
    foreground: float = 0.0
    foreground_threshold: float = 1.0  # mean squared distance (normalized latents) that counts as foreground


VAE_LOSS_WEIGHTS = ("mse", "wavelet", "kl", "gan", "lpips", "foreground", "gan_foreground", "silhouette")


@dataclass(frozen=True)
class VAETrainConfig:
    """Video-VAE and denoising-decoder losses (LTX-Video paper §VAE; spec §2.9), weights of each term."""

    mse: float = 1.0
    wavelet: float = 1.0  # L1 between 3-D Haar DWT sub-bands
    kl: float = 1e-6
    gan: float = 0.0  # reconstruction GAN (pair discriminator); 0 = off
    gan_start: int = 0  # step at which the adversarial term starts
    disc_lr: float = 1e-4
    gan_foreground: float = 0.0  # extra weight of the discriminator patches that hold an object
    lpips: float = 0.0  # needs lpips_path (a local safetensors file; nothing is downloaded)
    lpips_path: str = ""
    decoder_t_max: float = 0.2  # denoising decoder: latents noised to t ~ U[0, decoder_t_max]
    foreground: float = 0.0  # extra MSE weight on pixels unlike their frame's median colour (small objects)
    foreground_symmetric: bool = True  # also where the reconstruction draws an object (False: blobs grow)
    silhouette: float = 0.0  # soft Dice between drawn and true object masks (train.losses.silhouette_loss)
    silhouette_width: float = 0.25  # ramp half-width of the drawn mask around the object threshold, [-1, 1]


@dataclass(frozen=True)
class JointConfig:
    """`train joint`: L = vae·L_vae + decoder·L_decoder + flow·L_flow in one optimiser step."""

    vae: float = 1.0
    decoder: float = 1.0
    flow: float = 1.0
    flow_to_encoder: float = 0.0  # scale of the flow loss gradient reaching the encoder (0 = detached)
    stats_momentum: float = 0.99  # running per-channel latent mean/std (the VAE's normalisation buffers)


@dataclass(frozen=True)
class LoraConfig:
    """LoRA on the transformer's attention projections (peft layout on save)."""

    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class DistillConfig:
    """`train distill`: a student that samples in `steps` steps without guidance learns, at each of those
    steps, the move of the frozen starting transformer (the teacher) over the same interval in
    `teacher_steps` Euler steps with CFG `guidance` against the empty prompt."""

    steps: int = 4  # the student's steps (its schedule: the model's scheduler at this many steps)
    teacher_steps: int = 4  # teacher Euler steps per student step
    guidance: float = 3.0  # the teacher's CFG scale (1 = none)
    teacher: str = ""  # the teacher's checkpoint; "" = the starting transformer (to continue a distillation)
    # with flow.keyframe_p: the teacher's unconditional branch without the keyframe tokens, as generate's
    # keyframe guidance (guidance then pulls towards the keyframes); False = both branches see them (official)
    keyframe_guidance: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: stage, model, data, optimisation and bookkeeping."""

    stage: str = "dit"
    model: ModelSpec = field(default_factory=ModelSpec)
    init: str = ""  # checkpoint to start from (any supported format); the base model for `lora`
    init_dit: str = ""  # transformer from this checkpoint instead of init's (e.g. a DiT onto a new VAE)
    new_dit: bool = False  # a fresh transformer of model.dit's shape instead of init's (on init's VAE)
    steps: int = 100
    batch_size: int = 2  # global batch (split across processes)
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 2  # training checkpoints kept in RUN/checkpoints
    val_every: int = 0  # validation samples (mp4) every N steps; 0 = only at the end
    val_steps: int = 8  # denoising steps of validation samples
    ema_decay: float = 0.0  # 0 = no EMA
    grad_checkpointing: bool = False
    compile: str = ""  # torch.compile mode for the trained model's blocks (regional); "" = eager
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16"
    parallel: str = "ddp"  # under torchrun: "ddp" or "fsdp" (FSDP2 fully_shard)
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowTrainConfig = field(default_factory=FlowTrainConfig)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.stage not in TRAIN_STAGES:
            raise ValueError(f"stage {self.stage!r}: choose from {', '.join(TRAIN_STAGES)}")
        for name in ("steps", "batch_size", "log_every", "save_every", "keep_last", "val_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r}: use auto, fp32 or bf16")
        if self.compile and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile mode {self.compile!r}: choose from {', '.join(COMPILE_MODES)}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel {self.parallel!r}: use ddp or fsdp")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.joint.stats_momentum < 1.0:
            raise ValueError(f"joint.stats_momentum must be in [0, 1), got {self.joint.stats_momentum}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**64 - 1] (torch.Generator), got {self.seed}")
        if self.val_every < 0:
            raise ValueError(f"val_every must be >= 0 (0 = only at the end), got {self.val_every}")
        fps = self.data.frame_rate
        if not MIN_FRAME_RATE <= fps <= MAX_FRAME_RATE:
            raise ValueError(
                f"data.frame_rate must be in [{MIN_FRAME_RATE}, {MAX_FRAME_RATE:g}] fps, got {fps}"
            )
        positive = {  # learning rates, scales and thresholds > 0
            "optim.lr": self.optim.lr,
            "vae.disc_lr": self.vae.disc_lr,
            "lora.alpha": self.lora.alpha,
            "flow.foreground_threshold": self.flow.foreground_threshold,
        }
        non_negative = {  # loss weights, clipping and decay >= 0 (0 = off)
            "optim.grad_clip": self.optim.grad_clip,
            "optim.weight_decay": self.optim.weight_decay,
            "flow.foreground": self.flow.foreground,
            **{f"vae.{n}": getattr(self.vae, n) for n in VAE_LOSS_WEIGHTS},
            **{f"joint.{n}": getattr(self.joint, n) for n in ("vae", "decoder", "flow", "flow_to_encoder")},
        }
        for group, floor in ((positive, "> 0"), (non_negative, ">= 0")):
            for name, value in group.items():
                if not (math.isfinite(value) and (value > 0 if floor == "> 0" else value >= 0)):
                    raise ValueError(f"{name} must be finite and {floor}, got {value}")
        if self.flow.t_shift is not None and not math.isfinite(self.flow.t_shift):
            raise ValueError(f"flow.t_shift must be a finite number (or unset), got {self.flow.t_shift}")
        if self.optim.decay not in LR_DECAYS:
            raise ValueError(f"optim.decay {self.optim.decay!r}: choose from {', '.join(LR_DECAYS)}")
        if self.optim.decay_steps and self.optim.decay_steps < self.steps:
            raise ValueError(
                f"optim.decay_steps={self.optim.decay_steps} is shorter than the run ({self.steps} steps): "
                "use 0 (the run's length) or at least --steps"
            )
        for name in ("caption_dropout", "first_frame_p", "extension_p", "keyframe_p", "token_drop"):
            if not 0.0 <= getattr(self.flow, name) <= (0.9 if name == "token_drop" else 1.0):
                raise ValueError(f"flow.{name} out of range: {getattr(self.flow, name)}")
        if self.flow.first_frame_p + self.flow.extension_p > 1.0:
            raise ValueError(
                f"flow.first_frame_p + flow.extension_p = {self.flow.first_frame_p + self.flow.extension_p} "
                "> 1: they are the shares of samples conditioned on one latent frame and on several"
            )
        if self.flow.t_shift is not None and self.flow.t_sampling != "shifted_logit_normal":
            raise ValueError(
                f"flow.t_shift is the μ of shifted_logit_normal, not of {self.flow.t_sampling!r}: "
                "drop it or use flow.t_sampling=shifted_logit_normal"
            )
        if not 0.0 < self.vae.silhouette_width <= 0.5:  # the ramp stays above the background (threshold 0.5)
            raise ValueError(f"vae.silhouette_width must be in (0, 0.5], got {self.vae.silhouette_width}")
        if not 0.0 < self.vae.decoder_t_max <= 1.0:
            raise ValueError(f"vae.decoder_t_max must be in (0, 1], got {self.vae.decoder_t_max}")
        if self.vae.lpips > 0 and not self.vae.lpips_path:
            raise ValueError("vae.lpips > 0 needs vae.lpips_path (a local LPIPS safetensors file)")
        for name in ("init_dit", "new_dit"):
            if getattr(self, name) and self.stage not in ("dit", "joint"):
                raise ValueError(f"{name} is for the dit and joint stages, not {self.stage!r}")
        for name in ("steps", "teacher_steps"):
            if getattr(self.distill, name) < 1:
                raise ValueError(f"distill.{name} must be >= 1, got {getattr(self.distill, name)}")
        if not (math.isfinite(self.distill.guidance) and self.distill.guidance >= 1):
            raise ValueError(f"distill.guidance must be a finite CFG scale >= 1, got {self.distill.guidance}")
        if self.new_dit and self.init_dit:
            raise ValueError("new_dit and init_dit both choose the transformer; drop one")
        if self.lora.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.lora.rank}")


# ----------------------------------------------------------------------------------------------------------
# Generic (de)serialisation: dataclass <-> JSON-safe dict, strict about unknown keys
# ------------------------------------------------------------------------------------------------------------

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dicts/lists (JSON-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any) -> T:
    """Plain dict -> dataclass `cls`; unknown keys raise, missing keys take the declared defaults."""
    return cls(**coerce_fields(cls, data))


def coerce_fields(cls: type, data: Any, where: str = "") -> dict[str, Any]:
    """Plain dict -> the same keys with values of `cls`'s field types (JSON lists -> tuples, "3" -> 3, ...),
    or a ValueError naming `where` (e.g. the file it came from), the key and the value."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}: unknown" if where else "unknown"
        raise ValueError(f"{prefix} {cls.__name__} keys {unknown}; known keys: {sorted(names)}")
    return {
        k: _coerce(hints[k], v, f"{where}: {k}" if where else f"{cls.__name__}.{k}") for k, v in data.items()
    }


def coerce_value(cls: type, field: str, value: Any, where: str) -> Any:
    """One value as the type of `cls`'s `field` (leniently, as `coerce_fields`), or a ValueError naming
    `where` and the value."""
    return _coerce(typing.get_type_hints(cls)[field], value, where)


def _coerce(tp: Any, value: Any, where: str, strict: bool = False) -> Any:
    """`value` as type `tp` (JSON lists -> tuples), or a ValueError naming `where`. Lenient (command lines,
    JSON): "3" -> 3, "true" -> True. Strict (Python callers): numbers must be numbers (numpy's become
    Python's), strings strings."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where, strict)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is tuple:
        if hasattr(value, "tolist"):  # a numpy array or tensor of values
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ValueError(f"{where}: expected {len(item_types)} values, got {value!r}")
        return tuple(_coerce(t, v, where, strict) for t, v in zip(item_types, value, strict=True))
    if tp is bool:
        if not strict and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    if tp in (int, float):
        wrong = isinstance(value, bool) or (strict and not isinstance(value, numbers.Real))
        if wrong or (strict and tp is int and not isinstance(value, numbers.Integral)):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{where}: expected an integer, got {value!r}")  # int(1.5) would truncate
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def apply_overrides(obj: T, overrides: list[str]) -> T:
    """Copy of dataclass `obj` with dotted `key=value` overrides (values parsed as JSON if possible)."""
    data = to_dict(obj)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value, e.g. dit.num_layers=4")
        *parents, leaf = key.strip().split(".")
        node = data
        for p in parents:
            if not isinstance(node, dict) or p not in node:
                raise ValueError(f"override {item!r}: no config section {p!r}")
            node = node[p]
        if not isinstance(node, dict) or leaf not in node:
            known = sorted(node) if isinstance(node, dict) else []
            raise ValueError(f"override {item!r}: unknown key {leaf!r}; known: {known}")
        try:
            node[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            node[leaf] = raw
    return from_dict(type(obj), data)
