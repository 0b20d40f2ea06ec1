"""DRR projection: geometry, analytic line integrals, orientation, projector choice, bad input."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import astra
import numpy as np
import pytest
import SimpleITK as sitk

from kneesynth.errors import InputError
from kneesynth.projection import drr, fan_beam

MU_WATER = 0.02
# A small geometry: 40 x 40 detector of 4 mm pixels, magnification 1.5.
CONFIG = {
    "source_isocentre_distance_mm": 800.0,
    "source_detector_distance_mm": 1200.0,
    "detector_rows": 40,
    "detector_cols": 40,
    "detector_spacing_mm": [4.0, 4.0],
    "n_views": 12,
    "mu_water_per_mm": MU_WATER,
    "line_integral_max": 4.0,
    "bone_hu_threshold": 250.0,
    "bone_path_length_max_mm": 100.0,
    "cpu_projector": "line_fanflat",
    "backend": "cpu",
}
SIZE, SPACING = 64, 2.0  # 128 mm field, covers the 106.7 mm seen at the isocentre


def grid(size: int = SIZE, spacing: float = SPACING):
    axis = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * spacing
    return axis[:, None, None], axis[None, :, None], axis[None, None, :]  # z, y, x


def water_cylinder(radius_mm: float = 40.0) -> np.ndarray:
    """Air with a water cylinder (0 HU) along z, as an (nz, ny, nx) HU array; edge voxels hold
    their partial volume (8 x 8 subsamples), so the voxelised disc has the true chord lengths."""
    sub = (np.arange(8) + 0.5) / 8.0 - 0.5
    axis = (np.arange(SIZE) - (SIZE - 1) / 2.0)[:, None] + sub[None, :]  # (voxel, subsample)
    x = axis[None, None, :, :] * SPACING
    y = axis[:, :, None, None] * SPACING
    fraction = (x**2 + y**2 < radius_mm**2).mean(axis=(1, 3))  # (ny, nx)
    slice_hu = (-1000.0 + 1000.0 * fraction).astype(np.float32)
    return np.repeat(slice_hu[None], SIZE, axis=0)


def write_ct(path: Path, hu: np.ndarray, spacing=(SPACING,) * 3) -> Path:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """Tests run as on a CPU-only machine whatever ASTRA reports."""
    monkeypatch.setattr(astra, "use_cuda", lambda: False)


def test_shapes_range_and_angles():
    result = drr.project_ct(water_cylinder(), (SPACING,) * 3, CONFIG)
    assert result.drr.shape == (12, 40, 40) and result.drr.dtype == np.float32
    assert (
        result.bone_projection.shape == (12, 40, 40) and result.bone_projection.dtype == np.float32
    )
    assert result.drr.min() >= 0.0 and result.drr.max() <= 1.0
    assert result.drr.max() > 0.3  # the cylinder is there
    assert result.bone_projection.max() == 0.0  # no bone in water
    np.testing.assert_allclose(result.angles_deg, np.arange(12) * 30.0)


def test_water_cylinder_matches_analytic_line_integrals():
    """Every detector pixel of a uniform water cylinder: chord length * mu_water."""
    radius = 40.0
    settings = drr.ProjectionSettings.from_config({**CONFIG, "line_integral_max": 10.0})
    result = drr.project_ct(water_cylinder(radius), (SPACING,) * 3, settings)
    line_integrals = result.drr * settings.line_integral_max  # (views, rows, cols)
    # A ray to detector offset u passes the rotation axis at distance SID * u / sqrt(SDD^2 + u^2).
    u = (np.arange(40) - 19.5) * 4.0
    distance = (
        settings.source_isocentre_distance_mm
        * np.abs(u)
        / np.hypot(settings.source_detector_distance_mm, u)
    )
    chord = 2.0 * np.sqrt(np.clip(radius**2 - distance**2, 0.0, None))
    expected = chord * MU_WATER
    inner = distance < radius - SPACING  # away from the edge voxels
    core = distance < radius / 2
    full_scale = 2 * radius * MU_WATER
    for view in range(12):
        for row in (5, 20, 34):
            # line_fanflat interpolates between pixel centres: near-tangent rays err most
            np.testing.assert_allclose(
                line_integrals[view, row, inner], expected[inner], atol=0.03 * full_scale
            )
            np.testing.assert_allclose(line_integrals[view, row, core], expected[core], rtol=0.01)
            assert np.all(line_integrals[view, row, distance > radius + 2 * SPACING] < 1e-4)
    # centre: diameter * mu_water
    centre = line_integrals[:, 20, 19:21].mean()
    assert centre == pytest.approx(2 * radius * MU_WATER, rel=0.01)


def test_normalisation_is_one_fixed_scale_and_clips():
    hu = water_cylinder()
    low = drr.project_ct(hu, (SPACING,) * 3, {**CONFIG, "line_integral_max": 4.0}).drr
    high = drr.project_ct(hu, (SPACING,) * 3, {**CONFIG, "line_integral_max": 8.0}).drr
    np.testing.assert_allclose(low, 2.0 * high, atol=1e-6)
    clipped = drr.project_ct(hu, (SPACING,) * 3, {**CONFIG, "line_integral_max": 0.5}).drr
    assert clipped.max() == 1.0


def test_orientation_leg_vertical_and_columns_follow_x_and_y():
    """A bone ball at (+20, 0, +30) mm and one at (0, +20, -30) mm: rows run along -z (top =
    superior), columns along +x at 0 degrees and along +y at 90 degrees."""
    z, y, x = grid()
    hu = np.full((SIZE, SIZE, SIZE), -1000.0, dtype=np.float32)
    hu[((x - 20) ** 2 + y**2 + (z - 30) ** 2) < 6**2] = 1000.0
    hu[(x**2 + (y - 20) ** 2 + (z + 30) ** 2) < 6**2] = 1000.0
    result = drr.project_ct(hu, (SPACING,) * 3, CONFIG)
    m = 1.5  # magnification: 4 mm detector pixels see 2.67 mm at the isocentre

    def peak(view, rows):
        """Centroid (row, col) of the bone projection within ``rows``."""
        image = result.bone_projection[view, rows]
        row_index, col_index = np.indices(image.shape)
        total = image.sum()
        return rows.start + (row_index * image).sum() / total, (col_index * image).sum() / total

    top, bottom = slice(0, 20), slice(20, 40)
    centre = 19.5
    # view 0 (0 deg): columns along +x
    row, col = peak(0, top)
    # (the fan beam magnifies by SDD / (SID + y) for a point at depth y: 1.5 at the isocentre)
    assert abs(row - (centre - 30 * m / 4)) <= 0.5 and abs(col - (centre + 20 * m / 4)) <= 0.5
    row, col = peak(0, bottom)
    assert abs(row - (centre + 30 * m / 4)) <= 0.5 and abs(col - centre) <= 0.25
    # view 3 (90 deg): columns along +y, so the +y ball is right of centre
    _, col = peak(3, bottom)
    assert col > centre + 2
    _, col = peak(3, top)
    assert abs(col - centre) <= 0.25
    # bone path length through a ball centre along a grid axis: its 6 voxels, 12 mm of 100 mm
    assert result.bone_projection[[0, 3, 6, 9]].max() == pytest.approx(0.12, abs=0.01)


def test_bone_projection_is_path_length_through_bone():
    z, y, x = grid()
    hu = water_cylinder(40.0)
    hu[np.broadcast_to(x**2 + y**2 < 10.0**2, hu.shape)] = 1200.0  # a 20 mm bone rod
    result = drr.project_ct(hu, (SPACING,) * 3, CONFIG)
    assert result.bone_projection[:, 20, 19:21].mean() * 100.0 == pytest.approx(20.0, rel=0.03)
    # bone raises the attenuation over the rod: 60 mm water + 20 mm bone of mu = 2.2 mu_water
    assert result.drr[:, 20, 19:21].mean() * 4.0 == pytest.approx(
        (60 + 20 * 2.2) * MU_WATER, rel=0.03
    )


def test_air_and_rows_outside_the_volume_are_zero():
    short = water_cylinder()[28:36]  # 16 mm tall slab: most detector rows miss it
    result = drr.project_ct(short, (SPACING,) * 3, CONFIG)
    assert result.drr[:, :10].max() == 0.0 and result.drr[:, -10:].max() == 0.0
    assert result.drr[:, 20].max() > 0.3


def test_cpu_path_never_touches_astra_3d(monkeypatch, caplog):
    def forbidden(*args, **kwargs):
        raise AssertionError("ASTRA 3D called without CUDA")

    for name in ("create_sino3d_gpu", "create_backprojection3d_gpu"):
        monkeypatch.setattr(astra, name, forbidden)
    monkeypatch.setattr(astra.data3d, "create", forbidden)
    monkeypatch.setattr(drr, "_project_cuda", forbidden)
    with caplog.at_level(logging.INFO, logger="kneesynth.projection.drr"):
        result = drr.project_ct(water_cylinder(), (SPACING,) * 3, {**CONFIG, "backend": "auto"})
    assert result.projector == "cpu"
    assert "projector: astra CPU fan beam (sparse system matrix)" in caplog.text


def test_gpu_path_chosen_when_astra_has_cuda(monkeypatch, caplog):
    monkeypatch.setattr(astra, "use_cuda", lambda: True)
    calls = []

    def fake_cuda(hu, spacing, settings):
        calls.append(hu.shape)
        shape = (settings.n_views, settings.detector_rows, settings.detector_cols)
        return np.full(shape, 0.5, np.float32), np.zeros(shape, np.float32)

    monkeypatch.setattr(drr, "_project_cuda", fake_cuda)
    monkeypatch.setattr(drr, "project_fan_beam", lambda *a: pytest.fail("CPU path taken with CUDA"))
    with caplog.at_level(logging.INFO, logger="kneesynth.projection.drr"):
        result = drr.project_ct(water_cylinder(), (SPACING,) * 3, {**CONFIG, "backend": "auto"})
    assert result.projector == "cuda" and calls == [(SIZE, SIZE, SIZE)]
    assert "projector: astra FP3D_CUDA cone beam" in caplog.text


def test_backend_cuda_without_gpu_fails_cleanly():
    with pytest.raises(RuntimeError, match="no CUDA"):
        drr.project_ct(water_cylinder(), (SPACING,) * 3, {**CONFIG, "backend": "cuda"})


def test_cone_vectors_match_astra_cone_geometry_with_rows_downwards():
    settings = drr.ProjectionSettings.from_config(CONFIG)
    cone = astra.create_proj_geom(
        "cone", 4.0, 4.0, 40, 40, np.deg2rad(settings.angles_deg()), 800.0, 400.0
    )
    reference = astra.geom_2vec(cone)["Vectors"]
    ours = drr.cone_vectors(settings)
    np.testing.assert_allclose(ours[:, :9], reference[:, :9], atol=1e-9)
    np.testing.assert_allclose(ours[:, 9:], -reference[:, 9:], atol=1e-9)  # row 0 on top


def test_system_matrix_is_cached_and_float32_csr():
    settings = drr.ProjectionSettings.from_config(CONFIG)
    first = fan_beam.fan_beam_system_matrix(settings, 16, 16, 8.0, 8.0)
    assert first.format == "csr" and first.dtype == np.float32
    assert first.shape == (12 * 40, 16 * 16)
    assert fan_beam.fan_beam_system_matrix(settings, 16, 16, 8.0, 8.0) is first
    assert fan_beam.fan_beam_system_matrix(settings, 16, 16, 4.0, 4.0) is not first


def test_projection_is_deterministic():
    hu = water_cylinder()
    first = drr.project_ct(hu, (SPACING,) * 3, CONFIG)
    fan_beam._SYSTEM_MATRIX_CACHE.clear()
    second = drr.project_ct(hu, (SPACING,) * 3, CONFIG)
    np.testing.assert_array_equal(first.drr, second.drr)
    np.testing.assert_array_equal(first.bone_projection, second.bone_projection)


def test_project_ct_file_writes_the_contract(tmp_path):
    ct = write_ct(tmp_path / "SMIR.Body.040Y.M.CT.12345.nii.gz", water_cylinder())
    out = tmp_path / "drr" / "SMIR.Body.040Y.M.CT.12345.npz"
    drr.project_ct_file(ct, out, CONFIG)
    with np.load(out) as data:
        assert set(data.files) == {"drr", "bone_projection", "angles_deg"}
        assert data["drr"].shape == (12, 40, 40) and data["drr"].dtype == np.float32
        assert data["bone_projection"].shape == (12, 40, 40)
        assert data["angles_deg"].shape == (12,)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left


def test_ct_with_nan_is_one_line_input_error(tmp_path):
    hu = water_cylinder()
    hu[3, 4, 5] = np.nan
    ct = write_ct(tmp_path / "nan.nii.gz", hu)
    out = tmp_path / "drr.npz"
    with pytest.raises(InputError) as error:
        drr.project_ct_file(ct, out, CONFIG)
    message = str(error.value)
    assert message.startswith(str(ct)) and "NaN" in message and "\n" not in message
    assert not out.exists()


def test_ct_with_wrong_dimensions_is_input_error(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((8, 8), np.float32))
    ct = tmp_path / "flat.nii.gz"
    sitk.WriteImage(image, str(ct))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: expected a 3D"):
        drr.project_ct_file(ct, tmp_path / "drr.npz", CONFIG)


def test_truncated_ct_is_input_error(tmp_path):
    ct = write_ct(tmp_path / "cut.nii", water_cylinder())
    ct.write_bytes(ct.read_bytes()[:1000])
    with pytest.raises(InputError) as error:
        drr.project_ct_file(ct, tmp_path / "drr.npz", CONFIG)
    assert str(error.value).startswith(str(ct)) and "\n" not in str(error.value)


def test_array_with_wrong_dimensions_is_input_error():
    with pytest.raises(InputError, match="expected a 3D"):
        drr.project_ct(np.zeros((4, 4), np.float32), (1.0, 1.0, 1.0), CONFIG)


def test_bad_geometry_is_rejected():
    with pytest.raises(ValueError, match="source_isocentre_distance_mm"):
        drr.ProjectionSettings.from_config({**CONFIG, "source_detector_distance_mm": 500.0})


def test_gpu_path_plumbing_with_a_fake_astra_3d(monkeypatch):
    """_project_cuda with ASTRA's 3D calls replaced by a fake FP3D_CUDA: checks the volume and
    cone_vec geometry it builds, the data it hands over, and how the (rows, views, cols) result
    becomes (views, rows, cols) scaled DRRs -- without a GPU (real ASTRA 3D would SIGFPE)."""
    monkeypatch.setattr(astra, "use_cuda", lambda: True)
    settings = drr.ProjectionSettings.from_config({**CONFIG, "backend": "cuda", "n_views": 3})
    rows, cols, views = settings.detector_rows, settings.detector_cols, settings.n_views
    store, algorithms, deleted = {}, {}, []

    def create(kind, geometry, data=0):
        object_id = len(store) + 1
        if kind == "-vol":
            assert geometry["GridSliceCount"] == 8 and geometry["GridRowCount"] == 6
            assert geometry["GridColCount"] == 4
            assert geometry["option"]["WindowMinX"] == pytest.approx(-4 * 1.5 / 2)
            assert geometry["option"]["WindowMaxZ"] == pytest.approx(8 * 3.0 / 2)
            store[object_id] = np.array(data, dtype=np.float32)
        else:
            assert kind == "-sino" and geometry["type"] == "cone_vec"
            np.testing.assert_allclose(geometry["Vectors"], drr.cone_vectors(settings))
            store[object_id] = np.zeros((rows, views, cols), np.float32)
        return object_id

    def algorithm_create(config):
        assert config["type"] == "FP3D_CUDA"
        algorithms[1] = config
        return 1

    def algorithm_run(algorithm_id):
        config = algorithms[algorithm_id]
        volume = store[config["VolumeDataId"]]
        # fake projection: value = volume sum + 100 * view + row, laid out (rows, views, cols)
        rows_index, views_index, _ = np.indices((rows, views, cols))
        store[config["ProjectionDataId"]][...] = volume.sum() + 100.0 * views_index + rows_index

    monkeypatch.setattr(astra.data3d, "create", create)
    monkeypatch.setattr(astra.data3d, "get_shared", lambda object_id: store[object_id])
    monkeypatch.setattr(astra.data3d, "delete", lambda ids: deleted.extend(ids))
    monkeypatch.setattr(astra.algorithm, "create", algorithm_create)
    monkeypatch.setattr(astra.algorithm, "run", algorithm_run)
    monkeypatch.setattr(astra.algorithm, "delete", lambda algorithm_id: None)
    monkeypatch.setattr(drr, "project_fan_beam", lambda *a: pytest.fail("CPU path taken with CUDA"))

    hu = np.full((8, 6, 4), -1000.0, np.float32)  # air: mu = 0
    hu[0, 0, 0] = 1000.0  # one bone voxel: mu = 2 mu_water
    drr_raw, bone_raw = drr._project_cuda(hu, (1.5, 2.0, 3.0), settings)
    assert drr_raw.shape == bone_raw.shape == (views, rows, cols)
    view_index, row_index, _ = np.indices((views, rows, cols))
    np.testing.assert_allclose(
        drr_raw, (2 * MU_WATER + 100.0 * view_index + row_index) / 4.0, rtol=1e-6
    )
    np.testing.assert_allclose(bone_raw, (1.0 + 100.0 * view_index + row_index) / 100.0, rtol=1e-6)
    assert sorted(deleted) == [1, 2, 3, 4]  # both volumes and both projections freed
    result = drr.project_ct(hu, (1.5, 2.0, 3.0), settings)
    assert result.projector == "cuda" and result.drr.max() == 1.0  # clipped


class _Files(list):
    """Snakemake-like named file list: ``files[0]`` and ``files.name``."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)


