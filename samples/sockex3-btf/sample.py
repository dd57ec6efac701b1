"""sockex3-btf: sockex3's tail-called flow parser with its prog array and hash in SEC(".maps").

The kernel's own samples/bpf/sockex3 (``kernel:sockex3``) is judged like it, renamed and
laid out as upstream has it: see :data:`UPSTREAM`.
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import frames, samples
from harness.errors import SampleError
from harness.loaders.protocol import program_name
from harness.packets import Fields, Frame
from harness.samples import (
    Defect,
    Expected,
    Layout,
    Printed,
    ProgArray,
    Program,
    Sample,
    Upstream,
)

#: The classic sockex3 in every respect (traffic, oracle, columns) but the form of its
#: maps, which only the kernel side declares; its name, title and format are its own.
_CLASSIC = samples.load(Path(__file__).resolve().parent.parent / "sockex3")
oracle = _CLASSIC.oracle

SAMPLE = dataclasses.replace(
    _CLASSIC,
    name="sockex3-btf",
    title=(
        "flow parser in six socket filters chained by tail calls (Ethernet, VLAN, IPv4, "
        "IPv6, GRE): packets and bytes per 5-tuple in a hash map (BTF-defined prog array and "
        'hash, SEC(".maps"))'
    ),
    format="btf",
)


def upstream_keys(flows: dict[Fields, Fields]) -> dict[Fields, Fields]:
    """Per-flow entries keyed as upstream's ``hash_map`` is: the destination port first."""
    return {(k[0], k[1], k[3], k[2], k[4]): v for k, v in flows.items()}


def upstream_adapt(sample: Sample) -> Sample:
    """Our sockex3 renamed and laid out as upstream (5.10 to 6.11) has it.

    Upstream's main program is ``socket/0``; it tail-calls through ``jmp_table`` at
    PARSE_VLAN 1, PARSE_MPLS 2, PARSE_IP 3, PARSE_IPV6 4, each ``socket/N`` (its user
    program stores each ``socket/N`` at N); the flows are in ``hash_map``. Its key stores
    both ports with one ``load_word`` into a union, so on x86 the destination port comes
    first in memory: the layout names them in that order and the oracle's keys follow.
    """
    check = sample.maps[0]
    ours = check.name
    base_oracle = sample.oracle

    def upstream_oracle(captured: Sequence[Frame]) -> Expected:
        return {"hash_map": upstream_keys(base_oracle(captured)[ours])}

    def describe(key: Fields) -> str:
        return frames.describe_flow((key[0], key[1], key[3], key[2], key[4]))

    key = Layout(check.key.format, ("src", "dst", "dport", "sport", "ip_proto"))
    upstream_map = dataclasses.replace(check, name="hash_map", key=key, describe_key=describe)
    return dataclasses.replace(
        sample,
        programs=(Program("socket/0"), *(Program(f"socket/{n}", attach="") for n in range(1, 5))),
        prog_arrays=(ProgArray("jmp_table", {n: f"socket/{n}" for n in range(1, 5)}),),
        maps=(upstream_map,),
        columns=tuple(
            dataclasses.replace(
                c, map="hash_map", key=(c.key[0], c.key[1], c.key[3], c.key[2], c.key[4])
            )
            for c in sample.columns
        ),
        oracle=upstream_oracle,
    )


#: sockex3's ICMP case falls through from TCP's and UDP's after their ports load, into a
#: flow kept per CPU between packets (``this_cpu_globals()``): it keys ICMP by stale ports.
_STALE_PORTS = re.compile(
    r"case IPPROTO_UDP:\s*g->flow\.ports\s*=\s*load_word\([^;]*;\s*case IPPROTO_ICMP:"
)
_PER_CPU_FLOW = re.compile(r"this_cpu_globals\s*\(")
#: Its GRE flags read with load_half (host order) and tested against <linux/if_tunnel.h>'s
#: GRE_* (big-endian) as they are, not converted.
_GRE_HOST_ORDER = re.compile(
    r"(\w+)\s*=\s*load_half\([^;]*struct gre_hdr,\s*flags\)\);.*?\b\1\s*&\s*GRE_CSUM\b",
    re.DOTALL,
)


def upstream_parse(text: str) -> frames.ChainedParse:
    """How a release's sockex3_kern.c parses and counts, read from its text
    (:class:`harness.frames.ChainedParse` says what each field means)."""
    return frames.ChainedParse(
        icmp_keeps_ports=bool(_STALE_PORTS.search(text) and _PER_CPU_FLOW.search(text)),
        gre_flags_host_order=bool(_GRE_HOST_ORDER.search(text)),
    )


def modelled(sample: Sample, parse: frames.ChainedParse) -> Sample:
    """``sample`` judged by ``parse`` over the capture in order, and what it would hold
    without the defects ``parse`` has (:class:`Defect`, shown beside the verdict)."""

    def model_oracle(captured: Sequence[Frame]) -> Expected:
        return {"hash_map": upstream_keys(parse.count(captured))}

    fixes = []
    if parse.icmp_keeps_ports:
        fixes.append("counts ICMP under port 0")
    if parse.gre_flags_host_order:
        fixes.append("tests GRE flags in network order")
    defect = None
    if fixes:
        correct = frames.ChainedParse(icmp_keeps_ports=False, gre_flags_host_order=False)

        def correct_oracle(captured: Sequence[Frame]) -> Expected:
            return {"hash_map": upstream_keys(correct.count(captured))}

        defect = Defect(f"a parse that {' and '.join(fixes)}", correct_oracle)
    spec = dataclasses.replace(sample.upstream or UPSTREAM, defect=defect)
    return dataclasses.replace(sample, oracle=model_oracle, upstream=spec)


