"""Inference schedules, Euler steps over a velocity field, and CFG/STG guidance as pure functions."""

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import TypeVar

import torch
from torch import Tensor

from ltxv.config import SampleConfig, SchedulerConfig, validate_schedule
from ltxv.flow import broadcast_t, log_one_minus_time_shift, shift_mu, time_shift

T = TypeVar("T")
VelocityFn = Callable[[Tensor, float], Tensor]
_T_EPS = 1e-6  # native `RectifiedFlowScheduler.step` tolerance when looking up t_next

# Fixed schedules of the 0.9.7 / 0.9.8 distilled multiscale configs (spec §5.4c).
DISTILLED_SCHEDULES: dict[str, list[float]] = {
    "distilled-pass1": [1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250],
    "distilled-pass2": [0.9094, 0.7250, 0.4219],
}


def sd3_schedule(
    num_steps: int,
    num_tokens: int,
    terminal: float | None = 0.1,
    base_shift: float = 0.95,
    max_shift: float = 2.05,
    base_tokens: int = 1024,
    max_tokens: int = 4096,
) -> list[float]:
    """0.9.0/0.9.1 schedule: SD3 resolution shift of linspace(1, 1/S, S), stretched to end at `terminal`.

    Spec §5.4a: s_i = time_shift(μ(m), base_i), then s ← 1 − (1 − s)·(1 − terminal)/(1 − s_last).
    Returns S descending values starting at 1.0; sampling takes a final Euler step from s_last to 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    mu = shift_mu(num_tokens, base_tokens, max_tokens, base_shift, max_shift)
    base = [1 - i / num_steps for i in range(num_steps)]  # linspace(1, 1/S, S)
    if terminal is None or num_steps == 1:
        return [time_shift(mu, b) for b in base]
    # (1 − s_i) / (1 − s_last) in log space: at huge μ every 1 − s rounds to 0, the ratio stays finite
    log_rest = [log_one_minus_time_shift(mu, b) for b in base]
    return [1 - (1 - terminal) * math.exp(lr - log_rest[-1]) for lr in log_rest]


def linear_quadratic_schedule(
    num_steps: int, threshold: float = 0.025, linear_steps: int | None = None
) -> list[float]:
    """0.9.5+ schedule: L linear steps down to 1 − τ, then a quadratic reaching σ' = 1 at i = S (spec §5.4b).

    σ'_i = i·τ/L for i < L, else a·i² + b·i + c with d = L − τS, a = d/(L·Q²), b = τ/L − 2d/Q², c = a·L²
    (Q = S − L), so σ' is continuous with matching slope at i = L. Returns [1 − σ'_i for i < S].
    """
    if num_steps == 1:
        return [1.0]
    n_lin = num_steps // 2 if linear_steps is None else linear_steps  # L
    if not 1 <= n_lin < num_steps:
        raise ValueError(f"linear_steps must be in [1, {num_steps - 1}] for {num_steps} steps, got {n_lin}.")
    n_quad, tau = num_steps - n_lin, threshold  # Q, τ
    d = n_lin - tau * num_steps
    a = d / (n_lin * n_quad**2)
    b = tau / n_lin - 2 * d / n_quad**2
    c = a * n_lin**2
    sigmas = [i * tau / n_lin if i < n_lin else a * i**2 + b * i + c for i in range(num_steps)]
    return [1 - s for s in sigmas]


def schedule(sched: SchedulerConfig, cfg: SampleConfig, num_tokens: int) -> list[float]:
    """The timesteps one generation runs at `num_tokens` latent tokens: `cfg.timesteps` > the checkpoint's
    fixed list > SD3 shift (0.9.0/0.9.1) or linear-quadratic (0.9.5+); then `skip_initial_steps` /
    `skip_final_steps` are dropped (official semantics). float32 values, as the official scheduler holds."""
    if cfg.timesteps or sched.timesteps:
        ts = validate_schedule(list(cfg.timesteps or sched.timesteps))
    elif sched.kind == "sd3":
        ts = sd3_schedule(cfg.steps, num_tokens, terminal=sched.shift_terminal)
    else:
        ts = linear_quadratic_schedule(cfg.steps)
    kept = ts[cfg.skip_initial_steps : len(ts) - cfg.skip_final_steps]
    if not kept:
        raise ValueError(
            f"skipping {cfg.skip_initial_steps}+{cfg.skip_final_steps} of {len(ts)} steps leaves none"
        )
    kept = torch.tensor(kept, dtype=torch.float32).tolist()
    repeated = sorted({a for a, b in pairwise(kept) if b >= a})
    if repeated:  # e.g. the SD3 shift at a huge token count puts every step at t = 1.0
        raise ValueError(
            f"{cfg.steps} steps at {num_tokens} latent tokens give repeated timesteps {repeated[:3]} in "
            "float32 (the resolution shift leaves no room): use a smaller size, fewer frames or steps, "
            "or explicit timesteps (--timesteps)"
        )
    return kept


def next_t(ts: Sequence[float], t: float | Tensor) -> float | Tensor:
    """Largest schedule value < t − 1e-6, or 0 (native `RectifiedFlowScheduler.step`, spec §5.3).

    ts is descending and implicitly followed by 0. t is a float or a tensor (e.g. per-token (B, N));
    tokens already at t = 0 (clean conditioning) get t_next = 0, so their Euler step is zero.
    """
    if not isinstance(t, Tensor):
        return max((s for s in ts if s < t - _T_EPS), default=0.0)
    dtype = torch.promote_types(t.dtype, torch.float32)  # compare bf16 t against fp32 schedule values
    grid = torch.tensor(list(ts), dtype=dtype, device=t.device)  # (K,)
    below = grid < t.to(dtype).unsqueeze(-1) - _T_EPS  # (..., K)
    return torch.where(below, grid, torch.zeros_like(grid)).amax(-1)  # (...)


def euler_step(x: Tensor, velocity: Tensor, t: float | Tensor, t_next: float | Tensor) -> Tensor:
    """x ← x + (t_next − t)·v, integrating dx/dt = v (spec §5.3).

    t, t_next: scalar, (B,), or per-token (B, N) for tokens x (B, N, C); the result keeps x's dtype.
    """
    dt = broadcast_t(t_next, x) - broadcast_t(t, x)
    return (x + dt * velocity).to(x.dtype)


def stochastic_euler_step(
    x: Tensor, velocity: Tensor, t: float | Tensor, t_next: float | Tensor, noise: Tensor
) -> Tensor:
    """x0 = x − t·v, then re-noise to t_next with fresh ε: (1 − t_next)·x0 + t_next·ε (native
    `stochastic_sampling`, spec §5.3)."""
    t_next = broadcast_t(t_next, x)
    x0 = x - broadcast_t(t, x) * velocity
    return ((1 - t_next) * x0 + t_next * noise).to(x.dtype)


def euler_sample(
    velocity_fn: VelocityFn,
    x: Tensor,
    ts: Sequence[float],
    stochastic: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[int, float, Tensor], None] | None = None,
) -> Tensor:
    """Integrate from ts[0] through ts and then to t = 0 with (stochastic) Euler steps (spec §5.3).

    velocity_fn(x, t) gets a python float t. callback(step_index, t, x) sees x after each step.
    Guidance and conditioning tokens are handled inside velocity_fn or by calling the step functions.
    """
    ts = validate_schedule(ts)
    for i, t in enumerate(ts):
        velocity = velocity_fn(x, t)
        t_next = next_t(ts, t)
        if stochastic:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = stochastic_euler_step(x, velocity, t, t_next, noise)
        else:
            x = euler_step(x, velocity, t, t_next)
        if callback is not None:
            callback(i, t, x)
    return x


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcasting against `like`."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def cfg_star_scale(v_cond: Tensor, v_uncond: Tensor) -> Tensor:
    """CFG-Zero* projection α = ⟨v_c, v_u⟩ / (‖v_u‖² + 1e-8) per sample, shaped (B, 1, ..., 1) (spec §5.5)."""
    dot = (v_cond * v_uncond).flatten(1).sum(1)  # (B,)
    norm_sq = v_uncond.square().flatten(1).sum(1) + 1e-8  # (B,)
    return _per_sample(dot / norm_sq, v_uncond)


def guided_velocity(
    v_cond: Tensor,
    v_uncond: Tensor | None = None,
    v_perturbed: Tensor | None = None,
    cfg: float = 1.0,
    stg: float = 0.0,
    rescale: float = 0.0,
    cfg_star: bool = False,
) -> Tensor:
    """Combine conditional, unconditional and STG-perturbed velocities (native `__call__`, spec §5.5).

    v = v_u + cfg·(v_c − v_u) if cfg > 1 (v_u ← α·v_u first when cfg_star), else v_c;
    v += stg·(v_c − v_p) if stg > 0; then, if stg > 0 and r ≠ 1, v ← v·(r·k + 1 − r), k = std(v_c)/std(v)
    per sample over all non-batch dims. Note the native guard `rescaling_scale != 1.0`: r = 1 does NOT
    rescale fully, it skips rescaling, exactly like r = 0 — kept for parity (13B dev configs use r = 1 with
    stg > 0). All tensors are (B, ...).
    """
    v = v_cond
    if cfg > 1:
        if v_uncond is None:
            raise ValueError(f"cfg={cfg} > 1 needs v_uncond; pass it or set cfg=1 to disable CFG.")
        if cfg_star:
            v_uncond = cfg_star_scale(v_cond, v_uncond) * v_uncond
        v = v_uncond + cfg * (v_cond - v_uncond)
    if stg > 0:
        if v_perturbed is None:
            raise ValueError(f"stg={stg} > 0 needs v_perturbed; pass it or set stg=0 to disable STG.")
        v = v + stg * (v_cond - v_perturbed)
        if rescale != 1:
            k = v_cond.flatten(1).std(1) / v.flatten(1).std(1)  # (B,)
            v = v * _per_sample(rescale * k + 1 - rescale, v)
    return v


def guidance_at(guidance_timesteps: Sequence[float], values: Sequence[T], t: float) -> T:
    """Per-step guidance value: values[i] for the first i with guidance_timesteps[i] ≤ t (spec §5.5).

    guidance_timesteps is descending; if t is below all of them the last value is used (native fallback).
    """
    if len(guidance_timesteps) != len(values) or not values:
        raise ValueError(
            f"guidance_timesteps ({len(guidance_timesteps)}) and values ({len(values)}) must be non-empty "
            f"and the same length; give one value per guidance timestep."
        )
    index = next((i for i, g in enumerate(guidance_timesteps) if g <= t), len(values) - 1)
    return values[index]


def guidance_settings(
    cfg: SampleConfig, t: float, keyframes: bool = False
) -> tuple[float, float, float, tuple[int, ...]]:
    """(CFG scale, STG scale, rescale, STG blocks) at step time `t`: the per-step schedules where
    `cfg.guidance_timesteps` gives them (`guidance_at`), else the constant values; no guidance (CFG 1, STG 0)
    below `cfg.guidance_until`, unless `keyframes` (keyframes under keyframe guidance, whose CFG pulls the
    video towards them down to the last step: without it there the last frame lands twice as far from a
    given one on the bundled model, MODELS.md)."""
    gt = cfg.guidance_timesteps

    def pick(values: Sequence[T], default: T) -> T:
        return guidance_at(gt, values, t) if gt and values else default

    guided = t >= cfg.guidance_until or keyframes
    return (
        pick(cfg.guidance_schedule, cfg.guidance) if guided else 1.0,
        pick(cfg.stg_schedule, cfg.stg) if guided else 0.0,
        pick(cfg.rescale_schedule, cfg.rescale),
        pick(cfg.stg_blocks_schedule, cfg.stg_blocks),
    )
