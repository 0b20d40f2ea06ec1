"""The reproduction scorecard: every claim and setting of the papers beside ours, judged by one
set of rules (this module holds all of them).

One row per claim (``results/tables/scorecard.tsv``): ``study``, ``kind``, ``claim``,
``paper_value``, ``our_value``, ``reproduced``, ``why`` and ``evidence``. ``reproduced`` is one
of :data:`VERDICTS`. The rules, by kind of row:

- ``finding`` the paper states as an effect (CTM beats U-Net, augmentation raises accuracy):
  ``yes`` only with the same direction and a Holm-adjusted p < 0.05 from a test on the
  independent unit (:mod:`kneesynth.stats`); ``no`` when the opposite direction is
  significant or our CI excludes the paper's effect; otherwise ``inconclusive``, with the CI
  shown (:func:`significant_finding`). Composite findings ("CSM is worst") need every part.
- ``finding`` that something is *not* significant (the WGAN gain, p ~ 0.15): ``yes`` only
  when the gain is not significant *and* its CI excludes the DDPM arm's paper effect (+1.7
  points), so an underpowered run cannot reproduce it; ``no`` when it is significant;
  otherwise ``inconclusive`` (:func:`not_significant_finding`).
- ``finding`` of stability (precision stable): ``yes`` when the CI of the change lies inside
  the margin, ``no`` when it lies outside, else ``inconclusive`` (:func:`equivalence`).
- ``finding`` comparing two generators on a check (FID/KID, C2ST, memorisation):
  ``yes``/``no`` when the two estimates' 95 % intervals do not overlap (a conservative test),
  else ``inconclusive`` (:func:`separated`); and ``inconclusive (check failed its
  controls)`` whenever the check failed its controls (``controls.tsv``).
- ``value`` (a Table I cell, an accuracy, a rate): ``yes`` when the paper's mean lies in our
  95 % CI of the mean (clustered by the unit) and no rival value of the paper does (the
  other models of the same Table I column; the other arm's accuracy), so a CI too wide to
  tell them apart is ``inconclusive``; ``no`` when the paper's mean lies outside
  (:func:`value_in_interval`). A range (Dice 80-90 %) is ``yes`` when ours lies in it and our
  CI excludes the null ratio 1, ``no`` when our CI misses the range (:func:`value_in_range`).
- ``setting``: ``yes`` only when this run used the paper's value, else ``setting differs``
  with both values (:func:`setting`). Settings are counted apart from claims.

``not run`` marks a claim whose evidence is absent; ``needs the real data`` a number that only
the registration-only data sets can give. Where a test's units cannot reach alpha (the demo's
one test volume), the test row has no p-value and the claim is ``inconclusive``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kneesynth.checks.settings import PAPER_DETECTION_RATE, PAPER_DICE_RATIO
from kneesynth.io import atomic_path, read_tsv
from kneesynth.study_a.settings import CONDITIONS, MODEL_LABELS, PAPER_TABLE1
from kneesynth.study_b.settings import GENERATORS, PAPER_ACCURACY

# kneesynth.stats.ALPHA, written again so that the scorecard job does not import scipy.stats and
# statsmodels (a second of CPU) for one number; tests/test_scorecard.py checks that they agree
ALPHA = 0.05
YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"
SETTING_DIFFERS, NOT_RUN, NEEDS_REAL_DATA = "setting differs", "not run", "needs the real data"
VERDICTS = (YES, NO, INCONCLUSIVE, SETTING_DIFFERS, NOT_RUN, NEEDS_REAL_DATA)
CONTROLS_FAILED = "check failed its controls"

COLUMNS = ["study", "kind", "claim", "paper_value", "our_value", "reproduced", "why", "evidence"]

# the claims' own short label of a condition (no spaces)
CONDITION_LABELS = {"contour": "contour", "contour_bone": "contour+bone"}
DDPM_ARMS = ("real+ddpm_uncond", "real+ddpm_cond")

# Smits Serena et al.: accuracy real -> real + DDPM
PAPER_ACCURACY_REAL, PAPER_ACCURACY_DDPM = PAPER_ACCURACY["real"], PAPER_ACCURACY["real+ddpm_cond"]
PAPER_GAIN = PAPER_ACCURACY_DDPM - PAPER_ACCURACY_REAL
PRECISION_MARGIN = 0.05  # "precision stable": our choice of margin, the abstract gives none
COPY_FLAG_TOLERANCE = 0.05  # flagged generated pairs beyond the check's calibrated 1 %


@dataclass(frozen=True)
class Verdict:
    reproduced: str
    why: str = ""


# ------------------------------------------------------------------------------------ rules
def _finite(*values: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def significant_finding(
    difference: float,
    p_adjusted: float,
    ci: tuple[float, float],
    expected_sign: int,
    paper_effect: float | None = None,
    untestable_note: str = "",
) -> Verdict:
    """A claimed effect: ``difference`` should have ``expected_sign`` and be significant."""
    if not _finite(difference):
        return Verdict(NOT_RUN, "no result")
    if not _finite(p_adjusted):
        return Verdict(INCONCLUSIVE, untestable_note or "no valid test at these units")
    agrees = np.sign(difference) == expected_sign
    if p_adjusted < ALPHA:
        if agrees:
            return Verdict(YES, f"same direction, Holm p {p_adjusted:.3g} < {ALPHA}")
        return Verdict(NO, f"opposite direction is significant (Holm p {p_adjusted:.3g})")
    low, high = ci
    if paper_effect is not None and _finite(low, high) and not low <= paper_effect <= high:
        return Verdict(
            NO, f"our CI [{low:.4g}, {high:.4g}] excludes the paper's {paper_effect:.4g}"
        )
    return Verdict(INCONCLUSIVE, f"not significant (Holm p {p_adjusted:.3g})")


def agree(verdicts: Sequence[Verdict]) -> Verdict:
    """Two measures of one claim (FID and KID): a verdict only where they agree."""
    if not verdicts:
        return Verdict(NOT_RUN, "no result")
    kinds = {v.reproduced for v in verdicts}
    if len(kinds) == 1:
        return Verdict(verdicts[0].reproduced, "; ".join(v.why for v in verdicts))
    return Verdict(INCONCLUSIVE, "; ".join(f"{v.reproduced}: {v.why}" for v in verdicts))


def all_of(verdicts: Sequence[Verdict]) -> Verdict:
    """A composite finding: yes when every part is yes, no when any part is no."""
    if any(v.reproduced == NO for v in verdicts):
        return Verdict(NO, "; ".join(v.why for v in verdicts if v.reproduced == NO))
    if all(v.reproduced == YES for v in verdicts):
        return Verdict(YES, "every part significant in the paper's direction")
    if any(v.reproduced == NOT_RUN for v in verdicts):
        return Verdict(NOT_RUN, "a part was not run")
    return Verdict(INCONCLUSIVE, "; ".join(v.why for v in verdicts if v.reproduced != YES))


def not_significant_finding(
    p_adjusted: float, ci: tuple[float, float], excluded_effect: float, untestable_note: str = ""
) -> Verdict:
    """A claimed absence of effect: yes only when not significant and the CI excludes
    ``excluded_effect`` (a positive effect the test should have been able to see)."""
    if not _finite(p_adjusted):
        return Verdict(INCONCLUSIVE, untestable_note or "no valid test at these units")
    if p_adjusted < ALPHA:
        return Verdict(NO, f"significant (Holm p {p_adjusted:.3g})")
    low, high = ci
    if _finite(high) and high < excluded_effect:
        return Verdict(YES, f"not significant and CI upper {high:.3g} < {excluded_effect:.3g}")
    return Verdict(
        INCONCLUSIVE,
        f"not significant, but the CI (upper {high:.3g}) does not exclude {excluded_effect:.3g}: "
        "too little power to call it absent",
    )


def equivalence(ci: tuple[float, float], margin: float, untestable_note: str = "") -> Verdict:
    """Stability within +-margin: yes when the CI lies inside, no when outside."""
    low, high = ci
    if not _finite(low, high):
        return Verdict(INCONCLUSIVE, untestable_note or "no CI at these units")
    if -margin <= low and high <= margin:
        return Verdict(YES, f"CI [{low:.3g}, {high:.3g}] within +-{margin:g}")
    if high < -margin or low > margin:
        return Verdict(NO, f"CI [{low:.3g}, {high:.3g}] outside +-{margin:g}")
    return Verdict(INCONCLUSIVE, f"CI [{low:.3g}, {high:.3g}] crosses +-{margin:g}")


def value_in_interval(
    paper_value: float,
    ours: float,
    ci: tuple[float, float],
    rivals: Mapping[str, float] | None = None,
    untestable_note: str = "",
) -> Verdict:
    """The paper's value in our CI of the mean, and no rival paper value in it too."""
    if not _finite(ours):
        return Verdict(NOT_RUN, "no result")
    low, high = ci
    if not _finite(low, high):
        return Verdict(INCONCLUSIVE, untestable_note or "no CI at these units")
    if not low <= paper_value <= high:
        return Verdict(NO, f"paper's {paper_value:g} outside our CI [{low:.4g}, {high:.4g}]")
    inside = [name for name, value in (rivals or {}).items() if low <= value <= high]
    if inside:
        return Verdict(
            INCONCLUSIVE,
            f"our CI [{low:.4g}, {high:.4g}] also holds the paper's {', '.join(inside)}: "
            "too wide to tell them apart",
        )
    return Verdict(YES, f"paper's {paper_value:g} in our CI [{low:.4g}, {high:.4g}]")


