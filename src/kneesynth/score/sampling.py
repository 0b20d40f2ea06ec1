"""Samplers for VE score models: small registered classes behind one interface.

A sampler turns a start image ``x`` (B, 1, H, W) at SDE time ``t_start`` into a sample at
noise level 0, calling ``score_fn(x, sigma (B,)) -> score (B, 1, H, W)``; all randomness comes
from a ``torch.Generator``. A new sampler is one class decorated with ``@register_sampler``;
it is selected by name in the config (``study_a.sampler.name``).

Starts (:func:`initial_sample`): CTM and unconditional sampling start from the prior
sigma_max z at t = 1 (the mask enters through ``score_fn`` at every step); CSM uses SDEdit
(Meng et al. 2022): start at t0 from y + sigma(t0) z, where y is the segmentation mask, and
run t0 -> 0.

Registered samplers:
- ``pc``: reverse-diffusion predictor + Langevin corrector (Song et al. 2021, score_sde's
  ``pc_sampler``): corrector before predictor, corrector step 2 alpha (snr ||z|| / ||s||)^2
  with alpha = 1 (VE), time grid linspace(t_start, eps, n), the last step returns the
  predictor mean. 2 evaluations per step (corrector_steps = 1).
- ``heun``: EDM deterministic 2nd-order sampler (Karras et al. 2022, Algorithm 1) on the
  rho = 7 sigma schedule, with the VE score model as denoiser D(x, sigma) = x + sigma^2 s.
  2 n - 1 evaluations.
- ``heun_churn``: EDM stochastic sampler (Algorithm 2): Heun plus "churn" noise injection.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from kneesynth.score.sde import VESDE

__all__ = [
    "SAMPLERS",
    "CountingScoreFn",
    "EDMHeunSampler",
    "EDMStochasticSampler",
    "PredictorCorrectorSampler",
    "Sampler",
    "get_sampler",
    "initial_sample",
    "karras_sigmas",
    "register_sampler",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(name: str):
    """Class decorator: make a :class:`Sampler` subclass selectable as ``name``."""

    def decorate(cls):
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        cls.name = name
        SAMPLERS[name] = cls
        return cls

    return decorate


def get_sampler(name: str, sde: VESDE, **params) -> Sampler:
    """Instantiate the registered sampler ``name`` with its parameters."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name](sde, **params)


class CountingScoreFn:
    """Wrap a score model (and its fixed condition) as ``score_fn``, counting evaluations.

    model(x, sigma, condition) -> score; ``evaluations`` counts calls per image batch.
    ``autocast`` is an optional context-manager factory (bf16 on a GPU). ``progress`` (a
    :class:`~kneesynth.progress.ProgressLog` counting evaluations) logs the job's progress
    lines, whatever the sampler.
    """

    def __init__(self, model, condition: torch.Tensor | None = None, autocast=None, progress=None):
        self.model = model
        self.condition = condition
        self.autocast = autocast
        self.progress = progress
        self.evaluations = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if self.autocast is None:
            score = self.model(x, sigma, self.condition).float()
        else:
            with self.autocast():
                score = self.model(x, sigma, self.condition).float()
        if self.progress is not None:
            self.progress.advance()
        return score


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # drawn on the generator's device, then moved: identical noise on CPU and GPU runs
    return torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)


