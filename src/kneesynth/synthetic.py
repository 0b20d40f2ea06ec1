"""Synthetic image sets of study B: how many per KL grade, PNG + DICOM writing, the KL grid figure.

A synthetic set lives in ``results/samples/study_b/{generator}/``::

    png/{generator}_kl{g}_{i:05d}.png      8-bit grey images (H, W)
    dicom/{generator}_kl{g}_{i:05d}.dcm    the same pixels as a DICOM Secondary Capture image
    manifest.tsv                           image, kl_grade, generator, seed, dicom

The DICOM files say plainly that they are synthetic: ImageType ``DERIVED\\SECONDARY``,
ConversionType ``SYN`` (synthetic image), ``SYNTHETIC`` in SeriesDescription, ImageComments and
PatientName, BurnedInAnnotation ``NO``, a fresh ``SYNTH-<hash>`` PatientID, and new UIDs. They carry
nothing from any source image: the generators never see identifiers, and the header is built
from scratch here from (generator, KL grade, seed) only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from kneesynth.errors import InputError
from kneesynth.io import atomic_path, write_tsv
from kneesynth.oai import KL_GRADES, grade_counts
from kneesynth.seeding import derive_seed

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage SOP class
SAMPLE_MANIFEST_COLUMNS = ("image", "kl_grade", "generator", "seed", "dicom")
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
    """A new DICOM UID (2.25 root) from ``pydicom.uid.generate_uid``, reproducible from names."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=None, entropy_srcs=["kneesynth", *map(str, names)])


def synthetic_patient_id(generator: str, seed: int) -> str:
    """``SYNTH-<12 hex>``: a fresh identifier derived from the generator and seed only."""
    digest = hashlib.sha256(f"kneesynth/{generator}/{int(seed)}".encode()).hexdigest()[:12]
    return f"SYNTH-{digest.upper()}"


def synthetic_dicom(
    image: np.ndarray,
    generator: str,
    kl_grade: int,
    seed: int,
    instance_number: int,
    study_uid: str,
    series_uid: str,
):
    """A pydicom Dataset (Secondary Capture, MONOCHROME2, 8 bit) holding ``image`` (H, W) uint8."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
    sop_uid = _uid(generator, "image", kl_grade, seed, instance_number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"  # DICOM defined term: synthetic image
    ds.Modality = "OT"
    ds.SeriesDescription = f"SYNTHETIC knee radiograph ({generator}, kneesynth)"
    ds.ImageComments = (
        f"SYNTHETIC image drawn by generator {generator} for Kellgren-Lawrence "
        f"grade {int(kl_grade)} from seed {int(seed)}; not an image of a patient"
    )
    ds.BurnedInAnnotation = "NO"
    ds.PatientName = f"SYNTHETIC^{generator}"
    ds.PatientID = synthetic_patient_id(generator, seed)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.BodyPartExamined = "KNEE"
    ds.Manufacturer = "kneesynth"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = image.tobytes()
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
) -> pd.DataFrame:
    """Write ``images`` (n, H, W) uint8, drawn as listed in ``plan`` (kl_grade, index, seed), as
    ``out_dir/png/*.png`` and ``out_dir/dicom/*.dcm`` and the manifest (last, atomically).

    Returns the manifest: image (PNG path), kl_grade, generator, seed, dicom (path).
    """
    out_dir = Path(out_dir)
    if len(images) != len(plan):
        raise ValueError(f"{len(images)} images for a plan of {len(plan)}")
    (out_dir / "png").mkdir(parents=True, exist_ok=True)
    (out_dir / "dicom").mkdir(parents=True, exist_ok=True)
    study_uid = _uid(generator, "study")
    series_uid = _uid(generator, "series")
    rows = []
    for number, (image, row) in enumerate(
        zip(images, plan.itertuples(index=False), strict=True), 1
    ):
        stem = f"{generator}_kl{int(row.kl_grade)}_{int(row.index):05d}"
        png = out_dir / "png" / f"{stem}.png"
        dcm = out_dir / "dicom" / f"{stem}.dcm"
        write_png(png, image)
        write_dicom(
            dcm,
            synthetic_dicom(
                image, generator, int(row.kl_grade), int(row.seed), number, study_uid, series_uid
            ),
        )
        rows.append(
            {
                "image": str(png),
                "kl_grade": int(row.kl_grade),
                "generator": generator,
                "seed": int(row.seed),
                "dicom": str(dcm),
            }
        )
    manifest = pd.DataFrame(rows, columns=list(SAMPLE_MANIFEST_COLUMNS))
    write_tsv(manifest_path or out_dir / "manifest.tsv", manifest)
    return manifest


def read_sample_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a synthetic set's manifest.tsv (columns image, kl_grade, generator, ...)."""
    from kneesynth.io import read_tsv

    frame = read_tsv(path, required=["image", "kl_grade", "generator"])
    if not frame["kl_grade"].isin(KL_GRADES).all():
        raise InputError(path, "kl_grade must be 0-4")
    return frame


def plot_kl_grid(
    path: str | os.PathLike[str],
    columns: Sequence[tuple[str, pd.DataFrame]],
    per_cell: int = 1,
    dpi: int = 150,
) -> None:
    """The abstract's Figure 1: rows KL 0-4, one column per source (real, WGAN, DDPMs).

    ``columns``: (title, frame with ``image`` and ``kl_grade``); the first ``per_cell`` images of
    each grade are shown side by side in a cell. Written atomically (PNG or PDF by suffix).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
                    with Image.open(paths[k]) as image:
                        ax.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
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
) -> pd.DataFrame:
    """Draw a generator's synthetic set and write it (see :func:`write_synthetic_set`).

    ``samples`` is the ``study_b.samples`` config section: balance policy (see
    :func:`synthetic_counts`), sampler, inference_steps, batch_size. Counts follow the real
    training split of ``real_manifest``; ``seed`` is the base seed.
    """
    from kneesynth.oai import read_oai_manifest
    from kneesynth.oai_generators import generator_path_name, sample_generator

    generator = generator_path_name(weights_path)
    real = read_oai_manifest(real_manifest)
    counts = synthetic_counts(train_grade_counts(real), samples)
    plan = sample_plan(generator, counts, derive_seed(int(seed), "study_b", "samples"))
    logger.info(
        "%s: drawing %d images, per KL grade %s (%s, %s steps)",
        generator,
        len(plan),
        counts,
        samples["sampler"],
        samples["inference_steps"],
    )
    images = sample_generator(
        weights_path, plan["kl_grade"].to_numpy(), plan["seed"].to_numpy(), samples, device=device
    )
    return write_synthetic_set(out_dir, images, plan, generator, manifest_path)


GRID_TITLES = {"wgan": "WGAN", "ddpm_uncond": "Diff-Unco", "ddpm_cond": "Diff-Cond"}


def kl_grid_columns(
    real_manifest: str | os.PathLike[str], sample_manifests: Sequence[str | os.PathLike[str]]
) -> list[tuple[str, pd.DataFrame]]:
    """Columns of the KL grid in the abstract's order: real, WGAN, Diff-Unco, Diff-Cond (the
    generators present in ``sample_manifests``). Real images come from the test split first,
    then val and train (a rare grade may have too few test images to fill its cell)."""
    from kneesynth.oai import read_oai_manifest

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
