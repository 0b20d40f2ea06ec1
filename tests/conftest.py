"""Shared fixtures: pydicom's test files, a tiny OAI set, a study A dataset file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kneesynth.io import save_npz


@pytest.fixture
def pydicom_file():
    """``get(name)``: the path of one of pydicom's own test files (real DICOM from scanners and
    toolkits; the larger ones come with the pydicom-data package). Skips the test without it."""
    from pydicom.data import get_testdata_file

    def get(name: str) -> str:
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
        return path

    return get


def write_tiny_oai(
    folder: Path,
    draw,
    per_grade=(3, 3, 3, 3, 3),
    seed: int = 0,
    path: str = "oai/{split}/{grade}/{split}_{grade}_{i}.png",
    participant: str = "{split}{grade}{i}",
    side: str = "R",
) -> Path:
    """A tiny OAI set: ``per_grade[g]`` PNGs of KL grade g in each split, and its manifest.

    ``draw(rng, grade)`` makes one uint8 image (one ``rng`` seeded by ``seed``, drawn in split,
    grade, index order); ``path`` and ``participant`` are formats of ``split``, ``grade`` and
    ``i``. Returns ``folder/manifest.tsv``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("train", "val", "test"):
        for grade, count in enumerate(per_grade):
            for i in range(count):
                image = draw(rng, grade)
                file = folder / path.format(split=split, grade=grade, i=i)
                file.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(file)
                rows.append(
                    {
                        "image": str(file),
                        "participant": participant.format(split=split, grade=grade, i=i),
                        "side": side,
                        "visit": "V00",
                        "kl_grade": grade,
                        "split": split,
                    }
                )
    manifest = folder / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return manifest


@pytest.fixture(scope="session")
def tiny_oai():
    """:func:`write_tiny_oai`: a tiny OAI set of PNGs with its manifest (a test module binds
    its own images by overriding this fixture)."""
    return write_tiny_oai


def write_study_a_dataset(path: Path, drr, split, volume, view, contour=None, bone=None) -> Path:
    """Study A's dataset file as assemble_dataset writes it: ``drr``, ``contour`` and ``bone``
    (n, H, W) float32 (masks all zero unless given), ``volume``, ``view`` and ``split`` (n,)."""
    drr = np.asarray(drr, dtype=np.float32)
    zeros = np.zeros_like(drr)
    save_npz(
        path,
        drr=drr,
        contour=zeros if contour is None else contour,
        bone=zeros if bone is None else bone,
        volume=np.asarray(volume),
        view=np.asarray(view),
        split=np.asarray(split),
    )
    return path


@pytest.fixture(scope="session")
def study_a_dataset():
    """:func:`write_study_a_dataset`: a study A dataset file from arrays."""
    return write_study_a_dataset
