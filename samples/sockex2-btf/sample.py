"""sockex2-btf: sockex2's flow dissector with its hash map BTF-defined in SEC(".maps")."""

from collections.abc import Sequence

from harness import frames
from harness.samples import (
    FRAME_KINDS,
    Column,
    Expected,
    Fields,
    Frame,
    Frames,
    Icmp,
    Layout,
    MapCheck,
    Program,
    Sample,
    Tcp,
    Udp,
)

MAP = "hash_map"
TCP_DST, UDP_DST, ICMP_DST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: Where each kind of crafted frame goes: IPv4 kinds to 127.0.0.16 and up, IPv6 kinds to fd00::N.
FRAME_DST = {
    kind: (f"fd00::{n}" if kind in frames.IPV6_KINDS else f"127.0.0.{16 + n}")
    for n, kind in enumerate(FRAME_KINDS)
}
FRAMES_PER_KIND = 4


def destination_key(address: str) -> Fields:
    """The key of ``address`` in hash_map: an IPv4 address's value, or an IPv6 address's fold."""
    if ":" in address:
        return (frames.fold_ipv6(address),)
    return (frames.ipv4_key(address),)


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every frame the dissector takes for IP, counted under its innermost destination.

    The program never loads the ports (its key is the destination), so neither
    does the model: a frame that ends at its transport header still counts.
    """
    counts: dict[Fields, Fields] = {}
    for frame in captured:
        flow = frames.dissect(frame.head, frame.length, ports=False)
        if flow is None:
            continue
        packets, total = counts.get((flow.dst,), (0, 0))
        assert isinstance(packets, int) and isinstance(total, int)
        counts[(flow.dst,)] = (packets + 1, total + frame.length)
    return {MAP: counts}


def describe_key(key: Fields) -> str:
    (value,) = key
    assert isinstance(value, int)
    return frames.show_ipv4(value)


SAMPLE = Sample(
    name="sockex2-btf",
    title=(
        "flow dissector socket filter (VLAN, QinQ, IPv4/IPv6, GRE, IPIP): packets and bytes "
        'per destination in a hash map (BTF-defined, SEC(".maps"))'
    ),
    format="btf",
    kern="sockex2_kern.c",
    programs=(Program("socket2"),),
    maps=(
        MapCheck(
            MAP,
            kind="hash",
            key=Layout("<I", ("dst",)),
            value=Layout("<qq", ("packets", "bytes")),
            describe_key=describe_key,
        ),
    ),
    traffic=(
        Tcp(64 * 1024, dst=TCP_DST),
        Udp(16 * 1024, dst=UDP_DST),
        Icmp(8, dst=ICMP_DST),
        *(Frames(kind, FRAMES_PER_KIND, dst=dst) for kind, dst in FRAME_DST.items()),
    ),
    oracle=oracle,
    columns=(
        Column("TCP", MAP, destination_key(TCP_DST), "bytes"),
        Column("UDP", MAP, destination_key(UDP_DST), "bytes"),
        Column("ICMP", MAP, destination_key(ICMP_DST), "bytes"),
        Column("GRE", MAP, destination_key(FRAME_DST["gre"]), "packets"),
        Column("QinQ", MAP, destination_key(FRAME_DST["qinq"]), "packets"),
        Column("IPv6", MAP, destination_key(FRAME_DST["ipv6"]), "packets"),
    ),
)
