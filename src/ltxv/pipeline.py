"""Pipeline: the only place that wires text encoder, DiT, sampler and VAE together; one generate() for every mode
(text-to-video, image-to-video, keyframes, extension) through conditioning items with per-token timesteps."""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor

from . import sampling
from .conditioning import Condition, LatentState, build_state, check_condition, trim_frames
from .config import ModelSpec, SampleConfig
from .dit.model import SkipLayers, VideoDiT
from .layers.rope import latent_pixel_coords
from .vae.model import VideoVAE

StepCallback = Callable[[int, float, Tensor], None]  # (step index, t, tokens (B, N, C))


@dataclass
class GenerationResult:
    """video (B, 3, F, H, W) in [0, 1] at the requested size; latents (B, C, F', H', W') normalized."""

    video: Tensor
    latents: Tensor
    frame_rate: float
    timesteps: list[float] = field(default_factory=list)
    seed: int | None = None  # the seed that reproduces this result (None when a generator was passed)

    @property
    def seconds(self) -> float:
        return self.video.shape[2] / self.frame_rate


@dataclass
class TextEmbeddings:
    """Prompt embeddings from any T5-style encoder: emb (B, L, D), mask (B, L) with 1 = token."""

    emb: Tensor
    mask: Tensor


def padded_size(
    height: int, width: int, num_frames: int, spatial: int = 32, temporal: int = 8
) -> tuple[int, int, int]:
    """Official inference padding: sides up to multiples of 32, frames up to 8k+1 (cropped back afterwards)."""
    frames = num_frames if num_frames == 1 else ((num_frames - 2) // temporal + 1) * temporal + 1
    return -(-height // spatial) * spatial, -(-width // spatial) * spatial, frames


class Pipeline:
    """A loaded model family member: VAE + DiT (+ optional text encoder) and its checkpoint spec."""

    def __init__(self, vae: VideoVAE, dit: VideoDiT, spec: ModelSpec, text_encoder=None) -> None:  # noqa: ANN001
        self.vae, self.dit, self.spec, self.text_encoder = vae, dit, spec, text_encoder

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        text_encoder: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Pipeline:
        """Load VAE + transformer from any supported checkpoint; the text encoder from `text_encoder`, or from
        `path`/text_encoder + `path`/tokenizer when `path` is a model folder that has them."""
        from .weights import load_transformer, load_vae, open_checkpoint

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        spec = open_checkpoint(path).spec
        vae, dit = load_vae(path, device, dtype), load_transformer(path, device, dtype)
        te_path = text_encoder
        if te_path is None and os.path.isdir(os.path.join(path, "text_encoder")):
            te_path = path
        encoder = None
        if te_path is not None:
            from .text import TextEncoder

            encoder = TextEncoder.from_pretrained(str(te_path), device=device, dtype=dtype)
        return cls(vae, dit, spec, encoder)

    @property
    def device(self) -> torch.device:
        return self.dit.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.proj_out.weight.dtype

    def default_config(self) -> SampleConfig:
        """Generation defaults for this checkpoint (the schedule family comes from its metadata)."""
        return SampleConfig(stochastic=self.spec.scheduler.stochastic)

    def encode_text(self, prompts: list[str], max_tokens: int) -> TextEmbeddings:
        if self.text_encoder is None:
            raise ValueError(
                "this pipeline has no text encoder: pass text_encoder=PATH (CLI: --text-encoder)"
            )
        emb, mask = self.text_encoder.encode(prompts, max_tokens)
        return TextEmbeddings(emb.to(self.device, self.dtype), mask.to(self.device))

    def schedule(self, cfg: SampleConfig, num_tokens: int) -> list[float]:
        """Explicit list > checkpoint's fixed list > SD3-shift (0.9.0/0.9.1) or linear-quadratic (0.9.5+)."""
        sched = self.spec.scheduler
        if cfg.timesteps or sched.timesteps:
            return sampling.validate_schedule(list(cfg.timesteps or sched.timesteps))
        if sched.kind == "sd3":
            return sampling.sd3_schedule(cfg.steps, num_tokens, terminal=sched.shift_terminal)
        return sampling.linear_quadratic_schedule(cfg.steps)

    @torch.inference_mode()
    def generate(
        self,
        prompt: str | list[str] | TextEmbeddings,
        config: SampleConfig | None = None,
        *,
        conditions: list[Condition] = (),  # type: ignore[assignment]
        negative: TextEmbeddings | None = None,
        noise: Tensor | None = None,
        callback: StepCallback | None = None,
        generator: torch.Generator | None = None,
    ) -> GenerationResult:
        """Generate videos. `config` fields default to `default_config()`; `noise` is the initial normalized
        latent noise (B, C, F', H', W') (else drawn in the official (B, N, C) layout from the seed)."""
        cfg = config or self.default_config()
        st, ss, _ = self.vae.scale_factors
        height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames, ss, st)
        seed = cfg.seed if cfg.seed is not None else secrets.randbits(62)
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(seed)
        text, neg = self._texts(prompt, negative, cfg)
        b = text.emb.shape[0]
        shape = (b, self.dit.cfg.in_channels, (frames - 1) // st + 1, height // ss, width // ss)
        state = self._initial_state(shape, noise, conditions, cfg, frames, height, width, generator)
        ts = self.schedule(cfg, math.prod(shape[2:]))
        for i, t in enumerate(ts):
            state.tokens = self._step(state, ts, i, t, text, neg, cfg, generator)
            if callback is not None:
                callback(i, t, state.tokens)
        latents = rearrange(
            state.tokens[:, state.num_extra :], "b (f h w) c -> b c f h w", f=shape[2], h=shape[3]
        )
        video = self._decode(latents, cfg, generator)
        video = video[:, :, : cfg.num_frames, : cfg.height, : cfg.width]  # crop the padding back (top-left)
        return GenerationResult(((video.float() + 1) / 2).clamp(0, 1), latents, cfg.frame_rate, ts, seed)

    def _texts(
        self, prompt: str | list[str] | TextEmbeddings, negative: TextEmbeddings | None, cfg: SampleConfig
    ) -> tuple[TextEmbeddings, TextEmbeddings | None]:
        needs_neg = cfg.guidance > 1 or any(g > 1 for g in cfg.guidance_schedule)
        if isinstance(prompt, TextEmbeddings):
            if needs_neg and negative is None:
                raise ValueError("guidance > 1 with prompt embeddings needs `negative` embeddings too")
            return prompt, negative
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        max_tokens = cfg.max_tokens or (128 if self.spec.scheduler.kind == "sd3" else 256)
        text = self.encode_text(prompts, max_tokens)
        if needs_neg and negative is None:
            negative = self.encode_text([cfg.negative_prompt] * len(prompts), max_tokens)
        return text, negative

    def _coords(self, f: int, h: int, w: int) -> Tensor:
        c = self.dit.cfg
        return latent_pixel_coords(f, h, w, c.latent_scale, c.causal_temporal_positioning, self.device)

    def _initial_state(
        self,
        shape: tuple[int, ...],
        noise: Tensor | None,
        conditions: list[Condition],
        cfg: SampleConfig,
        frames: int,
        height: int,
        width: int,
        generator: torch.Generator,
    ) -> LatentState:
        b, c, f, h, w = shape
        if noise is None:  # official layout: drawn as tokens (B, N, C), then arranged as a grid
            noise = torch.randn((b, f * h * w, c), generator=generator, device=self.device, dtype=self.dtype)
            noise = rearrange(noise, "b (f h w) c -> b c f h w", f=f, h=h, w=w)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have the latent shape {shape}, got {tuple(noise.shape)}")
        encoded = []
        for cond in conditions:
            n = trim_frames(cond.media.shape[2], cond.frame, frames, self.vae.scale_factors[0])
            media = cond.media[:, :, :n]
            if media.shape[-2:] != (height, width):
                media = _resize(media, height, width)
            cond = dataclasses.replace(cond, media=media)
            check_condition(cond, frames, self.vae.scale_factors[0])
            encoded.append((cond, self.vae.encode(media.to(self.device, self.vae.latent_std.dtype))))  # mode
        grid_coords = self._coords(f, h, w).expand(b, -1, -1)
        return build_state(noise.to(self.device, self.dtype), encoded, grid_coords, self._coords, generator)

    def _guidance(self, cfg: SampleConfig, t: float) -> tuple[float, float, float, tuple[int, ...]]:
        if not cfg.guidance_timesteps:
            return cfg.guidance, cfg.stg, cfg.rescale, cfg.stg_blocks
        gt = cfg.guidance_timesteps

        def pick(values, default):  # noqa: ANN001, ANN202
            return sampling.guidance_at(gt, values, t) if values else default

        return (pick(cfg.guidance_schedule, cfg.guidance), pick(cfg.stg_schedule, cfg.stg),
                pick(cfg.rescale_schedule, cfg.rescale), pick(cfg.stg_blocks_schedule, cfg.stg_blocks))  # fmt: skip

    def _step(
        self,
        state: LatentState,
        ts: list[float],
        i: int,
        t: float,
        text: TextEmbeddings,
        neg: TextEmbeddings | None,
        cfg: SampleConfig,
        generator: torch.Generator,
    ) -> Tensor:
        """One Euler step with all guidance branches batched into one forward: [uncond?, cond, perturbed?]."""
        cfg_scale, stg_scale, rescale, blocks = self._guidance(cfg, t)
        tokens, strength = state.tokens, state.strength
        if cfg.image_cond_noise_scale > 0 and bool((strength > 0).any()):
            eps = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
            noised = state.clean + cfg.image_cond_noise_scale * eps * t**2
            tokens = torch.where((strength > 1 - 1e-6)[..., None], noised, tokens)
        t_tok = torch.minimum(torch.full_like(strength, t), 1 - strength)  # (B, N)
        branches = [("uncond", neg)] if cfg_scale > 1 else []
        branches += [("cond", text)] + ([("perturbed", text)] if stg_scale > 0 else [])
        b, k = tokens.shape[0], len(branches)
        skip = None
        if stg_scale > 0:
            mask = torch.zeros(k * b, dtype=torch.bool, device=tokens.device)
            mask[(k - 1) * b :] = True
            skip = SkipLayers(tuple(blocks), mask, cfg.stg_mode)
        velocity = self.dit(
            tokens.repeat(k, 1, 1),
            t_tok.repeat(k, 1),
            torch.cat([e.emb for _, e in branches]),
            torch.cat([e.mask for _, e in branches]),
            frame_rate=cfg.frame_rate,
            coords=state.coords.repeat(k, 1, 1),
            skip=skip,
        ).float()
        parts = dict(zip([name for name, _ in branches], velocity.chunk(k), strict=True))
        v = sampling.guided_velocity(
            parts["cond"],
            parts.get("uncond"),
            parts.get("perturbed"),
            cfg_scale,
            stg_scale,
            rescale,
            cfg.cfg_star,
        )
        t_next = sampling.next_t(ts, t_tok)
        if cfg.stochastic:
            fresh = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=torch.float32)
            stepped = sampling.stochastic_euler_step(tokens.float(), v, t_tok, t_next, fresh)
        else:
            stepped = sampling.euler_step(tokens.float(), v, t_tok, t_next)
        update = (t - 1e-6 < 1 - strength)[..., None]  # hard-conditioned tokens never move
        return torch.where(update, stepped.to(tokens.dtype), tokens)

    def _decode(self, latents: Tensor, cfg: SampleConfig, generator: torch.Generator) -> Tensor:
        """Official decode: decode noise mixed in normalized space, optional tone map, decoder at decode_timestep."""
        z = latents.to(self.vae.latent_std.dtype)
        timestep = None
        if self.vae.cfg.timestep_conditioning:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z * (1 - cfg.decode_noise_scale) + eps * cfg.decode_noise_scale
            timestep = cfg.decode_timestep
        if cfg.tone_map > 0:
            z = tone_map(z, cfg.tone_map)
        return self.vae.decode(z, timestep=timestep, generator=generator)


def tone_map(latents: Tensor, compression: float) -> Tensor:
    """Official 0.9.8 latent tone mapping: z * (1 - 0.8 s sigmoid(4 s (|z| - 1))), s = 0.75 * compression."""
    s = 0.75 * compression
    return latents * (1 - 0.8 * s * torch.sigmoid(4 * s * (latents.abs() - 1)))


def _resize(media: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of (B, 3, n, h, w) frames to the generation size (official `resize_tensor`)."""
    b, _, n = media.shape[:3]
    frames = rearrange(media, "b c n h w -> (b n) c h w").float()
    frames = torch.nn.functional.interpolate(
        frames, size=(height, width), mode="bilinear", align_corners=False
    )
    return rearrange(frames, "(b n) c h w -> b c n h w", b=b, n=n).to(media.dtype)
