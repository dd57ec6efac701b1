"""harness/frames.py: the crafted frames against a reference parse, and the dissector per kind.

The reference parse here is deliberately not the dissector: it reads each kind at
the offsets its layout fixes (written out by hand below) and verifies every length
and checksum with its own one's-complement sum.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from harness import frames, packets
from harness.errors import TrafficError
from harness.guest import crafted
from harness.packets import FRAME_KINDS, Frame, Frames

DST4 = "127.0.0.9"
DST6 = "fd00::9"
PAYLOAD = 64
HOST = 0x7F000001  # 127.0.0.1 as load_word returns it
DST4_VALUE = 0x7F000009
DST6_FOLD = 0xFD000009  # fd00:: ^ 0 ^ 0 ^ 9
LOOPBACK6_FOLD = 1  # ::1


def ones_sum(data: bytes) -> int:
    """The 16-bit one's-complement sum: a header with a right checksum sums to 0xffff."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def build(kind: str, payload: int = PAYLOAD) -> bytes:
    return frames.build(kind, DST6 if kind in frames.IPV6_KINDS else DST4, payload=payload)


def check_ipv4(frame: bytes, at: int, protocol: int, src: str, dst: str) -> None:
    header = frame[at : at + 20]
    assert header[0] == 0x45
    assert struct.unpack_from("!H", header, 2)[0] == len(frame) - at
    assert header[9] == protocol
    assert header[12:16] == socket.inet_aton(src)
    assert header[16:20] == socket.inet_aton(dst)
    assert ones_sum(header) == 0xFFFF


def check_ipv6(frame: bytes, at: int, src: str, dst: str) -> None:
    assert frame[at] >> 4 == 6
    assert struct.unpack_from("!H", frame, at + 4)[0] == len(frame) - at - 40
    assert frame[at + 6] == 17
    assert frame[at + 8 : at + 24] == socket.inet_pton(socket.AF_INET6, src)
    assert frame[at + 24 : at + 40] == socket.inet_pton(socket.AF_INET6, dst)


def check_udp(frame: bytes, at: int, ip_at: int) -> None:
    sport, dport, length, _ = struct.unpack_from("!HHHH", frame, at)
    assert (sport, dport) == (frames.SPORT, frames.DPORT)
    assert length == len(frame) - at == 8 + PAYLOAD
    assert frame[at + 8 :] == bytes(range(PAYLOAD))
    if frame[ip_at] >> 4 == 4:
        pseudo = frame[ip_at + 12 : ip_at + 20] + struct.pack("!HH", 17, length)
    else:
        pseudo = frame[ip_at + 8 : ip_at + 40] + struct.pack("!IHH", length, 0, 17)
    assert ones_sum(pseudo + frame[at:]) == 0xFFFF


def test_ethernet_header_is_lo_to_lo() -> None:
    for kind in FRAME_KINDS:
        assert build(kind)[:12] == bytes(12), kind


def test_vlan() -> None:
    frame = build("vlan")
    assert frame[12:18] == bytes.fromhex("8100 0064 0800")
    check_ipv4(frame, 18, 17, "127.0.0.1", DST4)
    check_udp(frame, 38, 18)


def test_qinq() -> None:
    frame = build("qinq")
    assert frame[12:22] == bytes.fromhex("88a8 00c8 8100 0064 0800")
    check_ipv4(frame, 22, 17, "127.0.0.1", DST4)
    check_udp(frame, 42, 22)


def test_ipv6() -> None:
    frame = build("ipv6")
    assert frame[12:14] == bytes.fromhex("86dd")
    check_ipv6(frame, 14, "::1", DST6)
    check_udp(frame, 54, 14)


def test_ipip() -> None:
    frame = build("ipip")
    check_ipv4(frame, 14, 4, "127.0.0.1", "127.0.0.1")
    check_ipv4(frame, 34, 17, "127.0.0.1", DST4)
    check_udp(frame, 54, 34)


