"""``controls.tsv``: every check (memorisation, C2ST, FID/KID, the memorisation probe) judged on
its controls (:mod:`kneesynth.checks.controls`), and the checks that fail them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from kneesynth.checks.controls import (
    COPY_FLAGGED_MIN,
    HOLDOUT_FLAGGED_MAX,
    NOISE_AUC_MIN,
    PROBE_FLAGGED_MIN,
    TABLE_COLUMNS,
)
from kneesynth.checks.settings import CONTROLS, PROBE, PROBE_FULL
from kneesynth.io import read_tsv, write_tsv

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# controls.tsv: every check on its controls
# --------------------------------------------------------------------------------------------
def _pick(table: pd.DataFrame | None, **match: Any) -> float:
    if table is None:
        return float("nan")
    selected = table
    for key, wanted in match.items():
        selected = selected[selected[key].astype(str) == str(wanted)]
    if selected.empty:
        return float("nan")
    return float(pd.to_numeric(selected["value"], errors="coerce").iloc[0])


def _row(study, check, control, value, expected, passes, detail="") -> dict[str, Any]:
    return {
        "study": study,
        "check": check,
        "control": control,
        "value": value,
        "expected": expected,
        "passes": "yes" if passes else "no",
        "detail": detail,
    }


def memorization_control_rows(memorization: pd.DataFrame | None, study: str) -> list[dict]:
    """Pixel (``memorization``) and feature-space (``memorization_features``) checks."""
    rows = []
    for check, metric in (
        ("memorization", "fraction_flagged"),
        ("memorization_features", "feature_fraction_flagged"),
    ):
        copy = _pick(memorization, study=study, model="control_copy", metric=metric)
        holdout = _pick(memorization, study=study, model="control_holdout", metric=metric)
        if check == "memorization_features" and math.isnan(copy) and math.isnan(holdout):
            continue  # no feature space in this study
        rows.append(
            _row(
                study,
                check,
                "control_copy",
                copy,
                f">= {COPY_FLAGGED_MIN:g} flagged",
                copy >= COPY_FLAGGED_MIN,
            )
        )
        rows.append(
            _row(
                study,
                check,
                "control_holdout",
                holdout,
                f"<= {HOLDOUT_FLAGGED_MAX:g} flagged",
                holdout <= HOLDOUT_FLAGGED_MAX,
            )
        )
    return rows


def c2st_control_rows(realism: pd.DataFrame | None, study: str) -> list[dict]:
    """The C2ST on real held-out images (AUC 0.5 in its CI) and on noise (AUC >= 0.95).

    Study A has only the noise row: its C2ST compares each CSM/CTM set with the very test DRRs
    whose masks it was drawn from, so a real DRR of another leg (control_holdout, and
    control_copy) is no sample of what a perfect generator would draw there; the CNN tells two
    legs apart at once (AUC 1 on the demo's single val and test volumes). Their C2ST rows stay
    in realism.tsv for the record.
    """
    rows = []
    if study != "A":
        holdout = {
            k: _pick(realism, study=study, model="control_holdout", metric=f"c2st_auc{k}")
            for k in ("", "_ci_low", "_ci_high")
        }
        inside = holdout["_ci_low"] <= 0.5 <= holdout["_ci_high"]
        ci = f"95 % CI [{holdout['_ci_low']:.3f}, {holdout['_ci_high']:.3f}]"
        rows.append(
            _row(study, "c2st", "control_holdout", holdout[""], "AUC CI contains 0.5", inside, ci)
        )
    noise = _pick(realism, study=study, model="control_noise", metric="c2st_auc")
    rows.append(
        _row(
            study,
            "c2st",
            "control_noise",
            noise,
            f"AUC >= {NOISE_AUC_MIN:g}",
            noise >= NOISE_AUC_MIN,
        )
    )
    return rows


def distance_control_rows(
    fid: pd.DataFrame | None, study: str, metric: str, z: float
) -> list[dict]:
    """Distances (``fid`` or ``kid``, with ``<metric>_se``) must order copy <= holdout < noise.

    control_copy passes unless it lies above control_holdout by more than ``z`` standard errors
    of the difference (copies of training images are real images: a feature space that puts
    them farther from the test images than other real images has learnt the training set);
    control_noise passes when it lies above control_holdout by more than ``z`` standard errors.
    KID is unbiased, so control_holdout's KID must also be within ``z`` SE of 0.
    """
    value = {
        c: _pick(fid, study=study, model=c, condition="overall", metric=metric) for c in CONTROLS
    }
    se = {
        c: _pick(fid, study=study, model=c, condition="overall", metric=f"{metric}_se")
        for c in CONTROLS
    }
    holdout, holdout_se = value["control_holdout"], se["control_holdout"]
    copy_z = (value["control_copy"] - holdout) / math.hypot(se["control_copy"], holdout_se)
    noise_z = (value["control_noise"] - holdout) / math.hypot(se["control_noise"], holdout_se)
    rows = [
        _row(
            study,
            metric,
            "control_copy",
            value["control_copy"],
            f"<= control_holdout (not above it by more than {z:g} SE)",
            copy_z <= z,
            f"(copy - holdout) / SE = {copy_z:.2f}",
        ),
    ]
    if metric == "kid":
        rows.append(
            _row(
                study,
                metric,
                "control_holdout",
                holdout,
                f"0 within {z:g} SE (unbiased)",
                abs(holdout) <= z * holdout_se,
                f"SE {holdout_se:.3g}",
            )
        )
    rows.append(
        _row(
            study,
            metric,
            "control_noise",
            value["control_noise"],
            f"> control_holdout by more than {z:g} SE",
            noise_z > z,
            f"(noise - holdout) / SE = {noise_z:.2f}; noise / holdout SE = "
            f"{(value['control_noise'] - holdout) / holdout_se:.1f}",
        ),
    )
    return rows


def probe_rows(memorization: pd.DataFrame | None, study: str = "B") -> list[dict]:
    """The memorisation probe (a DDPM trained on a few images until it copies them) must be
    flagged (>= 25 % of its images), its full-data twin far less: at most half as often and
    significantly less (Fisher's exact test, one-sided, p < 0.05)."""
    from scipy.stats import fisher_exact  # heavy (scipy): imported on use

    if memorization is None or PROBE not in set(memorization["model"].astype(str)):
        return []
    probe = _pick(memorization, study=study, model=PROBE, metric="fraction_flagged")
    full = _pick(memorization, study=study, model=PROBE_FULL, metric="fraction_flagged")
    n_probe = _pick(memorization, study=study, model=PROBE, metric="n_synthetic")
    n_full = _pick(memorization, study=study, model=PROBE_FULL, metric="n_synthetic")
    p_value = float("nan")
    if not any(math.isnan(v) for v in (probe, full, n_probe, n_full)):
        flagged_probe, flagged_full = round(probe * n_probe), round(full * n_full)
        table = [[flagged_probe, n_probe - flagged_probe], [flagged_full, n_full - flagged_full]]
        p_value = float(fisher_exact(table, alternative="greater").pvalue)
    return [
        _row(
            "C",
            "memorization",
            PROBE,
            probe,
            f">= {PROBE_FLAGGED_MIN:g} flagged",
            probe >= PROBE_FLAGGED_MIN,
        ),
        _row(
            "C",
            "memorization",
            PROBE_FULL,
            full,
            "<= half the probe's, and lower (Fisher exact p < 0.05)",
            full <= probe / 2 and p_value < 0.05,
            f"one-sided Fisher exact p = {p_value:.3g}",
        ),
    ]


def _has_study(table: pd.DataFrame | None, study: str) -> bool:
    return table is not None and study in set(table["study"].astype(str))


def controls_table(
    fid: pd.DataFrame | None,
    realism: pd.DataFrame | None,
    memorization: pd.DataFrame | None,
    z: float = 1.96,
) -> pd.DataFrame:
    """``controls.tsv``: one row per (study, check, control) with its value, the expected
    outcome and whether it passes. Study B: fid, kid, c2st, memorization and
    memorization_features; study A: c2st (noise only, see :func:`c2st_control_rows`),
    memorization and memorization_features (PCA space); study C: the memorisation probe. A
    value that is missing (NaN) does not pass."""
    rows = []
    for study in ("A", "B"):
        if _has_study(fid, study):
            rows += distance_control_rows(fid, study, "fid", z)
            rows += distance_control_rows(fid, study, "kid", z)
        if _has_study(realism, study):
            rows += c2st_control_rows(realism, study)
        if _has_study(memorization, study):
            rows += memorization_control_rows(memorization, study)
    rows += probe_rows(memorization)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def checks_failing_controls(controls: pd.DataFrame, study: str | None = None) -> set[str]:
    """Names of the checks (``fid``, ``kid``, ``c2st``, ``memorization``,
    ``memorization_features``) with at least one row of ``controls.tsv`` that does not pass,
    in ``study`` (A, B, C) or in any study. A claim that rests on such a check is
    inconclusive: the check failed its controls."""
    selected = controls if study is None else controls[controls["study"].astype(str) == study]
    return set(selected.loc[selected["passes"].astype(str) != "yes", "check"].astype(str))


def read_optional(path: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    """A final table, or None when the path is None or absent."""

    if path is None or not os.path.exists(path):
        return None
    return read_tsv(path)


def write_controls_table(
    output: str | os.PathLike[str], tables: Mapping[str, str | os.PathLike[str] | None], z: float
) -> pd.DataFrame:
    """Read fid.tsv, realism.tsv and memorization.tsv (by name in ``tables``), write
    controls.tsv and log every failing check."""

    table = controls_table(
        read_optional(tables.get("fid")),
        read_optional(tables.get("realism")),
        read_optional(tables.get("memorization")),
        z,
    )
    for study in sorted(set(table["study"])):
        failing = checks_failing_controls(table, study)
        logger.info(
            "study %s: %s",
            study,
            f"checks failing their controls: {sorted(failing)}"
            if failing
            else "every check passes its controls",
        )
    write_tsv(output, table)
    return table
