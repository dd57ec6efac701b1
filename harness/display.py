"""Progress on the screen: live bars on a terminal, plain lines anywhere else.

Both displays are listeners of :mod:`harness.progress` events. On a terminal
(:class:`LiveDisplay`, rich) each kernel of a run has a row that shows its state as
it changes, and each package being downloaded a bar with its size, speed and time
left; what the run prints meanwhile scrolls above them. Anywhere else, a CI log for
instance (:class:`PlainLines`), each kernel's state change is one line, and a
download a line when it starts, one every :data:`LINE_SECONDS` while it lasts, and
one when it ends: no control characters, nothing rewritten.

:class:`KernelVerdicts` is the pytest plugin that tells, once a kernel's cases have
all been judged, how it ended: done (with the count of each verdict), failed (no
case passed) or skipped (every case skipped).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from rich.ansi import AnsiDecoder
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text

from harness.progress import Event, KernelState, Listener, Note, Transfer

if TYPE_CHECKING:
    import pytest

#: Seconds between two lines about one download when the output is not a terminal.
LINE_SECONDS = 10.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str) -> str:
    """``text`` as one line without control characters (terminal escapes dropped)."""
    return _CONTROL.sub(" ", _ANSI.sub("", text)).strip()


def megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def describe(state: KernelState, seconds: float | None = None) -> str:
    """What a kernel's state reads as: ``running (tcg): 2/6 cases``, ``done in 95 s: ...``."""
    words = state.state
    if seconds is not None and state.final:
        words += f" in {seconds:.0f} s"
    detail = one_line(state.detail)
    if detail:
        words += f": {detail}" if state.final else f" ({detail})"
    if state.total is not None:
        words += f": {state.done or 0}/{state.total} cases"
    return words


class _Kernels:
    """The kernels' states as they arrive: the first time each was seen, stale ones
    dropped (events of one kernel come from two processes; after its final state,
    nothing but another final one counts)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.last: dict[str, KernelState] = {}
        self.started: dict[str, float] = {}

    def take(self, state: KernelState) -> bool:
        """Record ``state``; False when it changes nothing or comes too late."""
        before = self.last.get(state.kernel)
        if state == before or (before is not None and before.final and not state.final):
            return False
        self.last[state.kernel] = state
        if state.state != "waiting":
            self.started.setdefault(state.kernel, self.clock())
        return True

    def seconds(self, kernel: str) -> float | None:
        started = self.started.get(kernel)
        return None if started is None else self.clock() - started


@dataclass
class _Download:
    started: float
    told: float  # when the last line about it was written
    told_done: int  # the bytes that line said had arrived
    ended: bool = False


class PlainLines:
    """A listener that writes one plain line per change worth telling to ``stream``.

    A download is told when its first bytes arrive (apt fetches one package after
    the other), every ``every`` seconds while it lasts, and when it ends.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = LINE_SECONDS,
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.every = every
        self._kernels = _Kernels(clock)
        self._downloads: dict[tuple[str, str], _Download] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            line = self._line(event)
            if line is not None:
                self.stream.write(line + "\n")
                self.stream.flush()

    def _line(self, event: Event) -> str | None:
        if isinstance(event, Note):
            return one_line(event.text)
        if isinstance(event, KernelState):
            if not self._kernels.take(event) or event.state == "waiting":
                return None
            seconds = self._kernels.seconds(event.kernel)
            return one_line(f"{event.kernel}: {describe(event, seconds)}")
        return self._transfer_line(event)

    def _transfer_line(self, event: Transfer) -> str | None:
        key = (event.kernel, event.package)
        name = f"{event.kernel}: {event.package}" if event.kernel else event.package
        now = self.clock()
        seen = self._downloads.get(key)
        if seen is None:
            if event.done == 0 and event.error is None:
                return None  # queued: it is told when its bytes come
            self._downloads[key] = seen = _Download(now, now, event.done)
            if event.error is None and not event.complete:
                return one_line(f"{name}: downloading {megabytes(event.total)}")
        elif seen.ended:
            return None
        if event.error is not None:
            seen.ended = True
            return one_line(
                f"{name}: download failed after {megabytes(event.done)} of "
                f"{megabytes(event.total)}: {event.error}"
            )
        if event.complete:
            seen.ended = True
            return one_line(f"{name}: {megabytes(event.total)} in {now - seen.started:.0f} s")
        if now - seen.told < self.every or event.done == seen.told_done:
            return None
        rate = (event.done - seen.told_done) / (now - seen.told)
        seen.told, seen.told_done = now, event.done
        percent = 100 * event.done // event.total if event.total else 0
        return one_line(
            f"{name}: {megabytes(event.done)} of {megabytes(event.total)} ({percent}%), "
            f"{megabytes(rate)}/s"
        )