def test_gre_with_checksum_key_and_sequence() -> None:
    frame = build("gre")
    check_ipv4(frame, 14, 47, "127.0.0.1", "127.0.0.1")
    flags, protocol, _, reserved, key, sequence = struct.unpack_from("!HHHHII", frame, 34)
    assert (flags, protocol, reserved) == (0xB000, 0x0800, 0)
    assert (key, sequence) == (frames.GRE_KEY_VALUE, frames.GRE_SEQ_VALUE)
    assert ones_sum(frame[34:]) == 0xFFFF  # the GRE checksum covers header and payload
    check_ipv4(frame, 50, 17, "127.0.0.1", DST4)
    check_udp(frame, 70, 50)


def test_gre_carrying_a_vlan_tag() -> None:
    frame = build("gre-vlan")
    check_ipv4(frame, 14, 47, "127.0.0.1", "127.0.0.1")
    assert frame[34:46] == bytes.fromhex("2000 8100 0a0b0c0d 0064 0800")
    check_ipv4(frame, 46, 17, "127.0.0.1", DST4)
    check_udp(frame, 66, 46)


def test_ipv6_in_ipv4() -> None:
    frame = build("ip6ip")
    check_ipv4(frame, 14, 41, "127.0.0.1", "127.0.0.1")
    check_ipv6(frame, 34, "::1", DST6)
    check_udp(frame, 74, 34)


def test_fragment_is_a_later_fragment() -> None:
    frame = build("fragment")
    check_ipv4(frame, 14, 17, "127.0.0.1", DST4)
    assert struct.unpack_from("!H", frame, 20)[0] == frames.FRAGMENT_OFFSET  # MF clear
    assert frame[34:] == bytes(range(PAYLOAD))


def test_arp_request() -> None:
    frame = build("arp")
    assert len(frame) == 42
    assert frame[12:22] == bytes.fromhex("0806 0001 0800 06 04 0001")
    assert frame[28:32] == socket.inet_aton("127.0.0.1")
    assert frame[38:42] == socket.inet_aton(DST4)


def test_payload_size_sets_the_frame_length() -> None:
    assert len(build("vlan", payload=1000)) - len(build("vlan", payload=0)) == 1000
    assert len(build("ipv6", payload=3)) == 14 + 40 + 8 + 3


def test_checksum_of_a_known_block() -> None:
    # RFC 1071, section 3: the sum of these words is 0xddf2; the checksum its complement.
    assert packets.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


