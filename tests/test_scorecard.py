"""The scorecard judges directions, significance and settings from the final tables."""

from __future__ import annotations

import pandas as pd
import yaml

from kneesynth.scorecard import PAPER_TABLE1, SETTINGS, build_scorecard


def _write(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def _tables(tmp_path, ctm_mae_contour=0.019, bone_hurts_ctm=False, ddpm_p=0.001):
    table1 = []
    for (model, condition, metric), (mean, sd) in PAPER_TABLE1.items():
        value = mean
        if (model, condition, metric) == ("ctm", "contour", "mae"):
            value = ctm_mae_contour
        if bone_hurts_ctm and (model, condition, metric) == ("ctm", "contour_bone", "mae"):
            value = 0.06
        table1.append(
            {
                "study": "A",
                "model": model,
                "condition": condition,
                "metric": metric,
                "mean": value,
                "std": sd,
                "value": value,
            }
        )
    paired = [
        {
            "study": "A",
            "comparison": "ctm_vs_unet",
            "test": "wilcoxon_signed_rank",
            "statistic": 1,
            "p_value": 0.01,
            "p_adjusted": 0.02,
            "n": 20,
            "metric": "mae",
            "condition": "contour",
        },
        {
            "study": "B",
            "comparison": "real+ddpm_cond vs real",
            "test": "bootstrap_accuracy_difference",
            "statistic": 0.02,
            "p_value": ddpm_p,
            "p_adjusted": ddpm_p,
            "n": 100,
            "task": "kl_binary",
        },
        {
            "study": "B",
            "comparison": "real+wgan vs real",
            "test": "bootstrap_accuracy_difference",
            "statistic": 0.01,
            "p_value": 0.2,
            "p_adjusted": 0.3,
            "n": 100,
            "task": "kl_binary",
        },
    ]
    classification = [
        {"study": "B", "model": arm, "condition": "kl_binary", "metric": "accuracy", "value": value}
        for arm, value in (("real", 0.81), ("real+ddpm_cond", 0.83), ("real+wgan", 0.815))
    ]
    fid = [
        {"study": "B", "model": g, "condition": "overall", "metric": "fid", "value": v}
        for g, v in (("ddpm_uncond", 10.0), ("ddpm_cond", 30.0), ("wgan", 20.0))
    ]
    return {
        "table1_drr": _write(tmp_path / "table1.tsv", table1),
        "paired_tests": _write(tmp_path / "paired.tsv", paired),
        "kl_classification": _write(tmp_path / "kl.tsv", classification),
        "fid": _write(tmp_path / "fid.tsv", fid),
        "utility": _write(
            tmp_path / "utility.tsv",
            [
                {
                    "study": "A",
                    "model": "bone_segmenter_unet",
                    "condition": "ctm",
                    "metric": "dice_ratio",
                    "value": 0.85,
                }
            ],
        ),
    }


def _claim(card, text):
    rows = card[card["claim"] == text]
    assert len(rows) == 1, (text, card["claim"].tolist())
    return rows.iloc[0]


def test_findings_follow_the_tables(tmp_path):
    paper = {"projection": {"n_views": 60}, "study_a": {"sigma_max": 128.0}}
    card = build_scorecard(_tables(tmp_path), {"projection": {"n_views": 12}}, paper)
    assert _claim(card, "Table I: CTM MAE, contour")["reproduced"] == "yes"
    assert _claim(card, "CTM beats U-Net in MAE (contour)")["our_value"].startswith(
        "yes (Holm p 0.02"
    )
    assert _claim(card, "adding bone to the condition helps CTM (MAE)")["reproduced"] == "yes"
    assert _claim(card, "FID lower for ddpm_uncond than for the WGAN")["reproduced"] == "yes"
    assert _claim(card, "FID lower for ddpm_cond than for the WGAN")["reproduced"] == "no"
    assert (
        _claim(card, "real+ddpm_cond raises accuracy significantly (kl_binary)")["reproduced"]
        == "yes"
    )
    assert _claim(card, "the WGAN gain is not significant (kl_binary)")["reproduced"] == "yes"
    dice = _claim(
        card,
        "a segmenter trained on synthetic images reaches 80-90 % of the Dice of "
        "one trained on real images",
    )
    assert dice["reproduced"] == "yes"
    # absent evidence is said so, not guessed
    assert (
        _claim(card, "readers spot wgan images as synthetic (detection rate)")["reproduced"]
        == "not run"
    )
    views = _claim(card, "DRR views per volume (360 degrees in 6-degree steps)")
    assert (views["our_value"], views["reproduced"]) == ("12", "yes")
    assert _claim(card, "PC sampler steps N")["reproduced"] == "no"  # not in this paper config


def test_findings_that_do_not_hold_are_marked_no(tmp_path):
    tables = _tables(tmp_path, ctm_mae_contour=0.05, bone_hurts_ctm=True, ddpm_p=0.04)
    card = build_scorecard(tables, {}, {})
    assert _claim(card, "Table I: CTM MAE, contour")["reproduced"] == "no"
    assert _claim(card, "adding bone to the condition helps CTM (MAE)")["reproduced"] == "no"
    # a gain with p = 0.04 is not the abstract's p < 0.01
    assert (
        _claim(card, "real+ddpm_cond raises accuracy significantly (kl_binary)")["reproduced"]
        == "no"
    )


def test_paper_config_holds_every_paper_setting():
    with open("config/paper.yaml") as handle:
        paper = yaml.safe_load(handle)
    card = build_scorecard({}, paper, paper)
    settings = card[card["kind"] == "setting"]
    assert len(settings) >= len(SETTINGS)
    wrong = settings[settings["reproduced"] == "no"]
    assert wrong.empty, wrong[["claim", "evidence"]].to_string()


def test_html_scorecard_holds_every_claim(tmp_path):
    from kneesynth.scorecard import write_scorecard_html

    card = build_scorecard(_tables(tmp_path), {}, {})
    write_scorecard_html(tmp_path / "scorecard.html", card)
    page = (tmp_path / "scorecard.html").read_text()
    assert "<th" in page and "reproduced" in page
    for claim in card["claim"]:
        assert claim.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;") in page
