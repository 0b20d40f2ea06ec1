"""Samplers of study A: shapes, determinism by seed, SDEdit start level, evaluations, accuracy."""

import math

import numpy as np
import pytest
import torch

from kneesynth.score.sampling import (
    SAMPLERS,
    CountingScoreFn,
    get_sampler,
    initial_sample,
    karras_sigmas,
)
from kneesynth.score.sde import VESDE

torch.set_num_threads(1)
MU, STD = 0.3, 0.5


def gaussian_score(x, sigma, condition=None):
    """Exact score of N(MU (+ condition), STD^2) data perturbed with noise sigma."""
    mean = MU if condition is None else MU + condition
    return -(x - mean) / (STD**2 + sigma.view(-1, 1, 1, 1) ** 2)


SETTINGS = {
    "pc": {"steps": 40, "snr": 0.16},
    "heun": {"steps": 8},
    "heun_churn": {"steps": 8, "s_churn": 5.0},
}


def run(name, seed, sde=None, start=None, t_start=1.0, condition=None, batch=3, **extra):
    sde = sde or VESDE(0.01, 20.0)
    sampler = get_sampler(name, sde, **{**SETTINGS[name], **extra})
    generator = torch.Generator().manual_seed(seed)
    x = initial_sample(sde, (batch, 1, 8, 8), generator, start=start, t_start=t_start)
    score_fn = CountingScoreFn(gaussian_score, condition)
    return sampler.sample(score_fn, x, t_start, generator), score_fn, sampler


def test_registry_holds_the_samplers():
    assert {"pc", "heun", "heun_churn"} <= set(SAMPLERS)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nope", VESDE())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_shape_and_determinism_by_seed(name):
    a, _, _ = run(name, seed=1)
    b, _, _ = run(name, seed=1)
    c, _, _ = run(name, seed=2)
    assert a.shape == (3, 1, 8, 8)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("t_start", [1.0, 0.4])
def test_number_of_network_evaluations(name, t_start):
    start = torch.zeros(3, 1, 8, 8) if t_start < 1 else None
    _, score_fn, sampler = run(name, seed=0, start=start, t_start=t_start)
    assert score_fn.evaluations == sampler.num_evaluations(t_start)


def test_evaluation_counts_match_the_papers():
    sde = VESDE(0.01, 128.0)
    assert get_sampler("pc", sde, steps=500).num_evaluations() == 1000
    # CSM (SDEdit from t0 = 0.4) runs N steps over [eps, t0] (Algorithm 1 of Mei et al.)
    assert get_sampler("pc", sde, steps=500).num_evaluations(0.4) == 1000
    assert get_sampler("heun", sde, steps=18).num_evaluations() == 35


def test_sdedit_runs_n_steps_from_t0_down_to_eps():
    sde = VESDE(0.01, 10.0)
    sampler = get_sampler("pc", sde, steps=7, snr=0.4, corrector_steps=1, eps=1e-5)
    levels = []

    def score_fn(x, sigma):
        levels.append(float(sigma[0]))
        return -x / sigma.view(-1, 1, 1, 1) ** 2

    sampler.sample(score_fn, torch.zeros(2, 1, 4, 4), 0.4, torch.Generator().manual_seed(0))
    predictor_levels = levels[1::2]  # corrector, then predictor, at every step
    assert len(predictor_levels) == 7
    assert predictor_levels[0] == pytest.approx(float(sde.sigma(0.4)), rel=1e-5)
    assert predictor_levels[-1] == pytest.approx(float(sde.sigma(1e-5)), rel=1e-4)
    times = [math.log(s / 0.01) / math.log(10.0 / 0.01) for s in predictor_levels]
    assert np.allclose(np.diff(times), -(0.4 - 1e-5) / 6, atol=1e-6)


def test_sdedit_start_level_is_sigma_t0():
    sde = VESDE(0.01, 128.0)
    y = torch.rand(64, 1, 32, 32)
    x = initial_sample(sde, y.shape, torch.Generator().manual_seed(0), start=y, t_start=0.4)
    expected = 0.01 * 12800**0.4
    assert float(sde.sigma(0.4)) == pytest.approx(expected, rel=1e-5)
    assert float((x - y).std()) == pytest.approx(expected, rel=0.02)
    prior = initial_sample(sde, y.shape, torch.Generator().manual_seed(0))
    assert float(prior.std()) == pytest.approx(128.0, rel=0.02)


def test_karras_schedule():
    sigmas = karras_sigmas(0.01, 80.0, 18)
    assert sigmas.shape == (19,)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.01)
    assert sigmas[-1] == 0 and torch.all(sigmas[:-1] > sigmas[1:])


@pytest.mark.parametrize(
    "name,extra,tolerance",
    [
        ("heun", {"steps": 30}, 0.03),
        ("pc", {"steps": 300}, 0.08),
        ("heun_churn", {"steps": 30}, 0.08),
    ],
)
def test_samples_follow_a_known_gaussian(name, extra, tolerance):
    """With the exact score of N(MU, STD^2) the samples have that mean and std."""
    x, _, _ = run(name, seed=3, batch=64, **extra)
    assert float(x.mean()) == pytest.approx(MU, abs=tolerance)
    assert float(x.std()) == pytest.approx(STD, abs=tolerance)


def test_condition_reaches_the_score_at_every_step():
    condition = torch.full((64, 1, 8, 8), 2.0)
    x, score_fn, sampler = run("heun", seed=4, batch=64, condition=condition, steps=30)
    assert score_fn.evaluations == sampler.num_evaluations()
    # the probability-flow ODE maps x_T to mu + (x_T - mu) STD / sqrt(STD^2 + sigma_max^2);
    # x_T has mean 0, not mu, hence the small shrinkage of the mean towards 0
    shrink = STD / math.sqrt(STD**2 + 20.0**2)
    assert float(x.mean()) == pytest.approx((MU + 2.0) * (1 - shrink), abs=0.02)


