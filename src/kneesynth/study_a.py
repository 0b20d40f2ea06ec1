"""Study A (Mei et al.): segmentation-guided DRR generation with CSM, CTM and a U-Net baseline.

Steps, each called by one workflow script:

1. :func:`assemble_dataset` - per-volume DRRs + segmentations + splits -> one dataset .npz
   with ``drr``, ``contour``, ``bone`` (n, H, W) float32 and ``volume``, ``view``, ``split`` (n,).
2. :func:`train_model` - CSM (unconditional score model on DRRs), CTM (score model with the
   mask concatenated along the channels) or U-Net baseline (mask -> DRR, L1), resumable.
3. :func:`sample_test_images` - generates every test image of one model under one condition:
   CSM by SDEdit from the mask at t0, CTM from sigma_max z with the mask at every step, the
   U-Net in one pass.
4. :func:`evaluate_samples` (MAE, PSNR per image), :func:`table1` (mean, std and the CI clustered by
   volume beside the paper's Table I), :func:`paired_tests` (t over test volumes, Holm),
   :func:`figure3`.

Conditions: ``contour`` (soft tissue 0.5, background 0) and ``contour_bone`` (bone 1, soft
tissue 0.5, background 0; the segmentation file's ``bone`` map). Images are in [0, 1].
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import atomic_path, load_npz, read_tsv, save_npz, write_tsv
from kneesynth.progress import ProgressLog
from kneesynth.seeding import derive_seed
from kneesynth.study_a_settings import PAPER_TABLE1, TRAINING_KEYS

if TYPE_CHECKING:
    import torch

    from kneesynth.score.sde import VESDE

# torch, diffusers (kneesynth.score) and kneesynth.compute are imported inside the functions
# that train and sample: the dataset, table, test and figure jobs of study A do without them.

logger = logging.getLogger(__name__)

CONDITIONS = ("contour", "contour_bone")
MODELS = ("unet", "csm", "ctm")  # the column order of Table I and Fig. 3
MODEL_LABELS = {"unet": "U-Net", "csm": "CSM", "ctm": "CTM"}
CONDITION_LABELS = {"contour": "contour", "contour_bone": "contour + bone"}
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- dataset


def condition_key(condition: str) -> str:
    """Dataset array holding the mask of ``condition``."""
    if condition == "contour":
        return "contour"
    if condition == "contour_bone":
        return "bone"
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def _resize(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(n, H, W) -> (n, size, size); area averaging for DRRs, nearest for label masks."""
    if images.shape[-2:] == (size, size):
        return images.astype(np.float32)
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=(size, size), mode=mode)[:, 0].numpy()


def _read_volume(drr_path: Path, segmentation_path: Path) -> dict[str, np.ndarray]:
    drr_file = load_npz(drr_path)
    seg_file = load_npz(segmentation_path)
    if "drr" not in drr_file:
        raise InputError(drr_path, "no 'drr' array")
    for key in ("contour", "bone"):
        if key not in seg_file:
            raise InputError(segmentation_path, f"no {key!r} array")
    drr = drr_file["drr"]
    if drr.ndim != 3:
        raise InputError(drr_path, f"'drr' must be (views, H, W), got shape {drr.shape}")
    if not np.isfinite(drr).all() or drr.min() < 0 or drr.max() > 1:
        raise InputError(drr_path, "'drr' must be finite and in [0, 1]")
    for key in ("contour", "bone"):
        mask = seg_file[key]
        if mask.shape != drr.shape:
            raise InputError(
                segmentation_path, f"{key!r} has shape {mask.shape}, the DRRs {drr.shape}"
            )
        if not np.isin(mask, (0.0, 0.5, 1.0)).all():
            raise InputError(segmentation_path, f"{key!r} must hold only 0, 0.5 and 1")
    return {"drr": drr, "contour": seg_file["contour"], "bone": seg_file["bone"]}


