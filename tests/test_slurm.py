"""The workflow on a real Slurm, through the project's profile (slurm).

Needs a Slurm controller: `bash tests/slurm/up.sh` (as root) brings up a one-node cluster on
this machine, `bash tests/slurm/down.sh` stops it. The tests are skipped unless
KNEESYNTH_SLURM=1 is set (then a missing Slurm is an error) or `sinfo` reaches a controller.

    bash tests/slurm/up.sh && KNEESYNTH_SLURM=1 pytest -m slurm tests/test_slurm.py; bash tests/slurm/down.sh

Both tests run copies of a workflow in a temporary folder, so results/ of the working tree are
never touched. The fault workflow (tests/slurm/fault) mostly waits for Slurm's smallest time
limit, one minute, so it is started in the background before the first test and runs alongside
the segmentation test: about 4-5 minutes in all on 2 busy cores.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "slurm"
FAULT_WORKFLOW = REPO / "tests" / "slurm" / "fault"
# generated or local-only entries that a copy of the repository leaves out
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
    "venv",
)
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def slurm_reachable() -> bool:
    """True when `sinfo` answers from a Slurm controller with at least one node."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return False
    try:
        result = subprocess.run(
            [sinfo, "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


SLURM_REQUESTED = os.environ.get("KNEESYNTH_SLURM") == "1"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not SLURM_REQUESTED and not slurm_reachable(),
        reason="no Slurm reachable (bring one up: bash tests/slurm/up.sh; then KNEESYNTH_SLURM=1)",
    ),
]


@pytest.fixture(scope="module")
def slurm() -> None:
    if not slurm_reachable():
        pytest.fail(
            "KNEESYNTH_SLURM=1 but sinfo reaches no Slurm controller: run bash tests/slurm/up.sh"
        )


FAULT_TEST = "test_training_killed_at_its_time_limit_resumes_on_retry"


@pytest.fixture(scope="module", autouse=True)
def fault_run_on_slurm(request, slurm, tmp_path_factory):
    """The fault workflow, started on Slurm before the first test of this module.

    Most of its minutes are spent waiting for Slurm's one-minute time limit, so it runs while
    the other tests do; the fault test collects it. Not started when that test is deselected.
    """
    if not any(item.name == FAULT_TEST for item in request.session.items):
        yield None
        return
    on_slurm = tmp_path_factory.mktemp("fault") / "on_slurm"
    shutil.copytree(FAULT_WORKFLOW, on_slurm, ignore=NOT_COPIED)
    run = SnakemakeRun(
        ["--cores", "all", "--profile", str(SLURM_PROFILE)], on_slurm, "slurm_run.txt"
    )
    yield run
    run.stop()


def snakemake_executable() -> str:
    beside_python = Path(sys.executable).with_name("snakemake")
    return (
        str(beside_python) if beside_python.exists() else (shutil.which("snakemake") or "snakemake")
    )


class SnakemakeRun:
    """Snakemake running in ``cwd`` in the background, its output going to ``cwd/transcript``."""

    def __init__(self, args: list[str], cwd: Path, transcript: str) -> None:
        self.args = args
        self.transcript = cwd / transcript
        with open(self.transcript, "w") as out:
            self.process = subprocess.Popen(
                [snakemake_executable(), *args],
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def finish(self, timeout: float) -> str:
        """Wait for the run; fail the test if it fails or outlasts ``timeout``. Its output."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            output = self.stop()
            pytest.fail(
                f"snakemake {' '.join(self.args)} ran past {timeout:.0f} s:\n{output[-4000:]}"
            )
        output = self.transcript.read_text()
        if self.process.returncode != 0:
            errors = re.findall(
                r"^(?:Error|\w*Error|\w*Exception).*(?:\n(?!\[).*){0,20}", output, re.M
            )
            pytest.fail(
                f"snakemake {' '.join(self.args)} failed (full output: {self.transcript}):\n"
                + "\n".join(errors)[-8000:]
            )
        return output

    def stop(self) -> str:
        """SIGTERM first, so that Snakemake cancels its Slurm jobs; SIGKILL after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.transcript.read_text()


def run_snakemake(args: list[str], cwd: Path, timeout: float, transcript: str) -> str:
    """Run snakemake in ``cwd`` to the end; return its output (also kept in ``cwd/transcript``)."""
    return SnakemakeRun(args, cwd, transcript).finish(timeout)


def slurm_job_state(job_id: str) -> str:
    """JobState of a finished job as slurmctld remembers it (for MinJobAge seconds)."""
    result = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    )
    match = re.search(r"JobState=(\S+)", result.stdout)
    return match.group(1) if match else f"unknown ({result.stderr.strip()})"


