"""Another checkout's Python loader, run in a child forked from the guest's own process.

An A/B run's ``python@base`` (:mod:`harness.baseline`) speaks the loader protocol
from the baseline's tree. Started as a program, each case paid a new interpreter
under emulation: the binary and every module read over 9p, several seconds a case,
where the in-process ``python`` loader pays its imports once a boot. Forked from the
guest's process instead, the child already holds the interpreter, the standard
library and pyelftools; it drops the ``harness`` package this process imported,
puts the baseline's paths first on ``sys.path`` and runs the baseline's
``python3 -m harness.bpf`` with the protocol's arguments, its standard streams on
pipes, exactly as a program would be driven (:class:`harness.guest.scenario.LoaderProgram`).

Only the ``harness`` package is the baseline's: what both sides share from the
interpreter's installation (the standard library, pyelftools) is the same files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import IO


class ForkedLoader:
    """The child, with the parts of :class:`subprocess.Popen` that driving it needs."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """Kill the child and anything it started (it leads its own session), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait()


def spawn(paths: Sequence[str], argv: Sequence[str]) -> ForkedLoader:
    """Fork a child that runs ``harness.bpf`` of ``paths`` with ``argv``."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing of this process's is written twice
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends in os._exit
        _child(paths, argv, (stdin_r, stdout_w, stderr_w), (stdin_w, stdout_r, stderr_r))
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    return ForkedLoader(
        pid, os.fdopen(stdin_w, "wb"), os.fdopen(stdout_r, "rb"), os.fdopen(stderr_r, "rb")
    )


def _child(
    paths: Sequence[str], argv: Sequence[str], ours: tuple[int, int, int], theirs: Sequence[int]
) -> None:
    status = 1
    try:
        os.setsid()
        for fd in theirs:
            os.close(fd)
        for target, fd in enumerate(ours):
            os.dup2(fd, target)
            os.close(fd)
        # Streams of its own on the pipes: this process's may be anything (a test
        # runner's capture) and may hold buffered bytes of its own.
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        for name in [n for n in sys.modules if n == "harness" or n.startswith("harness.")]:
            del sys.modules[name]
        sys.path[:0] = list(paths)
        import importlib
        import runpy

        importlib.invalidate_caches()
        sys.argv = ["harness.bpf", *argv]
        runpy.run_module("harness.bpf", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
