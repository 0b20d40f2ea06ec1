"""Atomic file output: a result is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so that libraries that pick a
    format from the name (numpy, SimpleITK, matplotlib) write the right one. On any exception
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_npz(path: str | os.PathLike[str], compressed: bool = True, **arrays: Any) -> None:
    """Write arrays to ``path`` (.npz) atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an .npz into memory; a damaged file is an InputError."""
    from kneesynth.errors import InputError

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(path, f"cannot read npz ({error})") from None


def write_tsv(path: str | os.PathLike[str], table: Any, **to_csv_kwargs: Any) -> None:
    """Write a pandas DataFrame (or a list of row dicts) as TSV, atomically."""
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, **to_csv_kwargs)


def read_tsv(path: str | os.PathLike[str], required: Mapping[str, Any] | list[str] = ()) -> Any:
    """Read a TSV into a DataFrame, checking that the ``required`` columns are there."""
    import pandas as pd

    from kneesynth.errors import InputError

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
