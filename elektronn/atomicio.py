"""Atomic, durable file writes: the one helper behind every file elektronn writes.

A file is written to a temporary file beside it, ``.<name>.<pid>.<hex>.tmp``, flushed to disk
(``fsync``) and renamed over the target; the rename is made durable by an ``fsync`` of the
folder. Readers therefore see the old file or the new one, never a mix, and after a crash
(kill -9, power loss) the target is one of the two.

A process killed while writing leaves its temporary file behind. The next write of the same
target removes such files of processes that no longer exist (:func:`remove_stale_temps`), so
they do not accumulate beside a parameter file that is saved every few minutes.

Examples
--------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write(folder / "a.txt", b"hello")
>>> (folder / "a.txt").read_bytes()
b'hello'
>>> with atomic_path(folder / "b.txt") as tmp:
...     _ = pathlib.Path(tmp).write_text("written by a library that wants a file name")
>>> sorted(p.name for p in folder.iterdir())
['a.txt', 'b.txt']
"""

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_path", "remove_stale_temps", "temp_name"]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<hex>[0-9a-f]{8})\.tmp$")


def temp_name(name: str, pid: int | None = None) -> str:
    """The temporary file name used while writing ``name``: ``.<name>.<pid>.<hex>.tmp``."""
    return f".{name}.{os.getpid() if pid is None else pid}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temporary files that dead processes left in ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
    name : str, optional
        Only the temporary files of this target name (default: of every target).

    Returns
    -------
    list of Path
        The files removed. Files of running processes (they may be writing) are kept.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[str]:
    """Yield a temporary path to write; on success it is synced and renamed to ``path``.

    For writers that need a file name (h5py). On an error the temporary file is removed and
    an existing ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The target.
    mode : int
        Permissions of the written file.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: the folder {directory} does not exist")
    remove_stale_temps(directory, name)
    tmp = os.path.join(directory, temp_name(name))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None],
                 mode: int = 0o644) -> None:
    """Write ``path`` atomically and durably.

    Parameters
    ----------
    path : str or os.PathLike
        The target (its folder must exist).
    data : bytes or callable
        The content, or a function that writes it to the binary file object it is given.
    mode : int
        Permissions of the written file.
    """
    with atomic_path(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o600)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
