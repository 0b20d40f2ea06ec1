"""What a run found, in words: the scorecard by study, the end-of-run summary, the report's headline.

Read by ``kneesynth scorecard``, by the Snakefile's ``onsuccess``/``onerror`` handlers (which run
in Snakemake's own process, where kneesynth's dependencies may be absent: standard library only
here) and by the rule that writes the report's headline.

The scorecard (``results/tables/scorecard.tsv``, :mod:`kneesynth.report.scorecard`) is read as a plain
table: one row per claim or setting with the columns ``study``, ``kind``, ``claim``,
``paper_value``, ``our_value``, ``reproduced`` and ``evidence``. Rows of kind ``setting`` are the
papers' settings; every other row is a claim. Verdicts are counted as they come, so a new verdict
needs no change here.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kneesynth.errors import InputError

SCORECARD = Path("tables") / "scorecard.tsv"
REQUIRED_COLUMNS = ("study", "kind", "claim", "reproduced")
#: verdicts in the order they are listed; others follow, alphabetically
VERDICT_ORDER = ("yes", "no", "inconclusive", "setting differs", "not run", "needs the real data")
STUDY_TITLES = {
    "A": "Study A (Mei et al.): DRRs generated from segmentations by score models",
    "B": "Study B (Smits Serena et al.): DDPM and WGAN images added to KL-grade classifiers",
    "C": "Study C (Akbar et al.): utility and memorisation of the generators",
}


# --------------------------------------------------------------------------------------------
# Reading and counting
# --------------------------------------------------------------------------------------------
def scorecard_path(results: str | os.PathLike[str] = "results") -> Path:
    """``results/tables/scorecard.tsv`` for a results folder; a file is taken as it is."""
    path = Path(results)
    return path if path.suffix == ".tsv" or path.is_file() else path / SCORECARD


def read_scorecard(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The scorecard's rows as dicts of strings; one-line :class:`InputError` if unusable."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            columns = reader.fieldnames or []
            rows = [{key: (value or "").strip() for key, value in row.items()} for row in reader]
    except FileNotFoundError:
        raise InputError(
            path, "scorecard not found (it is made by `snakemake --cores all`)"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read the scorecard ({error})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise InputError(path, f"not a scorecard: no column(s) {', '.join(missing)}")
    if not rows:
        raise InputError(path, "the scorecard has no rows")
    return rows


def is_setting(row: Mapping[str, str]) -> bool:
    return row.get("kind", "").strip().lower() == "setting"


def verdict_key(verdict: str) -> tuple[int, str]:
    order = VERDICT_ORDER.index(verdict) if verdict in VERDICT_ORDER else len(VERDICT_ORDER)
    return order, verdict


def verdict_counts(rows: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """Rows per verdict (``reproduced``), in :data:`VERDICT_ORDER`."""
    counts = Counter(row["reproduced"] or "(blank)" for row in rows)
    return {verdict: counts[verdict] for verdict in sorted(counts, key=verdict_key)}


def counts_text(counts: Mapping[str, int]) -> str:
    """``12 yes, 18 no, 2 not run``."""
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) or "none"


def studies(rows: Iterable[Mapping[str, str]]) -> list[str]:
    return sorted({row["study"] for row in rows})


def study_title(study: str) -> str:
    return STUDY_TITLES.get(study, f"Study {study}")


def headline(rows: Sequence[Mapping[str, str]]) -> str:
    """``57 claims: 25 yes, 30 no, 2 not run; 24 settings: 24 yes``."""
    claims = [row for row in rows if not is_setting(row)]
    settings = [row for row in rows if is_setting(row)]
    text = f"{len(claims)} claims: {counts_text(verdict_counts(claims))}"
    if settings:
        text += f"; {len(settings)} settings: {counts_text(verdict_counts(settings))}"
    return text


# --------------------------------------------------------------------------------------------
# The scorecard in a terminal (kneesynth scorecard)
# --------------------------------------------------------------------------------------------
def format_scorecard(
    rows: Sequence[Mapping[str, str]],
    source: str = "",
    width: int | None = None,
    all_settings: bool = False,
) -> str:
    """The claims grouped by study and verdict, each with paper value, ours and the evidence.

    Settings are counted; those whose verdict is not ``yes`` are listed (all of them with
    ``all_settings``).
    """
    width = width or max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    out: list[str] = []

    def wrap(text: str, indent: str, first: str | None = None) -> None:
        out.extend(
            textwrap.wrap(
                text,
                width,
                initial_indent=first if first is not None else indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            or [indent.rstrip()]
        )

    title = "Reproduction scorecard" + (f" ({source})" if source else "")
    out += [title, "=" * len(title), headline(rows) + "."]
    for study in studies(rows):
        in_study = [row for row in rows if row["study"] == study]
        claims = [row for row in in_study if not is_setting(row)]
        settings = [row for row in in_study if is_setting(row)]
        out += ["", study_title(study), "-" * len(study_title(study))]
        wrap(headline(in_study) + ".", "")
        for verdict in sorted({row["reproduced"] for row in claims}, key=verdict_key):
            group = [row for row in claims if row["reproduced"] == verdict]
            out.append(f"  {verdict or '(blank)'} ({len(group)}):")
            for row in group:
                wrap(row["claim"], "      ", "    - ")
                values = (
                    f"paper {row.get('paper_value') or '-'}; ours {row.get('our_value') or '-'}"
                )
                wrap(values, "      ")
                if row.get("why"):
                    wrap(f"why: {row['why']}", "        ", "      ")
                if row.get("evidence"):
                    wrap(f"from: {row['evidence']}", "        ", "      ")
        listed = settings if all_settings else [r for r in settings if r["reproduced"] != "yes"]
        if listed:
            out.append("  settings" + ("" if all_settings else " not marked yes") + ":")
            for row in listed:
                wrap(
                    f"{row['claim']}: paper {row.get('paper_value') or '-'}, this run "
                    f"{row.get('our_value') or '-'} ({row['reproduced']})",
                    "      ",
                    "    - ",
                )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# End of a run (Snakefile onsuccess / onerror)
# --------------------------------------------------------------------------------------------
def uses_real_data(config: Mapping[str, Any] | None) -> bool:
    data = (config or {}).get("data") or {}
    return bool(data.get("sicas_dir") or data.get("oai_dir"))


def _count_files(folder: Path, suffixes: Sequence[str]) -> str:
    found = Counter(
        path.suffix.lower().lstrip(".")
        for path in folder.glob("*")
        if path.is_file() and path.suffix.lower() in suffixes
    )
    return ", ".join(f"{n} {kind.upper()}" for kind, n in sorted(found.items())) or "none yet"


def run_summary(
    results: str | os.PathLike[str] = "results",
    config: Mapping[str, Any] | None = None,
    report: str | os.PathLike[str] | None = None,
) -> list[str]:
    """What a finished run produced, the claims by verdict, and the next command to type."""
    results = Path(results)
    report = Path(report) if report else results / "report.html"
    scorecard = results / SCORECARD
    lines = ["", "kneesynth: done."]
    if not scorecard.exists():
        lines += [
            f"  results:   {results}/ (the steps asked for; the scorecard is not built yet)",
            "  next:      snakemake --cores all        every stage, then the scorecard",
        ]
        return lines
    try:
        rows = read_scorecard(scorecard)
    except InputError as error:
        return [*lines, f"  scorecard: {error}"]
    lines += [
        f"  scorecard: {scorecard}  ({headline(rows)})",
        *(
            f"             study {study}: {headline([r for r in rows if r['study'] == study])}"
            for study in studies(rows)
        ),
        f"  tables:    {results / 'tables'}/  ({_count_files(results / 'tables', ('.tsv',))})",
        f"  figures:   {results / 'figures'}/  "
        f"({_count_files(results / 'figures', ('.png', '.pdf'))})",
    ]
    if (results / "reader_kit").is_dir():
        lines.append(
            f"  kits:      {results / 'reader_kit'}/  (blinded reader-study sets; keys apart)"
        )
    report_fresh = report.exists() and report.stat().st_mtime >= scorecard.stat().st_mtime
    if report_fresh:
        lines.append(f"  report:    {report}")
    lines += ["  logs:      logs/<rule>/, timings in benchmarks/<rule>/", "next:"]
    commands = [("kneesynth scorecard", "the claims: what reproduced, what did not, why")]
    if not report_fresh:
        commands.append((f"snakemake --report {report}", "the HTML report: figures, tables"))
    width = max(len(command) for command, _ in commands)
    lines += [f"  {command:<{width}}  {what}" for command, what in commands]
    if not uses_real_data(config):
        lines.append(
            "(demo: tiny networks trained for seconds on phantoms; they show that every stage "
            "runs, not the papers' numbers)"
        )
    return lines


ERROR_IN_RULE = re.compile(r"^Error in rule (?P<rule>[\w.-]+):")
LOG_LINE = re.compile(r"^\s+log: (?P<logs>.+?)(?: \(check log file\(s\) for error details\))?$")


LogFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def _log_files(snakemake_log: LogFiles) -> list[Path]:
    """Snakemake hands its handlers one log path or a list of them (version 9)."""
    if not snakemake_log:
        return []
    if isinstance(snakemake_log, (str, os.PathLike)):
        snakemake_log = [snakemake_log]
    return [Path(path) for path in snakemake_log if Path(path).is_file()]


def failed_jobs(snakemake_log: LogFiles) -> list[tuple[str, str]]:
    """(rule, its log file(s)) of every failed job in Snakemake's own log of the run."""
    failed: list[tuple[str, str]] = []
    rule = None
    text = "\n".join(path.read_text(errors="replace") for path in _log_files(snakemake_log))
    for line in text.splitlines():
        match = ERROR_IN_RULE.match(line)
        if match:
            rule = match.group("rule")
            failed.append((rule, ""))
            continue
        match = LOG_LINE.match(line)
        if rule is not None and match:
            failed[-1] = (rule, match.group("logs"))
            rule = None
        elif not line.startswith((" ", "\t")):
            rule = None
    return list(dict.fromkeys(failed))


