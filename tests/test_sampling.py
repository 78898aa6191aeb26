"""Tests for ltxv.sampling: spec schedule values, exact Euler on analytic fields, and guidance formulas."""

import dataclasses
import math

import pytest
import torch

from ltxv.config import SampleConfig
from ltxv.flow import interpolate, shift_mu
from ltxv.sampling import (
    DISTILLED_SCHEDULES,
    cfg_star_scale,
    euler_sample,
    euler_step,
    guidance_at,
    guidance_settings,
    guided_velocity,
    linear_quadratic_schedule,
    next_t,
    sd3_schedule,
    stochastic_euler_step,
    validate_schedule,
)

SD3_20_6144 = [
    1.0,
    0.9946,
    0.9886,
    0.982,
    0.9746,
    0.9664,
    0.957,
    0.9463,
    0.934,
    0.9198,
    0.903,
    0.8829,
    0.8586,
    0.8284,
    0.7899,
    0.7393,
    0.6696,
    0.5677,
    0.4043,
    0.1,
]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sd3_schedule_matches_spec_examples():
    assert sd3_schedule(20, 6144) == pytest.approx(SD3_20_6144, abs=1e-4)
    ts = sd3_schedule(40, 5280)
    assert len(ts) == 40
    assert ts[:3] == pytest.approx([1.0, 0.9975, 0.9948], abs=1e-4)
    assert ts[-4:] == pytest.approx([0.4937, 0.4018, 0.2775, 0.1], abs=1e-4)
    validate_schedule(ts)


def test_sd3_schedule_without_terminal_is_plain_shift():
    ts = sd3_schedule(4, 1024, terminal=None)  # μ = 0.95
    assert ts[0] == 1.0 and ts[-1] > 0.1
    assert sd3_schedule(4, 1024)[-1] == pytest.approx(0.1)


def _sd3_exponential_form(steps: int, tokens: int, terminal: float | None) -> list[float]:
    """The spec §5.4a formula as written (e^μ; overflows at huge token counts)."""
    mu = shift_mu(tokens)
    ts = [math.exp(mu) / (math.exp(mu) + (1 / b - 1)) for b in (1 - i / steps for i in range(steps))]
    if terminal is not None and steps > 1:
        ts = [1 - (1 - s) * (1 - terminal) / (1 - ts[-1]) for s in ts]
    return ts


@pytest.mark.parametrize("terminal", [0.1, None])
def test_sd3_schedule_is_the_spec_formula_in_float32(terminal):
    for steps in (1, 2, 7, 20, 40):
        for tokens in (1, 256, 1024, 6144, 5280, 24 * 16 * 16, 30_000):
            ours = torch.tensor(sd3_schedule(steps, tokens, terminal), dtype=torch.float32)
            spec = torch.tensor(_sd3_exponential_form(steps, tokens, terminal), dtype=torch.float32)
            assert torch.equal(ours, spec), (steps, tokens)


@pytest.mark.parametrize("tokens", [112 * 1024, 129 * 256 * 256, 10**12])  # ~1920x1088x1025, 8192²x1025
def test_sd3_schedule_at_huge_token_counts_is_finite_and_decreasing(tokens):
    ts = sd3_schedule(8, tokens)  # e^μ overflowed, and 1 − s_last rounded to 0 (division by zero)
    validate_schedule(ts)
    assert ts[0] == 1.0 and ts[-1] == pytest.approx(0.1)
    assert sd3_schedule(1, tokens) == [1.0]
    assert all(math.isfinite(t) for t in sd3_schedule(8, tokens, terminal=None))


def test_linear_quadratic_schedule_matches_spec():
    assert linear_quadratic_schedule(8) == pytest.approx(
        [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875], abs=1e-12
    )
    ts = linear_quadratic_schedule(40)
    assert ts[:21] == pytest.approx([1 - i * 0.025 / 20 for i in range(21)], abs=1e-12)
    assert ts[-1] == pytest.approx(0.0939, abs=1e-4)
    assert ts[-2] == pytest.approx(0.183, abs=1e-3)
    assert linear_quadratic_schedule(1) == [1.0]
    validate_schedule(ts)


def test_distilled_schedules_are_the_linear_quadratic_values():
    assert DISTILLED_SCHEDULES["distilled-pass1"] == pytest.approx(linear_quadratic_schedule(8)[:7], abs=1e-4)
    assert DISTILLED_SCHEDULES["distilled-pass2"] == pytest.approx(linear_quadratic_schedule(8)[5:], abs=1e-4)


