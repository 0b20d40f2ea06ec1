"""Study B's DDPMs (diffusers' ``UNet2DModel`` and schedulers), and the tensor conventions the
WGAN shares.

- ``ddpm_uncond`` ("Diff-Unco"): one unconditional DDPM per KL grade, so each sample carries the
  grade of the model that drew it. The five models are trained in lockstep by one resumable
  trainer (one job, one import of torch + diffusers).
- ``ddpm_cond`` ("Diff-Cond"): one DDPM conditioned on the KL grade through the class embedding of
  diffusers' ``UNet2DModel`` (``num_class_embeds = 6``: grades 0-4 and a null class used for
  classifier-free guidance). With ``guidance_scale > 0`` the label is dropped to the null class
  with probability ``label_dropout`` during training, and sampling mixes the conditional and
  unconditional noise predictions, ``eps = eps_null + (1 + w) (eps_kl - eps_null)`` (Ho &
  Salimans 2022; ``w = 0`` is plain conditional sampling).

Images are ``(n, 1, H, W)`` float tensors in ``[-1, 1]`` inside the models (:func:`to_model_range`),
``(n, H, W)`` uint8 arrays outside (:func:`to_uint8`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kneesynth import compute as compute_lib
from kneesynth.data.manifest import KL_GRADES
from kneesynth.seeding import derive_seed
from kneesynth.study_b.settings import SAMPLERS
from kneesynth.training import ResumableTrainer, step_generator

logger = logging.getLogger(__name__)

NULL_CLASS = len(KL_GRADES)  # class index of "no grade" for classifier-free guidance


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
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
        # heavy (diffusers): imported on use
        from diffusers.models.unets.unet_2d import UNet2DOutput

        folded = F.pixel_unshuffle(sample, self.patch_size)
        out = self.unet(folded, timestep, class_labels=class_labels).sample
        return UNet2DOutput(sample=F.pixel_shuffle(out, self.patch_size))


def build_unet(settings: Mapping[str, Any]):
    """A ``diffusers.UNet2DModel`` from :func:`unet_settings` output (wrapped in
    :class:`PatchedUNet` when ``patch_size`` > 1)."""
    from diffusers import UNet2DModel  # heavy (diffusers): imported on use

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
    # heavy (diffusers): imported on use
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
    from diffusers import DDPMScheduler  # heavy (diffusers): imported on use
    from diffusers.training_utils import EMAModel  # heavy (diffusers): imported on use

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
