"""The CPU path of the DRR projection: ASTRA's 2D fan-beam projector as one sparse system matrix
(built once per geometry and cached), applied to the CT's planes resampled along z (see
:mod:`kneesynth.projection.drr` for the geometry and its approximation).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse

if TYPE_CHECKING:  # drr imports this module: the settings class is only annotated here
    from kneesynth.projection.drr import ProjectionSettings

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# CPU path: ASTRA 2D fan beam as one sparse system matrix

_SYSTEM_MATRIX_CACHE: dict[tuple, scipy.sparse.csr_matrix] = {}


def fan_beam_system_matrix(
    settings: ProjectionSettings, n_x: int, n_y: int, spacing_x: float, spacing_y: float
) -> scipy.sparse.csr_matrix:
    """ASTRA 2D fan-beam system matrix, float32 CSR of shape (views * cols, n_y * n_x).

    Row ``v * cols + c`` is detector column ``c`` of view ``v``; column ``iy * n_x + ix`` is the
    pixel of an axial slice in SimpleITK order (iy grows with +y). Entries are intersection
    lengths in mm, so ``W @ mu`` gives line integrals. Cached per geometry within the process.
    """
    key = (
        settings.source_isocentre_distance_mm,
        settings.source_detector_distance_mm,
        settings.detector_cols,
        settings.detector_spacing_mm[1],
        settings.n_views,
        settings.cpu_projector,
        int(n_x),
        int(n_y),
        float(spacing_x),
        float(spacing_y),
    )
    cached = _SYSTEM_MATRIX_CACHE.get(key)
    if cached is not None:
        return cached

    import astra  # heavy (astra): imported on use

    half_x, half_y = n_x * spacing_x / 2.0, n_y * spacing_y / 2.0
    volume_geometry = astra.create_vol_geom(n_y, n_x, -half_x, half_x, -half_y, half_y)
    projection_geometry = astra.create_proj_geom(
        "fanflat",
        settings.detector_spacing_mm[1],
        settings.detector_cols,
        np.deg2rad(settings.angles_deg()),
        settings.source_isocentre_distance_mm,
        settings.origin_detector_distance_mm,
    )
    projector_id = astra.create_projector(
        settings.cpu_projector, projection_geometry, volume_geometry
    )
    matrix_id = astra.projector.matrix(projector_id)
    try:
        astra_matrix = astra.matrix.get(matrix_id)
    finally:
        astra.matrix.delete(matrix_id)
        astra.projector.delete(projector_id)
    matrix = scipy.sparse.csr_matrix(astra_matrix, dtype=np.float32)
    # ASTRA 2D puts image row 0 at the largest y; SimpleITK's row 0 is the smallest y (as in
    # ASTRA 3D). Renumber the columns once here so the slices go in without a flipped copy.
    flip = np.arange(n_y * n_x, dtype=matrix.indices.dtype).reshape(n_y, n_x)[::-1].ravel()
    matrix.indices = flip[matrix.indices]
    matrix.has_sorted_indices = False
    matrix.sort_indices()
    _SYSTEM_MATRIX_CACHE[key] = matrix
    return matrix


def row_interpolation(
    settings: ProjectionSettings, n_z: int, spacing_z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation along z from CT slices onto the detector-row planes.

    Returns (k0, k1, w0, w1), each (rows,): row r = w0[r] * slice k0[r] + w1[r] * slice k1[r].
    Rows whose plane lies outside the volume (beyond half a slice) get zero weights.
    """
    heights = settings.row_heights_isocentre_mm()
    position = heights / spacing_z + (n_z - 1) / 2.0  # fractional slice index
    inside = (position >= -0.5) & (position <= n_z - 0.5)
    position = np.clip(position, 0.0, n_z - 1.0)
    k0 = np.floor(position).astype(np.int64)
    k1 = np.minimum(k0 + 1, n_z - 1)
    w1 = (position - k0).astype(np.float32)
    w0 = (1.0 - w1).astype(np.float32)
    w0[~inside] = 0.0
    w1[~inside] = 0.0
    return k0, k1, w0, w1


