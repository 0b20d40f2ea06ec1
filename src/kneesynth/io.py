"""Atomic file output: a result is either complete or absent, never half-written.

Files and staged folders get the modes that the umask gives to any new file (0644 and 0755
under the usual umask 022), not the private 0600/0700 of :mod:`tempfile`, so that colleagues
on a shared file system can read ``results/``. A write that fails because the disk is full or
the folder is read-only or not writable ends in one :class:`~kneesynth.errors.OutputError`
line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.errors import InputError, OutputError

#: Why a write failed, by errno: these are problems of the place written to, not of the code.
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: Below this many free bytes, a failed write is put down to a full disk. Writers that do their
#: own I/O in C++ (torch.save: "unexpected pos ...") do not raise ENOSPC.
FULL_DISK_BYTES = 1 << 20


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, and only there)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask (0644 for umask 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode a new folder gets under the current umask (0755 for umask 022)."""
    return 0o777 & ~_umask()


def _free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged user may still write on the file system holding ``path``."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            stats = os.statvfs(candidate)
            return stats.f_bavail * stats.f_frsize
    return None


def write_failure(path: str | os.PathLike[str], error: BaseException) -> OutputError | None:
    """An :class:`OutputError` naming ``path`` if ``error`` comes from where ``path`` is written
    (full disk, read-only or unwritable folder), else None (a bug or bad input: keep it)."""
    path = Path(path)
    if isinstance(error, OutputError):
        return error
    if isinstance(error, OSError) and error.errno in WRITE_FAILURES:
        target = Path(os.path.abspath(path))
        culprit = Path(os.path.abspath(error.filename)) if error.filename else target
        ours = culprit == target or culprit in target.parents or target.parent in culprit.parents
        if error.errno in (errno.EACCES, errno.EPERM) and not ours:
            return None  # a file we only read: not a write failure
        # name the folder that could not be made; not the temporary file beside the result
        where = f" ({error.filename})" if culprit in target.parents else ""
        return OutputError(path, f"cannot write: {WRITE_FAILURES[error.errno]}{where}")
    if isinstance(error, (OSError, RuntimeError)):
        free = _free_bytes(path.parent)
        if free is not None and free < FULL_DISK_BYTES:
            detail = " ".join(str(error).split())[:120]
            return OutputError(
                path,
                f"cannot write: the file system is full ({free} bytes free; "
                f"{type(error).__name__}: {detail})",
            )
    return None


@contextlib.contextmanager
def _reporting_write_failures(path: Path) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        failure = write_failure(path, error)
        if failure is None or failure is error:
            raise
        raise failure from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so that libraries that pick a
    format from the name (numpy, SimpleITK, matplotlib) write the right one. On any exception
    the temporary file is removed and ``path`` is left as it was. The result gets the mode of
    any new file under the umask. A full disk, a read-only or an unwritable folder raise
    :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    with _reporting_write_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent
        )
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _reporting_write_failures(path):
            yield tmp
            os.chmod(tmp, file_mode())  # mkstemp makes it 0600 whatever the umask
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty folder beside ``path``; it replaces ``path`` on success, vanishes on failure.

    The folder gets the mode of any new folder under the umask (``mkdtemp`` makes it 0700). A
    full disk, a read-only or an unwritable folder raise :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    with _reporting_write_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with _reporting_write_failures(path):
            os.chmod(staging, folder_mode())
            yield staging
            if path.exists():
                shutil.rmtree(path)
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_writable(folder: str | os.PathLike[str], probe_bytes: int = 1 << 16) -> None:
    """Raise :class:`OutputError` naming ``folder`` unless a file of ``probe_bytes`` can be
    written there (the folder is made if missing; the probe is removed). Run before a workflow
    starts, so that a read-only or full ``results/`` is one line, not a traceback of the first
    job that tries to write there."""
    folder = Path(folder)
    with _reporting_write_failures(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kneesynth-write-test.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0" * probe_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)


def save_npz(path: str | os.PathLike[str], compressed: bool = True, **arrays: Any) -> None:
    """Write arrays to ``path`` (.npz) atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an .npz into memory; a damaged file is an InputError."""

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(path, f"cannot read npz ({error})") from None


def write_tsv(path: str | os.PathLike[str], table: Any, **to_csv_kwargs: Any) -> None:
    """Write a pandas DataFrame (or a list of row dicts) as TSV, atomically."""
    import pandas as pd  # heavy (pandas): imported on use

    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, **to_csv_kwargs)


def read_tsv(path: str | os.PathLike[str], required: Mapping[str, Any] | list[str] = ()) -> Any:
    """Read a TSV into a DataFrame, checking that the ``required`` columns are there."""
    import pandas as pd  # heavy (pandas): imported on use

    try:
        frame = pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read TSV ({error})") from None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    return frame
