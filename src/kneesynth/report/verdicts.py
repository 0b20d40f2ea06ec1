"""The reproduction scorecard: every claim and setting of the papers beside ours, judged by one
set of rules (this module holds all of them;
:mod:`kneesynth.report.claims` applies them).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# kneesynth.stats.ALPHA, written again so that the scorecard job does not import scipy.stats and
# statsmodels (a second of CPU) for one number; tests/test_scorecard.py checks that they agree
ALPHA = 0.05
YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"
SETTING_DIFFERS, NOT_RUN, NEEDS_REAL_DATA = "setting differs", "not run", "needs the real data"
VERDICTS = (YES, NO, INCONCLUSIVE, SETTING_DIFFERS, NOT_RUN, NEEDS_REAL_DATA)
CONTROLS_FAILED = "check failed its controls"


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