def assemble_dataset(
    drr_paths: Sequence[str | os.PathLike[str]],
    segmentation_paths: Sequence[str | os.PathLike[str]],
    volumes_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    image_size: int,
) -> dict[str, int]:
    """Collect every volume's views into one .npz at ``image_size`` x ``image_size``.

    ``volumes_tsv``: columns volume, split (per volume: the default split by volume) and
    optionally view (the paper's split over images: one row per volume and view). Volumes in
    the file without DRRs are an error; DRR files without a row are ignored.
    Output arrays: drr, contour, bone (n, S, S) float32; volume (n,) str; view (n,) int64;
    split (n,) str. Returns the number of images per split.
    """
    splits = read_tsv(volumes_tsv, required=["volume", "split"])
    bad = sorted(set(splits["split"]) - set(SPLITS))
    if bad:
        raise InputError(volumes_tsv, f"unknown split(s) {', '.join(map(str, bad))}")
    by_view = "view" in splits.columns
    drr_by_volume = {Path(p).name.removesuffix(".npz"): Path(p) for p in drr_paths}
    seg_by_volume = {Path(p).name.removesuffix(".npz"): Path(p) for p in segmentation_paths}
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("drr", "contour", "bone")}
    volume_column, view_column, split_column = [], [], []
    for volume in sorted(dict.fromkeys(splits["volume"].astype(str))):
        if volume not in drr_by_volume or volume not in seg_by_volume:
            raise InputError(volumes_tsv, f"volume {volume} has no DRR or segmentation file")
        images = _read_volume(drr_by_volume[volume], seg_by_volume[volume])
        views = images["drr"].shape[0]
        rows = splits[splits["volume"].astype(str) == volume]
        if by_view:
            split_of_view = dict(
                zip(rows["view"].astype(int), rows["split"].astype(str), strict=True)
            )
            missing = sorted(set(range(views)) - set(split_of_view))
            if missing:
                raise InputError(volumes_tsv, f"volume {volume}: no split for view(s) {missing}")
            view_splits = [split_of_view[v] for v in range(views)]
        else:
            if rows["split"].nunique() != 1:
                raise InputError(volumes_tsv, f"volume {volume} is in more than one split")
            view_splits = [str(rows["split"].iloc[0])] * views
        arrays["drr"].append(_resize(images["drr"], image_size, "area"))
        arrays["contour"].append(_resize(images["contour"], image_size, "nearest"))
        arrays["bone"].append(_resize(images["bone"], image_size, "nearest"))
        volume_column += [volume] * views
        view_column += list(range(views))
        split_column += view_splits
    if not volume_column:
        raise InputError(volumes_tsv, "no volumes listed")
    split_array = np.array(split_column)
    counts = {split: int(np.sum(split_array == split)) for split in SPLITS}
    for split in ("train", "test"):
        if counts[split] == 0:
            raise InputError(volumes_tsv, f"no {split} images")
    save_npz(
        output,
        drr=np.concatenate(arrays["drr"]).astype(np.float32),
        contour=np.concatenate(arrays["contour"]).astype(np.float32),
        bone=np.concatenate(arrays["bone"]).astype(np.float32),
        volume=np.array(volume_column),
        view=np.array(view_column, dtype=np.int64),
        split=split_array,
    )
    logger.info("study A dataset: %s images per split -> %s", counts, output)
    return counts


