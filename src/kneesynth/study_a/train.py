"""Study A's networks and their training: CSM (unconditional score model on DRRs), CTM (score
model with the mask concatenated along the channels) and the U-Net baseline (mask -> DRR, L1),
resumable.

torch, diffusers (kneesynth.score) and kneesynth.compute are imported inside the functions:
importing this module costs nothing until a job trains.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kneesynth.errors import InputError
from kneesynth.seeding import derive_seed
from kneesynth.study_a.settings import TRAINING_KEYS

if TYPE_CHECKING:
    import torch

from kneesynth.study_a.dataset import condition_key, load_dataset

logger = logging.getLogger(__name__)


def _split_tensors(
    data: Mapping[str, np.ndarray], split: str, condition: str | None
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """DRRs (n, 1, H, W), masks (n, 1, H, W) or None, and indices of ``split``."""
    import torch  # heavy (torch): imported on use

    index = np.flatnonzero(data["split"] == split)
    drr = torch.from_numpy(data["drr"][index])[:, None]
    mask = None
    if condition is not None:
        mask = torch.from_numpy(data[condition_key(condition)][index])[:, None]
    return drr, mask, index


# --------------------------------------------------------------------------- models


def build_network(kind: str, network: Mapping[str, Any], image_size: int, seed: int):
    """NCSN++ score model (kind csm: 1 channel in; ctm: 2) or U-Net baseline (kind unet)."""
    from kneesynth.score.ncsnpp import build_ncsnpp  # heavy (torch): imported on use
    from kneesynth.score.unet_baseline import build_unet_baseline  # heavy (torch): imported on use

    options = {
        "image_size": image_size,
        "block_out_channels": tuple(network["block_out_channels"]),
        "attention_levels": tuple(network["attention_levels"]),
        "layers_per_block": int(network["layers_per_block"]),
        "norm_num_groups": int(network["norm_num_groups"]),
        "dropout": float(network.get("dropout", 0.0)),
        "seed": seed,
    }
    if kind == "unet":
        return build_unet_baseline(condition_channels=1, **options)
    if kind in ("csm", "ctm"):
        return build_ncsnpp(condition_channels=1 if kind == "ctm" else 0, **options)
    raise ValueError(f"unknown study A model {kind!r}; expected csm, ctm or unet")


def _train_steps(params: Mapping[str, Any], n_train: int) -> int:
    if params.get("steps"):
        return int(params["steps"])
    return int(params["epochs"]) * math.ceil(n_train / int(params["batch_size"]))


def train_model(
    kind: str,
    condition: str | None,
    dataset_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    params: Mapping[str, Any],
    compute: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one study A model and write its EMA weights to ``output``.

    kind: ``csm`` (condition None), ``ctm`` or ``unet`` (condition ``contour`` or
    ``contour_bone``). ``params``: the ``study_a`` config section (seed, image_size, network,
    sigma_min, sigma_max, batch_size, lr, epochs / steps, ema_decay, grad_clip,
    checkpoint_every). Training is resumable (kneesynth.training): state in ``state_dir``,
    each step's batch and noise drawn from ``step_generator(seed, step)``.
    """
    import torch  # heavy (torch): imported on use
    from diffusers.training_utils import EMAModel  # heavy (diffusers): imported on use

    from kneesynth import compute as compute_lib  # heavy (torch): imported on use
    from kneesynth.score.losses import dsm_loss, l1_loss  # heavy (torch): imported on use
    from kneesynth.score.sde import VESDE  # heavy (torch): imported on use
    from kneesynth.training import (  # heavy (torch): imported on use
        ResumableTrainer,
        save_weights,
        step_generator,
    )

    if (kind == "csm") != (condition is None):
        raise ValueError("CSM is unconditional; CTM and U-Net need a condition")
    data = load_dataset(dataset_path)
    drr, mask, _ = _split_tensors(data, "train", condition)
    image_size = int(params["image_size"])
    if drr.shape[-1] != image_size:
        raise InputError(dataset_path, f"images are {drr.shape[-1]} px, config says {image_size}")
    name = kind if condition is None else f"{kind}_{condition}"
    seed = derive_seed(int(params["seed"]), "study_a", name)
    device = compute_lib.device_for(compute)
    net = build_network(kind, params["network"], image_size, derive_seed(seed, "init"))
    forward = compute_lib.prepare_model(net, device, compute)
    net.train()
    ema = EMAModel(net.parameters(), decay=float(params["ema_decay"]))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(params["lr"]))
    sde = VESDE(float(params["sigma_min"]), float(params["sigma_max"]))
    # the data set fits in memory: keep it on the device as tensors (no DataLoader round trips)
    drr = drr.to(device)
    mask = mask.to(device) if mask is not None else None
    channels_last = compute_lib.settings(compute)["channels_last"]
    total_steps = _train_steps(params, drr.shape[0])
    settings = {
        "kind": kind,
        "condition": condition,
        "n_train": int(drr.shape[0]),
        "drr_sum": float(drr.double().sum()),
        "params": {k: params.get(k) for k in TRAINING_KEYS},
    }
    trainer = ResumableTrainer(
        state_dir,
        {"model": net, "ema": ema, "optimizer": optimizer},
        total_steps=total_steps,
        checkpoint_every=int(params["checkpoint_every"]),
        settings=settings,
    )
    batch_size = int(params["batch_size"])
    grad_clip = params.get("grad_clip")
    for step in trainer.steps():
        if step == trainer.start_step:
            ema.to(device)
        generator = step_generator(seed, step)
        index = torch.randint(drr.shape[0], (batch_size,), generator=generator).to(device)
        images = drr[index]
        masks = mask[index] if mask is not None else None
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            masks = (
                masks.contiguous(memory_format=torch.channels_last) if masks is not None else None
            )
        with compute_lib.autocast(device, compute):
            if kind == "unet":
                loss = l1_loss(forward, masks, images)
            else:
                loss = dsm_loss(forward, sde, images, generator, condition=masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(grad_clip))
        optimizer.step()
        ema.step(net.parameters())
        trainer.record(step, loss=float(loss.detach()))
    trainer.finish()
    ema.copy_to(net.parameters())
    meta = {
        "kind": kind,
        "condition": condition or "",
        "image_size": image_size,
        "steps": total_steps,
        "seed": seed,
        "sigma_min": float(params["sigma_min"]),
        "sigma_max": float(params["sigma_max"]),
        "final_loss": trainer.history[-1]["loss"] if trainer.history else float("nan"),
    }
    save_weights(output, {k: v.detach().cpu() for k, v in net.state_dict().items()}, meta)
    logger.info(
        "%s: %d steps, final loss %.4g -> %s", name, total_steps, meta["final_loss"], output
    )
    return meta


def load_network(kind: str, weights: str | os.PathLike[str], params: Mapping[str, Any], device):
    """Rebuild a study A network from the config and load its weights (eval mode)."""
    from kneesynth.training import load_weights  # heavy (torch): imported on use

    state_dict, meta = load_weights(weights)
    if meta.get("kind") not in (None, kind):
        raise InputError(weights, f"holds a {meta.get('kind')} model, expected {kind}")
    net = build_network(kind, params["network"], int(params["image_size"]), seed=0)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise InputError(weights, f"weights do not fit the configured network ({first})") from None
    return net.to(device).eval()
