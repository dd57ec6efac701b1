"""One case in the guest: capture on lo, load and attach with a loader, send traffic, dump.

Order of events for one (sample, loader) case:
1. ``lo`` is brought up if it is down; an independent capture opens on it;
2. the sample's object is loaded and attached by the loader under test: in this
   process for the Python loader, otherwise a program speaking the loader protocol
   (:mod:`harness.loaders.protocol`), which says ``ready`` once attached;
3. the sample's traffic is sent, each exchange complete when the other end has it, all
   of it from one CPU (:func:`harness.guest.traffic.on_one_cpu` says why);
4. the capture is waited on until ``lo`` has been quiet for a moment, so the last
   control packets (TCP's closing ACK) have been seen by both sockets;
5. the capture's frames are taken, then the maps are dumped (a program loader
   reports them when its input is closed), and ``PACKET_STATISTICS`` gives the drops.
No judgement is made here: the result goes into JSON and the host judges it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Protocol

from harness import proc
from harness.errors import HarnessError, LoaderError, LoaderProtocolError
from harness.guest import forked, own
from harness.guest.capture import Capture
from harness.guest.plan import IN_PROCESS, CasePlan
from harness.guest.result import GuestResult
from harness.guest.traffic import bring_up, on_one_cpu, send_icmp, send_tcp, send_udp
from harness.loaders.protocol import READY, Dump, LoadRequest, parse_dump
from harness.packets import Frames, Icmp, Tcp, TrafficStep, Udp

log = logging.getLogger(__name__)

#: How long a loader program may take to load and attach, and to report (TCG is slow).
LOADER_TIMEOUT = 60.0
INTERFACE = "lo"


class Attached(Protocol):
    def dump(self) -> Dump:
        """The entries of the requested maps."""
        ...

    @property
    def notes(self) -> list[str]:
        """What the loader had to do without (e.g. BTF the kernel refused), one sentence each."""
        ...


class LoaderProgram:
    """A loader program driven through the loader protocol."""

    def __init__(
        self,
        name: str,
        child: subprocess.Popen[bytes] | forked.ForkedLoader,
        request: LoadRequest,
    ) -> None:
        self.name = name
        self.child = child
        self.request = request
        self.out = b""
        self.err = b""
        self._open = {"out": child.stdout, "err": child.stderr}

    def _read(self, until: float, done: bytes | None) -> bool:
        """Read stdout and stderr until ``done`` is a line of stdout (or both close); found?"""
        streams = {s.fileno(): name for name, s in self._open.items() if s is not None}
        while True:
            if done is not None and done in self.out.splitlines():
                return True
            left = until - time.monotonic()
            if not streams or left <= 0:
                return False
            ready, _, _ = select.select(list(streams), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._open[streams.pop(fd)] = None
                elif streams[fd] == "out":
                    self.out += chunk
                else:
                    self.err += chunk

    def _failure(self, what: str) -> LoaderError:
        status = self.child.poll()
        if status is None and not any(self._open.values()):
            # Both pipes closed: the loader is exiting; give it a moment to be reaped.
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = self.child.wait(5)
        if status is None:
            reason = f"did not {what} within {LOADER_TIMEOUT:.0f} s"
        elif status < 0:
            reason = f"was killed by signal {-status} before it could {what}"
        else:
            reason = f"exited with status {status} before it could {what}"
        message = self.err.decode(errors="replace").strip() or "(nothing on stderr)"
        return LoaderError(f"the {self.name} loader {reason}: {message}")

    @property
    def notes(self) -> list[str]:
        # A program loader's notes are its "note: ..." lines on stderr.
        return [
            line.removeprefix("note:").strip()
            for line in self.err.decode(errors="replace").splitlines()
            if line.startswith("note:")
        ]

    def wait_ready(self) -> None:
        if not self._read(time.monotonic() + LOADER_TIMEOUT, READY.encode()):
            raise self._failure("load and attach the sample")

    def dump(self) -> Dump:
        assert self.child.stdin is not None
        self.child.stdin.close()  # the protocol's signal to report
        self._read(time.monotonic() + LOADER_TIMEOUT, None)
        try:
            status = self.child.wait(max(1.0, LOADER_TIMEOUT / 10))
        except subprocess.TimeoutExpired:
            status = None
        if status != 0:
            raise self._failure("report its maps")
        report = self.out.split(READY.encode() + b"\n", 1)[-1].decode(errors="replace")
        try:
            return parse_dump(report, self.request.dump, loader=self.name)
        except LoaderProtocolError as exc:
            stderr = self.err.decode(errors="replace").strip()
            raise LoaderProtocolError(f"{exc}{'; stderr: ' + stderr if stderr else ''}") from exc


@contextmanager
def attach(case: CasePlan) -> Iterator[Attached]:
    """The case's object loaded and attached by its loader."""
    if not case.command:
        if case.loader != IN_PROCESS:
            raise LoaderError(f"loader {case.loader} has no command to run")
        loader = python_loader()
        with loader.load_request(case.request) as attached:
            yield attached
        return
    child: subprocess.Popen[bytes] | forked.ForkedLoader
    if case.python_path:
        child = forked.spawn(case.python_path, case.request.argv())
    else:
        child = proc.spawn([*case.command, *case.request.argv()])
    try:
        program = LoaderProgram(case.loader, child, case.request)
        program.wait_ready()
        yield program
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        if isinstance(child, forked.ForkedLoader):
            child.kill_group()
        else:
            proc.kill_group(child)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def python_loader() -> ModuleType:
    """The in-process loader's module (imported here so that a program loader runs even
    where pyelftools is missing)."""
    try:
        from harness.bpf import loader
    except ImportError as exc:
        raise LoaderError(
            f"the Python loader cannot be imported by {sys.executable} ({exc}); "
            "run the guest with the interpreter the harness is installed for"
        ) from exc
    return loader