@pytest.mark.parametrize(
    ("kind", "dst", "message"),
    [
        ("vlan", "fd00::1", "IPv4, but its destination fd00::1 is IPv6"),
        ("ipv6", "127.0.0.2", "IPv6, but its destination 127.0.0.2 is IPv4"),
        ("gre", "localhost", "no IP address"),
        ("mpls", "127.0.0.2", "unknown frame kind"),
    ],
)
def test_build_refuses_what_it_cannot_make(kind: str, dst: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frames.build(kind, dst)


# --- the dissector ---------------------------------------------------------------------

UDP4 = {"src": HOST, "dst": DST4_VALUE, "ip_proto": 17, "sport": 40000, "dport": 9}
UDP6 = {"src": LOOPBACK6_FOLD, "dst": DST6_FOLD, "ip_proto": 17, "sport": 40000, "dport": 9}
EXPECTED: dict[str, dict[str, Any]] = {
    "vlan": {**UDP4, "thoff": 38, "n_proto": 0x0800, "vlans": (100,), "outer": None},
    "qinq": {**UDP4, "thoff": 42, "n_proto": 0x0800, "vlans": (200, 100), "outer": None},
    "ipv6": {**UDP6, "thoff": 54, "n_proto": 0x86DD, "vlans": (), "outer": None},
    "ipip": {**UDP4, "thoff": 54, "n_proto": 0x0800, "vlans": (), "outer": (HOST, HOST)},
    "gre": {**UDP4, "thoff": 70, "n_proto": 0x0800, "vlans": (), "outer": (HOST, HOST)},
    "gre-vlan": {**UDP4, "thoff": 66, "n_proto": 0x0800, "vlans": (100,), "outer": (HOST, HOST)},
    "ip6ip": {**UDP6, "thoff": 74, "n_proto": 0x86DD, "vlans": (), "outer": (HOST, HOST)},
    "fragment": {
        **UDP4,
        "ip_proto": 0,
        "sport": 0,
        "dport": 0,
        "thoff": 34,
        "n_proto": 0x0800,
        "vlans": (),
        "outer": None,
    },
}


def test_every_kind_has_an_expected_flow() -> None:
    assert set(EXPECTED) | {"arp"} == set(FRAME_KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_dissect_each_kind(kind: str) -> None:
    assert frames.dissect(build(kind)) == frames.Flow(**EXPECTED[kind])


def test_arp_is_not_counted() -> None:
    assert frames.dissect(build("arp")) is None


def test_received_copy_without_its_outer_tag() -> None:
    # On lo the kernel strips the outer tag of the arriving copy: 4 bytes fewer.
    sent = build("qinq")
    received = sent[:12] + sent[16:]
    flow = frames.dissect(received)
    assert flow is not None
    assert (flow.dst, flow.vlans, flow.thoff, flow.sport) == (DST4_VALUE, (100,), 38, 40000)


def test_ipv4_options_move_the_transport_header() -> None:
    inner = frames.ipv4("127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"))
    with_options = bytes([0x46]) + inner[1:20] + b"\x01\x01\x01\x00" + inner[20:]
    flow = frames.dissect(frames.ethernet(frames.ETH_P_IP, with_options))
    assert flow is not None
    assert (flow.thoff, flow.sport, flow.dport) == (14 + 24, 40000, 9)


def test_first_fragment_gets_no_ports_either() -> None:
    packet = frames.ipv4(
        "127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"), frag_off=frames.IP_MF
    )
    flow = frames.dissect(frames.ethernet(frames.ETH_P_IP, packet))
    assert flow is not None
    assert (flow.ip_proto, flow.sport, flow.dport) == (0, 0, 0)


def test_fragment_carrying_a_tunnel_protocol_is_not_entered() -> None:
    inner = frames.ipv4("127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"))
    outer = frames.ipv4("127.0.0.1", "127.0.0.7", 4, inner, frag_off=frames.IP_MF)
    flow = frames.dissect(frames.ethernet(frames.ETH_P_IP, outer))
    assert flow is not None
    assert (flow.dst, flow.ip_proto, flow.outer) == (0x7F000007, 0, None)


def test_only_one_tunnel_is_entered() -> None:
    innermost = frames.ipv4("127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"))
    middle = frames.ipv4("127.0.0.1", "127.0.0.8", 4, innermost)
    outer = frames.ipv4("127.0.0.1", "127.0.0.7", 4, middle)
    flow = frames.dissect(frames.ethernet(frames.ETH_P_IP, outer))
    assert flow is not None
    assert (flow.dst, flow.ip_proto, flow.thoff) == (0x7F000008, 4, 54)


@pytest.mark.parametrize(
    ("flags", "protocol", "thoff"),
    [
        (frames.GRE_ROUTING, frames.ETH_P_IP, 34),  # routing: not entered, nothing skipped
        (1, frames.ETH_P_IP, 34),  # version 1 (PPTP): likewise
        (0, 0x6558, 38),  # transparent Ethernet bridging: header skipped, no inner flow
    ],
)
def test_gre_not_entered_keeps_the_outer_flow(flags: int, protocol: int, thoff: int) -> None:
    inner = frames.ipv4("127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"))
    tunnel = struct.pack("!HH", flags, protocol) + inner
    outer = frames.ipv4("127.0.0.1", "127.0.0.7", 47, tunnel)
    flow = frames.dissect(frames.ethernet(frames.ETH_P_IP, outer))
    assert flow is not None
    assert (flow.dst, flow.ip_proto, flow.thoff, flow.sport, flow.outer) == (
        0x7F000007,
        47,
        thoff,
        0,
        None,
    )


def test_a_frame_cut_inside_a_header_is_not_counted() -> None:
    frame = build("gre")
    assert frames.dissect(frame, 50 + 19) is None  # the inner IPv4 header lacks a byte
    assert frames.dissect(frame[: 50 + 20], ports=False) is not None


