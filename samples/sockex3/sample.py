"""sockex3: a flow parser chained by tail calls; packets and bytes per flow in a hash map."""

from collections.abc import Sequence

from harness import frames
from harness.packets import Fields, Frame, Icmp, Tcp, Udp
from harness.samples import Column, Expected, Layout, MapCheck, ProgArray, Program, Sample

MAP = "flow_map"
#: jmp_table's slots, as sockex3_kern.c's PARSE_* and COUNT_FLOW number them.
JUMPS = {
    1: "socket/1",  # VLAN tags
    2: "socket/2",  # IPv4
    3: "socket/3",  # IPv6
    4: "socket/4",  # GRE
    5: "socket/5",  # count the flow
}
TCP_DST, UDP_DST, ICMP_DST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: Where each kind of crafted frame goes: IPv4 kinds to 127.0.0.32 and up, IPv6 kinds to fd00::N.
FRAME_DST = frames.frame_destinations(32)
FRAMES_PER_KIND = 4


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every frame the parser takes for IP, counted under its innermost flow."""
    return {MAP: frames.per_flow(captured)}


def udp_flow(kind: str) -> Fields:
    """The key of the crafted frames of ``kind`` (from the default source, UDP)."""
    return frames.crafted_flow_key(kind, FRAME_DST[kind])


SAMPLE = Sample(
    name="sockex3",
    title=(
        "flow parser in six socket filters chained by tail calls (Ethernet, VLAN, IPv4, "
        'IPv6, GRE): packets and bytes per 5-tuple in a hash map (classic SEC("maps"))'
    ),
    format="classic",
    kern="sockex3_kern.c",
    programs=(
        Program("socket/0"),
        *(Program(section, attach="") for section in JUMPS.values()),
    ),
    prog_arrays=(ProgArray("jmp_table", JUMPS),),
    maps=(
        MapCheck(
            MAP,
            kind="hash",
            key=Layout("<IIHHI", ("src", "dst", "sport", "dport", "ip_proto")),
            value=Layout("<qq", ("packets", "bytes")),
            describe_key=frames.describe_flow,
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
        Column("IPIP", MAP, udp_flow("ipip"), "packets"),
        Column("GRE", MAP, udp_flow("gre"), "packets"),
        Column("GRE+VLAN", MAP, udp_flow("gre-vlan"), "packets"),
        Column("IPv6 in IP", MAP, udp_flow("ip6ip"), "packets"),
        Column("QinQ", MAP, udp_flow("qinq"), "packets"),
    ),
)
