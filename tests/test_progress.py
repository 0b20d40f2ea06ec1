"""Progress lines name their job and show rate and ETA; study B sets appear in one step."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from kneesynth.progress import ProgressLog, format_duration, format_rate
from kneesynth.study_b.synthetic import sample_plan, write_synthetic_set
from kneesynth.training import ResumableTrainer, job_name


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_lines_name_the_job_and_show_rate_and_eta(caplog):
    clock = FakeClock()
    progress = ProgressLog("train_ctm/contour", 200, "step", clock=clock)
    with caplog.at_level(logging.INFO, logger="kneesynth.progress"):
        for done in range(1, 201):
            clock.now += 0.5  # 2 steps per second
            progress.update(done, loss=0.25)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 10  # one per tenth, the last included
    assert lines[0] == "train_ctm/contour: step 20/200 (10%) loss=0.25 | 2 step/s, ETA 0:01:30"
    assert lines[-1].startswith("train_ctm/contour: step 200/200 (100%)")
    assert lines[-1].endswith("done in 0:01:40")


def test_a_resumed_job_reports_its_own_rate_and_a_line_every_minute(caplog):
    clock = FakeClock()
    progress = ProgressLog("sampling wgan", 1000, "image", start=600, clock=clock)
    with caplog.at_level(logging.INFO, logger="kneesynth.progress"):
        clock.now += 30
        assert not progress.update(610)  # neither a new tenth nor a minute
        clock.now += 40
        assert progress.update(620)  # 70 s since the start: a line
    (line,) = [record.getMessage() for record in caplog.records]
    # 20 images in 70 s here (the 600 loaded ones do not count): 3.5 s per image, 380 left
    assert line == "sampling wgan: image 620/1000 (62%) | 3.5 s/image, ETA 0:22:10"


def test_formatting():
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
    assert format_rate(12.34, "step") == "12.3 step/s"
    assert format_rate(0.25, "image") == "4 s/image"
    assert format_rate(0.0, "step") == "? step/s"


def test_job_name_from_the_state_folder():
    assert job_name("results/state/train_ctm/contour_bone") == "train_ctm/contour_bone"
    assert job_name("results/state/train_fid_features") == "train_fid_features"
    assert job_name("/tmp/x/state_run") == "x/state_run"


def test_training_lines_name_the_model_and_condition(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = ResumableTrainer(
        tmp_path / "results" / "state" / "train_unet" / "contour", {"model": net}, 20, 5
    )
    with caplog.at_level(logging.INFO, logger="kneesynth.training"):
        for step in trainer.steps():
            loss = net(torch.ones(1, 2)).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trainer.record(step, loss=float(loss.detach()))
    progress = [r.getMessage() for r in caplog.records if "step/s" in r.getMessage()]
    assert progress, [r.getMessage() for r in caplog.records]
    assert all(line.startswith("train_unet/contour: step ") for line in progress)
    assert "ETA" in progress[0] and "loss=" in progress[0]
    # the history keeps its own cadence: every 2 steps and the last
    assert [entry["step"] for entry in trainer.history] == [*range(0, 20, 2), 19]


def test_study_a_sampling_lines_count_network_evaluations(caplog):
    from kneesynth.score.sampling import get_sampler
    from kneesynth.score.sde import VESDE
    from kneesynth.study_a.sample import generate

    class Score(torch.nn.Module):
        def forward(self, x, sigma, condition=None):
            return -x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    params = {"sigma_min": 0.01, "sigma_max": 10.0, "sample_batch_size": 4, "t0": 0.4}
    sampler = get_sampler("heun", VESDE(0.01, 10.0), steps=5)  # 9 evaluations per batch
    masks = torch.zeros(8, 1, 4, 4)
    with caplog.at_level(logging.INFO, logger="kneesynth.study_a.sample"):
        generate("ctm", Score(), masks, params, 1, sampler, name="sampling ctm/contour")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("sampling ctm/contour: evaluation 18/18 (100%)")
    assert all(line.startswith("sampling ctm/contour: evaluation ") for line in lines)


def test_study_b_set_appears_in_one_step(tmp_path, monkeypatch):
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    plan = sample_plan("wgan", {0: 1, 1: 0, 2: 2, 3: 0, 4: 0}, seed=1)
    out = tmp_path / "samples" / "wgan"
    out.mkdir(parents=True)  # Snakemake makes the output's folder before the job
    (tmp_path / "samples" / ".wgan.killed").mkdir()  # a killed run's staging folder

    import kneesynth.study_b.synthetic as synthetic

    calls = []
    real_write_dicom = synthetic.write_dicom

    def killed_after_two(path, dataset):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed while writing")
        real_write_dicom(path, dataset)

    monkeypatch.setattr(synthetic, "write_dicom", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_set(out, images, plan, "wgan")
    assert list(out.iterdir()) == []  # no partial png/, dicom/ or manifest where they belong
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["wgan"]  # no staging
    assert all(".wgan." in str(path) for path in calls)  # written beside, not in place

    monkeypatch.setattr(synthetic, "write_dicom", real_write_dicom)
    (tmp_path / "samples" / ".wgan.killed").mkdir()
    manifest = write_synthetic_set(out, images, plan, "wgan")
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["wgan"]
    assert sorted(p.name for p in out.iterdir()) == ["dicom", "manifest.tsv", "png"]
    assert all(path.startswith(str(out / "png")) for path in manifest["image"])
    assert all(Path(path).exists() for path in [*manifest["image"], *manifest["dicom"]])