def _run_workflow_script(name: str, **parts):
    """Run ``workflow/scripts/<name>.py`` as Snakemake's ``script:`` would, with a stand-in
    ``snakemake`` object."""
    import runpy

    snakemake = types.SimpleNamespace(rule=name, threads=1, **parts)
    script = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / f"{name}.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake}, run_name="__main__")


def test_project_drr_script_writes_npz_and_logs_the_projector(tmp_path):
    ct = write_ct(tmp_path / "v.nii.gz", water_cylinder())
    out, log = tmp_path / "drr" / "v.npz", tmp_path / "logs" / "v.log"
    _run_workflow_script(
        "project_drr",
        input=_Files(ct=str(ct)),
        output=_Files(drr=str(out)),
        params=types.SimpleNamespace(projection=CONFIG),
        log=[str(log)],
    )
    assert out.exists()
    assert "projector: astra CPU fan beam (sparse system matrix)" in log.read_text()


def test_project_drr_script_stops_with_one_line_on_nan(tmp_path, capsys):
    hu = water_cylinder()
    hu[0, 0, 0] = np.nan
    ct = write_ct(tmp_path / "bad.nii.gz", hu)
    out, log = tmp_path / "drr" / "bad.npz", tmp_path / "logs" / "bad.log"
    with pytest.raises(SystemExit) as stop:
        _run_workflow_script(
            "project_drr",
            input=_Files(ct=str(ct)),
            output=_Files(drr=str(out)),
            params=types.SimpleNamespace(projection=CONFIG),
            log=[str(log)],
        )
    assert stop.value.code == 1
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert error_lines == [
        f"kneesynth: error: {ct}: CT volume holds 1 non-finite value(s) (NaN or inf)"
    ]
    assert not out.exists()


