"""Segmentation maps of DRRs: values, thresholds, files, figure, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from kneesynth.errors import InputError
from kneesynth.io import save_npz
from kneesynth.projection import segmentation

CONFIG = {"contour_threshold": 0.1, "bone_threshold": 0.02, "figure_volumes": 2, "figure_views": 3}


def synthetic_drr(views: int = 6, size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A leg-like DRR: a bright vertical band, a brighter bone core, noise; values in [0, 1]."""
    rng = np.random.default_rng(seed)
    cols = np.arange(size)
    band = np.abs(cols - size / 2) < size / 4
    core = np.abs(cols - size / 2) < size / 8
    drr = np.zeros((views, size, size), np.float32)
    drr[:, :, band] = 0.4
    drr += np.float32(0.05) * rng.random(drr.shape, dtype=np.float32)
    bone = np.zeros_like(drr)
    bone[:, :, core] = 0.2
    return {"drr": drr, "bone_projection": bone, "angles_deg": np.arange(views) * 360.0 / views}


def test_contour_is_half_above_threshold_strictly():
    drr = np.array([[[0.0, 0.1, 0.1001, 1.0]]], np.float32)
    np.testing.assert_array_equal(segmentation.contour_mask(drr, 0.1), [[[0.0, 0.0, 0.5, 0.5]]])


def test_bone_map_adds_half_inside_contour():
    drr = np.array([[[0.0, 0.5, 0.5, 0.05]]], np.float32)
    bone_projection = np.array([[[0.5, 0.0, 0.3, 0.3]]], np.float32)
    bone = segmentation.bone_mask(drr, bone_projection, 0.1, 0.02)
    # background stays 0 even where bone_projection is set; soft tissue 0.5; bone 1
    np.testing.assert_array_equal(bone, [[[0.0, 0.5, 1.0, 0.0]]])


def test_masks_take_only_0_half_1(tmp_path):
    arrays = synthetic_drr()
    arrays["bone_projection"] = np.random.default_rng(1).random(
        arrays["drr"].shape, dtype=np.float32
    )
    save_npz(tmp_path / "v.npz", **arrays)
    masks = segmentation.segment_drr_file(tmp_path / "v.npz", tmp_path / "seg" / "v.npz", CONFIG)
    with np.load(tmp_path / "seg" / "v.npz") as data:
        assert set(data.files) == {"contour", "bone"}
        for key in ("contour", "bone"):
            assert data[key].shape == arrays["drr"].shape and data[key].dtype == np.float32
            assert set(np.unique(data[key])) <= {0.0, 0.5, 1.0}
            np.testing.assert_array_equal(data[key], masks[key])
    assert set(np.unique(masks["contour"])) == {0.0, 0.5}
    assert set(np.unique(masks["bone"])) == {0.0, 0.5, 1.0}
    assert np.all(masks["bone"] >= masks["contour"])


def test_thresholds_come_from_config(tmp_path):
    arrays = synthetic_drr()
    save_npz(tmp_path / "v.npz", **arrays)
    loose = segmentation.segment_drr_file(tmp_path / "v.npz", tmp_path / "a.npz", CONFIG)
    strict = segmentation.segment_drr_file(
        tmp_path / "v.npz",
        tmp_path / "b.npz",
        {**CONFIG, "contour_threshold": 0.5, "bone_threshold": 0.5},
    )
    assert (loose["contour"] > 0).sum() > 0 and (strict["contour"] > 0).sum() == 0
    assert (loose["bone"] == 1.0).sum() > 0 and (strict["bone"] == 1.0).sum() == 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda a: a.pop("bone_projection"), "missing array 'bone_projection'"),
        (lambda a: a["drr"].__setitem__((0, 0, 0), np.nan), "'drr' must be finite and in [0, 1]"),
        (
            lambda a: a["bone_projection"].__setitem__((0, 0, 0), 1.5),
            "'bone_projection' must be finite",
        ),
        (lambda a: a.__setitem__("drr", a["drr"][0]), "must both be (views, H, W)"),
        (lambda a: a.__setitem__("angles_deg", a["angles_deg"][:2]), "does not match"),
    ],
)
def test_bad_drr_file_is_one_line_input_error(tmp_path, change, problem):
    arrays = synthetic_drr()
    change(arrays)
    save_npz(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "seg.npz"
    with pytest.raises(InputError) as error:
        segmentation.segment_drr_file(tmp_path / "bad.npz", out, CONFIG)
    message = str(error.value)
    assert (
        message.startswith(str(tmp_path / "bad.npz")) and problem in message and "\n" not in message
    )
    assert not out.exists()


def test_damaged_npz_is_input_error(tmp_path):
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"cut\.npz: cannot read npz"):
        segmentation.segment_drr_file(tmp_path / "cut.npz", tmp_path / "seg.npz", CONFIG)


def test_figure_views_spread_over_the_circle():
    assert segmentation.figure_views(60, 4) == [0, 15, 30, 45]
    assert segmentation.figure_views(12, 3) == [0, 4, 8]
    assert segmentation.figure_views(2, 5) == [0, 1]


def test_segmentation_figure_is_written_atomically(tmp_path):
    drr_paths, seg_paths = [], []
    for index in range(3):
        drr_path = tmp_path / "drr" / f"SMIR.Body.04{index}Y.F.CT.1000{index}.npz"
        save_npz(drr_path, **synthetic_drr(seed=index))
        seg_path = tmp_path / "segmentation" / drr_path.name
        segmentation.segment_drr_file(drr_path, seg_path, CONFIG)
        drr_paths.append(drr_path)
        seg_paths.append(seg_path)
    out = tmp_path / "figures" / "segmentation_examples.png"
    segmentation.segmentation_figure(drr_paths, seg_paths, out, CONFIG)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == [out.name]
