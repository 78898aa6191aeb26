"""Tests for ltxv.flow: interpolation endpoints, inverses, timestep sampling and the masked loss."""

import math

import pytest
import torch

from ltxv.flow import (
    broadcast_t,
    flow_loss,
    foreground_token_weights,
    interpolate,
    loss_per_t_bin,
    per_sample_loss,
    sample_t,
    shift_mu,
    teacher_velocity,
    time_shift,
    velocity_target,
    x0_from_velocity,
)


def _pair(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(
        *shape, generator=g, dtype=torch.float64
    )


def test_interpolate_endpoints_are_data_and_noise():
    x0, noise = _pair(2, 4, 3, 5, 5)  # latents (B, C, F, H, W)
    torch.testing.assert_close(interpolate(x0, noise, 0.0), x0)
    torch.testing.assert_close(interpolate(x0, noise, 1.0), noise)
    torch.testing.assert_close(
        interpolate(x0, noise, torch.tensor([0.0, 1.0])), torch.stack([x0[0], noise[1]])
    )


def test_interpolate_per_token_t_broadcasts_over_channels():
    x0, noise = _pair(2, 6, 8)  # tokens (B, N, C)
    t = torch.rand(2, 6, dtype=torch.float64)
    xt = interpolate(x0, noise, t)
    for b in range(2):
        for n in range(6):
            torch.testing.assert_close(xt[b, n], (1 - t[b, n]) * x0[b, n] + t[b, n] * noise[b, n])


def test_broadcast_t_rejects_mismatched_shape():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        broadcast_t(torch.rand(3), torch.zeros(2, 6, 8))


def test_x0_from_velocity_inverts_interpolate():
    x0, noise = _pair(3, 10, 4)
    t = torch.tensor([0.1, 0.5, 0.97], dtype=torch.float64)
    xt = interpolate(x0, noise, t)
    v = velocity_target(x0, noise)
    torch.testing.assert_close(v, noise - x0)
    torch.testing.assert_close(x0_from_velocity(xt, v, t), x0)


def test_shift_mu_hits_anchors_and_extrapolates():
    assert shift_mu(1024) == pytest.approx(0.95)
    assert shift_mu(4096) == pytest.approx(2.05)
    assert shift_mu(6144) == pytest.approx(2.7833, abs=1e-4)  # spec §5.4a example
    assert time_shift(0.0, 0.3) == pytest.approx(0.3)  # μ = 0 is the identity
    assert time_shift(1.0, 0.3) > 0.3


def test_sample_t_is_inside_unit_interval_and_shifts_with_tokens():
    for mode in ("shifted_logit_normal", "logit_normal", "uniform"):
        t = sample_t(4096, 1024, generator=torch.Generator().manual_seed(0), mode=mode)
        assert t.shape == (4096,)
        assert bool(((t > 0) & (t < 1)).all()), mode
    saturated = sample_t(4096, 1024, generator=torch.Generator().manual_seed(0), std=100.0)
    assert bool(((saturated >= 1e-5) & (saturated <= 1 - 1e-5)).all())  # clamped, never exactly 0 or 1
    small = sample_t(4096, 256, generator=torch.Generator().manual_seed(0))
    large = sample_t(4096, 8192, generator=torch.Generator().manual_seed(0))
    assert large.median() > small.median() + 0.2
    centred = sample_t(4096, 8192, generator=torch.Generator().manual_seed(0), mode="logit_normal")
    assert abs(centred.median().item() - 0.5) < 0.05


def test_sample_t_with_an_explicit_shift():
    """mu replaces the token-count shift: the median of sigmoid(μ + n) is sigmoid(μ) for any token count."""
    g = torch.Generator().manual_seed(0)
    for tokens in (112, 8192):
        t = sample_t(20000, tokens, generator=g, mu=1.5)
        assert abs(t.median().item() - torch.sigmoid(torch.tensor(1.5)).item()) < 0.01
        assert abs((t > 0.9).float().mean().item() - 0.24) < 0.015  # P(n > logit(0.9) − 1.5 = 0.70)
    default = sample_t(20000, 112, generator=torch.Generator().manual_seed(1))
    same = sample_t(20000, 112, generator=torch.Generator().manual_seed(1), mu=shift_mu(112))
    assert torch.equal(default, same)


def test_train_config_t_shift_only_with_the_shifted_sampler():
    from ltxv.config import FlowTrainConfig, TrainConfig

    assert TrainConfig(flow=FlowTrainConfig(t_shift=1.5)).flow.t_shift == 1.5
    with pytest.raises(ValueError, match="t_shift is the μ of shifted_logit_normal, not of 'uniform'"):
        TrainConfig(flow=FlowTrainConfig(t_sampling="uniform", t_shift=1.5))


def test_sample_t_rejects_unknown_mode():
    with pytest.raises(ValueError, match="uniform"):
        sample_t(2, 1024, mode="lognormal")


def test_flow_loss_mask_ignores_masked_tokens():
    v, target = _pair(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    loss = flow_loss(v, target, mask)
    v_changed = v.clone()
    v_changed[mask == 0] += 100.0
    torch.testing.assert_close(flow_loss(v_changed, target, mask), loss)
    assert flow_loss(v_changed, target) > loss + 1.0  # unmasked loss does see the change
    expected = ((v - target) ** 2).mean(-1)[mask == 1].mean().float()
    torch.testing.assert_close(loss, expected)


def test_flow_loss_all_masked_is_zero_not_nan():
    v, target = _pair(1, 4, 3)
    assert flow_loss(v, target, torch.zeros(1, 4)).item() == 0.0


def test_loss_per_t_bin_groups_samples():
    v = torch.zeros(4, 3, 2)
    target = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1).expand(4, 3, 2)  # sample loss = i²
    t = torch.tensor([0.1, 0.2, 0.6, 0.99])
    bins = loss_per_t_bin(v, target, t, num_bins=4)
    assert bins == pytest.approx({"loss_t0.00-0.25": 0.5, "loss_t0.50-0.75": 4.0, "loss_t0.75-1.00": 9.0})


@pytest.mark.parametrize("mu", [0.0, 0.95, 2.05, 5.0, -3.0])
@pytest.mark.parametrize("t", [1.0, 0.9, 0.5, 0.1, 1e-3])
def test_time_shift_equals_the_exponential_form(mu, t):
    expected = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    assert time_shift(mu, t) == pytest.approx(expected, rel=1e-14, abs=1e-300)
    assert time_shift(mu, torch.tensor([t], dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_time_shift_never_overflows():
    mu = shift_mu(129 * 256 * 256)  # 8192 x 8192 x 1025 pixels: μ ≈ 3000, e^μ overflows a float
    assert time_shift(mu, 0.5) == 1.0 and time_shift(-mu, 0.5) == 0.0
    assert math.isfinite(time_shift(mu, 1e-9))


def test_foreground_token_weights_mark_the_tokens_unlike_their_frame():
    """One token per latent frame differs from the plain rest: it alone gets 1 + weight, in (f h w) order."""
    latents = torch.full((2, 4, 3, 2, 5), 0.5)  # (B, C, F, H, W): a plain background
    latents[0, :, 1, 1, 3] += 2.0  # sample 0, frame 1, row 1, column 3: squared distance 4 > 1
    latents[1, :, 2, 0, 0] -= 0.5  # sample 1: squared distance 0.25, under the threshold
    w = foreground_token_weights(latents, 9.0)
    assert w.shape == (2, 3 * 2 * 5)
    expected = torch.ones(2, 30)
    expected[0, 1 * 10 + 1 * 5 + 3] = 10.0
    assert torch.equal(w, expected)
    low = foreground_token_weights(latents, 9.0, threshold=0.1)[1]  # a lower threshold counts sample 1's too
    assert low[2 * 10].item() == 10.0 and (low == 10.0).sum().item() == 1


def test_per_sample_loss_with_float_weights_is_the_weighted_mean():
    v, target = _pair(2, 3, 4)
    err = (v - target).square().mean(-1)  # (B, N)
    w = torch.tensor([[1.0, 3.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    out = per_sample_loss(v, target, w)
    torch.testing.assert_close(out, ((err * w).sum(1) / w.sum(1)).float())
    torch.testing.assert_close(out[1], err[1].mean().float())  # equal weights: the plain mean
    torch.testing.assert_close(per_sample_loss(v, target, w > 0), per_sample_loss(v, target, (w > 0).float()))


def test_teacher_velocity_is_the_mean_velocity_of_the_teacher_steps():
    """The step-distillation target: one Euler step of it lands where `substeps` Euler steps of the
    teacher do; tokens whose t == t_next (clean conditioning) do not move."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=g)
    t = torch.tensor([[0.9] * 5, [0.0] + [0.4] * 4])  # (B, N): sample 1's token 0 is conditioning
    t_next = torch.tensor([[0.6] * 5, [0.0] + [0.1] * 4])
    seen = []

    def velocity(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:  # nonlinear in x and t
        seen.append(x.clone())
        return torch.sin(3 * x) * (1 + tt[..., None])

    target = teacher_velocity(x, t, t_next, velocity, 3)
    end = x.clone()
    for j in range(3):
        a, b = t + (t_next - t) * j / 3, t + (t_next - t) * (j + 1) / 3
        end = end + (b - a)[..., None] * velocity(end, a)
    dt = (t_next - t)[..., None]
    moved = dt != 0
    torch.testing.assert_close(x + dt * target, end)  # the student's one step = the teacher's three
    torch.testing.assert_close(torch.where(moved, (end - x) / dt.where(moved, 1), 0), target * moved)
    assert torch.equal(seen[2][1, 0], x[1, 0])  # the conditioning token never moved
    const = teacher_velocity(x, t, t_next, lambda x, tt: torch.ones_like(x), 4)
    torch.testing.assert_close(const, torch.ones_like(x))
    one = teacher_velocity(x, t, t_next, velocity, 1)
    torch.testing.assert_close(one, velocity(x, t))
