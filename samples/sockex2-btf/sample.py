"""sockex2-btf: sockex2's flow dissector with its hash map BTF-defined in SEC(".maps").

The kernel's own samples/bpf/sockex2 (``kernel:sockex2``) is judged like it, with
upstream's GRE parse: see :data:`UPSTREAM`.
"""

import dataclasses
import re
from collections.abc import Sequence

from harness import frames
from harness.samples import (
    Column,
    Defect,
    Expected,
    Frame,
    Icmp,
    Layout,
    MapCheck,
    Printed,
    Program,
    Sample,
    Tcp,
    Udp,
    Upstream,
)

MAP = "hash_map"
TCP_DST, UDP_DST, ICMP_DST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: Where each kind of crafted frame goes: IPv4 kinds to 127.0.0.16 and up, IPv6 kinds to fd00::N.
FRAME_DST = frames.frame_destinations(16)
FRAMES_PER_KIND = 4


def oracle(captured: Sequence[Frame]) -> Expected:
    """Every frame the dissector takes for IP, counted under its innermost destination."""
    return {MAP: frames.per_destination(captured)}


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


#: How every release here (5.10 to 7.2) of sockex2_kern.c parses GRE, departing from a
#: correct parse in each way :class:`harness.frames.GreParse` names. Above all it tests the
#: flags it read with ``load_half`` (host order) against ``<linux/if_tunnel.h>``'s
#: ``GRE_CSUM``, ``GRE_KEY``, ``GRE_SEQ``, ``GRE_ROUTING`` and ``GRE_VERSION``, which are
#: big-endian: on x86 it does not skip a GRE header's optional words and parses the
#: payload from the first of them, so GRE frames with any are counted wrongly (ours with
#: checksum, key and sequence under 0.0.0.0, ours with a key and a VLAN tag not at all).
#: The row's oracle models that, so it checks that the sample does what its own code says
#: on each kernel (a kernel that changes what it computes shows); its :class:`Defect`
#: says how far that is from a correct parse.
UPSTREAM_GRE = frames.GreParse(
    flags_host_order=True,
    addresses_of_gre=False,  # parse_ip() sets the addresses only if the protocol is not GRE
    non_ip_counted=False,  # flow_dissector() returns false for a GRE payload not IP
    tags=(frames.ETH_P_8021Q,),  # one 802.1Q tag after GRE, no 802.1AD
)
#: What sockex2_user.c prints: one line per entry per round (no round marker).
_LINE = re.compile(r"^ip (\d+\.\d+\.\d+\.\d+) bytes (\d+) packets (\d+)$")


def upstream_oracle(captured: Sequence[Frame]) -> Expected:
    """The oracle with upstream's GRE parse (:data:`UPSTREAM_GRE`)."""
    return {MAP: frames.per_destination(captured, gre=UPSTREAM_GRE)}


def read_line(line: str) -> Printed | None:
    found = _LINE.match(line)
    if found is None:
        return None
    address, size, packets = found.groups()
    return Printed(((frames.destination_key(address), (int(packets), int(size))),))


def upstream_adapt(sample: Sample) -> Sample:
    return dataclasses.replace(sample, oracle=upstream_oracle)


UPSTREAM = Upstream(
    name="sockex2",
    read_line=read_line,
    adapt=upstream_adapt,
    defect=Defect("a correct GRE parse", oracle),
    rounds=False,
)
