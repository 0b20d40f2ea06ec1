"""Benchmark: DRR projection through the pipeline's own function vs a bare ASTRA call.

Projects a leg phantom (``kneesynth.data.phantom`` when it offers a volume generator, else a
cylinder phantom built here) to the paper's 60 views of 256 x 256 with
``kneesynth.projection.drr.project_ct`` (HU -> mu, bone mask, z resampling, projection, normalisation) and,
in the same run, with the bare projector on the same volume:

* CPU: the bare sparse product ``W @ X`` with the same cached ASTRA system matrix ``W`` and a
  ready-made ``X`` (ny * nx, 2 * slices): attenuation and bone mask, the same work the pipeline
  projects (the system matrix build is timed and reported separately);
* GPU (``astra.use_cuda()``): two bare ``FP3D_CUDA`` runs (attenuation, bone mask) on the
  same cone geometry.

Prints both times and the ratio pipeline / bare (target <= 1.2), in wall-clock and in process
CPU time (the fairer figure on a machine shared with other jobs; the GPU path's CPU time
excludes the GPU's).
``--paper-scale`` also times the paper's whole projection stage: 55 volumes x 60 views.

    python bench/drr.py                 # 256^3 -> 60 x 256^2
    python bench/drr.py --size 64 --detector 64 --views 12   # quick
    python bench/drr.py --paper-scale   # on a GPU
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import numpy as np

from kneesynth.projection import drr, fan_beam


def cylinder_leg_phantom(size: int, spacing_mm: float, seed: int = 0) -> np.ndarray:
    """A knee-like phantom (size, size, size) in HU: soft tissue and fat around a femur and a
    tibia (cortical shell, trabecular core) with a joint gap, a fibula and a patella."""
    rng = np.random.default_rng(seed)
    axis = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * spacing_mm
    z, y, x = axis[:, None, None], axis[None, :, None], axis[None, None, :]
    hu = np.full((size, size, size), -1000.0, dtype=np.float32)
    extent = size * spacing_mm / 2.0
    leg_radius = 0.38 * extent * (1.0 + 0.05 * rng.standard_normal())
    radial2 = x**2 + (y / 1.1) ** 2
    hu[np.broadcast_to(radial2 < leg_radius**2, hu.shape)] = -90.0  # fat
    hu[np.broadcast_to(radial2 < (0.85 * leg_radius) ** 2, hu.shape)] = 45.0  # muscle
    gap = 0.03 * extent
    bone_radius = 0.33 * leg_radius
    for sign, offset in ((1.0, 0.0), (-1.0, 0.0)):
        shaft = (x - offset) ** 2 + y**2
        half_space = (sign * z) > gap / 2
        hu[(shaft < bone_radius**2) & half_space] = 1400.0
        hu[(shaft < (0.7 * bone_radius) ** 2) & half_space] = 300.0
    fibula = (
        (x - 0.55 * leg_radius) ** 2 + (y - 0.2 * leg_radius) ** 2 < (0.1 * leg_radius) ** 2
    ) & (z < -4 * gap)
    hu[fibula] = 1200.0
    patella = (x**2 + (y + 0.6 * leg_radius) ** 2 + (z - 2 * gap) ** 2) < (0.2 * leg_radius) ** 2
    hu[patella] = 900.0
    return hu


def make_phantom(size: int, spacing_mm: float, seed: int, kind: str = "auto") -> np.ndarray:
    """A (size, size, size) HU volume: the DATA stage's knee phantom (``kneesynth.data.phantom``)
    when available and asked for, else the cylinder phantom above."""
    if kind in ("auto", "kneesynth"):
        try:
            from kneesynth.data.phantom_ct import phantom_volumes, render_ct
        except ImportError:
            if kind == "kneesynth":
                raise
        else:
            volume = phantom_volumes({"volumes": 1}, seed)[0]
            shape, spacing = (size,) * 3, (spacing_mm,) * 3
            return render_ct(volume, shape, spacing, noise_hu=0.0).astype(np.float32)
    return cylinder_leg_phantom(size, spacing_mm, seed)


def prepare_bare_cpu(
    settings: drr.ProjectionSettings, hu: np.ndarray, spacing: tuple[float, float, float]
):
    """Build (and time) the system matrix W, and a ready-made X (ny * nx, 2 * nz): attenuation
    and bone-mask slices as columns, the same work the pipeline's product does."""
    n_z, n_y, n_x = hu.shape
    fan_beam._SYSTEM_MATRIX_CACHE.clear()
    start = time.perf_counter()
    matrix = fan_beam.fan_beam_system_matrix(settings, n_x, n_y, spacing[0], spacing[1])
    build_s = time.perf_counter() - start
    print(
        f"system matrix: {matrix.shape[0]} x {matrix.shape[1]}, nnz {matrix.nnz}, "
        f"built in {build_s:.2f} s (not in the times below)"
    )
    mu = drr.attenuation_from_hu(hu, settings.mu_water_per_mm).reshape(n_z, -1)
    bone = (hu > settings.bone_hu_threshold).astype(np.float32).reshape(n_z, -1)
    columns = np.ascontiguousarray(np.concatenate([mu, bone]).T)
    return matrix, columns


def bare_cpu(matrix, columns: np.ndarray) -> float:
    """Seconds of one bare sparse product W @ X."""
    start = time.perf_counter()
    sinograms = matrix @ columns
    elapsed = time.perf_counter() - start
    del sinograms
    return elapsed


