"""Ingest SICAS/SMIR CT volumes: any SimpleITK format -> standardised NIfTI in HU.

Input: a folder (searched recursively) of CT volumes as NIfTI (``.nii``, ``.nii.gz``),
MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``) or DICOM series (a folder of
slice files, one series per folder). A volume's name is its file name without the extension
(``SMIR.Body.025Y.M.CT.57697.nii`` -> ``SMIR.Body.025Y.M.CT.57697``) or its DICOM folder's
name. The phantom stage writes the same kind of folder (:mod:`kneesynth.phantom`).

Output ``results/ct/{volume}.nii.gz``: float32 HU, resampled (linear) to the configured
spacing and cropped to the leg (the bounding box of voxels above an HU threshold, keeping
connected components at least a fraction of the largest one -- this drops the table and
loose bits -- plus a margin).

Orientation convention (for the DRR stage and everything after): volumes are reoriented to
SimpleITK/ITK's LPS with an identity direction matrix. Physical axes: ``x`` from the patient's
right to left, ``y`` from anterior to posterior, ``z`` from inferior to superior, i.e. along
the leg; the DRR stage rotates about ``z``. ``SimpleITK.GetArrayFromImage`` (and
:func:`read_standardised`) give arrays indexed ``[z, y, x]``, shape ``(nz, ny, nx)``; nibabel
would give ``[x, y, z]`` with RAS-flipped signs, so read these files with SimpleITK.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.errors import InputError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")
HU_MIN, HU_MAX = -1024.0, 3071.0
#: Relative deviation of a DICOM slice gap from the median gap that we accept.
SLICE_GAP_TOLERANCE = 0.05


def _strip_suffix(name: str) -> str | None:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a .dcm name."""
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def list_volumes(folder: str | os.PathLike) -> dict[str, Path]:
    """Every CT volume under ``folder``: ``{name: path}``, sorted by name.

    ``path`` is a file for NIfTI/MHA/NRRD and a folder for a DICOM series. Hidden files are
    ignored, and so are other files (notes, tables). Raises :class:`InputError` if the folder
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
            if file_name.startswith("."):
                continue
            name = _strip_suffix(file_name)
            if name:
                add(name, here / file_name)
            elif _is_dicom_file(here / file_name):
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
    from kneesynth.phantom import phantom_volume_names

    return phantom_volume_names(config["phantom"], config["seed"])


def check_dicom_series(folder: str | os.PathLike) -> list[str]:
    """Check a DICOM series folder and return its slice files sorted along the slice normal.

    Raises :class:`InputError` for: no slices, more than one series, slices that are not
    parallel, duplicate positions, a missing slice (a gap of about twice the usual spacing) or
    uneven spacing (any gap off the median by more than :data:`SLICE_GAP_TOLERANCE`).
    """
    import pydicom

    folder = Path(folder)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and _is_dicom_file(p)
    )
    if not files:
        raise InputError(folder, "no DICOM files in the series folder")
    positions, series, orientation = [], set(), None
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            position = np.asarray(header.ImagePositionPatient, dtype=float)
            this_orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
        except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, OSError) as error:
            raise InputError(
                path, f"not a readable CT slice ({type(error).__name__}: {error})"
            ) from None
        series.add(str(header.get("SeriesInstanceUID", "")))
        if orientation is None:
            orientation = this_orientation
        elif not np.allclose(orientation, this_orientation, atol=1e-3):
            raise InputError(path, "slice orientation differs from the other slices of the series")
        positions.append(position)
    if len(series) > 1:
        raise InputError(folder, f"holds {len(series)} DICOM series; put one series per folder")
    if len(files) < 2:
        raise InputError(folder, "a DICOM series needs at least 2 slices")
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along)
    gaps = np.diff(along[order])
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise InputError(
            files[order[k + 1]], f"two slices at the same position ({along[order[k]]:.2f} mm)"
        )
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median) / median
    if np.any(deviation > SLICE_GAP_TOLERANCE):
        k = int(np.argmax(deviation))
        low, high = along[order[k]], along[order[k + 1]]
        ratio = gaps[k] / median
        if abs(ratio - round(ratio)) < SLICE_GAP_TOLERANCE and round(ratio) >= 2:
            problem = (
                f"missing slice(s): gap of {gaps[k]:.2f} mm between {low:.2f} and {high:.2f} mm "
                f"where the spacing is {median:.2f} mm"
            )
        else:
            problem = (
                f"uneven slice spacing: gap of {gaps[k]:.2f} mm between {low:.2f} and "
                f"{high:.2f} mm, others {median:.2f} mm"
            )
        raise InputError(folder, problem)
    return [str(files[i]) for i in order]


def _read_nifti(path: Path):
    """Read a NIfTI file with nibabel into a SimpleITK image (LPS physical space).

    SimpleITK's NIfTI reader zero-fills a truncated file and turns NaN into 0 without a word,
    so NIfTI goes through nibabel, which raises on a short file and keeps NaN.
    """
    import nibabel as nib
    import SimpleITK as sitk

    try:
        nifti = nib.load(str(path))
        data = np.asarray(nifti.dataobj, dtype=np.float32)  # applies scl_slope/scl_inter
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
        detail = " ".join(str(error).split())[-160:]
        raise InputError(
            path, f"cannot read the NIfTI file (truncated or corrupt?): {detail}"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
    affine = nifti.affine
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = ras_to_lps @ affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.ravel()])
    image.SetOrigin([float(v) for v in ras_to_lps @ affine[:3, 3]])
    return image


def read_volume(path: str | os.PathLike):
    """Read one CT volume (file or DICOM series folder) as a float32 SimpleITK image in HU.

    Raises :class:`InputError` for unreadable or truncated files, bad DICOM series, non-3D
    images, and volumes holding NaN or infinite values.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(check_dicom_series(path))
            image = reader.Execute()
        else:
            if not path.is_file():
                raise InputError(path, "file not found")
            if path.name.lower().endswith((".nii", ".nii.gz")):
                image = _read_nifti(path)
            else:
                image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = " ".join(str(error).split())[-160:]
        raise InputError(path, f"cannot read the image (truncated or corrupt?): {detail}") from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(path, f"expected a 3D volume, got size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, "expected one value per voxel (a CT in HU), got a vector image")
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    bad = ~np.isfinite(values)
    if bad.any():
        z, y, x = np.argwhere(bad)[0]
        raise InputError(
            path, f"{int(bad.sum())} NaN or infinite voxel(s), first at (x={x}, y={y}, z={z})"
        )
    return image


def leg_bounding_box(
    hu_zyx: np.ndarray, threshold_hu: float, min_component_fraction: float
) -> tuple[slice, slice, slice] | None:
    """Index bounding box ``(z, y, x)`` of the leg: voxels above ``threshold_hu`` in connected
    components of at least ``min_component_fraction`` of the largest one. None if empty."""
    from scipy import ndimage

    body = hu_zyx > threshold_hu
    labels, count = ndimage.label(body)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
    mask = np.isin(labels, keep)
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))


