"""Controls: reference "generators" whose answers every check must get right.

A metric value means little without reference points: a generator that returns its training
images wins test FID (marcojira/fld's "copycat"), supervised features can be blind to what
matters (layer6ai-labs/dgm-eval), and FID is biased at small n. So every run draws three
controls and passes them through exactly the code that scores the generators (fid.tsv,
realism.tsv, memorization.tsv), with the same number of images and the same KL grade mix:

- ``control_copy``: real training images (a perfect memoriser);
- ``control_holdout``: real images that neither the generators nor the metrics saw (study B:
  the ``checks.controls.holdout_split``, by default the validation split, while the metrics
  compare against the test split): the best a generator can do without copying;
- ``control_noise``: a degenerate generator: Gaussian noise with the real images' mean and
  (radially averaged) power spectrum (``spectrum``; it has their grey levels and texture scale
  but no anatomy), or heavily blurred real images (``blur``).

:func:`controls_table` then judges every check on its controls (``controls.tsv``): the
memorisation check must flag >= 95 % of control_copy and <= 5 % of control_holdout; the C2ST
AUC of control_holdout must have 0.5 in its CI and that of control_noise must be >= 0.95; the
distances (FID, KID) must order control_copy <= control_holdout < control_noise. A check that
fails its controls cannot support a claim: :func:`checks_failing_controls` names such checks
for the scorecard.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kneesynth.checks.settings import CONTROLS
from kneesynth.data.images import load_images
from kneesynth.data.manifest import read_oai_manifest
from kneesynth.errors import InputError
from kneesynth.io import save_npz
from kneesynth.seeding import derive_seed
from kneesynth.study_a.dataset import load_dataset

logger = logging.getLogger(__name__)


NOISE_KINDS = ("spectrum", "blur")
TABLE_COLUMNS = ["study", "check", "control", "value", "expected", "passes", "detail"]

# What a control must show for its check to count (controls.tsv states each in its ``expected``
# column): a copy is flagged, a held-out real image is not, noise is told apart.
COPY_FLAGGED_MIN = 0.95
HOLDOUT_FLAGGED_MAX = 0.05
NOISE_AUC_MIN = 0.95
PROBE_FLAGGED_MIN = 0.25  # a generator that copies a quarter of its draws memorises


# --------------------------------------------------------------------------------------------
# Control images (shared by both studies); images float (n, H, W) in [0, 1]
# --------------------------------------------------------------------------------------------
def radial_average(power: np.ndarray) -> np.ndarray:
    """A 2-D power spectrum (H, W) (numpy FFT layout) averaged over rings of equal spatial
    frequency |k| and written back to (H, W): the isotropic spectrum with the same radial
    profile."""
    h, w = power.shape
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij"))
    ring = np.rint(radius).astype(int)
    totals = np.bincount(ring.ravel(), weights=power.ravel())
    counts = np.bincount(ring.ravel())
    return (totals / np.maximum(counts, 1))[ring]


def spectrum_noise(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` images of Gaussian noise with the mean and power spectrum of ``pool``.

    Each image is the mean grey level of a random pool image plus a stationary Gaussian field
    whose expected power spectrum is the pool's mean power spectrum (of the mean-removed
    images), averaged over directions (:func:`radial_average`): white noise filtered by the
    square root of that spectrum. It has the real images' brightness, contrast and texture
    scale, and no anatomy and no orientation (the full 2-D spectrum of aligned knees would
    draw vertical bands that look like a leg). ``pool`` (m, H, W) in [0, 1]; returns
    (count, H, W) float32 in [0, 1].
    """
    pool = np.asarray(pool, dtype=np.float64)
    if pool.ndim != 3 or len(pool) == 0:
        raise ValueError(f"spectrum_noise needs a non-empty (m, H, W) pool, got {pool.shape}")
    means = pool.mean(axis=(1, 2))
    centred = pool - means[:, None, None]
    power = radial_average(np.mean(np.abs(np.fft.fft2(centred)) ** 2, axis=0))
    power[0, 0] = 0.0  # the mean comes from ``means``
    amplitude = np.sqrt(power)
    out = np.empty((int(count), *pool.shape[1:]), dtype=np.float32)
    for i in range(int(count)):
        white = rng.standard_normal(pool.shape[1:])
        field = np.real(np.fft.ifft2(np.fft.fft2(white) * amplitude)) / math.sqrt(white.size)
        out[i] = np.clip(means[rng.integers(len(pool))] + field, 0.0, 1.0)
    return out


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each image (scipy.ndimage, ``sigma`` in pixels): (n, H, W) float32."""
    from scipy.ndimage import gaussian_filter  # heavy (scipy): imported on use

    images = np.asarray(images, dtype=np.float64)
    return (
        np.stack([gaussian_filter(image, float(sigma), mode="nearest") for image in images]).astype(
            np.float32
        )
        if len(images)
        else np.zeros_like(images, dtype=np.float32)
    )


def noise_images(
    pool: np.ndarray, count: int, settings: Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """control_noise images drawn from the real ``pool`` (``checks.controls`` keys: noise,
    blur_sigma): (count, H, W) float32 in [0, 1]."""
    kind = str(settings.get("noise", "spectrum"))
    if kind == "spectrum":
        return spectrum_noise(pool, count, rng)
    if kind == "blur":
        chosen = rng.choice(len(pool), int(count), replace=len(pool) < int(count))
        return blurred(np.asarray(pool)[chosen], float(settings.get("blur_sigma", 3.0)))
    raise ValueError(f"unknown control noise {kind!r}; choose one of {', '.join(NOISE_KINDS)}")


def draw_by_grade(
    grades: np.ndarray, counts: Mapping[int, int], rng: np.random.Generator, name: str
) -> np.ndarray:
    """Indices of ``counts[g]`` images of each grade g, drawn without replacement (sorted
    within a grade; grades in increasing order)."""
    grades = np.asarray(grades, dtype=int)
    chosen = []
    for grade in sorted(counts):
        where = np.flatnonzero(grades == grade)
        if len(where) < counts[grade]:
            raise ValueError(
                f"{name}: {counts[grade]} images of KL grade {grade} wanted, {len(where)} available"
            )
        chosen.append(np.sort(rng.choice(where, int(counts[grade]), replace=False)))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=int)


# --------------------------------------------------------------------------------------------
# Study B: control sets written like a generator's evaluation set
# --------------------------------------------------------------------------------------------
def study_b_controls(
    real_manifest: str | os.PathLike[str],
    checks: Mapping[str, Any],
    image_size: int,
    out_dirs: Mapping[str, str | os.PathLike[str]],
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Write the study B control sets: ``out_dirs[control]/manifest.tsv`` and ``png/``.

    Each holds :func:`kneesynth.study_b.synthetic.study_b_evaluation_counts` images per grade at the generators'
    ``image_size`` (read like every real image the metrics read), so that a control differs
    from a generator's evaluation set only in where its images come from. The manifests have
    the columns of a synthetic set plus ``source`` (the real image a copy or hold-out image is,
    or the pool the noise was drawn from).
    """
    from kneesynth.study_b.synthetic import (
        sample_plan,
        study_b_evaluation_counts,
        write_synthetic_set,
    )  # heavy (PIL): imported on use

    if checks["controls"]["holdout_split"] in ("train", checks["held_out_split"]):
        raise InputError(
            "config",
            "checks.controls.holdout_split must differ from 'train' and from "
            f"checks.held_out_split ({checks['held_out_split']!r}): control_holdout stands for "
            "real images neither the generators nor the metrics saw",
        )
    manifest = read_oai_manifest(real_manifest)
    counts = study_b_evaluation_counts(manifest, checks)
    if sum(counts.values()) < 2:
        raise InputError(real_manifest, f"too few real images for the controls ({counts})")
    logger.info("controls: %d images per set, per KL grade %s", sum(counts.values()), counts)
    pools = {
        "control_copy": manifest[manifest["split"] == "train"].reset_index(drop=True),
        "control_holdout": manifest[
            manifest["split"] == checks["controls"]["holdout_split"]
        ].reset_index(drop=True),
        "control_noise": manifest[manifest["split"] == "train"].reset_index(drop=True),
    }
    written = {}
    for control, out_dir in out_dirs.items():
        if control not in CONTROLS:
            raise ValueError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)}")
        rng = np.random.default_rng(derive_seed(int(seed), "controls", "B", control))
        pool = pools[control]
        plan = sample_plan(control, counts, derive_seed(int(seed), "controls", "B"))
        if control == "control_noise":
            images = np.concatenate(
                [
                    noise_images(
                        load_images(pool.loc[pool["kl_grade"] == g, "image"].tolist(), image_size)
                        / 255.0,
                        counts[g],
                        checks["controls"],
                        rng,
                    )
                    for g in sorted(counts)
                    if counts[g]
                ]
            )
            images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
            source = [
                f"{checks['controls']['noise']} noise of train KL {g}" for g in plan["kl_grade"]
            ]
        else:
            index = draw_by_grade(pool["kl_grade"].to_numpy(), counts, rng, control)
            images = load_images(pool["image"].iloc[index].tolist(), image_size)
            source = pool["image"].iloc[index].tolist()
        written[control] = write_synthetic_set(
            out_dir,
            images,
            plan.assign(source=source),
            control,
            Path(out_dir) / "manifest.tsv",
            dicom=False,
        )
    return written


