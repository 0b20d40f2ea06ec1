"""Partial reruns of the real workflow, planned by `snakemake -n` (nothing is computed).

A copy of the repository (without results/, logs/, .snakemake/) is brought to "everything up to
date" without running the demo: every output of the full DAG is created empty (directories for
directory() outputs) and `snakemake --touch --forceall` records Snakemake's metadata (params,
code, input) for every job, exactly as a real run would. On that copy:

- `--forcerun <rule of one stage>` plans that stage's jobs and their dependents only, read from
  the "Job stats" table of `snakemake -n`;
- changing one stage's parameter in config/config.yaml reruns that stage and what follows only
  (Snakemake's default rerun trigger `params`);
- a stage target (`snakemake drr`) builds that stage and what it needs, nothing after it.

The expected plans are written out where they are short, and otherwise computed from the job
graph of the same copy (every job's input and output files in `snakemake -n --forceall`): the
jobs that depend, directly or not, on the changed ones. Each `snakemake -n` parses the
workflow (about 5 s on 2 cores); the module makes 9 such calls, about a minute in all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".snakemake",
    "results",
    "logs",
    "benchmarks",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    ".venv",
)
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the workflow profile profiles/default only: no user profile (e.g. Slurm) for these dry runs
SNAKEMAKE_ENV = {key: value for key, value in os.environ.items() if key != "SNAKEMAKE_PROFILE"}
PARAMS_CHANGED = "params have changed since last execution"  # a reason in the dry-run summary

# rules of each stage that a partial rerun must never plan when a later stage changes
DATA_RULES = {"phantom_ct", "ingest_ct", "phantom_oai", "ingest_oai", "split_volumes"}
STUDY_B_RULES = {
    "train_study_b_generator",
    "sample_study_b_generator",
    "train_fid_features",
    "fid_table",
    "kl_grid_figure",
    "train_classifier_real",
    "train_classifier_augmented",
    "train_classifier_synthetic_only",
    "classifier_stats",
    "classifier_figures",
    "memorization_study_b",
    "realism_study_b",
    "reader_kit",
}
STUDY_A_TRAINING = {"assemble_drr_dataset", "train_csm", "train_ctm", "train_unet"}
# tables that record the whole configuration, so any config change remakes them
CONFIG_RECORDS = {"provenance", "scorecard"}

pytestmark = pytest.mark.slow


@dataclass
class JobGraph:
    """The jobs of one `snakemake -n` listing: rule names with their input and output files."""

    rules: list[str] = field(default_factory=list)
    inputs: list[list[str]] = field(default_factory=list)
    outputs: list[list[str]] = field(default_factory=list)

    def dependents(self, changed_rules: set[str]) -> Counter:
        """Jobs per rule of the changed rules' jobs and of every job that needs their outputs."""
        producer = {path: job for job, paths in enumerate(self.outputs) for path in paths}
        planned = {job for job, rule in enumerate(self.rules) if rule in changed_rules}
        grew = True
        while grew:
            grew = False
            for job, paths in enumerate(self.inputs):
                if job not in planned and any(producer.get(p) in planned for p in paths):
                    planned.add(job)
                    grew = True
        return Counter(self.rules[job] for job in planned)


