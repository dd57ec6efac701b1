"""sockex2: a flow dissector in one socket filter; packets and bytes per destination."""

from collections.abc import Sequence

from harness import frames
from harness.packets import Frame, Icmp, Tcp, Udp
from harness.samples import Column, Expected, Layout, MapCheck, Program, Sample

MAP = "hash_map"
TCP_DST, UDP_DST, ICMP_DST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: Where each kind of crafted frame goes: IPv4 kinds to 127.0.0.16 and up, IPv6 kinds to fd00::N.
FRAME_DST = frames.frame_destinations(16)
FRAMES_PER_KIND = 4


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every frame the dissector takes for IP, counted under its innermost destination."""
    return {MAP: frames.per_destination(captured)}


SAMPLE = Sample(
    name="sockex2",
    title=(
        "flow dissector socket filter (VLAN, QinQ, IPv4/IPv6, GRE, IPIP): packets and bytes "
        'per destination in a hash map (classic SEC("maps"))'
    ),
    format="classic",
    kern="sockex2_kern.c",
    programs=(Program("socket2"),),
    maps=(
        MapCheck(
            MAP,
            kind="hash",
            key=Layout("<I", ("dst",)),
            value=Layout("<qq", ("packets", "bytes")),
            describe_key=frames.describe_destination,
        ),
    ),
    traffic=(
        Tcp(64 * 1024, dst=TCP_DST),
        Udp(16 * 1024, dst=UDP_DST),
        Icmp(8, dst=ICMP_DST),
        *frames.crafted_traffic(FRAME_DST, FRAMES_PER_KIND),
    ),
    oracle=oracle,
    columns=(
        Column("TCP", MAP, frames.destination_key(TCP_DST), "bytes", deterministic=False),
        Column("UDP", MAP, frames.destination_key(UDP_DST), "bytes"),
        Column("ICMP", MAP, frames.destination_key(ICMP_DST), "bytes"),
        Column("GRE", MAP, frames.destination_key(FRAME_DST["gre"]), "packets"),
        Column("QinQ", MAP, frames.destination_key(FRAME_DST["qinq"]), "packets"),
        Column("IPv6", MAP, frames.destination_key(FRAME_DST["ipv6"]), "packets"),
    ),
)
