"""Crafted Ethernet frames, and the flow dissector the flow samples implement.

Three parts, all pure (no sockets, no I/O):

- **Builders** make whole Ethernet frames of each kind in
  :data:`harness.packets.FRAME_KINDS`, with correct IPv4 header, UDP and GRE
  checksums, for the guest to write onto ``lo`` through a packet socket
  (``harness/guest/crafted.py``). Every kind ends in a UDP datagram (except
  "fragment", a later fragment of one, and "arp"), so the innermost flow has ports.
- **The dissector** (:func:`dissect`) models what a classic flow-dissecting socket
  filter computes from a frame (802.1AD/802.1Q tags, IPv4, IPv6, GRE, IPIP,
  IPv6-in-IP, then the ports); a sample's oracle runs it over the frames the capture
  saw. It is written step by step like such a program, and keeps its arithmetic:
  an absolute packet load (``load_half``/``load_word``, BPF_LD_ABS/IND) returns the
  network-order bytes as a host-order number, so 127.0.0.2 is ``0x7f000002``, and a
  load past ``skb->len`` ends the program, which then counts nothing.
- **Oracles and plans** a sample's ``sample.py`` is made of: what a counting
  program's map must hold for a capture (:func:`bytes_per_ip_protocol`,
  :func:`per_destination`, :func:`per_flow`), how its keys read
  (:func:`describe_destination`, :func:`describe_flow`), and where its crafted
  frames go (:func:`frame_destinations`, :func:`crafted_traffic`).

What the programs parse, and so what :func:`dissect` parses: Ethernet; an optional
802.1AD tag followed by an optional 802.1Q tag; IPv4 (header length from IHL; a
fragment, first or later, gets IP protocol 0 and so no ports and no tunnel) or IPv6
(fixed header only: extension headers are not followed, the next header is the IP
protocol). One level of tunnel: GRE version 0 without routing (optional checksum,
key and sequence words; payload IPv4 or IPv6, optionally after tags as above), IPIP
(protocol 4) and IPv6 in IP (protocol 41); a program that parses GRE otherwise (one of
the kernel's own samples does) is modelled by naming how, with :class:`GreParse`. Ports
(the first four bytes of the transport header) for TCP and UDP only. A program that
parses by tail calls and keeps its flow record between packets counts for a frame what
the frames before it left: :class:`ChainedParse` models such a program over a capture
in order. An IPv6 address
becomes one 32-bit number, the XOR of its four 32-bit words, each loaded as above.

On ``lo`` the kernel strips the outermost VLAN tag of a received frame before
packet sockets see it (``skb_vlan_untag`` in ``__netif_receive_skb_core``): the
copy seen leaving is tagged, the copy seen arriving has one tag less and is
shorter by 4 bytes. The programs and the capture see the same bytes, so nothing
here models that; it is why an oracle must work on captured frames, not on the
frames that were sent.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from harness.packets import FRAME_KINDS, Fields, Frame, Frames, checksum

ETH_HLEN = 14
VLAN_HLEN = 4
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IPV6 = 0x86DD

IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47

#: The first 16 bits of a GRE header (RFC 2784, RFC 2890), as load_half returns them.
GRE_CSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQ = 0x1000
GRE_VERSION = 0x0007

#: IPv4 ``frag_off``: more fragments, and the offset in 8-byte units.
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

IPV4_HLEN = 20
IPV6_HLEN = 40
UDP_HLEN = 8

#: The MAC address of ``lo``: frames to it are received as PACKET_HOST, like all of lo's traffic.
LOOPBACK_MAC = bytes(6)
#: Ports of every crafted UDP datagram (9 is the discard service: nothing answers on it).
SPORT = 40000
DPORT = 9
#: VLAN ids of the crafted tags: outer (802.1AD) and inner (802.1Q).
OUTER_VID = 200
INNER_VID = 100
#: The GRE key and sequence number the "gre" frames carry.
GRE_KEY_VALUE = 0x0A0B0C0D
GRE_SEQ_VALUE = 1
#: The offset, in 8-byte units, of the crafted later fragment.
FRAGMENT_OFFSET = 185

DEFAULT_SRC4 = "127.0.0.1"
DEFAULT_SRC6 = "::1"

#: Kinds whose innermost packet is IPv6: their destination is an IPv6 address.
IPV6_KINDS = ("ipv6", "ip6ip")


# --- builders --------------------------------------------------------------------------


def ethernet(ethertype: int, body: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """An Ethernet frame to and from lo's address, with VLAN ``tags`` (TPID, TCI), outer first."""
    header = LOOPBACK_MAC + LOOPBACK_MAC
    for tpid, tci in tags:
        header += struct.pack("!HH", tpid, tci)
    return header + struct.pack("!H", ethertype) + body


