"""Study B generators of knee radiographs by Kellgren-Lawrence (KL) grade: DDPMs and a WGAN-GP.

Three generators, all trained on the real training split only (Smits Serena et al., DKOU 2025):

- ``ddpm_uncond`` ("Diff-Unco"): one unconditional DDPM per KL grade, so each sample carries the
  grade of the model that drew it. The five models are trained in lockstep by one resumable
  trainer (one job, one import of torch + diffusers).
- ``ddpm_cond`` ("Diff-Cond"): one DDPM conditioned on the KL grade through the class embedding of
  diffusers' ``UNet2DModel`` (``num_class_embeds = 6``: grades 0-4 and a null class used for
  classifier-free guidance). With ``guidance_scale > 0`` the label is dropped to the null class
  with probability ``label_dropout`` during training, and sampling mixes the conditional and
  unconditional noise predictions, ``eps = eps_null + (1 + w) (eps_kl - eps_null)`` (Ho &
  Salimans 2022; ``w = 0`` is plain conditional sampling).
- ``wgan``: a conditional Wasserstein GAN with gradient penalty (Gulrajani et al. 2017). The nets
  are our own small DCGAN-style ones: MONAI's ``Generator``/``Discriminator`` take no class label
  and MONAI's ``Discriminator`` normalises by batch, which the gradient penalty forbids (the
  penalty is per sample); the critic here has no normalisation and uses a projection head for
  the grade (Miyato & Koyama 2018).

Images are 1-channel, ``(n, 1, H, W)`` float tensors in ``[-1, 1]`` inside the models, and
``(n, H, W)`` uint8 arrays outside. Every random draw of a training step comes from
:func:`kneesynth.training.step_generator`, so a killed job resumes to the same weights; every
sample is drawn from its own ``torch.Generator`` seeded by the per-image seed written to the
sample manifest, so an image depends on (model, KL grade, seed) only, not on batching.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kneesynth.errors import InputError
from kneesynth.oai import KL_GRADES, grade_counts, read_oai_manifest
from kneesynth.seeding import derive_seed
from kneesynth.training import ResumableTrainer, load_weights, save_weights, step_generator

logger = logging.getLogger(__name__)

NULL_CLASS = len(KL_GRADES)  # class index of "no grade" for classifier-free guidance
GENERATORS = ("ddpm_uncond", "ddpm_cond", "wgan")
# one unconditional DDPM each: the shared base (the probe's full-data twin) and the probe
UNCONDITIONAL_DDPMS = ("ddpm_base", "memorization_probe")
SAMPLERS = ("ancestral", "ddim", "dpmsolver++")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def load_images(paths: Sequence[str | os.PathLike[str]], image_size: int) -> np.ndarray:
    """Read radiographs into ``(n, image_size, image_size)`` uint8 (:mod:`kneesynth.images`:
    8/16-bit, RGB, one intensity rule; bilinear resize if needed)."""
    from kneesynth.images import read_radiograph, to_uint8

    images = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
    for index, path in enumerate(paths):
        images[index] = to_uint8(read_radiograph(path, image_size))
    return images


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, H, W)`` -> float32 ``(n, 1, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


def to_uint8(samples: torch.Tensor) -> np.ndarray:
    """float ``(n, 1, H, W)`` in [-1, 1] -> uint8 ``(n, H, W)`` (clipped, rounded)."""
    scaled = ((samples.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round()
    return scaled.squeeze(1).to(torch.uint8).numpy()


def _batch(
    data: torch.Tensor, labels: torch.Tensor | None, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch drawn with replacement by ``generator``: images (b, 1, H, W), labels (b,)."""
    index = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
    return data[index], (labels[index] if labels is not None else None)