# --------------------------------------------------------------------------------------------
# Study A: control sample files in the format of the CSM/CTM samples
# --------------------------------------------------------------------------------------------
def study_a_controls(
    dataset_path: str | os.PathLike[str],
    checks: Mapping[str, Any],
    outputs: Mapping[str, str | os.PathLike[str]],
    seed: int,
) -> None:
    """Write study A's controls as sample files (``generated``, ``target``, ``volume``,
    ``view``), one per control, read by the same realism and memorisation code as the CSM and
    CTM samples: as many "generated" images as there are held-out (test) DRRs, each paired
    with a held-out DRR as its target. control_copy: training DRRs; control_holdout: DRRs of
    the ``checks.controls.holdout_split`` volumes (not the test volumes the checks compare
    against); control_noise: noise with the training DRRs' mean and spectrum (or blurred
    training DRRs).
    """

    data = load_dataset(dataset_path)
    split = data["split"].astype(str)
    held = np.flatnonzero(split == checks["held_out_split"])
    pools = {
        "control_copy": np.flatnonzero(split == "train"),
        "control_holdout": np.flatnonzero(split == checks["controls"]["holdout_split"]),
        "control_noise": np.flatnonzero(split == "train"),
    }
    for control, pool in pools.items():
        if len(pool) == 0 or len(held) < 2:
            raise InputError(
                dataset_path,
                f"{control}: no DRRs in its pool or fewer than 2 {checks['held_out_split']} DRRs",
            )
    for control, output in outputs.items():
        rng = np.random.default_rng(derive_seed(int(seed), "controls", "A", control))
        pool = pools[control]
        n = len(held)
        if control == "control_noise":
            generated = noise_images(data["drr"][pool], n, checks["controls"], rng)
            volume = np.array(["noise"] * n)
            view = np.full(n, -1, dtype=np.int64)
        else:
            chosen = rng.choice(pool, n, replace=len(pool) < n)
            generated = data["drr"][chosen].astype(np.float32)
            volume, view = data["volume"][chosen], data["view"][chosen].astype(np.int64)
        save_npz(
            output,
            generated=generated,
            target=data["drr"][held].astype(np.float32),
            volume=volume,
            view=view,
        )