def test_ports_past_the_end_stop_only_a_program_that_reads_them() -> None:
    frame = build("vlan")[:38]  # ends where the UDP header would begin
    assert frames.dissect(frame) is None
    flow = frames.dissect(frame, ports=False)
    assert flow is not None
    assert (flow.dst, flow.sport) == (DST4_VALUE, 0)


def test_a_head_cut_before_a_byte_the_frame_has_is_an_error() -> None:
    frame = build("ip6ip")
    with pytest.raises(frames.SnapTooShort, match="only its first 60 bytes"):
        frames.dissect(frame[:60], len(frame))


def test_addresses_as_the_programs_hold_them() -> None:
    assert frames.ipv4_key("127.0.0.2") == 0x7F000002
    assert frames.fold_ipv6("fd00::2") == 0xFD000002
    assert frames.fold_ipv6("1:2:3:4:5:6:7:8") == 0x00010002 ^ 0x00030004 ^ 0x00050006 ^ 0x00070008
    assert frames.show_ipv4(0x7F000002) == "127.0.0.2"


# --- writing frames (harness/guest/crafted.py) -------------------------------------------


class FakeSocket:
    """Stands in for an AF_PACKET socket: records what is bound and sent."""

    def __init__(self, sent: list[bytes], bound: list[tuple[str, int]], fail: OSError | None):
        self.sent, self.bound, self.fail = sent, bound, fail

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.bound.append(address)

    def send(self, data: bytes) -> int:
        if self.fail is not None and len(self.sent) == 2:
            raise self.fail
        self.sent.append(data)
        return len(data)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[bytes], list[tuple[str, int]]]]:
    frames_sent: list[bytes] = []
    bound: list[tuple[str, int]] = []

    def fake(family: int, kind: int, protocol: int) -> FakeSocket:
        assert (family, kind, protocol) == (socket.AF_PACKET, socket.SOCK_RAW, 0)
        return FakeSocket(frames_sent, bound, None)

    monkeypatch.setattr("harness.guest.crafted.socket.socket", fake)
    yield frames_sent, bound


def test_send_frames_writes_count_frames_on_the_interface(
    sent: tuple[list[bytes], list[tuple[str, int]]],
) -> None:
    frames_sent, bound = sent

    count = crafted.send_frames(Frames("gre", 3, dst="127.0.0.5", payload=10), "lo")

    assert count == 3
    assert bound == [("lo", 0)]
    assert frames_sent == [frames.build("gre", "127.0.0.5", payload=10)] * 3


def test_send_frames_with_a_bad_destination(
    sent: tuple[list[bytes], list[tuple[str, int]]],
) -> None:
    with pytest.raises(TrafficError, match=r"cannot build ipv6 frames to 127\.0\.0\.1"):
        crafted.send_frames(Frames("ipv6", 1))
    assert sent == ([], [])


def test_send_frames_without_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: int) -> FakeSocket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("harness.guest.crafted.socket.socket", refuse)
    with pytest.raises(TrafficError, match="run as root"):
        crafted.send_frames(Frames("vlan", 1))


