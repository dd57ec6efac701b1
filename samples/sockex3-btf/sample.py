"""sockex3-btf: sockex3's tail-called flow parser with its prog array and hash in SEC(".maps")."""

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
    ProgArray,
    Program,
    Sample,
    Tcp,
    Udp,
)

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
FRAME_DST = {
    kind: (f"fd00::{n}" if kind in frames.IPV6_KINDS else f"127.0.0.{32 + n}")
    for n, kind in enumerate(FRAME_KINDS)
}
FRAMES_PER_KIND = 4
PROTOCOL_NAMES = {
    frames.IPPROTO_ICMP: "icmp",
    frames.IPPROTO_TCP: "tcp",
    frames.IPPROTO_UDP: "udp",
    frames.IPPROTO_GRE: "gre",
    58: "icmpv6",
}


def flow_key(flow: frames.Flow) -> Fields:
    """The key the program builds for ``flow`` (struct flow_key)."""
    return (flow.src, flow.dst, flow.sport, flow.dport, flow.ip_proto)


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every frame the parser takes for IP, counted under its innermost flow."""
    counts: dict[Fields, Fields] = {}
    for frame in captured:
        flow = frames.dissect(frame.head, frame.length)
        if flow is None:
            continue
        key = flow_key(flow)
        packets, total = counts.get(key, (0, 0))
        assert isinstance(packets, int) and isinstance(total, int)
        counts[key] = (packets + 1, total + frame.length)
    return {MAP: counts}


def describe_key(key: Fields) -> str:
    src, dst, sport, dport, ip_proto = key
    assert isinstance(src, int) and isinstance(dst, int) and isinstance(ip_proto, int)
    assert isinstance(sport, int) and isinstance(dport, int)
    protocol = PROTOCOL_NAMES.get(ip_proto, f"proto {ip_proto}")
    return f"{frames.show_ipv4(src)}:{sport} -> {frames.show_ipv4(dst)}:{dport} {protocol}"


def udp_flow(kind: str) -> Fields:
    """The key of the crafted frames of ``kind`` (from the default source, UDP)."""
    flow = frames.dissect(frames.build(kind, FRAME_DST[kind]))
    assert flow is not None
    return flow_key(flow)


SAMPLE = Sample(
    name="sockex3-btf",
    title=(
        "flow parser in six socket filters chained by tail calls (Ethernet, VLAN, IPv4, "
        "IPv6, GRE): packets and bytes per 5-tuple in a hash map (BTF-defined prog array and "
        'hash, SEC(".maps"))'
    ),
    format="btf",
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
        Column("IPIP", MAP, udp_flow("ipip"), "packets"),
        Column("GRE", MAP, udp_flow("gre"), "packets"),
        Column("GRE+VLAN", MAP, udp_flow("gre-vlan"), "packets"),
        Column("IPv6 in IP", MAP, udp_flow("ip6ip"), "packets"),
        Column("QinQ", MAP, udp_flow("qinq"), "packets"),
    ),
)
