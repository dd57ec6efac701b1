"""The console log survives a child that reopens its own stdout, as qemu does under vng."""

from __future__ import annotations

from pathlib import Path

from harness.proc import SubprocessRunner


def test_a_child_reopening_its_stdout_does_not_truncate_the_log(tmp_path: Path) -> None:
    # vng --verbose hands qemu "-chardev file,path=/proc/self/fd/2": qemu opens that
    # path again with O_TRUNC. On a log file that would wipe what was written before.
    log_path = tmp_path / "console.log"
    script = "echo boot messages; echo guest output > /proc/self/fd/1; echo last >&2"
    done = SubprocessRunner().run(["sh", "-c", script], log_path=log_path, timeout=30)
    assert log_path.read_text().splitlines() == ["boot messages", "guest output", "last"]
    assert done.stdout == log_path.read_text()
