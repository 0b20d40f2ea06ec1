"""Synthetic image sets of study B: how many per KL grade, PNG + DICOM writing, the KL grid figure.

A synthetic set lives in ``results/samples/study_b/{generator}/``::

    png/{generator}_kl{g}_{i:05d}.png      8-bit grey images (H, W)
    dicom/{generator}_kl{g}_{i:05d}.dcm    the same pixels as a DICOM Secondary Capture image
    manifest.tsv                           image, kl_grade, generator, seed, dicom

The DICOM files are built with highdicom's Secondary Capture (:class:`highdicom.sc.SCImage`) and
pass dicom3tools' ``dciodvfy`` and ``dcentvfy`` without errors. They say plainly that they are
synthetic: ImageType ``DERIVED\\SECONDARY``, ConversionType ``SYN`` (synthetic image),
``SYNTHETIC`` in SeriesDescription, ImageComments and PatientName, BurnedInAnnotation ``NO``.
A set is one study of one synthetic patient (a fresh ``SYNTH-<hash>`` PatientID) in one series;
study date and time are a fixed synthetic date (:data:`SYNTHETIC_DATE`), the study ID
``SYNTH``. Laterality is present and empty (DICOM's "unknown": the generators draw knees of
either side), PatientOrientation ``L\\F`` (rows run to the patient's left, columns to the
feet: the training radiographs are viewed facing the patient). Every UID is new, under
pydicom's root, and reproducible from names: the generator and a SHA-256 of the set's pixels
and seeds, so the same images get the same UIDs in every run and different images never do.
They carry nothing from any source image: the generators never see identifiers, and the header
is built from scratch here from (generator, KL grade, seed, pixels) only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from kneesynth.data.images import read_radiograph
from kneesynth.data.manifest import (
    KL_GRADES,
    SAMPLE_MANIFEST_COLUMNS,
    grade_counts,
    read_oai_manifest,
    read_sample_manifest,
)
from kneesynth.io import atomic_path, staged_directory, write_tsv
from kneesynth.progress import ProgressLog
from kneesynth.seeding import derive_seed

logger = logging.getLogger(__name__)

BALANCE_POLICIES = ("to_max", "per_grade")


def synthetic_counts(train_counts: Mapping[int, int], policy: Mapping[str, Any]) -> dict[int, int]:
    """Number of synthetic images to draw for each KL grade.

    ``policy`` keys:
        balance: ``to_max`` tops each grade up to the largest real grade count, so that real +
            synthetic is balanced (the paper's aim: "help balance datasets"); ``per_grade`` draws
            the fixed count ``per_grade`` of every grade.
        per_grade: count of the ``per_grade`` policy.
        min_per_grade: at least this many of every grade (so that FID per grade and the grid
            have images of the largest grade too, which ``to_max`` would leave at 0).
        max_per_grade: at most this many of any grade (null: no cap) - bounds the cost.
    """
    balance = policy["balance"]
    if balance == "to_max":
        largest = max(train_counts.values())
        counts = {g: largest - int(train_counts.get(g, 0)) for g in KL_GRADES}
    elif balance == "per_grade":
        counts = {g: int(policy["per_grade"]) for g in KL_GRADES}
    else:
        raise ValueError(
            f"unknown balance policy {balance!r}; choose {', '.join(BALANCE_POLICIES)}"
        )
    low = int(policy.get("min_per_grade") or 0)
    high = policy.get("max_per_grade")
    counts = {g: max(n, low) for g, n in counts.items()}
    if high is not None:
        counts = {g: min(n, int(high)) for g, n in counts.items()}
    return counts


def apportion(total: int, weights: Sequence[float]) -> np.ndarray:
    """``total`` split over ``weights`` in proportion (largest-remainder rounding): int (k,)."""
    weights = np.asarray(weights, dtype=float)
    if weights.sum() <= 0:
        return np.zeros(len(weights), dtype=int)
    exact = weights / weights.sum() * int(total)
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: int(total) - counts.sum()]:
        counts[index] += 1
    return counts


def evaluation_counts(
    reference_counts: Mapping[int, int],
    pools: Sequence[Mapping[int, int]] = (),
    max_images: int | None = None,
) -> dict[int, int]:
    """Images per KL grade of every evaluation set: the reference (real test) split's grade mix.

    The metrics (FID/KID, C2ST, memorisation) compare each generator and each control with the
    real reference images; drawing every set to the reference's grade mix keeps the label mix
    out of the comparison (a class-balanced set differs from the test split by its mix alone),
    and giving every set the same counts makes per-grade values comparable. The total is the
    largest ``n`` <= ``max_images`` (default: the reference's size) whose counts fit in every
    real ``pool`` the controls draw from without replacement (the training split for
    control_copy, the hold-out split for control_holdout).
    """
    reference = [int(reference_counts.get(g, 0)) for g in KL_GRADES]
    limit = sum(reference) if max_images is None else min(int(max_images), sum(reference))
    for total in range(limit, 0, -1):
        counts = apportion(total, reference)
        if all(counts[g] <= int(pool.get(g, 0)) for pool in pools for g in KL_GRADES):
            return {g: int(counts[g]) for g in KL_GRADES}
    return dict.fromkeys(KL_GRADES, 0)


def study_b_evaluation_counts(manifest: pd.DataFrame, checks: Mapping[str, Any]) -> dict[int, int]:
    """Images per KL grade of every study B evaluation set (generators, controls, probes): the
    grade mix of the real reference split (``checks.held_out_split``), as many as the training
    split and the hold-out pool (``checks.controls.holdout_split``) allow (see
    :func:`evaluation_counts`). ``manifest``: the OAI manifest with its ``split`` column."""
    controls = checks["controls"]
    splits = {"train", checks["held_out_split"], controls["holdout_split"]}
    counts = {
        split: grade_counts(manifest.loc[manifest["split"] == split, "kl_grade"].to_numpy())
        for split in splits
    }
    return evaluation_counts(
        counts[checks["held_out_split"]],
        [counts["train"], counts[controls["holdout_split"]]],
        controls.get("max_images"),
    )


def sample_plan(generator: str, counts: Mapping[int, int], seed: int) -> pd.DataFrame:
    """One row per image to draw: kl_grade, index (within grade), seed (per image, from ``seed``)."""
    rows = [
        {"kl_grade": g, "index": i, "seed": derive_seed(seed, generator, "kl", g, i) % 2**31}
        for g in KL_GRADES
        for i in range(int(counts.get(g, 0)))
    ]
    return pd.DataFrame(rows, columns=["kl_grade", "index", "seed"])


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a uint8 (H, W) image as 8-bit grey PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(tmp, format="PNG")


def _uid(*names: object) -> str:
    """A new DICOM UID reproducible from ``names``: pydicom's ``generate_uid`` under pydicom's
    root, with the names as its entropy source (pydicom ignores the entropy sources when the
    prefix is None, so the prefix is given)."""
    from pydicom.uid import PYDICOM_ROOT_UID, generate_uid  # heavy (pydicom): imported on use

    return generate_uid(
        prefix=PYDICOM_ROOT_UID, entropy_srcs=["/".join(["kneesynth", *map(str, names)])]
    )


def synthetic_patient_id(generator: str, set_digest: str) -> str:
    """``SYNTH-<12 hex>``: the one synthetic patient of a set, from the generator and the
    set's digest only."""
    digest = hashlib.sha256(f"kneesynth/{generator}/{set_digest}".encode()).hexdigest()[:12]
    return f"SYNTH-{digest.upper()}"


def set_digest(images: np.ndarray, seeds: Sequence[int]) -> str:
    """SHA-256 (hex) of a synthetic set's pixels and per-image seeds: what its UIDs derive from."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.asarray(list(seeds), dtype=np.int64).tobytes())
    digest.update(str(np.shape(images)).encode())
    return digest.hexdigest()


#: Fixed study/content date and time of every synthetic image (they were never acquired).
SYNTHETIC_DATE, SYNTHETIC_TIME = "20000101", "000000"


def synthetic_dicom(
    image: np.ndarray,
    generator: str,
    kl_grade: int,
    seed: int,
    instance_number: int,
    study_uid: str,
    series_uid: str,
    patient_id: str,
    sop_uid: str,
):
    """A Secondary Capture dataset (highdicom, MONOCHROME2, 8 bit) holding ``image`` (H, W)
    uint8, one instance of the set's study and series (see the module docstring)."""
    from highdicom.sc import SCImage  # heavy (highdicom): imported on use

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
    ds = SCImage(
        pixel_array=image,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        series_number=1,
        sop_instance_uid=sop_uid,
        instance_number=int(instance_number),
        manufacturer="kneesynth",
        patient_id=patient_id,
        patient_name=f"SYNTHETIC^{generator}",
        study_id="SYNTH",
        study_date=SYNTHETIC_DATE,
        study_time=SYNTHETIC_TIME,
        patient_orientation=("L", "F"),
    )
    ds.Laterality = ""  # present and empty: unknown (a synthetic knee has no side)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"  # DICOM defined term: synthetic image
    ds.SeriesDescription = f"SYNTHETIC knee radiograph ({generator}, kneesynth)"
    ds.ImageComments = (
        f"SYNTHETIC image drawn by generator {generator} for Kellgren-Lawrence "
        f"grade {int(kl_grade)} from seed {int(seed)}; not an image of a patient"
    )
    ds.BurnedInAnnotation = "NO"
    ds.BodyPartExamined = "KNEE"
    # reproducible files: the fixed synthetic date instead of the time of writing
    ds.ContentDate, ds.ContentTime = SYNTHETIC_DATE, SYNTHETIC_TIME
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = SYNTHETIC_DATE, SYNTHETIC_TIME
    for keyword in ("InstanceCreationDate", "InstanceCreationTime"):
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            del item.ContributionDateTime
    return ds


def write_dicom(path: str | os.PathLike[str], dataset) -> None:
    """Write a pydicom Dataset as a DICOM Part 10 file, atomically."""
    with atomic_path(path, suffix=".dcm") as tmp:
        dataset.save_as(tmp, enforce_file_format=True)


def write_synthetic_set(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    plan: pd.DataFrame,
    generator: str,
    manifest_path: str | os.PathLike[str] | None = None,
    dicom: bool = True,
) -> pd.DataFrame:
    """Write ``images`` (n, H, W) uint8, drawn as listed in ``plan`` (kl_grade, index, seed), as
    ``out_dir/png/*.png``, (``dicom``) ``out_dir/dicom/*.dcm`` and ``out_dir/manifest.tsv``.

    The set is written into a hidden staging folder beside ``out_dir`` and moved into place in
    one rename, so ``out_dir`` is complete or absent: a killed job leaves no partial folder (and
    the staging folders of killed jobs are removed by the next run). The manifest names the
    final paths. ``manifest_path`` elsewhere than ``out_dir/manifest.tsv`` is written after the
    move. Returns the manifest: image (PNG path), kl_grade, generator, seed, dicom (path, or
    empty), then any other columns of ``plan`` (e.g. a control's ``source``).
    """
    out_dir = Path(out_dir)
    if len(images) != len(plan):
        raise ValueError(f"{len(images)} images for a plan of {len(plan)}")
    remove_stale_staging(out_dir)
    extra = [c for c in plan.columns if c not in ("kl_grade", "index", "seed")]
    digest = set_digest(images, plan["seed"].tolist())
    study_uid = _uid(generator, digest, "study")
    series_uid = _uid(generator, digest, "series")
    patient_id = synthetic_patient_id(generator, digest)
    rows = []
    in_place = manifest_path is None or Path(manifest_path) == out_dir / "manifest.tsv"
    with staged_directory(out_dir) as staging:
        (staging / "png").mkdir()
        if dicom:
            (staging / "dicom").mkdir()
        for number, (image, row) in enumerate(
            zip(images, plan.itertuples(index=False), strict=True), 1
        ):
            stem = f"{generator}_kl{int(row.kl_grade)}_{int(row.index):05d}"
            write_png(staging / "png" / f"{stem}.png", image)
            if dicom:
                write_dicom(
                    staging / "dicom" / f"{stem}.dcm",
                    synthetic_dicom(
                        image,
                        generator,
                        int(row.kl_grade),
                        int(row.seed),
                        number,
                        study_uid,
                        series_uid,
                        patient_id,
                        _uid(generator, digest, "image", number),
                    ),
                )
            rows.append(
                {
                    "image": str(out_dir / "png" / f"{stem}.png"),
                    "kl_grade": int(row.kl_grade),
                    "generator": generator,
                    "seed": int(row.seed),
                    "dicom": str(out_dir / "dicom" / f"{stem}.dcm") if dicom else "",
                    **{column: getattr(row, column) for column in extra},
                }
            )
        manifest = pd.DataFrame(rows, columns=[*SAMPLE_MANIFEST_COLUMNS, *extra])
        if in_place:
            write_tsv(staging / "manifest.tsv", manifest)
    if not in_place:
        write_tsv(manifest_path, manifest)
    return manifest


def remove_stale_staging(out_dir: str | os.PathLike[str]) -> None:
    """Remove the staging folders (``.<name>.*`` beside ``out_dir``) that killed jobs left.

    Snakemake runs one job per output folder at a time, so none of them is in use.
    """
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        return
    for stale in out_dir.parent.glob(f".{out_dir.name}.*"):
        if stale.is_dir():
            logger.info("%s: removing the staging folder of a killed run", stale)
            shutil.rmtree(stale, ignore_errors=True)


def plot_kl_grid(
    path: str | os.PathLike[str],
    columns: Sequence[tuple[str, pd.DataFrame]],
    per_cell: int = 1,
    dpi: int = 150,
    size: int | None = None,
) -> None:
    """The abstract's Figure 1: rows KL 0-4, one column per source (real, WGAN, DDPMs).

    ``columns``: (title, frame with ``image`` and ``kl_grade``); the first ``per_cell`` images of
    each grade are shown side by side in a cell. ``size``: every image is shown resized
    (bilinear) to ``size`` x ``size``, the generators' size, so that real images appear as the
    generators saw them. Written atomically (PNG or PDF by suffix).
    """
    import matplotlib  # heavy (matplotlib): imported on use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy (matplotlib): imported on use

    n_rows, n_cols = len(KL_GRADES), len(columns) * per_cell
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.3 * n_cols + 0.6, 1.3 * n_rows + 0.4), squeeze=False
    )
    for c, (title, frame) in enumerate(columns):
        for r, grade in enumerate(KL_GRADES):
            paths = frame.loc[frame["kl_grade"] == grade, "image"].tolist()[:per_cell]
            for k in range(per_cell):
                ax = axes[r, c * per_cell + k]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if k < len(paths):
                    ax.imshow(read_radiograph(paths[k], size), cmap="gray", vmin=0.0, vmax=1.0)
                if r == 0 and k == 0:
                    ax.set_title(title, fontsize=9, loc="left")
                if c == 0 and k == 0:
                    ax.set_ylabel(f"KL {grade}", fontsize=9)
    figure.tight_layout(pad=0.3)
    suffix = Path(path).suffix
    with atomic_path(path, suffix=suffix) as tmp:
        figure.savefig(tmp, dpi=dpi, format=suffix.lstrip("."))
    plt.close(figure)


