"""The scenario: capture on lo, attach sockex1 with one loader, send traffic, compare.

Order of events for one loader:
1. ``lo`` is brought up if it is down; an independent capture opens on it;
2. the sample is loaded and attached with the loader under test (in this
   process for ``python``; the C program in its harness mode for ``c``);
3. known traffic is sent, each exchange complete when the other end has it all;
4. the capture is waited on until ``lo`` has been quiet for a moment, so the
   last control packets (TCP's closing ACK) have been seen by both sockets;
5. the map is read, the capture's counts are taken at once, and the capture's
   ``PACKET_STATISTICS`` give the drops.
No assertion is made here: the result goes into JSON and the host judges it.
"""

from __future__ import annotations

import logging
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from harness import proc
from harness.errors import HarnessError, LoaderError
from harness.guest.capture import Capture
from harness.guest.result import PROTOCOL_NUMBERS, PROTOCOLS, ProtocolCount, SampleResult
from harness.guest.traffic import bring_up, send_icmp, send_tcp, send_udp

if TYPE_CHECKING:
    from harness.bpf import loader as bpf_loader

log = logging.getLogger(__name__)

LOADERS = ("python", "c")
PROGRAM_SECTION = "socket1"
MAP_NAME = "my_map"
#: How long the C program may take to load and attach, and to report (TCG is slow).
C_LOADER_TIMEOUT = 60.0
#: The C program's report line.
REPORT_LINE = re.compile(rb"^TCP (\d+) UDP (\d+) ICMP (\d+) bytes$", re.MULTILINE)


@dataclass(frozen=True)
class Options:
    """What the scenario sends and with which files."""

    bpf_object: Path
    c_loader: Path | None = None
    tcp_bytes: int = 256 * 1024
    udp_bytes: int = 0
    icmp_count: int = 0
    interface: str = "lo"


class AttachedSample(Protocol):
    def read(self) -> dict[str, int]:
        """Bytes the map counted, per protocol name."""
        ...


class PythonSample:
    """sockex1 loaded by harness.bpf in this process."""

    def __init__(self, loaded: bpf_loader.LoadedObject) -> None:
        self.loaded = loaded

    def read(self) -> dict[str, int]:
        return {
            name: self.loaded.map_value(MAP_NAME, number)
            for name, number in PROTOCOL_NUMBERS.items()
        }