def test_sdedit_stays_near_the_start_image():
    """From t0 with a small sigma(t0) the result stays near the start image y."""
    sde = VESDE(0.01, 20.0)
    y = torch.full((64, 1, 8, 8), 0.3)
    x, _, _ = run("heun", seed=5, sde=sde, start=y, t_start=0.2, batch=64, steps=20)
    sigma0 = float(sde.sigma(0.2))
    assert sigma0 < 0.1
    assert float((x - y).abs().mean()) < 2 * sigma0
    assert not math.isclose(float((x - y).abs().mean()), 0.0)


# --- EDM Heun against the exact probability-flow ODE -------------------------------


def exact_ode_solution(x_start, mean, sigma_start):
    """Probability-flow ODE of N(mean, STD^2) data from sigma_start to 0, per pixel.

    dx/dsigma = -sigma s(x, sigma) = sigma (x - mean) / (STD^2 + sigma^2), so
    x(sigma) - mean is proportional to sqrt(STD^2 + sigma^2).
    """
    return mean + (x_start - mean) * STD / math.sqrt(STD**2 + sigma_start**2)


def heun_error(steps, sde, condition, t_start=1.0, start=None):
    """Relative RMS error of Heun against the exact ODE map, per pixel."""
    generator = torch.Generator().manual_seed(11)
    x = initial_sample(sde, condition.shape, generator, start=start, t_start=t_start)
    score_fn = CountingScoreFn(gaussian_score, condition)
    sampler = get_sampler("heun", sde, steps=steps)
    out = sampler.sample(score_fn, x, t_start, generator)
    exact = exact_ode_solution(x, MU + condition, float(sde.sigma(t_start)))
    assert score_fn.evaluations == 2 * steps - 1
    return float((out - exact).pow(2).mean().sqrt() / (exact - MU - condition).pow(2).mean().sqrt())


@pytest.mark.parametrize("sigma_max", [10.0, 80.0])
def test_heun_solves_the_probability_flow_ode(sigma_max):
    """Each sample, not only the mean and std, lands on the exact ODE solution of its own
    start noise and its own mask at about 35 evaluations; the error falls as 1 / steps^2."""
    sde = VESDE(0.01, sigma_max)
    condition = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(12)) * 2
    errors = {steps: heun_error(steps, sde, condition) for steps in (9, 18, 36)}
    assert errors[18] < 0.05  # 35 evaluations
    assert errors[36] < 0.015
    # second order: halving the step size divides the error by about 4 (Euler: 2)
    assert errors[9] / errors[18] > 3.2 and errors[18] / errors[36] > 3.2


def test_heun_from_sdedit_start_solves_the_ode():
    sde = VESDE(0.01, 10.0)
    condition = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(13))
    start = MU + condition
    assert heun_error(18, sde, condition, t_start=0.4, start=start) < 0.01


@pytest.mark.parametrize("t_start", [1.0, 0.4])
def test_heun_feeds_the_network_noise_levels_not_sde_times(t_start):
    """The score network is called with sigma on [sigma_min, sigma(t_start)], starting at
    sigma(t_start) and ending at sigma_min (then one Euler step to sigma = 0)."""
    sde = VESDE(0.01, 10.0)
    seen = []

    def recording_score(x, sigma, condition=None):
        seen.append(sigma.clone())
        return gaussian_score(x, sigma, condition)

    sampler = get_sampler("heun", sde, steps=6)
    generator = torch.Generator().manual_seed(0)
    x = initial_sample(sde, (2, 1, 4, 4), generator, t_start=t_start)
    sampler.sample(CountingScoreFn(recording_score), x, t_start, generator)
    levels = [float(s[0]) for s in seen]
    assert all(torch.all(s == s[0]) and s.shape == (2,) for s in seen)
    assert levels[0] == pytest.approx(float(sde.sigma(t_start)), rel=1e-5)
    assert levels[-1] == pytest.approx(0.01, rel=1e-5)
    assert min(levels) == pytest.approx(0.01, rel=1e-5)
    assert len(set(round(v, 6) for v in levels)) == 6  # each of the 6 levels visited


class GaussianScoreNet(torch.nn.Module):
    """Stand-in for a conditional score network: exact score of N(MU + mask, STD^2)."""

    def forward(self, x, sigma, condition=None):
        if condition is None:
            raise ValueError("conditional model called without its mask")
        return gaussian_score(x, sigma, condition)


@pytest.mark.parametrize("name", ["heun", "heun_churn"])
def test_ctm_generation_follows_each_images_mask(name):
    """study_a.generate (CTM) with a mask-dependent score: every image follows its own mask."""
    from kneesynth.study_a.sample import generate

    params = {"sigma_min": 0.01, "sigma_max": 10.0, "sample_batch_size": 8, "t0": 0.4}
    sde = VESDE(0.01, 10.0)
    masks = torch.zeros(16, 1, 8, 8)
    masks[::2, :, :4] = 1.0  # even images: upper half 1; odd images: lower half 1
    masks[1::2, :, 4:] = 1.0
    sampler = get_sampler(name, sde, steps=18)
    images, evaluations = generate("ctm", GaussianScoreNet(), masks, params, 5, sampler)
    assert evaluations == 35
    shrink = 1 - STD / math.sqrt(STD**2 + 10.0**2)  # x_T has mean 0: the ODE keeps a bit of it
    inside = images[masks == 1].mean() - images[masks == 0].mean()
    assert float(inside) == pytest.approx(shrink, abs=0.1)
    assert float(images[masks == 0].mean()) == pytest.approx(MU * shrink, abs=0.1)
