"""Errors that the workflow reports to the user as one line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike

log = logging.getLogger(__name__)


class InputError(Exception):
    """Bad input: a file or folder that cannot be used, and why.

    The message is always ``"<path>: <problem>"`` on one line, so that a user sees at once
    which file to fix. :func:`kneesynth.workflow.run_script` prints it without a traceback.
    """

    def __init__(self, path: str | PathLike[str], problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # one line, always
        super().__init__(f"{self.path}: {self.problem}")


class OutputError(InputError):
    """A result that cannot be written: full disk, read-only or unwritable folder.

    Same one-line form as :class:`InputError` (``"<path>: cannot write: <why>"``), which it
    extends so that every script reports it without a traceback.
    """


def raise_problems(problems: Sequence[InputError], what: str = "file(s)") -> None:
    """Stop on collected problems: each one logged as an ERROR line, then one
    :class:`InputError` (the first, and how many more), so that one run shows every bad file."""
    if not problems:
        return
    for problem in problems:
        log.error("%s", problem)
    first = problems[0]
    more = f" (and {len(problems) - 1} more {what}, each logged above)" if len(problems) > 1 else ""
    raise InputError(first.path, f"{first.problem}{more}")
