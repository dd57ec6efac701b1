"""sockex1: bytes per IP protocol, in an array map indexed by the protocol number."""

from collections.abc import Sequence

from harness import frames
from harness.packets import Frame, Icmp, Tcp, Udp
from harness.samples import Column, Expected, Layout, MapCheck, Program, Sample

MAP = "my_map"


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every IPv4 frame's length added under its IP protocol number.

    The filter reads byte 23 of any frame; the oracle attributes only frames whose
    EtherType is IPv4, so equality says the filter counted exactly the IPv4 packets
    of each protocol (a non-IPv4 frame on ``lo`` would show as a difference).
    """
    return {MAP: frames.bytes_per_ip_protocol(captured)}


SAMPLE = Sample(
    name="sockex1",
    title='socket filter: bytes per IP protocol in an array map (classic SEC("maps"))',
    format="classic",
    kern="sockex1_kern.c",
    user=("sockex1_user.c",),
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
