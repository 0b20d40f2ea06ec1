"""OAI knee radiographs -> one manifest: image, participant, side, visit, kl_grade, split.

Two input formats (config ``data.oai_format``):

``chen`` -- the layout of Chen et al. (2019), "Knee Osteoarthritis Severity Grading Dataset":
    ``<root>/{train,val,test}/{0,1,2,3,4}/<image>.png`` (the folder is the KL grade). Only
    those folders and image files (``.png``, ``.jpg``, ``.jpeg``) may be there; hidden files are
    ignored. The file name carries the participant: ``<participant><side>[_v<visit>]``, e.g.
    ``9000001L.png`` (Chen) or ``9000001L_v00.png`` (our phantom set; visit = OAI visit code).
    A name that does not match keeps the whole name as its participant (logged), so the split
    by participant then degrades to a split by image.

``raw`` -- OAI as distributed: DICOM radiographs plus the pipe-separated central-reading KL
    tables ``kXR_SQ_BU<vv>.txt`` (columns ``ID``, ``SIDE`` 1 = right, 2 = left, ``READPRJ``,
    ``V<vv>XRKL`` ...). How a DICOM is matched to a row:

    * participant: the DICOM ``PatientID`` (OAI's 7-digit ID);
    * visit: the DICOM ``ClinicalTrialTimePointID`` (0012,0050) if it reads ``V00``/``00``;
      otherwise the OAI image folder name ``<n>.<letter>.<n>`` in the file's path (``0.C.2``
      -> V00, ``1.C.2`` -> V01, ``3.C.2`` -> V03 ...);
    * side: ``ImageLaterality`` (0020,0062) or ``Laterality`` (0020,0060) ``R``/``L`` for a
      single-knee image; ``B`` or none means a bilateral PA view, split down the middle with the
      patient's right knee on the image's left half (radiographs are viewed facing the patient);
    * only series whose ``SeriesDescription`` contains ``ingest.oai_series_keyword`` (default
      ``fixed flexion``) are used, when the header has a description.

    Each knee is cropped (a centred square, ``ingest.oai_crop_fraction`` of the half-image's
    short side), windowed to its 0.5-99.5 percentiles and written as an 8-bit PNG
    ``<participant><side>_v<vv>.png`` of ``ingest.oai_image_size`` pixels.
    KL values: OAI missing-value codes (``.``, ``.A: Not Expected``, ``.B``, ... or empty) stop
    with an error naming the file and line, unless ``ingest.oai_missing_kl: drop``; grades
    outside 0-4 always stop. When several reading projects graded one knee-visit, the row of
    the first project in ``ingest.oai_readprj_priority`` wins, else the lowest ``READPRJ``.

Splits (``splits.oai_mode``): ``participant`` (default) assigns participants to train/val/test
at random (seeded, ``splits.oai_fractions``); ``folder`` keeps Chen's folders and logs a WARNING
if a participant's images sit in more than one split.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kneesynth.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GRADES = ("0", "1", "2", "3", "4")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST_COLUMNS = ["image", "participant", "side", "visit", "kl_grade", "split"]
SIDE_CODES = {1: "R", 2: "L"}
KL_GRADES = (0, 1, 2, 3, 4)

_IMAGE_ID = re.compile(r"^(?P<participant>\d{5,})(?P<side>[LR])?(?:[_-][vV]?(?P<visit>\d{1,2}))?$")
_KL_COLUMN = re.compile(r"^V(?P<visit>\d{2})XRKL$", re.IGNORECASE)
_CODED_INT = re.compile(r"^\s*(?P<value>[+-]?\d+)\s*(?::.*)?$")
_VISIT_FOLDER = re.compile(r"^(?P<visit>\d{1,2})\.[A-Za-z]\.\d+$")
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


def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def read_chen_layout(root: str | os.PathLike):
    """Index a Chen-layout folder: DataFrame with the manifest columns (split = folder split).

    Raises :class:`InputError` naming the offending path for: a missing folder, a folder other
    than train/val/test or 0-4, a file that is not a PNG/JPEG image, no images at all, or two
    images with the same ID (file name without extension).
    """
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "OAI folder not found")
    rows, seen, unparsed = [], {}, 0
    for split_dir in _visible(root.iterdir()):
        if not split_dir.is_dir():
            raise InputError(
                split_dir,
                "unexpected file in the Chen layout (expected only the folders train, val, test)",
            )
        if split_dir.name not in SPLITS:
            raise InputError(
                split_dir, f"unknown split folder {split_dir.name!r} (expected train, val, test)"
            )
        for grade_dir in _visible(split_dir.iterdir()):
            if not grade_dir.is_dir():
                raise InputError(
                    grade_dir,
                    "unexpected file in a split folder (expected only the KL grade folders 0-4)",
                )
            if grade_dir.name not in GRADES:
                raise InputError(
                    grade_dir, f"not a KL grade folder {grade_dir.name!r} (expected 0, 1, 2, 3, 4)"
                )
            for image in _visible(grade_dir.iterdir()):
                if image.is_dir() or image.suffix.lower() not in IMAGE_SUFFIXES:
                    raise InputError(image, "not an image file (expected .png, .jpg or .jpeg)")
                _check_image_file(image)
                image_id = image.stem
                if image_id in seen:
                    raise InputError(
                        image, f"duplicate image ID {image_id!r} (also {seen[image_id]})"
                    )
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
# Raw OAI: KL tables
# --------------------------------------------------------------------------------------------
def _is_missing_code(value: str) -> bool:
    text = value.strip()
    return text == "" or text.startswith(".")


def read_kl_table(path: str | os.PathLike, missing: str = "error"):
    """Read one pipe-separated OAI KL table (``kXR_SQ_BU<vv>.txt``).

    Returns a DataFrame with columns participant, side (R/L), visit (V00 ...), readprj,
    kl_grade, line (1-based line in the file). ``missing``: ``error`` stops at the first OAI
    missing-value code; ``drop`` leaves those rows out.
    """
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, sep="|", dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(path, "KL table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(
            path, f"cannot read the pipe-separated KL table ({' '.join(str(error).split())})"
        ) from None
    columns = {c.strip().upper(): c for c in table.columns}
    kl_columns = [
        (c, _KL_COLUMN.match(c.strip()).group("visit"))
        for c in table.columns
        if _KL_COLUMN.match(c.strip())
    ]
    absent = [name for name in ("ID", "SIDE") if name not in columns]
    if absent or not kl_columns:
        wanted = ", ".join(absent + ([] if kl_columns else ["V<vv>XRKL"]))
        raise InputError(path, f"missing column(s) {wanted}")
    rows, dropped = [], 0
    for index, record in table.iterrows():
        line = int(index) + 2  # header is line 1
        participant = record[columns["ID"]].strip()
        side_text = record[columns["SIDE"]]
        side_match = _CODED_INT.match(side_text)
        if not participant or not side_match or int(side_match.group("value")) not in SIDE_CODES:
            raise InputError(
                path,
                f"line {line}: bad ID/SIDE {participant!r}/{side_text!r} (SIDE must be 1 = right or 2 = left)",
            )
        readprj_text = record[columns["READPRJ"]] if "READPRJ" in columns else ""
        readprj_match = _CODED_INT.match(readprj_text)
        readprj = int(readprj_match.group("value")) if readprj_match else -1
        for column, visit in kl_columns:
            value = record[column]
            if _is_missing_code(value):
                if missing == "drop":
                    dropped += 1
                    continue
                raise InputError(
                    path,
                    f"line {line}: missing KL grade {value.strip()!r} in {column.strip()} "
                    "(OAI missing-value code; set ingest.oai_missing_kl: drop to skip such rows)",
                )
            match = _CODED_INT.match(value)
            if not match or not 0 <= int(match.group("value")) <= 4:
                raise InputError(
                    path, f"line {line}: KL grade {value.strip()!r} in {column.strip()} is not 0-4"
                )
            rows.append(
                {
                    "participant": participant,
                    "side": SIDE_CODES[int(side_match.group("value"))],
                    "visit": f"V{visit}",
                    "readprj": readprj,
                    "kl_grade": int(match.group("value")),
                    "line": line,
                }
            )
    if dropped:
        log.info("%s: dropped %d KL value(s) with OAI missing-value codes", path, dropped)
    return pd.DataFrame(
        rows, columns=["participant", "side", "visit", "readprj", "kl_grade", "line"]
    )


def read_kl_tables(
    paths: Sequence[str | os.PathLike], missing: str = "error", readprj_priority: Sequence[int] = ()
):
    """Read and merge KL tables: one grade per (participant, side, visit).

    Several reading projects may have graded one knee-visit: the first project in
    ``readprj_priority`` wins, else the lowest READPRJ number.
    """
    import pandas as pd

    if not paths:
        raise InputError("data.oai_kl_tables", "no KL tables (kXR_SQ_BU*.txt) given or found")
    frames = []
    for path in paths:
        frame = read_kl_table(path, missing)
        frame["source"] = str(path)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    rank = {int(p): i for i, p in enumerate(readprj_priority)}
    table["rank"] = [rank.get(int(p), len(rank) + max(int(p), 0) + 1) for p in table["readprj"]]
    table = table.sort_values(["participant", "side", "visit", "rank"], kind="stable")
    table = table.drop_duplicates(["participant", "side", "visit"], keep="first")
    return table.drop(columns=["rank"]).reset_index(drop=True)


def find_kl_tables(oai_dir: str | os.PathLike) -> list[Path]:
    """``kXR_SQ_BU*.txt`` files under ``oai_dir`` (case-insensitive), sorted."""
    return sorted(
        p
        for p in Path(oai_dir).rglob("*")
        if p.is_file() and re.fullmatch(r"kxr_sq_bu\d*\.txt", p.name, re.IGNORECASE)
    )


# --------------------------------------------------------------------------------------------
# Raw OAI: DICOM radiographs
# --------------------------------------------------------------------------------------------
def _dicom_candidates(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(
            part.startswith(".") for part in path.relative_to(folder).parts
        ):
            continue
        if path.suffix.lower() in (".dcm", ".dicom"):
            found.append(path)
        elif not path.suffix:
            with open(path, "rb") as handle:
                handle.seek(128)
                if handle.read(4) == b"DICM":
                    found.append(path)
    return found


def _visit_of(header, path: Path) -> str | None:
    time_point = str(header.get("ClinicalTrialTimePointID", "") or "").strip()
    match = re.fullmatch(r"[vV]?(\d{1,2})", time_point)
    if match:
        return f"V{int(match.group(1)):02d}"
    for part in reversed(path.parts[:-1]):
        match = _VISIT_FOLDER.match(part)
        if match:
            return f"V{int(match.group('visit')):02d}"
    return None


def scan_oai_dicoms(folder: str | os.PathLike, series_keyword: str = "fixed flexion"):
    """Headers of the knee radiographs under ``folder``: DataFrame path, participant, visit,
    laterality (R, L or B for bilateral)."""
    import pandas as pd
    import pydicom

    folder = Path(folder)
    rows = []
    for path in _dicom_candidates(folder):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError) as error:
            raise InputError(path, f"not a readable DICOM file ({error})") from None
        description = str(header.get("SeriesDescription", "") or "")
        if description and series_keyword and series_keyword.lower() not in description.lower():
            log.info("%s: skipped (series %r)", path, description)
            continue
        participant = str(header.get("PatientID", "") or "").strip()
        if not participant:
            raise InputError(path, "no PatientID: cannot tell the OAI participant")
        visit = _visit_of(header, path)
        if visit is None:
            raise InputError(
                path,
                "cannot tell the visit: no ClinicalTrialTimePointID and no "
                "OAI visit folder (like 0.C.2) in the path",
            )
        laterality = (
            str(header.get("ImageLaterality", "") or header.get("Laterality", "") or "B")
            .strip()
            .upper()
        )
        if laterality not in ("R", "L", "B"):
            raise InputError(path, f"unknown laterality {laterality!r} (expected R, L or B)")
        rows.append(
            {
                "path": str(path),
                "participant": participant,
                "visit": visit,
                "laterality": laterality,
            }
        )
    if not rows:
        raise InputError(folder, "no OAI knee radiographs (DICOM) found")
    return pd.DataFrame(rows)


def dicom_knee_crops(
    path: str | os.PathLike, laterality: str, crop_fraction: float, image_size: int
) -> dict[str, np.ndarray]:
    """8-bit square crops ``{side: (image_size, image_size) uint8}`` of one radiograph."""
    import pydicom
    from PIL import Image

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.astype(np.float32)
    except Exception as error:  # pydicom raises many types for bad pixel data
        raise InputError(
            path, f"cannot read the pixel data ({type(error).__name__}: {error})"
        ) from None
    if pixels.ndim != 2:
        raise InputError(
            path, f"expected a 2D grey radiograph, got pixel array shape {pixels.shape}"
        )
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() - pixels  # bone bright
    height, width = pixels.shape
    halves = (
        {laterality: pixels}
        if laterality in ("R", "L")
        else {"R": pixels[:, : width // 2], "L": pixels[:, width // 2 :]}
    )
    crops = {}
    for side, half in halves.items():
        h, w = half.shape
        size = max(2, int(min(h, w) * crop_fraction))
        top, left = (h - size) // 2, (w - size) // 2
        crop = half[top : top + size, left : left + size]
        low, high = np.percentile(crop, [0.5, 99.5])
        scaled = np.clip((crop - low) / max(high - low, 1e-6), 0.0, 1.0)
        image = Image.fromarray(np.rint(scaled * 255).astype(np.uint8), mode="L")
        crops[side] = np.asarray(image.resize((image_size, image_size), Image.Resampling.LANCZOS))
    return crops


def build_raw_manifest(
    oai_dir: str | os.PathLike,
    kl_tables: Sequence[str | os.PathLike],
    image_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
):
    """Convert raw OAI DICOMs to PNG crops in ``image_dir`` and match them to KL grades.

    Keys used (``ingest`` section): ``oai_missing_kl``, ``oai_readprj_priority``,
    ``oai_series_keyword``, ``oai_crop_fraction``, ``oai_image_size``. Returns the manifest
    without the split column. Knees without a KL grade are left out (logged).
    """
    import pandas as pd
    from PIL import Image

    from kneesynth.io import atomic_path

    tables = list(kl_tables) or find_kl_tables(oai_dir)
    if not tables:
        raise InputError(
            oai_dir, "no KL tables (kXR_SQ_BU*.txt) found; name them in data.oai_kl_tables"
        )
    grades = read_kl_tables(tables, cfg["oai_missing_kl"], cfg["oai_readprj_priority"])
    grade_of = {(r.participant, r.side, r.visit): int(r.kl_grade) for r in grades.itertuples()}
    headers = scan_oai_dicoms(oai_dir, cfg["oai_series_keyword"])
    image_dir = Path(image_dir)
    rows, origin, ungraded = [], {}, 0
    for record in headers.itertuples():
        sides = [record.laterality] if record.laterality in ("R", "L") else ["R", "L"]
        for side in sides:
            key = (record.participant, side, record.visit)
            if key in origin:
                raise InputError(
                    record.path,
                    f"duplicate image ID {record.participant}{side}_{record.visit} (also {origin[key]})",
                )
            origin[key] = record.path
    for record in headers.itertuples():
        wanted = [
            s
            for s in (["R", "L"] if record.laterality == "B" else [record.laterality])
            if (record.participant, s, record.visit) in grade_of
        ]
        ungraded += (2 if record.laterality == "B" else 1) - len(wanted)
        if not wanted:
            continue
        crops = dicom_knee_crops(
            record.path, record.laterality, cfg["oai_crop_fraction"], cfg["oai_image_size"]
        )
        for side in wanted:
            out = image_dir / f"{record.participant}{side}_v{record.visit[1:]}.png"
            with atomic_path(out) as tmp:
                Image.fromarray(crops[side], mode="L").save(tmp, format="PNG")
            rows.append(
                {
                    "image": str(out),
                    "participant": record.participant,
                    "side": side,
                    "visit": record.visit,
                    "kl_grade": grade_of[(record.participant, side, record.visit)],
                }
            )
    if ungraded:
        log.warning("%d knee image(s) have no KL grade in the tables and are left out", ungraded)
    if not rows:
        raise InputError(oai_dir, "no radiograph matches a KL grade in the tables")
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS[:-1])


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``path``; it replaces ``path`` on success, vanishes on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# Splits and the manifest
# --------------------------------------------------------------------------------------------
def assign_participant_splits(manifest, mode: str, fractions: Sequence[float], seed: int):
    """Add the ``split`` column; return ``(manifest, participants)`` DataFrames.

    ``participant`` mode: seeded split of participants. ``folder`` mode: keep the manifest's
    split (Chen's folders) and warn if a participant spans splits.
    """
    import pandas as pd

    from kneesynth.splits import split_participants

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
) -> None:
    """Write ``manifest.tsv`` and ``participants.tsv`` for a Chen-layout or raw OAI folder.

    ``seed`` is the workflow's base seed; ``splits_cfg`` keys used: ``oai_mode``,
    ``oai_fractions``. For ``raw``,
    ``image_dir`` receives the PNG crops.
    """
    from kneesynth.io import write_tsv
    from kneesynth.seeding import derive_seed

    if oai_format == "chen":
        manifest = read_chen_layout(oai_dir)
    elif oai_format == "raw":
        if image_dir is None:
            raise ValueError("raw OAI needs an image_dir for the PNG crops")
        if splits_cfg["oai_mode"] == "folder":
            raise InputError(
                oai_dir,
                "splits.oai_mode 'folder' needs the Chen layout; raw OAI has no split folders",
            )
        image_dir = Path(image_dir)
        with staged_directory(image_dir) as staging:
            manifest = build_raw_manifest(oai_dir, kl_tables, staging, ingest_cfg)
        manifest["image"] = [str(image_dir / Path(p).name) for p in manifest["image"]]
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


# --------------------------------------------------------------------------------------------
# Reading the manifest (every study B stage; torch-free, so table and figure jobs can too)


def read_oai_manifest(path: str | os.PathLike[str], split: str | None = None) -> pd.DataFrame:
    """Read ``results/oai/manifest.tsv``; keep the rows of ``split`` (train/val/test) if given.

    Checks the columns and that ``kl_grade`` is an integer in 0..4; the ``image`` column is
    resolved by :func:`resolve_image`.
    """
    import pandas as pd

    from kneesynth.io import read_tsv

    frame = read_tsv(path, required=MANIFEST_COLUMNS)
    grades = pd.to_numeric(frame["kl_grade"], errors="coerce")
    bad = ~grades.isin(KL_GRADES)
    if bad.any():
        raise InputError(
            path,
            f"kl_grade must be 0-4; row {int(np.flatnonzero(bad)[0]) + 2} has "
            f"{frame['kl_grade'].iloc[int(np.flatnonzero(bad)[0])]!r}",
        )
    frame = frame.assign(
        kl_grade=grades.astype(int),
        image=[str(resolve_image(image, path)) for image in frame["image"]],
    )
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
        if frame.empty:
            raise InputError(path, f"no images in split {split!r}")
    return frame


def resolve_image(image: str, manifest: str | os.PathLike[str]) -> Path:
    """An image path of a manifest: absolute, relative to the working directory (the repo root
    under Snakemake), or else relative to the manifest's folder."""
    path = Path(str(image))
    if path.is_absolute() or path.exists():
        return path
    beside = Path(manifest).parent / path
    return beside if beside.exists() else path


def grade_counts(kl_grades: Sequence[int] | np.ndarray) -> dict[int, int]:
    """Number of images of each KL grade 0..4 (zeros included)."""
    values = np.asarray(kl_grades, dtype=int)
    return {grade: int((values == grade).sum()) for grade in KL_GRADES}
