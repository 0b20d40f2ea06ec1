"""The reproduction scorecard: every claim and number of the papers beside ours.

One row per claim (``results/tables/scorecard.tsv``): ``study``, ``kind``, ``claim``,
``paper_value``, ``our_value``, ``reproduced`` and ``evidence``. What "reproduced" means depends
on the kind of row:

- ``finding``: a direction (CTM beats U-Net, FID lower for DDPM, ...) and, where the paper
  states one, its significance. ``yes`` when our direction (and significance) agree.
- ``value``: a number the paper reports (a Table I cell, an accuracy, a rate). ``yes`` when ours
  lies within the paper's spread (mean +- 1 sd where the paper gives one, else +- a stated
  tolerance); the demo runs tiny models on phantoms, so ``no`` there is expected and honest.
- ``setting``: a setting of the paper (views, detector, sigma_max ...). ``yes`` when
  ``config/paper.yaml`` holds the paper's value; ``our_value`` is the value of this run.

``not run`` marks a claim whose evidence is absent (for example no filled reader sheets).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kneesynth.io import atomic_path, read_tsv
from kneesynth.study_a_settings import PAPER_TABLE1

SIGNIFICANCE = 0.05
NOT_RUN = "not run"

MODEL_LABELS = {"unet": "U-Net", "csm": "CSM", "ctm": "CTM"}
CONDITION_LABELS = {"contour": "contour", "contour_bone": "contour+bone"}
DDPM_ARMS = ("real+ddpm_uncond", "real+ddpm_cond")


@dataclass(frozen=True)
class Setting:
    """A paper setting: where it lives in the config and the paper's value."""

    study: str
    claim: str
    key: str  # dotted config path
    paper_value: Any


SETTINGS = (
    Setting("A", "DRR views per volume (360 degrees in 6-degree steps)", "projection.n_views", 60),
    Setting("A", "detector rows", "projection.detector_rows", 256),
    Setting("A", "detector columns", "projection.detector_cols", 256),
    Setting("A", "contour threshold on the DRR", "segmentation.contour_threshold", 0.1),
    Setting("A", "train:val:test split", "splits.fractions", [9, 1, 1]),
    Setting("A", "score network image size", "study_a.image_size", 256),
    Setting(
        "A",
        "NCSN++ channels per level (6 levels, 256..8)",
        "study_a.network.block_out_channels",
        [64, 128, 128, 128, 128, 256],
    ),
    Setting("A", "VE SDE sigma_min", "study_a.sigma_min", 0.01),
    Setting("A", "VE SDE sigma_max", "study_a.sigma_max", 128),
    Setting("A", "CSM SDEdit start time t0", "study_a.t0", 0.4),
    Setting("A", "PC sampler steps N", "study_a.sampler.pc.steps", 500),
    Setting("A", "Langevin corrector snr", "study_a.sampler.pc.snr", 0.4),
    Setting(
        "A",
        "corrector steps per predictor step (1000 evaluations per image)",
        "study_a.sampler.pc.corrector_steps",
        1,
    ),
    Setting("A", "smallest SDE time eps (score_sde)", "study_a.sampler.eps", 1e-5),
    Setting("A", "sampler (reverse diffusion + Langevin)", "study_a.sampler.name", "pc"),
    Setting("A", "batch size", "study_a.batch_size", 16),
    Setting("A", "Adam learning rate", "study_a.lr", 2e-4),
    Setting("A", "training epochs (at most)", "study_a.epochs", 300),
    Setting("B", "OAI image size (Chen et al. crops)", "study_b.classifiers.image_size", 224),
    Setting(
        "B", "OAI train:val:test images (Chen et al.)", "splits.oai_fractions", [5778, 826, 1656]
    ),
    Setting(
        "B",
        "KL grade counts 0..4 (Chen et al.)",
        "phantom.oai.kl_grade_weights",
        [3253, 1495, 2175, 1086, 251],
    ),
)

# Numbers of the papers that describe the data rather than a setting or a result.
DATA_FACTS = (
    ("A", "SICAS leg CT volumes", 55),
    ("A", "DRRs per segmentation type (55 x 60)", 3300),
    ("B", "OAI knee radiographs with KL grades", 8259),
    ("B", "images in the Chen et al. data set", 8260),
    ("B", "blinded readers (2 radiologists + 1 orthopaedic surgeon)", 3),
)


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_RUN
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}g}"
    return str(value)


def _yes(flag: bool | None) -> str:
    return NOT_RUN if flag is None else ("yes" if flag else "no")


