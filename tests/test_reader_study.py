"""Reader study: the blinded kit, and scoring of sheets filled in by the test (hand-computed)."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kneesynth.checks.reader_study import (
    list_responses,
    make_reader_kit,
    parse_response_name,
    read_answers,
    read_key,
    score_reader_study,
)
from kneesynth.errors import InputError


def make_kit(
    tmp_path: Path, generator: str, n_real: int, n_synthetic: int, seed: int = 0
) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    real = rng.uniform(0, 1, (n_real, 8, 8))
    synthetic = rng.uniform(0, 1, (n_synthetic, 8, 8))
    kit, key = tmp_path / "kit" / generator, tmp_path / "keys" / f"{generator}.csv"
    make_reader_kit(real, synthetic, generator=generator, kit_dir=kit, key_path=key, seed=seed)
    return kit, key


def fill(key_path: Path, path: Path, detect: int, real_correct: int, blank: int = 0) -> None:
    """An answer sheet: the first ``detect`` synthetic images called synthetic, the first
    ``real_correct`` real images called real, all others wrong; the last ``blank`` real
    images (after the correct and wrong ones) left empty."""
    key = read_key(key_path)
    answers = {}
    synthetic_ids = key.loc[key["truth"] == "synthetic", "image_id"].tolist()
    real_ids = key.loc[key["truth"] == "real", "image_id"].tolist()
    for i, image_id in enumerate(synthetic_ids):
        answers[image_id] = "synthetic" if i < detect else "real"
    for i, image_id in enumerate(real_ids):
        answers[image_id] = (
            "" if i >= len(real_ids) - blank else ("real" if i < real_correct else "synthetic")
        )
    pd.DataFrame({"image_id": list(answers), "answer": list(answers.values())}).to_csv(
        path, index=False
    )


def two_sided_binomial_half(k: int, n: int) -> float:
    """Two-sided binomial p at p = 0.5, by hand: twice the smaller tail (symmetric)."""
    tail = sum(comb(n, i) for i in range(max(k, n - k), n + 1))
    return min(1.0, 2 * tail / 2**n)


def test_kit_is_blinded_and_complete(tmp_path):
    kit, key_path = make_kit(tmp_path, "wgan", n_real=5, n_synthetic=5)
    key = read_key(key_path)
    sheet = pd.read_csv(kit / "answer_sheet.csv", dtype=str, keep_default_na=False)
    assert list(sheet.columns) == ["image_id", "answer"] and (sheet["answer"] == "").all()
    assert sheet["image_id"].tolist() == key["image_id"].tolist()
    assert key["image_id"].is_unique and (key["truth"] == "synthetic").sum() == 5
    pngs = sorted(p.stem for p in (kit / "images").glob("*.png"))
    assert pngs == sorted(key["image_id"])
    assert {Image.open(kit / "images" / f"{i}.png").size for i in pngs} == {(8, 8)}
    assert not any("truth" in p.read_text(errors="ignore") for p in kit.glob("*.csv"))
    assert key_path.parent != kit and not (kit / key_path.name).exists()
    # shuffled: the truth is not sorted in the sheet's order, and the kit is reproducible
    assert key["truth"].tolist() != sorted(key["truth"].tolist())
    _, again = make_kit(tmp_path / "again", "wgan", n_real=5, n_synthetic=5)
    pd.testing.assert_frame_equal(read_key(again), key)


def test_scores_match_hand_computed_rates_and_p_values(tmp_path):
    _, key_ddpm = make_kit(tmp_path, "ddpm_uncond", n_real=6, n_synthetic=6, seed=1)
    _, key_gan = make_kit(tmp_path, "wgan", n_real=8, n_synthetic=8, seed=2)
    responses = tmp_path / "responses"
    responses.mkdir()
    fill(key_ddpm, responses / "reader1_ddpm_uncond.csv", detect=1, real_correct=5)
    fill(key_ddpm, responses / "reader2_ddpm_uncond.csv", detect=2, real_correct=6)
    fill(key_gan, responses / "reader1_wgan.csv", detect=5, real_correct=7)
    table = score_reader_study(
        list_responses(responses),
        {"ddpm_uncond": key_ddpm, "wgan": key_gan},
        paper_detection_rate={"ddpm_uncond": 0.167, "wgan": 0.625},
    )

    def value(model, condition, metric):
        row = table[
            (table.model == model) & (table.condition == condition) & (table.metric == metric)
        ]
        assert len(row) == 1, (model, condition, metric)
        return float(row["value"].iloc[0])

    assert value("ddpm_uncond", "reader1", "detection_rate") == pytest.approx(1 / 6)
    assert value("ddpm_uncond", "reader1", "specificity") == pytest.approx(5 / 6)
    assert value("ddpm_uncond", "reader1", "binomial_p") == pytest.approx(1.0)  # 6 of 12 correct
    assert value("ddpm_uncond", "reader2", "binomial_p") == pytest.approx(
        two_sided_binomial_half(8, 12)
    )
    assert two_sided_binomial_half(8, 12) == pytest.approx(2 * 794 / 4096)
    assert value("wgan", "reader1", "detection_rate") == pytest.approx(5 / 8)
    assert value("wgan", "reader1", "accuracy") == pytest.approx(12 / 16)
    assert value("wgan", "reader1", "binomial_p") == pytest.approx(2 * 2517 / 65536)
    # pooled over the two DDPM readers: 3 of 12 detected, 14 of 24 correct
    assert value("ddpm_uncond", "pooled", "detection_rate") == pytest.approx(3 / 12)
    # its CI treats the kit's 6 synthetic images as the units (two readers rate each)
    low = value("ddpm_uncond", "pooled", "detection_rate_ci_low")
    high = value("ddpm_uncond", "pooled", "detection_rate_ci_high")
    assert low < 3 / 12 < high
    assert value("ddpm_uncond", "pooled", "sensitivity") == pytest.approx(3 / 12)
    assert value("ddpm_uncond", "pooled", "specificity") == pytest.approx(11 / 12)
    assert value("ddpm_uncond", "pooled", "binomial_p") == pytest.approx(
        two_sided_binomial_half(14, 24)
    )
    # Fisher's exact test on [[3, 9], [5, 3]]: hypergeometric probabilities (x 125970) of the
    # tables as or less likely than the observed 12320: x = 0, 1, 2, 3, 7, 8
    assert value("ddpm_uncond_vs_wgan", "pooled", "fisher_p") == pytest.approx(
        (1 + 96 + 1848 + 12320 + 6336 + 495) / 125970
    )
    assert value("ddpm_uncond_vs_wgan", "pooled", "fisher_odds_ratio") == pytest.approx(
        3 * 3 / (9 * 5)
    )
    paper = table[
        (table.model == "wgan") & (table.condition == "pooled") & (table.metric == "detection_rate")
    ]
    assert float(paper["paper_value"].iloc[0]) == pytest.approx(0.625)


def test_blank_answers_are_left_out(tmp_path):
    _, key = make_kit(tmp_path, "wgan", n_real=4, n_synthetic=4)
    sheet = tmp_path / "r_wgan.csv"
    fill(key, sheet, detect=4, real_correct=2, blank=2)
    table = score_reader_study([sheet], {"wgan": key})
    pooled = table[table.condition == "pooled"].set_index("metric")["value"]
    assert (
        pooled["n_unanswered"] == 2 and pooled["specificity"] == 1.0 and pooled["accuracy"] == 1.0
    )


def test_no_responses_gives_one_row_that_says_so(tmp_path):
    table = score_reader_study(list_responses(tmp_path / "missing"), {}, responses_dir="responses/")
    assert len(table) == 1 and "no filled answer sheets" in table["note"].iloc[0]


def test_response_names():
    assert parse_response_name("a/dr_x_ddpm_cond.csv", ["ddpm_cond", "ddpm_uncond", "wgan"]) == (
        "dr_x",
        "ddpm_cond",
    )
    with pytest.raises(InputError, match="reader_gan.csv"):
        parse_response_name("reader_gan.csv", ["wgan"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("image_id,answer\nzzzzzzzz,real\n", "not in this generator's kit"),
        ("image_id,answer\n{id},maybe\n", "answer must be real or synthetic"),
        ("image_id,answer\n{id},real\n{id},real\n", "listed twice"),
        ("image_id,verdict\n{id},real\n", "missing column answer"),
    ],
)
def test_bad_sheet_is_one_line_error_naming_the_file(tmp_path, content, problem):
    _, key_path = make_kit(tmp_path, "wgan", n_real=2, n_synthetic=2)
    key = read_key(key_path)
    sheet = tmp_path / "reader_wgan.csv"
    sheet.write_text(content.format(id=key["image_id"].iloc[0]))
    with pytest.raises(InputError, match=problem) as error:
        read_answers(sheet, key)
    assert "reader_wgan.csv" in str(error.value) and "\n" not in str(error.value)


def test_study_b_kits_from_manifests(tmp_path):
    from kneesynth.checks.reader_study import make_study_b_kits

    rng = np.random.default_rng(0)
    real_paths = []
    for i in range(6):
        real_paths.append(str(tmp_path / f"real{i}.png"))
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(real_paths[-1])
    split = ["train", "train", "test", "test", "test", "test"]
    pd.DataFrame(
        {
            "image": real_paths,
            "participant": "p",
            "side": 1,
            "visit": "V00",
            "kl_grade": 0,
            "split": split,
        }
    ).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    synthetic_paths = []
    for i in range(5):
        synthetic_paths.append(str(tmp_path / f"syn{i}.png"))
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(synthetic_paths[-1])
    pd.DataFrame({"image": synthetic_paths, "kl_grade": 0, "generator": "wgan"}).to_csv(
        tmp_path / "wgan.tsv", sep="\t", index=False
    )
    settings = {"n_real": 3, "n_synthetic": 3, "held_out_split": "test", "seed": 0}
    kit, key = tmp_path / "kit" / "wgan", tmp_path / "keys" / "wgan.csv"
    make_study_b_kits(
        tmp_path / "manifest.tsv",
        {"wgan": tmp_path / "wgan.tsv"},
        {"wgan": kit},
        {"wgan": key},
        settings,
    )
    table = read_key(key)
    assert (table["truth"] == "real").sum() == 3
    assert set(table.loc[table.truth == "real", "source"]) <= set(real_paths[2:])  # held-out only
    assert {Image.open(p).size for p in (kit / "images").glob("*.png")} == {(16, 16)}  # one size
    with pytest.raises(InputError, match="needs 5 real test images"):
        make_study_b_kits(
            tmp_path / "manifest.tsv",
            {"wgan": tmp_path / "wgan.tsv"},
            {"wgan": kit},
            {"wgan": key},
            dict(settings, n_real=5),
        )
