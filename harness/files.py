"""Files written whole or not at all, and locks held on files."""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: Distinguishes the temporary files of one process (threads included).
_serial = itertools.count()
#: The unit of :func:`write_atomic`'s holes: a page, and a block of common filesystems.
HOLE_BLOCK = 4096


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644, holes: bool = False) -> None:
    """Write ``path`` through a temporary file beside it, renamed into place.

    A reader sees the old content or the new, never half of it, and a failure
    leaves no temporary behind. Text is written as UTF-8. ``mode`` is the file's
    permission bits (the guest writes as root what the host's user reads).
    With ``holes``, each aligned all-zero block of :data:`HOLE_BLOCK` bytes is
    skipped rather than written: on a filesystem with sparse files it takes no disk
    space and is read back as zeros without a disk read (the same bytes either way).
    Raises :class:`OSError`; callers say what the file was for.

    A ``path`` that is a device, a pipe or a terminal (``/dev/stdout``, ``/dev/null``)
    is written into, since renaming a file over it would replace the device itself.
    """
    if path.exists() and not path.is_file():
        with path.open("wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
        return
    # Named by process and a serial rather than by tempfile.mkstemp: the guest writes
    # its results with this, and imports cost there (harness/guest/bundle.py). A name
    # left by a dead process of the same pid (or one in another pid namespace) is
    # passed over.
    while True:
        temp = path.parent / f".{path.name}.{os.getpid()}.{next(_serial)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as stream:
            raw = data.encode() if isinstance(data, str) else data
            if holes:
                _write_with_holes(stream, raw)
            else:
                stream.write(raw)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_with_holes(stream: BinaryIO, data: bytes) -> None:
    """``data`` into the empty file ``stream``, its all-zero blocks left as holes."""
    view = memoryview(data)
    zero = bytes(HOLE_BLOCK)
    start = 0  # of the run of blocks not yet written
    for at in range(0, len(data) - HOLE_BLOCK + 1, HOLE_BLOCK):
        if view[at : at + HOLE_BLOCK] == zero:
            stream.write(view[start:at])
            stream.seek(at + HOLE_BLOCK)
            start = at + HOLE_BLOCK
    stream.write(view[start:])
    stream.truncate(len(data))  # a hole at the end still counts in the size


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
