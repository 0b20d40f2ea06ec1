"""Raw OAI (config ``data.oai_format: raw``) -> knee crops and their KL grades.

OAI as distributed: DICOM radiographs plus the pipe-separated central-reading KL
    tables ``kXR_SQ_BU<vv>.txt`` (columns ``ID``, ``SIDE`` 1 = right, 2 = left, ``READPRJ``,
    ``V<vv>XRKL`` ...). The folder is read in batches, one job each: its subfolders (OAI's
    visit folders ``0.C.2``, ``1.C.2`` ...) and the DICOM files directly in it
    (:func:`oai_batches`), so that one bad file stops its batch only and ``--keep-going``
    reports every bad batch in one run; within a batch every bad file is logged. What a file
    is, and how it is matched to a row:

    * skipped (and counted in the error if nothing is left): a DICOMDIR, non-image objects and
      series whose ``SeriesDescription`` does not contain ``ingest.oai_series_keyword``
      (default ``fixed flexion``), compared without case, punctuation or spaces
      (``BILAT PA FIXED-FLEXION KNEE`` matches);
    * refused (``ingest.input_checks: strict``; a WARNING under ``relaxed``, for sites whose
      headers are poor): a ``Modality`` other than CR or DX, and a file whose
      ``BodyPartExamined`` does not name the knee when no series description names it or the
      keyword;
    * participant: the DICOM ``PatientID`` (OAI's 7-digit ID);
    * visit: the DICOM ``ClinicalTrialTimePointID`` (0012,0050) if it reads ``V00``/``00``;
      otherwise the OAI image folder name ``<n>.<letter>.<n>`` in the file's path (``0.C.2``
      -> V00, ``1.C.2`` -> V01, ``3.C.2`` -> V03 ...);
    * side: ``ImageLaterality`` (0020,0062) or ``Laterality`` (0020,0060) ``R``/``L`` for a
      single-knee image; ``B`` or none means a bilateral PA view, split down the middle with the
      patient's right knee on the image's left half (radiographs are viewed facing the patient).

    Each knee is cropped to a centred square of ``ingest.oai_crop_mm`` millimetres (from
    ``PixelSpacing``, else ``ImagerPixelSpacing``; a missing or zero spacing is refused unless
    ``ingest.oai_pixel_spacing_mm`` gives a fallback, which is logged), windowed to its 0.5-99.5
    percentiles and written as an 8-bit PNG ``<participant><side>_v<vv>.png`` of
    ``ingest.oai_image_size`` pixels (:func:`kneesynth.data.images.dicom_knee_crops`; compressed
    transfer syntaxes need ``pip install -e ".[dicom]"``).
    KL values: OAI missing-value codes (``.``, ``.A: Not Expected``, ``.B``, ... or empty) stop
    with an error naming the file and line, unless ``ingest.oai_missing_kl: drop``; grades
    outside 0-4 always stop. When several reading projects graded one knee-visit, the row of
    the first project in ``ingest.oai_readprj_priority`` wins, else the lowest ``READPRJ``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.data.ct_volumes import refuse
from kneesynth.data.images import dicom_knee_crops, read_dicom
from kneesynth.data.manifest import MANIFEST_COLUMNS
from kneesynth.errors import InputError, raise_problems
from kneesynth.io import read_tsv, staged_directory, write_tsv

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Raw OAI: KL tables
# --------------------------------------------------------------------------------------------
SIDE_CODES = {1: "R", 2: "L"}
#: Modalities of a knee radiograph: computed and digital radiography.
RADIOGRAPH_MODALITIES = ("CR", "DX")
#: The batch of DICOM files lying directly in the raw OAI folder (not in a subfolder).
TOP_BATCH = "_top"
#: Columns of a crop job's radiographs.tsv.
CROP_COLUMNS = ["image", "participant", "side", "visit", "source"]
_KL_COLUMN = re.compile(r"^V(?P<visit>\d{2})XRKL$", re.IGNORECASE)
_CODED_INT = re.compile(r"^\s*(?P<value>[+-]?\d+)\s*(?::.*)?$")
_VISIT_FOLDER = re.compile(r"^(?P<visit>\d{1,2})\.[A-Za-z]\.\d+$")


def visible_entries(entries: Iterable[Path]) -> list[Path]:
    """The entries of a folder that are not hidden (no leading dot), sorted."""
    return sorted(p for p in entries if not p.name.startswith("."))


def _is_missing_code(value: str) -> bool:
    text = value.strip()
    return text == "" or text.startswith(".")


def read_kl_table(path: str | os.PathLike, missing: str = "error"):
    """Read one pipe-separated OAI KL table (``kXR_SQ_BU<vv>.txt``).

    Returns a DataFrame with columns participant, side (R/L), visit (V00 ...), readprj,
    kl_grade, line (1-based line in the file). ``missing``: ``error`` stops at the first OAI
    missing-value code; ``drop`` leaves those rows out.
    """
    import pandas as pd  # heavy (pandas): imported on use

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
    import pandas as pd  # heavy (pandas): imported on use

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
def _dicom_candidates(folder: Path, recursive: bool = True) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not path.is_file() or any(
            part.startswith(".") for part in path.relative_to(folder).parts
        ):
            continue
        if path.suffix.lower() in (".dcm", ".dicom"):
            found.append(path)
        elif not path.suffix:
            try:
                with open(path, "rb") as handle:
                    handle.seek(128)
                    if handle.read(4) == b"DICM":
                        found.append(path)
            except OSError as error:
                raise InputError(path, f"cannot read ({error.strerror})") from None
    return found


def oai_batches(oai_dir: str | os.PathLike) -> list[str]:
    """The units of work of a raw OAI folder, one crop job each: its visible subfolders (OAI's
    visit folders ``0.C.2``, ``1.C.2`` ...), and :data:`TOP_BATCH` if DICOM files lie directly
    in it. Cheap: lists one folder level and reads 132 bytes of its suffix-less files."""
    root = Path(oai_dir)
    if not root.is_dir():
        raise InputError(root, "OAI folder not found")
    batches = [p.name for p in visible_entries(root.iterdir()) if p.is_dir()]
    if _dicom_candidates(root, recursive=False):
        batches.append(TOP_BATCH)
    return batches


def batch_folder(oai_dir: str | os.PathLike, batch: str) -> Path:
    """The folder a crop job reads: ``oai_dir`` itself for :data:`TOP_BATCH`."""
    return Path(oai_dir) if batch == TOP_BATCH else Path(oai_dir) / batch


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


def normalise_series_text(text: str) -> str:
    """Lower case without punctuation or spaces: ``'BILAT PA FIXED-FLEXION KNEE'`` ->
    ``'bilatpafixedflexionknee'`` (series descriptions are spelled every way)."""
    return re.sub(r"[^0-9a-z]", "", str(text).casefold())


def series_matches(description: str, keyword: str) -> bool:
    """Whether ``description`` contains ``keyword``, ignoring case, punctuation and spaces."""
    return normalise_series_text(keyword) in normalise_series_text(description)


def radiograph_header(
    path: Path, series_keyword: str = "fixed flexion", checks: str = "strict"
) -> tuple[dict[str, str] | None, str | None]:
    """``(record, None)`` for a knee radiograph to use, ``(None, why)`` for a file to skip.

    Skipped: a DICOMDIR, a non-image object, a series whose ``SeriesDescription`` does not
    contain ``series_keyword`` (:func:`series_matches`). Refused (:func:`kneesynth.data.ingest.
    refuse`: an error under ``checks`` strict, a WARNING under relaxed): a Modality other than
    CR or DX; no ``BodyPartExamined`` naming the knee and no series description naming the
    keyword or the knee. Errors: no PatientID, no visit, an unknown laterality. The record holds
    participant, visit and laterality (R, L, or B for a bilateral view).
    """
    from pydicom.uid import MediaStorageDirectoryStorage  # heavy (pydicom): imported on use

    header = read_dicom(path, stop_before_pixels=True)
    meta = getattr(header, "file_meta", None)
    sop_class = str(header.get("SOPClassUID") or (meta or {}).get("MediaStorageSOPClassUID", ""))
    if sop_class == MediaStorageDirectoryStorage or path.name.upper() == "DICOMDIR":
        return None, "a DICOMDIR (an index of files)"
    if "Rows" not in header:
        return None, "not an image"
    description = str(header.get("SeriesDescription", "") or "").strip()
    if description and series_keyword and not series_matches(description, series_keyword):
        return None, f"series {description!r} does not name {series_keyword!r}"
    modality = str(header.get("Modality", "") or "").strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        refuse(
            path,
            f"Modality {modality or 'missing'}: not a radiograph (expected CR or DX)",
            checks,
        )
    body_part = str(header.get("BodyPartExamined", "") or "").strip()
    knee_named = "knee" in normalise_series_text(body_part) or (
        description
        and (
            "knee" in normalise_series_text(description)
            or (series_keyword and series_matches(description, series_keyword))
        )
    )
    if not knee_named:
        refuse(
            path,
            f"{'BodyPartExamined ' + body_part if body_part else 'no BodyPartExamined'} and "
            f"{'series ' + repr(description) if description else 'no series description'}: "
            "not a knee radiograph (expected BodyPartExamined KNEE or the series keyword "
            f"{series_keyword!r})",
            checks,
        )
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
    return {
        "path": str(path),
        "participant": participant,
        "visit": visit,
        "laterality": laterality,
    }, None


def _skip_summary(skipped: Sequence[tuple[str, str]], limit: int = 4) -> str:
    """``'3 file(s): series 'PA HAND' does not name ... (e.g. /x/1); ...'`` for messages."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(path)
    ordered = sorted(by_reason.items(), key=lambda item: -len(item[1]))
    parts = [f"{len(paths)} x {reason} (e.g. {paths[0]})" for reason, paths in ordered[:limit]]
    if len(ordered) > limit:
        parts.append(f"{len(ordered) - limit} other reason(s)")
    return "; ".join(parts)


