"""The kneesynth command: check-data, scorecard, reader-sheets validate; and the run summaries."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kneesynth.cli import main
from kneesynth.summary import failed_jobs, failure_summary, headline_rst, run_summary

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["study", "kind", "claim", "paper_value", "our_value", "reproduced", "why", "evidence"]
ROWS = [
    ["A", "value", "Table I: CTM MAE, contour", "0.0193", "0.05", "no", "outside our CI",
     "table1_drr.tsv"],
    ["A", "finding", "CTM beats CSM in PSNR", "yes", "+2 [1, 3]", "yes", "Holm p 0.01", "paired"],
    ["A", "finding", "CSM is worst in MAE", "yes", "no", "inconclusive", "Holm p 0.4", "paired"],
    ["A", "setting", "VE SDE sigma_max", "128", "10", "yes", "", "config"],
    ["A", "setting", "DRR views per volume", "60", "12", "setting differs", "12 vs 60", "config"],
    ["B", "value", "readers spot wgan images", "0.625", "not run", "not run", "no sheets", "r"],
    ["C", "finding", "DDPM memorises more than the GAN", "yes", "-", "needs the real data", "",
     "tiny"],
]  # fmt: skip


def write_scorecard(folder: Path, rows=ROWS) -> Path:
    path = folder / "tables" / "scorecard.tsv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "check-data"),
        (["check-data"], "--configfile"),
        (["scorecard"], "RESULTS"),
        (["reader-sheets", "validate"], "--keys"),
    ],
)
def test_every_command_has_help(args, expected):
    """Through the installed console script (pyproject [project.scripts])."""
    command = shutil.which("kneesynth", path=os.path.dirname(sys.executable))
    assert command, "the kneesynth command is not installed beside this Python"
    run = subprocess.run([command, *args, "--help"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout


def test_scorecard_groups_claims_by_study_and_verdict(tmp_path, capsys):
    write_scorecard(tmp_path)
    assert main(["scorecard", str(tmp_path), "--width", "100"]) == 0
    out = capsys.readouterr().out
    # claims counted apart from settings, every verdict as it comes
    assert "5 claims: 1 yes, 1 no, 1 inconclusive, 1 not run, 1 needs the real data" in out
    assert "2 settings: 1 yes, 1 setting differs" in out
    study_a = out.index("Study A (Mei et al.)")
    assert study_a < out.index("Study B (Smits Serena") < out.index("Study C (Akbar")
    section_a = out[study_a : out.index("Study B (Smits Serena")]
    assert (
        section_a.index("yes (1):")
        < section_a.index("no (1):")
        < section_a.index("inconclusive (1):")
    )
    assert "paper 0.0193; ours 0.05" in section_a and "why: outside our CI" in section_a
    assert "from: table1_drr.tsv" in section_a
    # the setting that differs is listed, the one that matches only counted
    assert "DRR views per volume: paper 60, this run 12 (setting differs)" in section_a
    assert "sigma_max" not in out
    assert main(["scorecard", str(tmp_path / "tables" / "scorecard.tsv"), "--all-settings"]) == 0
    assert "VE SDE sigma_max" in capsys.readouterr().out


def test_scorecard_errors_are_one_line(tmp_path, capsys):
    assert main(["scorecard", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"kneesynth: error: {tmp_path}/tables/scorecard.tsv: scorecard not found (it is made by `snakemake --cores all`)"
    )
    bad = tmp_path / "bad.tsv"
    bad.write_text("claim\tvalue\nx\t1\n")
    assert main(["scorecard", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"kneesynth: error: {bad}: not a scorecard: no column(s) study, kind, reproduced"
    )


def write_nifti(path: Path, truncate: bool = False) -> None:
    import nibabel as nib

    hu = np.full((12, 12, 12), -1000, dtype=np.int16)
    hu[3:9, 3:9, :] = 40
    nib.save(nib.Nifti1Image(hu, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def test_check_data_lists_every_problem_of_every_folder(tmp_path, capsys):
    from PIL import Image

    sicas = tmp_path / "smir"
    sicas.mkdir()
    write_nifti(sicas / "SMIR.Body.025Y.M.CT.57697.nii")
    write_nifti(sicas / "SMIR.Body.031Y.F.CT.10001.nii", truncate=True)
    write_nifti(sicas / "SMIR.Body.040Y.F.CT.10002.nii", truncate=True)
    oai = tmp_path / "oai"
    (oai / "train" / "0").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(oai / "train" / "0" / "9000001L.png")
    (oai / "train" / "7").mkdir()  # not a KL grade
    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump({"data": {"sicas_dir": str(sicas), "oai_dir": str(oai)}}))

    assert main(["check-data", "-d", str(REPO), "--configfile", str(config)]) == 1
    captured = capsys.readouterr()
    problems = [line.strip() for line in captured.err.splitlines() if line.startswith("  ")]
    assert len(problems) == 3, captured.err
    assert problems[0].startswith(f"{sicas}/SMIR.Body.031Y.F.CT.10001.nii: cannot read")
    assert problems[1].startswith(f"{sicas}/SMIR.Body.040Y.F.CT.10002.nii: cannot read")
    assert problems[2].startswith(f"{oai}/train/7: not a KL grade folder")
    assert f"CT volumes (data.sicas_dir): {sicas}: 3 volumes, 1 readable" in captured.out
    assert not (tmp_path / "results").exists() and not (REPO / "results" / "ct" / "x").exists()


def test_check_data_on_the_demo_config_and_bad_configs(tmp_path, capsys):
    assert main(["check-data", "-d", str(REPO)]) == 0
    assert "phantom data, there is nothing to check" in capsys.readouterr().out
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  sicas_folder: /x\n")
    assert main(["check-data", "-d", str(REPO), "--configfile", str(typo)]) == 1
    heading, line = capsys.readouterr().err.splitlines()
    assert heading == "1 problem(s):"
    assert str(typo) in line and "data: unknown key" in line
    assert main(["check-data", "-d", str(tmp_path)]) == 1
    heading, line = capsys.readouterr().err.splitlines()
    assert line.startswith(f"  {tmp_path}/config/config.yaml: not found")


def test_reader_sheets_validate(tmp_path, capsys):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "wgan.csv").write_text(
        "image_id,truth,source,generator\nab12,real,r0,wgan\ncd34,synthetic,s0,wgan\n"
    )
    sheets = tmp_path / "responses"
    sheets.mkdir()
    (sheets / "reader1_wgan.csv").write_text("image_id,answer\nab12,real\ncd34,\n")
    (sheets / "reader2_wgan.csv").write_text("image_id,answer\nab12,maybe\ncd34,s\n")
    (sheets / "reader3_ddpm.csv").write_text("image_id,answer\nab12,r\n")
    (sheets / "reader4_wgan.csv").write_text("image_id,answer\nzz99,r\n")

    assert main(["reader-sheets", "validate", str(sheets), "--keys", str(keys)]) == 1
    captured = capsys.readouterr()
    assert "reader1_wgan.csv: reader reader1, wgan: 1 of 2 images answered (1 left blank)" in (
        captured.out
    )
    problems = [line.strip() for line in captured.err.splitlines() if line.startswith("  ")]
    assert problems == [
        f"{sheets}/reader2_wgan.csv: answer must be real or synthetic (or empty), found 'maybe'",
        f"{sheets}/reader3_ddpm.csv: answer sheet name must be <reader>_<generator>.csv with "
        "generator one of wgan",
        f"{sheets}/reader4_wgan.csv: image_id not in this generator's kit: zz99",
    ]
    for name in ("reader2_wgan.csv", "reader3_ddpm.csv", "reader4_wgan.csv"):
        (sheets / name).unlink()
    assert main(["reader-sheets", "validate", str(sheets), "--keys", str(keys)]) == 0
    assert main(["reader-sheets", "validate", str(sheets), "--keys", str(tmp_path / "no")]) == 1
    assert "no answer keys" in capsys.readouterr().err


def test_run_summary_points_at_results_and_the_next_command(tmp_path):
    results = tmp_path / "results"
    assert "the scorecard is not built yet" in "\n".join(run_summary(results))
    write_scorecard(results)
    (results / "figures").mkdir()
    (results / "figures" / "fig3.png").write_bytes(b"")
    text = "\n".join(run_summary(results, {"data": {"sicas_dir": None, "oai_dir": None}}))
    assert f"scorecard: {results}/tables/scorecard.tsv  (5 claims: 1 yes, 1 no" in text
    assert "A: 3 claims: 1 yes, 1 no, 1 inconclusive; 2 settings" in text
    assert "(1 PNG)" in text
    assert "kneesynth scorecard" in text and f"snakemake --report {results}/report.html" in text
    assert "demo" in text
    (results / "report.html").write_text("<html></html>")
    text = "\n".join(run_summary(results, {"data": {"sicas_dir": "/smir", "oai_dir": None}}))
    assert f"report:    {results}/report.html" in text and "demo" not in text


def test_headline_rst():
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]
    text = headline_rst(rows, demo=True)
    assert text.startswith("**This run:** 5 claims: 1 yes, 1 no, 1 inconclusive")
    assert "- **Study B (Smits Serena et al.)" in text and "phantom" in text


FAILING_SNAKEFILE = """\
rule all:
    input:
        "b.txt",


rule make_a:
    output:
        "a.txt",
    log:
        "logs/make_a.log",
    shell:
        "echo broken > {log}; exit 3"


rule make_b:
    input:
        "a.txt",
    output:
        "b.txt",
    shell:
        "cp {input} {output}"
"""


def test_failure_summary_names_the_failed_job_and_its_log(tmp_path):
    """Read from Snakemake's own log of a real failed run (its format is Snakemake's)."""
    (tmp_path / "Snakefile").write_text(FAILING_SNAKEFILE)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    (log,) = (tmp_path / ".snakemake" / "log").glob("*.snakemake.log")
    assert failed_jobs(log) == [("make_a", "logs/make_a.log")]
    text = "\n".join(failure_summary(log))
    assert "make_a: logs/make_a.log" in text and "snakemake --unlock" in text