def _cpu_columns(
    hu: np.ndarray, settings: ProjectionSettings, spacing_z: float, block_pixels: int = 256
) -> np.ndarray:
    """The right-hand side X (ny * nx, 2 * rows) float32, C order: per detector row, the CT
    resampled (linearly, in HU) onto that row's plane, as attenuation divided by
    ``line_integral_max`` (columns ``:rows``) and as bone mask divided by
    ``bone_path_length_max_mm`` (columns ``rows:``), so that ``W @ X`` is already normalised.

    Built in blocks of ``block_pixels`` pixels: each block is resampled, converted and
    thresholded in a (2 * rows, pixels) buffer that stays in cache, then written into X's
    layout by ONE transposed copy (transposed arithmetic on X itself is several times slower).
    """
    n_z, n_y, n_x = hu.shape
    rows, n_pixels = settings.detector_rows, n_y * n_x
    k0, k1, w0, w1 = row_interpolation(settings, n_z, spacing_z)
    w0c, w1c = w0[:, None], w1[:, None]
    # mu / line_integral_max = HU * mu_scale + mu_offset, clipped at 0
    mu_scale = np.float32(settings.mu_water_per_mm / 1000.0 / settings.line_integral_max)
    mu_offset = np.float32(settings.mu_water_per_mm / settings.line_integral_max)
    bone_scale = np.float32(1.0 / settings.bone_path_length_max_mm)
    bone_hu = np.float32(settings.bone_hu_threshold)
    outside = np.flatnonzero((w0 == 0) & (w1 == 0))  # rows whose plane misses the volume: air
    slices = hu.reshape(n_z, n_pixels)
    columns = np.empty((n_pixels, 2 * rows), dtype=np.float32)
    buffer = np.empty((2 * rows, block_pixels), dtype=np.float32)
    second = np.empty((rows, block_pixels), dtype=np.float32)
    for p0 in range(0, n_pixels, block_pixels):
        block = slices[:, p0 : p0 + block_pixels]  # (slices, pixels)
        width = block.shape[1]
        mu, bone = buffer[:rows, :width], buffer[rows:, :width]
        resampled = bone  # (rows, pixels), HU: the bone half is the scratch until thresholded
        np.take(block, k0, axis=0, out=resampled, mode="clip")
        resampled *= w0c
        other = second[:, :width]
        np.take(block, k1, axis=0, out=other, mode="clip")
        other *= w1c
        resampled += other
        resampled[outside] = -1000.0
        np.multiply(resampled, mu_scale, out=mu)
        mu += mu_offset
        np.maximum(mu, 0.0, out=mu)
        np.greater(resampled, bone_hu, out=bone, casting="unsafe")  # in place: reads, then writes
        bone *= bone_scale
        columns[p0 : p0 + width] = buffer[:, :width].T
    return columns


def square_pixels(
    hu: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The CT with square in-plane voxels, as ASTRA's 2D fan-beam projectors require.

    Voxels already square (within 0.01 %) are returned as they are (with sx used for both);
    otherwise the slices are resampled linearly onto the finer of sx and sy, keeping the field
    of view to within half a voxel. Returns (hu (nz, ny', nx'), (s, s, sz)).
    """
    sx, sy, sz = (float(v) for v in spacing)
    if math.isclose(sx, sy, rel_tol=1e-4):
        return hu, (sx, sx, sz)
    # heavy (scipy.ndimage): imported on use, by the volumes whose pixels are not square
    from scipy import ndimage

    side = min(sx, sy)
    n_z, n_y, n_x = hu.shape
    shape = (n_z, max(1, round(n_y * sy / side)), max(1, round(n_x * sx / side)))
    zoom = [new / old for new, old in zip(shape, hu.shape, strict=True)]
    logger.info("resampling in-plane voxels %.3f x %.3f mm to %.3f mm squares", sx, sy, side)
    resampled = ndimage.zoom(hu, zoom, order=1, mode="nearest", grid_mode=True)
    return resampled.astype(np.float32, copy=False), (side, side, sz)


def project_fan_beam(
    hu: np.ndarray, spacing: tuple[float, float, float], settings: ProjectionSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Line integrals of mu / line_integral_max and bone path lengths / bone_path_length_max_mm,
    both (views, rows, cols) float32, clipped to [0, 1] (see :func:`project_ct`)."""
    hu, spacing = square_pixels(hu, spacing)
    n_z, n_y, n_x = hu.shape
    matrix = fan_beam_system_matrix(settings, n_x, n_y, spacing[0], spacing[1])
    columns = _cpu_columns(hu, settings, spacing[2])
    sinograms = matrix @ columns  # (views * cols, 2 * rows), already normalised
    views, rows, cols = settings.n_views, settings.detector_rows, settings.detector_cols
    sinograms = sinograms.reshape(views, cols, 2 * rows)
    drr = np.empty((views, rows, cols), dtype=np.float32)
    bone = np.empty((views, rows, cols), dtype=np.float32)
    for view in range(views):  # one transposed, clipped copy per view (cache-sized pieces)
        np.clip(sinograms[view, :, :rows].T, 0.0, 1.0, out=drr[view])
        np.clip(sinograms[view, :, rows:].T, 0.0, 1.0, out=bone[view])
    return drr, bone