def load_dataset(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the dataset .npz written by :func:`assemble_dataset` (checked)."""
    data = load_npz(path)
    missing = [k for k in ("drr", "contour", "bone", "volume", "view", "split") if k not in data]
    if missing:
        raise InputError(path, f"missing array(s) {', '.join(missing)}")
    return data


def _split_tensors(
    data: Mapping[str, np.ndarray], split: str, condition: str | None
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """DRRs (n, 1, H, W), masks (n, 1, H, W) or None, and indices of ``split``."""
    import torch

    index = np.flatnonzero(data["split"] == split)
    drr = torch.from_numpy(data["drr"][index])[:, None]
    mask = None
    if condition is not None:
        mask = torch.from_numpy(data[condition_key(condition)][index])[:, None]
    return drr, mask, index


# --------------------------------------------------------------------------- models


def build_network(kind: str, network: Mapping[str, Any], image_size: int, seed: int):
    """NCSN++ score model (kind csm: 1 channel in; ctm: 2) or U-Net baseline (kind unet)."""
    from kneesynth.score.ncsnpp import build_ncsnpp
    from kneesynth.score.unet_baseline import build_unet_baseline

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
    import torch
    from diffusers.training_utils import EMAModel

    from kneesynth import compute as compute_lib
    from kneesynth.score.losses import dsm_loss, l1_loss
    from kneesynth.score.sde import VESDE
    from kneesynth.training import ResumableTrainer, save_weights, step_generator

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
    from kneesynth.training import load_weights

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


# --------------------------------------------------------------------------- sampling


def select_test_images(data: Mapping[str, np.ndarray], max_images: int | None) -> np.ndarray:
    """Indices of the test images to generate: all, or ``max_images`` spread evenly."""
    index = np.flatnonzero(data["split"] == "test")
    if max_images and index.size > max_images:
        index = index[np.linspace(0, index.size - 1, int(max_images)).round().astype(int)]
    return index


def make_sampler(params: Mapping[str, Any], sde: VESDE):
    """The sampler named in ``params['sampler']['name']`` with its settings."""
    from kneesynth.score.sampling import get_sampler

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
    import torch

    from kneesynth import compute as compute_lib
    from kneesynth.score.sampling import CountingScoreFn, initial_sample
    from kneesynth.score.sde import VESDE

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
    import torch

    from kneesynth import compute as compute_lib

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


# --------------------------------------------------------------------------- evaluation


def image_metrics(generated: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """MAE and PSNR (dB, data range 1) per image of (n, H, W) arrays, in float64.

    The formulas of MONAI's ``MAEMetric`` and ``PSNRMetric`` (``20 log10(1) - 10 log10(MSE)``),
    written out here because importing MONAI (several CPU seconds) for two means would make
    this table job slower than its work; tests/test_study_a.py checks them against MONAI.
    """
    error = np.asarray(generated, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    axes = tuple(range(1, error.ndim))
    mae = np.abs(error).mean(axis=axes)
    with np.errstate(divide="ignore"):
        psnr = -10.0 * np.log10(np.square(error).mean(axis=axes))
    return {"mae": mae, "psnr": psnr}


def _sample_name(path: str | os.PathLike[str]) -> tuple[str, str]:
    stem = Path(path).name.removesuffix(".npz")
    model, _, condition = stem.partition("_")
    if model not in MODELS or condition not in CONDITIONS:
        raise InputError(
            path, "sample file must be named {unet,csm,ctm}_{contour,contour_bone}.npz"
        )
    return model, condition


def evaluate_samples(
    sample_paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]
):
    """Per-image MAE and PSNR of every sample file -> TSV (study, model, condition, volume,
    view, image, mae, psnr, evaluations). Returns the DataFrame."""
    import pandas as pd

    frames = []
    for path in sample_paths:
        model, condition = _sample_name(path)
        sample = load_npz(path)
        for key in ("generated", "target", "volume", "view"):
            if key not in sample:
                raise InputError(path, f"no {key!r} array")
        if sample["generated"].shape != sample["target"].shape:
            raise InputError(path, "generated and target differ in shape")
        metrics = image_metrics(sample["generated"], sample["target"])
        if not (np.isfinite(metrics["mae"]).all() and np.isfinite(metrics["psnr"]).all()):
            raise InputError(path, "non-finite MAE or PSNR (identical or broken images)")
        frames.append(
            pd.DataFrame(
                {
                    "study": "A",
                    "model": model,
                    "condition": condition,
                    "volume": sample["volume"].astype(str),
                    "view": sample["view"].astype(int),
                    "image": np.arange(sample["generated"].shape[0]),
                    "mae": metrics["mae"],
                    "psnr": metrics["psnr"],
                    "evaluations": int(sample.get("evaluations", np.array(1))),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    write_tsv(output, table)
    return table


def _read_metrics(metrics_tsv):
    return read_tsv(metrics_tsv, required=["model", "condition", "volume", "view", "mae", "psnr"])


def _subset(metrics, metrics_tsv, model: str, condition: str):
    subset = metrics[(metrics["model"] == model) & (metrics["condition"] == condition)]
    if subset.empty:
        raise InputError(metrics_tsv, f"no rows for {model} under {condition}")
    return subset


def table1(
    metrics_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    confidence: float = 0.95,
):
    """Table I: mean and std (ddof 1, over images) per model x condition x metric beside the
    paper's, the 95 % CI of the mean clustered by test volume (t over volumes; empty with one
    test volume), and the network evaluations per image of the model's sampler."""
    import pandas as pd

    from kneesynth.stats import Statistic

    metrics = _read_metrics(metrics_tsv)
    rows = []
    for model in MODELS:
        for condition in CONDITIONS:
            subset = _subset(metrics, metrics_tsv, model, condition)
            volumes = subset["volume"].astype(str).to_numpy()
            evaluations = (
                int(subset["evaluations"].iloc[0]) if "evaluations" in subset else float("nan")
            )
            for metric in ("mae", "psnr"):
                values = subset[metric].to_numpy(dtype=float)
                estimate = Statistic.mean(values).estimate(volumes)
                low, high = estimate.interval(confidence)
                paper_mean, paper_std = PAPER_TABLE1[(model, condition, metric)]
                mean = float(values.mean())
                rows.append(
                    {
                        "study": "A",
                        "model": model,
                        "condition": condition,
                        "metric": metric,
                        "mean": mean,
                        "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                        "n": int(values.size),
                        "n_volumes": estimate.n_units,
                        "ci_low": low,
                        "ci_high": high,
                        "value": mean,
                        "paper_value": paper_mean,
                        "paper_std": paper_std,
                        "evaluations_per_image": evaluations,
                        "unit": "dB" if metric == "psnr" else "intensity (range 1)",
                        "note": (
                            f"{100 * confidence:g} % CI of the mean, t over {estimate.n_units} "
                            "test volumes"
                            if estimate.testable
                            else estimate.note
                        ),
                    }
                )
    table = pd.DataFrame(rows)
    write_tsv(output, table)
    return table


