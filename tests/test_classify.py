"""Study B classifiers on tiny PNG sets: manifests, arms, training, selection, resume."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kneesynth.data.images import read_radiograph
from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest
from kneesynth.data.splits import SPLITS
from kneesynth.errors import InputError
from kneesynth.study_b import classify
from kneesynth.study_b.kl_metrics import read_predictions

torch.set_num_threads(1)

SETTINGS = {
    "backbone": "small_cnn",
    "image_size": 16,
    "epochs": 3,
    "batch_size": 8,
    "learning_rate": 0.01,
    "weight_decay": 0.0001,
    "class_weighting": "none",
    "augment_flip": True,
    "selection_metric": "accuracy",
    "checkpoint_every": 2,
}


def knee_png(path, kl_grade: int, rng: np.random.Generator, size: int = 16, bits: int = 8):
    """A toy radiograph whose joint space (a dark band) narrows with the KL grade."""
    image = 0.7 + 0.05 * rng.standard_normal((size, size))
    half_width = max(0, 4 - kl_grade)
    image[size // 2 - half_width : size // 2 + half_width, :] = 0.1
    image = np.clip(image, 0, 1)
    if bits == 16:
        Image.fromarray((image * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((image * 255).astype(np.uint8)).save(path)


@pytest.fixture
def dataset(tmp_path):
    """Real manifest (train 20, val 10, test 10 images) and one synthetic set of 10."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        for i in range(n):
            grade = i % 5
            path = tmp_path / "real" / f"{split}_{i}.png"
            path.parent.mkdir(exist_ok=True)
            knee_png(path, grade, rng)
            rows.append(
                {
                    "image": str(path),
                    "participant": f"{split}{i // 2}",
                    "side": 1,
                    "visit": "V00",
                    "kl_grade": grade,
                    "split": split,
                }
            )
    real = tmp_path / "manifest.tsv"
    pd.DataFrame(rows).to_csv(real, sep="\t", index=False)
    synthetic_dir = tmp_path / "samples" / "ddpm_cond"
    (synthetic_dir / "png").mkdir(parents=True)
    synthetic_rows = []
    for i in range(10):
        knee_png(synthetic_dir / "png" / f"syn_{i}.png", i % 5, rng)
        # relative to the manifest's folder
        synthetic_rows.append(
            {"image": f"png/syn_{i}.png", "kl_grade": i % 5, "generator": "ddpm_cond"}
        )
    synthetic = synthetic_dir / "manifest.tsv"
    pd.DataFrame(synthetic_rows).to_csv(synthetic, sep="\t", index=False)
    return {"real": real, "synthetic": {"ddpm_cond": synthetic}, "root": tmp_path}


# ------------------------------------------------------------------------------ arms
@pytest.mark.parametrize(
    ("name", "use_real", "generator", "canonical"),
    [
        ("real", True, None, "real"),
        ("real+ddpm_cond", True, "ddpm_cond", "real+ddpm_cond"),
        ("syn-wgan", False, "wgan", "syn-wgan"),
        ("synthetic:ddpm_uncond", False, "ddpm_uncond", "syn-ddpm_uncond"),
    ],
)
def test_parse_arm(name, use_real, generator, canonical):
    arm = classify.parse_arm(name)
    assert (arm.use_real, arm.generator, arm.name) == (use_real, generator, canonical)


@pytest.mark.parametrize("name", ["", "fake", "real+", "real+a/b", "syn-"])
def test_parse_arm_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="unknown classifier arm"):
        classify.parse_arm(name)


# ---------------------------------------------------------------------- bad manifests
def one_image_per_split(splits):
    """Manifest rows: one KL 2 image of participant p in each of ``splits``."""
    return [
        {
            "image": f"{s}.png",
            "participant": "p",
            "side": "L",
            "visit": 0,
            "kl_grade": 2,
            "split": s,
        }
        for s in splits
    ]


