"""sockex2-btf: sockex2's flow dissector with its hash map BTF-defined in SEC(".maps").

The kernel's own samples/bpf/sockex2 (``kernel:sockex2``) is judged like it, with
upstream's GRE parse: see :data:`UPSTREAM`.
"""

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from harness import frames, samples
from harness.packets import Frame
from harness.samples import Defect, Expected, Printed, Sample, Upstream

#: The classic sockex2 in every respect (traffic, oracle, columns) but the form of its
#: maps, which only the kernel side declares; its name, title and format are its own.
_CLASSIC = samples.load(Path(__file__).resolve().parent.parent / "sockex2")
oracle = _CLASSIC.oracle
MAP = _CLASSIC.maps[0].name

SAMPLE = dataclasses.replace(
    _CLASSIC,
    name="sockex2-btf",
    title=(
        "flow dissector socket filter (VLAN, QinQ, IPv4/IPv6, GRE, IPIP): packets and bytes "
        'per destination in a hash map (BTF-defined, SEC(".maps"))'
    ),
    format="btf",
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