#: From 6.12 every program is a function of SEC("socket"); the prog array is a BTF-defined
#: map with a static initialiser of its values, indices #defined by name.
_SOCKET_FUNCTION = re.compile(r'SEC\("socket"\)\s*int\s+(\w+)\s*\(')
_STATIC_PROG_ARRAY = re.compile(
    r'\}\s*(\w+)\s+SEC\("\.maps"\)\s*=\s*\{\s*\.values\s*=\s*\{([^}]*)\}', re.DOTALL
)
_SLOT = re.compile(r"\[\s*(\w+)\s*\]\s*=\s*\(\s*void\s*\*\s*\)\s*&\s*(\w+)")
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\d+)\s*$", re.MULTILINE)


def one_section_variant(sample: Sample, text: str, source: str) -> Sample:
    """The sample as 6.12 and later have it: five programs in one section.

    Each program is a function of ``SEC("socket")`` (the loaders are given
    ``socket#FUNCTION``), and the prog array is filled by the object's own static
    initialiser (``[PARSE_IP] = (void *)&bpf_func_ip``, ...), which the build checks
    against the object. The program attached is the one function the initialiser does
    not name (``main_prog``). All of it is read from the release's source.
    """
    functions = _SOCKET_FUNCTION.findall(text)
    initialiser = _STATIC_PROG_ARRAY.search(text)
    if not functions or initialiser is None:
        raise SampleError(
            f"{source} has neither programs in sections socket/N nor functions of "
            'SEC("socket") with a prog array initialised statically: a form of sockex3 the '
            "harness does not know; only its own user program (loader own) is checked"
        )
    defines = {name: int(value) for name, value in _DEFINE.findall(text)}
    slots: dict[int, str] = {}
    for index, function in _SLOT.findall(initialiser.group(2)):
        number = int(index) if index.isdigit() else defines.get(index)
        if number is None or function not in functions:
            raise SampleError(
                f"{source}: prog array {initialiser.group(1)} puts {function} at [{index}], "
                f"which is not {'a #defined index' if number is None else 'a program'} of "
                f'SEC("socket") ({", ".join(functions)})'
            )
        slots[number] = function
    attached = [f for f in functions if f not in slots.values()]
    if len(attached) != 1:
        raise SampleError(
            f'{source}: the programs of SEC("socket") that no slot of '
            f"{initialiser.group(1)} names are {', '.join(attached) or 'none'}; the one "
            "attached must be one program"
        )
    targets = tuple(Program("socket", attach="", function=slots[i]) for i in sorted(slots))
    return dataclasses.replace(
        sample,
        programs=(Program("socket", function=attached[0]), *targets),
        prog_arrays=(
            ProgArray(
                initialiser.group(1),
                {i: program_name("socket", f) for i, f in slots.items()},
                filled_by="object",
            ),
        ),
    )


def upstream_variant(sample: Sample, text: str, source: str, own: Mapping[str, Sample]) -> Sample:
    """The sample as this release's sockex3_kern.c has it, or why the loaders cannot load it.

    Judged by a model of its parse over the capture in order (:func:`upstream_parse`):
    in 5.10 to 7.2 its flow record is kept per CPU between packets
    (``this_cpu_globals()``, an array indexed by ``bpf_get_smp_processor_id()``) and
    its ``case IPPROTO_ICMP`` shares TCP's and UDP's count without setting the ports, so
    an ICMP packet is counted under the ports the last TCP or UDP packet on the same CPU
    left there; the guest sends its traffic from one CPU, so the capture's order is the
    one CPU's. It also tests its GRE flags in host order as sockex2 does.

    From 6.12 it puts its five programs in one section, ``SEC("socket")``, and fills its
    prog array from a static initialiser: :func:`one_section_variant` names each program
    by its function and the prog array as the object's to fill.
    """
    sample = modelled(sample, upstream_parse(text))
    if 'SEC("socket/0")' not in text:
        sample = one_section_variant(sample, text, source)
    return sample


#: What sockex3_user.c prints: a header per round, then one line per flow.
_HEADER = re.compile(r"^IP\s+src\.port -> dst\.port\s+bytes\s+packets$")
_LINE = re.compile(r"^(\d+\.\d+\.\d+\.\d+)\.(\d+) -> (\d+\.\d+\.\d+\.\d+)\.(\d+)\s+(\d+)\s+(\d+)$")


def read_line(line: str) -> Printed | None:
    if _HEADER.match(line):
        return Printed(round=True)
    found = _LINE.match(line)
    if found is None:
        return None
    src, sport, dst, dport, size, packets = found.groups()
    key = (frames.ipv4_key(src), frames.ipv4_key(dst), int(sport), int(dport))
    return Printed(((key, (int(packets), int(size))),))


#: Its user program runs netperf, which Debian carries only in non-free, unless it is
#: given any argument, when it runs the same ping as the others: it gets one.
UPSTREAM = Upstream(
    name="sockex3",
    read_line=read_line,
    arguments=("ping",),
    adapt=upstream_adapt,
    variant=upstream_variant,
)