@pytest.mark.parametrize("ts", [[], [1.0, 1.0], [0.5, 0.9], [1.2, 0.5], [1.0, 0.0], [1.0, float("nan")]])
def test_validate_schedule_rejects_bad_schedules(ts):
    with pytest.raises(ValueError):
        validate_schedule(ts)


def test_validate_schedule_names_offending_values():
    with pytest.raises(ValueError, match=r"\(0\.5, 0\.7\)"):
        validate_schedule([1.0, 0.5, 0.7])


def test_next_t_scalar_and_per_token():
    ts = [1.0, 0.5, 0.25]
    assert [next_t(ts, t) for t in (1.0, 0.5, 0.25, 0.3, 0.0)] == [0.5, 0.25, 0.0, 0.25, 0.0]
    t = torch.tensor([[1.0, 0.0, 0.5], [0.25, 0.7, 0.0]])
    torch.testing.assert_close(next_t(ts, t), torch.tensor([[0.5, 0.0, 0.25], [0.0, 0.5, 0.0]]))


def test_per_token_euler_step_keeps_clean_tokens_fixed():
    x, v = _randn(1, 4, 3), _randn(1, 4, 3, seed=1)
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # tokens 0 and 3: clean conditioning
    x_new = euler_step(x, v, t, next_t([1.0, 0.6], t))
    torch.testing.assert_close(x_new[:, [0, 3]], x[:, [0, 3]])
    torch.testing.assert_close(x_new[:, [1, 2]], x[:, [1, 2]] - 0.4 * v[:, [1, 2]])


def test_euler_exact_for_constant_velocity():
    x0, noise = _randn(2, 4, 3, 6, 6), _randn(2, 4, 3, 6, 6, seed=1)
    v = noise - x0
    out = euler_sample(lambda x, t: v, noise.clone(), linear_quadratic_schedule(8))
    torch.testing.assert_close(out, noise - v)
    torch.testing.assert_close(out, x0)


@pytest.mark.parametrize("ts", [[1.0], sd3_schedule(7, 3000), linear_quadratic_schedule(9), [0.9094, 0.725]])
def test_euler_recovers_x0_on_ideal_field(ts):
    x0, noise = _randn(2, 16, 8), _randn(2, 16, 8, seed=1)
    seen = []

    def velocity_fn(x: torch.Tensor, t: float) -> torch.Tensor:
        assert isinstance(t, float)
        return (x - x0) / t  # ideal field for a single data point: v = (x_t − x0)/t

    out = euler_sample(
        velocity_fn, interpolate(x0, noise, ts[0]), ts, callback=lambda i, t, x: seen.append(i)
    )
    torch.testing.assert_close(out, x0)
    assert seen == list(range(len(ts)))


