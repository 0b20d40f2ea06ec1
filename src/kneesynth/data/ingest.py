"""Ingest SICAS/SMIR CT volumes: any SimpleITK format or DICOM series -> standardised NIfTI in HU.

Input: a folder (searched recursively) of CT volumes as NIfTI (``.nii``, ``.nii.gz``; read with
nibabel), MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``) or DICOM (a folder of
slice files, one series per folder, read with pydicom; or one Enhanced multi-frame CT file,
read with highdicom). A volume's name is its file name without the extension
(``SMIR.Body.025Y.M.CT.57697.nii`` -> ``SMIR.Body.025Y.M.CT.57697``) or its DICOM folder's
name. The phantom stage writes the same kind of folder (:mod:`kneesynth.data.phantom`). The workflow
runs one job per volume, so that one bad volume fails alone.

What an input is (``ingest.input_checks``): a DICOM series must say Modality CT, and every
volume must look like CT in HU (air near -1000 HU, :func:`check_ct_values`); under ``strict``
(default) anything else is refused naming the file and the reason, under ``relaxed`` it is a
WARNING (:func:`refuse`). Truncated files, slices of another size, a missing or duplicate slice,
uneven spacing, 4D images and NaN are refused naming the file.

Output ``results/ct/{volume}.nii.gz``: float32 HU, resampled (linear) onto an axis-aligned grid
of the configured spacing and cropped to the leg (the bounding box of voxels above an HU
threshold, keeping connected components at least a fraction of the largest one -- this drops
the table and loose bits -- plus a margin). Oblique acquisitions and gantry tilt (slices stacked
off their normal) are resampled onto the LPS axes, not relabelled; upsampling by more than
:data:`RESAMPLING_WARN_FACTOR` along an axis (thick slices) is logged as a WARNING.

Orientation convention (for the DRR stage and everything after): volumes are in SimpleITK/ITK's
LPS with an identity direction matrix (:func:`read_standardised` refuses any other). Physical
axes: ``x`` from the patient's right to left, ``y`` from anterior to posterior, ``z`` from
inferior to superior, i.e. along the leg; the DRR stage rotates about ``z``.
``SimpleITK.GetArrayFromImage`` (and :func:`read_standardised`) give arrays indexed
``[z, y, x]``, shape ``(nz, ny, nx)``; nibabel would give ``[x, y, z]`` with RAS-flipped signs,
so read these files with SimpleITK.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.data.ct_volumes import (
    HU_MAX,
    HU_MIN,
    is_dicom_file,
    read_volume,
    strip_volume_suffix,
)
from kneesynth.data.phantom_ct import phantom_volume_names
from kneesynth.errors import InputError
from kneesynth.io import atomic_path

log = logging.getLogger(__name__)

#: Upsampling beyond this factor along an axis is logged as a WARNING.
RESAMPLING_WARN_FACTOR = 4.0


def list_volumes(folder: str | os.PathLike) -> dict[str, Path]:
    """Every CT volume under ``folder``: ``{name: path}``, sorted by name.

    ``path`` is a file for NIfTI/MHA/NRRD and a folder for a DICOM series. Hidden files are
    ignored, and so are other files (notes, tables) and DICOMDIR files (the index of a CD or
    PACS export). Raises :class:`InputError` if the folder
    does not exist, holds no volume, or two volumes share a name. Cheap: reads no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "CT folder not found")
    volumes: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in volumes:
            raise InputError(path, f"two volumes are named {name!r} (also {volumes[name]})")
        volumes[name] = path

    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        here = Path(directory)
        dicom_files = []
        for file_name in sorted(files):
            if file_name.startswith(".") or file_name.upper() == "DICOMDIR":
                continue  # a DICOMDIR indexes the slices of other folders: not a series here
            name = strip_volume_suffix(file_name)
            if name:
                add(name, here / file_name)
            elif is_dicom_file(here / file_name):
                dicom_files.append(file_name)
        if dicom_files:
            add(here.name if here != root else root.name, here)
    if not volumes:
        raise InputError(
            root,
            "no CT volumes found (expected .nii, .nii.gz, .mha, .mhd, .nrrd "
            "files or DICOM series folders)",
        )
    return dict(sorted(volumes.items()))