#: the study A comparisons: (first, second, condition of first, condition of second)
COMPARISONS = [
    (first, second, condition, condition)
    for condition in CONDITIONS
    for first, second in (("ctm", "unet"), ("ctm", "csm"), ("unet", "csm"))
] + [(model, model, "contour", "contour_bone") for model in MODELS]


def paired_tests(
    metrics_tsv: str | os.PathLike[str],
    output: str | os.PathLike[str],
    confidence: float = 0.95,
    bootstrap_resamples: int = 2000,
    seed: int = 0,
):
    """Model comparisons over test volumes, Holm-adjusted together.

    The unit is the test volume: the views of one volume share its anatomy, so images are
    not independent. Per metric and comparison (CTM vs U-Net, CTM vs CSM, U-Net vs CSM under
    each condition; contour vs contour + bone for each model), the mean paired difference
    first - second over the same test images is tested by a t-test over volumes (the
    cluster-robust variance of :class:`kneesynth.stats.Statistic`: with equal views per
    volume, the one-sample t-test of the per-volume mean differences, V - 1 df), with its t
    interval (``ci_low``, ``ci_high``) and, beside it, a percentile cluster bootstrap by
    volume (``bootstrap_ci_low``, ``bootstrap_ci_high``; too narrow at a few volumes). With
    one test volume no test is possible: ``p_value`` is empty and the note says why. Each
    model is one trained network, so the tests generalise over test volumes, not over
    training runs.
    """
    import pandas as pd

    from kneesynth.seeding import derive_seed
    from kneesynth.stats import Statistic, cluster_bootstrap_interval, difference_test, holm

    metrics = _read_metrics(metrics_tsv)
    key = ["volume", "view"]
    rows = []
    for metric in ("mae", "psnr"):
        for first, second, condition_a, condition_b in COMPARISONS:
            a = _subset(metrics, metrics_tsv, first, condition_a).set_index(key)[metric]
            b = _subset(metrics, metrics_tsv, second, condition_b).set_index(key)[metric]
            a, b = a.align(b, join="inner")
            if a.size < 2:
                raise InputError(metrics_tsv, "fewer than 2 test images shared by a comparison")
            volumes = a.index.get_level_values("volume").astype(str).to_numpy()
            same_condition = condition_a == condition_b
            comparison = (
                f"{first}_vs_{second}" if same_condition else f"{first}:contour_vs_contour_bone"
            )
            result = difference_test(
                Statistic.mean(a.to_numpy(float)), Statistic.mean(b.to_numpy(float)), volumes,
                unit="volume", test="t_over_volumes", confidence=confidence,
            )  # fmt: skip
            boot_low, boot_high = cluster_bootstrap_interval(
                a.to_numpy(float) - b.to_numpy(float), volumes, confidence=confidence,
                n_resamples=bootstrap_resamples, seed=derive_seed(seed, comparison, metric),
            )  # fmt: skip
            rows.append(
                {
                    "study": "A",
                    "comparison": comparison,
                    "test": result.test,
                    "statistic": result.statistic,
                    "p_value": result.p_value,
                    "n": result.n,
                    "unit": result.unit,
                    "n_units": result.n_units,
                    "metric": metric,
                    "condition": condition_a if same_condition else "contour_vs_contour_bone",
                    "model": f"{first}_vs_{second}" if same_condition else first,
                    "difference": result.difference,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "bootstrap_ci_low": boot_low,
                    "bootstrap_ci_high": boot_high,
                    "df": result.df,
                    "note": result.note,
                }
            )
    table = pd.DataFrame(rows)
    table.insert(5, "p_adjusted", holm(table["p_value"].to_numpy()))
    tested = int(table["p_value"].notna().sum())
    table["correction"] = f"holm over the {tested} testable study A tests"
    write_tsv(output, table)
    return table


