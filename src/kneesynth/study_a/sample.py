"""Study A's sampling: every test image of one model under one condition. CSM by SDEdit from
the mask at t0, CTM from sigma_max z with the mask at every step, the U-Net in one pass.

torch and kneesynth.score are imported inside the functions (heavy; see study_a.train).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import save_npz
from kneesynth.progress import ProgressLog
from kneesynth.seeding import derive_seed

if TYPE_CHECKING:
    import torch

    from kneesynth.score.sde import VESDE
from kneesynth.study_a.dataset import condition_key, load_dataset
from kneesynth.study_a.train import load_network

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- sampling


def select_test_images(data: Mapping[str, np.ndarray], max_images: int | None) -> np.ndarray:
    """Indices of the test images to generate: all, or ``max_images`` spread evenly."""
    index = np.flatnonzero(data["split"] == "test")
    if max_images and index.size > max_images:
        index = index[np.linspace(0, index.size - 1, int(max_images)).round().astype(int)]
    return index


def make_sampler(params: Mapping[str, Any], sde: VESDE):
    """The sampler named in ``params['sampler']['name']`` with its settings."""
    from kneesynth.score.sampling import get_sampler  # heavy (torch): imported on use

    sampler_params = params["sampler"]
    name = sampler_params["name"]
    options = dict(sampler_params.get(name) or {})
    return get_sampler(name, sde, eps=float(sampler_params["eps"]), **options)


def generate(
    kind: str,
    net: torch.nn.Module,
    masks: torch.Tensor,
    params: Mapping[str, Any],
    seed: int,
    sampler=None,
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Generate DRRs (n, 1, H, W) for masks (n, 1, H, W); returns (images, evaluations/image).

    csm: SDEdit from the mask at t0; ctm: from the prior with the mask at every step;
    unet: one forward pass. Batches of ``params['sample_batch_size']``, batch b seeded by
    derive_seed(seed, b). Output is not clipped. ``name`` (``sampling ctm/contour``) titles
    the progress lines: network evaluations done, rate and ETA.
    """
    import torch  # heavy (torch): imported on use

    from kneesynth import compute as compute_lib  # heavy (torch): imported on use
    from kneesynth.score.sampling import (  # heavy (torch): imported on use
        CountingScoreFn,
        initial_sample,
    )
    from kneesynth.score.sde import VESDE  # heavy (torch): imported on use

    device = torch.device(device)
    if kind != "unet":  # the U-Net's one forward pass reads neither the SDE nor a sampler
        sde = VESDE(float(params["sigma_min"]), float(params["sigma_max"]))
        sampler = sampler or make_sampler(params, sde)
    batch_size = int(params["sample_batch_size"])
    n_batches = -(-masks.shape[0] // batch_size)
    if kind == "unet":
        progress = ProgressLog(name or "sampling unet", n_batches, "batch", log=logger)
    else:
        t_first = float(params["t0"]) if kind == "csm" else 1.0
        per_batch = sampler.num_evaluations(t_first)
        progress = ProgressLog(
            name or f"sampling {kind}", n_batches * per_batch, "evaluation", log=logger
        )
    outputs, evaluations = [], 1
    for batch, start in enumerate(range(0, masks.shape[0], batch_size)):
        mask = masks[start : start + batch_size].to(device)
        generator = torch.Generator().manual_seed(derive_seed(seed, "batch", batch))
        with torch.no_grad():
            if kind == "unet":
                with compute_lib.autocast(device, compute):
                    outputs.append(net(mask).float().cpu())
                progress.advance()
                continue
            autocast = (lambda: compute_lib.autocast(device, compute)) if compute else None
            if kind == "csm":
                t_start = float(params["t0"])
                x = initial_sample(
                    sde, mask.shape, generator, start=mask, t_start=t_start, device=device
                )
                score_fn = CountingScoreFn(net, None, autocast, progress)
            elif kind == "ctm":
                t_start = 1.0
                x = initial_sample(sde, mask.shape, generator, t_start=t_start, device=device)
                score_fn = CountingScoreFn(net, mask, autocast, progress)
            else:
                raise ValueError(f"unknown study A model {kind!r}")
            outputs.append(sampler.sample(score_fn, x, t_start, generator).cpu())
            evaluations = score_fn.evaluations
    return torch.cat(outputs), evaluations


def sample_test_images(
    kind: str,
    condition: str,
    dataset_path: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    output: str | os.PathLike[str],
    params: Mapping[str, Any],
    compute: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate the test images of one model under one condition -> ``output`` .npz.

    Arrays: generated (n, H, W) float32 clipped to the data range [0, 1]; target, mask
    (n, H, W); volume (n,) str; view (n,) int; evaluations () int (network evaluations per
    image); sampler () str.
    """
    import torch  # heavy (torch): imported on use

    from kneesynth import compute as compute_lib  # heavy (torch): imported on use

    data = load_dataset(dataset_path)
    index = select_test_images(data, params.get("max_test_images"))
    if index.size == 0:
        raise InputError(dataset_path, "no test images")
    device = compute_lib.device_for(compute)
    net = load_network(kind, weights, params, device)
    masks = torch.from_numpy(data[condition_key(condition)][index])[:, None]
    seed = derive_seed(int(params["seed"]), "study_a", "sample", kind, condition)
    sampler_name = "unet" if kind == "unet" else params["sampler"]["name"]
    generated, evaluations = generate(
        kind,
        net,
        masks,
        params,
        seed,
        device=device,
        compute=compute,
        name=f"sampling {kind}/{condition}",
    )
    save_npz(
        output,
        generated=generated[:, 0].clamp(0, 1).numpy().astype(np.float32),
        target=data["drr"][index],
        mask=masks[:, 0].numpy(),
        volume=data["volume"][index],
        view=data["view"][index],
        evaluations=np.array(evaluations),
        sampler=np.array(sampler_name),
    )
    logger.info(
        "%s/%s: %d test images, %s sampler, %d evaluations per image -> %s",
        kind,
        condition,
        index.size,
        sampler_name,
        evaluations,
        output,
    )
    return {"images": int(index.size), "evaluations": int(evaluations)}