class CSample:
    """The C program in harness mode: attached once it says ``ready``, reports on EOF."""

    def __init__(self, child: subprocess.Popen[bytes], binary: Path) -> None:
        self.child = child
        self.binary = binary
        self.out = b""
        self.err = b""

    def wait_for(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        """Read the child's output until ``pattern`` matches its stdout."""
        assert self.child.stdout is not None and self.child.stderr is not None
        streams = {self.child.stdout.fileno(): "out", self.child.stderr.fileno(): "err"}
        deadline = time.monotonic() + C_LOADER_TIMEOUT
        while True:
            found = pattern.search(self.out)
            if found:
                return found
            left = deadline - time.monotonic()
            if not streams or left <= 0:
                break
            ready, _, _ = select.select(list(streams), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    del streams[fd]
                elif streams[fd] == "out":
                    self.out += chunk
                else:
                    self.err += chunk
        status = self.child.poll()
        if status is None and not streams:
            # Both pipes closed: the child is exiting; give it a moment to be reaped.
            try:
                status = self.child.wait(5)
            except subprocess.TimeoutExpired:
                status = None
        reason = f"exited with status {status}" if status is not None else "timed out"
        message = self.err.decode(errors="replace").strip() or "(nothing on stderr)"
        raise LoaderError(f"the C loader {self.binary} {reason} before {what}: {message}")

    def read(self) -> dict[str, int]:
        assert self.child.stdin is not None
        self.child.stdin.close()  # the signal to read the map and report
        found = self.wait_for(REPORT_LINE, "reporting its counts")
        tcp, udp, icmp = (int(group) for group in found.groups())
        return {"tcp": tcp, "udp": udp, "icmp": icmp}


@contextmanager
def attach(loader: str, options: Options) -> Iterator[AttachedSample]:
    """sockex1 loaded and attached to ``options.interface`` by ``loader``."""
    if loader == "python":
        bpf_loader = _python_loader()
        with bpf_loader.load(options.bpf_object) as loaded:
            sock = bpf_loader.attach_socket(loaded.program_fd(PROGRAM_SECTION), options.interface)
            with sock:
                yield PythonSample(loaded)
    elif loader == "c":
        if options.c_loader is None:
            raise LoaderError("no C loader given; pass --c-loader BUILD_DIR/sockex1")
        if options.interface != "lo":
            raise LoaderError("the C loader attaches to lo only")
        child = proc.spawn([str(options.c_loader), "--harness", str(options.bpf_object)])
        try:
            sample = CSample(child, options.c_loader)
            sample.wait_for(re.compile(rb"^ready$", re.MULTILINE), "attaching")
            yield sample
            status = child.wait(C_LOADER_TIMEOUT)
            if status != 0:
                raise LoaderError(
                    f"the C loader {options.c_loader} exited with status {status}: "
                    f"{sample.err.decode(errors='replace').strip()}"
                )
        finally:
            proc.kill_group(child)
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    else:
        raise LoaderError(f"unknown loader {loader!r}; choose one of {', '.join(LOADERS)}")


def _python_loader() -> ModuleType:
    # Imported here so that the C loader runs even where pyelftools is missing.
    try:
        from harness.bpf import loader
    except ImportError as exc:
        raise LoaderError(
            f"the Python loader cannot be imported by {sys.executable} ({exc}); "
            "run the scenario with the interpreter the harness is installed for"
        ) from exc
    return loader


def run(loader: str, options: Options) -> SampleResult:
    """Run the scenario with one loader; errors of the run are kept in the result."""
    release = os.uname().release
    try:
        return _run(loader, options, release)
    except HarnessError as exc:
        return SampleResult(release=release, loader=loader, protocols={}, error=str(exc))


def _run(loader: str, options: Options, release: str) -> SampleResult:
    details: dict[str, str] = {}
    if bring_up(options.interface):
        details["interface"] = f"{options.interface} was down and was brought up"
    with Capture(options.interface) as capture:
        with attach(loader, options) as sample:
            payload = {
                "tcp": send_tcp(options.tcp_bytes) if options.tcp_bytes else 0,
                "udp": send_udp(options.udp_bytes) if options.udp_bytes else 0,
                "icmp": send_icmp(options.icmp_count) if options.icmp_count else 0,
            }
            started = time.monotonic()
            if not capture.wait_quiet():
                details["quiet"] = f"{options.interface} never went quiet; counts may be in flight"
            details["quiet_seconds"] = f"{time.monotonic() - started:.3f}"
            before = capture.counts()
            map_bytes = sample.read()
            seen = capture.counts()
            if seen.total_frames != before.total_frames:
                during = seen.total_frames - before.total_frames
                details["frames_during_map_read"] = str(during)
        late = capture.counts().total_frames - seen.total_frames
        if late:
            details["late_frames"] = str(late)
        stats = capture.statistics()
    details["capture_offered"] = str(stats.packets)
    details["capture_read"] = str(seen.total_frames)
    protocols = {
        name: ProtocolCount(
            map_bytes=map_bytes[name],
            capture_bytes=seen.bytes.get(PROTOCOL_NUMBERS[name], 0),
            payload_bytes=payload[name],
            packets=seen.frames.get(PROTOCOL_NUMBERS[name], 0),
            drops=stats.drops,
        )
        for name in PROTOCOLS
    }
    return SampleResult(
        release=release,
        loader=loader,
        protocols=protocols,
        other_frames=seen.other_frames,
        details=details,
    )
