"""Digitally reconstructed radiographs (DRRs) of CT volumes, forward-projected with ASTRA.

Conventions (world coordinates in mm, centred on the volume centre = the isocentre):

* CT arrays are in SimpleITK order ``(nz, ny, nx)``: x left-right, y anterior-posterior,
  z along the leg. z is the rotation axis; index k lies at ``(k - (n - 1) / 2) * spacing``.
* View ``i`` has angle ``theta_i = i * 360 / n_views`` degrees. The source sits at
  ``(SID sin theta, -SID cos theta, 0)`` and the flat detector centre at
  ``(-(SDD - SID) sin theta, (SDD - SID) cos theta, 0)`` (ASTRA's own ``cone``/``fanflat``
  convention), detector columns run along ``(cos theta, sin theta, 0)``.
  At theta = 0 the beam runs from -y to +y (anterior to posterior in LPS: an AP view), and
  column index grows with +x (patient left on the image right, as radiographs are read).
* Detector rows run along -z: row 0 is the top of the image (largest z, superior in LPS), so
  the leg stands vertical in every DRR, as in a radiograph.

Physics: HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (1/mm, clipped at 0);
each pixel is the line integral of ``mu`` (dimensionless, ``mu`` times mm), divided by ONE fixed
``line_integral_max`` from the config and clipped to [0, 1], so that grey values compare across
volumes. The bone projection is the path length (mm) through CT voxels above
``bone_hu_threshold``, divided by the fixed ``bone_path_length_max_mm`` and clipped to [0, 1].

Two projectors:

* GPU (``astra.use_cuda()`` is true): ASTRA 3D cone beam, ``FP3D_CUDA`` on a ``cone_vec``
  geometry, the exact divergent-beam geometry.
* CPU: ASTRA's 2D fan-beam projector (``line_fanflat`` by default) applied slice by slice, as one
  sparse system-matrix product ``W @ X`` over all slices, ``W`` (views * cols, ny * nx) and
  ``X`` (ny * nx, rows). Detector row ``r`` sees the axial plane through the isocentre at
  ``z_r = v_r / M`` (``v_r`` its height on the detector, ``M = SDD / SID`` the magnification);
  the CT is resampled linearly (in HU) along z onto those planes, then converted to attenuation
  and thresholded for bone. This fan-beam approximation
  ignores the cone angle (rays tilt by at most ``atan(v_max / SDD)``, about 7 degrees for the
  paper geometry), so objects far from the central plane are slightly misplaced in z and their
  path lengths are underestimated by ``1 - cos`` of that angle (< 1 %).

ASTRA's 3D functions kill the process with SIGFPE when no GPU is present; this module only calls
them after ``astra.use_cuda()`` returned true.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import save_npz
from kneesynth.projection.fan_beam import project_fan_beam

logger = logging.getLogger(__name__)


CPU_PROJECTORS = ("line_fanflat", "strip_fanflat")
BACKENDS = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProjectionSettings:
    """The ``projection`` config section, checked and typed.

    Distances and spacings in mm; ``detector_spacing_mm`` is (row, col) on the detector plane.
    """

    source_isocentre_distance_mm: float
    source_detector_distance_mm: float
    detector_rows: int
    detector_cols: int
    detector_spacing_mm: tuple[float, float]
    n_views: int
    mu_water_per_mm: float
    line_integral_max: float
    bone_hu_threshold: float
    bone_path_length_max_mm: float
    cpu_projector: str = "line_fanflat"
    backend: str = "auto"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProjectionSettings:
        """Build from the ``projection`` config section (unknown keys are the schema's job)."""
        spacing = config["detector_spacing_mm"]
        if isinstance(spacing, (int, float)):
            spacing = (spacing, spacing)
        settings = cls(
            source_isocentre_distance_mm=float(config["source_isocentre_distance_mm"]),
            source_detector_distance_mm=float(config["source_detector_distance_mm"]),
            detector_rows=int(config["detector_rows"]),
            detector_cols=int(config["detector_cols"]),
            detector_spacing_mm=(float(spacing[0]), float(spacing[1])),
            n_views=int(config["n_views"]),
            mu_water_per_mm=float(config["mu_water_per_mm"]),
            line_integral_max=float(config["line_integral_max"]),
            bone_hu_threshold=float(config["bone_hu_threshold"]),
            bone_path_length_max_mm=float(config["bone_path_length_max_mm"]),
            cpu_projector=str(config.get("cpu_projector", "line_fanflat")),
            backend=str(config.get("backend", "auto")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ValueError on settings no geometry can have."""
        if not 0 < self.source_isocentre_distance_mm < self.source_detector_distance_mm:
            raise ValueError(
                "projection: need 0 < source_isocentre_distance_mm < source_detector_distance_mm"
            )
        if min(self.detector_rows, self.detector_cols, self.n_views) < 1:
            raise ValueError("projection: detector_rows, detector_cols and n_views must be >= 1")
        if min(self.detector_spacing_mm) <= 0:
            raise ValueError("projection: detector_spacing_mm must be > 0")
        if min(self.mu_water_per_mm, self.line_integral_max, self.bone_path_length_max_mm) <= 0:
            raise ValueError(
                "projection: mu_water_per_mm, line_integral_max, bone_path_length_max_mm must be > 0"
            )
        if self.cpu_projector not in CPU_PROJECTORS:
            raise ValueError(f"projection: cpu_projector must be one of {CPU_PROJECTORS}")
        if self.backend not in BACKENDS:
            raise ValueError(f"projection: backend must be one of {BACKENDS}")

    @property
    def magnification(self) -> float:
        """SDD / SID: how much larger an object at the isocentre appears on the detector."""
        return self.source_detector_distance_mm / self.source_isocentre_distance_mm

    @property
    def origin_detector_distance_mm(self) -> float:
        return self.source_detector_distance_mm - self.source_isocentre_distance_mm

    def angles_deg(self) -> np.ndarray:
        """View angles (n_views,) in degrees: ``i * 360 / n_views``."""
        return np.arange(self.n_views, dtype=np.float64) * (360.0 / self.n_views)

    def row_heights_isocentre_mm(self) -> np.ndarray:
        """z (mm) at the isocentre seen by each detector row (rows,), row 0 on top (largest z)."""
        rows = np.arange(self.detector_rows, dtype=np.float64)
        height_on_detector = ((self.detector_rows - 1) / 2.0 - rows) * self.detector_spacing_mm[0]
        return height_on_detector / self.magnification


@dataclass
class DrrResult:
    """DRRs of one volume: ``drr`` and ``bone_projection`` (views, rows, cols) float32 in [0, 1],
    ``angles_deg`` (views,), and which projector ran."""

    drr: np.ndarray
    bone_projection: np.ndarray
    angles_deg: np.ndarray
    projector: str


# --------------------------------------------------------------------------------------------
# CT input


def read_ct(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a standardised CT volume: HU array (nz, ny, nx) float32 and spacing (sx, sy, sz) mm.

    Raises InputError (one line naming the file) for unreadable files, wrong dimensions,
    non-finite values or non-positive spacing.

    NIfTI files are read with nibabel: SimpleITK's NIfTI reader (2.x) silently turns NaN into 0
    and zero-fills a truncated file, which would hide exactly the damage checked for here.
    Other formats (MHA, NRRD) go through SimpleITK.
    """
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti(path)

    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise InputError(path, f"cannot read CT volume ({first_line})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"expected a 3D scalar CT volume, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    spacing = tuple(float(s) for s in image.GetSpacing())
    hu = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    check_ct(hu, spacing, path)
    return hu, spacing  # type: ignore[return-value]


def _read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """NIfTI CT via nibabel, returned in SimpleITK order (nz, ny, nx) with spacing (sx, sy, sz)."""

    import nibabel  # heavy (nibabel): imported on use

    try:
        image = nibabel.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        nibabel.filebasedimages.ImageFileError,
    ) as error:
        raise InputError(path, f"cannot read CT volume ({error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D scalar CT volume, got shape {data.shape}")
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    # nibabel indexes voxels (i, j, k) = (x, y, z); the file order is the same as SimpleITK's.
    hu = np.ascontiguousarray(data.transpose(2, 1, 0))
    check_ct(hu, spacing, path)
    return hu, spacing  # type: ignore[return-value]


def check_ct(
    hu: np.ndarray, spacing: tuple[float, ...], path: str | os.PathLike[str] = "<array>"
) -> None:
    """Raise InputError unless ``hu`` is a finite 3D array with positive ``spacing`` (sx, sy, sz)."""
    if hu.ndim != 3:
        raise InputError(path, f"expected a 3D CT volume (nz, ny, nx), got shape {hu.shape}")
    if min(hu.shape) < 1:
        raise InputError(path, f"empty CT volume, shape {hu.shape}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(path, f"voxel spacing must be three positive numbers, got {spacing}")
    if not np.isfinite(hu).all():
        bad = int(hu.size - np.isfinite(hu).sum())
        raise InputError(path, f"CT volume holds {bad} non-finite value(s) (NaN or inf)")


def attenuation_from_hu(hu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    """Linear attenuation (1/mm), same shape as ``hu``: ``mu_water * (1 + HU / 1000)``, >= 0."""
    mu = np.multiply(hu, np.float32(mu_water_per_mm / 1000.0), dtype=np.float32)
    mu += np.float32(mu_water_per_mm)
    np.maximum(mu, 0.0, out=mu)
    return mu


# --------------------------------------------------------------------------------------------
# Projector choice


def cuda_available() -> bool:
    """True when ASTRA was built with CUDA and sees a GPU (safe: ``astra.use_cuda`` only)."""
    import astra  # heavy (astra): imported on use

    try:
        return bool(astra.use_cuda())
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def choose_projector(backend: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"`` for the configured backend (auto: cuda when ASTRA has a GPU)."""
    if backend == "cpu":
        return "cpu"
    has_cuda = cuda_available()
    if backend == "cuda" and not has_cuda:
        raise RuntimeError("projection.backend is 'cuda' but ASTRA sees no CUDA GPU")
    return "cuda" if has_cuda else "cpu"


# --------------------------------------------------------------------------------------------
# GPU path: ASTRA 3D cone beam (FP3D_CUDA)


def cone_vectors(settings: ProjectionSettings) -> np.ndarray:
    """ASTRA ``cone_vec`` rows (views, 12): source, detector centre, u (column step), v (row step).

    Same source/detector placement as ASTRA's ``cone`` and the CPU ``fanflat`` geometry; v points
    to -z so that detector row 0 is the top of the image.
    """
    theta = np.deg2rad(settings.angles_deg())
    sin, cos = np.sin(theta), np.cos(theta)
    sid, odd = settings.source_isocentre_distance_mm, settings.origin_detector_distance_mm
    row_mm, col_mm = settings.detector_spacing_mm
    vectors = np.zeros((settings.n_views, 12), dtype=np.float64)
    vectors[:, 0], vectors[:, 1] = sin * sid, -cos * sid
    vectors[:, 3], vectors[:, 4] = -sin * odd, cos * odd
    vectors[:, 6], vectors[:, 7] = cos * col_mm, sin * col_mm
    vectors[:, 11] = -row_mm
    return vectors


def _project_cuda(
    hu: np.ndarray, spacing: tuple[float, float, float], settings: ProjectionSettings
) -> tuple[np.ndarray, np.ndarray]:
    """FP3D_CUDA cone-beam projections of mu and of the bone mask, scaled like the CPU path
    (not yet clipped: see :func:`project_ct`)."""
    import astra  # heavy (astra): imported on use

    if not cuda_available():  # never reach ASTRA 3D without CUDA (SIGFPE, not an exception)
        raise RuntimeError("ASTRA 3D cone beam needs CUDA")
    n_z, n_y, n_x = hu.shape
    half = [n * s / 2.0 for n, s in zip((n_x, n_y, n_z), spacing, strict=True)]
    volume_geometry = astra.create_vol_geom(
        n_y, n_x, n_z, -half[0], half[0], -half[1], half[1], -half[2], half[2]
    )
    projection_geometry = astra.create_proj_geom(
        "cone_vec", settings.detector_rows, settings.detector_cols, cone_vectors(settings)
    )
    outputs = []
    for volume, scale in (
        (attenuation_from_hu(hu, settings.mu_water_per_mm), 1.0 / settings.line_integral_max),
        (
            (hu > settings.bone_hu_threshold).astype(np.float32),
            1.0 / settings.bone_path_length_max_mm,
        ),
    ):
        volume_id = astra.data3d.create("-vol", volume_geometry, np.ascontiguousarray(volume))
        projection_id = astra.data3d.create("-sino", projection_geometry, 0)
        algorithm_id = None
        try:
            config = astra.astra_dict("FP3D_CUDA")
            config["VolumeDataId"] = volume_id
            config["ProjectionDataId"] = projection_id
            algorithm_id = astra.algorithm.create(config)
            astra.algorithm.run(algorithm_id)
            sinogram = astra.data3d.get_shared(projection_id)  # (rows, views, cols)
            projection = np.multiply(
                sinogram.transpose(1, 0, 2), np.float32(scale), dtype=np.float32
            )
        finally:
            if algorithm_id is not None:
                astra.algorithm.delete(algorithm_id)
            astra.data3d.delete([volume_id, projection_id])
        outputs.append(projection)
    return outputs[0], outputs[1]


# --------------------------------------------------------------------------------------------
# The pipeline's function


def project_ct(
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    settings: ProjectionSettings | Mapping[str, Any],
) -> DrrResult:
    """DRRs and bone projections of a CT volume.

    Parameters
    ----------
    hu : (nz, ny, nx) CT in HU (SimpleITK order; z is the rotation axis).
    spacing : voxel spacing (sx, sy, sz) in mm.
    settings : ProjectionSettings or the ``projection`` config section.

    Returns
    -------
    DrrResult with ``drr`` and ``bone_projection`` (views, rows, cols) float32 in [0, 1].
    """
    if not isinstance(settings, ProjectionSettings):
        settings = ProjectionSettings.from_config(settings)
    hu = np.asarray(hu, dtype=np.float32)
    check_ct(hu, tuple(spacing))
    projector = choose_projector(settings.backend)
    if projector == "cuda":
        logger.info("projector: astra FP3D_CUDA cone beam")
        drr, bone = _project_cuda(hu, spacing, settings)
        np.clip(drr, 0.0, 1.0, out=drr)
        np.clip(bone, 0.0, 1.0, out=bone)
    else:
        logger.info("projector: astra CPU fan beam (sparse system matrix)")
        logger.info("CPU projector kernel: %s", settings.cpu_projector)
        drr, bone = project_fan_beam(hu, spacing, settings)
    return DrrResult(
        drr=drr, bone_projection=bone, angles_deg=settings.angles_deg(), projector=projector
    )


def project_ct_file(
    ct_path: str | os.PathLike[str], output_path: str | os.PathLike[str], config: Mapping[str, Any]
) -> DrrResult:
    """Read ``results/ct/{volume}.nii.gz``, project it, write ``results/drr/{volume}.npz``
    (``drr``, ``bone_projection``, ``angles_deg``) atomically."""

    settings = ProjectionSettings.from_config(config)
    hu, spacing = read_ct(ct_path)
    result = project_ct(hu, spacing, settings)
    logger.info(
        "%s: %d views of %d x %d, drr range [%.3f, %.3f], %.1f %% of pixels saturated at 1",
        ct_path,
        *result.drr.shape,
        float(result.drr.min()),
        float(result.drr.max()),
        100.0 * float((result.drr >= 1.0).mean()),
    )
    save_npz(
        output_path,
        drr=result.drr,
        bone_projection=result.bone_projection,
        angles_deg=result.angles_deg,
    )
    return result
