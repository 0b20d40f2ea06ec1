"""Variance-exploding SDE (Song et al. 2021, ``sde_lib.VESDE``).

sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]; f = 0;
g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)). Tensors: t (B,), x (B, C, H, W).
"""

from __future__ import annotations

import math

import torch

__all__ = ["VESDE"]


class VESDE:
    """VE SDE with noise levels ``sigma_min`` .. ``sigma_max`` over t in [0, 1]."""

    T = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 128.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Marginal noise standard deviation sigma(t) (same shape as t)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def t_of_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Inverse of :meth:`sigma`."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def diffusion(self, t: torch.Tensor | float) -> torch.Tensor:
        """g(t) of dx = g(t) dw."""
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
