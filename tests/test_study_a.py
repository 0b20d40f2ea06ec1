"""Study A end to end on tiny synthetic volumes: dataset, training (and its resume after a
SIGKILL), sampling, metrics, Table I, paired tests and Fig. 3."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kneesynth.errors import InputError
from kneesynth.io import load_npz, save_npz
from kneesynth.study_a.dataset import _read_volume, assemble_dataset
from kneesynth.study_a.evaluate import evaluate_samples, image_metrics, paired_tests, table1
from kneesynth.study_a.figures import figure3
from kneesynth.study_a.sample import sample_test_images
from kneesynth.study_a.settings import CONDITIONS, MODELS
from kneesynth.study_a.train import train_model

torch.set_num_threads(1)

PARAMS = {
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
    "batch_size": 4,
    "lr": 2e-4,
    "epochs": 1,
    "steps": 4,
    "ema_decay": 0.99,
    "grad_clip": 1.0,
    "checkpoint_every": 2,
    "t0": 0.4,
    "sample_batch_size": 3,
    "max_test_images": 4,
    "sampler": {
        "name": "heun",
        "eps": 1e-5,
        "pc": {"steps": 6, "snr": 0.4, "corrector_steps": 1},
        "heun": {"steps": 3, "rho": 7.0},
        "heun_churn": {
            "steps": 3,
            "rho": 7.0,
            "s_churn": 5.0,
            "s_tmin": 0.05,
            "s_tmax": 50.0,
            "s_noise": 1.0,
        },
    },
}
COMPUTE = {"device": "cpu", "deterministic": True}


def phantom_volume(seed: int, views: int = 3, size: int = 32):
    """Tiny leg-like projections: an ellipse of soft tissue with a bright bone inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    drr, contour, bone = [], [], []
    for v in range(views):
        a, b = 0.3 + 0.05 * rng.random(), 0.2 + 0.05 * np.cos(v)
        soft = (xx / b) ** 2 + (yy / a) ** 2 < 1
        hard = (xx / (0.4 * b)) ** 2 + (yy / (0.8 * a)) ** 2 < 1
        drr.append(np.clip(0.3 * soft + 0.5 * hard + 0.02 * rng.random((size, size)), 0, 1))
        contour.append(0.5 * soft)
        bone.append(0.5 * soft + 0.5 * hard)
    return [np.array(x, dtype=np.float32) for x in (drr, contour, bone)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_a")
    volumes = [f"SMIR.Body.{30 + i}Y.M.CT.{i}" for i in range(4)]
    drr_paths, seg_paths = [], []
    for i, volume in enumerate(volumes):
        drr, contour, bone = phantom_volume(i)
        drr_paths.append(root / "drr" / f"{volume}.npz")
        seg_paths.append(root / "segmentation" / f"{volume}.npz")
        save_npz(drr_paths[-1], drr=drr, bone_projection=drr, angles_deg=np.arange(3) * 6.0)
        save_npz(seg_paths[-1], contour=contour, bone=bone)
    splits = root / "volumes.tsv"
    pd.DataFrame({"volume": volumes, "split": ["train", "train", "val", "test"]}).to_csv(
        splits, sep="\t", index=False
    )
    output = root / "dataset.npz"
    counts = assemble_dataset(drr_paths, seg_paths, splits, output, image_size=16)
    return {
        "root": root,
        "path": output,
        "counts": counts,
        "drr": drr_paths,
        "seg": seg_paths,
        "splits": splits,
    }


def test_assemble_dataset(dataset):
    data = load_npz(dataset["path"])
    assert dataset["counts"] == {"train": 6, "val": 3, "test": 3}
    assert data["drr"].shape == (12, 16, 16) and data["drr"].dtype == np.float32
    assert set(np.unique(data["bone"])) <= {0.0, 0.5, 1.0}
    assert list(data["view"][:3]) == [0, 1, 2]
    assert (data["split"][data["volume"] == data["volume"][-1]] == "test").all()


def test_split_by_view(dataset, tmp_path):
    volumes = [Path(p).name.removesuffix(".npz") for p in dataset["drr"]]
    rows = [(v, view, "train" if view < 2 else "test") for v in volumes for view in range(3)]
    splits = tmp_path / "volumes.tsv"
    pd.DataFrame(rows, columns=["volume", "view", "split"]).to_csv(splits, sep="\t", index=False)
    counts = assemble_dataset(dataset["drr"], dataset["seg"], splits, tmp_path / "d.npz", 16)
    assert counts == {"train": 8, "val": 0, "test": 4}


def test_bad_inputs_name_the_file(dataset, tmp_path):
    bad_seg = tmp_path / "segmentation" / Path(dataset["seg"][0]).name
    contour, bone = load_npz(dataset["seg"][0])["contour"], load_npz(dataset["seg"][0])["bone"]
    save_npz(bad_seg, contour=contour + 0.2, bone=bone)
    with pytest.raises(InputError, match=f"{bad_seg}: 'contour' must hold only"):
        assemble_dataset(
            dataset["drr"],
            [bad_seg, *dataset["seg"][1:]],
            dataset["splits"],
            tmp_path / "x.npz",
            16,
        )
    splits = tmp_path / "bad.tsv"
    splits.write_text("volume\tsplit\nSMIR.Body.30Y.M.CT.0\ttraining\n")
    with pytest.raises(InputError, match="unknown split"):
        assemble_dataset(dataset["drr"], dataset["seg"], splits, tmp_path / "x.npz", 16)
    splits.write_text("volume\tsplit\nSMIR.Body.99Y.M.CT.9\ttrain\n")
    with pytest.raises(InputError, match="has no DRR"):
        assemble_dataset(dataset["drr"], dataset["seg"], splits, tmp_path / "x.npz", 16)
    save_npz(tmp_path / "drr.npz", drr=np.full((3, 32, 32), 2.0, dtype=np.float32))
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        _read_volume(tmp_path / "drr.npz", dataset["seg"][0])


@pytest.fixture(scope="module")
def trained(dataset):
    root = dataset["root"]
    models = {}
    for kind, condition in [
        ("csm", None),
        ("ctm", "contour"),
        ("ctm", "contour_bone"),
        ("unet", "contour"),
        ("unet", "contour_bone"),
    ]:
        name = kind if condition is None else f"{kind}_{condition}"
        models[name] = root / "models" / f"{name}.pt"
        train_model(
            kind, condition, dataset["path"], models[name], root / "state" / name, PARAMS, COMPUTE
        )
    return models


def test_training_writes_finite_weights(trained):
    from kneesynth.training import load_weights

    for name, path in trained.items():
        state, meta = load_weights(path)
        assert meta["steps"] == 4 and np.isfinite(meta["final_loss"]), name
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_sampling_evaluation_table_tests_figure(dataset, trained, tmp_path):
    samples = []
    for model in MODELS:
        for condition in CONDITIONS:
            weights = trained["csm" if model == "csm" else f"{model}_{condition}"]
            path = tmp_path / f"{model}_{condition}.npz"
            info = sample_test_images(
                model, condition, dataset["path"], weights, path, PARAMS, COMPUTE
            )
            samples.append(path)
            sample = load_npz(path)
            assert sample["generated"].shape == (3, 16, 16)
            assert sample["generated"].min() >= 0 and sample["generated"].max() <= 1
            expected = {"unet": 1, "csm": 5, "ctm": 5}[model]  # heun 3 steps: 2 * 3 - 1
            assert info["evaluations"] == expected
    # same seed, same images
    again = tmp_path / "again" / "ctm_contour.npz"
    sample_test_images(
        "ctm", "contour", dataset["path"], trained["ctm_contour"], again, PARAMS, COMPUTE
    )
    np.testing.assert_array_equal(
        load_npz(again)["generated"], load_npz(tmp_path / "ctm_contour.npz")["generated"]
    )

    metrics = evaluate_samples(samples, tmp_path / "metrics.tsv")
    assert len(metrics) == 18 and np.isfinite(metrics[["mae", "psnr"]].to_numpy()).all()
    table = table1(tmp_path / "metrics.tsv", tmp_path / "table1.tsv")
    assert len(table) == 12
    assert {
        "study",
        "model",
        "condition",
        "metric",
        "mean",
        "std",
        "n",
        "value",
        "paper_value",
    } <= set(table.columns)
    assert (
        table.loc[
            (table.model == "ctm") & (table.condition == "contour_bone") & (table.metric == "psnr"),
            "paper_value",
        ].item()
        == 31.680
    )
    assert table.set_index("model")["evaluations_per_image"].to_dict() == {
        "unet": 1,
        "csm": 5,
        "ctm": 5,
    }
    tests = paired_tests(tmp_path / "metrics.tsv", tmp_path / "paired.tsv")
    assert len(tests) == 18
    assert tests["p_value"].isna().all()  # one test volume: no test over volumes
    assert {
        "study",
        "comparison",
        "test",
        "statistic",
        "p_value",
        "p_adjusted",
        "n",
        "unit",
        "n_units",
        "metric",
        "condition",
        "difference",
    } <= set(tests.columns)
    figure3(samples, tmp_path / "fig3.png", tmp_path / "fig3.pdf")
    assert (tmp_path / "fig3.png").stat().st_size > 1000 and (tmp_path / "fig3.pdf").exists()


def test_image_metrics_known_values():
    target = np.zeros((2, 4, 4), dtype=np.float32)
    generated = target.copy()
    generated[0] += 0.1
    generated[1, 0, 0] = 0.5
    metrics = image_metrics(generated, target)
    np.testing.assert_allclose(metrics["mae"], [0.1, 0.5 / 16], rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr"], [20.0, 10 * np.log10(16 / 0.25)], rtol=1e-5)


def test_image_metrics_equal_monai_metrics():
    from monai.metrics import MAEMetric, PSNRMetric

    rng = np.random.default_rng(1)
    target = rng.random((5, 16, 16), dtype=np.float32)
    generated = np.clip(target + rng.normal(scale=0.05, size=target.shape), 0, 1).astype(np.float32)
    metrics = image_metrics(generated, target)
    y_pred, y = torch.from_numpy(generated)[:, None], torch.from_numpy(target)[:, None]
    mae = MAEMetric(reduction="none")(y_pred, y).reshape(-1).numpy()
    psnr = PSNRMetric(max_val=1.0, reduction="none")(y_pred, y).reshape(-1).numpy()
    np.testing.assert_allclose(metrics["mae"], mae, rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr"], psnr, rtol=1e-5)


def metrics_table(path, volumes: int, views: int, seed: int = 0):
    """Per-image MAE/PSNR of the three models under both conditions: CTM 0.01, U-Net 0.02,
    CSM 0.05, plus a shared per-volume offset (views of a volume are alike)."""
    rng = np.random.default_rng(seed)
    rows = []
    offsets = {"unet": 0.02, "csm": 0.05, "ctm": 0.01}
    volume_offset = rng.normal(0, 0.004, volumes)
    for model, offset in offsets.items():
        for condition in CONDITIONS:
            for v in range(volumes):
                for i in range(views):
                    mae = offset + abs(volume_offset[v]) + 0.001 * rng.random()
                    rows.append(
                        {
                            "model": model,
                            "condition": condition,
                            "volume": f"v{v}",
                            "view": i,
                            "mae": mae,
                            "psnr": -20 * np.log10(mae),
                            "evaluations": {"unet": 1, "csm": 200, "ctm": 200}[model],
                        }
                    )
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_paired_tests_detect_a_better_model_over_volumes(tmp_path):
    tests = paired_tests(metrics_table(tmp_path / "m.tsv", 4, 6), tmp_path / "p.tsv")
    assert {"unit", "n_units", "n"} <= set(tests.columns)
    assert (tests["unit"] == "volume").all() and (tests["n_units"] == 4).all()
    assert (tests["n"] == 24).all()
    ctm_vs_csm = tests[(tests.comparison == "ctm_vs_csm") & (tests.metric == "mae")]
    assert (ctm_vs_csm["p_adjusted"] < 0.01).all()
    assert (ctm_vs_csm["difference"] < 0).all() and (ctm_vs_csm["ci_high"] < 0).all()
    # the cluster bootstrap CI sits beside the t interval (narrower at few volumes)
    row = ctm_vs_csm.iloc[0]
    assert row["ci_low"] <= row["bootstrap_ci_low"] <= row["bootstrap_ci_high"] <= row["ci_high"]


def test_one_test_volume_gives_no_p_value(tmp_path):
    """The demo's situation: 12 views of one test volume support no test over volumes."""
    tests = paired_tests(metrics_table(tmp_path / "m.tsv", 1, 12), tmp_path / "p.tsv")
    assert tests["p_value"].isna().all() and tests["p_adjusted"].isna().all()
    assert tests["note"].str.contains("too few units: 1").all()
    assert (tests["n_units"] == 1).all() and (tests["n"] == 12).all()


def test_table1_has_cis_clustered_by_volume_and_evaluations(tmp_path):
    table = table1(metrics_table(tmp_path / "m.tsv", 5, 3), tmp_path / "t.tsv")
    ctm = table[(table.model == "ctm") & (table.metric == "mae")].iloc[0]
    assert ctm["n_volumes"] == 5 and ctm["n"] == 15
    assert ctm["ci_low"] < ctm["mean"] < ctm["ci_high"]
    assert table.set_index("model")["evaluations_per_image"].to_dict() == {
        "unet": 1,
        "csm": 200,
        "ctm": 200,
    }
    one = table1(metrics_table(tmp_path / "m1.tsv", 1, 12), tmp_path / "t1.tsv")
    assert one["ci_low"].isna().all()


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, torch
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    from kneesynth.study_a.train import train_model
    kind, condition, dataset, output, state, params = sys.argv[1:7]
    train_model(kind, None if condition == "-" else condition, dataset, output, state,
                json.loads(params), {"device": "cpu"})
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind,condition", [("ctm", "contour")])
def test_training_resumes_after_sigkill_to_identical_weights(dataset, tmp_path, kind, condition):
    """A training job SIGKILLed after a checkpoint and started again ends with the weights of
    an uninterrupted run (bit-identical on CPU)."""
    from kneesynth.training import load_weights

    params = dict(PARAMS, steps=6, checkpoint_every=2)
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)

    def train(output, state, kill_at=None):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("KNEESYNTH_FAULT_KILL_AT_STEP", None)
        if kill_at is not None:
            env["KNEESYNTH_FAULT_KILL_AT_STEP"] = str(kill_at)
        args = [
            sys.executable,
            str(script),
            kind,
            condition,
            str(dataset["path"]),
            str(output),
            str(state),
            json.dumps(params),
        ]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)

    straight = train(tmp_path / "straight.pt", tmp_path / "state_straight")
    assert straight.returncode == 0, straight.stderr
    killed = train(tmp_path / "resumed.pt", tmp_path / "state_resumed", kill_at=4)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "resumed.pt").exists()
    assert (tmp_path / "state_resumed" / "checkpoint.pt").exists()
    resumed = train(tmp_path / "resumed.pt", tmp_path / "state_resumed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step 4" in resumed.stderr
    a, _ = load_weights(tmp_path / "straight.pt")
    b, _ = load_weights(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