def standardise_volume(
    image,
    spacing_mm: Sequence[float],
    body_threshold_hu: float,
    crop_margin_mm: float,
    min_component_fraction: float,
):
    """Reorient to LPS, resample to ``spacing_mm`` (x, y, z; linear) and crop to the leg.

    Returns a float32 SimpleITK image in HU clipped to [-1024, 3071]; outside the scan is air.
    """
    import SimpleITK as sitk

    image = sitk.DICOMOrient(image, "LPS")
    spacing = np.asarray([float(v) for v in spacing_mm])
    old_size = np.asarray(image.GetSize(), dtype=float)
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    size = [max(1, int(round(n))) for n in old_size * old_spacing / spacing]
    # Keep the physical centre: the first new voxel sits half a (new) voxel inside the old extent.
    origin_index = (spacing / old_spacing - 1.0) / 2.0
    origin = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in origin_index])
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        tuple(spacing),
        image.GetDirection(),
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
    ``min_component_fraction``. The output is written atomically.
    """
    import SimpleITK as sitk

    from kneesynth.io import atomic_path

    image = read_volume(source)
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
    """Read ``results/ct/{volume}.nii.gz``: (HU array ``[z, y, x]`` float32, spacing (x, y, z) mm)."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            path, f"cannot read the image: {' '.join(str(error).split())[-160:]}"
        ) from None
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(image.GetSpacing())