def value_in_range(
    value_range: tuple[float, float],
    ours: float,
    ci: tuple[float, float],
    null: float,
    untestable_note: str = "",
) -> Verdict:
    """A range claim: ours in it with a CI that excludes ``null``; no when the CI misses it."""
    lo, hi = value_range
    if not _finite(ours):
        return Verdict(NOT_RUN, "no result")
    low, high = ci
    if not _finite(low, high):
        return Verdict(INCONCLUSIVE, untestable_note or "no CI at these units")
    if high < lo or low > hi:
        return Verdict(NO, f"our CI [{low:.3g}, {high:.3g}] misses {lo:g}-{hi:g}")
    if lo <= ours <= hi and not low <= null <= high:
        return Verdict(YES, f"{ours:.3g} in {lo:g}-{hi:g}, CI excludes {null:g}")
    return Verdict(INCONCLUSIVE, f"{ours:.3g} with CI [{low:.3g}, {high:.3g}]")


def separated(
    first: tuple[float, float, float],
    second: tuple[float, float, float],
    expected: str,
    controls_failed: bool = False,
) -> Verdict:
    """first < second (``expected`` "lower") or > ("higher") between two independent
    estimates given as (value, ci_low, ci_high): decided only when the 95 % intervals do not
    overlap (a conservative test, alpha below 0.01 for normal estimates)."""
    if controls_failed:
        return Verdict(INCONCLUSIVE, CONTROLS_FAILED)
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    if not _finite(a, b):
        return Verdict(NOT_RUN, "no result")
    if not _finite(a_low, a_high, b_low, b_high):
        return Verdict(INCONCLUSIVE, "no uncertainty for this metric")
    lower, higher = a_high < b_low, a_low > b_high
    if not (lower or higher):
        return Verdict(INCONCLUSIVE, "the two intervals overlap")
    agrees = lower if expected == "lower" else higher
    return Verdict(YES if agrees else NO, "the two intervals do not overlap")


