"""Procedural leg phantoms: CT volumes like SMIR's and knee radiographs like Chen et al.'s OAI set.

Everything here is deterministic from a seed and written so that the ingest stage reads it
exactly as it reads real data.

Coordinate convention (the same as :mod:`kneesynth.data.ingest`, SimpleITK/ITK's LPS):

* physical axes: ``x`` runs from the patient's right to left, ``y`` from anterior to posterior,
  ``z`` from inferior to superior; the **long axis of the leg is the volume's z axis** (the DRR
  stage rotates the volume about it);
* numpy arrays are indexed ``[z, y, x]`` (what ``SimpleITK.GetArrayFromImage`` returns), so a
  CT volume of ``shape = (nx, ny, nz)`` voxels in the config is an array of shape ``(nz, ny, nx)``;
* the femur lies at large ``z`` (superior), the tibia and fibula at small ``z``; the patella is
  anterior (small ``y``); the fibula is lateral (``-x`` for a right leg, ``+x`` for a left leg).

The anatomy model works in a *knee frame* in millimetres: origin on the medial-lateral centre of
the tibial plateau's top surface, ``x`` lateral, ``y`` posterior, ``z`` superior along the tibia.
Bones are signed-distance functions (negative inside) of ellipsoids and cylinders joined by
smooth unions; a voxel's tissue fraction is a one-voxel-wide ramp of the signed distance, which
gives partial-volume edges. Tissues and their Hounsfield units (HU) are drawn per volume: air
(-1000), fat (about -100), muscle (about 45), cortical bone (about 1500), trabecular bone (about
250) grading into marrow (about -30) in the shafts.

Knee osteoarthritis is one continuous parameter ``oa_severity`` in [0, 4]; its KL grade is
``round(oa_severity)``. Severity narrows the joint space (mostly medially), grows osteophytes at
the margins of the femoral condyles and the tibial plateau, and adds subchondral sclerosis
(denser bone under the joint surfaces); see :data:`OA_ANCHORS` for the values per grade.

Two products, from the same knee model: CT volumes like SMIR's (:mod:`kneesynth.data.phantom_ct`)
and knee radiographs in Chen et al.'s OAI layout (:mod:`kneesynth.data.phantom_oai`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: KL grade counts of Chen et al. (2019), used as default grade weights.
CHEN_GRADE_COUNTS = (3253, 1495, 2175, 1086, 251)

#: OAI visit codes in order (baseline, 12, 24, 36, 48, 72, 96 months).
OAI_VISITS = ("00", "01", "03", "05", "06", "08", "10")

#: Osteoarthritis features at each KL grade 0..4 (linearly interpolated in between):
#: medial and lateral joint-space width (mm), osteophyte radius (mm), subchondral sclerosis
#: (HU added) and its depth under the joint surface (mm).
OA_ANCHORS = {
    "jsw_medial_mm": (5.5, 4.8, 3.7, 2.2, 0.6),
    "jsw_lateral_mm": (6.2, 6.0, 5.5, 4.8, 3.8),
    "osteophyte_mm": (0.0, 1.5, 3.0, 4.5, 6.5),
    "sclerosis_hu": (0.0, 40.0, 180.0, 380.0, 600.0),
    "sclerosis_depth_mm": (2.0, 2.5, 4.0, 5.5, 7.0),
}

AIR_HU = -1000.0
HU_MIN, HU_MAX = -1024, 3071
MU_WATER_PER_MM = 0.02  # linear attenuation of water at about 60 keV


def kl_grade_from_severity(oa_severity: float) -> int:
    """KL grade 0..4 of a continuous osteoarthritis severity in [0, 4] (nearest grade)."""
    return int(np.clip(np.floor(float(oa_severity) + 0.5), 0, 4))


def oa_features(oa_severity: float) -> dict[str, float]:
    """Joint-space widths, osteophyte size and sclerosis for a severity in [0, 4]."""
    grades = np.arange(5, dtype=float)
    s = float(np.clip(oa_severity, 0.0, 4.0))
    return {key: float(np.interp(s, grades, values)) for key, values in OA_ANCHORS.items()}


# --------------------------------------------------------------------------------------------
# Anatomy parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KneeAnatomy:
    """Every random parameter of one knee: shapes (mm), pose (degrees, mm), tissue HU, OA.

    ``side`` is ``"R"`` or ``"L"``; lengths scale with ``scale``; ``offset_mm`` is the knee
    frame's origin in the volume frame (x, y, z), relative to the volume centre.
    """

    side: str
    scale: float
    condyle_gap_mm: float
    condyle_radii_mm: tuple[float, float, float]
    medial_condyle_factor: float
    femur_metaphysis_radii_mm: tuple[float, float, float]
    femur_shaft_radius_mm: float
    plateau_radii_mm: tuple[float, float]
    plateau_depth_mm: float
    tibia_metaphysis_radii_mm: tuple[float, float, float]
    tibia_shaft_radius_mm: float
    fibula_head_radius_mm: float
    fibula_shaft_radius_mm: float
    patella_radii_mm: tuple[float, float, float]
    patella_height_mm: float
    leg_radius_factor: float
    fat_thickness_mm: float
    valgus_deg: float
    flexion_deg: float
    rotation_deg: float
    tilt_deg: tuple[float, float]
    offset_mm: tuple[float, float, float]
    fat_hu: float
    muscle_hu: float
    cortical_hu: float
    trabecular_hu: float
    marrow_hu: float
    osteophyte_jitter: tuple[float, float, float, float]
    oa_severity: float

    @property
    def kl_grade(self) -> int:
        return kl_grade_from_severity(self.oa_severity)


def draw_anatomy(rng: np.random.Generator, side: str, sex: str, oa_severity: float) -> KneeAnatomy:
    """Draw one knee's anatomy (sizes, bone shapes, pose, tissue HU) from ``rng``."""
    scale = float(np.clip(rng.normal(1.0 if sex == "M" else 0.92, 0.05), 0.78, 1.2))
    u = rng.uniform
    return KneeAnatomy(
        side=side,
        scale=scale,
        condyle_gap_mm=u(16.0, 22.0),
        condyle_radii_mm=(u(14.0, 17.0), u(24.0, 30.0), u(18.0, 23.0)),
        medial_condyle_factor=u(0.98, 1.08),
        femur_metaphysis_radii_mm=(u(33.0, 39.0), u(23.0, 28.0), u(26.0, 34.0)),
        femur_shaft_radius_mm=u(11.5, 14.5),
        plateau_radii_mm=(u(36.0, 41.0), u(24.0, 28.0)),
        plateau_depth_mm=u(11.0, 15.0),
        tibia_metaphysis_radii_mm=(u(29.0, 33.0), u(21.0, 25.0), u(32.0, 42.0)),
        tibia_shaft_radius_mm=u(10.5, 13.0),
        fibula_head_radius_mm=u(8.5, 11.0),
        fibula_shaft_radius_mm=u(5.0, 7.0),
        patella_radii_mm=(u(20.0, 24.0), u(9.0, 11.5), u(21.0, 26.0)),
        patella_height_mm=u(26.0, 36.0),
        leg_radius_factor=u(0.9, 1.25),
        fat_thickness_mm=u(5.0, 20.0),
        valgus_deg=u(2.0, 8.0),
        flexion_deg=u(0.0, 8.0),
        rotation_deg=u(-10.0, 10.0),
        tilt_deg=(u(-3.0, 3.0), u(-3.0, 3.0)),
        offset_mm=(u(-10.0, 10.0), u(-8.0, 8.0), u(-15.0, 15.0)),
        fat_hu=u(-115.0, -85.0),
        muscle_hu=u(35.0, 55.0),
        cortical_hu=u(1300.0, 1700.0),
        trabecular_hu=u(200.0, 320.0),
        marrow_hu=u(-60.0, 10.0),
        osteophyte_jitter=tuple(float(v) for v in u(0.7, 1.3, size=4)),
        oa_severity=float(np.clip(oa_severity, 0.0, 4.0)),
    )