def scan_oai_dicoms(
    folder: str | os.PathLike,
    series_keyword: str = "fixed flexion",
    checks: str = "strict",
    recursive: bool = True,
):
    """Headers of the knee radiographs under ``folder`` (see :func:`radiograph_header`).

    Returns ``(radiographs, skipped)``: a DataFrame path, participant, visit, laterality, and
    the skipped files as (path, reason). Every refused file is logged before the error.
    """
    import pandas as pd  # heavy (pandas): imported on use

    rows, skipped, problems = [], [], []
    for path in _dicom_candidates(Path(folder), recursive):
        try:
            record, reason = radiograph_header(path, series_keyword, checks)
        except InputError as problem:
            problems.append(problem)
            continue
        if record is None:
            log.info("%s: skipped: %s", path, reason)
            skipped.append((str(path), reason))
        else:
            rows.append(record)
    raise_problems(problems)
    return pd.DataFrame(rows, columns=["path", "participant", "visit", "laterality"]), skipped


def crop_oai_batch(
    oai_dir: str | os.PathLike, batch: str, out_dir: str | os.PathLike, cfg: Mapping[str, Any]
):
    """One crop job: the knee radiographs of one batch (:func:`oai_batches`) -> 8-bit PNG crops
    ``<participant><side>_v<vv>.png`` in ``out_dir``, with ``radiographs.tsv`` (image,
    participant, side, visit, source) and ``skipped.tsv`` (path, reason).

    Keys used (``ingest`` section): ``oai_series_keyword``, ``input_checks``, ``oai_crop_mm``,
    ``oai_image_size``, ``oai_pixel_spacing_mm``. Every bad file of the batch is logged before
    the error. ``out_dir`` is written as a whole or not at all.
    """
    import pandas as pd  # heavy (pandas): imported on use
    from PIL import Image  # heavy (PIL): imported on use

    checks = cfg.get("input_checks", "strict")
    headers, skipped = scan_oai_dicoms(
        batch_folder(oai_dir, batch),
        cfg["oai_series_keyword"],
        checks,
        recursive=batch != TOP_BATCH,
    )
    out_dir = Path(out_dir)
    rows, origin, problems = [], {}, []
    with staged_directory(out_dir) as staging:
        for record in headers.itertuples():
            sides = [record.laterality] if record.laterality in ("R", "L") else ["R", "L"]
            try:
                for side in sides:
                    key = (record.participant, side, record.visit)
                    if key in origin:
                        raise InputError(
                            record.path,
                            f"duplicate image ID {record.participant}{side}_{record.visit} "
                            f"(also {origin[key]})",
                        )
                    origin[key] = record.path
                crops = dicom_knee_crops(
                    record.path,
                    record.laterality,
                    cfg["oai_crop_mm"],
                    cfg["oai_image_size"],
                    cfg.get("oai_pixel_spacing_mm"),
                )
            except InputError as problem:
                problems.append(problem)
                continue
            for side in sides:
                name = f"{record.participant}{side}_v{record.visit[1:]}.png"
                Image.fromarray(crops[side], mode="L").save(staging / name, format="PNG")
                rows.append(
                    {
                        "image": str(out_dir / name),
                        "participant": record.participant,
                        "side": side,
                        "visit": record.visit,
                        "source": record.path,
                    }
                )
        raise_problems(problems)
        table = pd.DataFrame(rows, columns=CROP_COLUMNS)
        write_tsv(staging / "radiographs.tsv", table)
        write_tsv(staging / "skipped.tsv", pd.DataFrame(skipped, columns=["path", "reason"]))
    log.info(
        "%s: %d knee crop(s) from %d radiograph(s); %d file(s) skipped%s",
        batch_folder(oai_dir, batch),
        len(table),
        len(headers),
        len(skipped),
        f" ({_skip_summary(skipped)})" if skipped else "",
    )
    return table


