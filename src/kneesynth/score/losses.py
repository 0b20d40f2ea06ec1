"""Training objectives: denoising score matching (score models) and L1 (U-Net baseline)."""

from __future__ import annotations

import torch

from kneesynth.score.sde import VESDE

__all__ = ["dsm_loss", "l1_loss"]


def dsm_loss(
    score_model: torch.nn.Module,
    sde: VESDE,
    drr: torch.Tensor,
    generator: torch.Generator,
    condition: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Denoising score matching with Song et al.'s lambda(t) = sigma(t)^2 weighting.

    drr (B, 1, H, W) clean images, condition (B, C, H, W) or None. t ~ U(eps, 1),
    x = drr + sigma(t) z, loss = mean over batch and pixels of || sigma s(x, sigma) + z ||^2.
    (score_sde sums over pixels; the mean differs by a constant factor, which Adam ignores.)
    Randomness comes only from ``generator`` (the trainer's per-step generator) so a resumed
    run draws the same t and z.
    """
    batch = drr.shape[0]
    t = torch.rand(batch, generator=generator) * (sde.T - eps) + eps
    z = torch.randn(drr.shape, generator=generator)
    t, z = t.to(drr.device), z.to(drr.device)
    sigma = sde.sigma(t).to(drr.device)
    perturbed = drr + sigma[:, None, None, None] * z
    score = score_model(perturbed, sigma, condition)
    return ((score.float() * sigma[:, None, None, None] + z) ** 2).mean()


def l1_loss(unet: torch.nn.Module, condition: torch.Tensor, drr: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of the image-to-image U-Net: condition (B, C, H, W) -> drr (B, 1, H, W)."""
    return (unet(condition).float() - drr).abs().mean()