def _row(study, kind, claim, paper_value, our_value, reproduced, evidence) -> dict[str, str]:
    return {
        "study": study,
        "kind": kind,
        "claim": claim,
        "paper_value": _fmt(paper_value),
        "our_value": _fmt(our_value),
        "reproduced": reproduced if isinstance(reproduced, str) else _yes(reproduced),
        "evidence": evidence,
    }


def _read_optional(path: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    if path is None or not os.path.exists(path):
        return None
    return read_tsv(path)


def _value(table: pd.DataFrame | None, column: str = "value", **match: Any) -> float:
    """The single ``column`` value of the rows matching ``match`` (NaN when absent)."""
    if table is None:
        return float("nan")
    selected = table
    for key, wanted in match.items():
        if key not in selected.columns:
            return float("nan")
        selected = selected[selected[key].astype(str) == str(wanted)]
    if selected.empty:
        return float("nan")
    return float(pd.to_numeric(selected[column], errors="coerce").iloc[0])


# ----------------------------------------------------------------------------------- study A
def study_a_rows(table1: pd.DataFrame | None, paired: pd.DataFrame | None) -> list[dict[str, str]]:
    """Table I cells, and the orderings Mei et al. report (CTM best, CSM worst, bone effects)."""
    rows = []
    mean = {}
    for (model, condition, metric), (paper_mean, paper_sd) in PAPER_TABLE1.items():
        ours = _value(table1, "mean", model=model, condition=condition, metric=metric)
        ours_sd = _value(table1, "std", model=model, condition=condition, metric=metric)
        mean[(model, condition, metric)] = ours
        within = None if math.isnan(ours) else abs(ours - paper_mean) <= paper_sd
        rows.append(
            _row(
                "A",
                "value",
                f"Table I: {MODEL_LABELS[model]} {metric.upper()}, {CONDITION_LABELS[condition]}",
                f"{paper_mean} +- {paper_sd}",
                NOT_RUN if math.isnan(ours) else f"{ours:.4g} +- {ours_sd:.2g}",
                within,
                "table1_drr.tsv; yes = within the paper's mean +- 1 sd",
            )
        )

    def better(first, second, condition_first, condition_second, metric) -> bool | None:
        a, b = mean[(first, condition_first, metric)], mean[(second, condition_second, metric)]
        if math.isnan(a) or math.isnan(b):
            return None
        return a < b if metric == "mae" else a > b

    def p_of(comparison: str, metric: str, condition: str | None = None) -> float:
        match = {"comparison": comparison, "metric": metric}
        if condition is not None:
            match["condition"] = condition
        return _value(paired, "p_adjusted", **match)

    for condition in ("contour", "contour_bone"):
        for first, second in (("ctm", "unet"), ("ctm", "csm")):
            for metric in ("mae", "psnr"):
                direction = better(first, second, condition, condition, metric)
                p = p_of(f"{first}_vs_{second}", metric, condition)
                rows.append(
                    _row(
                        "A",
                        "finding",
                        f"{MODEL_LABELS[first]} beats {MODEL_LABELS[second]} in {metric.upper()} "
                        f"({CONDITION_LABELS[condition]})",
                        "yes",
                        f"{_yes(direction)} (Holm p {_fmt(p, 3)})",
                        direction,
                        "table1_drr.tsv means; paired_tests.tsv Wilcoxon (the paper gives no test)",
                    )
                )
        for metric in ("mae", "psnr"):
            flags = [
                better(other, "csm", condition, condition, metric) for other in ("ctm", "unet")
            ]
            worst = None if None in flags else all(flags)
            rows.append(
                _row(
                    "A",
                    "finding",
                    f"CSM is worst in {metric.upper()} ({CONDITION_LABELS[condition]})",
                    "yes",
                    _yes(worst),
                    worst,
                    "table1_drr.tsv means",
                )
            )
    for model, helps in (("ctm", True), ("unet", True), ("csm", False)):
        for metric in ("mae", "psnr"):
            improved = better(model, model, "contour_bone", "contour", metric)
            agrees = None if improved is None else improved == helps
            p = _value(
                paired, "p_adjusted", comparison=f"{model}:contour_vs_contour_bone", metric=metric
            )
            rows.append(
                _row(
                    "A",
                    "finding",
                    f"adding bone to the condition {'helps' if helps else 'hurts'} "
                    f"{MODEL_LABELS[model]} ({metric.upper()})",
                    "yes",
                    f"{'helps' if improved else 'hurts' if improved is not None else NOT_RUN}"
                    f" (Holm p {_fmt(p, 3)})",
                    agrees,
                    "table1_drr.tsv means; paired_tests.tsv Wilcoxon contour vs contour+bone",
                )
            )
    return rows


# ----------------------------------------------------------------------------------- study B
def study_b_rows(
    fid: pd.DataFrame | None,
    classification: pd.DataFrame | None,
    paired: pd.DataFrame | None,
    realism: pd.DataFrame | None,
    reader: pd.DataFrame | None,
) -> list[dict[str, str]]:
    """FID direction, detection rates, accuracy gain and its significance, precision/recall."""
    rows = []
    wgan_fid = _value(fid, model="wgan", condition="overall", metric="fid")
    for generator in ("ddpm_uncond", "ddpm_cond"):
        ours = _value(fid, model=generator, condition="overall", metric="fid")
        lower = None if math.isnan(ours) or math.isnan(wgan_fid) else ours < wgan_fid
        rows.append(
            _row(
                "B",
                "finding",
                f"FID lower for {generator} than for the WGAN",
                "lower",
                f"{_fmt(ours)} vs {_fmt(wgan_fid)}",
                lower,
                "fid.tsv (features of our own classifier)",
            )
        )
    for generator, paper_rate in (("ddpm_uncond", 0.167), ("wgan", 0.625)):
        ours = _value(reader, model=generator, condition="pooled", metric="detection_rate")
        rows.append(
            _row(
                "B",
                "value",
                f"readers spot {generator} images as synthetic (detection rate)",
                paper_rate,
                ours,
                None if math.isnan(ours) else abs(ours - paper_rate) <= 0.15,
                "reader_study.tsv (needs filled sheets); yes = within 0.15",
            )
        )
    auc = {
        g: _value(realism, model=g, metric="c2st_auc") for g in ("ddpm_uncond", "ddpm_cond", "wgan")
    }
    for generator in ("ddpm_uncond", "ddpm_cond"):
        a, b = auc[generator], auc["wgan"]
        harder = None if math.isnan(a) or math.isnan(b) else a < b
        rows.append(
            _row(
                "B",
                "finding",
                f"{generator} images are harder to tell from real than WGAN images "
                "(automatic stand-in for the reader study)",
                "16.7 % vs 62.5 % detected",
                f"AUC {_fmt(a, 3)} vs {_fmt(b, 3)}",
                harder,
                "realism.tsv classifier two-sample test",
            )
        )
    for task in ("kl_binary", "kl5"):
        real = _value(classification, model="real", condition=task, metric="accuracy")
        rows.append(
            _row(
                "B",
                "value",
                f"accuracy trained on real images ({task})",
                0.813,
                real,
                None if math.isnan(real) else abs(real - 0.813) <= 0.02,
                "kl_classification.tsv (mean over seeds); yes = within 2 points",
            )
        )
        for arm in (*DDPM_ARMS, "real+wgan"):
            accuracy = _value(classification, model=arm, condition=task, metric="accuracy")
            gain = None if math.isnan(accuracy) or math.isnan(real) else accuracy > real
            p = _value(
                paired,
                "p_adjusted",
                comparison=f"{arm} vs real",
                task=task,
                test="bootstrap_accuracy_difference",
            )
            if math.isnan(p):
                p = _value(paired, "p_adjusted", comparison=f"{arm} vs real", task=task)
            ddpm = arm in DDPM_ARMS
            if ddpm:
                rows.append(
                    _row(
                        "B",
                        "value",
                        f"accuracy with {arm} ({task})",
                        0.830,
                        accuracy,
                        None if math.isnan(accuracy) else abs(accuracy - 0.830) <= 0.02,
                        "kl_classification.tsv; yes = within 2 points",
                    )
                )
                reproduced = None if gain is None or math.isnan(p) else gain and p < 0.01
                claim = f"{arm} raises accuracy significantly ({task})"
                paper = "81.3 % -> 83.0 %, p < 0.01"
            else:
                reproduced = None if math.isnan(p) else p >= SIGNIFICANCE
                claim = f"the WGAN gain is not significant ({task})"
                paper = "p ~ 0.15"
            rows.append(
                _row(
                    "B",
                    "finding",
                    claim,
                    paper,
                    f"{_fmt(real, 3)} -> {_fmt(accuracy, 3)}, Holm p {_fmt(p, 3)}",
                    reproduced,
                    "kl_classification.tsv; paired_tests.tsv (paired bootstrap over test images)",
                )
            )
        for arm in DDPM_ARMS:
            for metric, claim, check in (
                ("macro_precision", "precision stable", lambda d: abs(d) <= 0.05),
                (
                    "oa_positive_recall",
                    "recall of OA-positive grades (KL >= 2) up",
                    lambda d: d > 0,
                ),
            ):
                base = _value(classification, model="real", condition=task, metric=metric)
                ours = _value(classification, model=arm, condition=task, metric=metric)
                diff = ours - base
                rows.append(
                    _row(
                        "B",
                        "finding",
                        f"{claim} with {arm} ({task})",
                        "yes",
                        f"{_fmt(base, 3)} -> {_fmt(ours, 3)}",
                        None if math.isnan(diff) else bool(check(diff)),
                        "kl_classification.tsv"
                        + ("; stable = within 5 points" if metric == "macro_precision" else ""),
                    )
                )
    return rows


# ----------------------------------------------------------------------------------- study C
def study_c_rows(
    utility: pd.DataFrame | None, memorization: pd.DataFrame | None
) -> list[dict[str, str]]:
    """Dice ratio of train-on-synthetic, and diffusion memorising more than the GAN."""
    ratio = _value(utility, metric="dice_ratio")
    rows = [
        _row(
            "C",
            "finding",
            "a segmenter trained on synthetic images reaches 80-90 % of the Dice "
            "of one trained on real images",
            "0.80-0.90",
            ratio,
            None if math.isnan(ratio) else 0.8 <= ratio < 1.0,
            "utility.tsv (CTM-generated DRRs vs real DRRs); yes = ratio in [0.8, 1)",
        )
    ]
    flagged = {
        g: _value(memorization, model=g, metric="fraction_flagged")
        for g in ("ddpm_uncond", "ddpm_cond", "wgan")
    }
    for generator in ("ddpm_uncond", "ddpm_cond"):
        a, b = flagged[generator], flagged["wgan"]
        rows.append(
            _row(
                "C",
                "finding",
                f"the diffusion model ({generator}) memorises more training images "
                "than the GAN on a small data set",
                "yes",
                f"{_fmt(a, 3)} vs {_fmt(b, 3)} flagged",
                None if math.isnan(a) or math.isnan(b) else a > b,
                "memorization.tsv: fraction above the held-out 0.99 quantile of max correlation",
            )
        )
    return rows


def settings_rows(
    config: Mapping[str, Any], paper_config: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Each paper setting: does config/paper.yaml hold it, and what did this run use."""
    rows = []
    for setting in SETTINGS:
        in_paper_yaml = _lookup(paper_config, setting.key)
        rows.append(
            _row(
                setting.study,
                "setting",
                setting.claim,
                setting.paper_value,
                _lookup(config, setting.key),
                _same(in_paper_yaml, setting.paper_value),
                f"{setting.key}: config/paper.yaml has {in_paper_yaml}",
            )
        )
    for study, claim, paper_value in DATA_FACTS:
        rows.append(
            _row(
                study,
                "setting",
                claim,
                paper_value,
                "phantoms",
                "needs the real data",
                "registration-only data sets (SMIR, OAI); the demo generates phantoms",
            )
        )
    return rows


TABLES: Sequence[str] = (
    "table1_drr",
    "paired_tests",
    "fid",
    "kl_classification",
    "realism",
    "reader_study",
    "utility",
    "memorization",
)


def build_scorecard(
    tables: Mapping[str, str | os.PathLike[str] | None],
    config: Mapping[str, Any],
    paper_config: Mapping[str, Any],
) -> pd.DataFrame:
    """The scorecard from the final tables (paths by name as in :data:`TABLES`; missing = not run)."""
    read: Callable[[str], pd.DataFrame | None] = lambda name: _read_optional(tables.get(name))  # noqa: E731
    paired = read("paired_tests")
    paired_a = paired[paired["study"].astype(str) == "A"] if paired is not None else None
    paired_b = paired[paired["study"].astype(str) == "B"] if paired is not None else None
    rows = (
        study_a_rows(read("table1_drr"), paired_a)
        + study_b_rows(
            read("fid"), read("kl_classification"), paired_b, read("realism"), read("reader_study")
        )
        + study_c_rows(read("utility"), read("memorization"))
        + settings_rows(config, paper_config)
    )
    return pd.DataFrame(
        rows,
        columns=["study", "kind", "claim", "paper_value", "our_value", "reproduced", "evidence"],
    )


def write_scorecard_html(path: str | os.PathLike[str], scorecard: pd.DataFrame) -> None:
    """The scorecard as a standalone HTML page (the report shows pages, not TSV), atomically."""
    counts = scorecard["reproduced"].value_counts()
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("yes", "no", "not run"))
    colour = {"yes": "#d1fae5", "no": "#fee2e2"}
    styled = (
        scorecard.style.format(escape="html")
        .hide(axis="index")
        .map(
            lambda v: f"background-color: {colour[v]}" if v in colour else "", subset=["reproduced"]
        )
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kneesynth scorecard</title>"
        "<style>body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<h1>Reproduction scorecard</h1><p>{len(scorecard)} claims: {summary}.</p>"
        f"{styled.to_html()}</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)
