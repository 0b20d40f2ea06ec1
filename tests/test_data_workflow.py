"""The data stage on real-data folders, run by Snakemake: one ingest job per CT volume and one
crop job per raw OAI visit folder, so that with --keep-going one run names every bad input and
keeps every good output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_ingest import leg_array, write_image
from test_oai import kl_table, place, write_radiograph
from test_partial_reruns import NOT_COPIED, SNAKEMAKE_ENV

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_keep_going_names_every_bad_input_and_keeps_the_good_ones(tmp_path, pydicom_file):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=NOT_COPIED)
    sicas = tmp_path / "sicas"
    sicas.mkdir()
    write_image(leg_array(), sicas / "good.nii.gz")
    truncated = write_image(leg_array(), sicas / "truncated.nii")
    truncated.write_bytes(truncated.read_bytes()[:1000])
    rng = np.random.default_rng(0)
    write_image(rng.gamma(2.0, 400.0, (20, 24, 20)).astype(np.float32), sicas / "t1.nii.gz")

    oai = tmp_path / "oai"
    write_radiograph(oai / "0.C.2" / "9000099" / "001", "9000099")
    place(pydicom_file, "CT_small.dcm", oai / "1.C.2" / "9000099")
    write_radiograph(oai / "1.C.2" / "9000099" / "001", "9000099")
    write_radiograph(oai / "3.C.2" / "9000099" / "001", "9000099")
    kl_table(oai / "kXR_SQ_BU00.txt", ["9000099|1|15|x|1|1", "9000099|2|15|x|3|1"])

    overrides = [
        f"data={{sicas_dir: {sicas}, oai_dir: {oai}, oai_format: raw}}",
        "ingest={oai_crop_mm: 28.0, oai_image_size: 32}",
    ]
    targets = [
        *(f"results/ct/{name}.nii.gz" for name in ("good", "t1", "truncated")),
        *(f"results/oai/crops/{visit}" for visit in ("0.C.2", "1.C.2", "3.C.2")),
    ]
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--keep-going", *targets]
        + ["--config", *overrides],  # --config takes every word after it
        cwd=repo,
        env=SNAKEMAKE_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode != 0
    errors = sorted(
        line for line in run.stderr.splitlines() if line.startswith("kneesynth: error:")
    )
    assert len(errors) == 3, run.stderr
    assert errors[0].startswith(f"kneesynth: error: {oai}/1.C.2/9000099/CT_small.dcm: Modality CT")
    assert errors[1].startswith(f"kneesynth: error: {sicas}/t1.nii.gz: does not look like CT")
    assert errors[2].startswith(f"kneesynth: error: {sicas}/truncated.nii: cannot read the NIfTI")
    # the good outputs are there, complete and readable; the bad ones are not
    image = sitk.ReadImage(str(repo / "results" / "ct" / "good.nii.gz"))
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    assert not (repo / "results" / "ct" / "t1.nii.gz").exists()
    for visit in ("0.C.2", "3.C.2"):
        assert (repo / "results" / "oai" / "crops" / visit / "radiographs.tsv").is_file()
    assert not (repo / "results" / "oai" / "crops" / "1.C.2").exists()


def test_read_only_results_stop_the_workflow_with_one_line(tmp_path):
    """A results/ folder that cannot be written: one line before any job (Snakemake itself
    would end in a traceback while preparing the first job)."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=NOT_COPIED)
    (repo / "results").mkdir()
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "results/splits/volumes.tsv"]
    if os.geteuid() != 0:
        os.chmod(repo / "results", 0o555)
        reason = "permission denied"
    else:  # root writes anywhere: a read-only bind mount in a private mount namespace
        mount = 'mount --bind results results && mount -o remount,bind,ro results && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", mount, "sh", *command]
        reason = "read-only file system"
    try:
        run = subprocess.run(
            command, cwd=repo, env=SNAKEMAKE_ENV, capture_output=True, text=True, timeout=600
        )
    finally:
        os.chmod(repo / "results", 0o755)
    if os.geteuid() == 0 and "mount:" in run.stderr:
        pytest.skip(f"no read-only mount possible here: {run.stderr.strip()[:200]}")
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("kneesynth: error:")]
    assert errors == [f"kneesynth: error: results: cannot write: {reason}"], run.stderr
    assert "Traceback" not in run.stderr
