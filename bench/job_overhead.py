"""Per-job overhead of the demo: CPU seconds each workflow script spends before it works.

Runs the demo (``snakemake --cores N``, config/config.yaml) in a scratch copy of the repository,
once per revision asked for, with a tracer loaded into every job (a ``sitecustomize`` module put
on ``PYTHONPATH``; the copy's ``src`` goes on ``PYTHONPATH`` too, so its own ``kneesynth`` is
the one imported). Per job the tracer records, in process CPU time (user + system):

* ``to_main``: from interpreter start to the call of the script's ``main`` (the interpreter,
  Snakemake's preamble that unpickles the job, the script's top-level imports);
* ``imports_in_main``: CPU spent in import statements after that (the script's imports inside
  ``main`` and every import a library function makes while the job runs);
* ``overhead`` = ``to_main + imports_in_main``: the job's cost before its first line of work,
  wherever its imports happen;
* ``cpu``: the whole job.

It prints, per workflow script, the number of jobs that ran it in the demo's DAG, the median
overhead per job and the heavy libraries the job loaded; then the overhead summed over all jobs
(and the demo's job CPU beside it), for each revision and their ratio, and checks the targets: no table/figure job over 1 s, no training/sampling job over 3 s, summed overhead at
most half of the first revision's.

    python bench/job_overhead.py --before 6b959c9      # that commit and the working tree
    python bench/job_overhead.py --target data drr     # a quick run on two stages

The demos of all revisions run side by side (``--cores`` each, default 1), so that load from
other processes hits them alike: CPU seconds are less sensitive to load than wall seconds, but
not immune (cores that share caches or a physical core); the same code measured an hour apart
differed by up to 20 %. ``--sequential`` runs one after the other. A demo takes minutes (two
cores, alone: about 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "worktree"

# Rule classes for the targets. Table/figure jobs: at most 1 s of overhead and none
# of torch, diffusers, MONAI. Stats jobs: none of those either (scipy.stats alone costs more
# than 1 s to import). Training/sampling jobs: at most 3 s.
TABLE_FIGURE_RULES = {
    "segmentation_figure",
    "fig3",
    "kl_grid_figure",
    "classifier_figures",
    "memorization_table",
    "realism_table",
    "paired_tests",
    "scorecard",
    "provenance",
}
STATS_RULES = {"table1", "evaluate_drr", "classifier_stats", "reader_scores"}
TRAINING_SAMPLING_RULES = {
    "train_csm",
    "train_ctm",
    "train_unet",
    "sample_drr",
    "train_study_b_generator",
    "sample_study_b_generator",
    "train_fid_features",
    "train_classifier_real",
    "train_classifier_augmented",
    "train_classifier_synthetic_only",
    "utility_ctm_samples",
}
TRACER_DIR = Path(__file__).resolve().parent / "job_tracer"  # holds sitecustomize.py
NOT_IN_TABLE_JOBS = ("torch", "diffusers", "monai")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout(revision: str, target: Path) -> str:
    """A copy of ``revision`` (a commit, or ``worktree`` for the working tree as it is, with
    untracked files that git does not ignore) in ``target``; returns a label."""
    target.mkdir(parents=True)
    if revision == WORKTREE:
        files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
        for name in filter(None, files):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
        dirty = " + uncommitted changes" if git("status", "--porcelain") else ""
        return f"working tree ({git('rev-parse', '--short', 'HEAD')}{dirty})"
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return f"{git('rev-parse', '--short', revision)} ({git('log', '-1', '--format=%s', revision)[:60]})"


def start_demo(copy: Path, tracer_dir: Path, cores: str, targets: list[str]):
    """Start the demo in ``copy`` with the tracer; returns the running process."""
    trace_dir = copy / ".job_trace"
    trace_dir.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tracer_dir), str(copy / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["KNEESYNTH_JOB_TRACE"] = str(trace_dir)
    command = [sys.executable, "-m", "snakemake", *(targets or ["all"]), "--cores", cores]
    command += ["--quiet", "all"]  # last: --quiet takes the words after it
    log = (copy / ".job_overhead.log").open("w")
    return subprocess.Popen(command, cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish_demo(copy: Path, process, start: float, label: str) -> list[dict]:
    """Wait for the demo in ``copy``; return one record per script job."""
    if process.wait():
        log = (copy / ".job_overhead.log").read_text()
        sys.exit(f"snakemake failed in {copy}:\n{log[-3000:]}")
    print(f"  {label}: demo ran in {time.perf_counter() - start:.0f} s wall", flush=True)
    trace_dir = copy / ".job_trace"
    records = [json.loads(path.read_text()) for path in sorted(trace_dir.glob("*.json"))]
    foreign = {r["kneesynth"] for r in records if r["kneesynth"]} - {
        str(copy / "src" / "kneesynth" / "__init__.py")
    }
    if foreign:
        sys.exit(f"jobs imported kneesynth from outside the copy: {sorted(foreign)}")
    return records


def rule_class(rule: str) -> str:
    if rule in TABLE_FIGURE_RULES:
        return "table/figure"
    if rule in STATS_RULES:
        return "stats"
    if rule in TRAINING_SAMPLING_RULES:
        return "train/sample"
    return "other"


def overhead(record: dict) -> float:
    if record["to_main"] is None:  # main never ran: the whole job was overhead
        return record["cpu"]
    return record["to_main"] + record["imports_in_main"]


def summarise(records: list[dict]) -> dict[str, dict]:
    by_script: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_script[record["script"]].append(record)
    summary = {}
    for script, jobs in sorted(by_script.items()):
        rules = sorted({job["rule"] for job in jobs})
        summary[script] = {
            "jobs": len(jobs),
            "rules": rules,
            "classes": sorted({rule_class(rule) for rule in rules}),
            "overhead": statistics.median(overhead(job) for job in jobs),
            "overhead_max": max(overhead(job) for job in jobs),
            "to_main": statistics.median(job["to_main"] or job["cpu"] for job in jobs),
            "cpu": statistics.median(job["cpu"] for job in jobs),
            "overhead_sum": sum(overhead(job) for job in jobs),
            "cpu_sum": sum(job["cpu"] for job in jobs),
            "heavy": sorted({m for job in jobs for m in job["heavy"]}),
        }
    return summary


def check_targets(summary: dict[str, dict], label: str) -> list[str]:
    """Lines naming every script over its target (empty when all are met)."""
    failures = []
    for script, row in summary.items():
        classes = row["classes"]
        if "table/figure" in classes and row["overhead_max"] > 1.0:
            failures.append(f"{label}: {script} (table/figure) {row['overhead_max']:.2f} s > 1 s")
        if "train/sample" in classes and row["overhead_max"] > 3.0:
            failures.append(f"{label}: {script} (train/sample) {row['overhead_max']:.2f} s > 3 s")
        if {"table/figure", "stats"} & set(classes):
            loaded = [m for m in NOT_IN_TABLE_JOBS if m in row["heavy"]]
            if loaded:
                failures.append(f"{label}: {script} ({'/'.join(classes)}) imports {loaded}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", action="append", default=[], help="revision to measure first (repeatable)"
    )
    parser.add_argument(
        "--after", default=WORKTREE, help=f"revision to measure last (default: {WORKTREE})"
    )
    parser.add_argument("--cores", default="1", help="snakemake --cores of each demo (default 1)")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="one demo after the other (default: all side by side, under the same load)",
    )
    parser.add_argument(
        "--target", nargs="*", default=[], help="stage targets (default: all of the demo)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--json", type=Path, help="also write every job's record here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="job_overhead_"))
    revisions = [*args.before, args.after]
    all_records: dict[str, list[dict]] = {}
    try:
        # every copy first: the working tree is measured as it was when the bench started
        copies = [scratch / f"rev{index}" for index in range(len(revisions))]
        labels = [checkout(rev, copy) for rev, copy in zip(revisions, copies, strict=True)]
        if args.sequential:
            for label, copy in zip(labels, copies, strict=True):
                print(f"{label}: running the demo ...", flush=True)
                start = time.perf_counter()
                process = start_demo(copy, TRACER_DIR, args.cores, args.target)
                all_records[label] = finish_demo(copy, process, start, label)
        else:  # side by side: both meet the same load from other processes
            print(f"running the demos of {len(labels)} revisions side by side ...", flush=True)
            start = time.perf_counter()
            processes = [start_demo(c, TRACER_DIR, args.cores, args.target) for c in copies]
            for label, copy, process in zip(labels, copies, processes, strict=True):
                all_records[label] = finish_demo(copy, process, start, label)
        summaries = [summarise(all_records[label]) for label in labels]
    finally:
        if args.keep:
            print(f"scratch copies kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(all_records, indent=1))

    print()
    print("overhead = CPU s from interpreter start to main() + CPU s in imports after it")
    print("(median per job); jobs = jobs of the script in the demo's DAG")
    header = f"{'script':28s} {'class':13s} {'jobs':>4s}"
    for index in range(len(labels)):
        header += f" {'rev' + str(index + 1):>7s}"
    print(header + "  heavy imports (last revision)")
    scripts = sorted(
        set().union(*summaries), key=lambda s: (-summaries[-1].get(s, {}).get("overhead_sum", 0), s)
    )
    for script in scripts:
        last = summaries[-1].get(script) or summaries[0][script]
        line = f"{script:28s} {'/'.join(last['classes']):13s} {last['jobs']:4d}"
        for summary in summaries:
            value = summary.get(script, {}).get("overhead")
            line += f" {value:7.2f}" if value is not None else f" {'-':>7s}"
        print(line + "  " + ",".join(last["heavy"]))
    print()
    totals = []
    for index, (label, summary) in enumerate(zip(labels, summaries, strict=True)):
        total = sum(row["overhead_sum"] for row in summary.values())
        cpu = sum(row["cpu_sum"] for row in summary.values())
        jobs = sum(row["jobs"] for row in summary.values())
        totals.append(total)
        print(
            f"rev{index + 1} {label}: {jobs} jobs, overhead summed {total:.1f} CPU s "
            f"of {cpu:.1f} CPU s in the jobs ({100 * total / cpu:.0f} %)"
        )
    failures = check_targets(summaries[-1], f"rev{len(labels)}")
    if len(totals) > 1:
        ratio = totals[-1] / totals[0]
        print(f"summed overhead rev{len(labels)} / rev1: {ratio:.2f} (target <= 0.50)")
        if ratio > 0.5:
            failures.append(f"summed overhead ratio {ratio:.2f} > 0.50")
    print("targets met" if not failures else "targets NOT met:\n  " + "\n  ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