_REST = Column(no_wrap=True, overflow="ellipsis", ratio=1)
_STATE_STYLES = {"done": "green", "failed": "bold red", "skipped": "yellow", "waiting": "dim"}


class LiveDisplay:
    """A listener that keeps a live view on a terminal (rich): a row per kernel, a bar
    per download. Use it as a context manager; while it is open, what is printed on
    standard output and standard error scrolls above the view."""

    def __init__(self, console: Console, *, kernels: Sequence[str] = ()) -> None:
        self.console = console
        self._kernels = _Kernels(time.monotonic)
        # Names and numbers are never cut; a long state or error is, at the right.
        self.kernel_rows = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            TimeElapsedColumn(),
            TextColumn("{task.fields[state]}", table_column=_REST),
            console=console,
            expand=True,
        )
        self.download_bars = Progress(
            TextColumn("{task.description}", table_column=_REST),
            BarColumn(bar_width=20),
            DownloadColumn(table_column=Column(no_wrap=True)),
            TransferSpeedColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=console,
            expand=True,
        )
        self._rows: dict[str, TaskID] = {}
        self._bars: dict[tuple[str, str], TaskID] = {}
        self._lock = threading.Lock()
        # Standard output and error go through _Above, not rich's own redirection,
        # which prints a partial line whenever it is flushed (pytest flushes often).
        self.live = Live(
            self,
            console=console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._restore: contextlib.ExitStack | None = None
        for kernel in kernels:
            self(KernelState(kernel, "waiting"))

    def __rich__(self) -> RenderableType:
        shown = [p for p in (self.kernel_rows, self.download_bars) if p.tasks]
        return Group(*shown)

    def __enter__(self) -> LiveDisplay:
        with contextlib.ExitStack() as stack:
            self.live.start(refresh=True)
            stack.callback(self.live.stop)
            if self.console.is_terminal:
                # Left before the view stops, so a last partial line is above it.
                stack.enter_context(_printed_above(self.console))
            self._restore = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            self._restore.close()
            self._restore = None

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Note):
                self.console.print(one_line(event.text), markup=False, highlight=False)
            elif isinstance(event, KernelState):
                self._kernel(event)
            else:
                self._download(event)

    def _kernel(self, state: KernelState) -> None:
        if not self._kernels.take(state):
            return
        style = _STATE_STYLES.get(state.state, "")
        text = _escape(describe(state))
        shown = f"[{style}]{text}[/]" if style else text
        row = self._rows.get(state.kernel)
        if row is None:
            row = self.kernel_rows.add_task(
                state.kernel, start=state.state != "waiting", total=None, state=shown
            )
            self._rows[state.kernel] = row
        elif state.state != "waiting":
            self.kernel_rows.start_task(row)
        self.kernel_rows.update(row, state=shown)
        if state.final:
            self.kernel_rows.update(row, total=1, completed=1)
            self.kernel_rows.stop_task(row)

    def _download(self, event: Transfer) -> None:
        key = (event.kernel, event.package)
        bar = self._bars.get(key)
        if bar is None:
            name = f"{event.kernel} {event.package}" if event.kernel else event.package
            bar = self.download_bars.add_task(_escape(name), total=event.total)
            self._bars[key] = bar
        self.download_bars.update(bar, completed=event.done, total=event.total)
        if event.error is not None:
            name = self.download_bars.tasks[bar].description
            why = _escape(one_line(event.error))
            self.download_bars.update(bar, description=f"[bold red]failed[/] {name}: {why}")
            self.download_bars.stop_task(bar)


class _Above(io.TextIOBase):
    """A stream whose whole lines are printed on ``console``, above a live view.

    Terminal escapes in them become styles. A partial line waits for its end (or
    :meth:`close`): a flush does not print it, so ``name ... PASSED`` stays one line.
    """

    def __init__(self, console: Console, file: IO[str]) -> None:
        super().__init__()
        self._console = console
        self._file = file
        self._partial = ""
        self._decoder = AnsiDecoder()

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            self._print(lines)
        return len(text)

    def _print(self, lines: Sequence[str]) -> None:
        self._console.print(
            Text("\n").join(self._decoder.decode_line(line) for line in lines),
            soft_wrap=True,
        )

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            self._print([self._partial])
            self._partial = ""
        super().close()

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()