def failure_summary(snakemake_log: LogFiles = None) -> list[str]:
    """Which jobs failed, where their logs are, and what to type next."""
    failed = failed_jobs(snakemake_log)
    lines = ["", "kneesynth: the run stopped before the end."]
    if failed:
        lines.append(f"  failed: {len(failed)} job(s); read their logs:")
        lines += [f"    {rule}: {logs or '(no log file)'}" for rule, logs in failed]
    for path in _log_files(snakemake_log):
        lines.append(f"  Snakemake's log of this run: {path}")
    lines += [
        "next: fix the cause, then type the same command again: finished steps are kept,",
        "  training resumes from its last checkpoint (results/state/), half-written outputs",
        "  are redone (rerun-incomplete is on). After a killed run, if Snakemake says the",
        "  folder is locked: snakemake --unlock, then the same command.",
    ]
    return lines


# --------------------------------------------------------------------------------------------
# The report's front page
# --------------------------------------------------------------------------------------------
def headline_rst(rows: Sequence[Mapping[str, str]], demo: bool) -> str:
    """reStructuredText: the scorecard's headline, overall and per study."""
    lines = [f"**This run:** {headline(rows)}.", ""]
    for study in studies(rows):
        in_study = [row for row in rows if row["study"] == study]
        lines.append(f"- **{study_title(study)}**: {headline(in_study)}.")
    lines.append("")
    if demo:
        lines += [
            "This is the demo on phantom data: tiny networks trained for seconds show that every "
            "stage runs and what it measures; their numbers are not the papers'.",
            "",
        ]
    return "\n".join(lines)
