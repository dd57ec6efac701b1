"""No child outlives its run: real, short-lived process trees (see process_trees.py)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from process_trees import PATIENCE, alive, python, state, survivors, tree, tree_pids

from harness import proc
from harness.errors import CommandStalledError, CommandTimeoutError, ToolMissingError


def _children_of_this_process() -> set[int]:
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def test_a_timeout_kills_the_whole_group(tmp_path: Path, reaped: list[int]) -> None:
    marker = tmp_path / "pids"
    with pytest.raises(CommandTimeoutError, match="was killed"):
        proc.SubprocessRunner().run(tree(marker), timeout=5)
    reaped += tree_pids(marker)
    assert survivors(reaped) == []


@pytest.fixture(params=["pidfd", "polling"])
def waits(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A logged command is waited for on a pidfd, or by polling where there is none."""
    if request.param == "polling":

        def no_pidfd(pid: int) -> int:
            raise OSError("pidfd_open: not supported")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    return str(request.param)


def test_a_command_silent_before_its_marker_is_killed_as_stalled(
    tmp_path: Path, reaped: list[int], waits: str
) -> None:
    marker = tmp_path / "pids"
    log_path = tmp_path / "out.log"
    argv = ["sh", "-c", f"echo booting; {shlex.join(tree(marker))}"]
    stall = proc.Stall(0.5, ("init ran",))
    with pytest.raises(CommandStalledError, match="printed nothing for 0 s") as caught:
        proc.SubprocessRunner().run(argv, timeout=120, log_path=log_path, stall=stall)
    assert "its last line: booting" in str(caught.value)
    assert caught.value.log_path == log_path
    reaped += tree_pids(marker)
    assert survivors(reaped) == []


def test_silence_after_the_marker_is_no_stall(tmp_path: Path, waits: str) -> None:
    script = "echo booting; echo init ran; sleep 1.5; echo finished"
    done = proc.SubprocessRunner().run(
        ["sh", "-c", script],
        timeout=120,
        log_path=tmp_path / "out.log",
        stall=proc.Stall(0.5, ("init ran",)),
    )
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "finished"


def test_the_time_limit_still_holds_with_a_stall_watch(tmp_path: Path, waits: str) -> None:
    with pytest.raises(CommandTimeoutError, match="within 1 s") as caught:
        proc.SubprocessRunner().run(
            ["sh", "-c", "echo init ran; sleep 300"],
            timeout=1,
            log_path=tmp_path / "out.log",
            stall=proc.Stall(60, ("init ran",)),
        )
    assert not isinstance(caught.value, CommandStalledError)


def test_a_logged_command_ending_at_once_gives_its_status(tmp_path: Path, waits: str) -> None:
    done = proc.SubprocessRunner().run(
        ["sh", "-c", "echo init ran; exit 3"],
        check=False,
        timeout=60,
        log_path=tmp_path / "out.log",
        stall=proc.Stall(60, ("init ran",)),
    )
    assert (done.returncode, done.stdout) == (3, "init ran\n")


def test_a_finished_command_leaves_no_watchdog_behind() -> None:
    before = _children_of_this_process()
    result = proc.SubprocessRunner().run(["sh", "-c", "echo $PPID"])
    # The command is the runner's child, beside its watchdog; both were waited for.
    assert int(result.stdout) == os.getpid()
    assert _children_of_this_process() - before == set()


def test_a_program_that_is_not_there_leaves_no_watchdog_behind() -> None:
    before = _children_of_this_process()
    with pytest.raises(ToolMissingError, match="not found"):
        proc.SubprocessRunner().run(["no-such-program-anywhere"])
    assert _children_of_this_process() - before == set()


def test_a_released_watchdog_kills_nothing(reaped: list[int]) -> None:
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    reaped.append(sleeper.pid)
    watchdog = proc.Watchdog(sleeper.pid)
    watchdog.release()
    assert state(watchdog.pid) is None  # waited for
    assert alive(sleeper.pid)
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
    child = python(_RUN_UNDER_SIGNALS, *tree(marker))
    reaped.append(child.pid)
    reaped += tree_pids(marker, child)
    child.send_signal(signum)
    _out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signum, err
    assert f"terminated by {signum.name}" in err
    assert survivors(reaped) == []


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
    child = python(code)
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
    child = python(code, where, *tree(marker))
    reaped.append(child.pid)
    reaped += tree_pids(marker, child)
    child.kill()
    child.wait(timeout=PATIENCE)
    assert survivors(reaped) == []


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
        f"    proc.SubprocessRunner().run({tree(marker)!r})\n\n\n"
        "def test_after():\n"
        f"    open({str(tmp_path / 'ran-on')!r}, 'w').close()\n"
    )
    code = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    child = python(code, "-p", "no:cacheprovider", "-q", str(tmp_path), cwd=tmp_path)
    reaped.append(child.pid)
    reaped += tree_pids(marker, child)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 128 + signal.SIGTERM, out + err
    assert not (tmp_path / "ran-on").exists()  # the session stopped, as on Ctrl-C
    assert survivors(reaped) == []