def test_non_square_pixels_are_resampled_for_the_cpu_projector():
    """ASTRA's fan-beam projectors need square pixels: a CT with 2 x 1 mm voxels projects like
    the same object at 2 x 2 mm (same line integrals, same position on the detector)."""

    def ball_phantom(sx, sy):
        nx, ny = int(128 / sx), int(128 / sy)
        x = ((np.arange(nx) - (nx - 1) / 2) * sx)[None, None, :]
        y = ((np.arange(ny) - (ny - 1) / 2) * sy)[None, :, None]
        z = ((np.arange(32) - 15.5) * 4.0)[:, None, None]
        hu = np.where(x**2 + y**2 < 40**2, 0.0, -1000.0) + np.zeros_like(z)
        hu[((x - 20) ** 2 + (y + 10) ** 2 + z**2 < 10**2)] = 1000.0
        return hu.astype(np.float32)

    square = drr.project_ct(ball_phantom(2.0, 2.0), (2.0, 2.0, 4.0), CONFIG)
    oblong = drr.project_ct(ball_phantom(2.0, 1.0), (2.0, 1.0, 4.0), CONFIG)
    assert oblong.drr.shape == square.drr.shape
    difference = np.abs(oblong.drr - square.drr)  # hard-edged phantoms voxelise differently
    assert difference.mean() < 0.005 and difference.max() < 0.05
    cols = np.arange(40)
    for view in range(12):
        square_centre = (square.bone_projection[view].sum(0) * cols).sum() / square.bone_projection[
            view
        ].sum()
        oblong_centre = (oblong.bone_projection[view].sum(0) * cols).sum() / oblong.bone_projection[
            view
        ].sum()
        assert abs(square_centre - oblong_centre) < 0.2  # a half-voxel shift would be 0.375