def volume_names(config: Mapping[str, Any]) -> list[str]:
    """The ``{volume}`` wildcard values: real volumes if ``data.sicas_dir`` is set, else phantoms.

    Cheap, for Snakemake parse time.
    """
    sicas_dir = (config.get("data") or {}).get("sicas_dir")
    if sicas_dir:
        return list(list_volumes(sicas_dir))

    return phantom_volume_names(config["phantom"], config["seed"])


# --------------------------------------------------------------------------------------------
# Standardising
# --------------------------------------------------------------------------------------------
def leg_bounding_box(
    hu_zyx: np.ndarray, threshold_hu: float, min_component_fraction: float
) -> tuple[slice, slice, slice] | None:
    """Index bounding box ``(z, y, x)`` of the leg: voxels above ``threshold_hu`` in connected
    components of at least ``min_component_fraction`` of the largest one. None if empty."""
    from scipy import ndimage  # heavy (scipy): imported on use

    body = hu_zyx > threshold_hu
    labels, count = ndimage.label(body)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
    mask = np.isin(labels, keep)
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))


def direction_matrix(image) -> np.ndarray:
    """An image's direction as a 3 x 3 matrix whose columns are the image axes (LPS)."""
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


def is_axis_aligned(direction: np.ndarray, tolerance: float = 1e-4) -> bool:
    """Whether the image axes are the LPS axes up to order and sign (no obliquity, no tilt)."""
    rounded = np.round(np.abs(direction))
    return bool(
        np.allclose(np.abs(direction), rounded, atol=tolerance)
        and np.all(rounded.sum(axis=0) == 1)
        and np.all(rounded.sum(axis=1) == 1)
    )


def obliquity_degrees(direction: np.ndarray) -> float:
    """Largest angle between an image axis and its nearest LPS axis."""
    columns = direction / np.linalg.norm(direction, axis=0)
    return float(np.degrees(np.arccos(np.clip(np.abs(columns).max(axis=0), 0, 1))).max())


def resampling_factors(image, spacing_mm: Sequence[float]) -> np.ndarray:
    """How many output voxels span one input voxel, per input axis (> 1: upsampling)."""
    direction = direction_matrix(image)
    columns = direction / np.linalg.norm(direction, axis=0)
    spacing = np.asarray([float(v) for v in spacing_mm])
    # the output spacing along each input axis (axis-aligned output grid)
    along = 1.0 / np.sqrt(((columns / spacing[:, None]) ** 2).sum(axis=0))
    return np.asarray(image.GetSpacing(), dtype=float) / along


