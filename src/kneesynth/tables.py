"""Tables that join the studies (all paired tests) and the final-table conventions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from kneesynth.io import read_tsv

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
    """Stack the per-study paired-test tables; the DESIGN.md columns first, extras after.

    Each input keeps its own Holm family (the adjustment is per study, made where the tests
    are), so ``p_adjusted`` is copied, not recomputed.
    """
    frames = [read_tsv(path, required=PAIRED_TEST_COLUMNS) for path in paths]
    joined = pd.concat(frames, ignore_index=True, sort=False)
    extras = [column for column in joined.columns if column not in PAIRED_TEST_COLUMNS]
    return joined[PAIRED_TEST_COLUMNS + extras]