def figure3(
    sample_paths: Sequence[str | os.PathLike[str]],
    output_png: str | os.PathLike[str],
    output_pdf: str | os.PathLike[str] | None = None,
    cases: int = 2,
) -> None:
    """Fig. 3 layout: rows = test cases under both conditions; columns = condition, U-Net,
    CSM, CTM, ground truth, then the absolute error maps |model - ground truth|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = {}
    for path in sample_paths:
        samples[_sample_name(path)] = load_npz(path)
    missing = [(m, c) for m in MODELS for c in CONDITIONS if (m, c) not in samples]
    if missing:
        raise ValueError(f"figure 3 needs samples of every model and condition; missing {missing}")
    n_images = min(s["generated"].shape[0] for s in samples.values())
    picks = np.linspace(0, n_images - 1, min(cases, n_images)).round().astype(int)
    rows = [(i, c) for i in picks for c in CONDITIONS]
    columns = ["condition", *[MODEL_LABELS[m] for m in MODELS], "ground truth"]
    columns += [f"|{MODEL_LABELS[m]} - GT|" for m in MODELS]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.6 * len(columns), 1.7 * len(rows)), squeeze=False
    )
    error_max = 0.25
    for r, (i, condition) in enumerate(rows):
        reference = samples[("ctm", condition)]
        target = reference["target"][i]
        panels = [(reference["mask"][i], "gray", 1.0)]
        panels += [(samples[(m, condition)]["generated"][i], "gray", 1.0) for m in MODELS]
        panels += [(target, "gray", 1.0)]
        panels += [
            (np.abs(samples[(m, condition)]["generated"][i] - target), "magma", error_max)
            for m in MODELS
        ]
        for c, (image, cmap, vmax) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                label = f"{reference['volume'][i]}\nview {int(reference['view'][i])}\n{CONDITION_LABELS[condition]}"
                ax.set_ylabel(label, fontsize=6)
    fig.subplots_adjust(right=0.9)
    colorbar_axis = fig.add_axes((0.92, 0.3, 0.012, 0.4))
    fig.colorbar(im, cax=colorbar_axis, label="absolute error")
    fig.suptitle("Study A (Fig. 3 of Mei et al.): DRRs generated from segmentations", fontsize=9)
    for path in [output_png, output_pdf]:
        if path is None:
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=Path(path).suffix.lstrip("."))
    plt.close(fig)