def raw_manifest_from_crops(
    crop_dirs: Sequence[str | os.PathLike],
    kl_tables: Sequence[str | os.PathLike],
    cfg: Mapping[str, Any],
    oai_dir: str | os.PathLike,
):
    """Match the crops of every batch (:func:`crop_oai_batch`) to KL grades: the manifest
    without the split column. Knees without a KL grade are left out (logged).

    Keys used (``ingest`` section): ``oai_missing_kl``, ``oai_readprj_priority``. When no
    radiograph is left, the error lists what was skipped and why.
    """
    import pandas as pd  # heavy (pandas): imported on use

    tables = list(kl_tables) or find_kl_tables(oai_dir)
    if not tables:
        raise InputError(
            oai_dir, "no KL tables (kXR_SQ_BU*.txt) found; name them in data.oai_kl_tables"
        )
    grades = read_kl_tables(tables, cfg["oai_missing_kl"], cfg["oai_readprj_priority"])
    grade_of = {(r.participant, r.side, r.visit): int(r.kl_grade) for r in grades.itertuples()}
    crops, skipped = [], []
    for folder in crop_dirs:
        folder = Path(folder)
        crops.append(
            read_tsv(folder / "radiographs.tsv", CROP_COLUMNS).astype({"participant": str})
        )
        skipped += [
            (str(r.path), str(r.reason))
            for r in read_tsv(folder / "skipped.tsv", ["path", "reason"]).itertuples()
        ]
    crops = pd.concat(crops, ignore_index=True) if crops else pd.DataFrame(columns=CROP_COLUMNS)
    if crops.empty:
        why = f"; skipped {len(skipped)} file(s): {_skip_summary(skipped)}" if skipped else ""
        raise InputError(oai_dir, f"no OAI knee radiographs (DICOM) found{why}")
    keys = crops["participant"] + crops["side"] + "_" + crops["visit"]
    repeated = keys.duplicated(keep=False)
    if repeated.any():
        key = keys[repeated].iloc[0]
        sources = crops.loc[keys == key, "source"].tolist()
        raise InputError(sources[1], f"duplicate image ID {key} (also {sources[0]})")
    graded = [(r.participant, r.side, r.visit) in grade_of for r in crops.itertuples(index=False)]
    ungraded = len(crops) - int(np.sum(graded))
    if ungraded:
        log.warning("%d knee image(s) have no KL grade in the tables and are left out", ungraded)
    manifest = crops[graded].copy()
    if manifest.empty:
        raise InputError(oai_dir, "no radiograph matches a KL grade in the tables")
    manifest["kl_grade"] = [
        grade_of[(r.participant, r.side, r.visit)] for r in manifest.itertuples(index=False)
    ]
    return manifest[MANIFEST_COLUMNS[:-1]].reset_index(drop=True)


def build_raw_manifest(
    oai_dir: str | os.PathLike,
    kl_tables: Sequence[str | os.PathLike],
    image_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
):
    """Convert raw OAI DICOMs to PNG crops in ``image_dir/<batch>/`` (every batch of
    :func:`oai_batches`) and match them to KL grades (:func:`raw_manifest_from_crops`).

    The workflow runs the same steps as separate jobs (one per batch, then the manifest).
    """
    crop_dirs = []
    for batch in oai_batches(oai_dir):
        crop_oai_batch(oai_dir, batch, Path(image_dir) / batch, cfg)
        crop_dirs.append(Path(image_dir) / batch)
    return raw_manifest_from_crops(crop_dirs, kl_tables, cfg, oai_dir)
