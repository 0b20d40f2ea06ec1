"""The reproduction scorecard (``results/tables/scorecard.tsv``): the claims of every study
(:mod:`kneesynth.report.claims`) and the papers' settings beside this run's, one row each, with
the headline counts and the HTML page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kneesynth.io import atomic_path
from kneesynth.report.claims import (
    _read_optional,
    _row,
    failed_checks,
    study_a_rows,
    study_b_rows,
    study_c_rows,
)
from kneesynth.report.verdicts import (
    INCONCLUSIVE,
    NEEDS_REAL_DATA,
    NO,
    NOT_RUN,
    SETTING_DIFFERS,
    VERDICTS,
    YES,
    Verdict,
    setting,
)

COLUMNS = ["study", "kind", "claim", "paper_value", "our_value", "reproduced", "why", "evidence"]


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


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
        "<p>Claims are judged by the rules in <code>kneesynth.report.verdicts</code>: a finding is "
        "<em>yes</em> only when a test on the independent unit agrees at Holm p &lt; 0.05; "
        "<em>inconclusive</em> when the data cannot decide; settings count apart.</p>"
        f"{styled.to_html()}</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)
