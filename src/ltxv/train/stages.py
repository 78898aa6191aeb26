"""Training objectives, one nn.Module per stage: forward(batch, rng, step) -> {"loss": ..., metrics}.

Each stage owns the models it trains (and the frozen ones it needs), so one DDP/FSDP wrapper around the stage
covers every trainable parameter. All randomness comes from the `BatchRandom` handed in, which the loop
derives from (seed, step): a resumed run draws exactly what an uninterrupted one would.

    vae      encoder + decoder: pixel MSE + 3-D DWT L1 + KL (+ reconstruction GAN, LPIPS), decoded at t = 0
    decoder  decoder only, as the final denoising step: latents noised to t ~ U[0, t_max] -> clean pixels
    dit      rectified flow on VAE latents (frozen VAE or a latent cache), T2V and I2V together
    joint    encoder, decoder and transformer in one step: vae·L_vae + decoder·L_decoder + flow·L_flow
    lora     `dit` with only the LoRA adapters trainable
    distill  a few-step, guidance-free student of the frozen starting transformer with CFG and more steps
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from einops import rearrange
from torch import Tensor, nn

from ..config import TRANSFORMER_STAGES, FlowTrainConfig, SampleConfig, TrainConfig
from ..dit.model import VideoDiT
from ..flow import (
    foreground_token_weights,
    interpolate,
    per_sample_loss,
    sample_t,
    teacher_velocity,
    velocity_target,
)
from ..sampling import guided_velocity, schedule
from ..vae.model import VideoVAE
from .losses import VAELossWeights, generator_adversarial_loss, vae_reconstruction_losses


class BatchRandom:
    """Every random draw of one step, made for the whole global batch from one generator seeded by (seed,
    step); this process keeps its rows [rank::world], the rows the batch sampler gave it. N processes thus
    draw exactly what one process with the same global batch would. Draws shared by the batch (token-drop
    ratio and permutation) use `generator` directly and are the same on every process."""

    def __init__(self, generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        self.generator, self.rank, self.world = generator, rank, world

    def _rows(self, full: Tensor, like_device: torch.device) -> Tensor:
        return full[self.rank :: self.world].to(like_device)

    def randn(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        g = self.generator
        full = torch.randn((shape[0] * self.world, *shape[1:]), generator=g, device=g.device)
        return self._rows(full, like.device).to(like.dtype)

    def rand(self, n: int, device: torch.device) -> Tensor:
        return self._rows(
            torch.rand(n * self.world, generator=self.generator, device=self.generator.device), device
        )

    def t(self, n: int, num_tokens: int, mode: str, device: torch.device, mu: float | None = None) -> Tensor:
        g = self.generator
        return self._rows(sample_t(n * self.world, num_tokens, g, g.device, mode, mu=mu), device)


def _weights(cfg: TrainConfig) -> VAELossWeights:
    """The non-adversarial terms; the stage adds the GAN term itself (it owns the discriminator call)."""
    v = cfg.vae
    return VAELossWeights(
        v.mse,
        v.wavelet,
        v.kl,
        0.0,
        v.lpips,
        v.foreground,
        v.foreground_symmetric,
        v.silhouette,
        v.silhouette_width,
    )


class Stage(nn.Module):
    """Base: the models of a run. `vae` / `dit` are None where a stage has no use for them."""

    def __init__(self, cfg: TrainConfig, vae: VideoVAE | None, dit: VideoDiT | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vae, self.dit = vae, dit
        # frozen perceptual net when cfg.vae.lpips > 0, held in a tuple so it is neither trained nor saved
        self.lpips_net: tuple[nn.Module, ...] = ()

    def set_null_text(self, emb: Tensor, mask: Tensor) -> None:
        """The empty prompt's embedding (L, D) and mask (L,), used for caption dropout."""
        self.register_buffer("null_emb", emb.float(), persistent=False)
        self.register_buffer("null_mask", mask, persistent=False)

    # -- the pieces shared by several stages -------------------------------------------------------------

    @property
    def lpips(self) -> nn.Module | None:
        return self.lpips_net[0] if self.lpips_net else None

    def reconstruction(
        self, video: Tensor, rng: BatchRandom, step: int, disc: nn.Module | None
    ) -> dict[str, Tensor]:
        """Encode, sample the posterior, decode at t = 0: the Video-VAE losses (spec §2.9). `disc` is the
        (possibly DDP-wrapped) pair discriminator when the reconstruction GAN is on."""
        mean, logvar = self.vae.encode_moments(video)  # (B, C, F', H', W') each, un-normalized
        z = mean + (0.5 * logvar).exp() * rng.randn(mean.shape, mean)
        t0 = torch.zeros(video.shape[0], device=video.device) if self.vae.cfg.timestep_conditioning else None
        recon = self.vae.decoder(z, t0, rng.generator)  # (B, 3, F, H, W)
        losses = vae_reconstruction_losses(recon, video, mean, logvar, _weights(self.cfg), None, self.lpips)
        self._adversarial(losses, video, recon, step, disc)
        losses["recon"] = recon
        losses["mean"] = mean
        # posterior diagnostics (logged): a log-variance running away or latent means blowing up precede
        # reconstructions collapsing to a flat image
        losses["posterior_logvar"] = logvar.detach().mean()
        losses["latent_abs_max"] = mean.detach().abs().amax()
        return losses

    def _adversarial(
        self, losses: dict[str, Tensor], video: Tensor, recon: Tensor, step: int, disc: nn.Module | None
    ) -> None:
        """Add the pair discriminator's verdict on `recon` (the autoencoder's side of the reconstruction GAN)
        to `losses` once the GAN has started; `disc` is None when it is off."""
        if disc is None or step < self.cfg.vae.gan_start:
            return
        gan = generator_adversarial_loss(disc, video, recon, self.cfg.vae.gan_foreground)
        losses["gan"] = gan
        losses["total"] = losses["total"] + self.cfg.vae.gan * gan

    def denoising_decode(
        self,
        latents: Tensor,
        video: Tensor,
        rng: BatchRandom,
        step: int = 0,
        disc: nn.Module | None = None,
    ) -> dict[str, Tensor]:
        """The decoder as the last denoising step: normalized latents noised to t ~ U[0, t_max] (the same
        interpolation the sampler uses, spec §2.7), decoded with t as condition, compared to clean pixels
        (with the reconstruction GAN when `disc` is given)."""
        b = latents.shape[0]
        t = rng.rand(b, latents.device) * self.cfg.vae.decoder_t_max  # (B,)
        noisy = interpolate(latents, rng.randn(latents.shape, latents), t)
        recon = self.vae.decode(noisy, t, rng.generator)
        weights = dataclasses.replace(_weights(self.cfg), kl=0.0)  # no posterior here
        losses = vae_reconstruction_losses(recon, video, None, None, weights, None, self.lpips)
        self._adversarial(losses, video, recon, step, disc)
        losses["recon"] = recon
        return losses

    def flow(
        self,
        latents: Tensor,
        text_emb: Tensor,
        text_mask: Tensor,
        rng: BatchRandom,
        keyframes: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Rectified flow (spec §5.1-5.2) on normalized latents (B, C, F, H, W): caption dropout, shifted
        logit-normal t by token count, first-frame conditioning (clean, t = 0, out of the loss) with
        probability first_frame_p or of the first 2..F'-1 latent frames with probability extension_p
        (`_conditioned_tokens`), optional random token dropping; with flow.foreground > 0 the tokens that
        hold an object weigh 1 + foreground in each sample's mean (`foreground_token_weights`). `keyframes`
        (tokens (B, M, C), coords (B, M, 3); `_draw_keyframes`) go in front as clean extra tokens at t = 0."""
        f_cfg, dev = self.cfg.flow, latents.device
        b, _, f, h, w = latents.shape
        n = f * h * w
        drop = rng.rand(b, dev) < f_cfg.caption_dropout  # (B,)
        if drop.any():
            text_emb = torch.where(drop[:, None, None], self.null_emb.to(text_emb.dtype), text_emb)
            text_mask = torch.where(drop[:, None], self.null_mask.to(text_mask.dtype), text_mask)
        x0 = rearrange(latents, "b c f h w -> b (f h w) c")
        noise = rng.randn(x0.shape, x0)
        t = rng.t(b, n, f_cfg.t_sampling, dev, f_cfg.t_shift)  # (B,)
        first = _conditioned_tokens(rng, f, h * w, f_cfg, b, dev)  # (B, N)
        t_tok = torch.where(first, 0.0, t[:, None])  # (B, N)
        xt = torch.where(first[..., None], x0, interpolate(x0, noise, t_tok))
        target = velocity_target(x0, noise)
        weights = (~first).float()  # (B, N): conditioning tokens out of the loss, object tokens weighted up
        if f_cfg.foreground > 0:
            weights = weights * foreground_token_weights(
                latents, f_cfg.foreground, f_cfg.foreground_threshold
            )
        coords = self.dit.token_coords(f, h, w, b, dev)  # (B, N, 3)
        g = rng.generator
        keep = n - int(torch.rand((), generator=g, device=g.device).item() * f_cfg.token_drop * n)
        if keep < n:  # stochastic token dropping: the same random subset for the whole batch
            idx = torch.randperm(n, generator=g, device=g.device).to(dev)[:keep].sort().values
            xt, target, coords, t_tok, weights = (
                xt[:, idx],
                target[:, idx],
                coords[:, idx],
                t_tok[:, idx],
                weights[:, idx],
            )
        xt, t_tok, coords, m = _prepend(keyframes, xt, t_tok, coords)
        rate = self.cfg.data.frame_rate
        velocity = self.dit(xt, t_tok, text_emb, text_mask, rate, coords)[:, m:]  # (B, N', C)
        per_sample = per_sample_loss(velocity, target, weights)  # (B,): each sample's weighted token mean
        # the mean over samples (not over all counted tokens, as the official trainer): the same quantity on
        # any split of the global batch, so averaging the processes' gradients is exact
        return {"total": per_sample.mean(), "t": t, "per_sample": per_sample}


class VAEStage(Stage):
    def forward(
        self, batch: dict, rng: BatchRandom, step: int, disc: nn.Module | None = None
    ) -> dict[str, Tensor]:
        out = self.reconstruction(batch["video"], rng, step, disc)
        return {"loss": out.pop("total"), **out}


class DecoderStage(Stage):
    def forward(
        self, batch: dict, rng: BatchRandom, step: int, disc: nn.Module | None = None
    ) -> dict[str, Tensor]:
        with torch.no_grad():
            latents = self.vae.encode(batch["video"])
        out = self.denoising_decode(latents, batch["video"], rng, step, disc)
        return {"loss": out.pop("total"), **out}


class DiTStage(Stage):
    def forward(
        self, batch: dict, rng: BatchRandom, step: int, disc: nn.Module | None = None
    ) -> dict[str, Tensor]:
        latents = _latents(self.vae, batch)
        keyframes = _draw_keyframes(rng, batch, self.vae, self.dit, self.cfg.flow, latents)
        out = self.flow(latents, batch["text_emb"], batch["text_mask"], rng, keyframes)
        return {"loss": out.pop("total"), **out}


class DistillStage(Stage):
    """Step and guidance distillation. The student (the transformer trained) will sample with
    `distill.steps` steps of the model's scheduler and no guidance. Each sample draws one of those steps,
    [t, t_next], noises its latents to t, and learns the velocity that moves them to where the teacher (a
    frozen copy of the starting transformer, or `distill.teacher`'s) gets in `distill.teacher_steps` Euler
    steps with CFG `distill.guidance` against the empty prompt. Latent frame 0 is kept clean
    (image-to-video) with probability flow.first_frame_p, the first 2..F'-1 latent frames (extension) with
    probability flow.extension_p, and a keyframe is added with probability flow.keyframe_p, for the teacher as
    for the student (the teacher's empty-prompt branch without it: keyframe guidance, as
    `distill.keyframe_guidance` says)."""

    def __init__(self, cfg: TrainConfig, vae: VideoVAE | None, dit: VideoDiT | None) -> None:
        super().__init__(cfg, vae, dit)
        if cfg.distill.teacher:  # e.g. the original model, when the student starts from an earlier student
            from ..weights import load_transformer

            teacher = load_transformer(cfg.distill.teacher, "cpu", torch.float32)
            for name in ("in_channels", "out_channels", "caption_channels"):
                if getattr(teacher.cfg, name) != getattr(dit.cfg, name):
                    raise ValueError(
                        f"distill.teacher {cfg.distill.teacher}: its transformer has {name}="
                        f"{getattr(teacher.cfg, name)}, the student {getattr(dit.cfg, name)}; use a teacher "
                        "of the same model family"
                    )
        else:
            teacher = copy.deepcopy(dit)
        # a tuple, not a submodule: checkpoints and DDP/FSDP do not see it; `_apply` moves it with the stage
        self._teacher = (teacher.requires_grad_(False),)

    @property
    def teacher(self) -> VideoDiT:
        return self._teacher[0]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self.teacher._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(
        self, batch: dict, rng: BatchRandom, step: int, disc: nn.Module | None = None
    ) -> dict[str, Tensor]:
        latents, emb, mask = _latents(self.vae, batch), batch["text_emb"], batch["text_mask"]
        d_cfg, dev = self.cfg.distill, latents.device
        b, _, f, h, w = latents.shape
        n = f * h * w
        # the student's own timesteps at this size (a checkpoint's fixed list, when it has one, as generate())
        ts = schedule(self.cfg.model.scheduler, SampleConfig(steps=d_cfg.steps), n) + [0.0]
        index = (rng.rand(b, dev) * (len(ts) - 1)).long().clamp(max=len(ts) - 2)  # (B,)
        grid = torch.tensor(ts, device=dev)
        t, t_next = grid[index], grid[index + 1]  # (B,) each
        x0 = rearrange(latents, "b c f h w -> b (f h w) c")
        first = _conditioned_tokens(rng, f, h * w, self.cfg.flow, b, dev)  # (B, N)
        t_tok = torch.where(first, 0.0, t[:, None])  # (B, N)
        t_next_tok = torch.where(first, 0.0, t_next[:, None])
        xt = torch.where(first[..., None], x0, interpolate(x0, rng.randn(x0.shape, x0), t_tok))
        coords = self.dit.token_coords(f, h, w, b, dev)
        keyframes = _draw_keyframes(rng, batch, self.vae, self.dit, self.cfg.flow, latents)
        xt, t_tok, coords, m = _prepend(keyframes, xt, t_tok, coords)
        t_next_tok = torch.cat([t_next_tok.new_zeros(b, m), t_next_tok], 1)
        rate = self.cfg.data.frame_rate
        null_emb = self.null_emb.to(emb.dtype).expand(b, -1, -1)
        null_mask = self.null_mask.to(mask.dtype).expand(b, -1)

        def guided(x: Tensor, tt: Tensor) -> Tensor:  # the teacher: [empty prompt, caption] in one forward
            if d_cfg.guidance == 1:  # no CFG: the caption's branch alone
                return self.teacher(x, tt, emb, mask, rate, coords)
            if m and d_cfg.keyframe_guidance:  # the empty prompt's branch without the keyframe tokens
                cond = self.teacher(x, tt, emb, mask, rate, coords)
                uncond = self.teacher(x[:, m:], tt[:, m:], null_emb, null_mask, rate, coords[:, m:])
                video = guided_velocity(cond[:, m:], uncond, cfg=d_cfg.guidance)
                return torch.cat([cond[:, :m], video], 1)
            both = self.teacher(
                x.repeat(2, 1, 1),
                tt.repeat(2, 1),
                torch.cat([null_emb, emb]),
                torch.cat([null_mask, mask]),
                rate,
                coords.repeat(2, 1, 1),
            )
            uncond, cond = both.chunk(2)
            return guided_velocity(cond, uncond, cfg=d_cfg.guidance)

        with torch.no_grad():
            target = teacher_velocity(xt, t_tok, t_next_tok, guided, d_cfg.teacher_steps)[:, m:]  # (B, N, C)
        velocity = self.dit(xt, t_tok, emb, mask, rate, coords)[:, m:]  # (B, N, C)
        per_sample = per_sample_loss(velocity, target, (~first).float())  # (B,)
        return {"loss": per_sample.mean(), "t": t, "per_sample": per_sample}


def _conditioned_tokens(
    rng: BatchRandom, frames: int, per_frame: int, flow: FlowTrainConfig, b: int, device: torch.device
) -> Tensor:
    """(B, N) bool, N = frames · per_frame: the tokens kept clean at t = 0 and out of the loss. Each sample
    is image-conditioned (latent frame 0) with probability flow.first_frame_p, or extended (its first k latent
    frames, k uniform in 2 .. frames - 1) with probability flow.extension_p."""
    u = rng.rand(b, device)  # (B,)
    k = (u < flow.first_frame_p).long()  # 1 latent frame, else 0
    if flow.extension_p > 0 and frames > 2:
        extended = (u >= flow.first_frame_p) & (u < flow.first_frame_p + flow.extension_p)
        k_ext = 2 + (rng.rand(b, device) * (frames - 2)).long().clamp(max=frames - 3)  # uniform in 2..F'-1
        k = torch.where(extended, k_ext, k)
    return torch.arange(frames * per_frame, device=device)[None] < (k * per_frame)[:, None]


def _draw_keyframes(
    rng: BatchRandom,
    batch: dict,
    vae: VideoVAE | None,
    dit: VideoDiT,
    flow: FlowTrainConfig,
    latents: Tensor,
) -> tuple[Tensor, Tensor] | None:
    """With probability flow.keyframe_p (one draw for the batch, whose samples need one token count): each
    sample's image keyframe at pixel frame 8j, j uniform in 1 .. F' - 1, as `conditioning.build_state` places
    an image condition at frame > 0: its tokens (B, H'·W', C) and their coordinates (B, H'·W', 3). The
    latents come from the cache's "keyframes" or are the chosen frames of the batch's videos encoded alone.
    None otherwise (and for single-frame latents, which have no later frame)."""
    if flow.keyframe_p <= 0:
        return None
    g = rng.generator
    if torch.rand((), generator=g, device=g.device).item() >= flow.keyframe_p:
        return None
    b, _, f, h, w = latents.shape
    if f < 2:
        return None
    keyframes = batch.get("keyframes")  # (B, F' - 1, C, 1, H', W')
    if keyframes is None and ("video" not in batch or vae is None):
        raise ValueError(
            "flow.keyframe_p > 0 needs keyframe latents: this latent cache was written without them; "
            "rerun `ltxv preprocess ... --keyframes` (or train on the videos)"
        )
    j = (rng.rand(b, latents.device) * (f - 1)).long().clamp(max=f - 2)  # (B,) keyframe j + 1
    frame = (j + 1) * dit.cfg.latent_scale[0]  # (B,) its pixel frame
    if keyframes is not None:
        z = keyframes.to(latents)[torch.arange(b, device=latents.device), j]  # (B, C, 1, H', W')
    else:
        video = batch["video"]  # (B, 3, F, H, W)
        images = torch.stack([video[i, :, int(k) : int(k) + 1] for i, k in enumerate(frame)])
        with torch.no_grad():
            z = vae.encode(images).to(latents)  # (B, C, 1, H', W')
    coords = dit.token_coords(1, h, w, b, latents.device).clone()  # (B, H'·W', 3)
    coords[..., 0] += frame.to(coords.dtype)[:, None]
    return rearrange(z, "b c f h w -> b (f h w) c"), coords


def _prepend(
    keyframes: tuple[Tensor, Tensor] | None, x: Tensor, t: Tensor, coords: Tensor
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Keyframe tokens in front of tokens x (B, N, C), at t = 0 in t (B, N), their coords in front of coords
    (B, N, 3); also their count M (0 without keyframes), which the caller slices off the output."""
    if keyframes is None:
        return x, t, coords, 0
    tokens, where = keyframes
    m = tokens.shape[1]
    t = torch.cat([t.new_zeros(t.shape[0], m), t], 1)
    return torch.cat([tokens.to(x.dtype), x], 1), t, torch.cat([where.to(coords), coords], 1), m


def _latents(vae: VideoVAE, batch: dict) -> Tensor:
    """The batch's normalized latents: from a latent cache, or the frozen VAE's encoding of its videos."""
    latents = batch.get("latents")
    if latents is None:
        with torch.no_grad():
            latents = vae.encode(batch["video"])
    return latents


class JointStage(Stage):
    """Encoder, decoder and transformer in one loop (the seed's "VAE and transformer trained jointly").

    L = w_vae·L_vae(posterior sample decoded at t = 0) + w_dec·L_decoder(latents noised to t ≤ t_max)
      + w_flow·L_flow(the encoder's normalized posterior mean). The normalisation statistics are running
    averages over the batches (momentum `joint.stats_momentum`; under DDP rank 0's are broadcast), started
    from the first batches' statistics. The flow gradient reaches the encoder scaled
    by `joint.flow_to_encoder` (0 = detached): an unconstrained flow loss would shrink the latents, since
    near-constant latents make the velocity trivially predictable."""

    def forward(
        self, batch: dict, rng: BatchRandom, step: int, disc: nn.Module | None = None
    ) -> dict[str, Tensor]:
        j, video = self.cfg.joint, batch["video"]
        rec = self.reconstruction(video, rng, step, disc)
        if (
            self.training
        ):  # the encoder moves, so the normalisation follows it (like BatchNorm's running stats)
            mean, std = _channel_stats(rec["mean"].detach())
            self.vae.latent_mean.lerp_(mean, 1 - j.stats_momentum)
            self.vae.latent_std.lerp_(std, 1 - j.stats_momentum)
        latents = self.vae.normalize(rec["mean"])
        s = j.flow_to_encoder
        flow_in = latents * s + latents.detach() * (1 - s) if s > 0 else latents.detach()
        keyframes = _draw_keyframes(rng, batch, self.vae, self.dit, self.cfg.flow, latents)
        flow = self.flow(flow_in, batch["text_emb"], batch["text_mask"], rng, keyframes)
        dec = self.denoising_decode(latents.detach(), video, rng)
        loss = j.vae * rec["total"] + j.decoder * dec["total"] + j.flow * flow["total"]
        return {
            "loss": loss,
            "loss_vae": rec["total"].detach(),
            "loss_decoder": dec["total"].detach(),
            "loss_flow": flow["total"].detach(),
            "recon": rec["recon"],
            "t": flow["t"],
            "per_sample": flow["per_sample"],
        }


STAGES: dict[str, type[Stage]] = {
    "vae": VAEStage,
    "decoder": DecoderStage,
    "dit": DiTStage,
    "joint": JointStage,
    "lora": DiTStage,
    "distill": DistillStage,
}


def trainable_modules(stage: Stage) -> list[nn.Module]:
    """What each stage optimises (the rest stays frozen); LoRA adapters mark themselves trainable."""
    name = stage.cfg.stage
    if name == "vae":
        return [stage.vae]
    if name == "decoder":
        return [stage.vae.decoder]
    if name in TRANSFORMER_STAGES:
        return [stage.dit]
    return [stage.vae, stage.dit]


@torch.no_grad()
def init_vae_for_training(vae: VideoVAE, log_std: float = -3.0) -> None:
    """Fresh VAEs only: start the posterior narrow (log σ = log_std via the log-variance bias, zero weights
    on that output). With the default init σ ≈ 1 swamps latent means of std ≈ 0.3, the decoder learns to
    ignore z, and the reconstruction sits at the mean image for hundreds of steps before it escapes."""
    conv = vae.encoder.conv_out.conv
    c = vae.cfg.latent_channels
    conv.weight[c:].zero_()
    conv.bias[c:].fill_(2 * log_std)


def _channel_stats(*latents: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over latents (B, C, F', H', W') of any sizes (batches of a bucketed dataset
    differ in frames) -> (C,), (C,)."""
    flat = torch.cat([z.transpose(0, 1).flatten(1) for z in latents], dim=1).double()  # (C, ΣB·F'·H'·W')
    return flat.mean(1).float(), flat.std(1).clamp(min=1e-4).float()


@torch.no_grad()
def latent_statistics(vae: VideoVAE, videos: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of the posterior means over `videos` (batches of any frame counts), for the
    VAE's normalisation buffers (the DiT then sees latents of about zero mean and unit variance per
    channel)."""
    return _channel_stats(*(vae.encode_moments(v)[0] for v in videos))
