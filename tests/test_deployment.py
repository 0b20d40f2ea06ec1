"""Deployment: the conda env file, parsing without kneesynth installed, the two profiles.

- The env file installs kneesynth from the workflow's own folder, wherever conda runs pip from
  (Snakemake copies the file to .snakemake/conda/). No conda client is needed to check this:
  conda writes the pip section to a requirements file beside the copied env file and runs
  `pip install -r` on it, which the test does too (pip --dry-run, offline).
- The workflow parses (`snakemake -n`) in a Python where kneesynth is not installed and torch,
  pandas, scipy, SimpleITK ... cannot be imported: what an environment holding only Snakemake
  (+ its Slurm plugin, which brings numpy) offers under --software-deployment-method conda.
- A laptop run asks for no cluster resources; the Slurm profile names only rules that exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {key: value for key, value in os.environ.items() if key != "SNAKEMAKE_PROFILE"}
COPIED = ["Snakefile", "config", "envs", "profiles", "slurm", "src", "workflow"]
# what the parse must not need: kneesynth's heavy dependencies (not numpy and pandas: the Slurm
# plugin brings them, and Snakemake imports it at start)
HEAVY = [
    "torch",
    "scipy",
    "SimpleITK",
    "nibabel",
    "pydicom",
    "diffusers",
    "monai",
    "astra",
    "sklearn",
    "matplotlib",
    "statsmodels",
    "PIL",
]


def test_env_file_installs_kneesynth_from_the_workflow_folder(tmp_path):
    env = yaml.safe_load((REPO / "envs" / "kneesynth.yaml").read_text())
    pip = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    kneesynth_lines = [line for line in pip if "KNEESYNTH_WORKFLOW_DIR" in line]
    assert kneesynth_lines, pip
    where_conda_runs_pip = tmp_path / "workdir" / ".snakemake" / "conda"
    where_conda_runs_pip.mkdir(parents=True)
    requirements = where_conda_runs_pip / "condaenv.requirements.txt"
    requirements.write_text("\n".join(kneesynth_lines) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "-r",
        str(requirements),
    ]
    run = subprocess.run(
        command,
        cwd=where_conda_runs_pip,
        env={**ENV, "KNEESYNTH_WORKFLOW_DIR": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert REPO.as_uri() in run.stdout and "Would install kneesynth" in run.stdout
    # without the variable (that the Snakefile sets) pip cannot tell the folder
    unset = {key: value for key, value in ENV.items() if key != "KNEESYNTH_WORKFLOW_DIR"}
    run = subprocess.run(command, cwd=where_conda_runs_pip, env=unset, capture_output=True)
    assert run.returncode != 0


def test_the_snakefile_sets_the_variable_the_env_file_reads():
    snakefile = (REPO / "Snakefile").read_text()
    assert "KNEESYNTH_WORKFLOW_DIR=workflow.basedir" in snakefile


def copy_workflow(folder: Path) -> Path:
    """The workflow's files (no results, no .snakemake) in ``folder``."""
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture(scope="module")
def bare_parse(tmp_path_factory):
    """`snakemake -n` on a copy of the workflow in a Python without kneesynth or its heavy
    dependencies; returns the run."""
    folder = copy_workflow(tmp_path_factory.mktemp("bare"))
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.abc, sys
            # the editable install of kneesynth (a path in a .pth file) is gone
            sys.path[:] = [p for p in sys.path if p != {str(REPO / "src")!r}]
            HEAVY = {HEAVY!r}

            class Blocked(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in HEAVY:
                        raise ImportError(f"{{name}} is not installed here (test)")
                    return None

            sys.meta_path.insert(0, Blocked())
            """
        )
    )
    check = subprocess.run(
        [sys.executable, "-c", "import kneesynth"],
        env={**ENV, "PYTHONPATH": str(site)},
        cwd=folder,
        capture_output=True,
    )
    assert check.returncode != 0, "kneesynth is still importable: the test would prove nothing"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n"],
        env={**ENV, "PYTHONPATH": str(site)},
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_workflow_parses_without_kneesynth_installed(bare_parse):
    assert bare_parse.returncode == 0, bare_parse.stdout[-3000:] + bare_parse.stderr[-3000:]
    assert "This was a dry-run" in bare_parse.stdout + bare_parse.stderr


@pytest.mark.slow
def test_a_laptop_run_asks_for_no_cluster_resources(bare_parse):
    output = bare_parse.stdout + bare_parse.stderr
    resources = re.findall(r"^\s+resources: (.*)$", output, re.MULTILINE)
    assert resources, output[-2000:]
    assert not [line for line in resources if re.search(r"gpu=|mem_mb=|runtime=", line)]


def test_profiles():
    workflow_profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert workflow_profile.get("rerun-incomplete") is True
    assert "set-resources" not in workflow_profile and "default-resources" not in workflow_profile
    slurm = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    sizes = slurm["set-resources"]
    assert sizes["train_ctm"]["gpu"] == 1 and "gpus" not in str(sizes)
    rules = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    unknown = sorted(set(sizes) - set(rules))
    assert not unknown, f"slurm/config.yaml sizes rules the workflow does not have: {unknown}"


@pytest.mark.slow
def test_the_run_ends_with_what_it_did_and_the_next_command(tmp_path):
    """The Snakefile's onsuccess and onerror handlers, on a cheap target of the real workflow."""
    folder = copy_workflow(tmp_path)

    def snakemake(*args):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--cores",
                "1",
                "results/splits/volumes.tsv",
                *args,
            ],
            cwd=folder,
            env=ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        return run.returncode, run.stdout + run.stderr

    status, output = snakemake()
    assert status == 0, output[-3000:]
    assert "kneesynth: done." in output and "the scorecard is not built yet" in output
    assert "next:      snakemake --cores all" in output
    # a job that fails (split fractions that split nothing): the handler names it and its log
    (folder / "bad.yaml").write_text("splits:\n  fractions: [0, 0, 0]\n")
    status, output = snakemake("--configfile", "bad.yaml")
    assert status != 0
    assert "kneesynth: the run stopped before the end." in output
    assert "split_volumes: logs/split_volumes/split_volumes.log" in output
    assert "type the same command again" in output
