"""Train on synthetic, test on real: what synthetic images are worth (Akbar et al.).

Akbar et al. trained segmentation networks on synthetic brain MR images and on real ones and
found Dice scores of the synthetic-trained networks at 80-90 % of the real-trained ones. Here:

- **Bone segmentation (study A).** The trained CTM (condition contour + bone) generates a DRR
  for each bone mask of the validation volumes (``checks.utility.mask_split``), masks it never
  saw in training: a CTM that copied its training DRRs would otherwise hand the segmenter
  real images and win. A MONAI U-Net learns DRR -> bone mask (3 classes: background, soft
  tissue, bone = the mask values 0, 0.5, 1) once from these (generated DRR, mask) pairs and
  once from the real (DRR, mask) pairs of the same masks, with the same seed and steps. Both
  are tested on the real test DRRs: Dice per image (MONAI ``DiceMetric``, foreground classes,
  mean over soft tissue and bone) and the ratio of mean Dice synthetic / real, with a t
  interval over test volumes (delta method; none with one test volume). Every generated
  DRR also goes through the memorisation check against the CTM's training DRRs
  (:func:`kneesynth.checks.memorization.memorization_check`, calibrated on the test DRRs) and the
  table says how many were flagged.
- **KL grading (study B).** The KL classifier trained on synthetic images only (arm
  ``syn-<generator>``) vs on real images only (arm ``real``), both tested on the real test
  split (the classifiers stage's predictions): accuracy ratio (mean over seeds) with a t
  interval over test participants and training seeds (delta method).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from kneesynth import compute as compute_lib
from kneesynth.checks.memorization import memorization_check
from kneesynth.checks.settings import PAPER_DICE_NOTE
from kneesynth.errors import InputError
from kneesynth.io import load_npz, save_npz
from kneesynth.seeding import derive_seed
from kneesynth.stats import Statistic
from kneesynth.study_a.dataset import condition_key, load_dataset
from kneesynth.study_a.sample import generate
from kneesynth.study_a.train import load_network
from kneesynth.tables import table_row
from kneesynth.training import ResumableTrainer, step_generator

logger = logging.getLogger(__name__)


BONE_CLASSES = 3  # background 0, soft tissue 0.5, bone 1


# --------------------------------------------------------------------------------------------
# Synthetic training pairs from the study A CTM
# --------------------------------------------------------------------------------------------


def select_mask_images(split: np.ndarray, mask_split: str, max_images: int | None) -> np.ndarray:
    """Indices of the ``mask_split`` images to use: all, or ``max_images`` spread evenly."""
    index = np.flatnonzero(np.asarray(split) == mask_split)
    if max_images and index.size > max_images:
        index = index[np.linspace(0, index.size - 1, int(max_images)).round().astype(int)]
    return index


def sample_pairs(
    dataset_path: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    output: str | os.PathLike[str],
    study_a: Mapping[str, Any],
    mask_split: str,
    max_images: int | None,
    seed: int,
    compute: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Generate one DRR per bone mask of ``mask_split`` with the trained CTM (contour + bone).

    Uses study A's own loader and sampler (:func:`kneesynth.study_a.train.load_network`,
    :func:`kneesynth.study_a.sample.generate`, the ``study_a`` config section for the network and
    sampler). Output .npz: generated (n, H, W) float32 clipped to [0, 1]; mask (n, H, W) the
    bone masks; index (n,) rows of the dataset; volume (n,); view (n,).
    """

    data = load_dataset(dataset_path)
    index = select_mask_images(data["split"], mask_split, max_images)
    if index.size == 0:
        raise InputError(dataset_path, f"no {mask_split} images to generate training pairs from")
    device = compute_lib.device_for(compute)
    net = load_network("ctm", weights, study_a, device)
    masks = torch.from_numpy(data[condition_key("contour_bone")][index])[:, None]
    generated, evaluations = generate(
        "ctm",
        net,
        masks,
        study_a,
        derive_seed(seed, "utility", "ctm", mask_split),
        device=device,
        compute=compute,
        name="sampling ctm/contour_bone (training masks, utility)",
    )
    save_npz(
        output,
        generated=generated[:, 0].clamp(0, 1).numpy().astype(np.float32),
        mask=masks[:, 0].numpy(),
        index=index.astype(np.int64),
        volume=data["volume"][index],
        view=data["view"][index],
        mask_split=np.array(mask_split),
        evaluations=np.array(evaluations),
    )
    logger.info(
        "CTM: %d %s masks -> %s (%d evaluations per image)",
        index.size,
        mask_split,
        output,
        evaluations,
    )
    return {"images": int(index.size), "evaluations": int(evaluations)}