def standardise_volume(
    image,
    spacing_mm: Sequence[float],
    body_threshold_hu: float,
    crop_margin_mm: float,
    min_component_fraction: float,
):
    """Resample onto an axis-aligned LPS grid (identity direction) of ``spacing_mm`` (x, y, z;
    linear) and crop to the leg.

    An axis-aligned image is reoriented (``DICOMOrient``) and resampled over its own extent; an
    oblique or gantry-tilted one is resampled onto the LPS box that holds it. Returns a float32
    SimpleITK image in HU clipped to [-1024, 3071]; outside the scan is air. None if no voxel is
    above ``body_threshold_hu``.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    spacing = np.asarray([float(v) for v in spacing_mm])
    if is_axis_aligned(direction_matrix(image)):
        image = sitk.DICOMOrient(image, "LPS")
        old_size = np.asarray(image.GetSize(), dtype=float)
        old_spacing = np.asarray(image.GetSpacing(), dtype=float)
        size = [max(1, int(round(n))) for n in old_size * old_spacing / spacing]
        # Keep the physical centre: the first new voxel sits half a (new) voxel inside the old
        # extent.
        origin_index = (spacing / old_spacing - 1.0) / 2.0
        origin = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in origin_index])
    else:
        old_size = np.asarray(image.GetSize(), dtype=float)
        corners = np.array(
            [
                image.TransformContinuousIndexToPhysicalPoint(
                    [float(c) for c in np.where(bits, old_size - 0.5, -0.5)]
                )
                for bits in np.ndindex(2, 2, 2)
            ]
        )
        low, high = corners.min(axis=0), corners.max(axis=0)
        size = [max(1, int(round(n))) for n in (high - low) / spacing]
        origin = tuple(float(v) for v in low + spacing / 2.0)
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        tuple(spacing),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        HU_MIN,
        sitk.sitkFloat32,
    )
    hu = np.clip(sitk.GetArrayFromImage(resampled), HU_MIN, HU_MAX)
    box = leg_bounding_box(hu, body_threshold_hu, min_component_fraction)
    if box is None:
        return None
    margin = [int(m) for m in np.ceil(crop_margin_mm / spacing[::-1])]  # z, y, x
    box = tuple(
        slice(max(0, b.start - m), min(n, b.stop + m))
        for b, m, n in zip(box, margin, hu.shape, strict=True)
    )
    cropped = sitk.GetImageFromArray(np.ascontiguousarray(hu[box]))
    cropped.SetSpacing(tuple(spacing))
    cropped.SetDirection(resampled.GetDirection())
    cropped.SetOrigin(resampled.TransformIndexToPhysicalPoint([int(b.start) for b in box[::-1]]))
    return cropped


def ingest_volume(
    source: str | os.PathLike, output: str | os.PathLike, cfg: Mapping[str, Any]
) -> None:
    """Read ``source``, standardise it with an ``ingest`` config section, write ``output``.

    Keys used: ``spacing_mm`` (x, y, z), ``body_threshold_hu``, ``crop_margin_mm``,
    ``min_component_fraction``, ``input_checks`` (default strict). Logs a WARNING when the
    resampling multiplies voxels along an axis by more than :data:`RESAMPLING_WARN_FACTOR`
    (thick slices: the volume holds less detail than its grid), and an INFO line when an oblique
    or tilted volume is resampled onto the LPS axes. The output is written atomically.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    image = read_volume(source, cfg.get("input_checks", "strict"))
    direction = direction_matrix(image)
    if not is_axis_aligned(direction):
        log.info(
            "%s: oblique or tilted (%.1f degrees off the LPS axes): resampled onto LPS axes",
            source,
            obliquity_degrees(direction),
        )
    factors = resampling_factors(image, cfg["spacing_mm"])
    if factors.max() > RESAMPLING_WARN_FACTOR:
        axis = int(np.argmax(factors))
        log.warning(
            "%s: voxels of %.3g mm along image axis %s upsampled %.1fx to %s mm: the volume "
            "holds less detail than its grid",
            source,
            image.GetSpacing()[axis],
            "xyz"[axis],
            factors[axis],
            list(cfg["spacing_mm"]),
        )
    standard = standardise_volume(
        image,
        cfg["spacing_mm"],
        cfg["body_threshold_hu"],
        cfg["crop_margin_mm"],
        cfg["min_component_fraction"],
    )
    if standard is None:
        raise InputError(source, f"no voxel above {cfg['body_threshold_hu']} HU: no leg to crop to")
    with atomic_path(output) as tmp:
        sitk.WriteImage(standard, str(tmp), True)
    log.info(
        "%s -> %s: size %s at %s mm", source, output, standard.GetSize(), standard.GetSpacing()
    )


def read_standardised(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read ``results/ct/{volume}.nii.gz``: (HU array ``[z, y, x]`` float32, spacing (x, y, z) mm).

    Refuses a volume whose direction is not the identity (LPS axes): the array alone would lose
    its orientation.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            path, f"cannot read the image: {' '.join(str(error).split())[-160:]}"
        ) from None
    if not np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-4):
        raise InputError(
            path,
            "direction is not the identity (LPS axes): not a volume standardised by ingest_ct "
            f"(direction {tuple(round(v, 3) for v in image.GetDirection())})",
        )
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(image.GetSpacing())