@contextlib.contextmanager
def _printed_above(console: Console) -> Iterator[None]:
    """Standard output and error, and the log handlers that write to them, printed
    above the live view while the block runs."""
    out, err = sys.stdout, sys.stderr
    above_out, above_err = _Above(console, out), _Above(console, err)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (out, err)
    ]
    streams = [h.stream for h in handlers]
    sys.stdout, sys.stderr = above_out, above_err
    for handler in handlers:
        handler.setStream(above_out if handler.stream is out else above_err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
        above_out.close()
        above_err.close()


def _escape(text: str) -> str:
    """``text`` shown as it is, not read as rich's markup."""
    return text.replace("[", r"\[")


def is_terminal(*streams: IO[str]) -> bool:
    """True when every stream is a terminal that can take a live view."""
    if os.environ.get("TERM") == "dumb":
        return False
    return all(stream.isatty() for stream in streams)


@contextlib.contextmanager
def shown(
    stream: IO[str] | None = None, *, kernels: Sequence[str] = (), live: bool | None = None
) -> Iterator[Listener]:
    """A listener that shows progress on ``stream`` (standard error by default): live
    when it and standard output are terminals (or ``live`` says so), else plain lines.

    Both write to a duplicate of the stream's descriptor, so that what they show is
    not taken for a test's output while pytest captures descriptors 1 and 2.
    """
    stream = stream or sys.stderr
    if live is None:
        live = is_terminal(stream, sys.stdout)
    with _duplicate_of(stream) as out:
        if not live:
            yield PlainLines(out)
            return
        size = os.get_terminal_size(out.fileno())
        # The size now: under pytest's capture, descriptors 0 to 2 cannot tell it.
        console = Console(file=out, width=size.columns or None, height=size.lines or None)
        with LiveDisplay(console, kernels=kernels) as view:
            yield view


@contextlib.contextmanager
def _duplicate_of(stream: IO[str]) -> Iterator[IO[str]]:
    """A stream on a duplicate of ``stream``'s descriptor (``stream`` if it has none)."""
    try:
        fd = os.dup(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        yield stream
        return
    with open(fd, "w", encoding="utf-8", errors="replace", buffering=1) as duplicate:
        yield duplicate


class KernelVerdicts:
    """A pytest plugin that counts each kernel's verdicts and tells its final state.

    ``expected`` is how many cases each kernel has; when all have been judged (or
    the session ends before), the listener hears ``done`` (some case passed),
    ``failed`` (none passed, the first failure's first line as the reason) or
    ``skipped`` (all skipped, and why).
    Register it where the reports arrive: the process that runs pytest (under
    pytest-xdist, the controller).
    """

    name = "kernel-verdicts"

    def __init__(self, listener: Listener, expected: Mapping[str, int]) -> None:
        self.listener = listener
        self.expected = dict(expected)
        self.counts: dict[str, Counter[str]] = {}
        self.reasons: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        kernel = dict(report.user_properties).get("kernel")
        if not isinstance(kernel, str) or kernel not in self.expected:
            return
        verdict: str
        if report.when == "call":
            verdict = report.outcome
        elif report.when == "setup" and not report.passed:
            verdict = "error" if report.failed else "skipped"
        else:
            return
        counts = self.counts.setdefault(kernel, Counter())
        counts[verdict] += 1
        if verdict != "passed" and kernel not in self.reasons:
            self.reasons[kernel] = _reason(report)
        if sum(counts.values()) >= self.expected[kernel]:
            self.listener(self.final(kernel))

    def pytest_sessionfinish(self) -> None:
        """A kernel some of whose cases never reported (``-x``, a worker lost) ends here."""
        for kernel, counts in self.counts.items():
            if sum(counts.values()) < self.expected[kernel]:
                self.listener(self.final(kernel))

    def final(self, kernel: str) -> KernelState:
        counts = self.counts.get(kernel, Counter())
        told = ", ".join(
            f"{counts[v]} {v}" for v in ("passed", "failed", "error", "skipped") if counts[v]
        )
        reason = self.reasons.get(kernel, "")
        if counts["skipped"] == sum(counts.values()):
            return KernelState(kernel, "skipped", f"{told}; {reason}" if reason else told)
        if not counts["passed"]:
            return KernelState(kernel, "failed", f"{told}; {reason}" if reason else told)
        return KernelState(kernel, "done", told)


def _reason(report: pytest.TestReport) -> str:
    """The first line of why a case did not pass."""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2]).removeprefix("Skipped: ")
    else:
        text = report.longreprtext
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(lines[0]) if lines else ""
