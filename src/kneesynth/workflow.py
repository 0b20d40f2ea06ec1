"""Glue between Snakemake's ``script:`` directive and the library.

Every script in ``workflow/scripts`` ends with ``run_script(main, snakemake)``: logging goes to
the rule's log file and to stderr, torch uses the rule's threads, and bad input
(:class:`~kneesynth.errors.InputError`) ends the job with one line naming the file and the
problem instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from kneesynth.errors import InputError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Send log records to stderr and, if given, to ``log_path`` (appending)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        file_handler = logging.FileHandler(log_path, mode="a")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    logging.captureWarnings(True)


def set_threads(threads: int | None) -> None:
    """Limit torch and BLAS to the job's threads, without importing torch in jobs that don't use it.

    torch reads ``OMP_NUM_THREADS`` when it is imported later; if it is already loaded, it is
    told directly.
    """
    if not threads:
        return
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))


def run_script(main: Callable[[Any], None], snakemake: Any) -> None:
    """Run ``main(snakemake)`` with logging, threads and one-line errors."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    configure_logging(log_path)
    set_threads(getattr(snakemake, "threads", None))
    logger = logging.getLogger(f"kneesynth.{snakemake.rule}")
    try:
        main(snakemake)
    except InputError as error:
        message = f"kneesynth: error: {error}"
        logger.debug("%s", traceback.format_exc())
        if log_path:
            with open(log_path, "a") as log:
                log.write(message + "\n")
        print(message, file=sys.stderr, flush=True)
        sys.exit(1)
