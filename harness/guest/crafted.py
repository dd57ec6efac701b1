"""Crafted frames written onto an interface through a packet socket.

The frames (:mod:`harness.frames`) are whole Ethernet frames, so they are
written with ``sendto`` on an ``AF_PACKET``/``SOCK_RAW`` socket bound to the
interface. On ``lo`` such a frame is seen by every other packet socket twice,
like any loopback traffic: leaving (``PACKET_OUTGOING``) and, after the loopback
device hands it back, arriving (``PACKET_HOST``; the kernel strips the outer
VLAN tag of the arriving copy before packet sockets see it). The sending socket
itself is opened for no protocol, so it receives nothing.
"""

from __future__ import annotations

import errno
import logging
import socket

from harness import frames
from harness.errors import TrafficError
from harness.packets import Frames

log = logging.getLogger(__name__)


def send_frames(step: Frames, interface: str = "lo") -> int:
    """Write ``step.count`` frames of ``step.kind`` onto ``interface``; returns how many went."""
    try:
        frame = frames.build(step.kind, step.dst, payload=step.payload)
    except ValueError as exc:
        raise TrafficError(
            f"cannot build {step.kind} frames to {step.dst}: {exc}; fix the sample's Frames step"
        ) from exc
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        advice = (
            "run as root or with CAP_NET_RAW"
            if exc.errno in (errno.EPERM, errno.EACCES)
            else "check that the kernel has packet sockets (CONFIG_PACKET)"
        )
        raise TrafficError(
            f"cannot open a packet socket to send {step.kind} frames: {exc.strerror}; {advice}"
        ) from exc
    sent = 0
    with sock:
        try:
            sock.bind((interface, 0))
            for _ in range(step.count):
                written = sock.send(frame)
                if written != len(frame):
                    raise TrafficError(
                        f"{interface} took {written} of the {len(frame)} bytes of a "
                        f"{step.kind} frame; the interface's MTU may be too small"
                    )
                sent += 1
        except OSError as exc:
            advice = (
                f"no interface {interface}; name one that `ip link` lists"
                if exc.errno == errno.ENODEV
                else f"check that {interface} is up (`ip link set {interface} up`)"
            )
            raise TrafficError(
                f"writing {step.kind} frames to {step.dst} onto {interface} failed after "
                f"{sent} of {step.count}: {exc.strerror or exc}; {advice}"
            ) from exc
    log.info(
        "wrote %d %s frames of %d bytes to %s on %s",
        sent,
        step.kind,
        len(frame),
        step.dst,
        interface,
    )
    return sent