def write_manifest(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_manifest_missing_column_names_the_file(tmp_path):
    path = write_manifest(tmp_path / "m.tsv", [{"image": "a.png", "kl_grade": 1, "split": "train"}])
    with pytest.raises(InputError, match=r"m\.tsv: missing column\(s\) participant"):
        read_oai_manifest(path, every_split=True)


def test_manifest_bad_kl_grade(tmp_path):
    rows = one_image_per_split(SPLITS)
    rows[1]["kl_grade"] = 7
    path = write_manifest(tmp_path / "m.tsv", rows)
    with pytest.raises(InputError, match=r"m\.tsv: kl_grade must be an integer 0-4; row 3"):
        read_oai_manifest(path, every_split=True)


def test_manifest_missing_split(tmp_path):
    rows = one_image_per_split(("train", "test"))
    path = write_manifest(tmp_path / "m.tsv", rows)
    with pytest.raises(InputError, match=r"m\.tsv: no images in split\(s\) val"):
        read_oai_manifest(path, every_split=True)


def test_manifest_unknown_split(tmp_path):
    rows = one_image_per_split(("train", "val", "test", "dev"))
    path = write_manifest(tmp_path / "m.tsv", rows)
    with pytest.raises(InputError, match=r"unknown split\(s\) \['dev'\]"):
        read_oai_manifest(path, every_split=True)


def test_empty_synthetic_manifest(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("image\tkl_grade\tgenerator\n")
    with pytest.raises(InputError, match=r"s\.tsv: synthetic manifest has no images"):
        read_sample_manifest(path)


def test_missing_image_names_the_image(dataset, tmp_path):
    table = pd.read_csv(dataset["real"], sep="\t")
    table.loc[0, "image"] = str(tmp_path / "gone.png")
    path = write_manifest(tmp_path / "broken.tsv", table)
    with pytest.raises(InputError, match=r"gone\.png: image file not found"):
        classify.load_arm_data("real", path, {}, 16)


def test_unreadable_image(tmp_path):
    path = tmp_path / "bad.png"
    path.write_text("not a png")
    with pytest.raises(InputError, match=r"bad\.png: cannot read image"):
        read_radiograph(path, 16)


# ------------------------------------------------------------------------------ images
def test_load_image_8_and_16_bit_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    knee_png(tmp_path / "a.png", 0, np.random.default_rng(1), size=16, bits=8)
    knee_png(tmp_path / "b.png", 0, np.random.default_rng(1), size=16, bits=16)
    a = read_radiograph(tmp_path / "a.png", 16)
    b = read_radiograph(tmp_path / "b.png", 16)
    assert a.shape == b.shape == (16, 16) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1
    np.testing.assert_allclose(a, b, atol=1 / 255)
    assert read_radiograph(tmp_path / "a.png", 8).shape == (8, 8)
    del rng


def test_arm_training_sets(dataset):
    real = classify.load_arm_data("real", dataset["real"], dataset["synthetic"], 16)
    assert (len(real.train), len(real.val), len(real.test)) == (20, 10, 10)
    assert real.train.images.shape == (20, 1, 16, 16)
    augmented = classify.load_arm_data("real+ddpm_cond", dataset["real"], dataset["synthetic"], 16)
    assert len(augmented.train) == 30
    assert augmented.test.image == real.test.image  # the same real test split for every arm
    synthetic = classify.load_arm_data("syn-ddpm_cond", dataset["real"], dataset["synthetic"], 16)
    assert len(synthetic.train) == 10 and synthetic.train.participant == [""] * 10
    with pytest.raises(ValueError, match="no synthetic manifest"):
        classify.load_arm_data("real+wgan", dataset["real"], dataset["synthetic"], 16)


@pytest.mark.parametrize("backbone", classify.BACKBONES)
def test_build_classifier_shapes(backbone):
    net = classify.build_classifier(backbone, 5, 32)
    with torch.no_grad():
        out = net.eval()(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 5)


def test_class_weights_balanced():
    weights = classify.class_weights(np.array([0, 0, 0, 1]), 3, "balanced")
    # n / (k * count): 4 / (3 * 3), 4 / (3 * 1), absent class 0
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    assert classify.class_weights(np.array([0, 1]), 2, "none") is None


# ---------------------------------------------------------------------------- training
def test_training_is_deterministic_and_selects_the_best_val_epoch(dataset, tmp_path):
    data = classify.load_arm_data("real", dataset["real"], {}, 16)
    first = classify.train_classifier(data, "kl5", 0, SETTINGS, tmp_path / "state1")
    second = classify.train_classifier(data, "kl5", 0, SETTINGS, tmp_path / "state2")
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    history = pd.DataFrame(first.best.history)
    assert history["epoch"].tolist() == [0, 1, 2]
    best = history.sort_values(["val_accuracy", "val_loss"], ascending=[False, True]).iloc[0]
    assert first.best.epoch == best["epoch"]
    table = classify.prediction_table(first.model, data.test, "kl5")
    assert list(table.columns) == [
        "image",
        "participant",
        "kl_grade",
        "target",
        "prediction",
        "prob_0",
        "prob_1",
        "prob_2",
        "prob_3",
        "prob_4",
    ]
    assert np.allclose(table[[f"prob_{c}" for c in range(5)]].sum(axis=1), 1, atol=1e-5)
    # the selected weights give the recorded validation accuracy
    val = classify.prediction_table(first.model, data.val, "kl5")
    assert (val["prediction"] == val["target"]).mean() == pytest.approx(first.best.val_accuracy)
    other_seed = classify.train_classifier(data, "kl5", 1, SETTINGS, tmp_path / "state3")
    assert not torch.equal(
        next(iter(other_seed.model.state_dict().values())),
        next(iter(first.model.state_dict().values())),
    )


def test_training_honours_the_compute_switches_deterministically(dataset, tmp_path):
    """bf16 autocast and channels_last (as study A): same weights twice on CPU, other numbers
    than fp32, channels-last convolution weights."""
    data = classify.load_arm_data("real", dataset["real"], {}, 16)
    switches = {"bf16": True, "channels_last": True, "compile": False}
    settings = {**SETTINGS, "epochs": 1}

    def train(state, compute=None):
        trained = classify.train_classifier(
            data, "kl5", 0, settings, tmp_path / state, None, compute
        )
        return trained.model.state_dict()

    first, second, plain = train("a", switches), train("b", switches), train("c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)
    convolutions = [k for k, v in first.items() if v.dim() == 4]
    assert convolutions
    assert all(first[k].is_contiguous(memory_format=torch.channels_last) for k in convolutions)


def test_binary_task_predicts_two_classes(dataset, tmp_path):
    data = classify.load_arm_data("real", dataset["real"], {}, 16)
    trained = classify.train_classifier(
        data, "kl_binary", 0, {**SETTINGS, "epochs": 1}, tmp_path / "s"
    )
    table = classify.prediction_table(trained.model, data.test, "kl_binary")
    assert table["target"].tolist() == (table["kl_grade"] >= 2).astype(int).tolist()
    assert set(table["prediction"]) <= {0, 1}
    assert "prob_2" not in table


def test_run_arm_writes_predictions_and_history(dataset, tmp_path):
    out = tmp_path / "out"
    prediction_paths = {
        (t, s): out / t / f"seed{s}.tsv" for t in ("kl5", "kl_binary") for s in (0, 1)
    }
    history_paths = {t: out / t / "history.tsv" for t in ("kl5", "kl_binary")}
    settings = {**SETTINGS, "epochs": 1}
    classify.run_arm(
        "real+ddpm_cond",
        ["kl5", "kl_binary"],
        [0, 1],
        dataset["real"],
        dataset["synthetic"],
        settings,
        prediction_paths,
        history_paths,
        tmp_path / "state",
    )
    for path in prediction_paths.values():
        table = pd.read_csv(path, sep="\t")
        assert len(table) == 10
    history = pd.read_csv(history_paths["kl5"], sep="\t")
    assert history["seed"].tolist() == [0, 1] and history["selected"].all()
    assert not (tmp_path / "state").exists()  # resume state removed at the end
    tables = read_predictions(
        {(t, "real+ddpm_cond", s): p for (t, s), p in prediction_paths.items()},
        reference="real+ddpm_cond",
    )
    assert len(tables) == 4


def test_read_predictions_rejects_other_test_images(tmp_path):
    base = pd.DataFrame(
        {
            "image": ["a", "b"],
            "participant": ["p", "q"],
            "kl_grade": [0, 3],
            "target": [0, 3],
            "prediction": [0, 2],
        }
    )
    base.to_csv(tmp_path / "real.tsv", sep="\t", index=False)
    base.assign(image=["a", "c"]).to_csv(tmp_path / "aug.tsv", sep="\t", index=False)
    paths = {
        ("kl5", "real", 0): tmp_path / "real.tsv",
        ("kl5", "real+wgan", 0): tmp_path / "aug.tsv",
    }
    with pytest.raises(InputError, match=r"aug\.tsv: test images differ"):
        read_predictions(paths)
    base.assign(prediction=[0, 5]).to_csv(tmp_path / "aug.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"aug\.tsv: prediction must hold classes"):
        read_predictions(paths)


@pytest.mark.slow
def test_training_resumes_after_a_kill_with_identical_predictions(dataset, tmp_path):
    script = textwrap.dedent(
        f"""
        import logging, sys, torch
        logging.basicConfig(level=logging.INFO)
        torch.set_num_threads(1)
        from kneesynth.study_b import classify
        settings = {SETTINGS!r}
        data = classify.load_arm_data("real", {str(dataset["real"])!r}, {{}}, 16)
        trained = classify.train_classifier(data, "kl5", 0, settings, sys.argv[1])
        classify.prediction_table(trained.model, data.test, "kl5").to_csv(sys.argv[2], sep="\\t", index=False)
        """
    )
    env = {**os.environ, "KNEESYNTH_FAULT_KILL_AT_STEP": "4"}  # mid-epoch 2 of 3 (3 steps/epoch)
    killed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "state"), str(tmp_path / "resumed.tsv")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "state" / "checkpoint.pt").exists()
    env.pop("KNEESYNTH_FAULT_KILL_AT_STEP")
    resumed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "state"), str(tmp_path / "resumed.tsv")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step 4" in resumed.stderr
    # an uninterrupted run in this process (also one thread) gives the same predictions
    data = classify.load_arm_data("real", dataset["real"], {}, 16)
    fresh = classify.train_classifier(data, "kl5", 0, SETTINGS, tmp_path / "fresh")
    classify.prediction_table(fresh.model, data.test, "kl5").to_csv(
        tmp_path / "fresh.tsv", sep="\t", index=False
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "resumed.tsv", sep="\t"),
        pd.read_csv(tmp_path / "fresh.tsv", sep="\t"),
    )