def test_segmentation_stage_runs_through_slurm(slurm, tmp_path):
    """`snakemake --cores all --profile slurm segmentation` in a copy of the repo (two
    phantom volumes): every job goes through sbatch and completes, and the outputs are sound."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=NOT_COPIED, symlinks=True)

    output = run_snakemake(
        [
            "--cores",
            "all",
            "--profile",
            "slurm",
            "segmentation",
            "--configfile",
            "config/config.yaml",
            "tests/slurm/segmentation.yaml",
        ],
        repo,
        timeout=420,
        transcript="slurm_run.txt",
    )

    submitted = SUBMITTED.findall(output)
    assert submitted, f"no job was submitted to Slurm:\n{output[-4000:]}"
    # every job that is not a local rule went through sbatch, and left its outputs
    remote_jobs = re.findall(r"^rule \w+:\n((?:    .*\n)+)", output, flags=re.MULTILINE)
    assert len(submitted) == len(remote_jobs), output[-4000:]
    for job in remote_jobs:
        declared = re.search(r"^    output: (.*)$", job, flags=re.MULTILINE)
        for path in declared.group(1).split(", ") if declared else []:
            assert (repo / path).stat().st_size > 0, f"{path} missing or empty"
    states = {slurm_id: slurm_job_state(slurm_id) for _, slurm_id in submitted}
    assert set(states.values()) == {"COMPLETED"}, states

    results = repo / "results"
    volumes = sorted(
        path.name.removesuffix(".nii.gz") for path in (results / "ct").glob("*.nii.gz")
    )
    assert volumes, f"{results / 'ct'}: no CT volumes"
    assert sorted(path.stem for path in (results / "segmentation").glob("*.npz")) == volumes
    for volume in volumes:
        with np.load(results / "drr" / f"{volume}.npz", allow_pickle=False) as drr:
            drr_shape = drr["drr"].shape
        path = results / "segmentation" / f"{volume}.npz"
        with np.load(path, allow_pickle=False) as segmentation:
            for name in ("contour", "bone"):
                values = np.unique(segmentation[name])
                assert segmentation[name].shape == drr_shape, f"{path}:{name} shape"
                assert set(values.tolist()) <= {0.0, 0.5, 1.0}, f"{path}:{name} has {values}"
                assert values.size > 1, f"{path}:{name} is constant"

    # the outputs are complete: nothing is left to do
    dry_run = run_snakemake(
        [
            "-n",
            "segmentation",
            "--configfile",
            "config/config.yaml",
            "tests/slurm/segmentation.yaml",
        ],
        repo,
        timeout=120,
        transcript="dry_run.txt",
    )
    assert "Nothing to be done" in dry_run, dry_run[-3000:]


def test_training_killed_at_its_time_limit_resumes_on_retry(fault_run_on_slurm, tmp_path):
    """A training job needs longer than the one minute Slurm grants its first attempt: Slurm
    kills it (TIMEOUT), Snakemake retries it with a longer runtime, it resumes from its
    checkpoint, and the weights equal those of an uninterrupted run."""
    import torch

    from kneesynth.training import load_weights

    straight = tmp_path / "straight"
    shutil.copytree(FAULT_WORKFLOW, straight, ignore=NOT_COPIED)
    run_snakemake(
        ["--cores", "1", "--config", "seconds_per_step=0"],
        straight,
        timeout=300,
        transcript="local_run.txt",
    )

    output = fault_run_on_slurm.finish(timeout=480)
    on_slurm = fault_run_on_slurm.transcript.parent

    submissions = [slurm_id for _, slurm_id in SUBMITTED.findall(output)]
    assert len(submissions) == 2, f"expected one kill and one retry:\n{output[-4000:]}"
    assert "SLURM status is: 'TIMEOUT'" in output, output[-4000:]
    assert slurm_job_state(submissions[0]) == "TIMEOUT"
    assert slurm_job_state(submissions[1]) == "COMPLETED"

    log = (on_slurm / "logs" / "train.log").read_text()
    assert f"slurm job {submissions[1]}, runtime limit 4 min" in log, log
    assert "CUDA_VISIBLE_DEVICES=None" not in log, "the retry got no GPU from Slurm"
    resumed = re.search(r"resuming from step (\d+) of (\d+)", log)
    assert resumed, f"the retry did not resume from a checkpoint:\n{log}"
    assert 0 < int(resumed.group(1)) < int(resumed.group(2))

    resumed_weights, _ = load_weights(on_slurm / "results" / "model.pt")
    straight_weights, _ = load_weights(straight / "results" / "model.pt")
    assert resumed_weights.keys() == straight_weights.keys()
    for name, tensor in straight_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name