def bare_cuda(
    settings: drr.ProjectionSettings,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    repeats: int,
) -> list[float]:
    """Times of two bare FP3D_CUDA runs (mu, bone mask) with the pipeline's cone geometry."""
    import astra

    n_z, n_y, n_x = hu.shape
    half = [n * s / 2.0 for n, s in zip((n_x, n_y, n_z), spacing, strict=True)]
    volume_geometry = astra.create_vol_geom(
        n_y, n_x, n_z, -half[0], half[0], -half[1], half[1], -half[2], half[2]
    )
    projection_geometry = astra.create_proj_geom(
        "cone_vec", settings.detector_rows, settings.detector_cols, drr.cone_vectors(settings)
    )
    mu = drr.attenuation_from_hu(hu, settings.mu_water_per_mm)
    bone = (hu > settings.bone_hu_threshold).astype(np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for volume in (mu, bone):
            projection_id, projection = astra.create_sino3d_gpu(
                volume, projection_geometry, volume_geometry
            )
            astra.data3d.delete(projection_id)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=256, help="phantom edge in voxels (default 256)"
    )
    parser.add_argument(
        "--spacing", type=float, default=None, help="voxel spacing mm (default: 204.8 mm / size)"
    )
    parser.add_argument(
        "--detector", type=int, default=256, help="detector rows = cols (default 256)"
    )
    parser.add_argument(
        "--detector-spacing",
        type=float,
        default=None,
        help="detector pixel mm (default: 307.2 mm / detector)",
    )
    parser.add_argument("--views", type=int, default=60, help="views over 360 degrees (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--phantom",
        choices=("auto", "kneesynth", "cylinder"),
        default="auto",
        help="kneesynth.data.phantom knee (auto: when importable) or the cylinder phantom",
    )
    parser.add_argument("--backend", choices=drr.BACKENDS, default="auto")
    parser.add_argument(
        "--paper-scale", action="store_true", help="also time 55 volumes x --views views"
    )
    parser.add_argument(
        "--volumes", type=int, default=55, help="volumes for --paper-scale (default 55)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    spacing_mm = args.spacing or 204.8 / args.size
    settings = drr.ProjectionSettings(
        source_isocentre_distance_mm=785.0,
        source_detector_distance_mm=1200.0,
        detector_rows=args.detector,
        detector_cols=args.detector,
        detector_spacing_mm=(args.detector_spacing or 307.2 / args.detector,) * 2,
        n_views=args.views,
        mu_water_per_mm=0.0206,
        line_integral_max=6.0,
        bone_hu_threshold=250.0,
        bone_path_length_max_mm=100.0,
        backend=args.backend,
    )
    spacing = (spacing_mm,) * 3
    start = time.perf_counter()
    hu = make_phantom(args.size, spacing_mm, seed=0, kind=args.phantom)
    print(f"phantom made in {time.perf_counter() - start:.1f} s ({args.phantom})")
    projector = drr.choose_projector(settings.backend)
    print(
        f"phantom {hu.shape} at {spacing_mm:.3f} mm -> {args.views} views of {args.detector} x {args.detector}; projector: {projector}"
    )

    if projector == "cuda":
        bare_label = "bare FP3D_CUDA (mu + bone)"
    else:
        bare_label = "bare W @ X (mu + bone)"
        matrix, columns = prepare_bare_cpu(settings, hu, spacing)
    bare, pipeline, bare_cpu_s, pipeline_cpu_s = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so that load from other jobs hits both alike
        cpu_start = time.process_time()
        if projector == "cuda":
            bare += bare_cuda(settings, hu, spacing, repeats=1)
        else:
            bare.append(bare_cpu(matrix, columns))
        bare_cpu_s.append(time.process_time() - cpu_start)
        cpu_start, start = time.process_time(), time.perf_counter()
        result = drr.project_ct(hu, spacing, settings)
        pipeline.append(time.perf_counter() - start)
        pipeline_cpu_s.append(time.process_time() - cpu_start)
    median = statistics.median
    for label, wall, cpu in (
        (bare_label, bare, bare_cpu_s),
        ("pipeline project_ct", pipeline, pipeline_cpu_s),
    ):
        print(
            f"{label}: wall {min(wall):.3f} s min / {median(wall):.3f} s median, "
            f"CPU {min(cpu):.3f} s min / {median(cpu):.3f} s median ({args.repeats} runs)"
        )
    print(
        f"ratio pipeline / bare: {min(pipeline) / min(bare):.3f} (wall, min), "
        f"{median(pipeline) / median(bare):.3f} (wall, median), "
        f"{min(pipeline_cpu_s) / min(bare_cpu_s):.3f} (CPU time, min), "
        f"{median(pipeline_cpu_s) / median(bare_cpu_s):.3f} (CPU time, median); "
        "target <= 1.2 (CPU time, median)"
    )
    print(
        f"drr range [{result.drr.min():.3f}, {result.drr.max():.3f}], bone_projection max {result.bone_projection.max():.3f}"
    )

    if args.paper_scale:
        total = 0.0
        for index in range(args.volumes):
            # cylinder phantoms: rendering 55 knee phantoms at 256^3 would take longer than
            # projecting them (generation is not timed either way)
            volume = make_phantom(args.size, spacing_mm, seed=index, kind="cylinder")
            start = time.perf_counter()
            drr.project_ct(volume, spacing, settings)
            total += time.perf_counter() - start
        print(
            f"paper scale: {args.volumes} volumes x {args.views} views ({args.volumes * args.views} DRRs + bone projections) "
            f"in {total:.1f} s ({total / args.volumes:.3f} s per volume, phantom generation excluded)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
