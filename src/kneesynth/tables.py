"""The result tables' conventions: the long table of every check and metric (one number per
row), the paired-test columns, and the join of the studies' paired tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kneesynth.io import read_tsv

if TYPE_CHECKING:
    import pandas as pd

#: the long tables of metrics and checks (memorization, realism, utility, reader study, FID, KL
#: classification): one number per row, the paper's value beside it where the paper has one
TABLE_COLUMNS = ["study", "model", "condition", "metric", "value", "paper_value", "note"]


def table_row(
    study: str,
    model: str,
    condition: str,
    metric: str,
    value: Any,
    paper_value: Any = "",
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One row of a long table, in :data:`TABLE_COLUMNS` order; ``extra`` columns (a table's
    own, such as ``std`` or ``n_seeds``) go between ``value`` and ``paper_value``."""
    return {
        "study": study,
        "model": model,
        "condition": condition,
        "metric": metric,
        "value": value,
        **extra,
        "paper_value": paper_value,
        "note": note,
    }


#: every inferential row names its unit (volume, participant, seed) and how many there were;
#: ``n`` counts images. An empty p_value means the units could not support a test (``note``).
PAIRED_TEST_COLUMNS = [
    "study",
    "comparison",
    "test",
    "statistic",
    "p_value",
    "p_adjusted",
    "n",
    "unit",
    "n_units",
]


def join_paired_tests(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Stack the per-study paired-test tables; the :data:`PAIRED_TEST_COLUMNS` first, extras after.

    Each input keeps its own Holm family (the adjustment is per study, made where the tests
    are), so ``p_adjusted`` is copied, not recomputed.
    """
    import pandas as pd  # heavy (pandas): imported on use

    frames = [read_tsv(path, required=PAIRED_TEST_COLUMNS) for path in paths]
    joined = pd.concat(frames, ignore_index=True, sort=False)
    extras = [column for column in joined.columns if column not in PAIRED_TEST_COLUMNS]
    return joined[PAIRED_TEST_COLUMNS + extras]
