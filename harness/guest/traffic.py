"""Known traffic over loopback: a TCP stream, UDP datagrams, ICMP echo requests.

Each sender returns only when the other end has received everything, so that
what remains to wait for is the last few control packets (TCP's closing ACK, the
echo replies), which the capture's quiet period covers.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness.errors import TrafficError
from harness.packets import checksum

LOOPBACK = "127.0.0.1"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
#: How long one exchange may take, even under TCG.
TIMEOUT = 30.0
UDP_DATAGRAM = 1024
ICMP_DATA = 56


def bring_up(interface: str = "lo") -> bool:
    """Set ``interface`` up if it is down (SIOCSIFFLAGS); True if it had to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", interface.encode(), 0)
        try:
            flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            if flags & IFF_UP:
                return False
            fcntl.ioctl(
                sock, SIOCSIFFLAGS, struct.pack("16sH22x", interface.encode(), flags | IFF_UP)
            )
        except OSError as exc:
            raise TrafficError(f"cannot bring {interface} up: {exc.strerror}; run as root") from exc
    return True


@contextmanager
def on_one_cpu() -> Iterator[int]:
    """Run the calling thread, and every thread and process it starts, on one CPU (yielded).

    Why: a program may keep state per CPU between packets (a flow record in an array
    indexed by ``bpf_get_smp_processor_id()``, as one of the kernel's own samples has), and
    then what it counts for a frame depends on the frames the same CPU processed before.
    On ``lo`` a frame is processed on the CPU that sends it: its ``PACKET_OUTGOING``
    copy in the sender's ``dev_queue_xmit``, its ``PACKET_HOST`` copy in the receive
    softirq of that CPU's backlog, which ``netif_rx`` queues it to (no RPS here), and
    what that answers (an echo reply, a TCP ACK) in that softirq too. With every sender
    and receiver on one CPU, every frame is processed on it, in the order the capture
    reads them, so the oracle can replay that CPU's state from the capture, which does
    not record the CPU. The affinity (``sched_setaffinity``, per thread) is inherited
    by threads and children started meanwhile; the caller's is restored on leaving.
    The VM keeps its second CPU for everything else (the capture's reader, 9p).
    """
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise TrafficError(f"cannot run the traffic on CPU {cpu} alone: {exc}") from exc
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def send_tcp(size: int, dst: str = LOOPBACK) -> int:
    """Send ``size`` bytes over one TCP connection to ``dst`` on loopback, closed by both ends.

    Returns the bytes the receiving end read (equal to ``size``, or an error).
    """
    with socket.create_server((dst, 0)) as server:
        server.settimeout(TIMEOUT)
        received = [0]
        failure: list[BaseException] = []

        def receive() -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    while chunk := conn.recv(65536):
                        received[0] += len(chunk)
            except OSError as exc:
                failure.append(exc)

        receiver = threading.Thread(target=receive, name="tcp-receiver")
        receiver.start()
        try:
            # Not socket.create_connection: its getaddrinfo() encodes the address with
            # the "idna" codec, whose first use imports encodings.idna, stringprep and
            # unicodedata (0.5 to 0.7 s of the first case in a TCG guest).
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
                client.settimeout(TIMEOUT)
                client.connect(server.getsockname())
                block = os.urandom(min(size, 65536)) if size else b""
                left = size
                while left:
                    client.sendall(block[: min(left, len(block))])
                    left -= min(left, len(block))
                client.shutdown(socket.SHUT_WR)
                # The receiver closes after reading our FIN; its FIN ends this read.
                while client.recv(65536):
                    pass
        except OSError as exc:
            raise TrafficError(f"TCP transfer of {size} bytes to {dst} failed: {exc}") from exc
        finally:
            receiver.join(TIMEOUT)
    if failure:
        raise TrafficError(f"TCP receiver on loopback failed: {failure[0]}")
    if received[0] != size:
        raise TrafficError(f"TCP over loopback delivered {received[0]} of {size} bytes")
    return size


def send_udp(size: int, dst: str = LOOPBACK) -> int:
    """Send ``size`` bytes of UDP payload in datagrams to ``dst``; returns the bytes received."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        receiver.bind((dst, 0))
        receiver.settimeout(TIMEOUT)
        target = receiver.getsockname()
        received = 0
        left = size
        try:
            while left:
                chunk = min(left, UDP_DATAGRAM)
                sender.sendto(b"u" * chunk, target)
                left -= chunk
                # One at a time: nothing can overflow the receiver.
                received += len(receiver.recv(65536))
        except OSError as exc:
            raise TrafficError(f"UDP over loopback failed after {received} bytes: {exc}") from exc
    if received != size:
        raise TrafficError(f"UDP over loopback delivered {received} of {size} bytes")
    return size


def send_icmp(count: int, dst: str = LOOPBACK) -> int:
    """Send ``count`` ICMP echo requests to ``dst``, each answered; returns the data bytes sent."""
    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as exc:
        raise TrafficError(f"cannot open a raw ICMP socket: {exc.strerror}; run as root") from exc
    with sock:
        sock.settimeout(TIMEOUT)
        for sequence in range(count):
            data = bytes(range(ICMP_DATA))
            sock.sendto(_echo_request(ident, sequence, data), (dst, 0))
            deadline = time.monotonic() + TIMEOUT
            while True:
                if time.monotonic() > deadline:
                    raise TrafficError(f"no ICMP echo reply to request {sequence} on loopback")
                try:
                    packet = sock.recv(65536)
                except OSError as exc:
                    raise TrafficError(f"ICMP echo on loopback failed: {exc}") from exc
                header = (packet[0] & 0x0F) * 4
                kind, _, _, got_ident, got_sequence = struct.unpack_from("!BBHHH", packet, header)
                if kind == 0 and got_ident == ident and got_sequence == sequence:
                    break
    return count * ICMP_DATA


def _echo_request(ident: int, sequence: int, data: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence)
    return struct.pack("!BBHHH", 8, 0, checksum(header + data), ident, sequence) + data
