"""Train/val/test splits: by volume (study A), by participant (study B), seeded.

Study A's paper split its 3300 DRRs 9:1:1 at random *over images*, so views of one CT volume
fall into train and test alike (a leak). We split by volume by default; ``mode: image`` keeps
the paper's split and logs a WARNING saying that it leaks.

``results/splits/volumes.tsv``:

* ``mode: volume`` -- one row per volume, columns ``volume``, ``split``;
* ``mode: image`` -- one row per DRR view, columns ``volume``, ``view`` (0-based index into the
  volume's ``drr`` array), ``split``.

Readers should check for the ``view`` column (:func:`read_volume_splits` does).
``results/splits/participants.tsv``: columns ``participant``, ``split``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from kneesynth.errors import InputError
from kneesynth.io import read_tsv, write_tsv

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VOLUME_SPLIT_MODES = ("volume", "image")


def split_counts(total: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of ``total`` items go to train, val and test for ``fractions`` (any scale).

    Largest-remainder rounding; every split with a positive fraction gets at least one item
    when there are enough items (so a demo with 5 volumes still has a test volume).
    """
    weights = np.asarray(fractions, dtype=float)
    if weights.shape != (3,) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers, got {fractions!r}")
    weights = weights / weights.sum()
    exact = weights * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    wanted = np.flatnonzero(weights > 0)
    if total >= len(wanted):
        for index in wanted:
            while counts[index] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[index] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def assign_splits(items: Iterable[Hashable], fractions: Sequence[float], seed: int) -> dict:
    """Map each distinct item to ``train``/``val``/``test`` at random (seeded).

    The result depends only on the set of items (they are sorted first), the fractions and the
    seed, never on the order the items came in.
    """
    unique = sorted(set(items), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    counts = split_counts(len(unique), fractions)
    labels = np.repeat(np.array(SPLITS), counts)
    return {unique[i]: str(label) for i, label in zip(order, labels, strict=True)}


def split_volumes(
    volumes: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    mode: str = "volume",
    views: int | None = None,
):
    """Study A split as a DataFrame: by volume (default) or the paper's split over images.

    ``mode: image`` needs ``views`` (DRRs per volume) and returns one row per (volume, view);
    it logs a WARNING that views of one volume land in different splits.
    """
    import pandas as pd  # heavy (pandas): imported on use

    if mode not in VOLUME_SPLIT_MODES:
        raise ValueError(f"split mode must be one of {VOLUME_SPLIT_MODES}, got {mode!r}")
    if len(set(volumes)) != len(volumes):
        raise ValueError("duplicate volume names")
    if mode == "volume":
        assignment = assign_splits(volumes, fractions, seed)
        return pd.DataFrame(
            {"volume": sorted(volumes), "split": [assignment[v] for v in sorted(volumes)]}
        )
    if not views or views < 1:
        raise ValueError("split mode 'image' needs the number of views per volume")
    pairs = [(volume, view) for volume in sorted(volumes) for view in range(int(views))]
    assignment = assign_splits(pairs, fractions, seed)
    frame = pd.DataFrame(pairs, columns=["volume", "view"])
    frame["split"] = [assignment[pair] for pair in pairs]
    leaking = int((frame.groupby("volume")["split"].nunique() > 1).sum())
    log.warning(
        "split mode 'image' (the paper's split over images) LEAKS: views of one CT volume are in "
        "more than one split (%d of %d volumes); test scores are optimistic. Use mode 'volume'.",
        leaking,
        len(volumes),
    )
    return frame


def split_participants(participants: Iterable[str], fractions: Sequence[float], seed: int):
    """Study B split by participant: DataFrame with columns ``participant``, ``split``."""
    import pandas as pd  # heavy (pandas): imported on use

    assignment = assign_splits([str(p) for p in participants], fractions, seed)
    names = sorted(assignment)
    return pd.DataFrame({"participant": names, "split": [assignment[p] for p in names]})


def write_volume_splits(
    path: str | os.PathLike,
    volumes: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    mode: str = "volume",
    views: int | None = None,
) -> None:
    """Write ``results/splits/volumes.tsv`` (see the module docstring for its columns)."""

    frame = split_volumes(volumes, fractions, seed, mode, views)
    write_tsv(path, frame)
    log.info("volume split (%s): %s", mode, frame["split"].value_counts().to_dict())


def read_volume_splits(path: str | os.PathLike):
    """Read ``volumes.tsv``; returns a DataFrame with ``volume``, ``split`` and, in image mode,
    ``view``. Checks that the splits are known names."""

    frame = read_tsv(path, required=["volume", "split"])
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        raise InputError(path, f"unknown split name(s) {', '.join(map(str, unknown))}")
    return frame