def setting(paper_value: Any, ours: Any) -> Verdict:
    """A setting is reproduced only when this run used it."""
    if ours is None:
        return Verdict(NOT_RUN, "not in this run's config")
    if _same(ours, paper_value):
        return Verdict(YES, "this run used the paper's value")
    return Verdict(SETTING_DIFFERS, f"this run used {ours}, the paper {paper_value}")


# ------------------------------------------------------------------------------------ helpers
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
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}g}"
    return str(value)


def _ci(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:.{digits}g}, {high:.{digits}g}]" if _finite(low, high) else "[no CI]"


def _row(study, kind, claim, paper_value, our_value, verdict: Verdict, evidence) -> dict:
    return {
        "study": study,
        "kind": kind,
        "claim": claim,
        "paper_value": _fmt(paper_value),
        "our_value": _fmt(our_value) or NOT_RUN,
        "reproduced": verdict.reproduced,
        "why": verdict.why,
        "evidence": evidence,
    }


def _read_optional(path: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    if path is None or not os.path.exists(path):
        return None
    return read_tsv(path)


def _select(table: pd.DataFrame | None, **match: Any) -> pd.Series | None:
    """The one row of ``table`` matching every column = value (None when absent)."""
    if table is None:
        return None
    selected = table
    for column, wanted in match.items():
        if column not in selected.columns:
            return None
        selected = selected[selected[column].astype(str) == str(wanted)]
    return None if selected.empty else selected.iloc[0]


def _number(row: pd.Series | None, column: str) -> float:
    if row is None or column not in row.index:
        return float("nan")
    value = pd.to_numeric(pd.Series([row[column]]), errors="coerce").iloc[0]
    return float(value)


def _text(row: pd.Series | None, column: str) -> str:
    if row is None or column not in row.index or pd.isna(row[column]):
        return ""
    return str(row[column])


def _metric(table: pd.DataFrame | None, metric: str, **match: Any) -> float:
    return _number(_select(table, metric=metric, **match), "value")


def failed_checks(controls: pd.DataFrame | None) -> set[tuple[str, str]]:
    """(study, check) pairs that failed their controls in controls.tsv
    (:func:`kneesynth.checks.controls.checks_failing_controls`)."""
    from kneesynth.checks.controls import checks_failing_controls

    if controls is None or controls.empty:
        return set()
    return {
        (study, check)
        for study in sorted(set(controls["study"].astype(str)))
        for check in checks_failing_controls(controls, study)
    }


# ----------------------------------------------------------------------------------- study A
def _tested(row: pd.Series | None) -> tuple[float, float, tuple[float, float], str]:
    """difference, Holm p, CI and note of a paired-test row."""
    return (
        _number(row, "difference"),
        _number(row, "p_adjusted"),
        (_number(row, "ci_low"), _number(row, "ci_high")),
        _text(row, "note"),
    )


def _tested_value(difference: float, p: float, ci: tuple[float, float], row) -> str:
    if not _finite(difference):
        return NOT_RUN
    units = f"{int(_number(row, 'n_units'))} {_text(row, 'unit')}(s)"
    p_text = f"Holm p {p:.3g}" if _finite(p) else "no p"
    return f"{difference:+.4g} {_ci(*ci, digits=3)}, {p_text}, {units}"


def study_a_rows(table1: pd.DataFrame | None, paired: pd.DataFrame | None) -> list[dict]:
    """Table I cells, and the orderings Mei et al. report (CTM best, CSM worst, bone effects)."""
    rows = []
    for (model, condition, metric), (paper_mean, paper_sd) in PAPER_TABLE1.items():
        row = _select(table1, model=model, condition=condition, metric=metric)
        ours = _number(row, "mean")
        ci = (_number(row, "ci_low"), _number(row, "ci_high"))
        rivals = {
            f"{MODEL_LABELS[other]} {value:g}": value
            for (other, c, m), (value, _) in PAPER_TABLE1.items()
            if (c, m) == (condition, metric) and other != model
        }
        verdict = value_in_interval(paper_mean, ours, ci, rivals, _text(row, "note"))
        rows.append(
            _row(
                "A",
                "value",
                f"Table I: {MODEL_LABELS[model]} {metric.upper()}, {CONDITION_LABELS[condition]}",
                f"{paper_mean} +- {paper_sd}",
                f"{ours:.4g} {_ci(*ci, digits=4)}" if _finite(ours) else NOT_RUN,
                verdict,
                "table1_drr.tsv: 95 % CI of the mean, t over test volumes",
            )
        )

    def better_sign(metric: str) -> int:
        return -1 if metric == "mae" else 1  # lower MAE, higher PSNR is better

    def comparison(first: str, second: str, condition: str, metric: str) -> tuple[Verdict, str]:
        row = _select(paired, comparison=f"{first}_vs_{second}", condition=condition, metric=metric)
        difference, p, ci, note = _tested(row)
        paper = PAPER_TABLE1[(first, condition, metric)][0] - PAPER_TABLE1[(second, condition, metric)][0]  # fmt: skip
        verdict = significant_finding(difference, p, ci, better_sign(metric), paper, note)
        return verdict, _tested_value(difference, p, ci, row)

    evidence = "paired_tests.tsv: mean paired difference first - second, t over test volumes (Holm)"
    for condition in CONDITIONS:
        for first, second in (("ctm", "unet"), ("ctm", "csm")):
            for metric in ("mae", "psnr"):
                verdict, ours = comparison(first, second, condition, metric)
                rows.append(
                    _row(
                        "A",
                        "finding",
                        f"{MODEL_LABELS[first]} beats {MODEL_LABELS[second]} in {metric.upper()} "
                        f"({CONDITION_LABELS[condition]})",
                        "yes",
                        ours,
                        verdict,
                        evidence,
                    )  # fmt: skip
                )
        for metric in ("mae", "psnr"):
            parts = [comparison(other, "csm", condition, metric) for other in ("ctm", "unet")]
            rows.append(
                _row(
                    "A",
                    "finding",
                    f"CSM is worst in {metric.upper()} ({CONDITION_LABELS[condition]})",
                    "yes",
                    "CTM vs CSM " + parts[0][1] + "; U-Net vs CSM " + parts[1][1],
                    all_of([verdict for verdict, _ in parts]),
                    evidence,
                )  # fmt: skip
            )
    for model, helps in (("ctm", True), ("unet", True), ("csm", False)):
        for metric in ("mae", "psnr"):
            row = _select(paired, comparison=f"{model}:contour_vs_contour_bone", metric=metric)
            difference, p, ci, note = _tested(row)  # contour - contour_bone
            paper = (
                PAPER_TABLE1[(model, "contour", metric)][0]
                - PAPER_TABLE1[(model, "contour_bone", metric)][0]
            )
            # bone helps when contour is worse than contour_bone
            sign = -better_sign(metric) if helps else better_sign(metric)
            rows.append(
                _row(
                    "A",
                    "finding",
                    f"adding bone to the condition {'helps' if helps else 'hurts'} "
                    f"{MODEL_LABELS[model]} ({metric.upper()})",
                    "yes",
                    "contour - contour+bone " + _tested_value(difference, p, ci, row),
                    significant_finding(difference, p, ci, sign, paper, note),
                    "paired_tests.tsv: contour vs contour+bone on the same test images, t over "
                    "test volumes (Holm)",
                )  # fmt: skip
            )
    return rows


# ----------------------------------------------------------------------------------- study B
def _interval_of(table: pd.DataFrame | None, metric: str, **match) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of a metric row; a ``<metric>_se`` row or column gives a
    normal 95 % interval where no interval is stored."""
    row = _select(table, metric=metric, **match)
    value = _number(row, "value")
    low, high = _number(row, "ci_low"), _number(row, "ci_high")
    if not _finite(low, high):
        low = _metric(table, f"{metric}_ci_low", **match)
        high = _metric(table, f"{metric}_ci_high", **match)
    if not _finite(low, high):
        se = _number(row, "se")
        if not _finite(se):
            se = _metric(table, f"{metric}_se", **match)
        if _finite(se):
            low, high = value - 1.96 * se, value + 1.96 * se
    return value, low, high


def study_b_rows(
    fid: pd.DataFrame | None,
    classification: pd.DataFrame | None,
    paired: pd.DataFrame | None,
    realism: pd.DataFrame | None,
    reader: pd.DataFrame | None,
    failed: set[tuple[str, str]] = frozenset(),
) -> list[dict]:
    """FID/KID order, detection rates, the C2ST stand-in, accuracy gain and its
    significance, precision and recall."""
    rows = []
    for generator in ("ddpm_uncond", "ddpm_cond"):
        verdicts, texts = [], []
        for metric in ("fid", "kid"):
            ours = _interval_of(fid, metric, model=generator, condition="overall")
            wgan = _interval_of(fid, metric, model="wgan", condition="overall")
            if not _finite(ours[0], wgan[0]):
                continue
            verdicts.append(separated(ours, wgan, "lower", ("B", metric) in failed))
            texts.append(
                f"{metric.upper()} {_fmt(ours[0])} {_ci(*ours[1:])} vs "
                f"{_fmt(wgan[0])} {_ci(*wgan[1:])}"
            )
        rows.append(
            _row(
                "B",
                "finding",
                f"FID lower for {generator} than for the WGAN",
                "lower",
                "; ".join(texts) or NOT_RUN,
                agree(verdicts),
                "fid.tsv: FID and KID (unbiased at small n) on features of our own network, "
                "95 % intervals from their SEs; one trained model per generator",
            )
        )
    for generator, paper_rate in PAPER_DETECTION_RATE.items():
        row = _select(reader, model=generator, condition="pooled", metric="detection_rate")
        ours = _number(row, "value")
        ci = (
            _metric(reader, "detection_rate_ci_low", model=generator, condition="pooled"),
            _metric(reader, "detection_rate_ci_high", model=generator, condition="pooled"),
        )
        rows.append(
            _row(
                "B",
                "value",
                f"readers spot {generator} images as synthetic (detection rate)",
                paper_rate,
                f"{_fmt(ours, 3)} {_ci(*ci)}" if _finite(ours) else NOT_RUN,
                value_in_interval(paper_rate, ours, ci),
                "reader_study.tsv (needs filled sheets): CI clustered by image",
            )  # fmt: skip
        )
    c2st_failed = ("B", "c2st") in failed
    auc = {
        g: (
            _metric(realism, "c2st_auc", model=g),
            _metric(realism, "c2st_auc_ci_low", model=g),
            _metric(realism, "c2st_auc_ci_high", model=g),
        )
        for g in GENERATORS
    }
    for generator in ("ddpm_uncond", "ddpm_cond"):
        rows.append(
            _row(
                "B",
                "finding",
                f"{generator} images are harder to tell from real than WGAN images "
                "(automatic stand-in for the reader study)",
                "16.7 % vs 62.5 % detected",
                f"AUC {_fmt(auc[generator][0], 3)} {_ci(*auc[generator][1:])} vs "
                f"{_fmt(auc['wgan'][0], 3)} {_ci(*auc['wgan'][1:])}",
                separated(auc[generator], auc["wgan"], "lower", c2st_failed),
                "realism.tsv: classifier two-sample test AUC with bootstrap CIs",
            )  # fmt: skip
        )
    evidence_test = (
        "paired_tests.tsv: seed-averaged difference, t over test participants and training "
        "seeds (Holm over arms)"
    )
    for task in ("kl_binary", "kl5"):
        real = _interval_of(classification, "accuracy", model="real", condition=task)
        rows.append(
            _row(
                "B",
                "value",
                f"accuracy trained on real images ({task})",
                PAPER_ACCURACY_REAL,
                f"{_fmt(real[0])} {_ci(*real[1:])}" if _finite(real[0]) else NOT_RUN,
                value_in_interval(
                    PAPER_ACCURACY_REAL,
                    real[0],
                    real[1:],
                    {"real + DDPM 0.83": PAPER_ACCURACY_DDPM},
                ),
                "kl_classification.tsv: mean over seeds, t interval over participants and seeds",
            )  # fmt: skip
        )

        def tested(arm: str, metric: str, task: str = task) -> tuple:
            row = _select(
                paired, comparison=f"{arm} vs real", task=task, metric=metric,
                test="t_over_seeds_and_participants",
            )  # fmt: skip
            difference, p, ci, note = _tested(row)
            return difference, p, ci, note, _tested_value(difference, p, ci, row)

        for arm in (*DDPM_ARMS, "real+wgan"):
            accuracy = _interval_of(classification, "accuracy", model=arm, condition=task)
            difference, p, ci, note, text = tested(arm, "accuracy")
            if arm in DDPM_ARMS:
                rows.append(
                    _row(
                        "B",
                        "value",
                        f"accuracy with {arm} ({task})",
                        PAPER_ACCURACY_DDPM,
                        f"{_fmt(accuracy[0])} {_ci(*accuracy[1:])}"
                        if _finite(accuracy[0])
                        else NOT_RUN,
                        value_in_interval(
                            PAPER_ACCURACY_DDPM,
                            accuracy[0],
                            accuracy[1:],
                            {"real 0.813": PAPER_ACCURACY_REAL},
                        ),
                        "kl_classification.tsv: mean over seeds, t interval over participants "
                        "and seeds",
                    )  # fmt: skip
                )
                rows.append(
                    _row(
                        "B",
                        "finding",
                        f"{arm} raises accuracy significantly ({task})",
                        "81.3 % -> 83.0 %, p < 0.01",
                        text,
                        significant_finding(difference, p, ci, +1, PAPER_GAIN, note),
                        evidence_test,
                    )  # fmt: skip
                )
            else:
                rows.append(
                    _row(
                        "B",
                        "finding",
                        f"the WGAN gain is not significant ({task})",
                        "p ~ 0.15",
                        text,
                        not_significant_finding(p, ci, PAPER_GAIN, note),
                        evidence_test
                        + f"; yes needs the CI to exclude the DDPM gain +{PAPER_GAIN:.3f}",
                    )  # fmt: skip
                )
        for arm in DDPM_ARMS:
            difference, p, ci, note, text = tested(arm, "macro_precision")
            rows.append(
                _row(
                    "B",
                    "finding",
                    f"precision stable with {arm} ({task})",
                    "yes",
                    "macro precision " + text,
                    equivalence(ci, PRECISION_MARGIN, note),
                    evidence_test + f"; stable = CI within +-{PRECISION_MARGIN:g} (our margin)",
                )  # fmt: skip
            )
            difference, p, ci, note, text = tested(arm, "oa_positive_recall")
            rows.append(
                _row(
                    "B",
                    "finding",
                    f"recall of OA-positive grades (KL >= 2) up with {arm} ({task})",
                    "yes",
                    "recall " + text,
                    significant_finding(difference, p, ci, +1, None, note),
                    evidence_test,
                )  # fmt: skip
            )
    return rows


# ----------------------------------------------------------------------------------- study C
def study_c_rows(
    utility: pd.DataFrame | None,
    memorization: pd.DataFrame | None,
    failed: set[tuple[str, str]] = frozenset(),
) -> list[dict]:
    """Dice ratio of train-on-synthetic, and diffusion memorising more than the GAN."""
    ratio = _metric(utility, "dice_ratio")
    ci = (_metric(utility, "dice_ratio_ci_low"), _metric(utility, "dice_ratio_ci_high"))
    ci_note = _text(_select(utility, metric="dice_ratio_ci_low"), "note")
    verdict = value_in_range(PAPER_DICE_RATIO, ratio, ci, 1.0, ci_note)
    pairs = _metric(utility, "n_generated_pairs")
    flagged = _metric(utility, "n_generated_flagged_as_copies")
    if (
        verdict.reproduced == YES
        and _finite(pairs, flagged)
        and flagged > COPY_FLAG_TOLERANCE * pairs
    ):
        verdict = Verdict(
            INCONCLUSIVE,
            f"{int(flagged)} of {int(pairs)} generated training pairs look like copies",
        )
    rows = [
        _row(
            "C",
            "finding",
            "a segmenter trained on synthetic images reaches 80-90 % of the Dice "
            "of one trained on real images",
            "0.80-0.90",
            f"{_fmt(ratio, 3)} {_ci(*ci)}" if _finite(ratio) else NOT_RUN,
            verdict,
            "utility.tsv: CTM-generated DRRs of masks the CTM never saw vs real DRRs; CI t over "
            "test volumes",
        )  # fmt: skip
    ]
    controls_failed = ("B", "memorization") in failed
    probe = [
        (
            _metric(memorization, "n_flagged", model=name),
            _metric(memorization, "n_synthetic", model=name),
        )
        for name in ("memorization_probe", "memorization_probe_full")
    ]
    rows.append(
        _row(
            "C",
            "finding",
            "a diffusion model trained on a small data set memorises its training images "
            "(the probe, against the same DDPM trained on the full set)",
            "yes",
            f"probe {_fmt(probe[0][0])}/{_fmt(probe[0][1])} vs full-data twin "
            f"{_fmt(probe[1][0])}/{_fmt(probe[1][1])} flagged",
            more_flagged(probe[0], probe[1], controls_failed or ("C", "memorization") in failed),
            "memorization.tsv (memorization_probe, memorization_probe_full); controls.tsv: "
            "the check must flag copies and pass held-out images; Fisher's exact test",
        )
    )
    counts = {
        g: (
            _metric(memorization, "n_flagged", model=g),
            _metric(memorization, "n_synthetic", model=g),
        )
        for g in GENERATORS
    }
    for generator in ("ddpm_uncond", "ddpm_cond"):
        rows.append(
            _row(
                "C",
                "finding",
                f"the diffusion model ({generator}) memorises more training images than the GAN",
                "yes",
                f"{_fmt(counts[generator][0])}/{_fmt(counts[generator][1])} vs "
                f"{_fmt(counts['wgan'][0])}/{_fmt(counts['wgan'][1])} flagged",
                more_flagged(counts[generator], counts["wgan"], controls_failed),
                "memorization.tsv: images above the held-out 0.99 quantile of max correlation; "
                "Fisher's exact test on the counts; our generators train on the whole "
                "training split, the papers' small-data case is the probe above",
            )  # fmt: skip
        )
    return rows


def more_flagged(
    first: tuple[float, float], second: tuple[float, float], controls_failed: bool = False
) -> Verdict:
    """first flags a larger share of its images than second (Fisher's exact test on the
    counts, two-sided; the synthetic image is the unit)."""
    from scipy.stats import fisher_exact

    if controls_failed:
        return Verdict(INCONCLUSIVE, CONTROLS_FAILED)
    (k1, n1), (k2, n2) = first, second
    if not _finite(k1, n1, k2, n2) or n1 == 0 or n2 == 0:
        return Verdict(NOT_RUN, "no result")
    p = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    more = k1 / n1 > k2 / n2
    if p < ALPHA:
        return Verdict(YES if more else NO, f"Fisher p {p:.3g}")
    return Verdict(INCONCLUSIVE, f"Fisher p {p:.3g}")


# ----------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """A paper setting: where it lives in the config and the paper's value. ``overridden_by``:
    a key that, when set, replaces this one in the run (``steps`` over ``epochs``);
    ``phantom_only``: the setting shapes the phantom data and is moot with real data."""

    study: str
    claim: str
    key: str  # dotted config path
    paper_value: Any
    overridden_by: str | None = None
    phantom_only: str | None = None  # the data key whose real folder makes it moot


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
    Setting("A", "training epochs (at most)", "study_a.epochs", 300, overridden_by="study_a.steps"),
    Setting("B", "OAI image size (Chen et al. crops)", "study_b.classifiers.image_size", 224),
    Setting(
        "B",
        "OAI train:val:test proportions (Chen et al.'s 5778:826:1656 images)",
        "splits.oai_fractions",
        [5778, 826, 1656],
    ),
    Setting(
        "B",
        "KL grade proportions 0..4 of the radiographs (Chen et al.'s counts)",
        "phantom.oai.kl_grade_weights",
        [3253, 1495, 2175, 1086, 251],
        phantom_only="data.oai_dir",
    ),
)

# Numbers of the papers that describe the data rather than a setting or a result.
DATA_FACTS = (
    ("A", "SICAS leg CT volumes", 55, "data.sicas_dir"),
    ("A", "DRRs per segmentation type (55 x 60)", 3300, "data.sicas_dir"),
    ("B", "OAI knee radiographs with KL grades", 8259, "data.oai_dir"),
    ("B", "images in the Chen et al. data set", 8260, "data.oai_dir"),
    ("B", "blinded readers (2 radiologists + 1 orthopaedic surgeon)", 3, None),
)


def settings_rows(config: Mapping[str, Any]) -> list[dict]:
    """Each paper setting: did this run use it."""
    rows = []
    for item in SETTINGS:
        ours = _lookup(config, item.key)
        verdict = setting(item.paper_value, ours)
        override = _lookup(config, item.overridden_by) if item.overridden_by else None
        if override is not None:
            ours = f"{override} ({item.overridden_by.rsplit('.', 1)[-1]})"
            verdict = Verdict(
                SETTING_DIFFERS, f"{item.overridden_by} = {override} replaces {item.key}"
            )
        if item.phantom_only and _lookup(config, item.phantom_only):
            verdict = Verdict(NOT_RUN, "real data: the data set's own values, not this setting")
        rows.append(
            _row(
                item.study,
                "setting",
                item.claim,
                item.paper_value,
                ours,
                verdict,
                f"config key {item.key}",
            )
        )
    for study, claim, paper_value, data_key in DATA_FACTS:
        real = data_key is not None and bool(_lookup(config, data_key))
        verdict = (
            Verdict(NOT_RUN, "counted by the data stage, not compared here")
            if real
            else Verdict(NEEDS_REAL_DATA, "registration-only data; this run used phantoms")
            if data_key
            else Verdict(NOT_RUN, "readers are people: see the reader-study kit")
        )
        rows.append(
            _row(
                study,
                "setting",
                claim,
                paper_value,
                "real data" if real else "phantoms",
                verdict,
                "registration-only data sets (SMIR, OAI)",
            )  # fmt: skip
        )
    return rows


# ----------------------------------------------------------------------------------- the card
TABLES: Sequence[str] = (
    "table1_drr",
    "paired_tests",
    "fid",
    "kl_classification",
    "realism",
    "reader_study",
    "utility",
    "memorization",
    "controls",
)


def build_scorecard(
    tables: Mapping[str, str | os.PathLike[str] | None], config: Mapping[str, Any]
) -> pd.DataFrame:
    """The scorecard from the final tables (paths by name as in :data:`TABLES`; a missing
    table means not run) and this run's config."""
    read = {name: _read_optional(tables.get(name)) for name in TABLES}
    paired = read["paired_tests"]
    paired_a = paired[paired["study"].astype(str) == "A"] if paired is not None else None
    paired_b = paired[paired["study"].astype(str) == "B"] if paired is not None else None
    failed = failed_checks(read["controls"])
    rows = (
        study_a_rows(read["table1_drr"], paired_a)
        + study_b_rows(
            read["fid"],
            read["kl_classification"],
            paired_b,
            read["realism"],
            read["reader_study"],
            failed,
        )  # fmt: skip
        + study_c_rows(read["utility"], read["memorization"], failed)
        + settings_rows(config)
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def headline(scorecard: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Counts by verdict: claims (findings and values) apart from settings."""
    is_setting = scorecard["kind"] == "setting"
    return {
        "claims": scorecard.loc[~is_setting, "reproduced"].value_counts().to_dict(),
        "settings": scorecard.loc[is_setting, "reproduced"].value_counts().to_dict(),
    }


def headline_text(scorecard: pd.DataFrame) -> str:
    """One line: '<n> claims: a yes, b no, ...; <m> settings: ...'."""
    counts = headline(scorecard)
    parts = []
    for kind in ("claims", "settings"):
        found = counts[kind]
        listed = ", ".join(f"{found[v]} {v}" for v in VERDICTS if found.get(v))
        parts.append(f"{sum(found.values())} {kind}: {listed or 'none'}")
    return "; ".join(parts)


def write_scorecard_html(path: str | os.PathLike[str], scorecard: pd.DataFrame) -> None:
    """The scorecard as a standalone HTML page (the report shows pages, not TSV), atomically."""
    colour = {
        YES: "#d1fae5",
        NO: "#fee2e2",
        INCONCLUSIVE: "#fef9c3",
        SETTING_DIFFERS: "#e5e7eb",
    }
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
        f"<h1>Reproduction scorecard</h1><p>{headline_text(scorecard)}.</p>"
        "<p>Claims are judged by the rules in <code>kneesynth.report.scorecard</code>: a finding is "
        "<em>yes</em> only when a test on the independent unit agrees at Holm p &lt; 0.05; "
        "<em>inconclusive</em> when the data cannot decide; settings count apart.</p>"
        f"{styled.to_html()}</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)
