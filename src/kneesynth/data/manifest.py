"""The manifests every study B stage reads: the real OAI manifest (``results/oai/manifest.tsv``)
and a synthetic set's ``manifest.tsv``, their columns, and how an ``image`` entry becomes a path.

pandas is imported inside the readers: :mod:`kneesynth.data.oai`, which the Snakefile imports at
parse time (where only Snakemake and numpy may be installed), takes its columns from here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kneesynth.data.splits import SPLITS
from kneesynth.errors import InputError
from kneesynth.io import read_tsv

if TYPE_CHECKING:
    import pandas as pd

KL_GRADES = (0, 1, 2, 3, 4)
#: the real manifest: one row per knee radiograph
MANIFEST_COLUMNS = ["image", "participant", "side", "visit", "kl_grade", "split"]
#: a synthetic set's manifest: one row per generated image (``dicom``: its DICOM copy, if any)
SAMPLE_MANIFEST_COLUMNS = ("image", "kl_grade", "generator", "seed", "dicom")


def resolve_image(image: str, manifest: str | os.PathLike[str]) -> Path:
    """A manifest's ``image`` entry as a path: absolute, relative to the working directory (the
    repo root under Snakemake), or else relative to the manifest's folder."""
    path = Path(str(image))
    if path.is_absolute() or path.exists():
        return path
    beside = Path(manifest).parent / path
    return beside if beside.exists() else path


def _kl_grades(frame: pd.DataFrame, path: str | os.PathLike[str]) -> pd.Series:
    """The ``kl_grade`` column as integers 0-4; else an error naming the first bad row."""
    import pandas as pd  # heavy (pandas): imported on use

    grades = pd.to_numeric(frame["kl_grade"], errors="coerce")
    bad = ~grades.isin(KL_GRADES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            path,
            f"kl_grade must be an integer 0-4; row {row + 2} has {frame['kl_grade'].iloc[row]!r}",
        )
    return grades.astype(int)


def read_oai_manifest(
    path: str | os.PathLike[str], split: str | None = None, every_split: bool = False
) -> pd.DataFrame:
    """Read ``results/oai/manifest.tsv``; keep the rows of ``split`` (train/val/test) if given.

    Checks the columns and that ``kl_grade`` is an integer in 0..4; the ``image`` column is
    resolved by :func:`resolve_image`. ``every_split``: also check that the splits are exactly
    train, val and test, none of them empty (the classifiers use all three).
    """
    frame = read_tsv(path, required=MANIFEST_COLUMNS)
    if every_split and frame.empty:
        raise InputError(path, "manifest has no images")
    frame = frame.assign(
        kl_grade=_kl_grades(frame, path),
        image=[str(resolve_image(image, path)) for image in frame["image"]],
    )
    if every_split:
        unknown = sorted(set(frame["split"]) - set(SPLITS))
        if unknown:
            raise InputError(path, f"unknown split(s) {unknown}; expected train, val, test")
        missing = [name for name in SPLITS if not (frame["split"] == name).any()]
        if missing:
            raise InputError(path, f"no images in split(s) {', '.join(missing)}")
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
        if frame.empty:
            raise InputError(path, f"no images in split {split!r}")
    return frame


def read_sample_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a synthetic set's manifest.tsv (columns image, kl_grade, generator, ...); the
    ``image`` entries are kept as written (resolve them with :func:`resolve_image`)."""
    frame = read_tsv(path, required=["image", "kl_grade", "generator"])
    if frame.empty:
        raise InputError(path, "synthetic manifest has no images")
    return frame.assign(kl_grade=_kl_grades(frame, path))


def grade_counts(kl_grades: Sequence[int] | np.ndarray) -> dict[int, int]:
    """Number of images of each KL grade 0..4 (zeros included)."""
    values = np.asarray(kl_grades, dtype=int)
    return {grade: int((values == grade).sum()) for grade in KL_GRADES}
