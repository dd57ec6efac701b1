"""Files written whole or not at all, and locks held on files."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file beside it, renamed into place.

    A reader sees the old content or the new, never half of it, and a failure
    leaves no temporary behind. Text is written as UTF-8. ``mode`` is the file's
    permission bits (the guest writes as root what the host's user reads).
    Raises :class:`OSError`; callers say what the file was for.

    A ``path`` that is a device, a pipe or a terminal (``/dev/stdout``, ``/dev/null``)
    is written into, since renaming a file over it would replace the device itself.
    """
    if path.exists() and not path.is_file():
        with path.open("wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
        return
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def locked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold a ``flock`` on ``path`` (created, with its directory, if missing).

    Exclusive, or ``shared`` with other shared holders. With ``blocking=False`` the
    lock is taken only if it is free at once; the block runs either way and is given
    whether the lock is held (always True when blocking).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, operation if blocking else operation | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
