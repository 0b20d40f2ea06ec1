"""Resumable training: a SIGKILLed run, started again, ends with the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kneesynth.errors import InputError
from kneesynth.training import (
    FAULT_KILL_VARIABLE,
    ResumableTrainer,
    load_weights,
    save_weights,
    step_generator,
)

TRAIN_SCRIPT = textwrap.dedent(
    """
    import logging, sys, torch
    logging.basicConfig(level=logging.INFO)
    from diffusers.training_utils import EMAModel
    from kneesynth.training import ResumableTrainer, step_generator, save_weights
    torch.set_num_threads(1)
    state_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    ema = EMAModel(net.parameters(), decay=0.9)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    trainer = ResumableTrainer(state_dir, {"model": net, "ema": ema, "optimizer": opt},
                               total_steps=30, checkpoint_every=5, settings={"lr": 1e-2})
    for step in trainer.steps():
        g = step_generator(7, step)
        x = torch.randn(16, 4, generator=g)
        loss = ((net(x) - x.sum(1, keepdim=True)) ** 2).mean()  # dropout uses the global RNG
        opt.zero_grad(); loss.backward(); opt.step(); ema.step(net.parameters())
        trainer.record(step, loss=loss.item())
    trainer.finish()
    ema.copy_to(net.parameters())
    save_weights(out, net.state_dict(), {"steps": trainer.total_steps, "resumed": trainer.resumed})
    """
)


def _train(tmp_path, name, kill_at=None):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != FAULT_KILL_VARIABLE}
    if kill_at is not None:
        env[FAULT_KILL_VARIABLE] = str(kill_at)
    return subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / f"state_{name}"),
            str(tmp_path / f"{name}.pt"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    reference = _train(tmp_path, "reference")
    assert reference.returncode == 0, reference.stderr
    killed = _train(tmp_path, "interrupted", kill_at=15)
    assert killed.returncode == -9  # SIGKILL, as Slurm or the OOM killer would
    assert not (tmp_path / "interrupted.pt").exists()
    assert (tmp_path / "state_interrupted" / "checkpoint.pt").exists()
    resumed = _train(tmp_path, "interrupted")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step 15" in resumed.stderr
    expected, _ = load_weights(tmp_path / "reference.pt")
    actual, meta = load_weights(tmp_path / "interrupted.pt")
    assert meta["resumed"] is True
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_checkpoint_with_other_settings_is_not_resumed(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    trainer = ResumableTrainer(
        tmp_path, {"model": net}, total_steps=4, checkpoint_every=2, settings={"lr": 1}
    )
    list(trainer.steps())
    trainer.finish()
    same = ResumableTrainer(
        tmp_path, {"model": net}, total_steps=4, checkpoint_every=2, settings={"lr": 1}
    )
    assert list(same.steps()) == []
    other = ResumableTrainer(
        tmp_path, {"model": net}, total_steps=4, checkpoint_every=2, settings={"lr": 2}
    )
    assert list(other.steps()) == [0, 1, 2, 3]
    assert "other settings" in caplog.text


def test_step_generator_depends_on_seed_and_step_only():
    a = torch.randn(3, generator=step_generator(1, 5))
    assert torch.equal(a, torch.randn(3, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(2, 5)))


def test_weights_round_trip_and_bad_file(tmp_path):
    net = torch.nn.Linear(3, 2)
    save_weights(tmp_path / "w.pt", net.state_dict(), {"sigma_max": 128.0})
    state, meta = load_weights(tmp_path / "w.pt")
    assert meta == {"sigma_max": 128.0}
    assert torch.equal(state["weight"], net.weight.detach())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt: cannot read weights"):
        load_weights(tmp_path / "bad.pt")
