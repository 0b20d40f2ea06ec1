"""Training that survives being killed: resumable state, per-step seeds, atomic weights.

Pattern from edm2 and score_sde_pytorch: the full training state (networks, EMA, optimiser,
step, RNG) is rewritten atomically every ``checkpoint_every`` steps into a *state folder* that is
not a declared Snakemake output (Snakemake deletes declared outputs before a job starts and after
it fails, which would throw the state away). Every start loads the newest state, so the same
command continues after a Slurm time limit or pre-emption. Only the final weights are the rule's
output, written by :func:`save_weights`.

Randomness per step comes from :func:`step_generator`, seeded by ``(seed, step)``, so that batch
choice and noise do not depend on how often the job was restarted: a resumed run ends with
bit-identical weights on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kneesynth.errors import InputError
from kneesynth.io import atomic_path
from kneesynth.progress import ProgressLog
from kneesynth.seeding import derive_seed

CHECKPOINT_NAME = "checkpoint.pt"
FAULT_KILL_VARIABLE = "KNEESYNTH_FAULT_KILL_AT_STEP"

logger = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any: ...


def fingerprint(settings: Any) -> str:
    """A short hash of the settings a training run depends on (JSON-serialisable)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_generator(seed: int, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded by ``(seed, step)``: draw batches and noise of ``step`` from it."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, "step", step))
    return generator


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()  # noqa: NPY002 - global RNG that code outside us may use
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_meta": [int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    position, has_gauss, cached_gaussian = state["numpy_meta"]
    np.random.set_state(  # noqa: NPY002 - restores the global RNG saved above
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(position),
            int(has_gauss),
            float(cached_gaussian),
        )
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumableTrainer:
    """Drives a training loop that can be killed at any moment and started again.

    Args:
        state_dir: folder for the resume checkpoint (not a Snakemake output).
        objects: everything with ``state_dict``/``load_state_dict`` that training changes:
            networks, EMA (``diffusers.training_utils.EMAModel``), optimisers, schedulers.
        total_steps: number of optimisation steps of the whole run.
        checkpoint_every: steps between two checkpoints.
        settings: what the run depends on (config section, data fingerprint); a checkpoint made
            with other settings is not resumed but discarded, with a warning.
        log_every: steps between two entries of the metrics history (kept in the checkpoint).
        name: what trains, for the progress lines (``train_ctm/contour``); by default the
            state folder below ``results/state/``, which names the rule and its wildcards.

    Use::

        trainer = ResumableTrainer(state_dir, {"model": net, "optimizer": opt}, 1000, 100)
        for step in trainer.steps():
            generator = step_generator(seed, step)
            ...
            trainer.record(step, loss=loss.item())
        trainer.finish()
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        objects: Mapping[str, Stateful],
        total_steps: int,
        checkpoint_every: int,
        settings: Any = None,
        log_every: int | None = None,
        name: str | None = None,
    ) -> None:
        if total_steps < 0 or checkpoint_every < 1:
            raise ValueError("total_steps must be >= 0 and checkpoint_every >= 1")
        self.state_dir = Path(state_dir)
        self.objects = dict(objects)
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.fingerprint = fingerprint(settings)
        self.log_every = log_every or max(1, self.total_steps // 10)
        self.name = name or job_name(self.state_dir)
        self.progress: ProgressLog | None = None
        self.history: list[dict[str, float]] = []
        self.start_step = 0
        self.resumed = False
        kill_at = os.environ.get(FAULT_KILL_VARIABLE)
        self._kill_at_step = int(kill_at) if kill_at else None

    @property
    def checkpoint_path(self) -> Path:
        return self.state_dir / CHECKPOINT_NAME

    def load(self) -> int:
        """Restore the newest state, if any; return the step to continue from."""
        path = self.checkpoint_path
        if not path.exists():
            return 0
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged checkpoint cannot be trusted: start again
            logger.warning(
                "%s: unreadable checkpoint (%s); training starts from step 0", path, error
            )
            return 0
        if checkpoint.get("fingerprint") != self.fingerprint:
            logger.warning(
                "%s: checkpoint was made with other settings; training starts from step 0", path
            )
            return 0
        missing = set(self.objects) - set(checkpoint["objects"])
        if missing:
            logger.warning(
                "%s: checkpoint lacks %s; training starts from step 0", path, sorted(missing)
            )
            return 0
        for name, obj in self.objects.items():
            obj.load_state_dict(checkpoint["objects"][name])
        _set_rng_state(checkpoint["rng"])
        self.history = list(checkpoint.get("history", []))
        step = int(checkpoint["step"])
        logger.info("resuming from step %d of %d (%s)", step, self.total_steps, path)
        self.resumed = True
        return step

    def save(self, step: int) -> None:
        """Write the full training state for ``step`` atomically."""
        checkpoint = {
            "step": int(step),
            "fingerprint": self.fingerprint,
            "objects": {name: obj.state_dict() for name, obj in self.objects.items()},
            "rng": _rng_state(),
            "history": self.history,
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint_path, suffix=".pt") as tmp:
            torch.save(checkpoint, tmp)
        logger.debug("checkpoint at step %d: %s", step, self.checkpoint_path)
        if self._kill_at_step is not None and step == self._kill_at_step:
            logger.warning("fault injection: SIGKILL at step %d (%s)", step, FAULT_KILL_VARIABLE)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def steps(self) -> Iterator[int]:
        """Yield the steps still to do; checkpoint every ``checkpoint_every`` finished steps."""
        self.start_step = self.load()
        if self.start_step == 0:
            logger.info("%s: training from step 0 to %d", self.name, self.total_steps)
        self.progress = ProgressLog(
            self.name, self.total_steps, "step", start=self.start_step, log=logger
        )
        for step in range(self.start_step, self.total_steps):
            yield step
            done = step + 1
            if done % self.checkpoint_every == 0 and done < self.total_steps:
                self.save(done)

    def record(self, step: int, **metrics: float) -> None:
        """Keep the metrics of ``step`` every ``log_every`` steps; log a progress line when due
        (model and condition, step, metrics, rate and ETA; see :class:`ProgressLog`)."""
        entry = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        if step % self.log_every == 0 or step == self.total_steps - 1:
            self.history.append(entry)
        if self.progress is None:  # record() outside steps(): no rate to tell
            self.progress = ProgressLog(self.name, self.total_steps, "step", start=step, log=logger)
        self.progress.update(step + 1, **metrics)

    def finish(self) -> None:
        """Save the final state (so a job killed while writing outputs need not retrain)."""
        self.save(self.total_steps)

    def cleanup(self) -> None:
        """Remove the state folder once the final weights are safely written."""
        shutil.rmtree(self.state_dir, ignore_errors=True)


def job_name(state_dir: str | os.PathLike[str]) -> str:
    """``results/state/train_ctm/contour`` -> ``train_ctm/contour``: the rule and its wildcards
    (the parts after ``state``; else the last two parts of the path)."""
    parts = Path(state_dir).parts
    if "state" in parts:
        tail = parts[len(parts) - parts[::-1].index("state") :]
        if tail:
            return "/".join(tail)
    return "/".join(parts[-2:]) or str(state_dir)


def save_weights(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write final weights (+ plain-typed metadata) atomically, loadable with weights_only."""
    payload = {"state_dict": dict(state_dict), "meta": dict(meta or {})}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_weights(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read weights written by :func:`save_weights` (``weights_only=True``): (state_dict, meta)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "weights file not found") from None
    except Exception as error:
        raise InputError(path, f"cannot read weights ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise InputError(path, "not a kneesynth weights file (no 'state_dict')")
    return payload["state_dict"], payload.get("meta", {})
