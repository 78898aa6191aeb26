"""Pipeline: the only place that wires text encoder, DiT, sampler and VAE together.

One generate() serves every mode (text-to-video, image-to-video, keyframes, extension, video-to-video)
through conditioning items with per-token timesteps; generate_multiscale() chains two of them with the latent
upsampler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from . import sampling
from .conditioning import Condition, LatentState, build_state, check_condition, trim_frames
from .config import ChainConfig, ModelSpec, SampleConfig
from .demo import generation_defaults
from .devices import resolve_device
from .dit.cache import FirstBlockCache
from .dit.model import SkipLayers, TextContext, VideoDiT
from .layers.attention import attention_backend
from .layers.rope import latent_pixel_coords
from .media import crop_video, pad_video, padded_size
from .parallel import join as join_parallel
from .parallel import local_device
from .speed import SpeedConfig, apply_to_dit
from .upsampler import LatentUpsampler, adain_match
from .vae.model import VideoVAE
from .vae.tiling import should_tile

StepCallback = Callable[[int, float, Tensor], None]  # (step index, t, tokens (B, N, C))


@dataclass
class GenerationResult:
    """video (B, 3, F, H, W) in [0, 1] at the requested size; latents (B, C, F', H', W') normalized."""

    video: Tensor | None  # None when generate(decode=False)
    latents: Tensor
    frame_rate: float
    timesteps: list[float] = field(default_factory=list)
    seed: int | None = None  # the seed that reproduces this result (None when a generator was passed)
    num_frames: int | None = None  # the frames made, where `video` does not hold them (a streamed chain)

    @property
    def seconds(self) -> float:
        """Video duration; without a decoded video, that of the frames streamed, else of the latents
        (8(F'-1)+1 frames)."""
        if self.video is not None:
            return self.video.shape[2] / self.frame_rate
        frames = self.num_frames or 8 * (self.latents.shape[2] - 1) + 1
        return frames / self.frame_rate

    def frames(self, index: int = 0) -> list:  # noqa: ANN201 - list of PIL.Image.Image
        """The frames of video `index` as PIL images."""
        from PIL import Image

        from .media import to_uint8_frames

        return [Image.fromarray(f) for f in to_uint8_frames(self.video[index])]


@dataclass
class TextEmbeddings:
    """Prompt embeddings from any T5-style encoder: emb (B, L, D), mask (B, L) with 1 = token."""

    emb: Tensor
    mask: Tensor


@dataclass
class _Reuse:
    """What one generate() reuses across its steps: the prepared text per set of guidance branches (None:
    recomputed every step), and the first-block cache (None: off)."""

    texts: dict[tuple[str, ...], TextContext] | None
    blocks: FirstBlockCache | None


class Pipeline:
    """A loaded model family member: VAE + DiT (+ optional text encoder) and its checkpoint spec."""

    def __init__(
        self,
        vae: VideoVAE,
        dit: VideoDiT,
        spec: ModelSpec,
        text_encoder=None,  # noqa: ANN001 - ltxv.text.TextEncoder or anything with encode(prompts, max_tokens)
        device: str | torch.device | None = None,
        offload: bool = False,
        text_encoder_on_cpu: bool = False,
        speed: SpeedConfig | None = None,
        generation: dict[str, Any] | None = None,
    ) -> None:
        """`device` is where computation runs (default: where the DiT is). The text encoder waits on the CPU
        and visits `device` for each encode (or stays there with `text_encoder_on_cpu`). With `offload`, the
        DiT and VAE also wait on the CPU and visit `device` one at a time (model-level sequential offload).
        `speed` selects the inference speed-ups (default `SpeedConfig()`: the exact ones); its fp8 and
        compile options change the DiT in place. `generation`: SampleConfig fields tuned for this model
        (a model folder's generation.json), which `default_config()` lays over its own defaults."""
        width = getattr(text_encoder, "hidden_size", None)
        if width is not None and width != dit.cfg.caption_channels:
            raise ValueError(
                f"the text encoder gives {width}-d embeddings but this transformer takes caption_channels="
                f"{dit.cfg.caption_channels}: pass the text encoder made for this model (--text-encoder)"
            )
        self.vae, self.dit, self.spec, self.text_encoder = vae, dit, spec, text_encoder
        self.generation = dict(generation or {})
        self.device = local_device(torch.device(device) if device is not None else dit.proj_out.weight.device)
        self.offload = offload
        self.text_encoder_on_cpu = text_encoder_on_cpu
        self.speed = speed or SpeedConfig()
        apply_to_dit(self.dit, self.speed)
        self.parallel = join_parallel(
            self.speed.cfg_parallel, self.speed.sequence_parallel, self.device, dit.cfg.num_heads
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        text_encoder: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
        text_encoder_on_cpu: bool = False,
        speed: SpeedConfig | None = None,
    ) -> Pipeline:
        """Load VAE + transformer from any supported checkpoint; the text encoder from `text_encoder`, or from
        `path`/text_encoder + `path`/tokenizer when `path` is a model folder that has them.

        Memory: `offload` keeps every model on the CPU between uses; `text_encoder_on_cpu` runs T5 on the CPU
        in fp32 (it is used once per prompt) so its ~9.5 GB (bf16 T5-XXL) never reach the GPU."""
        from .weights import load_transformer, load_vae, open_checkpoint

        device = local_device(resolve_device(device))  # under torchrun: this process's GPU
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        ckpt = open_checkpoint(path)  # headers read once, shared by both loaders
        home = torch.device("cpu") if offload else device
        vae, dit = load_vae(ckpt, home, dtype), load_transformer(ckpt, home, dtype)
        te_path = text_encoder
        if te_path is None and os.path.isdir(os.path.join(path, "text_encoder")):
            te_path = path
        encoder = None
        if te_path is not None:
            from .text import TextEncoder

            te_dtype = (
                torch.float32 if text_encoder_on_cpu else dtype
            )  # T5's home is the CPU (see encode_text)
            encoder = TextEncoder.from_pretrained(str(te_path), device="cpu", dtype=te_dtype)
        generation = generation_defaults(path)  # a model folder's tuned settings ({} for a file)
        return cls(vae, dit, ckpt.spec, encoder, device, offload, text_encoder_on_cpu, speed, generation)

    @torch.inference_mode()
    def encode_video(self, video: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] (F = 8k+1, sides /32) -> normalized latents: the posterior mode."""
        with self._visit(self.vae):
            return self.vae.encode(video.to(self.device, self.vae.latent_std.dtype))

    def load_lora(self, path: str | os.PathLike[str], scale: float = 1.0) -> int:
        """Merge a LoRA file into the transformer (scale multiplies alpha/rank); returns the layers merged."""
        from .lora import merge_lora, read_lora

        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
            raise ValueError(f"LoRA scale must be a finite number, got {scale!r}")
        return merge_lora(self.dit, read_lora(path), scale)

    @contextlib.contextmanager
    def _visit(self, module: torch.nn.Module | None) -> Iterator[None]:
        """With offload: move `module` to the compute device for the block, then back to the CPU."""
        if not self.offload or module is None:
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.proj_out.weight.dtype

    def default_config(self) -> SampleConfig:
        """Generation defaults for this checkpoint: the schedule family from its metadata, STG on block 19
        (the official 2B's; the last block of smaller models), then the model folder's generation.json
        (`self.generation`; the bundled model's size, frames, steps and guidance)."""
        layers = self.dit.cfg.num_layers
        stg_blocks = (19,) if layers > 19 else (layers - 1,)
        base = SampleConfig(stochastic=self.spec.scheduler.stochastic, stg_blocks=stg_blocks)
        return dataclasses.replace(base, **self.generation)

    def encode_text(self, prompts: list[str], max_tokens: int) -> TextEmbeddings:
        if self.text_encoder is None:
            raise ValueError(
                "this pipeline has no text encoder: pass text_encoder=PATH (CLI: --text-encoder)"
            )
        model = getattr(self.text_encoder, "model", None)
        if model is None or self.text_encoder_on_cpu or self.device.type == "cpu":
            emb, mask = self.text_encoder.encode(prompts, max_tokens)
        else:  # T5 lives on the CPU and visits the GPU for one encode, leaving its memory to the DiT and VAE
            model.to(self.device)
            try:
                emb, mask = self.text_encoder.encode(prompts, max_tokens)
            finally:
                model.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return TextEmbeddings(emb.to(self.device, self.dtype), mask.to(self.device))

    def schedule(self, cfg: SampleConfig, num_tokens: int | None = None) -> list[float]:
        """The timesteps generate() runs for `cfg` at `num_tokens` latent tokens (`sampling.schedule`;
        default: the tokens of `cfg`'s padded size, as in a generation without extra conditioning tokens)."""
        tokens = math.prod(self._latent_grid(cfg)) if num_tokens is None else num_tokens
        return sampling.schedule(self.spec.scheduler, cfg, tokens)

    def _latent_grid(self, cfg: SampleConfig) -> tuple[int, int, int]:
        """(F', H', W') of `cfg`'s video padded to what the VAE takes (sides /32, frames 8k+1)."""
        st, ss, _ = self.vae.scale_factors
        height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames, ss, st)
        return (frames - 1) // st + 1, height // ss, width // ss

    @torch.inference_mode()
    def generate(
        self,
        prompt: str | list[str] | TextEmbeddings,
        config: SampleConfig | None = None,
        *,
        conditions: list[Condition] = (),  # type: ignore[assignment]
        negative: TextEmbeddings | None = None,
        noise: Tensor | None = None,
        init_latents: Tensor | None = None,
        callback: StepCallback | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
    ) -> GenerationResult:
        """Generate videos. `config` fields default to `default_config()`; `noise` is the initial normalized
        latent noise (B, C, F', H', W') (else drawn in the official (B, N, C) layout from the seed).
        `init_latents` (normalized, same shape) start the sampling from t0 = the first timestep instead of
        pure noise: x = t0·noise + (1 − t0)·init (video-to-video, multi-scale second pass); pair it with
        `skip_initial_steps` or explicit `timesteps` below 1. `decode=False` returns latents only."""
        cfg = config or self.default_config()
        bad = [
            i
            for i in (*cfg.stg_blocks, *(j for bl in cfg.stg_blocks_schedule for j in bl))
            if i >= self.dit.cfg.num_layers
        ]
        if bad and (cfg.stg > 0 or cfg.stg_schedule):
            n = self.dit.cfg.num_layers
            raise ValueError(
                f"STG blocks {bad} do not exist in this {n}-block transformer: use indices 0..{n - 1} "
                "(stg_blocks, CLI --stg-blocks)"
            )
        for cond in conditions:  # a frame in the padding to 8k+1 frames would be cropped away unseen
            if cond.frame >= cfg.num_frames:  # (Condition refuses negative frames)
                raise ValueError(
                    f"condition at frame {cond.frame}: the video has frames 0..{cfg.num_frames - 1}; "
                    "place it there, or ask for more frames (num_frames)"
                )
        st, ss, _ = self.vae.scale_factors
        height, width, frames = padded_size(cfg.height, cfg.width, cfg.num_frames, ss, st)
        seed = None if generator is not None else self.pick_seed(cfg)
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(seed)
        text, neg = self._texts(prompt, negative, cfg)
        b = text.emb.shape[0]
        shape = (b, self.dit.cfg.in_channels, *self._latent_grid(cfg))
        ts = self.schedule(cfg, math.prod(shape[2:]))
        state = self._initial_state(
            shape, noise, init_latents, ts[0], conditions, frames, height, width, generator
        )
        reuse = _Reuse(
            {} if self.speed.text_cache else None,
            FirstBlockCache(self.speed.block_cache, self.parallel and self.parallel.sum)
            if self.speed.block_cache > 0
            else None,
        )
        with self._visit(self.dit), attention_backend(self.speed.attention):
            for i, t in enumerate(ts):
                state.tokens = self._step(state, ts, i, t, text, neg, cfg, generator, reuse)
                if callback is not None:
                    callback(i, t, state.tokens)
        latents = rearrange(
            state.tokens[:, state.num_extra :], "b (f h w) c -> b c f h w", f=shape[2], h=shape[3]
        )
        video = self._finish(latents, cfg, generator) if decode else None
        return GenerationResult(video, latents, cfg.frame_rate, ts, seed)

    @torch.inference_mode()
    def generate_multiscale(
        self,
        prompt: str | list[str] | TextEmbeddings,
        first: SampleConfig,
        second: SampleConfig,
        upsampler: LatentUpsampler,
        downscale: float = 2 / 3,
        *,
        conditions: list[Condition] = (),  # type: ignore[assignment]
        negative: TextEmbeddings | None = None,
        callback: StepCallback | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
    ) -> GenerationResult:
        """Official multi-scale pipeline (0.9.7+): pass 1 at `downscale` x the padded size (sides up to
        multiples of 32; pass-1 sides rounded down to multiples of 32), latent x2 upsampler + AdaIN to the
        pass-1 statistics, pass 2 at twice the pass-1 size from those latents (`second` should skip initial
        steps or list timesteps below 1), decode, bilinear resize to the padded size and crop its centre, as
        the official inference. The requested size, frames and frame rate are `first`'s; guidance > 1 in
        either pass (scalar or per-step schedule) encodes the negative prompt. `decode=False` returns pass
        2's latents only."""
        w1, h1 = self._multiscale_size(first, downscale)
        seed = None if generator is not None else self.pick_seed(first)
        generator = generator or torch.Generator(self.device).manual_seed(seed)
        text, neg = self._texts(prompt, negative, first, second)
        low = self.generate(
            text,
            dataclasses.replace(first, width=w1, height=h1),
            conditions=conditions,
            negative=neg,
            callback=callback,
            generator=generator,
            decode=False,
        )
        with self._visit(upsampler):
            up = upsampler(
                self.vae.denormalize(low.latents).to(self.device, upsampler.final_conv.weight.dtype)
            )
        init = adain_match(self.vae.normalize(up.to(low.latents)), low.latents)
        high = self.generate(
            text,
            self._second_pass(first, second, w1, h1),
            conditions=conditions,
            negative=neg,
            init_latents=init,
            callback=callback,
            generator=generator,
            decode=False,
        )
        video = self._finish_multiscale(high.latents, first, second, downscale, generator) if decode else None
        return GenerationResult(video, high.latents, first.frame_rate, low.timesteps + high.timesteps, seed)

    def _multiscale_size(self, first: SampleConfig, downscale: float) -> tuple[int, int]:
        """Pass 1's (width, height): `downscale` x the padded size, rounded down to multiples of 32."""
        _, ss, _ = self.vae.scale_factors
        ph, pw, _ = padded_size(first.height, first.width, first.num_frames, ss)
        w1, h1 = int(pw * downscale), int(ph * downscale)
        w1, h1 = w1 - w1 % ss, h1 - h1 % ss
        if w1 < ss or h1 < ss:
            raise ValueError(
                f"{first.width}x{first.height} x {downscale:.3f} is below one latent ({ss} px) per side"
            )
        return w1, h1

    @staticmethod
    def _second_pass(first: SampleConfig, second: SampleConfig, w1: int, h1: int) -> SampleConfig:
        """Pass 2 at twice pass 1's size, with first's frames and frame rate (the RoPE time scale)."""
        return dataclasses.replace(
            second, width=2 * w1, height=2 * h1, num_frames=first.num_frames, frame_rate=first.frame_rate
        )

    def _finish_multiscale(
        self,
        latents: Tensor,
        first: SampleConfig,
        second: SampleConfig,
        downscale: float,
        generator: torch.Generator,
    ) -> Tensor:
        """Pass 2's latents -> the requested video in [0, 1]: decoded at pass 2's size, resized to the padded
        size, then its centre, as `generate` crops its padding."""
        w1, h1 = self._multiscale_size(first, downscale)
        video = self._finish(latents, self._second_pass(first, second, w1, h1), generator)
        ph, pw, _ = padded_size(first.height, first.width, first.num_frames, self.vae.scale_factors[1])
        video = _resize(video, ph, pw).clamp(0, 1)
        return crop_video(video, first.height, first.width, video.shape[2])

    @torch.inference_mode()
    def generate_chain(
        self,
        prompts: list[str],
        config: SampleConfig | None = None,
        chain: ChainConfig | None = None,
        *,
        conditions: list[Condition] = (),  # type: ignore[assignment]
        negative: TextEmbeddings | None = None,
        callback: StepCallback | None = None,
        generator: torch.Generator | None = None,
        on_frames: Callable[[Tensor], None] | None = None,
        multiscale: tuple[SampleConfig, LatentUpsampler, float] | None = None,
    ) -> GenerationResult:
        """A long video as a chain of segments, one per prompt (the same prompt repeated for one long shot; a
        new one where the action should change). Segment 1 is `generate(prompts[0], config, conditions=...)`
        (with `multiscale` = (second, upsampler, downscale): `generate_multiscale(prompts[0], config, ...)`);
        each later one is conditioned at frame 0 on the last `chain.overlap` frames of the one before, and
        its latents are blended towards segment 1's statistics by `chain.adain` (`ChainConfig`). Every segment
        has `config`'s size and frames: F + (S - 1)(F - overlap) frames in all, returned on the CPU with the
        last segment's latents. With `on_frames`, each segment's new frames (1, 3, f, H, W) in [0, 1] go to
        it instead, as soon as they are decoded (e.g. `media.video_writer`'s write), and the result's video
        is None: memory then does not grow with the length. One seed (or `generator`) draws every segment's
        noise."""
        cfg = config or self.default_config()
        chain = chain or ChainConfig()
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("generate_chain takes a non-empty list of prompts, one per segment")
        frames = chain.total_frames(cfg.num_frames, len(prompts))  # checks that each segment has new frames
        _, ss, _ = self.vae.scale_factors
        height, width, _ = padded_size(cfg.height, cfg.width, cfg.num_frames, ss)
        seed = None if generator is not None else self.pick_seed(cfg)
        generator = generator or torch.Generator(self.device).manual_seed(seed)
        parts, timesteps, first, texts = [], [], None, {}
        for k, prompt in enumerate(prompts):
            if prompt not in texts:  # each prompt, and the negative prompt, encoded once
                texts[prompt], negative = self._texts(
                    prompt, negative, cfg, *multiscale[:1] if multiscale else ()
                )
            run = dict(conditions=conditions, negative=negative, callback=callback, generator=generator)
            if multiscale is None:
                segment = self.generate(texts[prompt], cfg, **run, decode=False)
            else:
                segment = self.generate_multiscale(texts[prompt], cfg, *multiscale, **run, decode=False)
            latents = segment.latents  # (1, C, F', H', W')
            if first is None:
                first = latents
            elif chain.adain > 0:
                latents = adain_match(latents, first, chain.adain)
            if multiscale is None:
                video = self._finish(latents, cfg, generator)  # (1, 3, F, H, W) in [0, 1]
            else:
                video = self._finish_multiscale(latents, cfg, multiscale[0], multiscale[2], generator)
            new = (video if k == 0 else video[:, :, chain.overlap :]).cpu()  # (1, 3, f, H, W)
            if on_frames is not None:
                on_frames(new)
            else:
                parts.append(new)
            timesteps += segment.timesteps
            tail = pad_video(video[:, :, -chain.overlap :] * 2 - 1, height, width)  # as --condition pads
            conditions = [Condition(tail, 0, chain.overlap_strength)]
        video = torch.cat(parts, dim=2) if parts else None
        return GenerationResult(video, latents, cfg.frame_rate, timesteps, seed, frames)

    def _texts(
        self,
        prompt: str | list[str] | TextEmbeddings,
        negative: TextEmbeddings | None,
        cfg: SampleConfig,
        *more: SampleConfig,
    ) -> tuple[TextEmbeddings, TextEmbeddings | None]:
        """The prompt's embeddings and, when guidance > 1 at any step of `cfg` or `more` (the passes that
        share them), the negative prompt's; tokens and negative prompt from `cfg`."""
        needs_neg = any(c.guidance > 1 or any(g > 1 for g in c.guidance_schedule) for c in (cfg, *more))
        if isinstance(prompt, TextEmbeddings):
            if needs_neg and negative is None:
                raise ValueError("guidance > 1 with prompt embeddings needs `negative` embeddings too")
            return prompt, negative
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        max_tokens = self.text_tokens(cfg)
        text = self.encode_text(prompts, max_tokens)
        if needs_neg and negative is None:
            negative = self.encode_text([cfg.negative_prompt] * len(prompts), max_tokens)
        return text, negative

    def text_tokens(self, cfg: SampleConfig) -> int:
        """T5 tokens a prompt is read with (EOS included): cfg.max_tokens, else the checkpoint era's."""
        return cfg.max_tokens or (128 if self.spec.scheduler.kind == "sd3" else 256)

    def pick_seed(self, cfg: SampleConfig) -> int:
        """cfg.seed, else a random one, drawn by rank 0 for every process of a torchrun job (same noise)."""
        if cfg.seed is not None:
            return cfg.seed
        seed = secrets.randbits(62)
        return self.parallel.agree(seed) if self.parallel is not None else seed

    def _coords(self, f: int, h: int, w: int) -> Tensor:
        c = self.dit.cfg
        return latent_pixel_coords(f, h, w, c.latent_scale, c.causal_temporal_positioning, self.device)

    def _initial_state(
        self,
        shape: tuple[int, ...],
        noise: Tensor | None,
        init_latents: Tensor | None,
        t0: float,
        conditions: list[Condition],
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
        if init_latents is not None:
            if tuple(init_latents.shape) != shape:
                raise ValueError(
                    f"init_latents must have the latent shape {shape}, got {tuple(init_latents.shape)}"
                )
            if t0 >= 1.0:
                raise ValueError(
                    "init_latents would be replaced by pure noise: start below t=1 (skip_initial_steps)"
                )
            noise = t0 * noise + (1 - t0) * init_latents.to(noise)  # official `prepare_latents`
        encoded = []
        for cond in conditions:
            if cond.media.shape[0] not in (1, b):
                raise ValueError(
                    f"condition media has a batch of {cond.media.shape[0]}; this generation's batch is {b} "
                    f"(one per prompt): give 1 (shared) or {b}"
                )
            n = trim_frames(cond.media.shape[2], cond.frame, frames, self.vae.scale_factors[0])
            media = cond.media[:, :, :n]
            if media.shape[-2:] != (height, width):
                media = _resize(media, height, width)
            cond = dataclasses.replace(cond, media=media)
            check_condition(cond, frames, self.vae.scale_factors[0])
            encoded.append((cond, self.encode_video(media)))
        grid_coords = self._coords(f, h, w).expand(b, -1, -1)
        return build_state(noise.to(self.device, self.dtype), encoded, grid_coords, self._coords, generator)

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
        reuse: _Reuse,
    ) -> Tensor:
        """One Euler step with all guidance branches batched into one forward: [uncond?, cond, perturbed?]
        (with keyframe guidance and extra tokens, the unconditional branch in a forward of its own)."""
        keyframes = cfg.keyframe_guidance and state.num_extra > 0
        cfg_scale, stg_scale, rescale, blocks = sampling.guidance_settings(cfg, t, keyframes)
        tokens, strength = state.tokens, state.strength
        if cfg.image_cond_noise_scale > 0 and bool((strength > 0).any()):
            eps = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
            noised = state.clean + cfg.image_cond_noise_scale * eps * t**2
            tokens = torch.where((strength > 1 - 1e-6)[..., None], noised, tokens)
        t_tok = torch.minimum(torch.full_like(strength, t), 1 - strength)  # (B, N)
        apart = cfg_scale > 1 and keyframes
        branches = [("uncond", neg)] if cfg_scale > 1 and not apart else []
        branches += [("cond", text)] + ([("perturbed", text)] if stg_scale > 0 else [])
        b, k = tokens.shape[0], len(branches)
        skip = None
        if stg_scale > 0:
            mask = torch.zeros(k * b, dtype=torch.bool, device=tokens.device)
            mask[(k - 1) * b :] = True
            skip = SkipLayers(tuple(blocks), mask, cfg.stg_mode)
        names = tuple(name for name, _ in branches)
        if reuse.blocks is not None:
            reuse.blocks.follow(names)  # another set of branches: nothing to reuse from the last step
        rows = self.parallel.rows(k * b, tokens.device) if self.parallel else None
        text_emb, text_mask = self._text_input(branches, reuse.texts, rows)
        velocity = self._transformer(
            tokens.repeat(k, 1, 1),
            t_tok.repeat(k, 1),
            text_emb=text_emb,
            text_mask=text_mask,
            frame_rate=cfg.frame_rate,
            coords=state.coords.repeat(k, 1, 1),
            skip=skip,
            block_cache=reuse.blocks,
        ).float()
        parts = dict(zip(names, velocity.chunk(k), strict=True))
        extra = None  # keyframe guidance: guidance on the video tokens; the extra ones take the cond velocity
        if apart:
            m = state.num_extra
            extra = parts["cond"][:, :m]
            parts = {name: part[:, m:] for name, part in parts.items()}
            parts["uncond"] = self._without_extra(tokens, t_tok, state, neg, cfg, reuse)
        v = sampling.guided_velocity(  # over the video tokens only, with keyframe guidance
            parts["cond"],
            parts.get("uncond"),
            parts.get("perturbed"),
            cfg_scale,
            stg_scale,
            rescale,
            cfg.cfg_star,
        )
        if extra is not None:
            v = torch.cat([extra, v], 1)
        t_next = sampling.next_t(ts, t_tok)
        if cfg.stochastic:
            fresh = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=torch.float32)
            stepped = sampling.stochastic_euler_step(tokens.float(), v, t_tok, t_next, fresh)
        else:
            stepped = sampling.euler_step(tokens.float(), v, t_tok, t_next)
        update = (t - 1e-6 < 1 - strength)[..., None]  # hard-conditioned tokens never move
        return torch.where(update, stepped.to(tokens.dtype), tokens)

    def _without_extra(
        self,
        tokens: Tensor,
        t_tok: Tensor,
        state: LatentState,
        neg: TextEmbeddings,
        cfg: SampleConfig,
        reuse: _Reuse,
    ) -> Tensor:
        """Keyframe guidance's unconditional velocity of the video tokens alone (B, N - M, C), without the M
        leading extra tokens. No first-block cache: it follows the batched branches."""
        m, b = state.num_extra, tokens.shape[0]
        rows = self.parallel.rows(b, tokens.device) if self.parallel else None
        text_emb, text_mask = self._text_input([("uncond", neg)], reuse.texts, rows)
        return self._transformer(
            tokens[:, m:],
            t_tok[:, m:],
            text_emb=text_emb,
            text_mask=text_mask,
            frame_rate=cfg.frame_rate,
            coords=state.coords[:, m:],
        ).float()

    def _transformer(self, tokens: Tensor, timestep: Tensor, **kwargs: Any) -> Tensor:
        """The DiT's forward here, or shared by the processes of a torchrun job (`ltxv.parallel`)."""
        if self.parallel is None:
            return self.dit(tokens, timestep, **kwargs)
        return self.parallel.forward(self.dit, tokens, timestep, **kwargs)

    def _text_input(
        self,
        branches: list[tuple[str, TextEmbeddings]],
        cache: dict[tuple[str, ...], TextContext] | None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor | TextContext, Tensor | None]:
        """The DiT's text arguments for the batched branches (only `rows` of them, when given: this process's
        share): (emb, mask), or with a cache their prepared context, computed at the first step that has this
        set of branches (the prompt does not change, nor, for a set of branches, the rows)."""
        names = tuple(name for name, _ in branches)
        if cache is not None and names in cache:
            return cache[names], None
        emb, mask = torch.cat([e.emb for _, e in branches]), torch.cat([e.mask for _, e in branches])
        if rows is not None:
            emb, mask = emb.index_select(0, rows), mask.index_select(0, rows)
        if cache is None:
            return emb, mask
        cache[names] = self.dit.prepare_text(emb, mask)
        return cache[names], None

    def _finish(self, latents: Tensor, cfg: SampleConfig, generator: torch.Generator) -> Tensor:
        """Normalized latents (B, C, F', H', W') -> the requested video (B, 3, F, H, W) in [0, 1]: decoded,
        then the centre of the padded size, as the official inference crops."""
        video = crop_video(self._decode(latents, cfg, generator), cfg.height, cfg.width, cfg.num_frames)
        return ((video.float() + 1) / 2).clamp(0, 1)

    def _decode(self, latents: Tensor, cfg: SampleConfig, generator: torch.Generator) -> Tensor:
        """Official decode: decode noise mixed in normalized space, optional tone map, decoder at
        decode_timestep."""
        z, timestep = self._decoder_input(latents, cfg, generator)
        with self._visit(self.vae):
            if should_tile(cfg.vae_tiling, z, self.device):
                return self.vae.decode_tiled(z, timestep=timestep, generator=generator)
            return self.vae.decode(z, timestep=timestep, generator=generator)

    def _decoder_input(
        self, latents: Tensor, cfg: SampleConfig, generator: torch.Generator | None
    ) -> tuple[Tensor, float | None]:
        z = latents.to(self.vae.latent_std.dtype)
        timestep = None
        if self.vae.cfg.timestep_conditioning:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z * (1 - cfg.decode_noise_scale) + eps * cfg.decode_noise_scale
            timestep = cfg.decode_timestep
        if cfg.tone_map > 0:
            z = tone_map(z, cfg.tone_map)
        return z, timestep

    @torch.inference_mode()
    def decode_stream(
        self,
        latents: Tensor,
        config: SampleConfig | None = None,
        generator: torch.Generator | None = None,
        chunk_frames: int = 4,
    ) -> Iterator[Tensor]:
        """generate()'s decode, streamed: latents of `generate(..., decode=False)` -> frames (B, 3, f, H, W)
        in [0, 1], cropped to `config`'s size, each run as soon as it is final (`VideoVAE.decode_stream`:
        chunks of `chunk_frames` latent frames: the tiled decode with that chunk length, which is close to,
        not equal to, the untiled one). `generator` draws the decode noise, as generate() does after
        sampling."""
        cfg = config or self.default_config()
        z, timestep = self._decoder_input(latents, cfg, generator)
        left = cfg.num_frames
        with self._visit(self.vae):
            for frames in self.vae.decode_stream(z, timestep, chunk_frames, generator=generator):
                n = min(frames.shape[2], left)
                yield ((crop_video(frames, cfg.height, cfg.width, n).float() + 1) / 2).clamp(0, 1)
                left -= n
                if left == 0:
                    return


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
