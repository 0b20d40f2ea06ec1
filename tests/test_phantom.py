"""Procedural leg phantoms: CT volumes like SMIR's, radiographs like Chen et al.'s."""

import re
from dataclasses import replace

import numpy as np
import pytest

from kneesynth.data import phantom_oai
from kneesynth.data.phantom import (
    OA_ANCHORS,
    draw_anatomy,
    kl_grade_from_severity,
    knee_tissues,
    oa_features,
)
from kneesynth.data.phantom_ct import (
    phantom_volume_names,
    phantom_volumes,
    render_ct,
    write_phantom_ct,
)
from kneesynth.data.phantom_oai import phantom_radiographs, render_radiograph, write_phantom_oai

CT_CFG = {
    "volumes": 3,
    "shape": [40, 40, 48],
    "spacing_mm": [5.0, 5.0, 5.0],
    "noise_hu": 10.0,
    "kl_grade_weights": [3253, 1495, 2175, 1086, 251],
}
OAI_CFG = {
    "participants": 5,
    "visits": 2,
    "image_size": 32,
    "field_of_view_mm": 130.0,
    "depth_samples": 12,
    "progression": 0.3,
    "kl_grade_weights": [3253, 1495, 2175, 1086, 251],
}
FRACTIONS = [0.6, 0.2, 0.2]
SMIR_NAME = re.compile(r"^SMIR\.Body\.\d{3}Y\.[MF]\.CT\.\d{5}$")


def test_volume_names_are_smir_like_deterministic_and_stable_as_count_grows():
    names = phantom_volume_names(CT_CFG, seed=0)
    assert len(names) == 3 and len(set(names)) == 3
    assert all(SMIR_NAME.match(name) for name in names)
    assert names == phantom_volume_names(CT_CFG, seed=0)
    assert phantom_volume_names({**CT_CFG, "volumes": 5}, seed=0)[:3] == names
    assert phantom_volume_names(CT_CFG, seed=1) != names


def test_kl_grade_of_severity_and_oa_features():
    assert [kl_grade_from_severity(s) for s in (0.0, 0.49, 0.51, 2.0, 3.6, 4.0)] == [
        0,
        0,
        1,
        2,
        4,
        4,
    ]
    features = [oa_features(g) for g in range(5)]
    for key in ("jsw_medial_mm", "jsw_lateral_mm"):
        assert all(a[key] > b[key] for a, b in zip(features, features[1:], strict=False))
    for key in ("osteophyte_mm", "sclerosis_hu"):
        assert all(a[key] < b[key] for a, b in zip(features[1:], features[2:], strict=False))
    assert oa_features(0)["osteophyte_mm"] == 0.0


def test_ct_has_the_tissues_in_hu_and_is_deterministic():
    volume = phantom_volumes(CT_CFG, seed=0)[0]
    ct = render_ct(volume, CT_CFG["shape"], CT_CFG["spacing_mm"], CT_CFG["noise_hu"])
    assert ct.dtype == np.int16
    assert ct.shape == (48, 40, 40)  # (z, y, x)
    assert np.array_equal(
        ct, render_ct(volume, CT_CFG["shape"], CT_CFG["spacing_mm"], CT_CFG["noise_hu"])
    )
    fractions = {
        "air": np.mean(ct < -900),
        "fat": np.mean((ct > -160) & (ct < -50)),
        "muscle": np.mean((ct > 10) & (ct < 80)),
        "trabecular": np.mean((ct > 150) & (ct < 450)),
        "cortical": np.mean(ct > 900),
    }
    assert all(value > 0.003 for value in fractions.values()), fractions


def test_leg_runs_along_z_with_femur_above_and_tibia_below():
    volume = phantom_volumes(CT_CFG, seed=0)[0]
    ct = render_ct(volume, CT_CFG["shape"], CT_CFG["spacing_mm"], 0.0)
    bone_per_slice = (ct > 400).sum(axis=(1, 2))
    leg_per_slice = (ct > -500).sum(axis=(1, 2))
    assert bone_per_slice[0] > 0 and bone_per_slice[-1] > 0  # shafts reach both ends
    assert leg_per_slice.min() > 0.1 * ct.shape[1] * ct.shape[2]
    assert (ct[:, 0, :] < -900).all() and (ct[:, :, 0] < -900).all()  # air around the leg
    # The thigh (top, large z) is wider than the calf (bottom).
    assert leg_per_slice[-3:].mean() > leg_per_slice[:3].mean()


def _straight_knee(severity: float):
    anatomy = draw_anatomy(np.random.default_rng(4), "L", "M", severity)
    return replace(
        anatomy,
        rotation_deg=0.0,
        tilt_deg=(0.0, 0.0),
        offset_mm=(0.0, 0.0, 0.0),
        valgus_deg=0.0,
        flexion_deg=0.0,
    )


@pytest.mark.parametrize("grade", [0, 2, 4])
def test_medial_joint_space_narrows_with_grade(grade):
    anatomy = _straight_knee(float(grade))
    s = anatomy.scale
    medial_x = -(
        anatomy.condyle_gap_mm * s / 2 + anatomy.condyle_radii_mm[0] * s
    )  # left knee: medial is -x
    z = np.arange(-10.0, 20.0, 0.05, dtype=np.float32)
    x = np.full_like(z, medial_x)
    y = np.full_like(z, 4.0 * s)
    hu = knee_tissues(anatomy, x, y, z, edge_mm=0.05)
    soft = (hu < 150) & (z > -3) & (z < 15)
    gap_mm = soft.sum() * 0.05
    assert gap_mm == pytest.approx(OA_ANCHORS["jsw_medial_mm"][grade], abs=0.6)