def train_grade_counts(manifest: pd.DataFrame) -> dict[int, int]:
    """Real training images per KL grade in an OAI manifest frame (split == train)."""
    return grade_counts(manifest.loc[manifest["split"] == "train", "kl_grade"].to_numpy())


def make_synthetic_set(
    weights_path: str | os.PathLike[str],
    real_manifest: str | os.PathLike[str],
    samples: Mapping[str, Any],
    seed: int,
    out_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
    evaluation_dir: str | os.PathLike[str] | None = None,
    checks: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Draw a generator's synthetic set and write it (see :func:`write_synthetic_set`).

    ``samples`` is the ``study_b.samples`` config section: balance policy (see
    :func:`synthetic_counts`), sampler, inference_steps, batch_size. Counts follow the real
    training split of ``real_manifest``; ``seed`` is the base seed.

    With ``evaluation_dir`` (and the ``checks`` config section) the generator's evaluation set
    is drawn too (fresh seeds; :func:`make_evaluation_set`), in the same job.
    """
    from kneesynth.study_b.generators import generator_path_name  # heavy (torch): imported on use

    generator = generator_path_name(weights_path)
    real = read_oai_manifest(real_manifest)
    counts = synthetic_counts(train_grade_counts(real), samples)
    plan = sample_plan(generator, counts, derive_seed(int(seed), "study_b", "samples"))
    logger.info(
        "%s: drawing %d images, per KL grade %s (sampler %s, %s steps)",
        generator,
        len(plan),
        counts,
        samples.get("sampler", "none"),  # the WGAN's settings carry no sampler
        samples.get("inference_steps", 1),
    )
    images = draw_with_progress(weights_path, plan, samples, f"sampling {generator}", device)
    manifest = write_synthetic_set(out_dir, images, plan, generator, manifest_path)
    if evaluation_dir is not None:
        if checks is None:
            raise ValueError("an evaluation set needs the checks config section")
        make_evaluation_set(
            weights_path, real_manifest, samples, checks, seed, evaluation_dir, generator, device
        )
    return manifest


def make_evaluation_set(
    weights_path: str | os.PathLike[str],
    real_manifest: str | os.PathLike[str],
    samples: Mapping[str, Any],
    checks: Mapping[str, Any],
    seed: int,
    out_dir: str | os.PathLike[str],
    name: str,
    device: Any = "cpu",
) -> pd.DataFrame:
    """Draw and write the evaluation set of a generator (or of the memorisation probe and its
    twin, ``name``): :func:`study_b_evaluation_counts` images per grade, the same counts as
    the controls (:func:`kneesynth.checks.controls.study_b_controls`), to
    ``out_dir/manifest.tsv`` and ``out_dir/png/`` (no DICOM). The metrics (FID/KID, C2ST,
    memorisation) read these sets, never the class-balanced sets of the classifiers."""

    counts = study_b_evaluation_counts(read_oai_manifest(real_manifest), checks)
    plan = sample_plan(name, counts, derive_seed(int(seed), "study_b", "evaluation"))
    logger.info("%s: evaluation set of %d images, per KL grade %s", name, len(plan), counts)
    images = draw_with_progress(weights_path, plan, samples, f"evaluation set {name}", device)
    return write_synthetic_set(
        out_dir, images, plan, name, Path(out_dir) / "manifest.tsv", dicom=False
    )


def draw_with_progress(
    weights_path: str | os.PathLike[str],
    plan: pd.DataFrame,
    samples: Mapping[str, Any],
    name: str,
    device: Any = "cpu",
    max_lines: int = 20,
) -> np.ndarray:
    """:func:`~kneesynth.study_b.generators.sample_generator` over ``plan`` in whole batches, with a
    progress line (images, rate, ETA) after each part; uint8 (n, H, W).

    Each image comes from its own seed, and parts are whole multiples of ``batch_size`` (at most
    ``max_lines`` of them), so the batches are those of one call over the whole plan.
    """
    from kneesynth.study_b.generators import sample_generator  # heavy (torch): imported on use

    grades, seeds = plan["kl_grade"].to_numpy(), plan["seed"].to_numpy()
    batch_size = int(samples["batch_size"])
    n_batches = -(-len(plan) // batch_size)
    part = batch_size * max(1, -(-n_batches // max_lines))
    progress = ProgressLog(name, len(plan), "image", log=logger)
    drawn = []
    for start in range(0, len(plan), part):
        where = slice(start, start + part)
        drawn.append(sample_generator(weights_path, grades[where], seeds[where], samples, device))
        progress.advance(len(drawn[-1]))
    if not drawn:
        return sample_generator(weights_path, grades, seeds, samples, device)
    return np.concatenate(drawn)


GRID_TITLES = {"wgan": "WGAN", "ddpm_uncond": "Diff-Unco", "ddpm_cond": "Diff-Cond"}


def kl_grid_columns(
    real_manifest: str | os.PathLike[str], sample_manifests: Sequence[str | os.PathLike[str]]
) -> list[tuple[str, pd.DataFrame]]:
    """Columns of the KL grid in the abstract's order: real, WGAN, Diff-Unco, Diff-Cond (the
    generators present in ``sample_manifests``). Real images come from the test split first,
    then val and train (a rare grade may have too few test images to fill its cell)."""

    real = read_oai_manifest(real_manifest)
    order = {"test": 0, "val": 1, "train": 2}
    real = real.assign(_order=real["split"].map(order).fillna(3)).sort_values(
        ["_order"], kind="stable"
    )
    sets = {}
    for path in sample_manifests:
        frame = read_sample_manifest(path)
        sets[str(frame["generator"].iloc[0])] = frame
    columns = [("Real", real)]
    columns += [(GRID_TITLES[name], sets[name]) for name in GRID_TITLES if name in sets]
    columns += [(name, frame) for name, frame in sets.items() if name not in GRID_TITLES]
    return columns
