"""The ``kneesynth`` command: check data before a long run, read the scorecard, check reader sheets.

In the style of nnU-Net's commands (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``):
one entry point per task, ``--help`` on each, and bad input reported in one line that names the
file and the problem::

    kneesynth check-data [--configfile F ...]     every ingest check on the configured data folders
    kneesynth scorecard [RESULTS]                 the claims by study: what reproduced, what not, why
    kneesynth reader-sheets validate DIR          filled reader-study sheets against the kit's keys

Run it in the workflow's folder (where the Snakefile is), or name that folder with ``-d``.
Exit status: 0 when all is well, 1 when a problem was found, 2 for a wrong command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kneesynth.data import oai
from kneesynth.data.ct_volumes import read_volume
from kneesynth.data.ingest import list_volumes
from kneesynth.errors import InputError
from kneesynth.progress import ProgressLog
from kneesynth.summary import format_scorecard, read_scorecard, scorecard_path

DEFAULT_CONFIG = Path("config") / "config.yaml"
SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
DEFAULT_KEYS = Path("results") / "reader_kit_keys"

logger = logging.getLogger("kneesynth.cli")


# --------------------------------------------------------------------------------------------
# check-data
# --------------------------------------------------------------------------------------------
class Report:
    """What a check found: one line per folder checked, one problem per bad input."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.problems: list[InputError] = []

    def attempt(self, check: Callable[[], Any]) -> Any:
        """Run ``check``; an :class:`InputError` is kept as a problem (and None returned)."""
        try:
            return check()
        except InputError as error:
            self.problems.append(error)
            return None


