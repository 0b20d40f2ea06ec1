"""Splits by volume (study A) and by participant (study B)."""

import logging

import pytest

from kneesynth.data.splits import (
    assign_splits,
    read_volume_splits,
    split_counts,
    split_participants,
    split_volumes,
    write_volume_splits,
)
from kneesynth.errors import InputError

VOLUMES = [f"SMIR.Body.0{20 + i}Y.M.CT.{10000 + i}" for i in range(11)]


@pytest.mark.parametrize(
    ("total", "fractions", "expected"),
    [
        (55, [9, 1, 1], (45, 5, 5)),
        (11, [9, 1, 1], (9, 1, 1)),
        (5, [9, 1, 1], (3, 1, 1)),
        (3, [9, 1, 1], (1, 1, 1)),
        (10, [1, 0, 1], (5, 0, 5)),
        (8260, [5778, 826, 1656], (5778, 826, 1656)),
    ],
)
def test_split_counts(total, fractions, expected):
    assert split_counts(total, fractions) == expected


def test_split_counts_rejects_bad_fractions():
    with pytest.raises(ValueError):
        split_counts(10, [1, 1])
    with pytest.raises(ValueError):
        split_counts(10, [0, 0, 0])


def test_assign_splits_is_seeded_and_order_free():
    first = assign_splits(VOLUMES, [9, 1, 1], seed=3)
    assert first == assign_splits(list(reversed(VOLUMES)), [9, 1, 1], seed=3)
    assert sorted(first.values()).count("test") == 1
    others = [assign_splits(VOLUMES, [9, 1, 1], seed=s) for s in range(4, 10)]
    assert any(other != first for other in others)


def test_split_by_volume_puts_each_volume_in_one_split():
    frame = split_volumes(VOLUMES, [9, 1, 1], seed=1, mode="volume")
    assert list(frame.columns) == ["volume", "split"]
    assert sorted(frame["volume"]) == sorted(VOLUMES)
    assert frame["split"].value_counts().to_dict() == {"train": 9, "val": 1, "test": 1}


def test_image_mode_has_one_row_per_view_and_warns_that_it_leaks(caplog):
    with caplog.at_level(logging.WARNING, logger="kneesynth.data.splits"):
        frame = split_volumes(VOLUMES, [9, 1, 1], seed=1, mode="image", views=12)
    assert list(frame.columns) == ["volume", "view", "split"]
    assert len(frame) == len(VOLUMES) * 12
    assert set(frame["view"]) == set(range(12))
    assert (frame.groupby("volume")["split"].nunique() > 1).any()  # the leak the warning names
    assert any("LEAKS" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_image_mode_needs_views():
    with pytest.raises(ValueError):
        split_volumes(VOLUMES, [9, 1, 1], seed=1, mode="image")


def test_split_participants_never_shares_a_participant():
    participants = [str(9000000 + i) for i in range(40)] * 3  # repeated: visits and knees
    frame = split_participants(participants, [5778, 826, 1656], seed=2)
    assert frame["participant"].is_unique
    assert len(frame) == 40
    assert set(frame["split"]) == {"train", "val", "test"}


def test_write_and_read_volume_splits(tmp_path):
    path = tmp_path / "splits" / "volumes.tsv"
    write_volume_splits(path, VOLUMES, [9, 1, 1], seed=5)
    frame = read_volume_splits(path)
    assert frame.equals(split_volumes(VOLUMES, [9, 1, 1], seed=5))


def test_read_volume_splits_rejects_unknown_split(tmp_path):
    path = tmp_path / "volumes.tsv"
    path.write_text("volume\tsplit\nA\ttrain\nB\tholdout\n")
    with pytest.raises(InputError, match="volumes.tsv: unknown split name"):
        read_volume_splits(path)