# --------------------------------------------------------------------------------------------
# DDPM (diffusers)
# --------------------------------------------------------------------------------------------
def unet_settings(ddpm: Mapping[str, Any], image_size: int, conditional: bool) -> dict[str, Any]:
    """Keyword arguments of ``diffusers.UNet2DModel`` for a 1-channel DDPM at ``image_size``.

    ``ddpm`` keys: block_out_channels (list, one per resolution level), layers_per_block,
    attention (self-attention at the lowest resolution level), norm_num_groups.
    """
    channels = [int(c) for c in ddpm["block_out_channels"]]
    levels = len(channels)
    patch = int(ddpm.get("patch_size", 1))
    if image_size % patch or (image_size // patch) % 2 ** (levels - 1):
        raise ValueError(
            f"image_size {image_size} / patch_size {patch} is not divisible by 2^{levels - 1} "
            f"({levels} UNet levels)"
        )
    attention = bool(ddpm.get("attention", False))
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if attention:
        down[-1] = "AttnDownBlock2D"
        up[0] = "AttnUpBlock2D"
    settings = {
        "sample_size": int(image_size) // patch,
        "in_channels": patch * patch,
        "out_channels": patch * patch,
        "patch_size": patch,
        "block_out_channels": channels,
        "layers_per_block": int(ddpm["layers_per_block"]),
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": int(ddpm.get("norm_num_groups", 8)),
        "add_attention": attention,
        "attention_head_dim": 8,
    }
    if conditional:
        settings["num_class_embeds"] = len(KL_GRADES) + 1
    return settings


class PatchedUNet(nn.Module):
    """A ``UNet2DModel`` that works on ``patch x patch`` blocks of pixels folded into channels.

    ``(n, 1, H, W)`` is rearranged to ``(n, p^2, H/p, W/p)`` (``pixel_unshuffle``), denoised by
    the UNet at ``H/p x W/p`` and unfolded again, as the patch size of simple diffusion
    (Hoogeboom et al. 2023) and DiT: each network evaluation costs about 1/p^2 of one at full
    resolution, while the images keep every pixel. Called like the UNet:
    ``net(sample, timestep, class_labels=None).sample``.
    """

    def __init__(self, unet: nn.Module, patch_size: int):
        super().__init__()
        self.unet = unet
        self.patch_size = int(patch_size)
        self.config = SimpleNamespace(sample_size=unet.config.sample_size * self.patch_size)

    def forward(self, sample: torch.Tensor, timestep, class_labels=None, return_dict: bool = True):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        folded = F.pixel_unshuffle(sample, self.patch_size)
        out = self.unet(folded, timestep, class_labels=class_labels).sample
        return UNet2DOutput(sample=F.pixel_shuffle(out, self.patch_size))


def build_unet(settings: Mapping[str, Any]):
    """A ``diffusers.UNet2DModel`` from :func:`unet_settings` output (wrapped in
    :class:`PatchedUNet` when ``patch_size`` > 1)."""
    from diffusers import UNet2DModel

    settings = dict(settings)
    patch = int(settings.pop("patch_size", 1))
    unet = UNet2DModel(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()})
    return PatchedUNet(unet, patch) if patch > 1 else unet


