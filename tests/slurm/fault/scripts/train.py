"""Train a tiny regression net with kneesynth's ResumableTrainer, slowly (fault test of Slurm)."""

import os
import time

import torch

from kneesynth.training import ResumableTrainer, save_weights, step_generator
from kneesynth.workflow import run_script


def main(snakemake):
    import logging

    log = logging.getLogger("kneesynth.fault_test")
    settings = snakemake.params.settings
    log.info(
        "slurm job %s, runtime limit %s min, CUDA_VISIBLE_DEVICES=%s",
        os.environ.get("SLURM_JOB_ID"),
        snakemake.resources.get("runtime"),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    torch.manual_seed(settings["seed"])
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    trainer = ResumableTrainer(
        snakemake.params.state_dir,
        {"model": net, "optimizer": optimizer},
        total_steps=settings["total_steps"],
        checkpoint_every=settings["checkpoint_every"],
        settings={k: v for k, v in settings.items() if k != "seconds_per_step"},
        log_every=1,
    )
    for step in trainer.steps():
        generator = step_generator(settings["seed"], step)
        x = torch.randn(16, 4, generator=generator)
        y = x.sum(dim=1, keepdim=True).sin()
        loss = torch.nn.functional.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trainer.record(step, loss=loss.item())
        time.sleep(settings["seconds_per_step"])  # stands in for real work
    trainer.finish()
    save_weights(snakemake.output[0], net.state_dict(), meta={"steps": settings["total_steps"]})
    trainer.cleanup()


run_script(main, snakemake)  # noqa: F821 (set by Snakemake)
