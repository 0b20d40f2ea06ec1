"""Memorisation check: blocked max correlation == brute force; copies flagged, fresh samples not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kneesynth.checks.memorization import (
    block_sizes,
    max_correlation,
    max_correlation_brute_force,
    memorization_check,
    normalise_rows,
    pca_features,
    top_pairs,
)
from kneesynth.data.images import ImageFiles, read_radiograph
from kneesynth.errors import InputError

torch.set_num_threads(1)


def blobs(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size) smooth random images in [0, 1]: a few Gaussian blobs each."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx, width = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            images[i] += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
        images[i] += 0.05 * rng.standard_normal((size, size))
    return np.clip(images / images.max(axis=(1, 2), keepdims=True), 0, 1)


def test_normalised_rows_give_pearson_correlation():
    images = blobs(4, 8, seed=1)
    rows = normalise_rows(images).numpy()
    expected = np.corrcoef(images.reshape(4, -1))
    np.testing.assert_allclose(rows @ rows.T, expected, atol=1e-5)


def test_constant_image_has_zero_correlation():
    images = np.concatenate([np.full((1, 8, 8), 0.3, np.float32), blobs(2, 8, seed=2)])
    rows = normalise_rows(images).numpy()
    assert np.all(rows[0] == 0)
    assert np.isfinite(rows).all()


@pytest.mark.parametrize("budget_mb", [1e-3, 0.02, 64])
def test_blocked_equals_brute_force(budget_mb):
    synthetic, training = blobs(23, 12, seed=3), blobs(31, 12, seed=4)
    blocked = max_correlation(synthetic, training, memory_budget_mb=budget_mb)
    brute = max_correlation_brute_force(synthetic, training)
    np.testing.assert_allclose(blocked.max_correlation, brute.max_correlation, atol=1e-5)
    np.testing.assert_array_equal(blocked.nearest_index, brute.nearest_index)


def test_block_sizes_respect_budget():
    bs, bt, keep = block_sizes(10_000, 8_000, 4096, 64 * 2**20)
    assert not keep  # 8000 x 4096 floats = 125 MiB > half of 64 MiB
    assert (bs * 4096 + bt * 4096 + bs * bt) * 4 <= 64 * 2**20
    bs, bt, keep = block_sizes(10_000, 8_000, 4096, 1024 * 2**20)
    assert keep and bt == 8_000 and bs >= 1


def test_small_budget_tiles_training_set():
    _, bt, keep = block_sizes(23, 31, 144, 2000)
    assert not keep and bt < 31


def test_planted_copy_is_flagged_and_fresh_samples_are_not():
    training = blobs(60, 16, seed=5)
    held_out = blobs(40, 16, seed=6)
    fresh = blobs(10, 16, seed=7)
    baseline = max_correlation(held_out, training).max_correlation
    median_held_out = held_out[np.argsort(baseline)[len(baseline) // 2]]
    noise = np.random.default_rng(8).uniform(0, 1, (1, 16, 16)).astype(np.float32)
    synthetic = np.concatenate([fresh, training[17:18], median_held_out[None], noise])
    result = memorization_check(
        synthetic,
        training,
        held_out,
        quantile=0.99,
        features=pca_features(training, 8, seed=0),
        feature_space="pca",
    )
    copy, held, noisy = len(fresh), len(fresh) + 1, len(fresh) + 2
    assert result.flagged[copy]
    assert result.nearest_index[copy] == 17
    assert result.max_correlation[copy] == pytest.approx(1.0, abs=1e-5)
    assert not result.flagged[held]
    assert not result.flagged[noisy]
    assert result.feature_flagged[copy] and result.feature_nearest_index[copy] == 17
    assert not result.feature_flagged[held]
    summary = result.summary()
    assert summary["fraction_flagged"] == pytest.approx(result.flagged.sum() / len(synthetic))
    assert summary["baseline_quantile"] == pytest.approx(np.quantile(baseline, 0.99), abs=1e-6)
    assert summary["max_correlation_max"] == pytest.approx(1.0, abs=1e-5)
    assert top_pairs(result, 1)[0] == copy


def test_different_sizes_are_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        max_correlation(blobs(2, 8, 0), blobs(2, 9, 0))


def test_image_files_read_lazily_and_resize(tmp_path):
    images = blobs(3, 16, seed=9)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    files = ImageFiles(paths)
    assert files[0:3].shape == (3, 16, 16)
    np.testing.assert_allclose(files[1:2][0], images[1], atol=1 / 255)
    assert ImageFiles(paths, size=(8, 8))[0:2].shape == (2, 8, 8)
    result = max_correlation(files, images)
    np.testing.assert_array_equal(result.nearest_index, [0, 1, 2])


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not a png")
    with pytest.raises(InputError, match="broken.png"):
        read_radiograph(bad)


# ---------------------------------------------------------------------------------------------
# The per-study drivers on tiny made-up inputs (the contract files of studies A and B)
# ---------------------------------------------------------------------------------------------


def write_pngs(folder, images, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


SETTINGS = {
    "quantile": 0.99,
    "memory_budget_mb": 1,
    "top_k": 2,
    "pca_components": 4,
    "held_out_split": "test",
    "seed": 0,
}


def test_study_a_driver_flags_a_planted_copy(study_a_dataset, tmp_path):
    from kneesynth.checks.memorization_report import (
        load_top_pairs,
        plot_top_pairs,
        save_top_pairs,
        study_a_memorization,
    )
    from kneesynth.io import save_npz

    drr = blobs(30, 16, seed=11)
    split = np.array(["train"] * 20 + ["test"] * 10)
    zeros = np.zeros_like(drr)
    dataset = study_a_dataset(
        tmp_path / "dataset.npz",
        drr,
        split=split,
        volume=[f"v{i // 5}" for i in range(30)],
        view=np.arange(30) % 5,
    )
    generated = blobs(6, 16, seed=12)
    generated[2] = drr[7]  # a copy of training image 7 (volume v1, view 2)
    save_npz(
        tmp_path / "ctm_contour_bone.npz",
        generated=generated,
        target=drr[20:26],
        mask=zeros[:6],
        volume=np.array(["v4"] * 6),
        view=np.arange(6),
    )
    save_npz(
        tmp_path / "csm_contour.npz",
        generated=blobs(6, 16, seed=13),
        target=drr[20:26],
        mask=zeros[:6],
        volume=np.array(["v4"] * 6),
        view=np.arange(6),
    )
    rows, per_image, pairs = study_a_memorization(
        dataset, [tmp_path / "ctm_contour_bone.npz", tmp_path / "csm_contour.npz"], SETTINGS
    )
    flagged = per_image[per_image.flagged]
    assert flagged[
        ["model", "condition", "synthetic_index", "nearest_training"]
    ].values.tolist() == [["ctm", "contour_bone", 2, "v1/view2"]]
    assert per_image.loc[
        (per_image.model == "ctm") & (per_image.synthetic_index == 2), "feature_flagged"
    ].item()
    value = rows.set_index(["model", "condition", "metric"])["value"]
    assert value[("ctm", "contour_bone", "fraction_flagged")] == pytest.approx(1 / 6)
    assert value[("csm", "contour", "fraction_flagged")] == 0
    assert set(rows.columns) >= {"study", "model", "condition", "metric", "value", "paper_value"}
    save_top_pairs(tmp_path / "pairs.npz", pairs)
    loaded = load_top_pairs(tmp_path / "pairs.npz")
    assert loaded[0].label == "A ctm contour_bone" and loaded[0].flagged[0]
    np.testing.assert_array_equal(loaded[0].training[0], drr[7])
    plot_top_pairs(loaded, tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 0


def test_study_b_driver_uses_fid_features_and_flags_a_planted_copy(tmp_path):
    import pandas as pd

    from kneesynth.checks.memorization_report import study_b_memorization
    from kneesynth.study_b.fid import build_feature_net
    from kneesynth.training import save_weights

    real = blobs(40, 16, seed=21)
    paths = write_pngs(tmp_path / "oai", real, "knee")
    split = ["train"] * 28 + ["test"] * 12
    pd.DataFrame(
        {
            "image": paths,
            "participant": [f"p{i}" for i in range(40)],
            "side": 1,
            "visit": "V00",
            "kl_grade": np.arange(40) % 5,
            "split": split,
        }
    ).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    synthetic = blobs(8, 16, seed=22)
    synthetic[5] = np.rint(real[3] * 255) / 255  # a copy of training image 3
    for generator, images in (("wgan", synthetic), ("ddpm_cond", blobs(8, 16, seed=23))):
        png = write_pngs(tmp_path / generator / "png", images, "s")
        pd.DataFrame({"image": png, "kl_grade": 0, "generator": generator}).to_csv(
            tmp_path / generator / "manifest.tsv", sep="\t", index=False
        )
    classifier = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1]}
    torch.manual_seed(0)
    save_weights(
        tmp_path / "fid.pt",
        build_feature_net(classifier).state_dict(),
        {"classifier": classifier, "image_size": 16},
    )
    rows, per_image, pairs = study_b_memorization(
        tmp_path / "manifest.tsv",
        [tmp_path / "wgan" / "manifest.tsv", tmp_path / "ddpm_cond" / "manifest.tsv"],
        tmp_path / "fid.pt",
        SETTINGS,
    )
    flagged = per_image[per_image.flagged]
    assert flagged[["model", "synthetic_index"]].values.tolist() == [["wgan", 5]]
    assert flagged["nearest_training"].item() == paths[3]
    assert flagged["feature_flagged"].item()
    assert "fid_features" in rows.loc[rows.metric == "feature_distance_median", "note"].iloc[0]
    assert [p.label for p in pairs] == ["B wgan", "B ddpm_cond"]


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"target": np.zeros((2, 16, 16))}, "no 'generated' array"),
        ({"generated": np.zeros((2, 8, 8))}, "generated images are"),
    ],
)
def test_bad_study_a_sample_names_the_file(study_a_dataset, tmp_path, arrays, problem):
    from kneesynth.checks.memorization_report import study_a_memorization
    from kneesynth.io import save_npz

    drr = blobs(8, 16, seed=0)
    study_a_dataset(
        tmp_path / "dataset.npz",
        drr,
        split=["train"] * 5 + ["test"] * 3,
        volume=["v"] * 8,
        view=np.arange(8),
        contour=drr,
        bone=drr,
    )
    save_npz(tmp_path / "ctm_contour.npz", **arrays)
    with pytest.raises(InputError, match=f"ctm_contour.npz: {problem}"):
        study_a_memorization(tmp_path / "dataset.npz", [tmp_path / "ctm_contour.npz"], SETTINGS)
