"""Reading one CT volume, checked: NIfTI (nibabel), MetaImage and NRRD (SimpleITK), a DICOM
series folder (pydicom) or an Enhanced multi-frame CT file (highdicom).

What an input is (``ingest.input_checks``): a DICOM series must say Modality CT, and every
volume must look like CT in HU (air near -1000 HU, :func:`check_ct_values`); under ``strict``
(default) anything else is refused naming the file and the reason, under ``relaxed`` it is a
WARNING (:func:`refuse`). Truncated files, slices of another size, a missing or duplicate slice,
uneven spacing, 4D images and NaN are refused naming the file.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kneesynth.data.images import dicom_pixel_array, read_dicom
from kneesynth.errors import InputError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
HU_MIN, HU_MAX = -1024.0, 3071.0
#: Relative deviation of a DICOM slice gap from the median gap that we accept.
SLICE_GAP_TOLERANCE = 0.05
#: ``ingest.input_checks``: refuse inputs that are not CT (strict) or only warn (relaxed).
INPUT_CHECKS = ("strict", "relaxed")
#: A CT in HU has air: at least MIN_AIR_FRACTION of its voxels in AIR_WINDOW_HU.
AIR_WINDOW_HU = (-1100.0, -900.0)
MIN_AIR_FRACTION = 0.005


def strip_volume_suffix(name: str) -> str | None:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def is_dicom_file(path: Path) -> bool:
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


# --------------------------------------------------------------------------------------------
# What an input is
# --------------------------------------------------------------------------------------------
def refuse(path: str | os.PathLike, problem: str, checks: str = "strict") -> None:
    """An input that does not say it is what the stage expects: an :class:`InputError` under
    ``ingest.input_checks: strict`` (the error says how to relax it), a WARNING under
    ``relaxed`` (the input is used as it is)."""
    if checks not in INPUT_CHECKS:
        raise ValueError(f"unknown ingest.input_checks {checks!r} ({', '.join(INPUT_CHECKS)})")
    if checks == "strict":
        raise InputError(path, f"{problem} (set ingest.input_checks: relaxed to use it anyway)")
    log.warning("%s: %s; used anyway (ingest.input_checks: relaxed)", path, problem)


def check_ct_values(image, path: str | os.PathLike, checks: str = "strict") -> None:
    """Refuse (see :func:`refuse`) a volume whose values do not look like CT in HU: at least
    :data:`MIN_AIR_FRACTION` of the voxels must lie near air (:data:`AIR_WINDOW_HU`).

    An MR (intensities >= 0), a PET, or a CT stored without its rescale to HU (air near 0)
    fails; padding outside the scanned field (-2048, -3024 HU) does not count either way.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    values = sitk.GetArrayViewFromImage(image)
    step = max(1, int(round((values.size / 4e6) ** (1 / 3))))  # a few million voxels suffice
    sample = np.asarray(values[::step, ::step, ::step], dtype=np.float32).ravel()
    low, high = AIR_WINDOW_HU
    air = float(np.mean((sample >= low) & (sample <= high))) if sample.size else 0.0
    if air >= MIN_AIR_FRACTION:
        return
    p1, p99 = np.percentile(sample, [1, 99]) if sample.size else (np.nan, np.nan)
    refuse(
        path,
        f"does not look like CT in HU: {air:.1%} of voxels near air ({low:g} to {high:g} HU), "
        f"values {p1:.4g} to {p99:.4g} (1st to 99th percentile); an MR, or a CT without its "
        "rescale to HU?",
        checks,
    )


# --------------------------------------------------------------------------------------------
# DICOM series
# --------------------------------------------------------------------------------------------
@dataclass
class DicomSeries:
    """A checked DICOM series: slice files in order along the stack, and its geometry.

    ``direction`` holds the image axes as columns (row direction, column direction, slice step);
    with a gantry tilt the third is not perpendicular to the first two. ``spacing`` is
    (x, y, z) mm, ``origin`` the centre of the first voxel (LPS mm). ``multiframe``: one
    Enhanced (multi-frame) file holding the whole volume.
    """

    files: list[Path]
    origin: np.ndarray | None = None
    direction: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None
    size: tuple[int, int] = (0, 0)
    multiframe: bool = False
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _sop_class(header) -> str:
    meta = getattr(header, "file_meta", None)
    uid = header.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    return str(uid or "")


