"""The one place that runs external commands.

Commands are argv lists, never shell strings. Each is logged as ``shlex.join(argv)``.
Every child runs in a session of its own, so a timeout or a Ctrl-C kills the whole
process group (a ``vng`` and the qemu it started) and nothing outlives the run.

Code that runs commands takes a :class:`Runner`; tests pass a fake one that records
the calls and answers from a table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from harness.errors import CommandError, CommandTimeoutError, ToolMissingError

log = logging.getLogger(__name__)

#: How many characters of a failed command's output an error message quotes.
_TAIL_CHARS = 2000
#: Seconds to wait for a logged command's output to drain after it ended.
_COPY_GRACE = 10.0


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    log_path: Path | None = None


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
    ) -> Completed:
        args = tuple(str(a) for a in argv)
        log.debug("run: %s", shlex.join(args))
        full_env = None if env is None else {**os.environ, **env}
        # With a log file, the output still goes through a pipe that a thread copies
        # into the file: a child that reopens its /proc/self/fd/1 (qemu's "file"
        # chardevs, as vng sets them up) would otherwise truncate the log and write
        # over it from offset 0.
        log_file: IO[str] | None = None
        copier: threading.Thread | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
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
                if log_file is not None:
                    copier = _start_copy(proc, log_file)
                    _feed(proc, input)
                    proc.wait(timeout=timeout)
                    stdout, stderr = "", ""
                else:
                    stdout, stderr = proc.communicate(input=input, timeout=timeout)
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
                # Ctrl-C or anything else: leave no child behind.
                kill_group(proc)
                raise
        finally:
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


def _start_copy(proc: subprocess.Popen[str], log_file: IO[str]) -> threading.Thread:
    """Copy ``proc``'s output into ``log_file`` line by line until the pipe closes."""
    source = proc.stdout
    assert source is not None

    def copy() -> None:
        for line in source:
            log_file.write(line)
            log_file.flush()

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