def severity_for_grade(rng: np.random.Generator, kl_grade: int) -> float:
    """A severity whose nearest grade is ``kl_grade`` (uniform within +-0.4 of it)."""
    return float(np.clip(kl_grade + rng.uniform(-0.4, 0.4), 0.0, 4.0))


def _grade_probabilities(weights: Sequence[float]) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    if p.shape != (5,) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"kl_grade_weights must be 5 non-negative numbers, got {weights!r}")
    return p / p.sum()


# --------------------------------------------------------------------------------------------
# Signed distance functions (negative inside), vectorised over coordinate arrays
# --------------------------------------------------------------------------------------------
def _ellipsoid(x, y, z, centre, radii):
    """Approximate signed distance to an ellipsoid (exact on the axes; fine for ramps)."""
    cx, cy, cz = centre
    rx, ry, rz = radii
    q = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
    return (q - 1.0) * min(rx, ry, rz)


def _shaft(x, y, z, centre_xy, radius, z_start, upward: bool):
    """Signed distance to a cylinder along z, open towards +z (``upward``) or -z."""
    cx, cy = centre_xy
    radial = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - radius
    cap = (z_start - z) if upward else (z - z_start)
    return np.maximum(radial, cap)


def _rounded_plateau(x, y, z, radii_xy, top, depth, rounding):
    """Signed distance to an elliptic slab ``top - depth <= z <= top`` with rounded rims."""
    a, b = radii_xy
    ellipse = (np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * min(a, b)
    half = depth / 2.0
    qx = ellipse + rounding
    qz = np.abs(z - (top - half)) - half + rounding
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qz, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qz), 0.0) - rounding