def _floats(header, keyword: str, count: int, path: Path) -> np.ndarray:
    value = header.get(keyword)
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float) if value else None
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.size != count or not np.all(np.isfinite(numbers)):
        shown = "missing" if not value else f"{value!s}"
        raise InputError(path, f"{keyword} {shown}: cannot place the slice in the volume")
    return numbers


def _summary(skipped: Sequence[tuple[Path, str]]) -> str:
    reasons = Counter(reason for _, reason in skipped)
    return "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(5))


def scan_dicom_series(folder: str | os.PathLike, checks: str = "strict") -> DicomSeries:
    """Check a DICOM series folder from its headers (no pixel data is read).

    Skipped, and logged: a DICOMDIR, non-image objects (SR, presentation states ...) and
    localizers (scouts). Raises :class:`InputError` naming the file for: a file that is not
    DICOM, a series that is not CT (Modality; see :func:`refuse`), slices of another size,
    pixel spacing or orientation, a slice without position, more than one series, an Enhanced
    (multi-frame) file beside other slices, duplicate positions, a missing slice (a gap of
    about twice the usual spacing), uneven spacing (any gap off the median by more than
    :data:`SLICE_GAP_TOLERANCE`) and slices off a straight line.
    """
    from pydicom.uid import MediaStorageDirectoryStorage  # heavy (pydicom): imported on use

    folder = Path(folder)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)
    )
    if not files:
        raise InputError(folder, "no DICOM files in the series folder")
    kept, skipped = [], []
    for path in files:
        header = read_dicom(path, stop_before_pixels=True)
        sop_class = _sop_class(header)
        image_type = [str(v).upper() for v in header.get("ImageType", []) or []]
        if sop_class == MediaStorageDirectoryStorage or path.name.upper() == "DICOMDIR":
            skipped.append((path, "a DICOMDIR (an index of files, not a slice)"))
        elif "Rows" not in header:
            name = getattr(header.get("SOPClassUID"), "name", sop_class) or "unknown SOP class"
            skipped.append((path, f"not an image ({name})"))
        elif "LOCALIZER" in image_type:
            skipped.append((path, "a localizer (scout) image"))
        else:
            kept.append((path, header))
    for path, reason in skipped:
        log.info("%s: skipped: %s", path, reason)
    if not kept:
        raise InputError(
            folder, f"no CT slices in the series folder (skipped: {_summary(skipped)})"
        )
    modalities = [str(h.get("Modality", "") or "").upper() for _, h in kept]
    odd = [i for i, m in enumerate(modalities) if m != "CT"]
    if odd:
        shown = modalities[odd[0]] or "missing"
        refuse(kept[odd[0]][0], f"Modality {shown}: not a CT series (expected Modality CT)", checks)
    frames = [int(h.get("NumberOfFrames", 1) or 1) for _, h in kept]
    if max(frames) > 1:
        path = kept[int(np.argmax(frames))][0]
        if len(kept) > 1:
            raise InputError(
                path,
                f"an Enhanced (multi-frame) image of {max(frames)} frames beside "
                f"{len(kept) - 1} other slice file(s): give it a folder of its own",
            )
        return DicomSeries(files=[path], multiframe=True, skipped=skipped)
    series = Counter(str(h.get("SeriesInstanceUID", "")) for _, h in kept)
    if len(series) > 1:
        raise InputError(folder, f"holds {len(series)} DICOM series; put one series per folder")
    if len(kept) < 2:
        raise InputError(folder, "a DICOM series needs at least 2 slices")
    sizes = Counter((int(h.Rows), int(h.Columns)) for _, h in kept)
    usual = sizes.most_common(1)[0][0]
    for path, header in kept:
        if (int(header.Rows), int(header.Columns)) != usual:
            raise InputError(
                path,
                f"slice of {header.Rows} x {header.Columns} pixels; the other slices of the "
                f"series are {usual[0]} x {usual[1]}",
            )
    spacings = [tuple(_floats(h, "PixelSpacing", 2, p)) for p, h in kept]
    usual_spacing = Counter(spacings).most_common(1)[0][0]
    if min(usual_spacing) <= 0:
        raise InputError(kept[0][0], f"PixelSpacing {usual_spacing} is not a usable spacing")
    for (path, _), spacing in zip(kept, spacings, strict=True):
        if not np.allclose(spacing, usual_spacing, rtol=1e-4):
            raise InputError(
                path, f"PixelSpacing {spacing} differs from the series' {usual_spacing}"
            )
    orientation = _floats(kept[0][1], "ImageOrientationPatient", 6, kept[0][0])
    positions = []
    for path, header in kept:
        if not np.allclose(
            _floats(header, "ImageOrientationPatient", 6, path), orientation, atol=1e-3
        ):
            raise InputError(path, "slice orientation differs from the other slices of the series")
        positions.append(_floats(header, "ImagePositionPatient", 3, path))
    row_axis, column_axis = orientation[:3], orientation[3:]
    normal = np.cross(row_axis, column_axis)
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along)
    gaps = np.diff(along[order])
    paths = [kept[i][0] for i in order]
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise InputError(
            paths[k + 1], f"two slices at the same position ({along[order[k]]:.2f} mm)"
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
    ordered = np.asarray([positions[i] for i in order])
    step = (ordered[-1] - ordered[0]) / (len(ordered) - 1)
    fitted = ordered[0] + np.outer(np.arange(len(ordered)), step)
    off_line = np.linalg.norm(ordered - fitted, axis=1)
    if off_line.max() > SLICE_GAP_TOLERANCE * np.linalg.norm(step):
        k = int(np.argmax(off_line))
        raise InputError(
            paths[k], f"slice {off_line[k]:.2f} mm off the line through the other slices"
        )
    tilt = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), 0, 1))))
    if tilt > 0.01:
        log.info("%s: gantry tilt of %.2f degrees (slices sheared along the stack)", folder, tilt)
    direction = np.column_stack([row_axis, column_axis, step / np.linalg.norm(step)])
    return DicomSeries(
        files=paths,
        origin=ordered[0],
        direction=direction,
        spacing=(usual_spacing[1], usual_spacing[0], float(np.linalg.norm(step))),
        size=usual,
        skipped=skipped,
    )


