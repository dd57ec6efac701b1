"""An independent record of what crosses an interface: an AF_PACKET capture.

The capture is the oracle's input: every sample's map is checked against what a
capture of the same interface saw, by its own means. It records every frame a
packet socket on the interface receives: its packet type (``PACKET_OUTGOING``
leaving, ``PACKET_HOST`` arriving: on ``lo`` each packet is seen once each way, by
the capture and a sample's filter alike), its full length (``skb->len``, the
Ethernet header included; ``recvfrom`` with ``MSG_TRUNC`` returns it without
copying the frame) and its first :data:`SNAP_LENGTH` bytes, enough for every
header the samples parse. A sample's oracle turns these frames into the map
entries it must hold (see :mod:`harness.samples`).

A capture socket with the default receive buffer drops most frames under TCG, so
the buffer is forced large (``SO_RCVBUFFORCE``, root only), a thread drains it
while traffic flows, and ``PACKET_STATISTICS`` proves at the end that nothing
was dropped. The thread waits in ``select`` on the socket and on a pipe that
:meth:`Capture.close` writes to, so closing takes no polling interval (a packet
socket cannot be shut down to wake a reader).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from harness.closing import Closing
from harness.errors import CaptureError
from harness.packet_socket import open_packet_socket
from harness.packets import Frame

SOL_PACKET = 263
PACKET_STATISTICS = 6
#: 64 MiB: several seconds of loopback traffic even if the reader thread stalls.
RECEIVE_BUFFER = 64 * 1024 * 1024
#: Bytes of each frame kept: Ethernet, two VLAN tags, an outer IPv6 header, a GRE
#: header with every option, an inner IPv6 header and the ports fit well inside.
SNAP_LENGTH = 256


@dataclass(frozen=True)
class CaptureStats:
    """The kernel's own count for the capture socket (PACKET_STATISTICS)."""

    packets: int  # every frame the socket was offered, drops included
    drops: int


class Capture(Closing):
    """A packet socket on one interface, recording frames in a thread until closed."""

    def __init__(self, interface: str = "lo") -> None:
        self.interface = interface
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._packets = 0
        self._drops = 0
        self._sock = open_packet_socket(interface, "the capture", receive_buffer=RECEIVE_BUFFER)
        self._sock.setblocking(False)
        self._read_statistics()  # start from zero: reading the statistics resets them
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(SNAP_LENGTH)
        waits = [self._sock.fileno(), self._wake_read]
        try:
            while not self._stop.is_set():
                try:
                    length, address = self._sock.recvfrom_into(buf, SNAP_LENGTH, socket.MSG_TRUNC)
                except BlockingIOError:  # drained: wait for a frame or for close()
                    select.select(waits, [], [])
                    continue
                # address: (interface, protocol, pkttype, hatype, hwaddr)
                frame = Frame(address[2], length, bytes(buf[: min(length, SNAP_LENGTH)]))
                with self._lock:
                    self._frames.append(frame)
        except OSError as exc:
            if not self._stop.is_set():
                self._error = exc

    def frames(self) -> list[Frame]:
        """The frames recorded so far, in the order they were read."""
        self._raise_if_failed()
        with self._lock:
            return list(self._frames)

    def wait_quiet(self, quiet: float = 0.1, limit: float = 20.0) -> bool:
        """Wait until every frame is read and none has come for ``quiet`` s; False after ``limit``.

        Quiet is judged by the kernel's count of frames queued to the socket
        (``PACKET_STATISTICS``), not by the reader thread alone: a reader that has
        not been scheduled yet must not pass for an idle interface. The senders
        return only once the other end has everything, so what is left in flight
        is a few control packets: a short quiet period covers them.
        """
        deadline = time.monotonic() + limit
        stable_since: float | None = None
        last_queued = -1
        while True:
            self._raise_if_failed()
            stats = self.statistics()
            queued = stats.packets - stats.drops
            with self._lock:
                read = len(self._frames)
            now = time.monotonic()
            if read != queued:
                stable_since = None
            elif queued != last_queued or stable_since is None:
                stable_since = now
            last_queued = queued
            if stable_since is not None and now - stable_since >= quiet:
                return True
            if now >= deadline:
                return False
            time.sleep(0.01)

    def statistics(self) -> CaptureStats:
        """Frames offered to the socket and frames dropped, since it was opened."""
        self._read_statistics()
        return CaptureStats(self._packets, self._drops)

    def _read_statistics(self) -> None:
        # struct tpacket_stats; the kernel resets it on every read, so accumulate.
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self._packets += packets
        self._drops += drops

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._thread.join()
        self._sock.close()
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CaptureError(f"reading the capture on {self.interface} failed: {self._error}")