def snakemake(workdir: Path, *args: str) -> str:
    """Run Snakemake in workdir; stdout + stderr, or a failed test showing them."""
    result = subprocess.run(
        [*SNAKEMAKE, *args, "--cores", "1"],
        cwd=workdir,
        env=SNAKEMAKE_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def parse_job_graph(output: str) -> JobGraph:
    """Jobs of a non-quiet `snakemake -n` listing (`rule x:` blocks with input:/output: lines)."""
    graph = JobGraph()
    for line in output.splitlines():
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if header:
            graph.rules.append(header.group(1))
            graph.inputs.append([])
            graph.outputs.append([])
            continue
        files = re.match(r"\s+(input|output): (.*)$", line)
        if files and graph.rules:
            paths = [path.strip() for path in files.group(2).split(", ")]
            (graph.inputs if files.group(1) == "input" else graph.outputs)[-1].extend(paths)
    return graph


def parse_job_stats(output: str) -> Counter:
    """Jobs per rule from the first "Job stats" table of `snakemake -n` (empty: nothing to do)."""
    if "Nothing to be done" in output:
        return Counter()
    lines = output.splitlines()
    start = lines.index("Job stats:")
    counts: Counter = Counter()
    for line in lines[start + 3 :]:
        cells = line.split()
        if len(cells) != 2 or cells[0] == "total":
            break
        counts[cells[0]] = int(cells[1])
    assert counts, f"no job stats in:\n{output[-3000:]}"
    return counts


def parse_reason_rules(output: str, reason: str) -> set[str]:
    """Rules listed under one reason (e.g. PARAMS_CHANGED) in the summary of a dry run."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == f"{reason}:":
            return {rule.strip() for rule in lines[index + 1].split(",")}
    return set()


def plan(workdir: Path, target: str, *args: str) -> tuple[Counter, str]:
    """Jobs per rule that `snakemake -n <target> <args>` plans, and its full output."""
    # the target goes first: --forcerun takes every word after it as a rule name
    output = snakemake(workdir, target, "-n", "--quiet", "rules", *args)
    return parse_job_stats(output), output


def copy_repository(destination: Path) -> Path:
    shutil.copytree(REPO, destination, ignore=NOT_COPIED)
    return destination


def edit_config(workdir: Path, pattern: str, replacement: str) -> str:
    """Replace one line of the copy's config/config.yaml; returns the old text to restore."""
    path = workdir / "config" / "config.yaml"
    text = path.read_text()
    edited, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, f"{path}: no line matches {pattern!r}"
    path.write_text(edited)
    return text


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> tuple[Path, JobGraph]:
    """A copy of the repository with no results, and its full job graph."""
    workdir = copy_repository(tmp_path_factory.mktemp("partial") / "repo")
    graph = parse_job_graph(snakemake(workdir, "all", "-n", "--forceall"))
    assert graph.rules, "the dry run listed no jobs"
    return workdir, graph


@pytest.fixture(scope="module")
def up_to_date(fresh_copy, tmp_path_factory) -> tuple[Path, JobGraph]:
    """A second copy with every output present and recorded as made by its current rule."""
    source, graph = fresh_copy
    workdir = tmp_path_factory.mktemp("up_to_date") / "repo"
    shutil.copytree(source, workdir, ignore=NOT_COPIED)
    for paths in graph.outputs:
        for relative in paths:
            path = workdir / relative
            # directory() outputs are the outputs without a file suffix in this workflow
            if "." not in path.name:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    snakemake(workdir, "all", "--touch", "--forceall", "--quiet", "all")
    counts, output = plan(workdir, "all")
    assert counts == Counter(), f"the touched copy is not up to date:\n{output[-3000:]}"
    assert "missing provenance" not in output, output[-3000:]
    return workdir, graph


def test_stage_target_builds_its_stage_and_what_it_needs_only(fresh_copy):
    workdir, graph = fresh_copy
    counts, _ = plan(workdir, "drr")
    volumes = sum(rule == "project_drr" for rule in graph.rules)
    assert volumes > 0
    assert counts["project_drr"] == volumes
    assert "ingest_ct" in counts
    planned = set(counts) - {"drr"}
    assert planned <= DATA_RULES | {"project_drr"}, planned
    assert "segment_drr" not in counts


def test_forcerun_sampling_plans_sampling_and_its_statistics_only(up_to_date):
    workdir, graph = up_to_date
    counts, output = plan(workdir, "stats", "--forcerun", "sample_drr")
    # six sample files (3 models x 2 conditions) -> per-image metrics -> Table I and the Study A
    # paired tests -> the joined paired tests; the samples' memorisation and realism checks ->
    # their tables and the controls table that reads them; all of these -> the scorecard; and
    # the `stats` target rule itself. Not Fig. 3 (stage figures), no training, nothing of
    # Study B.
    assert counts == Counter(
        sample_drr=6,
        evaluate_drr=1,
        table1=1,
        paired_tests=1,
        memorization_study_a=1,
        memorization_table=1,
        realism_study_a=1,
        realism_table=1,
        controls_table=1,
        scorecard=1,
        stats=1,
    ), output[-3000:]
    assert parse_reason_rules(output, "forced") == {"sample_drr"}


@pytest.mark.parametrize(
    ("stage_rules", "later", "never"),
    [
        (  # stage drr: every later Study A job and the checks of Study A; no data, no Study B
            ["project_drr"],
            ["segment_drr", "train_ctm", "sample_drr", "table1", "memorization_study_a"],
            DATA_RULES | STUDY_B_RULES,
        ),
        (  # stage samples: statistics and checks of the samples; no training of any generator
            ["sample_drr", "sample_study_b_generator"],
            ["evaluate_drr", "fid_table", "train_classifier_augmented", "reader_kit"],
            DATA_RULES
            | STUDY_A_TRAINING
            | {"project_drr", "segment_drr", "train_study_b_generator", "train_classifier_real"},
        ),
    ],
    ids=["drr", "samples"],
)
def test_forcerun_stage_plans_it_and_its_dependents_only(up_to_date, stage_rules, later, never):
    workdir, graph = up_to_date
    counts, output = plan(workdir, "all", "--forcerun", *stage_rules)
    expected = graph.dependents(set(stage_rules))
    expected["all"] = 1
    assert counts == expected, output[-3000:]
    for rule in stage_rules:
        assert counts[rule] == sum(name == rule for name in graph.rules), rule
    for rule in later:
        assert rule in counts, f"{rule} depends on {stage_rules} but is not planned"
    assert not set(counts) & never, sorted(set(counts) & never)


def test_segmentation_parameter_reruns_segmentation_and_what_follows(up_to_date):
    workdir, graph = up_to_date
    original = edit_config(workdir, r"^(\s+contour_threshold:) 0\.1\b", r"\1 0.15")
    try:
        counts, output = plan(workdir, "all")
    finally:
        (workdir / "config" / "config.yaml").write_text(original)
    # Snakemake names the first trigger it finds: jobs downstream of a changed job show "input
    # files updated", so only the first rules reached by the change show PARAMS_CHANGED.
    # The CONFIG_RECORDS tables hold the whole configuration, so any config change remakes them.
    changed = parse_reason_rules(output, PARAMS_CHANGED)
    assert "segment_drr" in changed, output[-3000:]
    assert changed <= {"segment_drr", "segmentation_figure"} | CONFIG_RECORDS, output[-3000:]
    expected = graph.dependents(changed)
    expected["all"] = 1
    assert counts == expected, output[-3000:]
    assert "project_drr" not in counts
    assert not set(counts) & (DATA_RULES | STUDY_B_RULES)


def plan_after_edit(workdir: Path, pattern: str, replacement: str) -> tuple[Counter, str]:
    """The plan of `snakemake -n all` with one line of config/config.yaml edited (restored)."""
    original = edit_config(workdir, pattern, replacement)
    try:
        return plan(workdir, "all")
    finally:
        (workdir / "config" / "config.yaml").write_text(original)


def test_sampler_parameter_reruns_score_model_sampling_not_training_nor_the_unet(up_to_date):
    workdir, graph = up_to_date
    counts, output = plan_after_edit(workdir, r"^(\s+pc: \{steps:) 100\b", r"\1 90")
    changed = parse_reason_rules(output, PARAMS_CHANGED)
    retrained = changed & STUDY_A_TRAINING
    assert not retrained, (
        f"a sampler setting reruns {sorted(retrained)} and so every Study A model: "
        "pass those rules only the study_a keys they use"
    )
    assert {"sample_drr", "utility_ctm_samples"} <= changed, output[-3000:]
    # the CSM and the CTM under both conditions; the U-Net's one forward pass has no sampler
    all_sampling = sum(rule == "sample_drr" for rule in graph.rules)
    assert all_sampling == 6
    assert counts["sample_drr"] == 4, output[-3000:]
    expected = graph.dependents(changed)
    expected["all"] = 1
    # graph.dependents counts every sample_drr job of the rule; the U-Net's two are not planned
    expected["sample_drr"] = 4
    assert counts == expected, output[-3000:]
    assert not set(counts) & (DATA_RULES | STUDY_B_RULES | STUDY_A_TRAINING | {"project_drr"})


def test_study_b_sampler_parameter_reruns_the_ddpm_samples_not_the_wgan(up_to_date):
    workdir, graph = up_to_date
    counts, output = plan_after_edit(workdir, r"^(\s+inference_steps:) 25\b", r"\1 20")
    changed = parse_reason_rules(output, PARAMS_CHANGED)
    assert {"sample_study_b_generator", "sample_memorization_probe"} <= changed, output[-3000:]
    assert sum(rule == "sample_study_b_generator" for rule in graph.rules) == 3
    # ddpm_uncond and ddpm_cond draw with the DDIM sampler; the WGAN draws in one pass
    assert counts["sample_study_b_generator"] == 2, output[-3000:]
    assert not changed & {"train_study_b_generator", "train_study_b_ddpm_base", "study_b_controls"}
    assert not set(counts) & (DATA_RULES | STUDY_A_TRAINING | {"sample_drr"}), sorted(counts)


@pytest.mark.parametrize(
    ("pattern", "replacement", "rule"),
    [
        (r"^(\s+heun: \{steps:) 25\b", r"\1 20", None),  # a sampler the config does not use
        (r"^(\s+figure_cases:) 2\b", r"\1 3", "fig3"),
        (r"^(\s+grid_per_cell:) 2\b", r"\1 3", "kl_grid_figure"),
        (r"^(\s+figure_views:) 4\b", r"\1 3", "segmentation_figure"),
        (r"^(\s+z:) 1\.96\b", r"\1 2.58", "controls_table"),
        (r"^(\s+confidence_level:) 0\.95\b", r"\1 0.9", "table1"),
    ],
    ids=["unused_sampler", "fig3", "kl_grid", "segmentation_figure", "controls", "table1"],
)
def test_setting_of_one_rule_reruns_that_rule_only(up_to_date, pattern, replacement, rule):
    workdir, graph = up_to_date
    counts, output = plan_after_edit(workdir, pattern, replacement)
    changed = parse_reason_rules(output, PARAMS_CHANGED)
    assert changed - CONFIG_RECORDS == ({rule} if rule else set()), output[-3000:]
    expected = graph.dependents(changed)
    expected["all"] = 1
    assert counts == expected, output[-3000:]
    assert not set(counts) & (DATA_RULES | STUDY_A_TRAINING | {"sample_drr", "project_drr"})
