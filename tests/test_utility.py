"""Train on synthetic, test on real: Dice, ratios with CIs over units, the CTM sampling hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kneesynth.checks.utility import (
    bone_classes,
    dice_per_image,
    ratio_interval,
    sample_pairs,
    segment,
    segmentation_utility,
    select_mask_images,
    train_segmenter,
)
from kneesynth.checks.utility_classifier import classifier_utility
from kneesynth.errors import InputError
from kneesynth.io import load_npz, save_npz

torch.set_num_threads(1)

SEGMENTER = {
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 1,
    "steps": 40,
    "batch_size": 8,
    "learning_rate": 1e-2,
}
STUDY_A = {
    "seed": 7,
    "image_size": 16,
    "network": {
        "block_out_channels": [8, 8],
        "attention_levels": [False, False],
        "layers_per_block": 1,
        "norm_num_groups": 2,
        "dropout": 0.0,
    },
    "sigma_min": 0.01,
    "sigma_max": 10.0,
    "t0": 0.4,
    "sample_batch_size": 4,
    "sampler": {"name": "heun", "eps": 1e-5, "heun": {"steps": 2, "rho": 7.0}},
}


def legs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(drr, bone mask) pairs: soft-tissue ellipse 0.5 with a bone 1.0 inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    drr, mask = [], []
    for _ in range(n):
        a, b, shift = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.3), rng.uniform(-0.1, 0.1)
        soft = ((xx - shift) / b) ** 2 + (yy / a) ** 2 < 1
        hard = ((xx - shift) / (0.4 * b)) ** 2 + (yy / (0.8 * a)) ** 2 < 1
        drr.append(np.clip(0.3 * soft + 0.5 * hard + 0.03 * rng.random((size, size)), 0, 1))
        mask.append(0.5 * soft + 0.5 * hard)
    return np.array(drr, np.float32), np.array(mask, np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, study_a_dataset):
    drr, bone = legs(20, 16, seed=0)
    return study_a_dataset(
        tmp_path_factory.mktemp("utility") / "dataset.npz",
        drr,
        split=["train"] * 10 + ["val"] * 4 + ["test"] * 6,
        volume=[f"v{i // 4}" for i in range(20)],
        view=np.arange(20) % 4,
        contour=(bone > 0) * 0.5,
        bone=bone,
    )


def test_bone_classes_and_dice_by_hand():
    assert bone_classes(np.array([0.0, 0.5, 1.0])).tolist() == [0, 1, 2]
    truth = np.array([[[0, 1, 1, 2]]])
    predicted = np.array([[[0, 1, 2, 2]]])
    # soft tissue: |P n T| = 1, |P| = 1, |T| = 2 -> 2/3; bone: 1, |P| = 2, |T| = 1 -> 2/3
    np.testing.assert_allclose(dice_per_image(predicted, truth), [[2 / 3, 2 / 3]])
    np.testing.assert_allclose(dice_per_image(truth, truth), [[1.0, 1.0]])
    with pytest.raises(ValueError):
        bone_classes(np.array([1.5]))


def test_ratio_interval_over_units():
    from kneesynth.stats import Statistic

    rng = np.random.default_rng(0)
    real = rng.uniform(0.8, 1.0, 50)
    units = np.repeat(np.arange(10), 5)
    ratio, low, high, note = ratio_interval(
        Statistic.mean(0.85 * real), Statistic.mean(real), units
    )
    assert (
        ratio == pytest.approx(0.85) and low == pytest.approx(0.85) and high == pytest.approx(0.85)
    )
    synthetic = rng.uniform(0.6, 0.9, 50)
    ratio, low, high, note = ratio_interval(Statistic.mean(synthetic), Statistic.mean(real), units)
    assert ratio == pytest.approx(synthetic.mean() / real.mean())
    assert low < ratio < high and high - low < 0.2 and "over 10 units" in note
    ratio, low, high, note = ratio_interval(
        Statistic.mean(synthetic), Statistic.mean(real), np.zeros(50)
    )
    assert np.isnan(low) and "too few units" in note  # one test volume: no interval


def test_segmenter_learns_bone_from_drr():
    drr, bone = legs(24, 16, seed=1)
    model = train_segmenter(drr[:16], bone[:16], dict(SEGMENTER, steps=80), seed=0)
    dice = dice_per_image(segment(model, drr[16:]), bone_classes(bone[16:]))
    assert dice.mean() > 0.8


def test_segmenter_is_deterministic():
    drr, bone = legs(8, 16, seed=2)
    first = train_segmenter(drr, bone, dict(SEGMENTER, steps=3), seed=5)
    second = train_segmenter(drr, bone, dict(SEGMENTER, steps=3), seed=5)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ctm_pairs_and_segmentation_utility(dataset, tmp_path):
    from kneesynth.study_a.train import build_network
    from kneesynth.training import save_weights

    weights = tmp_path / "ctm_contour_bone.pt"
    net = build_network("ctm", STUDY_A["network"], 16, seed=0)
    save_weights(weights, net.state_dict(), {"kind": "ctm", "condition": "contour_bone"})
    pairs = tmp_path / "pairs.npz"
    sample_pairs(
        dataset, weights, pairs, STUDY_A, "val", max_images=None, seed=0, compute={"device": "cpu"}
    )
    sampled = load_npz(pairs)
    data = load_npz(dataset)
    assert sampled["generated"].shape == (4, 16, 16)
    # masks the CTM never saw: the validation split
    assert (data["split"][sampled["index"]] == "val").all()
    np.testing.assert_array_equal(sampled["mask"], data["bone"][sampled["index"]])
    np.testing.assert_array_equal(sampled["index"], select_mask_images(data["split"], "val", None))
    assert select_mask_images(data["split"], "train", 3).size == 3

    rows, per_image = segmentation_utility(
        dataset,
        pairs,
        dict(SEGMENTER, steps=4),
        seed=0,
        mask_split="val",
        state_root=tmp_path / "state",
    )
    assert not (tmp_path / "state").exists()  # resume state removed once both arms are done
    values = rows.set_index("metric")["value"]
    assert 0 <= values["dice_real_trained"] <= 1 and 0 <= values["dice_synthetic_trained"] <= 1
    assert values["dice_ratio"] == pytest.approx(
        values["dice_synthetic_trained"] / values["dice_real_trained"]
    )
    assert rows.loc[rows.metric == "dice_ratio", "paper_value"].iloc[0] == "0.80-0.90"
    assert len(per_image) == 6
    assert values["n_test_volumes"] == 2  # test images 14-19 come from volumes v3 and v4
    assert values["dice_ratio_ci_low"] <= values["dice_ratio"] <= values["dice_ratio_ci_high"]
    assert values["n_generated_pairs"] == 4
    assert 0 <= values["n_generated_flagged_as_copies"] <= 4

    # a "CTM" that returns the training DRRs of the masks is flagged as copying
    train = np.flatnonzero(data["split"] == "train")[:4]
    copies = tmp_path / "copies.npz"
    save_npz(copies, generated=data["drr"][train], mask=data["bone"][train], index=train)
    rows, _ = segmentation_utility(
        dataset, copies, dict(SEGMENTER, steps=2), seed=0, mask_split="train"
    )
    assert rows.set_index("metric")["value"]["n_generated_flagged_as_copies"] == 4

    stale = tmp_path / "stale.npz"
    save_npz(
        stale,
        generated=sampled["generated"],
        mask=np.zeros_like(sampled["mask"]),
        index=sampled["index"],
    )
    with pytest.raises(InputError, match="stale.npz: masks differ"):
        segmentation_utility(dataset, stale, SEGMENTER, seed=0, mask_split="val")


def predictions(correct: list[int]) -> pd.DataFrame:
    target = np.arange(len(correct)) % 5
    prediction = np.where(np.array(correct) == 1, target, (target + 1) % 5)
    return pd.DataFrame(
        {
            "image": [f"img{i}" for i in range(len(correct))],
            "participant": [f"p{i // 2}" for i in range(len(correct))],
            "target": target,
            "prediction": prediction,
        }
    )


def test_classifier_utility_by_hand():
    tables = {
        ("real", 0): predictions([1, 1, 1, 1, 0, 0, 1, 1]),  # 6/8
        ("real", 1): predictions([1, 1, 1, 1, 1, 0, 1, 1]),  # 7/8
        ("syn-wgan", 0): predictions([1, 0, 1, 0, 0, 0, 1, 1]),  # 4/8
        ("syn-wgan", 1): predictions([1, 0, 1, 1, 0, 0, 1, 1]),  # 5/8
    }
    rows = classifier_utility(tables, ["syn-wgan"])
    value = rows.set_index(["condition", "metric"])["value"]
    assert value[("real", "accuracy")] == pytest.approx(13 / 16)
    assert value[("syn-wgan", "accuracy")] == pytest.approx(9 / 16)
    # the mean over seeds of seed s's ratio (seeds paired by index)
    ratio = (4 / 6 + 5 / 7) / 2
    assert value[("syn-wgan", "accuracy_ratio")] == pytest.approx(ratio)
    assert (
        value[("syn-wgan", "accuracy_ratio_ci_low")]
        <= ratio
        <= value[("syn-wgan", "accuracy_ratio_ci_high")]
    )
    with pytest.raises(ValueError, match="syn-ddpm_cond"):
        classifier_utility(tables, ["syn-ddpm_cond"])


def test_bad_prediction_name_and_pairs_off_the_mask_split(dataset, tmp_path):
    from kneesynth.checks.utility_classifier import read_kl_predictions

    bad = tmp_path / "real" / "run0.tsv"
    bad.parent.mkdir()
    predictions([1, 0]).assign(participant="p", kl_grade=0).to_csv(bad, sep="\t", index=False)
    with pytest.raises(InputError, match="run0.tsv: prediction file must be named seed<k>.tsv"):
        read_kl_predictions([bad], "kl5")
    data = load_npz(dataset)
    test = np.flatnonzero(data["split"] == "test")[:2]
    pairs = tmp_path / "pairs.npz"
    save_npz(pairs, generated=data["drr"][test], mask=data["bone"][test], index=test)
    with pytest.raises(InputError, match="pairs.npz: index does not point at val images"):
        segmentation_utility(dataset, pairs, SEGMENTER, seed=0, mask_split="val")
