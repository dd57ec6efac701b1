"""sockex1-btf: bytes per IP protocol of outgoing frames, in a BTF-defined array map."""

from collections.abc import Sequence

from harness import frames
from harness.samples import (
    PACKET_OUTGOING,
    Column,
    Expected,
    Frame,
    Icmp,
    Layout,
    MapCheck,
    Program,
    Sample,
    Tcp,
    Udp,
)

MAP = "my_map"


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every outgoing IPv4 frame's length added under its IP protocol number.

    The filter counts only frames whose ``pkt_type`` is ``PACKET_OUTGOING``, so on
    ``lo`` each packet once (its arriving copy is ``PACKET_HOST``). It reads byte 23
    of any such frame; the oracle attributes only frames whose EtherType is IPv4,
    so equality says the filter counted exactly the outgoing IPv4 packets of each
    protocol (a non-IPv4 frame, or an arriving one, would show as a difference).
    """
    return {MAP: frames.bytes_per_ip_protocol(captured, pkt_types=(PACKET_OUTGOING,))}


SAMPLE = Sample(
    name="sockex1-btf",
    title=(
        "socket filter: bytes per IP protocol of outgoing frames in an array map "
        '(BTF-defined, SEC(".maps"))'
    ),
    format="btf",
    kern="sockex1_kern.c",
    programs=(Program("socket1"),),
    maps=(
        MapCheck(
            MAP,
            kind="array",
            key=Layout("<I", ("protocol",)),
            value=Layout("<q", ("bytes",)),
        ),
    ),
    traffic=(Tcp(256 * 1024), Udp(64 * 1024), Icmp(16)),
    oracle=oracle,
    columns=(
        Column("TCP", MAP, (frames.IPPROTO_TCP,), "bytes", deterministic=False),
        Column("UDP", MAP, (frames.IPPROTO_UDP,), "bytes"),
        Column("ICMP", MAP, (frames.IPPROTO_ICMP,), "bytes"),
    ),
)
