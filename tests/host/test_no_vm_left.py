"""No VM outlives ``invoke test``: SIGTERM (CI cancelling, ``docker stop``) or SIGKILL.

Starts ``invoke test --kernel 6.1``, waits until its qemu runs, signals ``invoke``, and
checks 5 s after it ended that none of the processes it had started (``vng``, qemu,
their watchdogs) is left. Boots a real VM (the kernel comes from the cache, or is
fetched), so it carries the ``vm`` marker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.paths import BUILD_ENV, PROJECT_ROOT

pytestmark = pytest.mark.vm

#: Long enough to fetch a kernel and build the sample before the VM starts.
STARTUP_LIMIT = 900.0
QEMU = "qemu-system-x86_64"


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _descendants(root: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _program(pid: int) -> str:
    """The program's name; for a Python script (``vng``), the script's."""
    try:
        argv = (Path(f"/proc/{pid}") / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
    words = [os.path.basename(w) for w in argv.split("\0") if w and not w.startswith("-")]
    if len(words) > 1 and words[0].startswith("python"):
        return words[1]
    return words[0] if words else ""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -9)]
)
def test_no_vng_or_qemu_outlives_invoke_test(signum: int, status: int, tmp_path: Path) -> None:
    invoke = subprocess.Popen(
        [sys.executable, "-m", "invoke", "test", "--kernel", "6.1", "--loader", "python"],
        cwd=PROJECT_ROOT,
        env={**os.environ, BUILD_ENV: str(tmp_path / "build")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        while not any(_program(pid) == QEMU for pid in started):
            if invoke.poll() is not None:
                early = invoke.communicate()[0].decode(errors="replace")
                pytest.fail(f"invoke test ended before its VM started:\n{early[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {QEMU} under invoke test within {STARTUP_LIMIT:.0f} s")
            time.sleep(0.2)
            started = _descendants(invoke.pid)
        # What runs now: vng, the qemu it forked, the watchdogs; not the commands that
        # ended before (their pids may be reused by then).
        started = _descendants(invoke.pid)
        names = {pid: _program(pid) for pid in started}
        assert "vng" in names.values(), names

        invoke.send_signal(signum)
        output, _ = invoke.communicate(timeout=120)
        time.sleep(5)  # what the issue asks: nothing left 5 s later
        left = {pid: names[pid] for pid in started if _running(pid)}
        assert left == {}, output.decode(errors="replace")[-3000:]
        assert invoke.returncode == status
        if signum == signal.SIGTERM:
            assert b"terminated by SIGTERM" in output
    finally:
        for pid in started | {invoke.pid}:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