def scheduler_settings(ddpm: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the training ``DDPMScheduler`` (num_train_timesteps, beta_schedule).

    Predicted clean images are clipped to [-1, 1] (the image range), except for standardised
    DDPMs (:func:`standardiser`), whose data are not confined to it."""
    return {
        "num_train_timesteps": int(ddpm["num_train_timesteps"]),
        "beta_schedule": str(ddpm.get("beta_schedule", "linear")),
        "prediction_type": str(ddpm.get("prediction_type", "epsilon")),
        "clip_sample": not ddpm.get("standardise", False),
    }


DATA_STD = 0.5  # the data spread the noise schedules assume (images in [-1, 1]; EDM's sigma_data)


def standardiser(images: np.ndarray) -> dict[str, Any]:
    """The standardisation a DDPM works in: ``x -> (x - mean) / scale``, with ``mean`` the
    training images' mean image (model range, ``(1, 1, H, W)``) and ``scale`` the one number
    that gives the centred images the spread ``DATA_STD``.

    Ours, a preconditioning of the data (in the spirit of the per-dimension normalisation
    that latent diffusion models apply to their latents): every knee radiograph shares the
    mean image's anatomy, so a small DDPM trained briefly spends its steps on how knees differ
    rather than on drawing the femur and tibia that every image has. The DDPM still models the
    whole distribution (the map is affine and inverted exactly on sampling).
    """
    data = to_model_range(np.asarray(images))
    mean = data.mean(dim=0, keepdim=True)
    spread = float((data - mean).std())
    return {"mean": mean, "scale": max(spread, 1e-6) / DATA_STD}


def standardise(data: torch.Tensor, stats: Mapping[str, Any] | None) -> torch.Tensor:
    """Model-range images ``(n, 1, H, W)`` -> the DDPM's standardised space (identity if None)."""
    if stats is None:
        return data
    return (data - stats["mean"].to(data.device)) / float(stats["scale"])


def destandardise(data: torch.Tensor, stats: Mapping[str, Any] | None) -> torch.Tensor:
    """Inverse of :func:`standardise`."""
    if stats is None:
        return data
    return data * float(stats["scale"]) + stats["mean"].to(data.device)


def build_sampler(name: str, scheduler: Mapping[str, Any]):
    """The diffusers scheduler that samples: ``ancestral`` (DDPMScheduler, Ho et al. 2020),
    ``ddim`` (DDIMScheduler, eta = 0) or ``dpmsolver++`` (DPMSolverMultistepScheduler, 2nd order),
    all built on the training noise schedule ``scheduler``."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name == "ancestral":
        return DDPMScheduler(**scheduler)
    if name == "ddim":
        return DDIMScheduler(**scheduler)
    if name == "dpmsolver++":
        settings = {k: v for k, v in scheduler.items() if k != "clip_sample"}
        return DPMSolverMultistepScheduler(**settings, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _target(
    prediction_type: str, clean: torch.Tensor, noise: torch.Tensor, a_bar: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict from x_t: the noise (``epsilon``, Ho et al. 2020), the
    clean image (``sample``) or ``v = sqrt(a_bar) eps - sqrt(1 - a_bar) x_0`` (``v_prediction``,
    Salimans & Ho 2022); the samplers read the same ``prediction_type``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean
    if prediction_type == "v_prediction":
        return a_bar.sqrt() * noise - (1 - a_bar).sqrt() * clean
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def loss_weights(
    alphas_cumprod: torch.Tensor, prediction_type: str, min_snr_gamma: float | None
) -> torch.Tensor:
    """Per-timestep weight of the squared error: ones, or min-SNR-gamma (Hang et al. 2023).

    With ``SNR_t = a_bar / (1 - a_bar)``, the min-SNR weight of the epsilon loss is
    ``min(SNR_t, gamma) / SNR_t``; the same weighting expressed on the v loss
    (``|v err|^2 = (SNR_t + 1) |eps err|^2``) is ``min(SNR_t, gamma) / (SNR_t + 1)``, and on the
    x_0 loss (``|x0 err|^2 = |eps err|^2 / SNR_t``) ``min(SNR_t, gamma)``. diffusers'
    ``compute_snr`` gives the SNR; its training scripts write the same expressions inline.
    """
    if not min_snr_gamma:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    clipped = snr.clamp(max=float(min_snr_gamma))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def _start_from(net: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Load the shared base's weights into ``net``; a class embedding the base lacks is zeroed
    (so the conditional net starts as the unconditional base); any other mismatch is an error."""
    missing, unexpected = net.load_state_dict(dict(weights), strict=False)
    extra = [k for k in missing if "class_embedding" not in k]
    if extra or unexpected:
        raise ValueError(
            f"base weights do not fit this net: missing {extra[:3]}, unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name in missing:
                parameter.zero_()


def _ema_weights(model: nn.Module, ema) -> dict[str, torch.Tensor]:
    """The EMA weights of ``model`` as a CPU state dict (``model`` itself is left unchanged)."""
    parameters = list(model.parameters())
    ema.store(parameters)
    ema.copy_to(parameters)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ema.restore(parameters)
    return weights


def train_ddpms(
    datasets: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    ddpm: Mapping[str, Any],
    image_size: int,
    seed: int,
    state_dir: str | os.PathLike[str],
    conditional: bool,
    guidance_scale: float = 0.0,
    label_dropout: float = 0.0,
    device: torch.device | str = "cpu",
    settings: Any = None,
    init_weights: Mapping[str, torch.Tensor] | None = None,
    stats: Mapping[str, Any] | None = None,
    compute: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Train one DDPM per entry of ``datasets`` in lockstep (MSE on ``ddpm.prediction_type``).

    Args:
        datasets: name -> (images uint8 (n, H, W), kl_grades (n,) or None). ``ddpm_uncond`` passes
            ``kl0``..``kl4`` without labels; ``ddpm_cond`` passes one entry with labels.
        ddpm: the ``study_b.generators.ddpm`` config section (net, schedule, steps, batch_size,
            learning_rate, ema_decay, checkpoint_every).
        conditional: give the UNet the KL grade as class label.
        guidance_scale, label_dropout: labels are replaced by the null class with probability
            ``label_dropout`` when ``guidance_scale > 0`` (classifier-free guidance training).
        settings: what the run depends on (for the resume fingerprint).
        init_weights: start every net from these weights (the shared base,
            :func:`train_ddpm_base`) instead of a fresh initialisation; a conditional net's
            class embedding, which the unconditional base lacks, starts at zero, so that it
            starts as the base.
        stats: the :func:`standardiser` the nets work in (None: plain model range).
        compute: the ``compute`` config section: bf16 autocast, channels_last, torch.compile
            of the UNets (:mod:`kneesynth.compute`, as in study A).

    The squared error is weighted by min-SNR-gamma (Hang et al. 2023) when
    ``ddpm.min_snr_gamma`` is set (:func:`loss_weights`): the nearly noise-free timesteps stop
    dominating, which speeds up training severalfold.

    Returns:
        name -> EMA weights (state dict on CPU).
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from kneesynth import compute as compute_lib

    device = torch.device(device)
    noise_scheduler = DDPMScheduler(**scheduler_settings(ddpm))
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    torch.manual_seed(derive_seed(seed, "init"))
    nets, forwards, emas, optimizers, data = {}, {}, {}, {}, {}
    objects: dict[str, Any] = {}
    for name, (images, labels) in datasets.items():
        torch.manual_seed(derive_seed(seed, "init", name))
        net = build_unet(unet_settings(ddpm, image_size, conditional))
        if init_weights is not None:
            _start_from(net, init_weights)
        net = net.to(device)
        nets[name] = net
        forwards[name] = compute_lib.prepare_model(net, device, compute)
        # EMA warm-up (diffusers): decay min(ema_decay, 1 - (1 + step)^-2/3), so that a short
        # run's EMA is not dominated by its starting weights (with a fixed 0.99, 40 steps leave
        # 67 % of the random initialisation in the EMA)
        emas[name] = EMAModel(
            net.parameters(), decay=float(ddpm["ema_decay"]), use_ema_warmup=True, power=2 / 3
        )
        optimizers[name] = torch.optim.AdamW(
            net.parameters(), lr=float(ddpm["learning_rate"]), weight_decay=0.0
        )
        data[name] = (
            standardise(to_model_range(images), stats).to(device),
            torch.tensor(np.asarray(labels), dtype=torch.long).to(device)
            if labels is not None
            else None,
        )
        objects.update(
            {f"{name}/model": net, f"{name}/ema": emas[name], f"{name}/optimizer": optimizers[name]}
        )
    trainer = ResumableTrainer(
        state_dir,
        objects,
        total_steps=int(ddpm["steps"]),
        checkpoint_every=int(ddpm["checkpoint_every"]),
        settings=settings,
    )
    batch_size = int(ddpm["batch_size"])
    dropout = float(label_dropout) if guidance_scale > 0 else 0.0
    timesteps_total = noise_scheduler.config.num_train_timesteps
    prediction_type = noise_scheduler.config.prediction_type
    weights = loss_weights(alphas_cumprod, prediction_type, ddpm.get("min_snr_gamma"))
    for step in trainer.steps():
        losses = {}
        for name, net in nets.items():
            generator = step_generator(derive_seed(seed, name), step)
            clean, labels = _batch(*data[name], batch_size, generator)
            noise = torch.randn(clean.shape, generator=generator).to(device)
            timesteps = torch.randint(0, timesteps_total, (batch_size,), generator=generator).to(
                device
            )
            if labels is not None and dropout > 0:
                drop = (torch.rand(batch_size, generator=generator) < dropout).to(device)
                labels = torch.where(drop, torch.full_like(labels, NULL_CLASS), labels)
            # q(x_t | x_0) by hand (== DDPMScheduler.add_noise) so that it stays on ``device``
            a_bar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            noisy = a_bar.sqrt() * clean + (1 - a_bar).sqrt() * noise
            with compute_lib.autocast(device, compute):
                prediction = forwards[name](
                    compute_lib.prepare_input(noisy, compute), timesteps, class_labels=labels
                ).sample
            error = (prediction.float() - _target(prediction_type, clean, noise, a_bar)).square()
            loss = (error * weights[timesteps].view(-1, 1, 1, 1)).mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            emas[name].step(net.parameters())
            losses[f"loss_{name}"] = loss.item()
        trainer.record(step, **losses)
    trainer.finish()
    return {name: _ema_weights(net, emas[name]) for name, net in nets.items()}


@torch.no_grad()
def sample_ddpm(
    unet: nn.Module,
    scheduler: Mapping[str, Any],
    sampler: str,
    inference_steps: int,
    seeds: Sequence[int],
    kl_grades: Sequence[int] | None = None,
    guidance_scale: float = 0.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw one image per seed from a DDPM: ``(len(seeds), 1, H, W)`` float in [-1, 1].

    Each image's noise comes from its own ``torch.Generator(seed)`` (diffusers accepts a list of
    generators), so an image depends on its seed and grade only. ``kl_grades`` is the class label
    of a conditional UNet (None for an unconditional one); ``guidance_scale`` > 0 adds
    classifier-free guidance.
    """
    device = torch.device(device)
    unet.eval()
    noise_scheduler = build_sampler(sampler, scheduler)
    noise_scheduler.set_timesteps(int(inference_steps))
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    size = unet.config.sample_size
    shape = (1, 1, size, size)
    sample = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(device)
    sample = sample * noise_scheduler.init_noise_sigma
    labels = None
    if kl_grades is not None:
        labels = torch.tensor(np.array(kl_grades), dtype=torch.long, device=device)
    guided = labels is not None and guidance_scale > 0
    for t in noise_scheduler.timesteps:
        model_input = noise_scheduler.scale_model_input(sample, t)
        if guided:
            both = torch.cat([model_input, model_input])
            both_labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
            # guidance mixes predictions linearly: valid for epsilon, v and x_0 alike (each is
            # affine in epsilon given x_t)
            pred_kl, pred_null = unet(both, t, class_labels=both_labels).sample.chunk(2)
            prediction = pred_null + (1.0 + guidance_scale) * (pred_kl - pred_null)
        else:
            prediction = unet(model_input, t, class_labels=labels).sample
        sample = noise_scheduler.step(prediction, t, sample, generator=generators).prev_sample
    return sample.clamp(-1, 1)


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
    from kneesynth import compute as compute_lib

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
def _training_split(manifest: str | os.PathLike[str], image_size: int):
    train = read_oai_manifest(manifest, split="train")
    return train, load_images(train["image"].tolist(), image_size), train["kl_grade"].to_numpy()


FINE_TUNE_KEYS = ("steps", "batch_size", "learning_rate")


def ddpm_settings(generators: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``ddpm`` section with the steps (and, if given, batch size and learning rate) of
    ``name`` (``ddpm_uncond``, ``ddpm_cond``) or, for the base, ``ddpm.base_steps``."""
    ddpm = dict(generators["ddpm"])
    if name == "ddpm_base":
        return {**ddpm, "steps": int(ddpm["base_steps"])}
    section = generators[name]
    return {**ddpm, **{k: section[k] for k in FINE_TUNE_KEYS if section.get(k) is not None}}


def _ddpm_meta(ddpm: Mapping[str, Any], image_size: int, conditional: bool, stats) -> dict:
    meta = {
        "unet": unet_settings(ddpm, image_size, conditional),
        "scheduler": scheduler_settings(ddpm),
    }
    if stats is not None:
        meta["standardise"] = {"mean": stats["mean"].clone(), "scale": float(stats["scale"])}
    return meta


def train_ddpm_base(
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train one unconditional DDPM on the real training split (``ddpm.base_steps`` steps) and
    write ``output``: the shared base that ``ddpm_uncond``'s per-grade models and ``ddpm_cond``
    are fine-tuned from (:func:`train_generator` with ``base_weights``). ``compute``: bf16,
    channels_last, compile (:func:`train_ddpms`)."""
    image_size = int(generators["image_size"])
    train, images, _ = _training_split(manifest, image_size)
    seed = derive_seed(int(seed), "study_b", "ddpm_base")
    ddpm = ddpm_settings(generators, "ddpm_base")
    stats = standardiser(images) if ddpm.get("standardise") else None
    logger.info("ddpm_base: %d training images, %d steps", len(train), ddpm["steps"])
    weights = train_ddpms(
        {"all": (images, None)},
        ddpm,
        image_size,
        seed,
        state_dir,
        conditional=False,
        device=device,
        compute=compute,
        settings={
            "generator": "ddpm_base",
            "config": generators,
            "seed": seed,
            "images": train["image"].tolist(),
        },
        stats=stats,
    )
    meta = {
        "generator": "ddpm_base",
        "image_size": image_size,
        "n_train": len(train),
        **_ddpm_meta(ddpm, image_size, False, stats),
    }
    save_weights(output, weights["all"], meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def train_memorization_probe(
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    probe: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    base_weights: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
) -> None:
    """The memorisation probe: the shared DDPM base trained further on a few training images.

    The base (:func:`train_ddpm_base`, the same DDPM trained on the whole training split) is
    fine-tuned for ``probe.steps`` steps of ``probe.batch_size`` images on ``probe.train_images``
    training images drawn at random (seeded), a set small enough for it to copy, as diffusion
    models copy their training images when the data set is small (Akbar et al.). The base is its
    full-data twin: a memorisation check that sees anything flags the probe's images and far
    fewer of the base's.
    """
    image_size = int(generators["image_size"])
    train, images, _ = _training_split(manifest, image_size)
    seed = derive_seed(int(seed), "study_b", "memorization_probe")
    count = int(probe["train_images"])
    if not 1 <= count <= len(train):
        raise InputError(
            manifest, f"memorization_probe: {count} training images wanted, {len(train)} exist"
        )
    chosen = np.sort(
        np.random.default_rng(derive_seed(seed, "subset")).choice(len(train), count, replace=False)
    )
    init, base_meta = load_weights(base_weights)
    if base_meta.get("generator") != "ddpm_base":
        raise InputError(base_weights, "not the shared DDPM base (meta generator)")
    stats = base_meta.get("standardise")
    ddpm = {
        **generators["ddpm"],
        "steps": int(probe["steps"]),
        "batch_size": int(probe["batch_size"]),
    }
    used = train["image"].iloc[chosen].tolist()
    logger.info("memorization probe: %d training images, %d steps", count, ddpm["steps"])
    weights = train_ddpms(
        {"all": (images[chosen], None)},
        ddpm,
        image_size,
        seed,
        state_dir,
        conditional=False,
        device=device,
        compute=compute,
        settings={"probe": dict(probe), "config": generators, "seed": seed, "images": used},
        init_weights=init,
        stats=stats,
    )
    meta = {
        "generator": "memorization_probe",
        "image_size": image_size,
        "n_train": count,
        "train_images": used,
        **_ddpm_meta(ddpm, image_size, False, stats),
    }
    save_weights(output, weights["all"], meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def train_generator(
    name: str,
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    device: torch.device | str = "cpu",
    base_weights: str | os.PathLike[str] | None = None,
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train generator ``name`` on the real training split of ``manifest`` and write ``output``.

    ``generators`` is the ``study_b.generators`` config section (image_size, ddpm: the shared
    DDPM net and schedule, ddpm_uncond / ddpm_cond: steps and guidance, wgan). ``seed`` is the
    base seed; ``compute`` the ``compute`` config section (bf16, channels_last, compile). The
    weights file holds ``state_dict`` (for ``ddpm_uncond`` a dict ``kl0``..``kl4`` of UNet
    weights) and ``meta`` with everything needed to rebuild the nets.

    ``base_weights`` (DDPMs): fine-tune from the shared base (:func:`train_ddpm_base`): every
    per-grade model of ``ddpm_uncond`` and the conditional ``ddpm_cond`` start from it and
    work in its standardisation; without it they start from scratch.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    image_size = int(generators["image_size"])
    train, images, kl_grades = _training_split(manifest, image_size)
    counts = grade_counts(kl_grades)
    seed = derive_seed(int(seed), "study_b", name)
    settings = {
        "generator": name,
        "config": generators,
        "seed": seed,
        "n_train": len(train),
        "counts": counts,
        "images": train["image"].tolist(),
    }
    meta: dict[str, Any] = {
        "generator": name,
        "image_size": image_size,
        "train_counts": counts,
        "n_train": len(train),
    }
    logger.info("%s: %d training images, per KL grade %s", name, len(train), counts)
    if name in ("ddpm_uncond", "ddpm_cond"):
        ddpm = ddpm_settings(generators, name)
        conditional = name == "ddpm_cond"
        if conditional:
            datasets = {"all": (images, kl_grades)}
            cond = generators["ddpm_cond"]
            guidance, dropout = float(cond["guidance_scale"]), float(cond["label_dropout"])
        else:
            empty = [g for g, n in counts.items() if n == 0]
            if empty:
                raise InputError(
                    manifest,
                    f"no training images of KL grade(s) {empty}: "
                    "ddpm_uncond needs one model per grade",
                )
            datasets = {f"kl{g}": (images[kl_grades == g], None) for g in KL_GRADES}
            guidance, dropout = 0.0, 0.0
        init, stats = None, None
        if base_weights is not None:
            init, base_meta = load_weights(base_weights)
            if base_meta.get("generator") != "ddpm_base":
                raise InputError(base_weights, "not the shared DDPM base (meta generator)")
            stats = base_meta.get("standardise")
            settings["base"] = {k: v for k, v in base_meta.items() if k != "standardise"}
        elif ddpm.get("standardise"):
            stats = standardiser(images)
        weights = train_ddpms(
            datasets,
            ddpm,
            image_size,
            seed,
            state_dir,
            conditional,
            guidance,
            dropout,
            device=device,
            settings=settings,
            init_weights=init,
            stats=stats,
            compute=compute,
        )
        state_dict = weights["all"] if conditional else weights
        meta.update(
            {**_ddpm_meta(ddpm, image_size, conditional, stats), "guidance_scale": guidance}
        )
        meta["fine_tuned_from_base"] = base_weights is not None
    else:
        wgan = generators["wgan"]
        state_dict = train_wgan(
            images,
            kl_grades,
            wgan,
            image_size,
            seed,
            state_dir,
            device=device,
            settings=settings,
            compute=compute,
        )
        meta.update(
            {"wgan": {**wgan_settings(wgan, image_size), "latent_dim": int(wgan["latent_dim"])}}
        )
    save_weights(output, state_dict, meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def _unet_from(settings: Mapping[str, Any], weights: Mapping[str, torch.Tensor], device):
    unet = build_unet(dict(settings))
    unet.load_state_dict(weights)
    return unet.to(device).eval()


def sample_generator(
    weights_path: str | os.PathLike[str],
    kl_grades: Sequence[int],
    seeds: Sequence[int],
    sampling: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Draw image i of KL grade ``kl_grades[i]`` from seed ``seeds[i]``: uint8 (n, H, W).

    ``sampling`` keys: sampler (ancestral | ddim | dpmsolver++; DDPMs only), inference_steps,
    batch_size. The unconditional single DDPMs (the shared base, the memorisation probe) draw
    from seed ``seeds[i]`` whatever ``kl_grades[i]`` says.
    """
    state_dict, meta = load_weights(weights_path)
    name = meta.get("generator")
    if name not in GENERATORS + UNCONDITIONAL_DDPMS:
        raise InputError(weights_path, f"not a study B generator (meta generator={name!r})")
    kl_grades = np.asarray(kl_grades, dtype=int)
    seeds = np.asarray(seeds, dtype=np.int64)
    if kl_grades.shape != seeds.shape:
        raise ValueError("kl_grades and seeds must have the same length")
    device = torch.device(device)
    size = int(meta["image_size"])
    out = np.empty((len(seeds), size, size), dtype=np.uint8)
    batch_size = int(sampling["batch_size"])
    if name == "wgan":
        net = WganGenerator(**meta["wgan"])
        net.load_state_dict(state_dict)
        net = net.to(device)
        for start in range(0, len(seeds), batch_size):
            part = slice(start, start + batch_size)
            out[part] = to_uint8(sample_wgan(net, seeds[part], kl_grades[part], device))
        return out
    sampler, steps = str(sampling["sampler"]), int(sampling["inference_steps"])
    stats = meta.get("standardise")
    if name == "ddpm_cond":
        unet = _unet_from(meta["unet"], state_dict, device)
        for start in range(0, len(seeds), batch_size):
            part = slice(start, start + batch_size)
            images = sample_ddpm(
                unet,
                meta["scheduler"],
                sampler,
                steps,
                seeds[part],
                kl_grades[part],
                float(meta.get("guidance_scale", 0.0)),
                device,
            )
            out[part] = to_uint8(destandardise(images, stats))
        return out
    if name in UNCONDITIONAL_DDPMS:
        models = {"all": np.arange(len(seeds))}
    else:  # ddpm_uncond: the model of each grade
        models = {
            f"kl{grade}": np.flatnonzero(kl_grades == grade) for grade in np.unique(kl_grades)
        }
    for key, where in models.items():
        unet = _unet_from(meta["unet"], state_dict if key == "all" else state_dict[key], device)
        for start in range(0, len(where), batch_size):
            part = where[start : start + batch_size]
            images = sample_ddpm(
                unet, meta["scheduler"], sampler, steps, seeds[part], None, 0.0, device
            )
            out[part] = to_uint8(destandardise(images, stats))
    return out


def generator_path_name(path: str | os.PathLike[str]) -> str:
    """``results/models/study_b/wgan.pt`` -> ``wgan``."""
    return Path(path).stem
