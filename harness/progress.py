"""What a run tells while it works: events, and how they travel between processes.

Library code reports progress as events to a :data:`Listener` it is given (or to
none): a :class:`Note` for a step worth a line, a :class:`Transfer` for the bytes of
a package that have arrived, a :class:`KernelState` when a kernel of a run moves on
(preparing, building, booting, running its cases, and at the end done, failed or
skipped). Showing them is the front end's business (:mod:`harness.display`).

The VMs of ``invoke test`` run in pytest, under pytest-xdist in worker processes,
while the display lives in the process that started pytest. An :class:`EventLog`
carries the events over: each worker appends them to one file as JSON lines, and
:func:`follow` hands each new line to the display as it is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The event log of a run, in its results directory.
EVENTS_NAME = "progress.jsonl"


@dataclass(frozen=True)
class Note:
    """A step worth a line of its own (``6.1.0-57-amd64: extracting``)."""

    text: str


@dataclass(frozen=True)
class Transfer:
    """How many bytes of one package have arrived.

    ``error`` is set on the last event of a download that failed; a download that
    succeeded ends with ``done == total``.
    """

    kernel: str  # the kernel the package is for, as the user named it
    package: str
    done: int
    total: int
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.done >= self.total


#: The states of a kernel in a run, in the order it goes through them; the last
#: three are final.
STATES = ("waiting", "preparing", "building", "booting", "running", "done", "failed", "skipped")
FINAL_STATES = frozenset(("done", "failed", "skipped"))


@dataclass(frozen=True)
class KernelState:
    """A kernel of a run moved on; ``done``/``total`` count its cases while it runs."""

    kernel: str
    state: str
    detail: str = ""
    done: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown kernel state {self.state!r}; one of {', '.join(STATES)}")

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


Event = Note | Transfer | KernelState
Listener = Callable[[Event], None]

_KINDS: dict[str, type[Note] | type[Transfer] | type[KernelState]] = {
    cls.__name__: cls for cls in (Note, Transfer, KernelState)
}


def encode(event: Event) -> str:
    """One line of JSON (no newline) that :func:`decode` turns back into ``event``."""
    return json.dumps({"kind": type(event).__name__, **dataclasses.asdict(event)})


def decode(line: str) -> Event | None:
    """The event of one line of an :class:`EventLog`; None for a line that is not one."""
    try:
        data = json.loads(line)
        cls = _KINDS[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("not a progress event: %r (%s)", line, exc)
        return None


class EventLog:
    """A listener that appends each event to ``path``, one line each, from any process.

    Each line is one ``write`` to a file opened for appending, so lines of several
    processes never interleave.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: Event) -> None:
        data = (encode(event) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            # Progress is for the eye: losing it must not fail the run.
            log.warning("could not write progress to %s: %s", self.path, exc)


def read_events(path: Path, offset: int) -> tuple[list[Event], int]:
    """The events of the complete lines of ``path`` from byte ``offset`` on, and the
    offset after the last of them (a line still being written is left for later)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = [
        event
        for line in data[:end].decode(errors="replace").splitlines()
        if (event := decode(line)) is not None
    ]
    return events, offset + end


@contextlib.contextmanager
def follow(path: Path, listener: Listener, *, interval: float = 0.25) -> Iterator[None]:
    """Hand every event appended to ``path`` to ``listener`` while the block runs.

    A thread reads the file every ``interval`` seconds; when the block ends, the
    events not read yet are handed over before this returns.
    """
    stop = threading.Event()
    offset = 0

    def read() -> None:
        nonlocal offset
        events, offset = read_events(path, offset)
        for event in events:
            listener(event)

    def loop() -> None:
        while not stop.wait(interval):
            read()

    reader = threading.Thread(target=loop, name="progress events", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join()
        read()


class VmWatch:
    """Tells a VM's state from what it leaves on the host: booting until the console
    shows the guest's command starting, then running, with the cases whose result
    file exists. :meth:`poll` tells the listener when that changed."""

    def __init__(
        self,
        listener: Listener,
        kernel: str,
        console_log: Path,
        results: Sequence[Path],
        started: str | Sequence[str],
        *,
        detail: str = "",
    ) -> None:
        self.listener = listener
        self.kernel = kernel
        self.console_log = console_log
        self.results = tuple(results)
        self.started = (started,) if isinstance(started, str) else tuple(started)
        self.detail = detail
        self._offset = 0
        self._running = False
        self._last: KernelState | None = None

    def poll(self) -> KernelState:
        self._read_console()
        if self._running:
            done = sum(1 for path in self.results if path.is_file())
            state = KernelState(
                self.kernel, "running", self.detail, done=done, total=len(self.results)
            )
        else:
            state = KernelState(self.kernel, "booting", self.detail)
        if state != self._last:
            self._last = state
            self.listener(state)
        return state

    def _read_console(self) -> None:
        """Look for the start marker in what the console log gained since the last poll.

        A log that shrank was started again (a boot run again after a stall).
        """
        try:
            size = self.console_log.stat().st_size
        except OSError:
            size = 0
        if size < self._offset:
            self._offset, self._running = 0, False
        if self._running or size == self._offset:
            return
        # Back up by the longest marker, so one split between two polls is found.
        start = max(0, self._offset - max(map(len, self.started)))
        try:
            with open(self.console_log, "rb") as handle:
                handle.seek(start)
                text = handle.read(size - start).decode(errors="replace")
        except OSError:
            return
        self._offset = size
        self._running = any(marker in text for marker in self.started)


@contextlib.contextmanager
def watching(watch: VmWatch | None, *, interval: float = 1.0) -> Iterator[None]:
    """Poll ``watch`` every ``interval`` seconds while the block runs (nothing for None)."""
    if watch is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            watch.poll()

    watch.poll()
    poller = threading.Thread(target=loop, name=f"watch {watch.kernel}", daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        watch.poll()
