"""Files written whole, and file locks."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest
from fakes import supports_holes

from harness import files


def test_write_atomic_replaces_the_file_with_readable_text_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")

    files.write_atomic(path, "new ✓")

    assert path.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["result.json"]


def test_write_atomic_writes_bytes_with_the_mode_asked(tmp_path: Path) -> None:
    files.write_atomic(tmp_path / "blob", b"\0\1", mode=0o600)

    assert (tmp_path / "blob").read_bytes() == b"\0\1"
    assert stat.S_IMODE((tmp_path / "blob").stat().st_mode) == 0o600


def test_write_atomic_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stamp"
    path.write_text("old")

    def full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)

    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["stamp"]


def test_locked_holds_the_lock_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "lock"

    def try_lock() -> bool:
        with open(path) as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with files.locked(path):
        held = not try_lock()

    assert held
    assert try_lock()


def test_shared_holders_share_and_keep_an_exclusive_one_out(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with files.locked(path, shared=True) as first, files.locked(path, shared=True) as second:
        with files.locked(path, blocking=False) as exclusive:
            assert (first, second, exclusive) == (True, True, False)
        with files.locked(path, shared=True, blocking=False) as third:
            assert third
    with files.locked(path, blocking=False) as exclusive:
        assert exclusive


def test_a_lock_not_taken_is_not_released_by_the_one_that_failed(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with files.locked(path) as held:
        with files.locked(path, shared=True, blocking=False) as other:
            assert not other
        # Still ours: another try fails as well.
        with files.locked(path, blocking=False) as again:
            assert held and not again


def test_write_atomic_writes_through_a_pipe_instead_of_replacing_it(tmp_path: Path) -> None:
    # A FIFO stands in for /dev/null or /dev/stdout: renaming a file over it would
    # replace the device itself.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        files.write_atomic(fifo, "through")
        received = os.read(read_end, 100)
    finally:
        os.close(read_end)

    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received == b"through"


@pytest.mark.parametrize("tail", [b"", b"\0" * 100, b"end", bytes(files.HOLE_BLOCK)])
def test_write_atomic_with_holes_gives_the_same_bytes(tmp_path: Path, tail: bytes) -> None:
    block = files.HOLE_BLOCK
    data = b"head" + bytes(3 * block) + b"\1" * block + bytes(block - 1) + b"\2" + bytes(2 * block)
    data += tail
    path = tmp_path / "sparse"

    files.write_atomic(path, data, holes=True)

    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["sparse"]


def test_write_atomic_leaves_zero_blocks_as_holes(tmp_path: Path) -> None:
    if not supports_holes(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} keeps no holes")
    block = files.HOLE_BLOCK
    data = b"\1" * block + bytes(64 * block) + b"\2" * block
    dense, sparse = tmp_path / "dense", tmp_path / "sparse"

    files.write_atomic(dense, data)
    files.write_atomic(sparse, data, holes=True)

    assert sparse.read_bytes() == dense.read_bytes() == data
    assert os.stat(sparse).st_blocks * 512 <= 16 * block < os.stat(dense).st_blocks * 512