def test_write_phantom_ct_writes_int16_nifti_named_like_smir(tmp_path):
    import SimpleITK as sitk

    paths = write_phantom_ct(
        {**CT_CFG, "volumes": 2}, 0, tmp_path / "sicas", tmp_path / "parameters.tsv"
    )
    names = phantom_volume_names({**CT_CFG, "volumes": 2}, 0)
    assert [p.name for p in paths] == [f"{n}.nii" for n in names]
    image = sitk.ReadImage(str(paths[0]))
    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSize() == (40, 40, 48)
    assert image.GetSpacing() == pytest.approx((5.0, 5.0, 5.0))
    assert "kl_grade" in (tmp_path / "parameters.tsv").read_text()
    assert not list((tmp_path / "sicas").glob(".*"))  # no temporary files left


def test_radiograph_specs_two_knees_visits_one_split_per_participant():
    radiographs = phantom_radiographs({**OAI_CFG, "participants": 200, "visits": 3}, 0, FRACTIONS)
    assert len(radiographs) == 200 * 2 * 3
    by_participant = {}
    for r in radiographs:
        by_participant.setdefault(r.participant, set()).add(r.split)
        assert re.fullmatch(r"9\d{6}[RL]_v\d{2}\.png", r.file_name)
    assert all(len(splits) == 1 for splits in by_participant.values())
    knees = {}
    for r in radiographs:
        knees.setdefault((r.participant, r.side), []).append(r.kl_grade)
    assert all(grades == sorted(grades) for grades in knees.values())  # no grade falls over time
    counts = np.bincount([r.kl_grade for r in radiographs], minlength=5)
    assert counts[0] > counts[1] and counts[0] > counts[3] > counts[4]  # imbalanced like Chen's


def test_cover_grades_puts_every_grade_in_every_split():
    from kneesynth.data.phantom_oai import cover_grades

    config = {**OAI_CFG, "participants": 20, "visits": 2}
    plain = phantom_radiographs(config, 0, [2, 1, 1])
    covered = phantom_radiographs({**config, "cover_grades": True}, 0, [2, 1, 1])

    def grades_by_split(radiographs):
        found = {}
        for r in radiographs:
            found.setdefault(r.split, set()).add(r.kl_grade)
        return found

    assert any(len(g) < 5 for g in grades_by_split(plain).values())  # KL 4 is rare (3 %)
    assert all(g == set(range(5)) for g in grades_by_split(covered).values())
    changed = {r.participant for r, s in zip(plain, covered, strict=True) if r != s}
    assert 0 < len(changed) <= len(covered) // 2 // 4  # a few of 20 participants
    # the rule itself: a split's missing grade goes to a participant of its most common grade,
    # as long as that grade keeps one
    grades = cover_grades({"a": 0, "b": 0, "c": 2, "d": 1}, dict.fromkeys("abcd", "test"))
    assert grades == {"a": 3, "b": 0, "c": 2, "d": 1}
    assert cover_grades({"a": 0}, {"a": "val"}) == {"a": 0}


def test_radiograph_is_8bit_deterministic():
    r = phantom_radiographs(OAI_CFG, 0, FRACTIONS)[0]
    image = render_radiograph(r.anatomy, 32, 130.0, 12, r.seed)
    assert image.dtype == np.uint8 and image.shape == (32, 32)
    assert np.array_equal(image, render_radiograph(r.anatomy, 32, 130.0, 12, r.seed))
    assert image.std() > 20


def test_a_classifier_can_learn_the_grade_from_radiographs():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    images, labels = [], []
    for index in range(80):
        grade = index % 2 * 4  # KL 0 vs KL 4
        anatomy = draw_anatomy(rng, "R" if index % 4 < 2 else "L", "M", float(grade))
        images.append(render_radiograph(anatomy, 32, 130.0, 12, index).ravel() / 255.0)
        labels.append(grade)
    x, y = np.array(images), np.array(labels)
    model = LogisticRegression(C=0.1, max_iter=2000).fit(x[:50], y[:50])
    assert model.score(x[50:], y[50:]) >= 0.75


def test_write_phantom_oai_is_a_chen_layout_that_oai_reads(tmp_path):
    from kneesynth.data.oai import read_chen_layout

    radiographs = write_phantom_oai(OAI_CFG, 0, FRACTIONS, tmp_path / "oai")
    root = tmp_path / "oai"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "val"]
    assert all(
        sorted(p.name for p in (root / s).iterdir()) == list("01234")
        for s in ("train", "val", "test")
    )
    manifest = read_chen_layout(root)
    assert len(manifest) == len(radiographs) == 5 * 2 * 2
    truth = {r.file_name: r for r in radiographs}
    for row in manifest.itertuples():
        r = truth[row.image.rsplit("/", 1)[-1]]
        assert (row.participant, row.side, row.visit, row.kl_grade, row.split) == (
            r.participant,
            r.side,
            f"V{r.visit}",
            r.kl_grade,
            r.split,
        )
    assert not list(tmp_path.glob(".oai*"))  # the staging folder is gone


def test_write_phantom_oai_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(phantom_oai, "render_radiograph", broken)
    with pytest.raises(RuntimeError):
        write_phantom_oai(OAI_CFG, 0, FRACTIONS, tmp_path / "oai")
    assert list(tmp_path.iterdir()) == []