def _smooth_union(a, b, k):
    """Polynomial smooth minimum of two signed distances (blend width ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ramp(distance, width):
    """Tissue fraction in [0, 1] from a signed distance: 1 inside, one ``width`` wide edge."""
    return np.clip(0.5 - distance / width, 0.0, 1.0)


_LEG_KNOTS_MM = (-150.0, -60.0, 0.0, 60.0, 150.0)
#: Leg cross-section radii (x, y) and posterior shift of its centre along z, in 1 mm steps
#: from -200 mm to +200 mm (knee frame, before scaling).
_LEG_PROFILES = np.stack(
    [
        np.interp(np.arange(-200.0, 201.0), _LEG_KNOTS_MM, values)
        for values in (
            (44.0, 52.0, 50.0, 60.0, 72.0),
            (46.0, 56.0, 48.0, 58.0, 68.0),
            (14.0, 14.0, 4.0, 2.0, 2.0),
        )
    ]
).astype(np.float32)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


class _RowRanges:
    """Which rows (first array axis) of a coordinate array reach a range of knee-frame z."""

    FAR_MM = 1000.0  # signed distance given to points where a bone was not evaluated

    def __init__(self, kz: np.ndarray):
        flat = kz.reshape(kz.shape[0], -1)
        self.low, self.high, self.shape = flat.min(axis=1), flat.max(axis=1), kz.shape

    def select(self, z_low: float, z_high: float) -> slice:
        hits = np.flatnonzero((self.high >= z_low) & (self.low <= z_high))
        return slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0)

    def embed(self, values: np.ndarray, rows: slice) -> np.ndarray:
        full = np.full(self.shape, self.FAR_MM, dtype=np.float32)
        full[rows] = values
        return full


def _to_frame(points, matrix, origin):
    """Coordinates of ``points`` (3 arrays) in a frame rotated by ``matrix`` about ``origin``."""
    x, y, z = (p - o for p, o in zip(points, origin, strict=True))
    m = [
        [float(v) for v in row] for row in matrix.T
    ]  # inverse rotation; python floats keep float32
    return (
        m[0][0] * x + m[0][1] * y + m[0][2] * z,
        m[1][0] * x + m[1][1] * y + m[1][2] * z,
        m[2][0] * x + m[2][1] * y + m[2][2] * z,
    )


# --------------------------------------------------------------------------------------------
# The knee model
# --------------------------------------------------------------------------------------------
def knee_tissues(
    anatomy: KneeAnatomy,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    edge_mm: float,
    texture: np.ndarray | None = None,
) -> np.ndarray:
    """HU of the knee at volume-frame points ``(x, y, z)`` in mm (arrays of one shape).

    ``x`` runs right-to-left, ``y`` anterior-to-posterior, ``z`` inferior-to-superior (LPS).
    ``edge_mm`` is the width of the partial-volume ramp (about one voxel). ``texture`` (same
    shape, unit variance, spatially smooth) modulates trabecular bone. Returns float32 HU.
    """
    a = anatomy
    s = a.scale
    oa = oa_features(a.oa_severity)
    lateral = -1.0 if a.side == "R" else 1.0  # patient's right is -x in LPS

    # Volume frame -> knee frame (x lateral, y posterior, z superior along the tibia).
    leg_pose = (
        _rotation("z", a.rotation_deg)
        @ _rotation("x", a.tilt_deg[0])
        @ _rotation("y", a.tilt_deg[1])
    )
    kx, ky, kz = _to_frame((x, y, z), leg_pose, a.offset_mm)
    kx = kx * lateral

    jsw_med, jsw_lat = oa["jsw_medial_mm"], oa["jsw_lateral_mm"]
    rcx, rcy, rcz = (r * s for r in a.condyle_radii_mm)
    gap = a.condyle_gap_mm * s / 2.0
    cond_x = gap + rcx
    osteophyte = oa["osteophyte_mm"] * s
    jit = a.osteophyte_jitter
    # Each bone is evaluated only on the rows (first array axis) its z-range can reach.
    rows = _RowRanges(kz)

    # Femur frame: valgus (coronal, about y) and flexion (sagittal, about x) about the condyles.
    femur_rows = rows.select(min(jsw_med, jsw_lat) - 15.0 * s, np.inf)
    fx, fy, fz = (c[femur_rows] for c in (kx, ky, kz))
    pivot = (0.0, 0.0, jsw_med + rcz)
    femur_pose = _rotation("y", a.valgus_deg) @ _rotation("x", a.flexion_deg)
    fx, fy, fz = _to_frame((fx, fy, fz), femur_pose, pivot)
    fz = fz + pivot[2]

    med = a.medial_condyle_factor
    d_femur = _ellipsoid(
        fx, fy, fz, (-cond_x, 4 * s, jsw_med + rcz * med), (rcx * med, rcy * med, rcz * med)
    )
    d_femur = np.minimum(
        d_femur, _ellipsoid(fx, fy, fz, (cond_x, 4 * s, jsw_lat + rcz), (rcx, rcy, rcz))
    )
    mrx, mry, mrz = (r * s for r in a.femur_metaphysis_radii_mm)
    meta_z = jsw_med + rcz + 0.6 * mrz
    d_femur = _smooth_union(
        d_femur, _ellipsoid(fx, fy, fz, (0.0, 0.0, meta_z), (mrx, mry, mrz)), 6 * s
    )
    shaft = _shaft(fx, fy, fz, (0.0, -2 * s), a.femur_shaft_radius_mm * s, meta_z, upward=True)
    d_femur = _smooth_union(d_femur, shaft, 10 * s)
    if osteophyte > 0.2:
        for sign, jsw, j in ((-1.0, jsw_med, jit[0]), (1.0, jsw_lat, jit[1])):
            r = osteophyte * j
            centre = (sign * (cond_x + rcx * 0.92 + 0.3 * r), 2 * s, jsw + rcz * 0.45)
            spur = _ellipsoid(fx, fy, fz, centre, (r, 1.6 * r, 1.7 * r))
            d_femur = _smooth_union(d_femur, spur, 1.5)
    prx, pry, prz = (r * s for r in a.patella_radii_mm)
    patella_centre = (0.0, -(mry + pry + 4 * s), jsw_med + a.patella_height_mm * s)
    d_patella = rows.embed(_ellipsoid(fx, fy, fz, patella_centre, (prx, pry, prz)), femur_rows)
    d_femur = rows.embed(d_femur, femur_rows)
    femur_z = rows.embed(fz, femur_rows)

    # Tibia and fibula in the knee frame; the plateau's top is z = 0.
    plx, ply = (r * s for r in a.plateau_radii_mm)
    tibia_rows = rows.select(-np.inf, 12.0 * s + 2.0 * osteophyte)
    tx, ty, tz = (c[tibia_rows] for c in (kx, ky, kz))
    d_tibia = _rounded_plateau(tx, ty - 2 * s, tz, (plx, ply), 0.0, a.plateau_depth_mm * s, 4 * s)
    d_tibia = np.minimum(d_tibia, _ellipsoid(tx, ty, tz, (0.0, 0.0, 0.0), (6 * s, 11 * s, 6.5 * s)))
    tmx, tmy, tmz = (r * s for r in a.tibia_metaphysis_radii_mm)
    d_tibia = _smooth_union(
        d_tibia, _ellipsoid(tx, ty, tz, (0.0, 0.0, -tmz), (tmx, tmy, tmz)), 12 * s
    )
    shaft = _shaft(tx, ty, tz, (-3 * s, -3 * s), a.tibia_shaft_radius_mm * s, -tmz, upward=False)
    d_tibia = _smooth_union(d_tibia, shaft, 10 * s)
    if osteophyte > 0.2:
        for sign, j in ((-1.0, jit[2]), (1.0, jit[3])):
            r = osteophyte * j
            centre = (sign * (plx + 0.3 * r), 2 * s, -2.0 * s)
            spur = _ellipsoid(tx, ty, tz, centre, (1.3 * r, 1.5 * r, r))
            d_tibia = _smooth_union(d_tibia, spur, 1.5)
    d_tibia = rows.embed(d_tibia, tibia_rows)

    fh = a.fibula_head_radius_mm * s
    head_z = -(a.plateau_depth_mm * s + fh + 12 * s)
    fibula_rows = rows.select(-np.inf, head_z + 1.2 * fh + 5.0)
    bx, by, bz = (c[fibula_rows] for c in (kx, ky, kz))
    d_fibula = _ellipsoid(bx, by, bz, (plx - 3 * s, 16 * s, head_z), (fh, fh, 1.2 * fh))
    shaft = _shaft(
        bx, by, bz, (plx - 2 * s, 17 * s), a.fibula_shaft_radius_mm * s, head_z, upward=False
    )
    d_fibula = rows.embed(_smooth_union(d_fibula, shaft, 4 * s), fibula_rows)

    d_bone = np.minimum(np.minimum(d_femur, d_tibia), np.minimum(d_fibula, d_patella))

    # Soft tissue: an elliptic leg, thigh above, calf below; fat around muscle. The profiles
    # along z are looked up in 1 mm steps (np.interp would work in float64 on every point).
    step = np.clip(np.rint(kz / s + 200.0), 0, 400).astype(np.intp)
    leg_rx = _LEG_PROFILES[0][step] * (s * a.leg_radius_factor)
    leg_ry = _LEG_PROFILES[1][step] * (s * a.leg_radius_factor)
    leg_cy = _LEG_PROFILES[2][step] * s
    radial = np.sqrt((kx / leg_rx) ** 2 + ((ky - leg_cy) / leg_ry) ** 2)
    d_leg = (radial - 1.0) * np.minimum(leg_rx, leg_ry)
    # Fat is thicker at the sides than front and back: 1 + 0.3 cos(2 theta), without trig.
    dx2, dy2 = kx * kx, (ky - leg_cy) ** 2
    fat = a.fat_thickness_mm * (1.0 + 0.3 * (dx2 - dy2) / (dx2 + dy2 + 1.0))

    hu = AIR_HU + (a.fat_hu - AIR_HU) * _ramp(d_leg, edge_mm)
    hu += (a.muscle_hu - a.fat_hu) * _ramp(d_leg + fat, edge_mm)

    # Bone: cortex of a thickness growing towards the shafts, trabecular bone to marrow inside.
    shaftness = np.clip(np.abs(kz) * (1.0 / (60.0 * s)) - 0.75, 0.0, 1.0)
    cortex_mm = 1.5 + 3.5 * shaftness
    interior = a.trabecular_hu + (a.marrow_hu - a.trabecular_hu) * shaftness
    if texture is not None:
        interior = interior + 45.0 * texture * (1.0 - shaftness)
    bone = _ramp(d_bone, edge_mm)
    inner = _ramp(d_bone + cortex_mm, edge_mm)
    hu += (a.cortical_hu - hu) * bone
    hu += (interior - hu) * inner

    # Subchondral sclerosis: denser bone just under the joint surfaces, mostly medially.
    if oa["sclerosis_hu"] > 0:
        depth = oa["sclerosis_depth_mm"] * s
        side_weight = np.where(kx < 0, np.float32(1.0), np.float32(0.45))
        tibial = (kz > -depth) * _ramp(-(d_tibia + depth), edge_mm)
        femoral = (femur_z < max(jsw_med, jsw_lat) + depth + 0.3 * rcz) * _ramp(
            -(d_femur + depth), edge_mm
        )
        band = np.maximum(tibial * _ramp(d_tibia, edge_mm), femoral * _ramp(d_femur, edge_mm))
        hu += oa["sclerosis_hu"] * side_weight * band
    return hu.astype(np.float32)
