"""Table, figure, stats and scorecard jobs import neither torch, diffusers nor MONAI:
those imports cost seconds of CPU per job, more than such a job's work.

Each script runs in a fresh interpreter with a stand-in for Snakemake's object, up to its first
look at the job's inputs, outputs or params (its imports done); then the loaded modules are
listed. Study A's evaluation, table, test and figure functions also run end to end on small
sample files in a fresh interpreter. bench/job_overhead.py measures the same on the real demo.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "monai")

# the scripts of the table, figure, stats and scorecard rules (and the dataset assembly)
LIGHT_SCRIPTS = [
    "classifier_figures.py",
    "classifier_stats.py",
    "concat_tables.py",
    "memorization_table.py",
    "paired_tests.py",
    "provenance.py",
    "reader_scores.py",
    "scorecard.py",
    "segmentation_figure.py",
    "study_a_assemble.py",
    "study_a_evaluate.py",
    "study_a_fig3.py",
    "study_a_table1.py",
    "study_b_kl_grid.py",
]

RUNNER = textwrap.dedent(
    """
    import json, runpy, sys

    class FirstWork(Exception):
        pass

    class Job:  # Snakemake's object as run_script sees it; stops at the first job setting
        log = []
        threads = 1
        rule = "test"

        def __getattr__(self, name):
            raise FirstWork(name)

    try:
        runpy.run_path(sys.argv[1], init_globals={"snakemake": Job()}, run_name="__main__")
    except FirstWork:
        pass
    else:
        raise SystemExit("the script never looked at the job")
    print(json.dumps([m for m in sys.argv[2:] if m in sys.modules]))
    """
)


def loaded_heavy_modules(code: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, *code, *HEAVY], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", LIGHT_SCRIPTS)
def test_light_scripts_import_no_torch_diffusers_monai(script):
    path = ROOT / "workflow" / "scripts" / script
    assert loaded_heavy_modules(["-c", RUNNER, str(path)]) == []


STUDY_A_TABLES = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np

    from kneesynth.io import save_npz
    from kneesynth.study_a.evaluate import evaluate_samples, paired_tests, table1
    from kneesynth.study_a.figures import figure3
    from kneesynth.study_a.settings import CONDITIONS, MODELS

    folder = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    samples = []
    for model in MODELS:
        for condition in CONDITIONS:
            target = rng.random((4, 8, 8), dtype=np.float32)
            path = folder / f"{model}_{condition}.npz"
            save_npz(
                path,
                generated=np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(
                    np.float32
                ),
                target=target,
                mask=(target > 0.5).astype(np.float32),
                volume=np.array(["v1", "v1", "v2", "v2"]),
                view=np.array([0, 1, 0, 1]),
                evaluations=np.array(1),
                sampler=np.array("unet"),
            )
            samples.append(path)
    evaluate_samples(samples, folder / "metrics.tsv")
    table1(folder / "metrics.tsv", folder / "table1.tsv")
    paired_tests(folder / "metrics.tsv", folder / "paired.tsv")
    figure3(samples, folder / "fig3.png", folder / "fig3.pdf")
    assert (folder / "fig3.png").exists() and (folder / "paired.tsv").exists()
    print(json.dumps([m for m in sys.argv[2:] if m in sys.modules]))
    """
)


def test_study_a_evaluation_tables_and_figure_run_without_torch(tmp_path):
    assert loaded_heavy_modules(["-c", STUDY_A_TABLES, str(tmp_path)]) == []
