"""Rectified-flow training math: interpolation, velocity target, timestep sampling, masked loss, the
step-distillation target."""

import math
from collections.abc import Callable

import torch
from torch import Tensor

SAMPLE_T_MODES = ("shifted_logit_normal", "logit_normal", "uniform")
_T_EPS = 1e-5  # sampled t stays strictly inside (0, 1)


def broadcast_t(t: float | Tensor, x: Tensor) -> Tensor:
    """Right-pad t with singleton dims so it broadcasts against x.

    t may be a scalar, (B,) for any x, or per-token (B, N) for tokens x (B, N, C). A python float becomes
    float64 for float64 x and float32 otherwise (never bf16: 0.9937 would round to 0.9922); a float tensor
    keeps its dtype. Callers cast their result back to x.dtype.
    """
    if not isinstance(t, Tensor):
        t = torch.tensor(t, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    elif not t.is_floating_point():
        t = t.float()
    t = t.to(x.device)
    if t.ndim > x.ndim or any(n not in (1, m) for n, m in zip(t.shape, x.shape, strict=False)):
        raise ValueError(
            f"t of shape {tuple(t.shape)} cannot broadcast against x of shape {tuple(x.shape)}; "
            f"pass a scalar, (B,) = ({x.shape[0]},), or per-token t matching x's leading dims."
        )
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def interpolate(x0: Tensor, noise: Tensor, t: float | Tensor) -> Tensor:
    """x_t = (1 − t)·x0 + t·ε (spec §5.1; t=1 is pure noise, t=0 is data)."""
    tb = broadcast_t(t, x0)
    return ((1 - tb) * x0 + tb * noise).to(x0.dtype)


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """Training target v = ε − x0 = dx_t/dt (spec §5.1, [TRAIN] `targets = noise - target_latents`)."""
    return noise - x0


def x0_from_velocity(xt: Tensor, velocity: Tensor, t: float | Tensor) -> Tensor:
    """Clean estimate x0 = x_t − t·v, the inverse of `interpolate` given the true velocity (spec §5.1)."""
    return (xt - broadcast_t(t, xt) * velocity).to(xt.dtype)


def shift_mu(
    num_tokens: int,
    base_tokens: int = 1024,
    max_tokens: int = 4096,
    base_shift: float = 0.95,
    max_shift: float = 2.05,
) -> float:
    """Resolution-dependent shift μ(N), linear in the token count and extrapolated (spec §5.2, §5.4a).

    μ = base_shift + (max_shift − base_shift)·(N − base_tokens)/(max_tokens − base_tokens). The LTX values
    (1024/4096/0.95/2.05) differ from diffusers' `calculate_shift` defaults (spec §9.16).
    """
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (num_tokens - base_tokens)


def time_shift(mu: float, t: float | Tensor, sigma: float = 1.0) -> float | Tensor:
    """SD3 resolution shift (Esser et al. 2024) in flux's form: e^μ / (e^μ + (1/t − 1)^σ), t in (0, 1].

    Spec §5.4a uses σ = 1; μ = 0 is the identity and μ > 0 moves t toward noise. Computed as the equal
    sigmoid(z), z = μ + σ·logit(t), so that no e^μ is formed: any μ (huge at huge token counts) is finite.
    """
    if isinstance(t, Tensor):
        return torch.sigmoid(mu + sigma * torch.logit(t))
    return _sigmoid(mu + sigma * _logit(t))


def log_one_minus_time_shift(mu: float, t: float, sigma: float = 1.0) -> float:
    """log(1 − time_shift(μ, t)) = −softplus(z), z = μ + σ·logit(t): exact where 1 − time_shift rounds to 0
    (the SD3 terminal stretch divides by it); −inf at t = 1."""
    z = mu + sigma * _logit(t)
    return -(max(z, 0.0) + math.log1p(math.exp(-abs(z)))) if z != math.inf else -math.inf


def _logit(t: float) -> float:
    """log(t / (1 − t)) for t in (0, 1]; +inf at t = 1."""
    if not 0 < t <= 1:
        raise ValueError(f"time_shift needs t in (0, 1], got {t}")
    return math.inf if t == 1 else math.log(t / (1 - t))


def _sigmoid(z: float) -> float:
    """1 / (1 + e^−z) without overflow for any z (including ±inf)."""
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


def sample_t(
    batch_size: int,
    num_tokens: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    mode: str = "shifted_logit_normal",
    std: float = 1.0,
    mu: float | None = None,
) -> Tensor:
    """Training timesteps t (B,) in (0, 1) ([TRAIN] `ShiftedLogitNormalTimestepSampler`, spec §5.2).

    "shifted_logit_normal": t = sigmoid(μ + std·n), n ~ N(0, 1), μ = `mu`, or `shift_mu(num_tokens)` when
    None; "logit_normal": the same with μ = 0; "uniform": t ~ U(0, 1). Clamped to [1e-5, 1 − 1e-5].
    """
    if mode not in SAMPLE_T_MODES:
        raise ValueError(f"unknown timestep sampling mode {mode!r}; choose one of {SAMPLE_T_MODES}.")
    if mode == "uniform":
        t = torch.rand(batch_size, generator=generator, device=device)
    else:
        if mode == "logit_normal":
            mu = 0.0
        elif mu is None:
            mu = shift_mu(num_tokens)
        t = torch.sigmoid(mu + std * torch.randn(batch_size, generator=generator, device=device))
    return t.clamp(_T_EPS, 1 - _T_EPS)


def _token_loss(velocity: Tensor, target: Tensor) -> Tensor:
    """Squared error averaged over the channel dim, in float32: (B, N, C) -> (B, N)."""
    return (velocity.float() - target.float()).square().mean(-1)


def flow_loss(velocity: Tensor, target: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """MSE between predicted and target velocity (spec §5.1), a float32 scalar.

    With a per-token mask (B, N) (1 = counts) on tokens (B, N, C), the mean over counted tokens:
    sum(mean_C((v − target)²)·mask) / max(sum(mask), 1). The official trainer masks out the clean
    first-frame conditioning tokens this way (`loss * mask / mean(mask)`, which is the same quantity).
    """
    if loss_mask is None:
        return (velocity.float() - target.float()).square().mean()
    mask = loss_mask.float()  # (B, N)
    return (_token_loss(velocity, target) * mask).sum() / mask.sum().clamp(min=1.0)


def per_sample_loss(velocity: Tensor, target: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """Each sample's mean squared velocity error, float32 (B,); with a (B, N) mask on tokens (B, N, C),
    averaged over its counted tokens only (as in `flow_loss`). A float mask weights the tokens: the
    weighted mean sum(w·err) / sum(w)."""
    if loss_mask is None:
        return (velocity.float() - target.float()).square().flatten(1).mean(1)
    mask = loss_mask.float()  # (B, N)
    return (_token_loss(velocity, target) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def foreground_token_weights(latents: Tensor, weight: float, threshold: float = 1.0) -> Tensor:
    """Per-token loss weights (B, F·H·W), in token order (f h w), for latents (B, C, F, H, W): 1 + weight
    where a token is unlike its latent frame's median token (the mean over channels of the squared
    difference from the per-channel median exceeds `threshold`), else 1. On plain backgrounds these are the
    tokens that hold the object, which otherwise carry a small share of the loss: the flow loss's
    counterpart of the VAE's foreground pixel weight."""
    tokens = latents.float().flatten(3)  # (B, C, F, H·W)
    median = tokens.median(dim=3, keepdim=True).values  # (B, C, F, 1)
    distance = (tokens - median).square().mean(1)  # (B, F, H·W)
    return (1 + weight * (distance > threshold).float()).flatten(1)


def loss_per_t_bin(
    velocity: Tensor, target: Tensor, t: Tensor, num_bins: int = 4, loss_mask: Tensor | None = None
) -> dict[str, float]:
    """Mean per-sample loss grouped by t range, for logging (minRF `rf.py` style).

    t is (B,); keys look like "loss_t0.00-0.25". Bins with no sample are left out. With a (B, N) mask on
    tokens (B, N, C), each sample's loss averages only its counted tokens, as in `flow_loss`.
    """
    if t.ndim != 1 or t.shape[0] != velocity.shape[0]:
        raise ValueError(f"t must be per-sample with shape ({velocity.shape[0]},), got {tuple(t.shape)}.")
    return mean_by_t_bin(per_sample_loss(velocity, target, loss_mask), t, num_bins)


def mean_by_t_bin(values: Tensor, t: Tensor, num_bins: int = 4) -> dict[str, float]:
    """Mean of per-sample `values` (B,) grouped into `num_bins` equal t ranges; keys "loss_t0.00-0.25"."""
    bins = (t.float() * num_bins).long().clamp(0, num_bins - 1).cpu()  # (B,)
    values = values.detach().float().cpu()
    return {
        f"loss_t{b / num_bins:.2f}-{(b + 1) / num_bins:.2f}": values[bins == b].mean().item()
        for b in bins.unique().tolist()
    }


def teacher_velocity(
    x: Tensor, t: Tensor, t_next: Tensor, velocity: Callable[[Tensor, Tensor], Tensor], substeps: int
) -> Tensor:
    """The constant velocity that moves tokens x (B, N, C) from t to t_next (per token, (B, N)) as `substeps`
    equal Euler steps of `velocity(x, t)` do: their mean, (x_end − x) / (t_next − t). Tokens with
    t_next == t (clean conditioning) stay where they are; their entry is the mean of what `velocity` said.
    Step distillation's target: one student step of this velocity lands where the teacher's steps did."""
    total = torch.zeros_like(x, dtype=torch.float32)
    for j in range(substeps):
        a = t + (t_next - t) * (j / substeps)
        b = t + (t_next - t) * ((j + 1) / substeps)
        v = velocity(x, a).float()
        x = (x + (b - a)[..., None] * v).to(x.dtype)
        total += v
    return total / substeps