def check_dicom_series(folder: str | os.PathLike, checks: str = "strict") -> list[str]:
    """Check a DICOM series folder (see :func:`scan_dicom_series`); its slice files in order."""
    return [str(p) for p in scan_dicom_series(folder, checks).files]


def _read_multiframe(path: Path):
    """An Enhanced (multi-frame) CT as a SimpleITK image in HU (highdicom's volume)."""
    import highdicom  # heavy (highdicom): imported on use
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    try:
        volume = highdicom.imread(path).get_volume(dtype=np.float32)
        image = volume.to_simpleitk()
    except (ValueError, RuntimeError, KeyError, AttributeError, TypeError) as error:
        detail = " ".join(str(error).split())[:160]
        raise InputError(
            path, f"cannot build a volume from the Enhanced (multi-frame) image: {detail}"
        ) from None
    return sitk.Cast(image, sitk.sitkFloat32)


def read_dicom_series(folder: str | os.PathLike, checks: str = "strict"):
    """A checked DICOM series folder as a float32 SimpleITK image in HU.

    Pixel data are decoded by pydicom (every transfer syntax it can decode; see
    :mod:`kneesynth.data.images`) and rescaled to HU (Modality LUT). A gantry tilt is kept as a
    sheared direction matrix, which :func:`standardise_volume` resamples away.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use
    from pydicom.pixels import apply_modality_lut  # heavy (pydicom): imported on use

    series = scan_dicom_series(folder, checks)
    if series.multiframe:
        return _read_multiframe(series.files[0])
    rows, columns = series.size
    volume = np.empty((len(series.files), rows, columns), dtype=np.float32)
    for index, path in enumerate(series.files):
        dataset = read_dicom(path)
        pixels = dicom_pixel_array(dataset, path)
        if pixels.shape != (rows, columns):
            raise InputError(
                path, f"pixel data of shape {pixels.shape}, expected {rows} x {columns}"
            )
        volume[index] = apply_modality_lut(pixels, dataset)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing([float(v) for v in series.spacing])
    image.SetOrigin([float(v) for v in series.origin])
    image.SetDirection([float(v) for v in series.direction.ravel()])
    return image


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
_METAIMAGE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}  # fmt: skip
_NRRD_BYTES = {
    "char": 1, "signed char": 1, "uchar": 1, "unsigned char": 1, "int8": 1, "uint8": 1,
    "short": 2, "short int": 2, "ushort": 2, "unsigned short": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "unsigned int": 4, "int32": 4, "uint32": 4, "float": 4, "double": 8,
    "longlong": 8, "ulonglong": 8, "int64": 8, "uint64": 8,
}  # fmt: skip


def _check_raw_data_size(path: Path) -> None:
    """Refuse a MetaImage or NRRD file whose uncompressed voxel data are shorter than its header
    says (ITK would report "No such file or directory" or zero-fill). Others pass."""
    name = path.name.lower()
    if not name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError as error:
        raise InputError(path, f"cannot read ({error.strerror})") from None
    fields, offset = {}, None
    if name.endswith((".mha", ".mhd")):
        position = 0
        for line in head.splitlines(keepends=True):
            position += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                offset = position
                break
        if fields.get("compresseddata", "false").lower() == "true" or "dimsize" not in fields:
            return
        try:
            count = int(np.prod([int(v) for v in fields["dimsize"].split()]))
            count *= int(fields.get("elementnumberofchannels", "1"))
            width = _METAIMAGE_BYTES[fields.get("elementtype", "").upper()]
        except (ValueError, KeyError):
            return
        data_file = fields.get("elementdatafile", "")
    else:
        end = head.find(b"\n\n")
        if end < 0:
            return
        for line in head[:end].decode("latin-1").splitlines()[1:]:
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip().lstrip("=").strip()
        if fields.get("encoding", "raw").lower() != "raw":
            return
        try:
            count = int(np.prod([int(v) for v in fields["sizes"].split()]))
            width = _NRRD_BYTES[fields.get("type", "").lower()]
        except (ValueError, KeyError):
            return
        offset = end + 2
        data_file = fields.get(
            "data file", fields.get("datafile", "LOCAL" if name.endswith(".nrrd") else "")
        )
    expected = count * width
    if data_file.upper() == "LOCAL" or (data_file == "" and offset is not None):
        available = path.stat().st_size - (offset or 0)
        where = path
    else:
        where = path.parent / data_file
        if not where.is_file():
            raise InputError(path, f"its voxel data file {data_file} is missing")
        available = where.stat().st_size
    if available < expected:
        raise InputError(
            where, f"truncated: {available} of {expected} bytes of voxel data ({count} voxels)"
        )


def _read_nifti(path: Path):
    """Read a NIfTI file with nibabel into a SimpleITK image (LPS physical space).

    SimpleITK's NIfTI reader zero-fills a truncated file and turns NaN into 0 without a word,
    so NIfTI goes through nibabel, which raises on a short file and keeps NaN.
    """
    import nibabel as nib  # heavy (nibabel): imported on use
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

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
        raise InputError(
            path, f"expected one 3D volume, got a {data.ndim}D image of shape {data.shape}"
        )
    affine = nifti.affine
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = ras_to_lps @ affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.ravel()])
    image.SetOrigin([float(v) for v in ras_to_lps @ affine[:3, 3]])
    return image


def read_volume(path: str | os.PathLike, checks: str = "strict"):
    """Read one CT volume (file or DICOM series folder) as a float32 SimpleITK image in HU.

    Raises :class:`InputError` for unreadable or truncated files, bad DICOM series, non-3D
    images, volumes holding NaN or infinite values, and (see :func:`refuse`, ``checks``) inputs
    that are not CT: a DICOM Modality other than CT, values that do not look like HU.
    """
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    path = Path(path)
    try:
        if path.is_dir():
            image = read_dicom_series(path, checks)
        else:
            if not path.is_file():
                raise InputError(path, "file not found")
            if path.name.lower().endswith((".nii", ".nii.gz")):
                image = _read_nifti(path)
            else:
                _check_raw_data_size(path)
                image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = " ".join(str(error).split())[-160:]
        raise InputError(path, f"cannot read the image (truncated or corrupt?): {detail}") from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(
            path,
            f"expected one 3D volume, got a {image.GetDimension()}D image of size {image.GetSize()}",
        )
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
    check_ct_values(image, path, checks)
    return image
