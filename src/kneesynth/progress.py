"""Progress lines that say which job they belong to, how fast it goes and when it ends.

Training and sampling jobs run side by side under Snakemake and write to one terminal, so every
line names its job (``train_ctm/contour``, ``sampling wgan``), and shows how far it is, the rate
and an ETA::

    train_ctm/contour: step 120/400 (30%) loss=0.0412 | 8.31 step/s, ETA 0:00:34

The rate counts only what this process did, so a job resumed from a checkpoint reports its own
speed, not one inflated by the steps it loaded. tqdm draws bars with carriage returns, which
garble a log file and interleave badly between parallel jobs: hence log lines.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (days as hours), or ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def format_rate(per_second: float, unit: str) -> str:
    """``12.5 step/s``, or ``4.2 s/step`` below one per second."""
    if not math.isfinite(per_second) or per_second <= 0:
        return f"? {unit}/s"
    if per_second >= 1:
        return f"{per_second:.3g} {unit}/s"
    return f"{1 / per_second:.3g} s/{unit}"


class ProgressLog:
    """Log ``name: unit done/total (pct) metrics | rate, ETA`` lines at a bounded cadence.

    A line is written when the job crosses another ``every_fraction`` of the total, when
    ``every_seconds`` passed since the last line, and at the end.

    Args:
        name: what runs, in the rule's words: ``train_ctm/contour``, ``sampling csm/contour``.
        total: the number of units of the whole job.
        unit: the unit's name (``step``, ``image``, ``evaluation``).
        start: units already done when this process began (a resumed training).
        clock: seconds as a float (``time.monotonic``; tests pass their own).
    """

    def __init__(
        self,
        name: str,
        total: int,
        unit: str = "step",
        start: int = 0,
        every_fraction: float = 0.1,
        every_seconds: float = 60.0,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.total = max(int(total), 0)
        self.unit = unit
        self.start = int(start)
        self.done = int(start)
        self.every_fraction = float(every_fraction)
        self.every_seconds = float(every_seconds)
        self.log = log or logger
        self.clock = clock
        self.started_at = clock()
        self.last_line_at = self.started_at
        self.last_bucket = self._bucket(self.done)

    def _bucket(self, done: int) -> int:
        if not self.total or self.every_fraction <= 0:
            return 0
        return int(done / self.total / self.every_fraction + 1e-9)

    def rate(self) -> float:
        """Units per second done by this process so far (nan before the first)."""
        elapsed = self.clock() - self.started_at
        done_here = self.done - self.start
        return done_here / elapsed if elapsed > 0 and done_here > 0 else float("nan")

    def eta(self) -> float:
        """Seconds left at the current rate (nan when unknown)."""
        rate = self.rate()
        return (self.total - self.done) / rate if rate == rate and rate > 0 else float("nan")

    def line(self, metrics: Mapping[str, float] | None = None) -> str:
        """The progress line for the current state."""
        percent = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.name}: {self.unit} {self.done}/{self.total} ({percent:.0f}%)"
        if metrics:
            text += " " + " ".join(f"{key}={float(value):.5g}" for key, value in metrics.items())
        if self.done >= self.total:
            elapsed = self.clock() - self.started_at
            return f"{text} | {format_rate(self.rate(), self.unit)}, done in {format_duration(elapsed)}"
        return f"{text} | {format_rate(self.rate(), self.unit)}, ETA {format_duration(self.eta())}"

    def update(self, done: int, **metrics: float) -> bool:
        """Record that ``done`` units are finished; log a line if one is due. True if logged."""
        self.done = int(done)
        now = self.clock()
        bucket = self._bucket(self.done)
        due = (
            self.done >= self.total
            or bucket > self.last_bucket
            or now - self.last_line_at >= self.every_seconds
        )
        if not due:
            return False
        self.last_bucket, self.last_line_at = bucket, now
        self.log.info("%s", self.line(metrics))
        return True

    def advance(self, count: int = 1, **metrics: float) -> bool:
        """:meth:`update` by ``count`` more units."""
        return self.update(self.done + int(count), **metrics)