def test_send_frames_says_how_far_it_got(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []
    down = OSError(100, "Network is down")
    monkeypatch.setattr(
        "harness.guest.crafted.socket.socket", lambda *a: FakeSocket(written, [], down)
    )
    with pytest.raises(TrafficError, match=r"after 2 of 5: Network is down; check that lo is up"):
        crafted.send_frames(Frames("arp", 5))


# --- a GRE parse that departs from a correct one (GreParse) ------------------------

#: The kernel's own sockex2's GRE parse, as samples/sockex2-btf/sample.py names it.
HOST_ORDER = frames.GreParse(
    flags_host_order=True, addresses_of_gre=False, non_ip_counted=False, tags=(0x8100,)
)


def gre_frame(flags: int, protocol: int = frames.ETH_P_IP, body: bytes | None = None) -> bytes:
    """IPv4 127.0.0.1 -> 127.0.0.7 carrying a 4-byte GRE header of ``flags`` and ``body``
    (default: IPv4 to DST4 carrying UDP): GRE at 34, its payload at 38."""
    if body is None:
        body = frames.ipv4("127.0.0.1", DST4, 17, frames.udp("127.0.0.1", DST4, b"x"))
    tunnel = struct.pack("!HH", flags, protocol) + body
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", "127.0.0.7", 47, tunnel))


def test_host_order_masks_are_the_flags_byte_swapped() -> None:
    assert [HOST_ORDER.mask(f) for f in (0x8000, 0x4000, 0x2000, 0x1000, 0x0007)] == [
        0x0080,
        0x0040,
        0x0020,
        0x0010,
        0x0700,
    ]
    assert [frames.CORRECT_GRE.mask(f) for f in (0x8000, 0x0007)] == [0x8000, 0x0007]


def test_a_gre_header_without_optional_words_parses_alike() -> None:
    frame = gre_frame(0)
    for gre in (frames.CORRECT_GRE, HOST_ORDER):
        flow = frames.dissect(frame, gre=gre)
        assert flow is not None
        assert (flow.dst, flow.ip_proto, flow.sport, flow.dport, flow.thoff) == (
            DST4_VALUE,
            17,
            40000,
            9,
            14 + 20 + 4 + 20,
        )


def test_host_order_flags_take_checksum_key_and_sequence_for_the_payload() -> None:
    # GRE at 34 (flags 0xb000), its checksum word at 38, key 0x0a0b0c0d at 42, sequence
    # at 46, the inner IPv4 header at 50. Not skipping them, the program reads an IPv4
    # header at 38: its frag_off (44..46) is the key's low half, 0x0c0d, so a fragment
    # (protocol 0); its source (50..54) is the inner header's first word, 0x45 0x00 and
    # the inner length 92; its destination (54..58) the inner id and frag_off, 0.
    frame = build("gre")
    flow = frames.dissect(frame, gre=HOST_ORDER)
    assert flow is not None
    assert (flow.src, flow.dst, flow.ip_proto, flow.sport) == (0x4500005C, 0, 0, 0)
    correct = frames.dissect(frame)
    assert correct is not None and correct.dst == DST4_VALUE


def test_host_order_flags_take_the_key_for_a_vlan_tag_and_count_nothing() -> None:
    # Key not skipped: the 802.1Q "tag" at 38 is the key, its ethertype 0x0c0d: not IP.
    assert frames.dissect(build("gre-vlan"), gre=HOST_ORDER) is None
    with_bridging = gre_frame(0, 0x6558)  # a payload not IP, the header read right
    assert frames.dissect(with_bridging, gre=HOST_ORDER) is None
    flow = frames.dissect(with_bridging)
    assert flow is not None and (flow.dst, flow.ip_proto) == (0x7F000007, 47)


@pytest.mark.parametrize(
    ("flags", "correct_dst", "host_order_dst"),
    [
        (frames.GRE_ROUTING, 0x7F000007, DST4_VALUE),  # 0x4000 tested as 0x0040: followed
        (0x0040, DST4_VALUE, 0),  # what it takes for routing: not followed, addresses unset
        (0x0100, DST4_VALUE, 0),  # and for version 1
    ],
)
def test_host_order_flags_follow_what_a_correct_parse_stops_at_and_back(
    flags: int, correct_dst: int, host_order_dst: int
) -> None:
    frame = gre_frame(flags)
    correct, host_order = frames.dissect(frame), frames.dissect(frame, gre=HOST_ORDER)
    assert correct is not None and host_order is not None
    assert (correct.dst, host_order.dst) == (correct_dst, host_order_dst)


def test_per_destination_passes_the_gre_parse_on() -> None:
    captured = [Frame(0, len(f), f) for f in (build("gre"), build("gre-vlan"))]
    assert frames.per_destination(captured, gre=HOST_ORDER) == {(0,): (1, len(build("gre")))}
    assert frames.per_destination(captured) == {
        (DST4_VALUE,): (2, len(build("gre")) + len(build("gre-vlan")))
    }