def send(step: TrafficStep) -> tuple[str, int]:
    """Send one traffic step; a label for it and what was delivered."""
    if isinstance(step, Tcp):
        return f"tcp {step.dst}", send_tcp(step.bytes, step.dst) if step.bytes else 0
    if isinstance(step, Udp):
        return f"udp {step.dst}", send_udp(step.bytes, step.dst) if step.bytes else 0
    if isinstance(step, Icmp):
        return f"icmp {step.dst}", send_icmp(step.count, step.dst) if step.count else 0
    if isinstance(step, Frames):
        from harness.guest.crafted import send_frames

        return f"frames {step.kind} {step.dst}", send_frames(step, INTERFACE)
    raise LoaderError(f"unknown traffic step {step!r}")


def run(case: CasePlan, release: str | None = None) -> GuestResult:
    """Run one case; errors of the run are kept in the result."""
    release = release or os.uname().release
    if case.loader == own.OWN:
        return own.run(case, release)  # a kernel release's own user program
    timings: dict[str, float] = {}
    try:
        return _run(case, release, timings)
    except HarnessError as exc:
        return GuestResult(
            sample=case.sample, loader=case.loader, release=release, error=str(exc), timings=timings
        )


def _run(case: CasePlan, release: str, timings: dict[str, float]) -> GuestResult:
    details: dict[str, str] = {}
    if bring_up(INTERFACE):
        details["interface"] = f"{INTERFACE} was down and was brought up"
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 4)
        mark = now

    sent: dict[str, int] = {}
    with Capture(INTERFACE) as capture:
        phase("capture")
        with attach(case) as attached:
            phase("attach")
            # One CPU sends and receives everything (see on_one_cpu): a program keeping
            # state per CPU then saw the frames in the capture's order.
            with on_one_cpu():
                for step in case.traffic:
                    label, amount = send(step)
                    sent[label] = sent.get(label, 0) + amount
            phase("traffic")
            if not capture.wait_quiet():
                details["quiet"] = f"{INTERFACE} never went quiet; counts may be in flight"
            phase("quiet")
            frames = capture.frames()
            dump = attached.dump()
            phase("dump")
            if attached.notes:
                details["loader notes"] = "; ".join(attached.notes)
        late = len(capture.frames()) - len(frames)
        if late:
            details["late_frames"] = str(late)
        stats = capture.statistics()
    phase("detach")
    return GuestResult(
        sample=case.sample,
        loader=case.loader,
        release=release,
        maps={name: [(k.hex(), v.hex()) for k, v in entries] for name, entries in dump.items()},
        frames=tuple(frames),
        offered=stats.packets,
        drops=stats.drops,
        sent=sent,
        timings=timings,
        details=details,
    )
