"""The one place that runs external commands, and what makes sure none outlives a run.

Commands are argv lists, never shell strings. Each is logged as ``shlex.join(argv)``.
Every child runs in a session of its own, so a timeout, a Ctrl-C or any exception kills
the whole process group (a ``vng`` and the qemu it forks) and nothing outlives the run.

Three ways the run can end, and what takes the VM down in each:

- an exception (a timeout, Ctrl-C): ``SubprocessRunner.run`` kills the group;
- SIGTERM or SIGHUP (CI cancelling a job, ``docker stop``, a closed terminal):
  :func:`exit_on_signals` turns them into :class:`Terminated`, which unwinds like
  Ctrl-C through the same ``except`` (front ends exit with status 128 + signal);
- SIGKILL, or a crash: no code of ours runs, so each command has a watchdog, a small
  process of its own that holds a pipe from this one and kills the command's group
  when the pipe closes without a "done". A parent-death signal would not do: it
  fires when the *thread* that started the child ends, and it would reach ``vng``
  only, not the qemu that ``vng`` forks.

Code that runs commands takes a :class:`Runner`; tests pass a fake one that records
the calls and answers from a table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from harness.errors import (
    CommandError,
    CommandStalledError,
    CommandTimeoutError,
    ToolMissingError,
)

log = logging.getLogger(__name__)

#: How many characters of a failed command's output an error message quotes.
_TAIL_CHARS = 2000
#: Seconds to wait for a logged command's output to drain after it ended.
_COPY_GRACE = 10.0
#: The signals that end a run in order, as Ctrl-C does (SIGINT is Python's own).
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind (killing child groups) and exit 128 + signal.

    A :class:`KeyboardInterrupt`, so that everything that ends a run cleanly on
    Ctrl-C (pytest, pytest-xdist, ``except BaseException`` clean-ups) does the same.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_received: int | None = None


def exit_on_signals() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    A signal ignored when the process started (``nohup``) stays ignored. After the
    first, the handlers are reset, so a second signal ends the process at once (the
    watchdogs still take its commands down). Call from the main thread.
    """
    for signum in TERMINATING_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _terminate)


def termination_signal() -> int | None:
    """The signal that :func:`exit_on_signals` turned into :class:`Terminated`, if any."""
    return _received


