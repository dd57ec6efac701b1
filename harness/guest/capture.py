"""An independent count of what crosses an interface: an AF_PACKET capture.

The capture is the oracle the sample's map is checked against, so it counts the
same thing the filter does, by its own means: every frame a packet socket on the
interface receives, with its full length (``skb->len``: the 14-byte Ethernet
header included; ``recv`` with ``MSG_TRUNC`` returns it without copying the frame).
On ``lo`` each packet is seen twice, leaving (``PACKET_OUTGOING``) and arriving
(``PACKET_HOST``), by the capture and by the filter alike.

How a frame is classified: the filter takes the byte at offset 23 of *any* frame
(ETH_HLEN + the protocol field of an IPv4 header) as its protocol. The capture
parses instead: only frames of EtherType IPv4 are attributed to their IP protocol;
anything else is counted apart as ``other_frames``. Equality of map and capture
is then a real statement: the filter counted exactly the IPv4 packets of each
protocol, and nothing else happened to have that byte. In a private network
namespace (or the test VM) ``other_frames`` is 0; if it is not, a mismatch is
explained by those frames rather than hidden by sharing the filter's shortcut.

A capture socket with the default receive buffer drops most frames under TCG, so
the buffer is forced large (``SO_RCVBUFFORCE``, root only), a thread drains it
while traffic flows, and ``PACKET_STATISTICS`` proves at the end that nothing
was dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from harness.errors import CaptureError
from harness.packet_socket import open_packet_socket

ETH_P_IP = 0x0800
ETH_HLEN = 14
#: Offset of the protocol byte of an IPv4 header that follows an Ethernet header.
IP_PROTOCOL_OFFSET = ETH_HLEN + 9
SOL_PACKET = 263
PACKET_STATISTICS = 6
#: 64 MiB: several seconds of loopback traffic even if the reader thread stalls.
RECEIVE_BUFFER = 64 * 1024 * 1024
#: Bytes of each frame copied out: the Ethernet header and the IPv4 protocol byte.
HEAD = 64


@dataclass(frozen=True)
class CaptureCounts:
    """What the capture saw: per IP protocol number, bytes and frames."""

    bytes: dict[int, int] = field(default_factory=dict)
    frames: dict[int, int] = field(default_factory=dict)
    other_frames: int = 0
    total_frames: int = 0


@dataclass(frozen=True)
class CaptureStats:
    """The kernel's own count for the capture socket (PACKET_STATISTICS)."""

    packets: int  # every frame the socket was offered, drops included
    drops: int


class Capture:
    """A packet socket on one interface, counting in a thread until closed."""

    def __init__(self, interface: str = "lo") -> None:
        self.interface = interface
        self._lock = threading.Lock()
        self._bytes: dict[int, int] = {}
        self._frames: dict[int, int] = {}
        self._other = 0
        self._total = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._packets = 0
        self._drops = 0
        self._sock = open_packet_socket(interface, "the capture", receive_buffer=RECEIVE_BUFFER)
        self._sock.settimeout(0.05)
        self._read_statistics()  # start from zero: reading the statistics resets them
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        buf = bytearray(HEAD)
        try:
            while not self._stop.is_set():
                try:
                    length = self._sock.recv_into(buf, HEAD, socket.MSG_TRUNC)
                except TimeoutError:
                    continue
                self._count(buf, length)
        except OSError as exc:
            if not self._stop.is_set():
                self._error = exc

    def _count(self, head: bytearray, length: int) -> None:
        with self._lock:
            self._total += 1
            if length > IP_PROTOCOL_OFFSET and struct.unpack_from("!H", head, 12)[0] == ETH_P_IP:
                protocol = head[IP_PROTOCOL_OFFSET]
                self._bytes[protocol] = self._bytes.get(protocol, 0) + length
                self._frames[protocol] = self._frames.get(protocol, 0) + 1
            else:
                self._other += 1

    def counts(self) -> CaptureCounts:
        """A snapshot of the counts so far."""
        self._raise_if_failed()
        with self._lock:
            return CaptureCounts(dict(self._bytes), dict(self._frames), self._other, self._total)

    def wait_quiet(self, quiet: float = 0.3, limit: float = 20.0) -> bool:
        """Wait until every frame is read and none has come for ``quiet`` s; False after ``limit``.

        Quiet is judged by the kernel's count of frames queued to the socket
        (``PACKET_STATISTICS``), not by the reader thread alone: a reader that has
        not been scheduled yet must not pass for an idle interface.
        """
        deadline = time.monotonic() + limit
        stable_since: float | None = None
        last_queued = -1
        while True:
            self._raise_if_failed()
            stats = self.statistics()
            queued = stats.packets - stats.drops
            with self._lock:
                read = self._total
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
            time.sleep(0.02)

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
        self._thread.join()
        self._sock.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CaptureError(f"reading the capture on {self.interface} failed: {self._error}")
