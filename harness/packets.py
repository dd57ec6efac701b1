"""What a sample's traffic is made of, and the frames the capture records.

The part of a sample's descriptor the guest needs (:mod:`harness.samples` re-exports
all of it), and the Internet checksum its traffic is built with: the guest imports this
module, not the descriptors' whole model nor the dissector and oracles of
:mod:`harness.frames` (only a case with crafted frames loads that), because under TCG
every class and line a module runs at import costs, and the guest's start-up is on every
run's critical path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: A map key or value decoded with its layout: one int (or bytes) per field.
Fields = tuple[int | bytes, ...]

#: What a frame's ``pkt_type`` is (``struct sockaddr_ll``'s ``sll_pkttype``).
PACKET_HOST = 0
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Frame:
    """One frame the capture saw: its packet type, full length and first bytes."""

    pkt_type: int  # PACKET_HOST, PACKET_OUTGOING, ...
    length: int  # skb->len: the whole frame, its Ethernet header included
    head: bytes  # the first bytes of the frame (at most the capture's snap length)


# --- traffic: what the guest sends during a case -------------------------------------


@dataclass(frozen=True)
class Tcp:
    """``bytes`` of payload over one TCP connection to ``dst``."""

    bytes: int
    dst: str = "127.0.0.1"


@dataclass(frozen=True)
class Udp:
    """``bytes`` of UDP payload in 1 KiB datagrams to ``dst``."""

    bytes: int
    dst: str = "127.0.0.1"


@dataclass(frozen=True)
class Icmp:
    """``count`` ICMP echo requests to ``dst``, each answered."""

    count: int
    dst: str = "127.0.0.1"


#: Crafted frame kinds the guest can send through a packet socket on ``lo``.
FRAME_KINDS = ("vlan", "qinq", "ipv6", "ipip", "gre", "gre-vlan", "ip6ip", "fragment", "arp")


@dataclass(frozen=True)
class Frames:
    """``count`` crafted frames of ``kind`` (see :data:`FRAME_KINDS`) written onto ``lo``.

    ``dst`` is the innermost IPv4 destination (or the IPv6 one for IPv6 kinds);
    ``payload`` the bytes of UDP payload each carries.
    """

    kind: str
    count: int
    dst: str = "127.0.0.1"
    payload: int = 64


TrafficStep = Tcp | Udp | Icmp | Frames


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: a header holding it sums to 0xffff."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
