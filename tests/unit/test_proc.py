"""No child outlives its run: real, short-lived process trees (``sh`` and ``sleep``).

Each tree is ``sh -c 'sleep 300 & ...; wait'``: a group leader and a grandchild, as
``vng`` and the qemu it forks. The process under test runs in a child Python with
default signal handlers (a background job of a non-interactive shell would otherwise
hand it SIGINT ignored), in a session of its own so that signals reach it alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import proc
from harness.errors import CommandTimeoutError
from harness.paths import PROJECT_ROOT

#: How long a process may take to be started or to disappear before a test gives up.
#: A bound on waiting, not on speed: no test asserts how fast anything is.
PATIENCE = 30.0


def _tree(marker: Path) -> list[str]:
    """argv of a tree that writes "<leader pid> <grandchild pid>" to ``marker``, then waits."""
    temp = f"{marker}.tmp"
    script = f'sleep 300 & echo "$$ $!" > {temp} && mv {temp} {marker}; wait'
    return ["sh", "-c", script]


def _state(pid: int) -> str | None:
    """The process's state letter from /proc, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie has ended; only its parent's wait is due


def _survivors(pids: list[int]) -> list[int]:
    """The ``pids`` still running once they had ``PATIENCE`` seconds to end."""
    deadline = time.monotonic() + PATIENCE
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _pids(marker: Path, child: subprocess.Popen[str] | None = None) -> list[int]:
    deadline = time.monotonic() + PATIENCE
    while not marker.exists():
        if child is not None and child.poll() is not None:
            pytest.fail(f"the child ended before starting its tree: {child.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the tree did not start within {PATIENCE:.0f} s")
        time.sleep(0.02)
    return [int(p) for p in marker.read_text().split()]


@pytest.fixture
def reaped() -> Iterator[list[int]]:
    """Pids a test started; whatever still runs at the end is killed, pass or fail."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _python(code: str, *args: str, cwd: Path = PROJECT_ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )


def _children_of_this_process() -> set[int]:
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def test_a_timeout_kills_the_whole_group(tmp_path: Path, reaped: list[int]) -> None:
    marker = tmp_path / "pids"
    with pytest.raises(CommandTimeoutError, match="was killed"):
        proc.SubprocessRunner().run(_tree(marker), timeout=5)
    reaped += _pids(marker)
    assert _survivors(reaped) == []


def test_a_finished_command_leaves_no_watchdog_behind() -> None:
    before = _children_of_this_process()
    result = proc.SubprocessRunner().run(["sh", "-c", "echo $PPID"])
    # The command is the runner's child, beside its watchdog; both were waited for.
    assert int(result.stdout) == os.getpid()
    assert _children_of_this_process() - before == set()


def test_a_released_watchdog_kills_nothing(reaped: list[int]) -> None:
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    reaped.append(sleeper.pid)
    watchdog = proc.Watchdog(sleeper.pid)
    watchdog.release()
    assert _state(watchdog.pid) is None  # waited for
    assert _alive(sleeper.pid)
    sleeper.kill()
    sleeper.wait()


_RUN_UNDER_SIGNALS = """
    import sys
    from harness import proc

    proc.exit_on_signals()
    try:
        proc.SubprocessRunner().run(sys.argv[1:])
    except proc.Terminated as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_status)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_kills_the_group_and_exits_128_plus_it(
    signum: signal.Signals, tmp_path: Path, reaped: list[int]
) -> None:
    marker = tmp_path / "pids"
    child = _python(_RUN_UNDER_SIGNALS, *_tree(marker))
    reaped.append(child.pid)
    reaped += _pids(marker, child)
    child.send_signal(signum)
    _out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signum, err
    assert f"terminated by {signum.name}" in err
    assert _survivors(reaped) == []


def test_a_second_signal_ends_the_process_at_once(tmp_path: Path) -> None:
    # While the first one unwinds, a second SIGTERM is not turned into an exception
    # again (which could cut a clean-up short): it ends the process.
    code = """
        import os, signal, sys, time
        from harness import proc

        proc.exit_on_signals()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except proc.Terminated:
            print("unwinding", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        sys.exit(0)
    """
    child = _python(code)
    out, err = child.communicate(timeout=PATIENCE)
    assert (out, child.returncode) == ("unwinding\n", -signal.SIGTERM), err


def test_a_signal_ignored_at_start_stays_ignored() -> None:
    saved = {s: signal.getsignal(s) for s in proc.TERMINATING_SIGNALS}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        proc.exit_on_signals()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_sigkill_of_the_runner_still_kills_the_group(
    where: str, tmp_path: Path, reaped: list[int]
) -> None:
    # No code of the runner runs on SIGKILL: the watchdog does the work. From another
    # thread as well (a parent-death signal would fire when that thread ends instead).
    code = """
        import sys, threading
        from harness import proc

        def run():
            proc.SubprocessRunner().run(sys.argv[2:])

        if sys.argv[1] == "main thread":
            run()
        else:
            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
    """
    marker = tmp_path / "pids"
    child = _python(code, where, *_tree(marker))
    reaped.append(child.pid)
    reaped += _pids(marker, child)
    child.kill()
    child.wait(timeout=PATIENCE)
    assert _survivors(reaped) == []


def test_sigterm_ends_a_pytest_session_with_128_plus_it(tmp_path: Path, reaped: list[int]) -> None:
    marker = tmp_path / "pids"
    (tmp_path / "conftest.py").write_text(
        "from harness import proc\n\n\n"
        "def pytest_configure(config):\n"
        "    proc.PytestSignals.register(config)\n"
    )
    (tmp_path / "test_tree.py").write_text(
        "from harness import proc\n\n\n"
        "def test_tree():\n"
        f"    proc.SubprocessRunner().run({_tree(marker)!r})\n\n\n"
        "def test_after():\n"
        f"    open({str(tmp_path / 'ran-on')!r}, 'w').close()\n"
    )
    code = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    child = _python(code, "-p", "no:cacheprovider", "-q", str(tmp_path), cwd=tmp_path)
    reaped.append(child.pid)
    reaped += _pids(marker, child)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signal.SIGTERM, out + err
    assert not (tmp_path / "ran-on").exists()  # the session stopped, as on Ctrl-C
    assert _survivors(reaped) == []
