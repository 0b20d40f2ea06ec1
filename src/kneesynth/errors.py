"""Errors that the workflow reports to the user as one line."""

from __future__ import annotations

from os import PathLike


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