def load_config(directory: Path, configfiles: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The config as Snakemake builds it: ``config/config.yaml``, then each ``--configfile``
    on top (key by key), validated against the workflow's schema (defaults filled in)."""
    import yaml  # heavy (yaml): imported on use
    from snakemake.utils import update_config  # heavy (snakemake): imported on use

    from kneesynth.config import validate_config  # heavy (yaml): imported on use

    base = directory / DEFAULT_CONFIG
    if not base.is_file():
        raise InputError(
            base,
            "not found: run kneesynth in the workflow's folder (where the Snakefile is) "
            "or name that folder with -d",
        )
    files = [base, *(Path(f) for f in configfiles)]
    config: dict[str, Any] = {}
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(path, "config file not found") from None
        except yaml.YAMLError as error:
            raise InputError(path, f"not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(loaded, dict):
            raise InputError(path, "a config file must hold a mapping of keys")
        update_config(config, loaded)
    names = [str(path) for path in files]
    validate_config(config, directory / SCHEMA, names)
    return config, names


def check_ct_folder(sicas_dir: str, report: Report) -> None:
    """SICAS/SMIR CTs: the folder's volumes (names, duplicates) and each volume read as the
    ingest step reads it (truncated files, bad DICOM series, NaN voxels); nothing resampled."""

    volumes = report.attempt(lambda: list_volumes(sicas_dir))
    if volumes is None:
        report.checked.append(f"CT volumes (data.sicas_dir): {sicas_dir}: unusable")
        return
    progress = ProgressLog("check-data CT", len(volumes), "volume", every_seconds=15, log=logger)
    bad = 0
    for path in volumes.values():
        bad += report.attempt(lambda path=path: read_volume(path)) is None
        progress.advance()
    report.checked.append(
        f"CT volumes (data.sicas_dir): {sicas_dir}: {len(volumes)} volumes, "
        f"{len(volumes) - bad} readable"
    )


def check_oai_folder(data: Mapping[str, Any], ingest: Mapping[str, Any], report: Report) -> None:
    """OAI radiographs: the Chen layout (folders, file signatures, duplicate IDs) or raw OAI
    (every KL table, then the DICOM headers); no image is converted."""

    oai_dir, oai_format = data["oai_dir"], data.get("oai_format", "chen")
    if oai_format == "chen":
        manifest = report.attempt(lambda: oai.read_chen_layout(oai_dir))
        if manifest is None:
            report.checked.append(f"OAI radiographs (Chen layout): {oai_dir}: unusable")
            return
        grades = manifest.groupby("kl_grade").size().to_dict()
        report.checked.append(
            f"OAI radiographs (Chen layout): {oai_dir}: {len(manifest)} images of "
            f"{manifest['participant'].nunique()} participants, per KL grade {grades}"
        )
        return
    tables = [Path(t) for t in data.get("oai_kl_tables") or []] or oai.find_kl_tables(oai_dir)
    if not tables:
        report.problems.append(
            InputError(
                oai_dir, "no KL tables (kXR_SQ_BU*.txt) found; name them in data.oai_kl_tables"
            )
        )
    rows = 0
    for table in tables:
        read = report.attempt(
            lambda table=table: oai.read_kl_table(table, ingest["oai_missing_kl"])
        )
        rows += 0 if read is None else len(read)
    headers = report.attempt(lambda: oai.scan_oai_dicoms(oai_dir, ingest["oai_series_keyword"]))
    knees = "unusable" if headers is None else f"{len(headers)} radiographs"
    report.checked.append(
        f"OAI raw (DICOM + KL tables): {oai_dir}: {knees}; {len(tables)} KL tables, "
        f"{rows} graded knee-visits"
    )


def check_data(config: Mapping[str, Any]) -> Report:
    """Every ingest check on the configured data folders, each problem kept."""
    report = Report()
    data = config.get("data") or {}
    if data.get("sicas_dir"):
        check_ct_folder(str(data["sicas_dir"]), report)
    if data.get("oai_dir"):
        check_oai_folder(data, config.get("ingest") or {}, report)
    return report


def cmd_check_data(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    report = Report()
    config = report.attempt(lambda: load_config(directory, args.configfile))
    if config is not None:
        config, files = config
        print(f"config: {', '.join(files)}: valid")
        data = config.get("data") or {}
        if not (data.get("sicas_dir") or data.get("oai_dir")):
            print(
                "data: data.sicas_dir and data.oai_dir are not set: the workflow generates "
                "phantom data, there is nothing to check. Point them at SICAS/SMIR and OAI "
                "folders (config/README.md) and run this again."
            )
            return 0
        found = check_data(config)
        report.checked += found.checked
        report.problems += found.problems
    for line in report.checked:
        print(line)
    if report.problems:
        print(f"{len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("no problems found: the data folders can be ingested.")
    return 0


# --------------------------------------------------------------------------------------------
# scorecard
# --------------------------------------------------------------------------------------------
def cmd_scorecard(args: argparse.Namespace) -> int:

    path = scorecard_path(args.results)
    rows = read_scorecard(path)
    print(format_scorecard(rows, str(path), width=args.width, all_settings=args.all_settings))
    return 0


# --------------------------------------------------------------------------------------------
# reader-sheets validate
# --------------------------------------------------------------------------------------------
def validate_reader_sheets(responses_dir: Path, keys_dir: Path) -> Report:
    """Every ``<reader>_<generator>.csv`` in ``responses_dir`` against the key of its kit:
    the name, the columns, every image_id in the kit and none twice, answers real/synthetic."""
    from kneesynth.checks.reader_study import (
        list_responses,
        parse_response_name,
        read_answers,
        read_key,
    )  # heavy (pandas, scipy, statsmodels): imported on use

    report = Report()
    if not responses_dir.is_dir():
        report.problems.append(InputError(responses_dir, "folder not found"))
        return report
    keys = sorted(keys_dir.glob("*.csv")) if keys_dir.is_dir() else []
    if not keys:
        report.problems.append(
            InputError(
                keys_dir,
                "no answer keys (<generator>.csv) of the reader kits: they are made by "
                "`snakemake --cores all checks`; give their folder with --keys",
            )
        )
        return report
    key_paths = {path.stem: path for path in keys}
    sheets = list_responses(responses_dir)
    if not sheets:
        report.problems.append(
            InputError(responses_dir, "no filled answer sheets (<reader>_<generator>.csv)")
        )
    key_tables: dict[str, Any] = {}
    for sheet in sheets:
        named = report.attempt(lambda sheet=sheet: parse_response_name(sheet, list(key_paths)))
        if named is None:
            continue
        reader, generator = named
        if generator not in key_tables:
            key_tables[generator] = report.attempt(lambda g=generator: read_key(key_paths[g]))
        key = key_tables[generator]
        if key is None:
            continue
        answers = report.attempt(lambda sheet=sheet, key=key: read_answers(sheet, key))
        if answers is None:
            continue
        blank = int(answers["answer"].isna().sum())
        report.checked.append(
            f"{sheet.name}: reader {reader}, {generator}: {len(answers) - blank} of "
            f"{len(answers)} images answered" + (f" ({blank} left blank)" if blank else "")
        )
    return report


def cmd_reader_sheets_validate(args: argparse.Namespace) -> int:
    report = validate_reader_sheets(Path(args.responses_dir), Path(args.keys))
    for line in report.checked:
        print(line)
    if report.problems:
        print(f"{len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        "every sheet fits its kit: `snakemake --cores all` scores them (results/tables/reader_study.tsv)."
    )
    return 0


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kneesynth",
        description="Synthetic knee radiograph studies, reproduced: the commands beside "
        "`snakemake`. Run them in the workflow's folder.",
        epilog="The workflow itself: `snakemake --cores all` (README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check-data",
        help="check the configured data folders before a long run",
        description="Run every ingest check on the data folders named in the config "
        "(data.sicas_dir, data.oai_dir): CT volumes read as the ingest step reads them, the "
        "OAI layout or the raw DICOM headers and KL tables. Nothing is resampled, converted or "
        "written. Lists every problem found, one line each.",
    )
    check.add_argument(
        "--configfile",
        nargs="+",
        default=[],
        metavar="FILE",
        help="config file(s) on top of config/config.yaml, as for snakemake",
    )
    check.add_argument(
        "-d", "--directory", default=".", help="the workflow's folder (default: here)"
    )
    check.set_defaults(run=cmd_check_data)

    scorecard = commands.add_parser(
        "scorecard",
        help="print the reproduction scorecard by study",
        description="Print results/tables/scorecard.tsv by study: every claim of the papers, "
        "grouped by verdict (yes, no, ...), with the paper's value, ours and the evidence; "
        "settings that differ from the paper's.",
    )
    scorecard.add_argument(
        "results",
        nargs="?",
        default="results",
        metavar="RESULTS",
        help="the results folder, or a scorecard.tsv (default: results)",
    )
    scorecard.add_argument(
        "--all-settings", action="store_true", help="list every setting, not only those that differ"
    )
    scorecard.add_argument("--width", type=int, default=None, help="line width (default: terminal)")
    scorecard.set_defaults(run=cmd_scorecard)

    sheets = commands.add_parser(
        "reader-sheets",
        help="reader-study answer sheets",
        description="Reader-study answer sheets.",
    )
    sheet_commands = sheets.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = sheet_commands.add_parser(
        "validate",
        help="check filled sheets against the reader kit",
        description="Check every filled answer sheet <reader>_<generator>.csv in DIR against "
        "the key of its generator's kit: the file name, the columns image_id and answer, every "
        "image_id belongs to the kit and appears once, answers are real or synthetic (r/s; "
        "blank = not answered). Lists every problem found.",
    )
    validate.add_argument("responses_dir", metavar="DIR", help="folder of filled sheets")
    validate.add_argument(
        "--keys",
        default=str(DEFAULT_KEYS),
        metavar="KEYS",
        help=f"folder of the kits' answer keys <generator>.csv (default: {DEFAULT_KEYS})",
    )
    validate.set_defaults(run=cmd_reader_sheets_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.run(args))
    except InputError as error:
        print(f"kneesynth: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kneesynth scorecard | head`: the reader left, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
