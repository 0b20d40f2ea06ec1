"""FID on trained-classifier features (trace of sqrtm from eigenvalues, checked against scipy's
sqrtm and MONAI's FIDMetric), the table, the Inception option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from kneesynth.errors import InputError
from kneesynth.study_b.fid import (
    classifier_extractor,
    fid_rows,
    fid_table,
    frechet_distance,
    frechet_distance_se,
    inception_extractor,
    kernel_inception_distance,
    trace_sqrt_product,
    train_feature_net,
)
from kneesynth.training import load_weights

torch.set_num_threads(1)
SIZE = 16


def by_hand(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_frechet_distance_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 3))
    b = rng.normal(loc=[1.0, 0.0, -2.0], scale=[1.0, 2.0, 0.5], size=(150, 3))
    assert frechet_distance(a, b) == pytest.approx(by_hand(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # mean shift of (1, 0, -2) alone contributes 5
    assert frechet_distance(a, a + [1.0, 0.0, -2.0]) == pytest.approx(5.0, rel=1e-6)
    assert np.isnan(frechet_distance(a, b[:1]))


def scaled(features):
    """Centred features / sqrt(n - 1): their Gram matrix is the covariance."""
    return (features - features.mean(0)) / np.sqrt(len(features) - 1)


@pytest.mark.parametrize(
    "n, m",
    [(300, 200), (9, 40), (40, 9), (5, 6)],
    ids=["covariance route", "fewer real than dims", "fewer synthetic", "both few"],
)
def test_trace_sqrt_product_matches_scipy_sqrtm(n, m):
    rng = np.random.default_rng(n + m)
    d = 12
    mixing = rng.normal(size=(d, d))
    a = rng.normal(size=(n, d)) @ mixing
    b = rng.normal(size=(m, d)) @ mixing.T + 1.0
    expected = np.trace(scipy.linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)).real)
    # with fewer images than dimensions the product is singular, where sqrtm's own error grows
    # to about sqrt(machine epsilon) (ours is then an SVD, exact to 1e-16 against 40 digits)
    tolerance = 1e-9 if min(n, m) > d else 1e-6
    assert trace_sqrt_product(scaled(a), scaled(b)) == pytest.approx(expected, rel=tolerance)
    assert frechet_distance(a, b) == pytest.approx(by_hand(a, b), rel=tolerance)


def test_singular_covariance_matches_scipy_sqrtm():
    """A feature that never varies (a dead unit) makes the real covariance singular: no
    Cholesky factor, the eigen-decomposition takes over."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 6))
    a[:, 2] = 0.5
    b = rng.normal(size=(150, 6)) * [1.0, 2.0, 1.0, 0.5, 1.0, 3.0]
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(by_hand(a, b), rel=1e-9)


def test_frechet_distance_equals_monai_fid_metric():
    from monai.metrics import FIDMetric

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(120, 10)), rng.normal(loc=0.3, size=(90, 10))
    monai_value = float(FIDMetric()(torch.from_numpy(b), torch.from_numpy(a)))
    assert frechet_distance(a, b) == pytest.approx(monai_value, rel=1e-9)


def test_fid_rows_per_grade_and_direction_note():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(50, 2))
    grades = np.repeat(np.arange(5), 10)
    synthetic = {
        "ddpm_cond": (real + rng.normal(scale=0.1, size=real.shape), grades),
        "wgan": (real + 3.0, grades),
    }
    rows = pd.DataFrame(fid_rows(real, grades, synthetic, "test_features", subsets=20))
    assert len(rows) == 2 * 6 * 4  # generators x conditions x (fid, fid_se, kid, kid_se)
    conditions = rows.loc[rows["metric"] == "fid", "condition"].tolist()
    assert conditions[:6] == ["overall", "kl0", "kl1", "kl2", "kl3", "kl4"]
    assert set(rows["metric"]) == {"fid", "fid_se", "kid", "kid_se"}
    assert set(rows["n_real"]) == {50, 10}
    for metric in ("fid", "kid"):
        overall = rows[(rows["condition"] == "overall") & (rows["metric"] == metric)]
        value = overall.set_index("model")["value"]
        assert value["ddpm_cond"] < value["wgan"]
        note = overall.set_index("model")["note"]["ddpm_cond"]
        assert "same direction" in note
    se = rows[rows["metric"].str.endswith("_se") & (rows["condition"] == "overall")]
    assert (se["value"] > 0).all()
    assert (rows["features"] == "test_features").all()
    few = pd.DataFrame(fid_rows(real, grades, {"wgan": (real[:11], grades[:11])}, "f", subsets=5))
    kl1 = few[(few["condition"] == "kl1") & (few["metric"] == "fid")].iloc[0]
    assert kl1["n_synthetic"] == 1 and np.isnan(kl1["value"])
    assert "too few images" in kl1["note"]


