"""Controls (copy, hold-out, noise) through every check; controls.tsv and the checks that fail it;
a blind feature space planted in the FID/KID code is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kneesynth.checks.controls import (
    radial_average,
    spectrum_noise,
    study_a_controls,
    study_b_controls,
)
from kneesynth.checks.controls_table import checks_failing_controls, controls_table
from kneesynth.checks.settings import CONTROLS, study_a_model_condition
from kneesynth.data.images import read_radiograph
from kneesynth.data.manifest import read_sample_manifest
from kneesynth.errors import InputError
from kneesynth.io import load_npz
from kneesynth.study_b.fid import fid_rows
from kneesynth.study_b.synthetic import evaluation_counts

SIZE = 16
CHECKS = {
    "held_out_split": "test",
    "seed": 13,
    "controls": {
        "holdout_split": "val",
        "max_images": None,
        "noise": "spectrum",
        "blur_sigma": 2.0,
        "z": 1.96,
    },
}


def knee(rng, size=SIZE):
    """A toy radiograph in [0, 1]: a bright vertical leg with a dark joint line across it,
    shifted a little, plus noise."""
    image = np.full((size, size), 0.1)
    left = size // 4 + rng.integers(-1, 2)
    image[:, left : left + size // 2] = 0.8
    joint = size // 2 + rng.integers(-1, 2)
    image[joint, left : left + size // 2] = 0.4
    return np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)


def knees(n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([knee(rng) for _ in range(n)])


def test_spectrum_noise_keeps_mean_and_spectrum_but_no_anatomy():
    pool = 0.3 + 0.4 * knees(200, 0)  # contrast low enough that clipping to [0, 1] is rare
    noise = spectrum_noise(pool, 400, np.random.default_rng(1))
    assert noise.shape == (400, SIZE, SIZE) and noise.min() >= 0 and noise.max() <= 1
    assert noise.mean() == pytest.approx(pool.mean(), abs=0.03)

    def power(images):
        centred = images - images.mean(axis=(1, 2), keepdims=True)
        return np.mean(np.abs(np.fft.fft2(centred)) ** 2, axis=0)

    # the same radial profile (power at each spatial frequency |k|) and total power ...
    ratio = (radial_average(power(noise)) / radial_average(power(pool))).ravel()[1:]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.15)
    assert power(noise).sum() / power(pool).sum() == pytest.approx(1.0, abs=0.1)
    # ... but no orientation: the vertical leg puts its power on horizontal frequencies
    horizontal, vertical = (lambda p: p[0, 1:4].sum(), lambda p: p[1:4, 0].sum())
    assert horizontal(power(pool)) > 3 * vertical(power(pool))
    assert horizontal(power(noise)) == pytest.approx(vertical(power(noise)), rel=0.3)
    # the pool's mean image has a leg; the noise's mean image is flat
    assert pool.mean(0).std() > 0.12
    assert noise.mean(0).std() < 0.03


def test_evaluation_counts_follow_the_reference_mix_and_fit_every_pool():
    reference = {0: 31, 1: 5, 2: 42, 3: 6, 4: 6}
    train = {0: 75, 1: 38, 2: 35, 3: 27, 4: 5}
    val = {0: 25, 1: 11, 2: 22, 3: 24, 4: 8}
    counts = evaluation_counts(reference, [train, val])
    assert all(counts[g] <= min(train[g], val[g]) for g in range(5))
    total = sum(counts.values())
    assert 40 <= total < 90  # val's 22 KL 2 images limit it
    shares = np.array([counts[g] for g in range(5)]) / total
    expected = np.array([reference[g] for g in range(5)]) / 90
    assert np.abs(shares - expected).max() < 0.03
    assert sum(evaluation_counts(reference, [train, val], max_images=20).values()) == 20
    assert evaluation_counts(reference) == reference  # no pools, no cap: the reference itself


@pytest.fixture
def tiny_oai(tiny_oai):
    """The shared tiny OAI set with toy knees (32 x 32) from :func:`knee`."""

    def write(folder, per_grade=(6, 4, 6, 3, 3)):
        return tiny_oai(
            folder,
            lambda rng, grade: (knee(rng, 32) * 255).astype(np.uint8),
            per_grade=per_grade,
            seed=3,
        )

    return write


def test_study_b_controls_match_the_generators_sets(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    out = {c: tmp_path / "evaluation" / c for c in CONTROLS}
    study_b_controls(manifest, CHECKS, SIZE, out, seed=5)
    real = pd.read_csv(manifest, sep="\t")
    frames = {c: read_sample_manifest(out[c] / "manifest.tsv") for c in CONTROLS}
    counts = [frame["kl_grade"].value_counts().sort_index().tolist() for frame in frames.values()]
    assert counts[0] == counts[1] == counts[2] == [6, 4, 6, 3, 3]  # the test split's mix
    assert (frames["control_copy"]["generator"] == "control_copy").all()
    split_of = dict(zip(real["image"], real["split"], strict=True))
    assert {split_of[s] for s in frames["control_copy"]["source"]} == {"train"}
    assert {split_of[s] for s in frames["control_holdout"]["source"]} == {"val"}
    # a copy is the real image, read at the generators' size like every real image (the one
    # radiograph reader, kneesynth.data.images), written as 8-bit
    row = frames["control_copy"].iloc[0]
    with Image.open(row["image"]) as copy:
        assert copy.size == (SIZE, SIZE)
        expected = np.rint(read_radiograph(row["source"], SIZE) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(copy), expected)
    # the run is reproducible
    again = {c: tmp_path / "again" / c for c in CONTROLS}
    study_b_controls(manifest, CHECKS, SIZE, again, seed=5)
    for c in CONTROLS:
        for a, b in zip(
            sorted((out[c] / "png").iterdir()), sorted((again[c] / "png").iterdir()), strict=True
        ):
            assert a.read_bytes() == b.read_bytes()


def test_control_holdout_must_not_be_the_metrics_own_images(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    bad = {**CHECKS, "controls": {**CHECKS["controls"], "holdout_split": "test"}}
    with pytest.raises(InputError, match="holdout_split must differ"):
        study_b_controls(manifest, bad, SIZE, {"control_copy": tmp_path / "c"}, seed=5)


def test_study_a_controls_are_sample_files(study_a_dataset, tmp_path):
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 8 + ["val"] * 4 + ["test"] * 4)
    dataset = study_a_dataset(
        tmp_path / "dataset.npz",
        rng.random((16, 8, 8)).astype(np.float32),
        split=split,
        volume=np.repeat(["a", "b", "c", "d"], 4),
        view=np.tile(np.arange(4), 4),
    )
    outputs = {c: tmp_path / f"{c}.npz" for c in CONTROLS}
    study_a_controls(dataset, CHECKS, outputs, seed=1)
    data = load_npz(dataset)
    copy, holdout = load_npz(outputs["control_copy"]), load_npz(outputs["control_holdout"])
    np.testing.assert_array_equal(copy["target"], data["drr"][split == "test"])
    assert len(copy["generated"]) == 4
    train_rows = {data["drr"][i].tobytes() for i in np.flatnonzero(split == "train")}
    val_rows = {data["drr"][i].tobytes() for i in np.flatnonzero(split == "val")}
    assert all(image.tobytes() in train_rows for image in copy["generated"])
    assert all(image.tobytes() in val_rows for image in holdout["generated"])
    assert study_a_model_condition("control_noise") == ("control_noise", "all")
    assert study_a_model_condition("ctm_contour_bone") == ("ctm", "contour_bone")


def rows(study, model, condition, **metrics):
    return [
        {"study": study, "model": model, "condition": condition, "metric": m, "value": v}
        for m, v in metrics.items()
    ]


def good_tables():
    fid = pd.DataFrame(
        rows("B", "control_copy", "overall", fid=1.0, fid_se=0.3, kid=0.01, kid_se=0.02)
        + rows("B", "control_holdout", "overall", fid=1.1, fid_se=0.3, kid=0.0, kid_se=0.02)
        + rows("B", "control_noise", "overall", fid=9.0, fid_se=1.0, kid=0.8, kid_se=0.1)
    )
    realism = pd.DataFrame(
        [
            *rows(
                "B",
                "control_holdout",
                "all",
                c2st_auc=0.55,
                c2st_auc_ci_low=0.4,
                c2st_auc_ci_high=0.7,
            ),
            *rows(
                "B",
                "control_noise",
                "all",
                c2st_auc=0.99,
                c2st_auc_ci_low=0.97,
                c2st_auc_ci_high=1.0,
            ),
        ]
    )
    memorization = pd.DataFrame(
        rows("B", "control_copy", "all", fraction_flagged=1.0, feature_fraction_flagged=1.0)
        + rows("B", "control_holdout", "all", fraction_flagged=0.02, feature_fraction_flagged=0.0)
        + rows("B", "memorization_probe", "all", fraction_flagged=0.8, n_synthetic=40)
        + rows("B", "memorization_probe_full", "all", fraction_flagged=0.05, n_synthetic=40)
    )
    return fid, realism, memorization


def test_controls_table_passes_good_checks():
    table = controls_table(*good_tables())
    assert list(table.columns[:6]) == ["study", "check", "control", "value", "expected", "passes"]
    assert set(table["check"]) == {"fid", "kid", "c2st", "memorization", "memorization_features"}
    assert (table["passes"] == "yes").all(), table
    assert set(table["study"]) == {"B", "C"}
    assert checks_failing_controls(table) == set()


@pytest.mark.parametrize(
    ("table", "model", "metric", "value", "failing"),
    [
        (2, "control_copy", "fraction_flagged", 0.9, {"memorization"}),  # misses copies
        (2, "control_holdout", "feature_fraction_flagged", 0.2, {"memorization_features"}),
        (1, "control_holdout", "c2st_auc_ci_low", 0.6, {"c2st"}),  # tells real from real
        (1, "control_noise", "c2st_auc", 0.8, {"c2st"}),  # cannot tell noise from real
        (0, "control_noise", "kid", 0.1, {"kid"}),  # noise not farther than real images
        (0, "control_copy", "fid", 5.0, {"fid"}),  # training copies far from real images
        (0, "control_holdout", "kid", 0.2, {"kid"}),  # KID of real vs real must be ~0
        (2, "memorization_probe_full", "fraction_flagged", 0.7, {"memorization"}),
        (0, "control_noise", "fid", float("nan"), {"fid"}),  # a missing value does not pass
    ],
)
def test_controls_table_names_the_failing_check(table, model, metric, value, failing):
    tables = list(good_tables())
    frame = tables[table]
    frame.loc[(frame["model"] == model) & (frame["metric"] == metric), "value"] = value
    result = controls_table(*tables)
    assert checks_failing_controls(result) == failing
    study = "C" if model.startswith("memorization_probe") else "B"
    assert checks_failing_controls(result, study) == failing
    assert checks_failing_controls(result, "A") == set()


def evaluation_sets(seed):
    """Real test knees, and the controls drawn like the pipeline draws them."""
    train, val, test = knees(120, seed), knees(60, seed + 1), knees(60, seed + 2)
    rng = np.random.default_rng(seed + 3)
    return test, {
        "control_copy": train[rng.choice(len(train), 40, replace=False)],
        "control_holdout": val[:40],
        "control_noise": spectrum_noise(train, 40, rng),
    }


def scored(extract, seed=0):
    test, controls = evaluation_sets(seed)
    grades = np.zeros(len(test), int)
    synthetic = {
        name: (extract(images), np.zeros(len(images), int)) for name, images in controls.items()
    }
    fid = pd.DataFrame(fid_rows(extract(test), grades, synthetic, "test", subsets=50, seed=seed))
    return controls_table(fid, None, None)


def test_a_blind_feature_space_fails_its_controls():
    """Random features (unrelated to the images) cannot tell noise from knees: the FID/KID
    checks fail their controls, so a claim resting on them would be inconclusive."""
    rng = np.random.default_rng(7)

    def blind(images):
        return rng.normal(size=(len(images), 8))

    table = scored(blind)
    assert {"fid", "kid"} <= checks_failing_controls(table, "B")
    noise = table[(table["control"] == "control_noise") & (table["check"] == "kid")]
    assert (noise["passes"] == "no").all()


def test_a_feature_space_that_sees_passes_its_controls():
    def block_means(images):  # 4 x 4 block means: sees where the leg and the joint are
        n = len(images)
        return images.reshape(n, 4, SIZE // 4, 4, SIZE // 4).mean(axis=(2, 4)).reshape(n, 16)

    table = scored(block_means)
    assert checks_failing_controls(table, "B") == set(), table