def test_stochastic_step_to_zero_returns_x0_and_sampler_is_seeded():
    x0, noise = _randn(2, 5, 3), _randn(2, 5, 3, seed=1)
    xt = interpolate(x0, noise, 0.6)
    torch.testing.assert_close(stochastic_euler_step(xt, noise - x0, 0.6, 0.0, _randn(2, 5, 3, seed=2)), x0)
    fresh = _randn(2, 5, 3, seed=3)
    torch.testing.assert_close(stochastic_euler_step(xt, noise - x0, 0.6, 0.3, fresh), 0.7 * x0 + 0.3 * fresh)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return euler_sample(lambda x, t: x * 0.1, noise.clone(), [1.0, 0.5], stochastic=True, generator=gen)

    torch.testing.assert_close(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def test_guided_velocity_cfg_one_is_cond():
    v_c, v_u = _randn(2, 3, 4), _randn(2, 3, 4, seed=1)
    assert guided_velocity(v_c, v_u, cfg=1.0) is v_c
    assert guided_velocity(v_c) is v_c


def test_guided_velocity_cfg_stg_formula():
    v_c, v_u, v_p = _randn(2, 3, 4), _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    torch.testing.assert_close(guided_velocity(v_c, v_u, cfg=3.0), v_u + 3.0 * (v_c - v_u))
    expected = v_u + 3.0 * (v_c - v_u) + 1.5 * (v_c - v_p)
    torch.testing.assert_close(guided_velocity(v_c, v_u, v_p, cfg=3.0, stg=1.5, rescale=0.0), expected)
    # r = 1 is skipped by the native `rescaling_scale != 1.0` guard, exactly like r = 0
    torch.testing.assert_close(guided_velocity(v_c, v_u, v_p, cfg=3.0, stg=1.5, rescale=1.0), expected)
    torch.testing.assert_close(guided_velocity(v_c, None, v_p, stg=2.0), v_c + 2.0 * (v_c - v_p))


def test_guided_velocity_rescale_by_hand():
    v_c, v_u, v_p = _randn(2, 3, 4), _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    v = v_u + 3.0 * (v_c - v_u) + 1.0 * (v_c - v_p)
    out = guided_velocity(v_c, v_u, v_p, cfg=3.0, stg=1.0, rescale=0.7)
    for b in range(2):
        k = v_c[b].std() / v[b].std()
        torch.testing.assert_close(out[b], v[b] * (0.7 * k + 0.3))
    assert not torch.allclose(out, v)


def test_cfg_star_by_hand():
    v_c, v_u = _randn(2, 3, 4), _randn(2, 3, 4, seed=1)
    alpha = cfg_star_scale(v_c, v_u)
    assert alpha.shape == (2, 1, 1)
    for b in range(2):
        torch.testing.assert_close(alpha[b, 0, 0], (v_c[b] * v_u[b]).sum() / (v_u[b].square().sum() + 1e-8))
    torch.testing.assert_close(cfg_star_scale(v_u, v_u), torch.ones(2, 1, 1, dtype=torch.float64))
    out = guided_velocity(v_c, v_u, cfg=4.0, cfg_star=True)
    torch.testing.assert_close(out, alpha * v_u + 4.0 * (v_c - alpha * v_u))


def test_guided_velocity_missing_inputs_raise():
    v_c = _randn(1, 2, 3)
    with pytest.raises(ValueError, match="v_uncond"):
        guided_velocity(v_c, cfg=3.0)
    with pytest.raises(ValueError, match="v_perturbed"):
        guided_velocity(v_c, stg=1.0)


def test_guidance_at_selects_first_timestep_below_t():
    g_ts = [1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180]  # 13B dev config, spec §5.6
    cfg = [1, 1, 6, 8, 6, 1, 1]
    assert guidance_at(g_ts, cfg, 1.0) == 1
    assert guidance_at(g_ts, cfg, 0.995) == 6
    assert guidance_at(g_ts, cfg, 0.9850) == 8
    assert guidance_at(g_ts, cfg, 0.98) == 6
    assert guidance_at(g_ts, cfg, 0.95) == 1
    assert guidance_at(g_ts, [0, 0, 4, 4, 4, 2, 1], 0.5) == 1  # below all guidance timesteps: last value
    assert guidance_at(g_ts, [[], [11, 25], [22], [28], [28], [28], [28]], 0.998) == [11, 25]
    with pytest.raises(ValueError, match="same length"):
        guidance_at(g_ts, cfg[:-1], 0.5)


def test_guidance_settings_constant_or_per_step():
    plain = SampleConfig(guidance=3.0, stg=1.0, rescale=0.7, stg_blocks=(2,))
    assert guidance_settings(plain, 0.5) == (3.0, 1.0, 0.7, (2,))
    # a per-step schedule for CFG and STG blocks only: the other two keep their constant values
    stepped = SampleConfig(
        guidance=3.0,
        stg=1.0,
        rescale=0.7,
        stg_blocks=(2,),
        guidance_timesteps=(1.0, 0.9),
        guidance_schedule=(1.0, 6.0),
        stg_blocks_schedule=((0,), (1, 3)),
    )
    assert guidance_settings(stepped, 1.0) == (1.0, 1.0, 0.7, (0,))  # value i from guidance_timesteps[i] down
    assert guidance_settings(stepped, 0.95) == (6.0, 1.0, 0.7, (1, 3))


def test_guidance_until_turns_guidance_off_below_its_timestep():
    plain = SampleConfig(guidance=3.0, stg=1.0, rescale=0.7, stg_blocks=(2,), guidance_until=0.85)
    assert guidance_settings(plain, 1.0) == (3.0, 1.0, 0.7, (2,))
    assert guidance_settings(plain, 0.85) == (3.0, 1.0, 0.7, (2,))  # inclusive
    assert guidance_settings(plain, 0.84) == (1.0, 0.0, 0.7, (2,))  # CFG 1 and STG 0: the cond branch alone
    stepped = dataclasses.replace(
        plain, guidance_timesteps=(1.0, 0.9), guidance_schedule=(1.0, 6.0), guidance_until=0.5
    )  # on top of a per-step schedule
    assert guidance_settings(stepped, 0.6)[:2] == (6.0, 1.0)
    assert guidance_settings(stepped, 0.4)[:2] == (1.0, 0.0)
    assert guidance_settings(stepped, 0.4, keyframes=True)[:2] == (6.0, 1.0)  # keyframe guidance: every step