def test_kid_is_unbiased_and_has_a_standard_error():
    """KID of two samples of one distribution is ~0 whatever n (FID is not), and grows with a
    shift; its SE from half-subsets is no smaller than the spread of KID over fresh samples."""
    rng = np.random.default_rng(3)
    same = [
        kernel_inception_distance(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), 30, seed=s)
        for s in range(20)
    ]
    values = np.array([v for v, _ in same])
    ses = np.array([se for _, se in same])
    assert abs(values.mean()) < 2 * values.std() / np.sqrt(len(values)) + 1e-3
    # conservative: at least the spread over fresh samples, at most ~2x (MMD^2 of equal
    # distributions is a degenerate U-statistic: its variance falls as 1/n^2, the jackknife's
    # half-subsets overstate it)
    assert 0.8 * values.std() <= ses.mean() <= 3 * values.std()
    shifted, se = kernel_inception_distance(
        rng.normal(size=(40, 4)), rng.normal(loc=1.0, size=(40, 4)), 30
    )
    assert shifted > 2 * se > 0
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    assert kernel_inception_distance(a, b, 10, seed=1) == kernel_inception_distance(
        a, b, 10, seed=1
    )
    assert all(np.isnan(kernel_inception_distance(a[:3], b, 10)))
    fid_small = frechet_distance(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)))
    assert fid_small > 1.0  # FID's small-sample bias
    assert frechet_distance_se(a, b, 20) > 0


def test_inception_option_needs_torchscript(tmp_path):
    bad = tmp_path / "inception_state_dict.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(InputError, match="expected a TorchScript archive"):
        inception_extractor(bad)
    with pytest.raises(InputError, match="not found"):
        inception_extractor(tmp_path / "missing.pt")

    class Pool(torch.nn.Module):  # stands in for Inception: (n, 3, 299, 299) -> (n, 3)
        def forward(self, x):
            return x.mean(dim=(2, 3))

    good = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(Pool()), str(good))
    extract, name = inception_extractor(good)
    features = extract(np.full((3, SIZE, SIZE), 255, np.uint8))
    assert features.shape == (3, 3) and np.allclose(features, 1.0)
    assert name == "inception_v3_pool"


@pytest.fixture
def tiny_oai(tiny_oai):
    """The shared tiny OAI set, grey levels rising with the KL grade."""

    def draw(rng, grade):
        return np.clip(rng.normal(40 * grade + 20, 10, (SIZE, SIZE)), 0, 255).astype(np.uint8)

    return lambda folder: tiny_oai(
        folder, draw, seed=2, path="{split}/{grade}_{i}.png", participant="p{i}"
    )


FID_CONFIG = {
    "features": "classifier",
    "inception_weights": None,
    "classifier": {
        "init_features": 8,
        "growth_rate": 4,
        "block_config": [1, 1],
        "steps": 3,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "checkpoint_every": 2,
    },
}


def test_feature_net_and_fid_table(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    weights = tmp_path / "fid_features.pt"
    train_feature_net(manifest, FID_CONFIG, SIZE, weights, tmp_path / "state", 3)
    extract, features, size = classifier_extractor(weights)
    assert size == SIZE and features.startswith("densenet")
    assert extract(np.zeros((4, SIZE, SIZE), np.uint8)).shape == (
        4,
        10,
    )  # 8 + 4 -> transition 6 + 4 = 10
    # a synthetic "set" that is the test split itself -> FID 0 overall
    test = pd.read_csv(manifest, sep="\t").query("split == 'test'")
    sample_manifest = tmp_path / "samples" / "manifest.tsv"
    sample_manifest.parent.mkdir()
    test.assign(generator="ddpm_cond")[["image", "kl_grade", "generator"]].to_csv(
        sample_manifest, sep="\t", index=False
    )
    table = fid_table(manifest, [sample_manifest], weights, {**FID_CONFIG, "subsets": 5})
    overall = table[table["condition"] == "overall"].set_index("metric")["value"]
    assert overall["fid"] == pytest.approx(0, abs=1e-6)
    assert (table.loc[table["condition"] != "overall", "n_synthetic"] == 3).all()


def test_rotation_task_feature_net(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    weights = tmp_path / "fid_features.pt"
    config = {**FID_CONFIG, "classifier": {**FID_CONFIG["classifier"], "rotation": True}}
    train_feature_net(manifest, config, SIZE, weights, tmp_path / "state", 3)
    state_dict, meta = load_weights(weights)
    assert state_dict["class_layers.out.weight"].shape[0] == 5 + 4  # KL grades + quarter turns
    extract, features, _ = classifier_extractor(weights)
    assert "kl_rotation" in features and f"{SIZE}px" in features
    assert extract(np.zeros((2, SIZE, SIZE), np.uint8)).shape == (2, 10)


def test_feature_net_training_honours_the_compute_switches_deterministically(tiny_oai, tmp_path):
    """bf16 autocast and channels_last (as study A): same weights twice on CPU, other numbers
    than fp32, channels-last convolution weights."""
    from kneesynth.training import load_weights

    manifest = tiny_oai(tmp_path)
    switches = {"bf16": True, "channels_last": True, "compile": False}

    def train(name, compute=None):
        weights = tmp_path / f"{name}.pt"
        train_feature_net(manifest, FID_CONFIG, SIZE, weights, tmp_path / name, 3, compute=compute)
        return load_weights(weights)[0]

    first, second, plain = train("a", switches), train("b", switches), train("c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)
    convolutions = [k for k, v in first.items() if v.dim() == 4]
    assert convolutions
    assert all(first[k].is_contiguous(memory_format=torch.channels_last) for k in convolutions)


def test_fid_table_rejects_inception_without_weights(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    weights = tmp_path / "fid_features.pt"
    train_feature_net(manifest, FID_CONFIG, SIZE, weights, tmp_path / "state", 3)
    with pytest.raises(InputError, match="inception_weights is not set"):
        fid_table(manifest, [], weights, {**FID_CONFIG, "features": "inception"})