# --------------------------------------------------------------------------------------------
# Bone segmenter (MONAI U-Net)
# --------------------------------------------------------------------------------------------


def bone_classes(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mask values {0, 0.5, 1} -> class labels {0, 1, 2} (int64, same shape)."""
    labels = np.rint(np.asarray(mask, dtype=np.float64) * 2).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 2):
        raise ValueError("bone mask values must be 0, 0.5 or 1")
    return labels


def build_segmenter(segmenter: Mapping[str, Any]) -> torch.nn.Module:
    """MONAI ``UNet``: (b, 1, H, W) DRR -> (b, 3, H, W) logits of background, soft tissue, bone.

    ``segmenter`` keys: channels (list), strides (list, one fewer), num_res_units.
    """
    from monai.networks.nets import UNet  # heavy (monai): imported on use

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=BONE_CLASSES,
        channels=tuple(int(c) for c in segmenter["channels"]),
        strides=tuple(int(s) for s in segmenter["strides"]),
        num_res_units=int(segmenter["num_res_units"]),
    )


def train_segmenter(
    drr: np.ndarray,
    mask: np.ndarray,
    segmenter: Mapping[str, Any],
    seed: int,
    device: torch.device | str = "cpu",
    state_dir: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """Train the U-Net on ``drr`` (n, H, W) in [0, 1] -> ``mask`` (n, H, W) in {0, 0.5, 1}.

    MONAI ``DiceCELoss`` (softmax, one-hot target), Adam, ``segmenter['steps']`` steps of
    ``batch_size`` images drawn (with random horizontal flips) from
    ``kneesynth.training.step_generator(seed, step)``; resumable when ``state_dir`` is given.
    """
    from monai.losses import DiceCELoss  # heavy (monai): imported on use

    device = torch.device(device)
    images = torch.from_numpy(np.asarray(drr, dtype=np.float32))[:, None].to(device)
    labels = torch.from_numpy(bone_classes(mask))[:, None].to(device)
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_segmenter(segmenter).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(segmenter["learning_rate"]))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps, batch_size = int(segmenter["steps"]), int(segmenter["batch_size"])
    settings = {
        "segmenter": dict(segmenter),
        "seed": seed,
        "n": len(images),
        "sum": float(images.double().sum()),
    }
    if state_dir is not None:
        trainer = ResumableTrainer(
            state_dir,
            {"model": model, "optimizer": optimizer},
            steps,
            max(1, steps // 4),
            settings=settings,
        )
        step_iterator = trainer.steps()
    else:
        trainer, step_iterator = None, iter(range(steps))
    model.train()
    for step in step_iterator:
        generator = step_generator(seed, step)
        batch = torch.randint(len(images), (batch_size,), generator=generator).to(device)
        flip = (torch.rand(batch_size, generator=generator) < 0.5).view(-1, 1, 1, 1).to(device)
        x = torch.where(flip, images[batch].flip(-1), images[batch])
        y = torch.where(flip, labels[batch].flip(-1), labels[batch])
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if trainer is not None:
            trainer.record(step, loss=float(loss.detach()))
    if trainer is not None:
        trainer.finish()
    return model.eval()


@torch.no_grad()
def segment(
    model: torch.nn.Module,
    drr: np.ndarray,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class labels (n, H, W) int64 of ``drr`` (n, H, W)."""
    images = torch.from_numpy(np.asarray(drr, dtype=np.float32))[:, None]
    parts = [
        model(images[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts).numpy()


def dice_per_image(
    predicted: np.ndarray, truth: np.ndarray, num_classes: int = BONE_CLASSES
) -> np.ndarray:
    """Dice of every foreground class per image: labels (n, H, W) -> (n, num_classes - 1).

    MONAI ``DiceMetric`` (include_background=False); a class absent from both prediction and
    truth of an image scores 1 (nothing to find, nothing wrongly found), absent from the truth
    only: 0.
    """
    from monai.metrics import DiceMetric  # heavy (monai): imported on use
    from monai.networks.utils import one_hot  # heavy (monai): imported on use

    y_pred = one_hot(torch.from_numpy(np.asarray(predicted, dtype=np.int64))[:, None], num_classes)
    y = one_hot(torch.from_numpy(np.asarray(truth, dtype=np.int64))[:, None], num_classes)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    return metric(y_pred, y).numpy().astype(np.float64)


def ratio_interval(
    numerator: Statistic, denominator: Statistic, units, confidence: float = 0.95
) -> tuple[float, float, float, str]:
    """numerator / denominator (seed-averaged) with its t interval over ``units`` (and seeds):
    the delta method of :class:`kneesynth.stats.Statistic`. Returns (ratio, low, high, note);
    NaN bounds (and the reason in the note) when the units cannot support an interval."""
    estimate = (numerator / denominator).estimate(units)
    low, high = estimate.interval(confidence, bounds=(0.0, math.inf))
    if estimate.testable:
        seeds = f" x {estimate.n_seeds} seeds" if estimate.n_seeds > 1 else ""
        note = (
            f"{100 * confidence:g} % t interval (delta method) over {estimate.n_units} "
            f"units{seeds}, df {estimate.df:.3g}"
        )
    else:
        note = estimate.note
    return estimate.value, low, high, note


def segmentation_utility(
    dataset_path: str | os.PathLike[str],
    synthetic_pairs_path: str | os.PathLike[str],
    segmenter: Mapping[str, Any],
    seed: int,
    *,
    mask_split: str = "val",
    memorization: Mapping[str, Any] | None = None,
    confidence: float = 0.95,
    device: torch.device | str = "cpu",
    state_root: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bone segmenters trained on CTM pairs vs real pairs of the same ``mask_split`` masks,
    tested on the real test DRRs; the generated DRRs checked for copies of the CTM's training
    DRRs (``memorization``: the ``checks.memorization`` settings). Returns (rows of
    utility.tsv, per-image Dice table)."""

    data = load_dataset(dataset_path)
    pairs = load_npz(synthetic_pairs_path)
    for key in ("generated", "mask", "index"):
        if key not in pairs:
            raise InputError(synthetic_pairs_path, f"no {key!r} array")
    index = pairs["index"].astype(np.int64)
    if (
        index.size == 0
        or index.max() >= len(data["split"])
        or not np.all(data["split"][index] == mask_split)
    ):
        raise InputError(
            synthetic_pairs_path, f"index does not point at {mask_split} images of {dataset_path}"
        )
    if not np.array_equal(pairs["mask"], data["bone"][index]):
        raise InputError(
            synthetic_pairs_path,
            f"masks differ from the bone masks of {dataset_path} (stale samples?)",
        )
    test = np.flatnonzero(data["split"] == "test")
    train = np.flatnonzero(data["split"] == "train")
    if test.size == 0:
        raise InputError(dataset_path, "no test images")
    truth = bone_classes(data["bone"][test])
    arms = {"real": data["drr"][index], "synthetic": pairs["generated"]}
    dice: dict[str, np.ndarray] = {}
    for arm, drr in arms.items():
        state_dir = None if state_root is None else os.path.join(state_root, arm)
        model = train_segmenter(
            drr,
            data["bone"][index],
            segmenter,
            derive_seed(seed, "utility", "segmenter"),
            device,
            state_dir,
        )
        per_class = dice_per_image(segment(model, data["drr"][test], device=device), truth)
        dice[arm] = per_class
        logger.info(
            "segmenter trained on %s pairs: Dice soft tissue %.3f, bone %.3f on %d real test DRRs",
            arm,
            per_class[:, 0].mean(),
            per_class[:, 1].mean(),
            len(test),
        )
    if state_root is not None:  # both segmenters done: their resume state is no longer needed
        shutil.rmtree(state_root, ignore_errors=True)
    memorization = dict(memorization or {})
    copies = memorization_check(
        pairs["generated"], data["drr"][train], data["drr"][test],
        quantile=float(memorization.get("quantile", 0.99)),
        memory_budget_mb=float(memorization.get("memory_budget_mb", 256)), device=device,
    )  # fmt: skip
    volumes = data["volume"][test].astype(str)
    mean_dice = {arm: values.mean(axis=1) for arm, values in dice.items()}
    ratio, low, high, ratio_note = ratio_interval(
        Statistic.mean(mean_dice["synthetic"]), Statistic.mean(mean_dice["real"]), volumes,
        confidence,
    )  # fmt: skip
    bone_ratio, bone_low, bone_high, _ = ratio_interval(
        Statistic.mean(dice["synthetic"][:, 1]), Statistic.mean(dice["real"][:, 1]), volumes,
        confidence,
    )  # fmt: skip
    model, condition = "bone_segmenter_unet", "ctm_contour_bone"
    note_train = (
        f"trained on {index.size} {mask_split} masks (never seen by the CTM) "
        f"and tested on {test.size} real test DRRs of {len(set(volumes))} volume(s)"
        if mask_split != "train"
        else f"trained on {index.size} of the CTM's own training masks, "
        f"tested on {test.size} real test DRRs"
    )
    flagged_note = (
        f"generated training DRRs whose max correlation with the CTM's {train.size} training "
        f"DRRs exceeds the {copies.quantile:g} quantile of the test DRRs' "
        f"({copies.correlation_threshold:.4f})"
    )
    rows = [
        table_row(
            "A", model, condition, "dice_real_trained", mean_dice["real"].mean(), note=note_train
        ),
        table_row(
            "A",
            model,
            condition,
            "dice_synthetic_trained",
            mean_dice["synthetic"].mean(),
            note=note_train,
        ),
        table_row("A", model, condition, "dice_bone_real_trained", dice["real"][:, 1].mean()),
        table_row(
            "A", model, condition, "dice_bone_synthetic_trained", dice["synthetic"][:, 1].mean()
        ),
        table_row("A", model, condition, "dice_ratio", ratio, "0.80-0.90", PAPER_DICE_NOTE),
        table_row("A", model, condition, "dice_ratio_ci_low", low, note=ratio_note),
        table_row("A", model, condition, "dice_ratio_ci_high", high, note=ratio_note),
        table_row(
            "A", model, condition, "dice_bone_ratio", bone_ratio, "0.80-0.90", PAPER_DICE_NOTE
        ),
        table_row("A", model, condition, "dice_bone_ratio_ci_low", bone_low),
        table_row("A", model, condition, "dice_bone_ratio_ci_high", bone_high),
        table_row("A", model, condition, "n_test_volumes", float(len(set(volumes)))),
        table_row("A", model, condition, "n_generated_pairs", float(index.size), note=note_train),
        table_row(
            "A",
            model,
            condition,
            "n_generated_flagged_as_copies",
            float(np.sum(copies.flagged)),
            note=flagged_note,
        ),  # fmt: skip
    ]
    per_image = pd.DataFrame(
        {
            "volume": volumes,
            "view": data["view"][test].astype(int),
            **{
                f"dice_{part}_{arm}": dice[arm][:, k]
                for arm in dice
                for k, part in enumerate(("soft_tissue", "bone"))
            },
        }
    )
    return pd.DataFrame(rows).astype({"value": float}), per_image