def initial_sample(
    sde: VESDE,
    shape: tuple[int, ...],
    generator: torch.Generator,
    start: torch.Tensor | None = None,
    t_start: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Start image (B, C, H, W) of the reverse process at time ``t_start``.

    ``start`` None: sigma(t_start) z (t_start = 1: the prior N(0, sigma_max^2)).
    ``start`` y (B, C, H, W): SDEdit, y + sigma(t_start) z.
    """
    z = torch.randn(shape, generator=generator, device=generator.device).to(device)
    sigma = float(sde.sigma(t_start))
    return z * sigma if start is None else start.to(device) + sigma * z


class Sampler(ABC):
    """Reverse-time sampler for a VE score model."""

    name = "abstract"

    def __init__(self, sde: VESDE, eps: float = 1e-5):
        self.sde = sde
        self.eps = float(eps)

    @abstractmethod
    def num_evaluations(self, t_start: float = 1.0) -> int:
        """Network evaluations per image when starting at ``t_start``."""

    @abstractmethod
    def sample(
        self, score_fn: ScoreFn, x: torch.Tensor, t_start: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Run from ``x`` (B, C, H, W) at ``t_start`` to noise level 0; returns (B, C, H, W)."""


@register_sampler("pc")
class PredictorCorrectorSampler(Sampler):
    """Reverse-diffusion predictor + Langevin corrector (score_sde ``pc_sampler``).

    ``steps``: N predictor steps from ``t_start`` down to eps, whatever ``t_start`` is: from
    the prior (t_start = 1) and for SDEdit alike, as in Algorithm 1 of Mei et al.
    (t_n = (n / N) t0), so CSM makes N (1 + corrector_steps) evaluations per image, 1000 at
    N = 500. Deviation from score_sde: the corrector's step size uses
    each image's own ||z|| / ||s|| (score_sde averages the norms over the batch), so a sample
    does not depend on which images share its batch.
    """

    def __init__(
        self,
        sde: VESDE,
        steps: int = 500,
        snr: float = 0.16,
        corrector_steps: int = 1,
        eps: float = 1e-5,
    ):
        super().__init__(sde, eps)
        if steps < 1 or corrector_steps < 0:
            raise ValueError("pc sampler needs steps >= 1 and corrector_steps >= 0")
        self.steps = int(steps)
        self.snr = float(snr)
        self.corrector_steps = int(corrector_steps)

    def num_evaluations(self, t_start: float = 1.0) -> int:
        return self.steps * (1 + self.corrector_steps)

    @torch.no_grad()
    def sample(self, score_fn, x, t_start, generator):
        n = self.steps
        times = torch.linspace(t_start, self.eps, n)
        sigmas = torch.cat([self.sde.sigma(times), torch.zeros(1)]).tolist()
        x_mean = x
        for i in range(n):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            for _ in range(self.corrector_steps):  # Langevin corrector (alpha = 1 for VE)
                score = score_fn(x, torch.full((x.shape[0],), sigma))
                noise = _randn_like(x, generator)
                score_norm = score.flatten(1).norm(dim=1).clamp_min(1e-12)
                noise_norm = noise.flatten(1).norm(dim=1)
                step = (2 * (self.snr * noise_norm / score_norm) ** 2).view(-1, 1, 1, 1)
                x_mean = x + step * score
                x = x_mean + torch.sqrt(2 * step) * noise
            # reverse-diffusion predictor: G^2 = sigma_i^2 - sigma_{i+1}^2
            score = score_fn(x, torch.full((x.shape[0],), sigma))
            g2 = sigma**2 - sigma_next**2
            x_mean = x + g2 * score
            x = x_mean + math.sqrt(g2) * _randn_like(x, generator)
        return x_mean


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """EDM noise levels (steps + 1,): sigma_max .. sigma_min on the rho schedule, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    ramp = i / max(steps - 1, 1)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)])


@register_sampler("heun")
class EDMHeunSampler(Sampler):
    """EDM Heun sampler (Karras et al. 2022, Alg. 1 with S_churn = 0; Alg. 2 otherwise).

    ``steps`` noise levels from sigma(t_start) to sigma_min on the rho schedule (then 0);
    denoiser D(x, sigma) = x + sigma^2 s(x, sigma), so dx/dsigma = (x - D) / sigma = -sigma s.
    Euler to sigma = 0 on the last step: 2 steps - 1 evaluations. The churn parameters add
    noise to go from sigma_i up to sigma_hat = (1 + gamma) sigma_i before each step for
    S_tmin <= sigma_i <= S_tmax, gamma = min(S_churn / steps, sqrt(2) - 1).
    """

    def __init__(
        self,
        sde: VESDE,
        steps: int = 25,
        rho: float = 7.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        eps: float = 1e-5,
    ):
        super().__init__(sde, eps)
        if steps < 1:
            raise ValueError("heun sampler needs steps >= 1")
        self.steps = int(steps)
        self.rho = float(rho)
        self.s_churn = float(s_churn)
        self.s_tmin = float(s_tmin)
        self.s_tmax = float(s_tmax)
        self.s_noise = float(s_noise)

    def num_evaluations(self, t_start: float = 1.0) -> int:
        return 2 * self.steps - 1

    def _denoise(self, score_fn, x, sigma: float) -> torch.Tensor:
        return x + sigma**2 * score_fn(x, torch.full((x.shape[0],), sigma))

    @torch.no_grad()
    def sample(self, score_fn, x, t_start, generator):
        sigma_start = float(self.sde.sigma(t_start))
        sigmas = karras_sigmas(self.sde.sigma_min, sigma_start, self.steps, self.rho).tolist()
        for i in range(self.steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            gamma = 0.0
            if self.s_churn > 0 and self.s_tmin <= sigma <= self.s_tmax:
                gamma = min(self.s_churn / self.steps, math.sqrt(2) - 1)
            sigma_hat = sigma * (1 + gamma)
            if gamma > 0:
                extra = math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise
                x = x + extra * _randn_like(x, generator)
            slope = (x - self._denoise(score_fn, x, sigma_hat)) / sigma_hat
            x_next = x + (sigma_next - sigma_hat) * slope
            if sigma_next > 0:  # 2nd-order correction
                slope_next = (x_next - self._denoise(score_fn, x_next, sigma_next)) / sigma_next
                x_next = x + (sigma_next - sigma_hat) * (slope + slope_next) / 2
            x = x_next
        return x


@register_sampler("heun_churn")
class EDMStochasticSampler(EDMHeunSampler):
    """EDM stochastic sampler (Karras et al. Alg. 2): Heun with churn on by default."""

    def __init__(self, sde: VESDE, steps: int = 25, s_churn: float = 10.0, **params):
        super().__init__(sde, steps=steps, s_churn=s_churn, **params)
