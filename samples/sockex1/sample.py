"""sockex1: bytes per IP protocol, in an array map indexed by the protocol number."""

from collections.abc import Sequence

from harness.samples import (
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

ETH_P_IP = 0x0800
#: The filter reads the byte at ETH_HLEN + offsetof(struct iphdr, protocol).
PROTOCOL_OFFSET = 14 + 9
TCP, UDP, ICMP = 6, 17, 1


def oracle(frames: Sequence[Frame]) -> Expected:
    """Every IPv4 frame's length added under its IP protocol number.

    The filter reads byte 23 of any frame; the oracle attributes only frames whose
    EtherType is IPv4, so equality says the filter counted exactly the IPv4 packets
    of each protocol (a non-IPv4 frame on ``lo`` would show as a difference).
    """
    counts: dict[tuple[int | bytes, ...], tuple[int | bytes, ...]] = {}
    for frame in frames:
        if len(frame.head) <= PROTOCOL_OFFSET:
            continue
        if int.from_bytes(frame.head[12:14], "big") != ETH_P_IP:
            continue
        key = (frame.head[PROTOCOL_OFFSET],)
        (total,) = counts.get(key, (0,))
        assert isinstance(total, int)
        counts[key] = (total + frame.length,)
    return {"my_map": counts}


SAMPLE = Sample(
    name="sockex1",
    title='socket filter: bytes per IP protocol in an array map (classic SEC("maps"))',
    format="classic",
    kern="sockex1_kern.c",
    user=("sockex1_user.c",),
    programs=(Program("socket1"),),
    maps=(
        MapCheck(
            "my_map",
            kind="array",
            key=Layout("<I", ("protocol",)),
            value=Layout("<q", ("bytes",)),
        ),
    ),
    traffic=(Tcp(256 * 1024), Udp(64 * 1024), Icmp(16)),
    oracle=oracle,
    columns=(
        Column("TCP", "my_map", (TCP,), "bytes"),
        Column("UDP", "my_map", (UDP,), "bytes"),
        Column("ICMP", "my_map", (ICMP,), "bytes"),
    ),
)