def _terminate(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum
    for other in TERMINATING_SIGNALS:
        signal.signal(other, signal.SIG_DFL)
    raise Terminated(signum)


class PytestSignals:
    """A pytest plugin: SIGTERM and SIGHUP end the session as Ctrl-C does (VMs killed,
    the JUnit file written), and pytest exits with status 128 + signal.

    Register it from a ``conftest.py`` (more than one may)::

        def pytest_configure(config):
            proc.PytestSignals.register(config)
    """

    name = "harness-signals"

    @classmethod
    def register(cls, config: _Config) -> None:
        manager = config.pluginmanager
        if not manager.has_plugin(cls.name):
            manager.register(cls(), cls.name)

    def pytest_configure(self) -> None:
        exit_on_signals()

    def pytest_sessionfinish(self, session: _Session) -> None:
        if _received is not None:
            session.exitstatus = 128 + _received


class _Session(Protocol):
    exitstatus: int


class _PluginManager(Protocol):
    def has_plugin(self, name: str) -> bool: ...
    def register(self, plugin: object, name: str | None = None) -> object: ...


class _Config(Protocol):
    @property
    def pluginmanager(self) -> _PluginManager: ...


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    log_path: Path | None = None


@dataclass(frozen=True)
class Stall:
    """When a command whose output goes to a log counts as stalled.

    It has stalled when its output has been silent for ``seconds`` and no line holding
    one of ``until`` has appeared yet; once one has, only the overall timeout applies.
    A VM's boot is the case in point: the kernel prints a line every second or so
    until the guest's init runs, and then the guest may rightly stay quiet for long.
    """

    seconds: float
    until: tuple[str, ...] = ()


class _Output:
    """What the log copier saw: when the last line came, and whether ``until`` came."""

    def __init__(self, until: tuple[str, ...]) -> None:
        self.until = until
        self.last = time.monotonic()
        self.last_line = ""
        self.settled = not until

    def saw(self, line: str) -> None:
        self.last = time.monotonic()
        if line.strip():
            self.last_line = line.strip()
        if not self.settled and any(marker in line for marker in self.until):
            self.settled = True


class Runner(Protocol):
    """Runs one command to completion."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
        log_path: Path | None = None,
        stall: Stall | None = None,
    ) -> Completed: ...


def tail(text: str, chars: int = _TAIL_CHARS) -> str:
    """The end of ``text``, at most ``chars`` characters, cut at a line boundary."""
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if newline >= 0 else cut


def require(program: str, package: str) -> str:
    """The path of ``program``, or a :class:`ToolMissingError` naming its package."""
    import shutil  # here: at the top it would load zlib, bz2 and lzma into the guest

    path = shutil.which(program)
    if path is None:
        raise ToolMissingError(
            f"{program} is not installed on this host; install the Debian package "
            f"{package} (apt-get install {package})"
        )
    return path


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Kill ``proc`` and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


#: The watchdog: reads its standard input to the end. The first line names the process
#: group to watch; unless "done" follows it, its parent died, and it kills the group.
_WATCHDOG_CODE = """
import os, signal, sys
said = b""
while chunk := os.read(0, 64):
    said += chunk
group, _, word = said.partition(b"\\n")
if group.isdigit() and word != b"done":
    try:
        os.killpg(int(group), signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class Watchdog:
    """Kills a process group if this process dies before calling :meth:`release`.

    It is started before the command it guards and told the command's group just
    after, so a SIGKILL of this process at any moment after the command started
    (even while a loaded machine is slow to start the watchdog's interpreter) still
    ends the command. The watchdog leads a session of its own, so signals sent to
    this process's group (a terminal's Ctrl-C, ``kill -- -PGID``) do not end it before
    it has done its job.
    """

    def __init__(self, pgid: int | None = None) -> None:
        read_end, self._write_end = os.pipe()  # not inherited by other children
        try:
            self._proc = subprocess.Popen(
                [sys.executable or "python3", "-I", "-S", "-c", _WATCHDOG_CODE],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)
        if pgid is not None:
            self.watch(pgid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, pgid: int) -> None:
        """From now on, this process's death kills the process group ``pgid``."""
        os.write(self._write_end, f"{pgid}\n".encode())

    def release(self) -> None:
        """The group was waited for (or never started): end the watchdog, killing nothing."""
        try:
            os.write(self._write_end, b"done")
        except BrokenPipeError:
            pass  # it was killed; nothing to tell
        finally:
            os.close(self._write_end)
            self._proc.wait()


class SubprocessRunner:
    """A :class:`Runner` that really runs commands."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
        log_path: Path | None = None,
        stall: Stall | None = None,
    ) -> Completed:
        """Run ``argv``; with ``log_path``, its output goes there (and ``stall`` applies)."""
        args = tuple(str(a) for a in argv)
        log.debug("run: %s", shlex.join(args))
        full_env = None if env is None else {**os.environ, **env}
        # With a log file, the output still goes through a pipe that a thread copies
        # into the file: a child that reopens its /proc/self/fd/1 (qemu's "file"
        # chardevs, as vng sets them up) would otherwise truncate the log and write
        # over it from offset 0.
        log_file: IO[str] | None = None
        copier: threading.Thread | None = None
        output = _Output(stall.until if stall else ())
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        watchdog: Watchdog | None = None
        try:
            watchdog = Watchdog()
            try:
                proc = subprocess.Popen(
                    args,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT if log_file is not None else subprocess.PIPE,
                    text=True,
                    errors="replace",
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise ToolMissingError(
                    f"cannot run {args[0]}: not found; install it or check PATH"
                ) from exc
            try:
                watchdog.watch(proc.pid)
            except BaseException:
                kill_group(proc)
                raise
            try:
                if log_file is not None:
                    copier = _start_copy(proc, log_file, output)
                    _feed(proc, input)
                    _wait(proc, timeout, stall, output)
                    stdout, stderr = "", ""
                else:
                    stdout, stderr = proc.communicate(input=input, timeout=timeout)
            except _Stalled as exc:
                kill_group(proc)
                assert stall is not None
                raise CommandStalledError(
                    f"{shlex.join(args)} printed nothing for {stall.seconds:.0f} s and was "
                    f"killed; its last line: {output.last_line or '(none)'}; output in "
                    f"{log_path}",
                    argv=args,
                    log_path=log_path,
                ) from exc
            except subprocess.TimeoutExpired as exc:
                kill_group(proc)
                where = f"; output in {log_path}" if log_path else ""
                raise CommandTimeoutError(
                    f"{shlex.join(args)} did not finish within {timeout:.0f} s "
                    f"and was killed{where}",
                    argv=args,
                    log_path=log_path,
                ) from exc
            except BaseException:
                # Ctrl-C, SIGTERM or anything else: leave no child behind.
                kill_group(proc)
                raise
        finally:
            if watchdog is not None:
                watchdog.release()
            if copier is not None:
                # The pipe closes when the last process of the group holding it ends.
                copier.join(timeout=_COPY_GRACE)
            if log_file is not None:
                log_file.close()
        if log_path is not None:
            stdout = log_path.read_text(encoding="utf-8", errors="replace")
            stderr = ""
        result = Completed(args, proc.returncode, stdout or "", stderr or "", log_path)
        if check and proc.returncode != 0:
            raise command_failed(result)
        return result


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a command that runs while the caller does something else.

    For programs driven over their standard streams (stdin, stdout and stderr are
    pipes). The child leads its own session; the caller must end it with
    :func:`kill_group` (in a ``finally``) unless it has waited for it.
    """
    args = tuple(str(a) for a in argv)
    log.debug("spawn: %s", shlex.join(args))
    full_env = None if env is None else {**os.environ, **env}
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"cannot run {args[0]}: not found; build it or check PATH") from exc


class _Stalled(Exception):
    """The command's output was silent for longer than its :class:`Stall` allows."""


#: How often a wait with a :class:`Stall` looks at the output's clock.
_STALL_POLL = 1.0


def _wait(
    proc: subprocess.Popen[str], timeout: float | None, stall: Stall | None, output: _Output
) -> None:
    """Wait for ``proc``; raise ``subprocess.TimeoutExpired`` or :class:`_Stalled`.

    The wait wakes as the process ends: it sleeps on a pidfd (Linux 5.3 and later).
    ``Popen.wait(timeout)`` polls with sleeps that grow to 50 ms, so the end of a long
    command (a VM) was seen up to 50 ms late: ``sleep 1.5`` run with a log and a stall
    watch took 22-28 ms more than 1.5 s that way, 6-8 ms more with the pidfd (6 runs
    each). Without a pidfd it waits as ``Popen.wait`` does.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = _pidfd(proc)
    try:
        while True:
            step = _STALL_POLL if stall is not None else None
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.0)
                step = left if step is None else min(step, left)
            if pidfd is not None:
                select.select([pidfd], [], [], step)
                if proc.poll() is not None:
                    return
            else:
                try:
                    proc.wait(timeout=step)
                    return
                except subprocess.TimeoutExpired:
                    pass
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
            stalled = stall is not None and time.monotonic() - output.last > stall.seconds
            if stalled and not output.settled:
                raise _Stalled
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(proc: subprocess.Popen[str]) -> int | None:
    """A descriptor that turns readable when ``proc`` ends, or None where there is none."""
    if proc.returncode is not None:
        return None  # reaped: its pid may already be another process's
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


def _start_copy(
    proc: subprocess.Popen[str], log_file: IO[str], output: _Output
) -> threading.Thread:
    """Copy ``proc``'s output into ``log_file`` line by line until the pipe closes."""
    source = proc.stdout
    assert source is not None

    def copy() -> None:
        for line in source:
            log_file.write(line)
            log_file.flush()
            output.saw(line)

    thread = threading.Thread(target=copy, name="log-copier", daemon=True)
    thread.start()
    return thread


def _feed(proc: subprocess.Popen[str], input: str | None) -> None:
    if proc.stdin is None:
        return
    try:
        if input:
            proc.stdin.write(input)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def command_failed(result: Completed, what: str | None = None) -> CommandError:
    """A :class:`CommandError` for a command that exited non-zero."""
    output = (result.stderr + result.stdout).strip()
    where = f" (full output in {result.log_path})" if result.log_path else ""
    head = what or shlex.join(result.argv)
    return CommandError(
        f"{head} failed with exit status {result.returncode}{where}:\n{tail(output)}",
        argv=result.argv,
        returncode=result.returncode,
        output=output,
        log_path=result.log_path,
    )
