"""The scorecard's rules: significance on the right unit, CIs for values, inconclusive when the
data cannot decide, settings apart from claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from kneesynth.report.scorecard import (
    SETTINGS,
    _lookup,
    build_scorecard,
    headline,
    headline_text,
    write_scorecard_html,
)
from kneesynth.report.verdicts import ALPHA, VERDICTS, _same, value_in_interval
from kneesynth.stats import Statistic
from kneesynth.study_a.settings import PAPER_TABLE1


def _write(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def table1_rows(ours: dict[tuple[str, str, str], tuple[float, float, float]]):
    """Table I rows; ``ours`` overrides (mean, ci_low, ci_high) per cell (default: the paper's
    mean with a CI of +-1 % of it)."""
    rows = []
    for (model, condition, metric), (mean, _) in PAPER_TABLE1.items():
        value, low, high = ours.get((model, condition, metric), (mean, 0.99 * mean, 1.01 * mean))
        rows.append(
            {
                "study": "A",
                "model": model,
                "condition": condition,
                "metric": metric,
                "mean": value,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows


def paired_a(comparison, metric, condition, difference, p, ci, n_units=5):
    return {
        "study": "A",
        "comparison": comparison,
        "test": "t_over_volumes",
        "p_value": p,
        "p_adjusted": p,
        "n": 60 * n_units,
        "unit": "volume",
        "n_units": n_units,
        "metric": metric,
        "condition": condition,
        "difference": difference,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "note": "" if np.isfinite(p) else "too few units: 1 (a test over units needs at least 2)",
    }


def paired_b(arm, metric, difference, p, ci, task="kl_binary"):
    return {
        "study": "B",
        "comparison": f"{arm} vs real",
        "test": "t_over_seeds_and_participants",
        "p_value": p,
        "p_adjusted": p,
        "n": 1656,
        "unit": "participant and seed",
        "n_units": 276,
        "task": task,
        "metric": metric,
        "difference": difference,
        "ci_low": ci[0],
        "ci_high": ci[1],
    }


def tables(tmp_path, *, table1=None, paired=None, classification=None, utility=None, **extra):
    classification = classification or [
        {"study": "B", "model": arm, "condition": "kl_binary", "metric": "accuracy", "value": v,
         "ci_low": v - 0.005, "ci_high": v + 0.005}
        for arm, v in (("real", 0.813), ("real+ddpm_cond", 0.83), ("real+wgan", 0.815))
    ]  # fmt: skip
    paths = {
        "table1_drr": _write(tmp_path / "table1.tsv", table1 or table1_rows({})),
        "paired_tests": _write(tmp_path / "paired.tsv", paired or [paired_b("real+wgan", "accuracy", 0, 1, (0, 0))]),
        "kl_classification": _write(tmp_path / "kl.tsv", classification),
    }  # fmt: skip
    if utility is not None:
        paths["utility"] = _write(tmp_path / "utility.tsv", utility)
    for name, rows in extra.items():
        paths[name] = _write(tmp_path / f"{name}.tsv", rows)
    return paths


def claim(card, text):
    rows = card[card["claim"] == text]
    assert len(rows) == 1, (text, card["claim"].tolist())
    return rows.iloc[0]


# ------------------------------------------------------------------------------ findings
def test_a_significant_effect_in_the_papers_direction_is_yes(tmp_path):
    paired = [paired_a("ctm_vs_unet", "mae", "contour", -0.002, 0.01, (-0.003, -0.001))]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    row = claim(card, "CTM beats U-Net in MAE (contour)")
    assert row["reproduced"] == "yes" and "Holm p 0.01" in row["our_value"]


def test_the_right_direction_without_significance_is_inconclusive(tmp_path):
    paired = [paired_a("ctm_vs_unet", "mae", "contour", -0.002, 0.2, (-0.005, 0.001))]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, "CTM beats U-Net in MAE (contour)")["reproduced"] == "inconclusive"


def test_the_opposite_significant_or_a_ci_excluding_the_papers_effect_is_no(tmp_path):
    paired = [
        paired_a("ctm_vs_unet", "mae", "contour", 0.002, 0.01, (0.001, 0.003)),
        # not significant, but the CI rules out the paper's -0.0202 (CTM - CSM MAE)
        paired_a("ctm_vs_csm", "mae", "contour", -0.001, 0.3, (-0.004, 0.002)),
    ]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, "CTM beats U-Net in MAE (contour)")["reproduced"] == "no"
    row = claim(card, "CTM beats CSM in MAE (contour)")
    assert row["reproduced"] == "no" and "excludes the paper's -0.0202" in row["why"]


def test_one_test_volume_makes_study_a_findings_inconclusive(tmp_path):
    """The demo: no p-value (one test volume), so no study A finding can be yes or no."""
    paired = [
        paired_a(c, m, cond, -0.01, float("nan"), (float("nan"), float("nan")), n_units=1)
        for cond in ("contour", "contour_bone")
        for c in ("ctm_vs_unet", "ctm_vs_csm", "unet_vs_csm")
        for m in ("mae", "psnr")
    ] + [
        paired_a(f"{model}:contour_vs_contour_bone", m, "contour_vs_contour_bone", 0.01,
                 float("nan"), (float("nan"), float("nan")), n_units=1)
        for model in ("ctm", "unet", "csm")
        for m in ("mae", "psnr")
    ]  # fmt: skip
    nan = (float("nan"),) * 2
    table1 = table1_rows({key: (mean, *nan) for key, (mean, _) in PAPER_TABLE1.items()})
    card = build_scorecard(tables(tmp_path, paired=paired, table1=table1), {})
    study_a = card[card["study"] == "A"]
    claims = study_a[study_a["kind"] != "setting"]
    assert len(claims) == 12 + 12 + 6
    assert (claims["reproduced"] == "inconclusive").all()
    assert claims["why"].str.contains("too few units|no CI", regex=True).all()


def test_csm_is_worst_needs_both_comparisons(tmp_path):
    paired = [
        paired_a("ctm_vs_csm", "mae", "contour", -0.02, 0.001, (-0.03, -0.01)),
        paired_a("unet_vs_csm", "mae", "contour", -0.02, 0.2, (-0.04, 0.001)),
    ]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, "CSM is worst in MAE (contour)")["reproduced"] == "inconclusive"
    paired[1] = paired_a("unet_vs_csm", "mae", "contour", -0.02, 0.001, (-0.03, -0.01))
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, "CSM is worst in MAE (contour)")["reproduced"] == "yes"


def test_bone_effects_use_the_contour_minus_bone_difference(tmp_path):
    paired = [
        # CTM MAE: contour - contour_bone > 0, i.e. bone helps
        paired_a("ctm:contour_vs_contour_bone", "mae", "contour_vs_contour_bone", 0.004, 0.01,
                 (0.002, 0.006)),
        # CSM PSNR: contour - contour_bone > 0, i.e. bone hurts CSM (the paper's claim)
        paired_a("csm:contour_vs_contour_bone", "psnr", "contour_vs_contour_bone", 1.5, 0.01,
                 (0.5, 2.5)),
    ]  # fmt: skip
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, "adding bone to the condition helps CTM (MAE)")["reproduced"] == "yes"
    assert claim(card, "adding bone to the condition hurts CSM (PSNR)")["reproduced"] == "yes"


def test_ddpm_gain_needs_significance_on_seeds_and_participants(tmp_path):
    paired = [paired_b("real+ddpm_cond", "accuracy", 0.017, 0.004, (0.006, 0.028))]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    claim_text = "real+ddpm_cond raises accuracy significantly (kl_binary)"
    assert claim(card, claim_text)["reproduced"] == "yes"
    paired = [paired_b("real+ddpm_cond", "accuracy", 0.017, 0.08, (-0.002, 0.036))]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, claim_text)["reproduced"] == "inconclusive"
    paired = [paired_b("real+ddpm_cond", "accuracy", 0.017, float("nan"), (float("nan"),) * 2)]
    card = build_scorecard(tables(tmp_path, paired=paired), {})
    assert claim(card, claim_text)["reproduced"] == "inconclusive"


def test_an_underpowered_wgan_result_does_not_reproduce_not_significant(tmp_path):
    """p >= 0.05 alone is not the paper's finding: the CI must also rule out the DDPM's +1.7."""
    text = "the WGAN gain is not significant (kl_binary)"
    wide = [paired_b("real+wgan", "accuracy", 0.002, 0.6, (-0.03, 0.034))]
    assert claim(build_scorecard(tables(tmp_path, paired=wide), {}), text)["reproduced"] == (
        "inconclusive"
    )
    narrow = [paired_b("real+wgan", "accuracy", 0.002, 0.6, (-0.006, 0.01))]
    assert claim(build_scorecard(tables(tmp_path, paired=narrow), {}), text)["reproduced"] == "yes"
    significant = [paired_b("real+wgan", "accuracy", 0.03, 0.001, (0.02, 0.04))]
    assert claim(build_scorecard(tables(tmp_path, paired=significant), {}), text)["reproduced"] == (
        "no"
    )


def test_precision_stable_is_an_equivalence_judgement(tmp_path):
    text = "precision stable with real+ddpm_cond (kl_binary)"
    inside = [paired_b("real+ddpm_cond", "macro_precision", 0.01, 0.5, (-0.02, 0.03))]
    crosses = [paired_b("real+ddpm_cond", "macro_precision", 0.01, 0.5, (-0.07, 0.08))]
    outside = [paired_b("real+ddpm_cond", "macro_precision", -0.1, 0.001, (-0.14, -0.06))]
    for rows, verdict in ((inside, "yes"), (crosses, "inconclusive"), (outside, "no")):
        card = build_scorecard(tables(tmp_path, paired=rows), {})
        assert claim(card, text)["reproduced"] == verdict


# ------------------------------------------------------------------------------ values
def test_a_table_i_value_is_yes_when_the_papers_mean_is_in_our_ci(tmp_path):
    card = build_scorecard(tables(tmp_path), {})
    assert claim(card, "Table I: CTM MAE, contour")["reproduced"] == "yes"
    far = table1_rows({("ctm", "contour", "mae"): (0.05, 0.045, 0.055)})
    card = build_scorecard(tables(tmp_path, table1=far), {})
    assert claim(card, "Table I: CTM MAE, contour")["reproduced"] == "no"


def test_the_papers_unet_values_do_not_pass_as_ctms(tmp_path):
    """Our CTM rows hold the paper's U-Net numbers: 300 test images (55 volumes, the paper's
    image split), per-image SD as in Table I; each CTM cell must be no or inconclusive."""
    rng = np.random.default_rng(0)
    volumes = np.repeat(np.arange(55), 6)[:300]
    ours = {}
    for condition in ("contour", "contour_bone"):
        for metric in ("mae", "psnr"):
            mean, sd = PAPER_TABLE1[("unet", condition, metric)]
            values = mean + rng.normal(0, sd * 0.6, 55)[volumes] + rng.normal(0, sd * 0.8, 300)
            estimate = Statistic.mean(values).estimate(volumes)
            ours[("ctm", condition, metric)] = (estimate.value, *estimate.interval())
    card = build_scorecard(tables(tmp_path, table1=table1_rows(ours)), {})
    for condition in ("contour", "contour+bone"):
        for metric in ("MAE", "PSNR"):
            row = claim(card, f"Table I: CTM {metric}, {condition}")
            assert row["reproduced"] in ("no", "inconclusive"), row.to_dict()
    # the landed rule (within the paper's mean +- 1 SD) would have passed every one of them
    for (model, condition, metric), (value, _, _) in ours.items():
        paper_mean, paper_sd = PAPER_TABLE1[(model, condition, metric)]
        assert abs(value - paper_mean) <= paper_sd


def test_a_ci_that_holds_a_rival_value_is_inconclusive():
    verdict = value_in_interval(0.0193, 0.02, (0.015, 0.025), {"U-Net 0.0209": 0.0209})
    assert verdict.reproduced == "inconclusive" and "U-Net 0.0209" in verdict.why


def test_accuracy_value_must_tell_real_from_augmented(tmp_path):
    wide = [
        {"study": "B", "model": "real", "condition": "kl_binary", "metric": "accuracy",
         "value": 0.82, "ci_low": 0.79, "ci_high": 0.85}
    ]  # fmt: skip
    card = build_scorecard(tables(tmp_path, classification=wide), {})
    assert claim(card, "accuracy trained on real images (kl_binary)")["reproduced"] == (
        "inconclusive"
    )


@pytest.mark.parametrize(
    ("ratio", "low", "high", "verdict"),
    [
        (0.85, 0.80, 0.90, "yes"),
        (0.85, 0.70, 1.02, "inconclusive"),  # the CI holds 1: no evidence of a gap at all
        (0.99, 0.97, 1.01, "no"),  # the CI misses 0.80-0.90
        (0.95, 0.85, 1.05, "inconclusive"),
        (0.85, float("nan"), float("nan"), "inconclusive"),  # one test volume
    ],
)
def test_dice_ratio_range_rule(tmp_path, ratio, low, high, verdict):
    utility = [
        {"study": "A", "model": "bone_segmenter_unet", "metric": m, "value": v}
        for m, v in (("dice_ratio", ratio), ("dice_ratio_ci_low", low), ("dice_ratio_ci_high", high))
    ]  # fmt: skip
    card = build_scorecard(tables(tmp_path, utility=utility), {})
    text = (
        "a segmenter trained on synthetic images reaches 80-90 % of the Dice of "
        "one trained on real images"
    )
    assert claim(card, text)["reproduced"] == verdict


def test_copied_utility_pairs_make_the_dice_claim_inconclusive(tmp_path):
    utility = [
        {"study": "A", "model": "bone_segmenter_unet", "metric": m, "value": v}
        for m, v in (("dice_ratio", 0.85), ("dice_ratio_ci_low", 0.82), ("dice_ratio_ci_high", 0.88),
                     ("n_generated_pairs", 60), ("n_generated_flagged_as_copies", 30))
    ]  # fmt: skip
    card = build_scorecard(tables(tmp_path, utility=utility), {})
    row = card[card["claim"].str.startswith("a segmenter trained on synthetic")].iloc[0]
    assert row["reproduced"] == "inconclusive" and "look like copies" in row["why"]


# ------------------------------------------------------------------------------ checks
def fid_rows(values):
    """fid.tsv rows: (generator, metric) -> (value, se)."""
    rows = []
    for (generator, metric), (value, se) in values.items():
        rows.append({"study": "B", "model": generator, "condition": "overall", "metric": metric,
                     "value": value})  # fmt: skip
        rows.append({"study": "B", "model": generator, "condition": "overall",
                     "metric": f"{metric}_se", "value": se})  # fmt: skip
    return rows


def test_generator_order_needs_fid_and_kid_to_agree_and_passing_controls(tmp_path):
    values = {
        ("ddpm_uncond", "fid"): (2.0, 0.3), ("ddpm_uncond", "kid"): (0.01, 0.002),
        ("ddpm_cond", "fid"): (2.0, 0.3), ("ddpm_cond", "kid"): (0.03, 0.01),
        ("wgan", "fid"): (5.0, 0.3), ("wgan", "kid"): (0.05, 0.003),
    }  # fmt: skip
    card = build_scorecard(tables(tmp_path, fid=fid_rows(values)), {})
    assert claim(card, "FID lower for ddpm_uncond than for the WGAN")["reproduced"] == "yes"
    # FID separated, KID not: the two measures disagree, so no verdict
    row = claim(card, "FID lower for ddpm_cond than for the WGAN")
    assert row["reproduced"] == "inconclusive" and "KID" in row["our_value"]
    # the why names the measure behind each part of the disagreement
    assert "yes: FID: " in row["why"] and "inconclusive: KID: " in row["why"], row["why"]
    controls = [{"study": "B", "check": "kid", "control": "control_noise", "passes": "no"}]
    card = build_scorecard(tables(tmp_path, fid=fid_rows(values), controls=controls), {})
    row = claim(card, "FID lower for ddpm_uncond than for the WGAN")
    assert row["reproduced"] == "inconclusive" and "check failed its controls" in row["why"]


def memorization_rows(flagged):
    return [
        {"study": "B", "model": g, "condition": "all", "metric": m, "value": v}
        for g, k in flagged.items()
        for m, v in (("n_flagged", k), ("n_synthetic", 44))
    ]


def test_memorisation_claims_use_fishers_test_and_the_probe(tmp_path):
    flagged = {"ddpm_uncond": 20, "ddpm_cond": 1, "wgan": 0, "memorization_probe": 18,
               "memorization_probe_full": 0}  # fmt: skip
    card = build_scorecard(tables(tmp_path, memorization=memorization_rows(flagged)), {})
    text = "the diffusion model ({}) memorises more training images than the GAN"
    assert claim(card, text.format("ddpm_uncond"))["reproduced"] == "yes"
    assert claim(card, text.format("ddpm_cond"))["reproduced"] == "inconclusive"
    probe = card[card["claim"].str.startswith("a diffusion model trained on a small data set")]
    assert probe["reproduced"].tolist() == ["yes"]
    # a check that cannot flag its copies cannot support the claim
    controls = [{"study": "B", "check": "memorization", "control": "control_copy", "passes": "no"}]
    card = build_scorecard(
        tables(tmp_path, memorization=memorization_rows(flagged), controls=controls), {}
    )
    probe = card[card["claim"].str.startswith("a diffusion model trained on a small data set")]
    assert probe["reproduced"].tolist() == ["inconclusive"]
    assert claim(card, text.format("ddpm_uncond"))["why"] == "check failed its controls"


def test_absent_evidence_is_not_run(tmp_path):
    card = build_scorecard(tables(tmp_path), {})
    row = claim(card, "readers spot wgan images as synthetic (detection rate)")
    assert row["reproduced"] == "not run"
    assert set(card["reproduced"]) <= set(VERDICTS)


# ------------------------------------------------------------------------------ settings
def test_a_setting_is_yes_only_when_this_run_used_it(tmp_path):
    card = build_scorecard(tables(tmp_path), {"projection": {"n_views": 12, "detector_rows": 256}})
    views = claim(card, "DRR views per volume (360 degrees in 6-degree steps)")
    assert (
        views["reproduced"] == "setting differs" and "12" in views["why"] and "60" in views["why"]
    )
    assert claim(card, "detector rows")["reproduced"] == "yes"
    assert claim(card, "SICAS leg CT volumes")["reproduced"] == "needs the real data"
    # the demo's study_a.steps replaces the epochs it would otherwise train for
    card = build_scorecard({}, {"study_a": {"epochs": 300, "steps": 120}})
    epochs = claim(card, "training epochs (at most)")
    assert epochs["reproduced"] == "setting differs" and "steps" in epochs["why"]
    card = build_scorecard({}, {"study_a": {"epochs": 300, "steps": None}})
    assert claim(card, "training epochs (at most)")["reproduced"] == "yes"


def test_the_paper_config_uses_every_paper_setting():
    with open("config/paper.yaml") as handle:
        paper = yaml.safe_load(handle)
    card = build_scorecard({}, paper)
    settings = card[card["kind"] == "setting"]
    assert len(settings) >= len(SETTINGS)
    wrong = settings[settings["reproduced"].isin(["setting differs", "no"])]
    assert wrong.empty, wrong[["claim", "why"]].to_string()


def test_the_demo_config_claims_no_setting_it_did_not_run():
    with open("config/config.yaml") as handle:
        demo = yaml.safe_load(handle)
    card = build_scorecard({}, demo)
    for item in SETTINGS:
        row = claim(card, item.claim)
        ours = _lookup(demo, item.key)
        if row["reproduced"] == "yes":
            assert _same(ours, item.paper_value), item


def test_headline_counts_claims_apart_from_settings(tmp_path):
    card = build_scorecard(tables(tmp_path), {"projection": {"n_views": 12}})
    counts = headline(card)
    n_settings = int((card["kind"] == "setting").sum())
    assert sum(counts["settings"].values()) == n_settings
    assert sum(counts["claims"].values()) == len(card) - n_settings
    text = headline_text(card)
    assert text.startswith(f"{len(card) - n_settings} claims:")


def test_html_scorecard_holds_every_claim_and_the_headline(tmp_path):
    card = build_scorecard(tables(tmp_path), {})
    write_scorecard_html(tmp_path / "scorecard.html", card)
    page = (tmp_path / "scorecard.html").read_text()
    assert "<th" in page and "reproduced" in page
    assert headline_text(card) in page
    for text in card["claim"]:
        escaped = text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
        assert escaped.replace("'", "&#39;") in page


def test_the_scorecard_judges_at_the_tests_alpha():
    from kneesynth import stats

    assert ALPHA == stats.ALPHA
