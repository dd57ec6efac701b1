"""sockex1-btf: bytes per IP protocol of outgoing frames, in a BTF-defined array map.

The kernel's own samples/bpf/sockex1 (``kernel:sockex1``) is judged like it: see
:data:`UPSTREAM`.
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence

from harness import frames
from harness.packets import PACKET_OUTGOING, Fields, Frame, Icmp, Tcp, Udp
from harness.samples import Column, Expected, Layout, MapCheck, Printed, Program, Sample, Upstream

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


#: The kernel's sockex1 counts only outgoing frames from Linux 5.x on (each packet once on lo).
_OUTGOING_ONLY = re.compile(r"pkt_type\s*!=\s*PACKET_OUTGOING")
#: What sockex1_user.c prints once a round.
_LINE = re.compile(r"^TCP (\d+) UDP (\d+) ICMP (\d+) bytes$")


def upstream_variant(sample: Sample, text: str, source: str, own: Mapping[str, Sample]) -> Sample:
    """Every release here (5.10 to 7.2) of sockex1_kern.c returns 0 unless
    ``skb->pkt_type`` is ``PACKET_OUTGOING``, so it is judged like sockex1-btf; a tree
    without that test counts every frame, as our classic sockex1 does, and is judged like it.
    """
    if _OUTGOING_ONLY.search(text):
        return sample
    return dataclasses.replace(sample, oracle=own["sockex1"].oracle)


def read_line(line: str) -> Printed | None:
    """sockex1_user.c prints one line per round: the bytes of TCP, UDP and ICMP."""
    found = _LINE.match(line)
    if found is None:
        return None
    tcp, udp, icmp = (int(g) for g in found.groups())
    protocols = (frames.IPPROTO_TCP, frames.IPPROTO_UDP, frames.IPPROTO_ICMP)
    entries = tuple(((p,), (v,)) for p, v in zip(protocols, (tcp, udp, icmp), strict=True))
    return Printed(entries, round=True)


def describe(key: Fields) -> str:
    return frames.PROTOCOL_NAMES.get(int(key[0]), str(key[0]))


UPSTREAM = Upstream(
    name="sockex1", read_line=read_line, variant=upstream_variant, describe=describe
)