def ipv4(
    src: str, dst: str, protocol: int, payload: bytes, *, frag_off: int = 0, ident: int = 0
) -> bytes:
    """An IPv4 packet (20-byte header, TTL 64) with its header checksum."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        IPV4_HLEN + len(payload),
        ident,
        frag_off,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    """An IPv6 packet (fixed header, hop limit 64, no extension headers)."""
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def udp(src: str, dst: str, payload: bytes, sport: int = SPORT, dport: int = DPORT) -> bytes:
    """A UDP datagram whose checksum covers the IPv4 or IPv6 pseudo-header of src and dst."""
    length = UDP_HLEN + len(payload)
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if source.version != destination.version:
        raise ValueError(f"UDP from {src} to {dst}: the addresses are not of one IP version")
    if source.version == 4:
        pseudo = source.packed + destination.packed + struct.pack("!BBH", 0, IPPROTO_UDP, length)
    else:
        pseudo = source.packed + destination.packed + struct.pack("!I3xB", length, IPPROTO_UDP)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    total = checksum(pseudo + header + payload) or 0xFFFF  # 0 means "no checksum" in UDP
    return struct.pack("!HHHH", sport, dport, length, total) + payload


def gre(
    protocol: int,
    payload: bytes,
    *,
    with_checksum: bool = False,
    key: int | None = None,
    sequence: int | None = None,
) -> bytes:
    """A GRE version 0 header (optional checksum, key and sequence words) and its payload."""
    flags = (
        (GRE_CSUM if with_checksum else 0)
        | (GRE_KEY if key is not None else 0)
        | (GRE_SEQ if sequence is not None else 0)
    )
    options = b""
    if key is not None:
        options += struct.pack("!I", key)
    if sequence is not None:
        options += struct.pack("!I", sequence)
    if not with_checksum:
        return struct.pack("!HH", flags, protocol) + options + payload
    # The checksum covers the GRE header (checksum field zero) and the payload.
    unsummed = struct.pack("!HHHH", flags, protocol, 0, 0) + options + payload
    return struct.pack("!HHHH", flags, protocol, checksum(unsummed), 0) + options + payload


def arp_request(sender: str, target: str) -> bytes:
    """An ARP request body: who has ``target``, tell ``sender`` (lo's zero MAC)."""
    return (
        struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
        + LOOPBACK_MAC
        + ipaddress.IPv4Address(sender).packed
        + bytes(6)
        + ipaddress.IPv4Address(target).packed
    )


def build(
    kind: str,
    dst: str,
    *,
    payload: int = 64,
    src: str | None = None,
    outer_src: str = DEFAULT_SRC4,
    outer_dst: str = DEFAULT_SRC4,
) -> bytes:
    """One frame of ``kind`` (see :data:`harness.packets.FRAME_KINDS`) to ``dst``.

    ``dst`` and ``src`` are the innermost packet's addresses: IPv6 for the kinds in
    :data:`IPV6_KINDS`, IPv4 otherwise (``src`` defaults to ::1 or 127.0.0.1).
    ``outer_src`` and ``outer_dst`` address the outer IPv4 header of a tunnel.
    ``payload`` is the number of UDP payload bytes (of fragment bytes for
    "fragment"). A :class:`ValueError` names what is wrong with the arguments.
    """
    if payload < 0:
        raise ValueError(f"frame kind {kind}: negative payload size {payload}")
    version = 6 if kind in IPV6_KINDS else 4
    try:
        address = ipaddress.ip_address(dst)
    except ValueError as exc:
        raise ValueError(f"frame kind {kind}: destination {dst!r} is no IP address") from exc
    if address.version != version:
        raise ValueError(
            f"frame kind {kind} carries IPv{version}, but its destination {dst} is IPv"
            f"{address.version}; give an IPv{version} address"
        )
    src = src or (DEFAULT_SRC6 if version == 6 else DEFAULT_SRC4)
    data = bytes(i & 0xFF for i in range(payload))

    def udp4() -> bytes:
        return ipv4(src, dst, IPPROTO_UDP, udp(src, dst, data))

    def udp6() -> bytes:
        return ipv6(src, dst, IPPROTO_UDP, udp(src, dst, data))

    if kind == "vlan":
        return ethernet(ETH_P_IP, udp4(), ((ETH_P_8021Q, INNER_VID),))
    if kind == "qinq":
        return ethernet(ETH_P_IP, udp4(), ((ETH_P_8021AD, OUTER_VID), (ETH_P_8021Q, INNER_VID)))
    if kind == "ipv6":
        return ethernet(ETH_P_IPV6, udp6())
    if kind == "ipip":
        return ethernet(ETH_P_IP, ipv4(outer_src, outer_dst, IPPROTO_IPIP, udp4()))
    if kind == "gre":
        tunnel = gre(
            ETH_P_IP, udp4(), with_checksum=True, key=GRE_KEY_VALUE, sequence=GRE_SEQ_VALUE
        )
        return ethernet(ETH_P_IP, ipv4(outer_src, outer_dst, IPPROTO_GRE, tunnel))
    if kind == "gre-vlan":
        tagged = struct.pack("!HH", INNER_VID, ETH_P_IP) + udp4()
        tunnel = gre(ETH_P_8021Q, tagged, key=GRE_KEY_VALUE)
        return ethernet(ETH_P_IP, ipv4(outer_src, outer_dst, IPPROTO_GRE, tunnel))
    if kind == "ip6ip":
        return ethernet(ETH_P_IP, ipv4(outer_src, outer_dst, IPPROTO_IPV6, udp6()))
    if kind == "fragment":
        # A later fragment (offset set, MF clear): the receiver keeps it for reassembly
        # and, with no first fragment ever coming, drops it silently.
        return ethernet(ETH_P_IP, ipv4(src, dst, IPPROTO_UDP, data, frag_off=FRAGMENT_OFFSET))
    if kind == "arp":
        return ethernet(ETH_P_ARP, arp_request(src, dst))
    raise ValueError(f"unknown frame kind {kind!r}; use one of {', '.join(FRAME_KINDS)}")


# --- the dissector ---------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """What the flow programs compute from one frame.

    Addresses are as the programs hold them: an IPv4 address as the host-order
    number of its four bytes, an IPv6 address folded (:func:`fold_ipv6`).
    """

    src: int
    dst: int
    ip_proto: int  # of the innermost header parsed; 0 for an IPv4 fragment
    sport: int  # 0 unless ip_proto is TCP or UDP and ports were read
    dport: int
    thoff: int  # offset of what follows the last header parsed (the transport header)
    n_proto: int  # ETH_P_IP or ETH_P_IPV6: the innermost network header
    vlans: tuple[int, ...] = ()  # VLAN ids of the tags parsed, outermost first
    outer: tuple[int, int] | None = None  # (src, dst) of the tunnel's outer header

    @property
    def ports(self) -> int:
        """The 32-bit word the programs load at the transport header: sport << 16 | dport."""
        return self.sport << 16 | self.dport


@dataclass(frozen=True)
class GreParse:
    """How a program parses a GRE header; the default is correct (RFC 2784, RFC 2890).

    Each field is one way a program may depart from that, so an oracle can model a
    program that does (a sample whose GRE parse tests flags in host order may depart in
    all four; its descriptor names how) by naming the departure, not by copying the
    dissector:

    - ``flags_host_order``: the flags read with ``load_half`` (host order) are tested
      against masks in network byte order (``<linux/if_tunnel.h>``'s ``GRE_CSUM`` and
      the others are ``__cpu_to_be16``), so on a little-endian machine, the only kind
      the harness boots, every mask is byte-swapped: checksum 0x0080, routing 0x0040,
      key 0x0020, sequence 0x0010, version 0x0700. A header with any of the optional
      words then has them taken for the payload.
    - ``addresses_of_gre``: an IPv4 header carrying GRE gives the flow its addresses.
      False: it leaves them as they were (zero in a fresh flow) and does not load
      them, so a GRE header that is not followed counts under address 0.
    - ``non_ip_counted``: a GRE payload that is neither IPv4 nor IPv6 after its tags
      leaves the flow as the outer header made it. False: the frame counts nothing.
    - ``tags``: the VLAN tags skipped after the GRE header, in order.
    """

    flags_host_order: bool = False
    addresses_of_gre: bool = True
    non_ip_counted: bool = True
    tags: tuple[int, ...] = (ETH_P_8021AD, ETH_P_8021Q)

    def mask(self, flag: int) -> int:
        """The mask the program really tests ``flag`` (one of ``GRE_*`` above) with."""
        if not self.flags_host_order:
            return flag
        return (flag & 0xFF) << 8 | flag >> 8


#: A correct GRE parse: what our own samples do.
CORRECT_GRE = GreParse()


class SnapTooShort(ValueError):
    """The captured head ends before a byte the programs read, though the frame has it."""


class _Abort(Exception):
    """A load past ``skb->len``: the BPF program ends there and counts nothing."""


class _Packet:
    """Absolute loads over a frame's captured head, with the BPF program's bounds."""

    def __init__(self, head: bytes, length: int) -> None:
        self.head = head
        self.length = length

    def _load(self, offset: int, size: int) -> int:
        if offset + size > self.length:
            raise _Abort
        if offset + size > len(self.head):
            raise SnapTooShort(
                f"the program reads bytes {offset}..{offset + size} of a {self.length}-byte "
                f"frame, but only its first {len(self.head)} bytes were captured; "
                "capture more of each frame"
            )
        return int.from_bytes(self.head[offset : offset + size], "big")

    def byte(self, offset: int) -> int:
        return self._load(offset, 1)

    def half(self, offset: int) -> int:
        return self._load(offset, 2)

    def word(self, offset: int) -> int:
        return self._load(offset, 4)


def fold_ipv6(address: bytes | str) -> int:
    """An IPv6 address as the programs key it: the XOR of its four words, each host order."""
    packed = ipaddress.IPv6Address(address).packed
    words: tuple[int, ...] = struct.unpack("!IIII", packed)
    return words[0] ^ words[1] ^ words[2] ^ words[3]


def ipv4_key(address: str) -> int:
    """An IPv4 address as the programs hold it (what load_word returns): 127.0.0.2 -> 0x7f000002."""
    return int(ipaddress.IPv4Address(address))


def show_ipv4(value: int) -> str:
    """A 32-bit address value as a dotted quad (an IPv6 fold shows as one too)."""
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


@dataclass
class _State:
    nhoff: int
    src: int = 0
    dst: int = 0
    ip_proto: int = 0
    n_proto: int = 0


def _skip_tags(
    packet: _Packet,
    proto: int,
    nhoff: int,
    vlans: list[int],
    tpids: tuple[int, ...] = (ETH_P_8021AD, ETH_P_8021Q),
) -> tuple[int, int]:
    """An optional tag of each of ``tpids`` in turn (802.1AD, then 802.1Q):
    (ethertype after them, offset)."""
    for tpid in tpids:
        if proto == tpid:
            vlans.append(packet.half(nhoff) & 0x0FFF)
            proto = packet.half(nhoff + 2)
            nhoff += VLAN_HLEN
    return proto, nhoff


def _parse_ipv4(packet: _Packet, state: _State, gre: GreParse) -> None:
    nhoff = state.nhoff
    ihl = packet.byte(nhoff) & 0x0F
    state.ip_proto = packet.byte(nhoff + 9)
    if packet.half(nhoff + 6) & (IP_MF | IP_OFFSET):
        state.ip_proto = 0
    if state.ip_proto != IPPROTO_GRE or gre.addresses_of_gre:
        state.src = packet.word(nhoff + 12)
        state.dst = packet.word(nhoff + 16)
    state.n_proto = ETH_P_IP
    state.nhoff = nhoff + ihl * 4


def _parse_ipv6(packet: _Packet, state: _State) -> None:
    nhoff = state.nhoff
    state.ip_proto = packet.byte(nhoff + 6)
    words = [packet.word(nhoff + 8 + 4 * i) for i in range(8)]
    state.src = words[0] ^ words[1] ^ words[2] ^ words[3]
    state.dst = words[4] ^ words[5] ^ words[6] ^ words[7]
    state.n_proto = ETH_P_IPV6
    state.nhoff = nhoff + IPV6_HLEN


def _parse_network(packet: _Packet, proto: int, state: _State, gre: GreParse) -> bool:
    """Parse the IPv4 or IPv6 header at ``state.nhoff``; False for any other ethertype."""
    if proto == ETH_P_IP:
        _parse_ipv4(packet, state, gre)
    elif proto == ETH_P_IPV6:
        _parse_ipv6(packet, state)
    else:
        return False
    return True


def dissect(
    head: bytes, length: int | None = None, *, ports: bool = True, gre: GreParse = CORRECT_GRE
) -> Flow | None:
    """The flow the programs compute from a frame, or None where they count nothing.

    ``head`` is the frame's first bytes, ``length`` its full length (``skb->len``;
    default ``len(head)``). None for a frame that is neither IPv4 nor IPv6 after its
    tags, and for one that ends before a byte the programs load (they stop there).
    ``ports=False`` models a program that never loads the ports (one keyed on the
    destination only), so a frame ending at its transport header still counts.
    ``gre`` says how the program parses GRE (:class:`GreParse`; by default correctly).
    A :class:`SnapTooShort` if the head was cut before a byte the frame has.
    """
    packet = _Packet(head, len(head) if length is None else length)
    try:
        return _dissect(packet, ports, gre)
    except _Abort:
        return None


def _dissect(packet: _Packet, read_ports: bool, gre: GreParse) -> Flow | None:
    vlans: list[int] = []
    proto, nhoff = _skip_tags(packet, packet.half(12), ETH_HLEN, vlans)
    state = _State(nhoff)
    if not _parse_network(packet, proto, state, gre):
        return None
    outer: tuple[int, int] | None = None
    if state.ip_proto == IPPROTO_GRE:
        flags = packet.half(state.nhoff)
        proto = packet.half(state.nhoff + 2)
        if not flags & (gre.mask(GRE_VERSION) | gre.mask(GRE_ROUTING)):
            state.nhoff += 4
            for flag in (GRE_CSUM, GRE_KEY, GRE_SEQ):
                if flags & gre.mask(flag):
                    state.nhoff += 4
            proto, state.nhoff = _skip_tags(packet, proto, state.nhoff, vlans, gre.tags)
            if proto in (ETH_P_IP, ETH_P_IPV6):
                outer = (state.src, state.dst)
                _parse_network(packet, proto, state, gre)
            elif not gre.non_ip_counted:
                return None
    elif state.ip_proto in (IPPROTO_IPIP, IPPROTO_IPV6):
        outer = (state.src, state.dst)
        inner = ETH_P_IP if state.ip_proto == IPPROTO_IPIP else ETH_P_IPV6
        _parse_network(packet, inner, state, gre)
    sport = dport = 0
    if read_ports and state.ip_proto in (IPPROTO_TCP, IPPROTO_UDP):
        word = packet.word(state.nhoff)
        sport, dport = word >> 16, word & 0xFFFF
    return Flow(
        src=state.src,
        dst=state.dst,
        ip_proto=state.ip_proto,
        sport=sport,
        dport=dport,
        thoff=state.nhoff,
        n_proto=state.n_proto,
        vlans=tuple(vlans),
        outer=outer,
    )


# --- oracles and plans -----------------------------------------------------------------

#: Where a filter reading the IP protocol finds it: ETH_HLEN + offsetof(struct iphdr, protocol).
PROTOCOL_OFFSET = ETH_HLEN + 9
IPPROTO_ICMPV6 = 58
#: How :func:`describe_flow` names an IP protocol.
PROTOCOL_NAMES = {
    IPPROTO_ICMP: "icmp",
    IPPROTO_TCP: "tcp",
    IPPROTO_UDP: "udp",
    IPPROTO_GRE: "gre",
    IPPROTO_ICMPV6: "icmpv6",
}


def bytes_per_ip_protocol(
    captured: Iterable[Frame], pkt_types: Collection[int] | None = None
) -> dict[Fields, Fields]:
    """Every IPv4 frame's length added under its IP protocol: ``{(protocol,): (bytes,)}``.

    The entries of an array indexed by the byte at :data:`PROTOCOL_OFFSET`. Only
    frames whose EtherType is IPv4 are attributed, so a program that counts that
    byte of any frame shows the difference. ``pkt_types`` keeps only frames of
    those packet types (``(PACKET_OUTGOING,)``: each packet on ``lo`` once); None
    keeps every frame.
    """
    counts: dict[Fields, Fields] = {}
    for frame in captured:
        if pkt_types is not None and frame.pkt_type not in pkt_types:
            continue
        if len(frame.head) <= PROTOCOL_OFFSET:
            continue
        if int.from_bytes(frame.head[12:14], "big") != ETH_P_IP:
            continue
        key = (frame.head[PROTOCOL_OFFSET],)
        (total,) = counts.get(key, (0,))
        assert isinstance(total, int)
        counts[key] = (total + frame.length,)
    return counts


def _count(counts: dict[Fields, Fields], key: Fields, length: int) -> None:
    packets, total = counts.get(key, (0, 0))
    assert isinstance(packets, int) and isinstance(total, int)
    counts[key] = (packets + 1, total + length)


def per_destination(
    captured: Iterable[Frame], *, gre: GreParse = CORRECT_GRE
) -> dict[Fields, Fields]:
    """Packets and bytes of every frame :func:`dissect` takes for IP, per innermost destination.

    ``{(dst,): (packets, bytes)}``, keyed as :func:`destination_key` keys. The
    model of a program that never loads the ports (``dissect(ports=False)``): a
    frame that ends at its transport header still counts. ``gre``: how the
    program parses GRE (:class:`GreParse`).
    """
    counts: dict[Fields, Fields] = {}
    for frame in captured:
        flow = dissect(frame.head, frame.length, ports=False, gre=gre)
        if flow is not None:
            _count(counts, (flow.dst,), frame.length)
    return counts


def flow_key(flow: Flow) -> Fields:
    """The 5-tuple a flow program keys on: ``(src, dst, sport, dport, ip_proto)``."""
    return (flow.src, flow.dst, flow.sport, flow.dport, flow.ip_proto)


def per_flow(captured: Iterable[Frame]) -> dict[Fields, Fields]:
    """Packets and bytes of every frame :func:`dissect` takes for IP, per innermost flow.

    ``{flow_key: (packets, bytes)}`` (see :func:`flow_key`); a frame that ends
    before its ports counts nothing, as the program stops there.
    """
    counts: dict[Fields, Fields] = {}
    for frame in captured:
        flow = dissect(frame.head, frame.length)
        if flow is not None:
            _count(counts, flow_key(flow), frame.length)
    return counts


# --- a parse chained by tail calls, its flow record kept between packets --------------

ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
#: The bottom-of-stack bit of an MPLS label stack entry, in the word load_word returns.
MPLS_LS_S_MASK = 0x00000100
MPLS_HLEN = 4
#: Tail calls :class:`ChainedParse` follows for one frame. The kernel allows 32 or 33
#: (MAX_TAIL_CALL_CNT went from 32 to 33 in 5.17, and what it counts with it moved);
#: a frame needing more is beyond the model rather than guessed at.
TAIL_CALLS = 32


class UnmodelledFrame(ValueError):
    """A frame the model cannot say what the program makes of (too many tail calls)."""


@dataclass(frozen=True)
class ChainedParse:
    """How a tail-called flow parser with a per-CPU record counts frames, in order.

    The model of a parse as the kernel's own samples/bpf have written one (a sample's
    descriptor says when it applies, from the release's source).

    Its parse is split into programs chained by tail calls through a prog array, each
    dispatching on the ethertype it found (``parse_eth_proto``): a VLAN tag (802.1Q or
    802.1AD, any number, in any order; one tail call each), an MPLS label, IPv4, IPv6. The
    flow record they fill (``src``, ``dst``, ``ports``, ``ip_proto``) is not the packet's
    own: it is one entry of an array map per CPU (``this_cpu_globals()``), zero when the
    object is loaded and **kept between packets**. What it does with a frame, in order:

    - IPv4: a fragment (first or later) ends the parse, counting nothing; else the IP
      protocol, then the addresses unless the protocol is GRE; IPv6: the next header
      (extension headers are not followed) and both addresses, folded (:func:`fold_ipv6`);
    - then by the IP protocol: GRE version 0 without routing skips its header (4 bytes,
      and 4 per optional word its flags announce) and dispatches its protocol as above;
      IPIP and IPv6-in-IP dispatch the inner header; TCP and UDP load the ports (the first
      word of the transport header) into the record, and are counted; ICMP is counted
      **without setting the ports** (``case IPPROTO_ICMP`` follows the ports' load); any
      other protocol (ICMPv6 among them) counts nothing;
    - a frame that is not IP after its tags, or whose tunnel payload is not, counts
      nothing, and so does one that ends before a byte the programs load (the load ends
      the program; what it stored in the record before stays).

    Counted is the whole record, with ``skb->len``. The addresses and protocol are always
    the counted packet's own (set on the way to any count), so what another packet left
    shows only in the ports: an ICMP packet is counted under the ports of the last TCP or
    UDP packet counted on the same CPU, and under port 0 if there was none. The capture
    does not say which CPU ran the program for a frame; the model stands for one CPU
    seeing every frame in the capture's order, which the guest arranges by running the
    traffic on one CPU (:func:`harness.guest.traffic.on_one_cpu`).

    Each field is one thing a release's source says (its descriptor reads it there):

    - ``icmp_keeps_ports``: ICMP is counted under the ports the record holds (as above);
      False: under port 0, as a program would count it whose record is fresh per packet
      or whose ICMP case clears the ports;
    - ``gre_flags_host_order``: the GRE flags read with ``load_half`` are tested against
      ``<linux/if_tunnel.h>``'s big-endian masks (:class:`GreParse`'s
      ``flags_host_order``): on x86 no optional word is skipped and a GRE header with
      any is parsed from the first of them.

    MPLS is followed as the programs write it: after a label with the bottom-of-stack bit,
    the next header is IPv4 if ``(first byte & 0xf0) == 4``, which no byte is (the version
    is not shifted down), so always IPv6; after any other label, another label.
    """

    icmp_keeps_ports: bool = True
    gre_flags_host_order: bool = True

    def count(self, captured: Iterable[Frame]) -> dict[Fields, Fields]:
        """Packets and bytes per flow after every frame of ``captured``, in order, from a
        fresh record: ``{flow_key: (packets, bytes)}`` (as :func:`per_flow`)."""
        record = FlowRecord()
        counts: dict[Fields, Fields] = {}
        for frame in captured:
            key = self.parse(frame.head, frame.length, record)
            if key is not None:
                _count(counts, key, frame.length)
        return counts

    def parse(self, head: bytes, length: int, record: FlowRecord) -> Fields | None:
        """The :func:`flow_key` one frame is counted under (None: not counted), updating
        ``record`` as the programs update theirs. :class:`SnapTooShort` as
        :func:`dissect`; :class:`UnmodelledFrame` past :data:`TAIL_CALLS` tail calls."""
        packet = _Packet(head, length)
        try:
            return self._parse(packet, record)
        except _Abort:
            return None

    def _parse(self, packet: _Packet, record: FlowRecord) -> Fields | None:
        gre = GreParse(flags_host_order=self.gre_flags_host_order)
        proto, nhoff = packet.half(12), ETH_HLEN
        for _ in range(TAIL_CALLS):  # each pass is one tail call, to the program for proto
            if proto in (ETH_P_8021Q, ETH_P_8021AD):
                proto = packet.half(nhoff + 2)
                nhoff += VLAN_HLEN
                continue
            if proto in (ETH_P_MPLS_UC, ETH_P_MPLS_MC):
                label = packet.word(nhoff)
                nhoff += MPLS_HLEN
                if not label & MPLS_LS_S_MASK:
                    proto = ETH_P_MPLS_UC
                else:
                    proto = ETH_P_IP if (packet.byte(nhoff) & 0xF0) == 4 else ETH_P_IPV6
                continue
            if proto == ETH_P_IP:
                if packet.half(nhoff + 6) & (IP_MF | IP_OFFSET):
                    return None
                ip_proto = packet.byte(nhoff + 9)
                if ip_proto != IPPROTO_GRE:
                    record.src = packet.word(nhoff + 12)
                    record.dst = packet.word(nhoff + 16)
                nhoff += (packet.byte(nhoff) & 0x0F) << 2
            elif proto == ETH_P_IPV6:
                ip_proto = packet.byte(nhoff + 6)
                record.src = _folded(packet, nhoff + 8)
                record.dst = _folded(packet, nhoff + 24)
                nhoff += IPV6_HLEN
            else:
                return None  # no program for it: the dispatch falls through
            # The IP protocol, as parse_ip_proto() switches on it.
            if ip_proto == IPPROTO_GRE:
                flags, proto = packet.half(nhoff), packet.half(nhoff + 2)
                if flags & (gre.mask(GRE_VERSION) | gre.mask(GRE_ROUTING)):
                    return None
                nhoff += 4
                nhoff += 4 * sum(1 for f in (GRE_CSUM, GRE_KEY, GRE_SEQ) if flags & gre.mask(f))
            elif ip_proto == IPPROTO_IPIP:
                proto = ETH_P_IP
            elif ip_proto == IPPROTO_IPV6:
                proto = ETH_P_IPV6
            elif ip_proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP):
                if ip_proto != IPPROTO_ICMP:
                    record.ports = packet.word(nhoff)
                elif not self.icmp_keeps_ports:
                    record.ports = 0
                record.ip_proto = ip_proto
                return record.key()
            else:
                return None
        raise UnmodelledFrame(
            f"a frame of {packet.length} bytes needs more than {TAIL_CALLS} tail calls to "
            "parse; the kernel's limit differs by release, so the model does not follow it"
        )


@dataclass
class FlowRecord:
    """The flow record a :class:`ChainedParse` keeps between frames (zero when loaded)."""

    src: int = 0
    dst: int = 0
    ports: int = 0  # sport << 16 | dport, as load_word returns the transport header's word
    ip_proto: int = 0

    def key(self) -> Fields:
        return (self.src, self.dst, self.ports >> 16, self.ports & 0xFFFF, self.ip_proto)


def _folded(packet: _Packet, offset: int) -> int:
    """An IPv6 address at ``offset`` folded as the programs fold it: every word loaded first."""
    words = [packet.word(offset + 4 * i) for i in range(4)]
    return words[0] ^ words[1] ^ words[2] ^ words[3]


def destination_key(address: str) -> Fields:
    """The key of ``address`` in :func:`per_destination`: IPv4's value, or IPv6's fold."""
    if ":" in address:
        return (fold_ipv6(address),)
    return (ipv4_key(address),)


def describe_destination(key: Fields) -> str:
    """A :func:`per_destination` key as a dotted quad (an IPv6 fold shows as one too)."""
    (value,) = key
    assert isinstance(value, int)
    return show_ipv4(value)


def describe_flow(key: Fields) -> str:
    """A :func:`flow_key` as ``SRC:SPORT -> DST:DPORT PROTOCOL``."""
    src, dst, sport, dport, ip_proto = key
    assert isinstance(src, int) and isinstance(dst, int) and isinstance(ip_proto, int)
    assert isinstance(sport, int) and isinstance(dport, int)
    protocol = PROTOCOL_NAMES.get(ip_proto, f"proto {ip_proto}")
    return f"{show_ipv4(src)}:{sport} -> {show_ipv4(dst)}:{dport} {protocol}"


def frame_destinations(first_ipv4_host: int) -> dict[str, str]:
    """A destination of its own for each frame kind, so each is an entry of its own.

    The N-th kind of :data:`harness.packets.FRAME_KINDS` goes to
    127.0.0.(``first_ipv4_host`` + N), or to fd00::N for an IPv6 kind.
    """
    return {
        kind: f"fd00::{n}" if kind in IPV6_KINDS else f"127.0.0.{first_ipv4_host + n}"
        for n, kind in enumerate(FRAME_KINDS)
    }


def crafted_traffic(destinations: Mapping[str, str], count: int) -> tuple[Frames, ...]:
    """``count`` crafted frames of each kind, to its destination in ``destinations``."""
    return tuple(Frames(kind, count, dst=dst) for kind, dst in destinations.items())


def crafted_flow_key(kind: str, dst: str) -> Fields:
    """The :func:`flow_key` of the crafted frames of ``kind`` to ``dst`` (default source)."""
    flow = dissect(build(kind, dst))
    if flow is None:
        raise ValueError(f"frame kind {kind} carries no flow the programs count")
    return flow_key(flow)
