"""OAI knee radiographs -> one manifest: image, participant, side, visit, kl_grade, split.

Two input formats (config ``data.oai_format``):

``chen`` -- the layout of Chen et al. (2019), "Knee Osteoarthritis Severity Grading Dataset":
    ``<root>/{train,val,test}/{0,1,2,3,4}/<image>.png`` (the folder is the KL grade). Only
    those folders and image files (``.png``, ``.jpg``, ``.jpeg``) may be there; hidden files are
    ignored; every image is decoded once (:mod:`kneesynth.data.images`), and every bad path is
    logged before the error. The file name carries the participant:
    ``<participant><side>[_v<visit>]``, e.g.
    ``9000001L.png`` (Chen) or ``9000001L_v00.png`` (our phantom set; visit = OAI visit code).
    A name that does not match keeps the whole name as its participant (logged), so the split
    by participant then degrades to a split by image.

``raw`` -- OAI as distributed: DICOM radiographs plus the central-reading KL tables, read by
    :mod:`kneesynth.data.oai_raw`.

Splits (``splits.oai_mode``): ``participant`` (default) assigns participants to train/val/test
at random (seeded, ``splits.oai_fractions``); ``folder`` keeps Chen's folders and logs a WARNING
if a participant's images sit in more than one split.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kneesynth.data.images import check_radiograph
from kneesynth.data.manifest import MANIFEST_COLUMNS
from kneesynth.data.oai_raw import build_raw_manifest, raw_manifest_from_crops, visible_entries
from kneesynth.data.splits import SPLITS, split_participants
from kneesynth.errors import InputError, raise_problems
from kneesynth.io import staged_directory, write_tsv
from kneesynth.seeding import derive_seed

log = logging.getLogger(__name__)

GRADES = ("0", "1", "2", "3", "4")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_IMAGE_ID = re.compile(r"^(?P<participant>\d{5,})(?P<side>[LR])?(?:[_-][vV]?(?P<visit>\d{1,2}))?$")
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff"}


def parse_image_id(stem: str) -> tuple[str, str, str]:
    """``(participant, side, visit)`` of an image ID like ``9000001L`` or ``9000001L_v00``.

    ``side`` is ``R``/``L`` or ``""``; ``visit`` is ``V00``-style or ``""``. An ID that does not
    match returns ``(stem, "", "")``.
    """
    match = _IMAGE_ID.match(stem)
    if not match:
        return stem, "", ""
    visit = match.group("visit")
    return (
        match.group("participant"),
        match.group("side") or "",
        f"V{int(visit):02d}" if visit else "",
    )


def _check_image_file(path: Path) -> None:
    magic = _MAGIC[path.suffix.lower()]
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(magic))
    except OSError as error:
        raise InputError(path, f"cannot read ({error.strerror})") from None
    if head != magic:
        raise InputError(
            path, f"not a {path.suffix.lstrip('.').upper()} image (wrong file signature)"
        )


def read_chen_layout(root: str | os.PathLike):
    """Index a Chen-layout folder: DataFrame with the manifest columns (split = folder split).

    Every image is decoded once (:func:`kneesynth.data.images.check_radiograph`: a truncated file
    fails here, not in training). Raises :class:`InputError` naming the offending path for: a
    missing folder, a folder other than train/val/test or 0-4, a file that is not a PNG/JPEG
    image or cannot be decoded, no images at all, or two images with the same ID (file name
    without extension). Every bad path is logged before the error, so one run lists them all.
    """
    import pandas as pd  # heavy (pandas): imported on use

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "OAI folder not found")
    rows, seen, unparsed, problems = [], {}, 0, []
    for split_dir in visible_entries(root.iterdir()):
        if not split_dir.is_dir():
            problems.append(
                InputError(
                    split_dir,
                    "unexpected file in the Chen layout (expected only the folders train, val, "
                    "test)",
                )
            )
            continue
        if split_dir.name not in SPLITS:
            problems.append(
                InputError(
                    split_dir,
                    f"unknown split folder {split_dir.name!r} (expected train, val, test)",
                )
            )
            continue
        for grade_dir in visible_entries(split_dir.iterdir()):
            if not grade_dir.is_dir():
                problems.append(
                    InputError(
                        grade_dir,
                        "unexpected file in a split folder (expected only the KL grade folders "
                        "0-4)",
                    )
                )
                continue
            if grade_dir.name not in GRADES:
                problems.append(
                    InputError(
                        grade_dir,
                        f"not a KL grade folder {grade_dir.name!r} (expected 0, 1, 2, 3, 4)",
                    )
                )
                continue
            for image in visible_entries(grade_dir.iterdir()):
                try:
                    if image.is_dir() or image.suffix.lower() not in IMAGE_SUFFIXES:
                        raise InputError(image, "not an image file (expected .png, .jpg or .jpeg)")
                    _check_image_file(image)
                    check_radiograph(image)
                    image_id = image.stem
                    if image_id in seen:
                        raise InputError(
                            image, f"duplicate image ID {image_id!r} (also {seen[image_id]})"
                        )
                except InputError as problem:
                    problems.append(problem)
                    continue
                seen[image_id] = image
                participant, side, visit = parse_image_id(image_id)
                unparsed += side == "" and participant == image_id
                rows.append(
                    {
                        "image": str(image),
                        "participant": participant,
                        "side": side,
                        "visit": visit,
                        "kl_grade": int(grade_dir.name),
                        "split": split_dir.name,
                    }
                )
    raise_problems(problems, "bad path(s)")
    if not rows:
        raise InputError(root, "no images in the Chen layout {train,val,test}/{0..4}/")
    if unparsed:
        log.warning(
            "%d of %d image IDs do not read as <participant><L|R>[_v<visit>]; each is "
            "taken as its own participant",
            unparsed,
            len(rows),
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


# --------------------------------------------------------------------------------------------
# Splits and the manifest
# --------------------------------------------------------------------------------------------
def assign_participant_splits(manifest, mode: str, fractions: Sequence[float], seed: int):
    """Add the ``split`` column; return ``(manifest, participants)`` DataFrames.

    ``participant`` mode: seeded split of participants. ``folder`` mode: keep the manifest's
    split (Chen's folders) and warn if a participant spans splits.
    """
    import pandas as pd  # heavy (pandas): imported on use

    manifest = manifest.copy()
    if mode == "participant":
        participants = split_participants(manifest["participant"].unique(), fractions, seed)
        manifest["split"] = manifest["participant"].map(
            dict(zip(participants["participant"], participants["split"], strict=True))
        )
    elif mode == "folder":
        if "split" not in manifest or manifest["split"].isna().any():
            raise ValueError("split mode 'folder' needs the Chen layout's split folders")
        participants = (
            manifest[["participant", "split"]]
            .drop_duplicates()
            .sort_values(["participant", "split"])
        )
        spanning = int(participants["participant"].duplicated().sum())
        if spanning:
            log.warning(
                "splits.oai_mode 'folder' LEAKS: %d participant(s) have images in more than "
                "one split; use oai_mode 'participant'",
                spanning,
            )
        participants = participants.reset_index(drop=True)
    else:
        raise ValueError(f"unknown OAI split mode {mode!r} (participant or folder)")
    manifest = manifest.sort_values(
        ["split", "participant", "side", "visit", "image"], kind="stable"
    )
    return manifest[MANIFEST_COLUMNS].reset_index(drop=True), pd.DataFrame(participants)


def ingest_oai(
    oai_dir: str | os.PathLike,
    oai_format: str,
    manifest_tsv: str | os.PathLike,
    participants_tsv: str | os.PathLike,
    ingest_cfg: Mapping[str, Any],
    splits_cfg: Mapping[str, Any],
    seed: int,
    kl_tables: Sequence[str] = (),
    image_dir: str | os.PathLike | None = None,
    crop_dirs: Sequence[str | os.PathLike] | None = None,
) -> None:
    """Write ``manifest.tsv`` and ``participants.tsv`` for a Chen-layout or raw OAI folder.

    ``seed`` is the workflow's base seed; ``splits_cfg`` keys used: ``oai_mode``,
    ``oai_fractions``. For ``raw``: ``crop_dirs`` are the folders the crop jobs wrote
    (:func:`crop_oai_batch`, one per batch); without them every batch is cropped here, into
    ``image_dir/<batch>/``.
    """

    if oai_format == "chen":
        manifest = read_chen_layout(oai_dir)
    elif oai_format == "raw":
        if image_dir is None and crop_dirs is None:
            raise ValueError("raw OAI needs crop_dirs or an image_dir for the PNG crops")
        if splits_cfg["oai_mode"] == "folder":
            raise InputError(
                oai_dir,
                "splits.oai_mode 'folder' needs the Chen layout; raw OAI has no split folders",
            )
        if crop_dirs is not None:
            manifest = raw_manifest_from_crops(crop_dirs, kl_tables, ingest_cfg, oai_dir)
        else:
            image_dir = Path(image_dir)
            with staged_directory(image_dir) as staging:
                manifest = build_raw_manifest(oai_dir, kl_tables, staging, ingest_cfg)
            manifest["image"] = [
                str(image_dir / Path(p).relative_to(staging)) for p in manifest["image"]
            ]
    else:
        raise ValueError(f"unknown data.oai_format {oai_format!r} (chen or raw)")
    manifest, participants = assign_participant_splits(
        manifest,
        splits_cfg["oai_mode"],
        splits_cfg["oai_fractions"],
        derive_seed(int(seed), "splits", "participants"),
    )
    write_tsv(participants_tsv, participants)
    write_tsv(manifest_tsv, manifest)
    counts = manifest.groupby(["split", "kl_grade"]).size().unstack(fill_value=0)
    log.info(
        "OAI manifest: %d images of %d participants; images per split and KL grade:\n%s",
        len(manifest),
        manifest["participant"].nunique(),
        counts.to_string(),
    )
