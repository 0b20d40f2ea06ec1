"""Study B's ``wgan``: a conditional Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

The nets are our own small DCGAN-style ones: MONAI's ``Generator``/``Discriminator`` take no
class label and MONAI's ``Discriminator`` normalises by batch, which the gradient penalty forbids
(the penalty is per sample); the critic here has no normalisation and uses a projection head for
the grade (Miyato & Koyama 2018).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kneesynth import compute as compute_lib
from kneesynth.data.manifest import KL_GRADES
from kneesynth.seeding import derive_seed
from kneesynth.study_b.ddpm import _batch, to_model_range
from kneesynth.training import ResumableTrainer, step_generator

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# WGAN-GP (own DCGAN-style nets)
# --------------------------------------------------------------------------------------------
def _levels(image_size: int) -> tuple[int, int]:
    """(number of x2 resolution steps, base size): halve while even and > 7 (64 -> 4x4, 224 -> 7x7)."""
    size, levels = int(image_size), 0
    while size % 2 == 0 and size > 7:
        size //= 2
        levels += 1
    if levels == 0:
        raise ValueError(f"image_size {image_size} cannot be reached by doubling from a small base")
    return levels, size


class WganGenerator(nn.Module):
    """Conditional DCGAN generator: (z (n, latent_dim), kl_grade (n,)) -> (n, 1, H, W) in [-1, 1].

    The grade enters as a learned embedding concatenated to z; the image grows from a
    ``base x base`` map by nearest-neighbour upsampling + 3x3 convolutions (no checkerboard).
    """

    def __init__(
        self,
        image_size: int,
        latent_dim: int = 64,
        channels: int = 32,
        max_channels: int = 256,
        num_classes: int = len(KL_GRADES),
    ):
        super().__init__()
        levels, base = _levels(image_size)
        widths = [min(channels * 2 ** (levels - i), max_channels) for i in range(levels + 1)]
        self.latent_dim, self.base, self.widths = latent_dim, base, widths
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Sequential(
            nn.Linear(2 * latent_dim, widths[0] * base * base),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(),
        )
        blocks = []
        for i in range(levels):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(),
            ]
        blocks += [nn.Conv2d(widths[-1], 1, 3, padding=1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, kl_grade: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(kl_grade)], dim=1))
        return self.blocks(h.view(-1, self.widths[0], self.base, self.base))


class WganCritic(nn.Module):
    """Conditional WGAN critic: (image (n, 1, H, W), kl_grade (n,)) -> score (n,).

    Strided 4x4 convolutions with LeakyReLU and no normalisation (the gradient penalty is per
    sample); the grade enters by a projection term ``<embed(kl_grade), h>``.
    """

    def __init__(
        self,
        image_size: int,
        channels: int = 32,
        max_channels: int = 256,
        num_classes: int = len(KL_GRADES),
    ):
        super().__init__()
        levels, base = _levels(image_size)
        widths = [min(channels * 2**i, max_channels) for i in range(levels)]
        layers: list[nn.Module] = []
        in_channels = 1
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        features = widths[-1] * base * base
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features)

    def forward(self, image: torch.Tensor, kl_grade: torch.Tensor) -> torch.Tensor:
        h = self.features(image).flatten(1)
        return self.linear(h).squeeze(1) + (self.embed(kl_grade) * h).sum(dim=1)


def wgan_settings(wgan: Mapping[str, Any], image_size: int) -> dict[str, Any]:
    """Constructor arguments shared by :class:`WganGenerator` and :class:`WganCritic`."""
    return {
        "image_size": int(image_size),
        "channels": int(wgan["channels"]),
        "max_channels": int(wgan.get("max_channels", 256)),
    }


def _gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """E[(||grad_x critic(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake."""
    mix = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    interpolate = (mix * real + (1 - mix) * fake).requires_grad_(True)
    score = critic(interpolate, labels)
    (gradient,) = torch.autograd.grad(score.sum(), interpolate, create_graph=True)
    return ((gradient.flatten(1).float().norm(dim=1) - 1) ** 2).mean()


def train_wgan(
    images: np.ndarray,
    kl_grades: np.ndarray,
    wgan: Mapping[str, Any],
    image_size: int,
    seed: int,
    state_dir: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    settings: Any = None,
    compute: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Train the conditional WGAN-GP; return the generator's weights (CPU state dict).

    One step = ``n_critic`` critic updates (each on a fresh real batch and fresh z) and one
    generator update; Adam with betas (0, 0.9), penalty weight ``gradient_penalty`` (10 in
    Gulrajani et al.). ``images`` uint8 (n, H, W), ``kl_grades`` (n,). ``compute``: bf16
    autocast, channels_last and torch.compile as in study A; the gradient penalty calls the
    critic uncompiled (torch.compile does not support its double backward).
    """

    device = torch.device(device)
    torch.manual_seed(derive_seed(seed, "init"))
    net_settings = wgan_settings(wgan, image_size)
    latent_dim = int(wgan["latent_dim"])
    generator_net = WganGenerator(latent_dim=latent_dim, **net_settings).to(device)
    critic = WganCritic(**net_settings).to(device)
    generate = compute_lib.prepare_model(generator_net, device, compute)
    score = compute_lib.prepare_model(critic, device, compute)
    betas = tuple(float(b) for b in wgan["betas"])
    optimizer_g = torch.optim.Adam(
        generator_net.parameters(), lr=float(wgan["learning_rate"]), betas=betas
    )
    optimizer_c = torch.optim.Adam(
        critic.parameters(), lr=float(wgan["learning_rate"]), betas=betas
    )
    trainer = ResumableTrainer(
        state_dir,
        {
            "generator": generator_net,
            "critic": critic,
            "optimizer_generator": optimizer_g,
            "optimizer_critic": optimizer_c,
        },
        total_steps=int(wgan["steps"]),
        checkpoint_every=int(wgan["checkpoint_every"]),
        settings=settings,
    )
    data = compute_lib.prepare_input(to_model_range(images).to(device), compute)
    labels_all = torch.tensor(np.asarray(kl_grades), dtype=torch.long).to(device)
    batch_size, n_critic = int(wgan["batch_size"]), int(wgan["n_critic"])
    penalty_weight = float(wgan["gradient_penalty"])
    for step in trainer.steps():
        generator = step_generator(seed, step)
        generator_net.train()
        for _ in range(n_critic):
            real, labels = _batch(data, labels_all, batch_size, generator)
            z = torch.randn(batch_size, latent_dim, generator=generator).to(device)
            with compute_lib.autocast(device, compute):
                with torch.no_grad():
                    fake = generate(z, labels)
                wasserstein = (
                    score(fake, labels).float().mean() - score(real, labels).float().mean()
                )
                penalty = _gradient_penalty(critic, real, fake, labels, generator)
            loss_c = wasserstein + penalty_weight * penalty
            optimizer_c.zero_grad(set_to_none=True)
            loss_c.backward()
            optimizer_c.step()
        labels = torch.randint(0, len(KL_GRADES), (batch_size,), generator=generator).to(device)
        z = torch.randn(batch_size, latent_dim, generator=generator).to(device)
        with compute_lib.autocast(device, compute):
            loss_g = -score(generate(z, labels), labels).float().mean()
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()
        trainer.record(
            step,
            critic_loss=loss_c.item(),
            wasserstein=-wasserstein.item(),
            generator_loss=loss_g.item(),
        )
    trainer.finish()
    return {k: v.detach().cpu().clone() for k, v in generator_net.state_dict().items()}


@torch.no_grad()
def sample_wgan(
    generator_net: WganGenerator,
    seeds: Sequence[int],
    kl_grades: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One image per (seed, grade): ``(n, 1, H, W)`` in [-1, 1]; z_i ~ N(0, I) from seed_i."""
    generator_net.eval()
    z = torch.cat(
        [
            torch.randn(
                1, generator_net.latent_dim, generator=torch.Generator().manual_seed(int(s))
            )
            for s in seeds
        ]
    ).to(device)
    labels = torch.tensor(np.array(kl_grades), dtype=torch.long, device=device)
    return generator_net(z, labels)


# --------------------------------------------------------------------------------------------
# Whole generators: train from the manifest, save, load, sample
# --------------------------------------------------------------------------------------------
