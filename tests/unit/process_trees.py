"""Real, short-lived process trees for the tests of what ends a run.

Each tree is ``sh -c 'sleep 300 & ...; wait'``: a group leader and a grandchild, as
``vng`` and the qemu it forks. The process under test runs in a child Python with
default signal handlers (a background job of a non-interactive shell would otherwise
hand it SIGINT ignored), in a session of its own so that signals reach it alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

#: How long a process may take to be started or to disappear before a test gives up.
#: A bound on waiting, not on speed: no test asserts how fast anything is.
PATIENCE = 30.0


def tree(marker: Path) -> list[str]:
    """argv of a tree that writes "<leader pid> <grandchild pid>" to ``marker``, then waits."""
    temp = f"{marker}.tmp"
    script = f'sleep 300 & echo "$$ $!" > {temp} && mv {temp} {marker}; wait'
    return ["sh", "-c", script]


def state(pid: int) -> str | None:
    """The process's state letter from /proc, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")  # a zombie has ended; only its parent's wait is due


def survivors(pids: list[int]) -> list[int]:
    """The ``pids`` still running once they had ``PATIENCE`` seconds to end."""
    deadline = time.monotonic() + PATIENCE
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def tree_pids(marker: Path, child: subprocess.Popen[str] | None = None) -> list[int]:
    deadline = time.monotonic() + PATIENCE
    while not marker.exists():
        if child is not None and child.poll() is not None:
            pytest.fail(f"the child ended before starting its tree: {child.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the tree did not start within {PATIENCE:.0f} s")
        time.sleep(0.02)
    return [int(p) for p in marker.read_text().split()]


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def python(code: str, *args: str, cwd: Path = PROJECT_ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
