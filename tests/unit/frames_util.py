"""Captures written out for the sample oracle tests, and what the flow samples must count in them.

The expected entries are written out by hand (addresses as numbers, lengths as the
frame layouts give them), not computed with harness/frames.py, so that an oracle and
the dissector it stands on are checked against something else.
"""

from __future__ import annotations

import pytest

from harness import frames, paths
from harness.packets import PACKET_HOST, PACKET_OUTGOING, Fields, Frame

LOOPBACK = 0x7F000001
UDP, TCP = 17, 6
TCP_ACK_LENGTH = 14 + 20 + 20

#: What a per-destination sample (sockex2) counts in :func:`crafted_flows`.
PER_DESTINATION: dict[Fields, Fields] = {
    (0x7F000010,): (4, 110 + 106 + 114 + 110),
    (0x7F000014,): (2, 142 * 2),
    (0xFD000006,): (2, 146 * 2),
    (0x7F000017,): (2, 98 * 2),
    (0x7F000002,): (2, TCP_ACK_LENGTH * 2),
    (LOOPBACK,): (2, TCP_ACK_LENGTH * 2),
}
#: What a per-flow sample (sockex3) counts in :func:`crafted_flows`.
PER_FLOW: dict[Fields, Fields] = {
    (LOOPBACK, 0x7F000010, 40000, 9, UDP): (4, 110 + 106 + 114 + 110),
    (LOOPBACK, 0x7F000014, 40000, 9, UDP): (2, 142 * 2),
    (1, 0xFD000006, 40000, 9, UDP): (2, 146 * 2),
    (LOOPBACK, 0x7F000017, 0, 0, 0): (2, 98 * 2),
    (LOOPBACK, 0x7F000002, 50000, 80, TCP): (2, TCP_ACK_LENGTH * 2),
    (0x7F000002, LOOPBACK, 80, 50000, TCP): (2, TCP_ACK_LENGTH * 2),
}


def both_ways(frame: bytes) -> list[Frame]:
    """How lo shows a frame: leaving, then arriving without its outer VLAN tag."""
    received = frame
    if frame[12:14] in (b"\x81\x00", b"\x88\xa8"):
        received = frame[:12] + frame[16:]
    return [
        Frame(PACKET_OUTGOING, len(frame), frame),
        Frame(PACKET_HOST, len(received), received),
    ]


def tcp_ack(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A bare TCP ACK (20-byte header, no payload): the transport checksum is not checked."""
    header = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + b"\x50\x10" + bytes(6)
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4(src, dst, frames.IPPROTO_TCP, header))


def crafted_flows() -> list[Frame]:
    """A capture of: VLAN, QinQ, GRE, IPv6 in IP, fragment, ARP, and one TCP ACK each way."""
    captured: list[Frame] = []
    for kind, dst in (
        ("vlan", "127.0.0.16"),  # 110 bytes leaving, 106 arriving
        ("qinq", "127.0.0.16"),  # 114 and 110
        ("gre", "127.0.0.20"),  # 142 and 142
        ("ip6ip", "fd00::6"),  # 146 and 146
        ("fragment", "127.0.0.23"),  # 98 and 98
        ("arp", "127.0.0.24"),  # not IP: not counted
    ):
        captured += both_ways(frames.build(kind, dst, payload=64))
    captured += both_ways(tcp_ack("127.0.0.1", "127.0.0.2", 50000, 80))
    captured += both_ways(tcp_ack("127.0.0.2", "127.0.0.1", 80, 50000))
    return captured


def header_sets() -> list[object]:
    """The host's headers, and each cached kernel's UAPI headers, as pytest parameters."""
    found: list[object] = [pytest.param(None, id="host")]
    kernels = paths.cache_dir() / "kernels"
    if kernels.is_dir():
        for entry in sorted(kernels.iterdir()):
            if (entry / "include" / "linux" / "bpf.h").is_file():
                found.append(pytest.param(entry / "include", id=entry.name))
    return found
