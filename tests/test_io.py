"""Results files: modes that follow the umask, and one line naming the path when a write fails
(full disk, read-only or unwritable folder)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kneesynth import io
from kneesynth.errors import OutputError
from kneesynth.io import atomic_path, save_npz, staged_directory, write_tsv


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for a test and restore it after."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_results_follow_the_umask(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    save_npz(tmp_path / "a.npz", x=np.zeros(3))
    write_tsv(tmp_path / "t.tsv", [{"a": 1}])
    with atomic_path(tmp_path / "deep" / "b.txt") as tmp:
        tmp.write_text("b")
    with staged_directory(tmp_path / "kit") as staging:
        (staging / "image.png").write_bytes(b"x")
    for name in ("a.npz", "t.tsv", "deep/b.txt", "kit/image.png"):
        assert mode(tmp_path / name) == file_mode, name
    assert mode(tmp_path / "kit") == folder_mode
    assert mode(tmp_path / "deep") == folder_mode


def test_torch_weights_follow_the_umask(tmp_path, umask):
    from kneesynth.training import save_weights

    umask(0o022)
    save_weights(tmp_path / "models" / "w.pt", {"w": __import__("torch").zeros(2)})
    assert mode(tmp_path / "models" / "w.pt") == 0o644


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez_compressed", no_space)
    target = tmp_path / "results" / "drr" / "leg.npz"
    with pytest.raises(OutputError) as error:
        save_npz(target, drr=np.zeros(3))
    assert str(error.value) == f"{target}: cannot write: no space left on device"
    assert list(target.parent.iterdir()) == []


def test_full_disk_under_results_state_says_so_for_torch_checkpoints(tmp_path, monkeypatch):
    """torch.save reports a full disk as 'unexpected pos'; the error must speak of space."""
    import torch

    from kneesynth.training import save_weights

    def torch_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
            "file data/0: file write failed; unexpected pos 64 vs 4096"
        )

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(io.os, "statvfs", lambda p: SimpleNamespace(f_bavail=0, f_frsize=4096))
    target = tmp_path / "results" / "state" / "wgan" / "checkpoint.pt"
    with pytest.raises(OutputError, match=r"checkpoint\.pt: cannot write: the file system is full"):
        save_weights(target, {"w": torch.zeros(2)})
    assert list(target.parent.iterdir()) == []


def test_a_full_results_folder_is_found_before_any_job(tmp_path, monkeypatch):
    from kneesynth.io import check_writable

    check_writable(tmp_path / "results")  # made, probed, left empty
    assert list((tmp_path / "results").iterdir()) == []
    monkeypatch.setattr(io.os, "fsync", no_space)
    with pytest.raises(OutputError) as error:
        check_writable(tmp_path / "results")
    assert str(error.value) == f"{tmp_path}/results: cannot write: no space left on device"
    assert list((tmp_path / "results").iterdir()) == []


def test_other_errors_while_writing_are_not_blamed_on_the_disk(tmp_path):
    with pytest.raises(ValueError, match="a bug"), atomic_path(tmp_path / "x.txt"):
        raise ValueError("a bug")
    with pytest.raises(PermissionError), atomic_path(tmp_path / "y.txt"):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/input/we/read.png")


def test_read_only_results_folder_is_one_line_naming_the_path(tmp_path):
    """A real read-only folder: mode 0555, or (as root, who may write anywhere) a read-only
    bind mount in a private mount namespace."""
    folder = tmp_path / "results"
    (folder / "ct").mkdir(parents=True)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from kneesynth.errors import OutputError
        from kneesynth.io import check_writable, save_npz, staged_directory
        for write in (
            lambda: save_npz(sys.argv[1] + "/ct/leg.npz", x=np.zeros(2)),
            lambda: save_npz(sys.argv[1] + "/ct/new/leg.npz", x=np.zeros(2)),
            lambda: staged_directory(sys.argv[1] + "/ct/crops").__enter__(),
            lambda: check_writable(sys.argv[1] + "/ct"),
        ):
            try:
                write()
            except OutputError as error:
                print(error)
        """
    )
    if os.geteuid() != 0:
        os.chmod(folder / "ct", 0o555)
        command, reason = [sys.executable, "-c", script, str(folder)], "permission denied"
    else:
        mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -c "$3" "$1"'
        command = ["unshare", "--mount", "sh", "-c", mount, "sh", str(folder), sys.executable]
        command, reason = [*command, script], "read-only file system"
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(folder / "ct", 0o755)
    if os.geteuid() == 0 and "mount" in run.stderr and not run.stdout:
        pytest.skip(f"no read-only mount possible here: {run.stderr.strip()}")
    assert run.stdout.splitlines() == [
        f"{folder}/ct/leg.npz: cannot write: {reason}",
        f"{folder}/ct/new/leg.npz: cannot write: {reason} ({folder}/ct/new)",
        f"{folder}/ct/crops: cannot write: {reason}",
        f"{folder}/ct: cannot write: {reason}",
    ], run.stderr
    assert list((folder / "ct").iterdir()) == []


def test_run_script_prints_one_line_for_a_write_failure(tmp_path, capsys):
    from kneesynth.workflow import run_script

    def main(snakemake):
        raise OutputError(tmp_path / "results" / "x.npz", "cannot write: no space left on device")

    snakemake = SimpleNamespace(log=[str(tmp_path / "x.log")], rule="test", threads=1)
    with pytest.raises(SystemExit) as exit_code:
        run_script(main, snakemake)
    assert exit_code.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"kneesynth: error: {tmp_path}/results/x.npz: cannot write: no space left on device"
    )
    assert "Traceback" not in "\n".join(err)
