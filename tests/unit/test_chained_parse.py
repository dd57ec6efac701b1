"""harness/frames.py's ChainedParse: the kernel's own sockex3 over a capture, frame by frame.

Each test is a short capture crafted so that a model that forgot what the programs keep
between packets, or parsed a header as a correct parser would, counts something else.
The expected keys are written out by hand (``(src, dst, sport, dport, ip_proto)``,
addresses as load_word returns them), the lengths from the frames' layouts.
"""

from __future__ import annotations

import struct

import pytest
from frames_util import both_ways

from harness import frames
from harness.packets import Frame

HOST = 0x7F000001
DST = 0x7F000009
ICMP, TCP, UDP = 1, 6, 17
#: Ethernet 14, IPv4 20, UDP 8 and 8 bytes of data.
UDP_LENGTH = 50
#: Ethernet 14, IPv4 20, ICMP 8 and 56 bytes of data (ping's echo).
ICMP_LENGTH = 98
#: What every release here does (5.10 to 7.2): ICMP under stale ports, GRE flags in host order.
UPSTREAM = frames.ChainedParse()
FIXED = frames.ChainedParse(icmp_keeps_ports=False, gre_flags_host_order=False)


def udp(sport: int, dport: int, dst: str = "127.0.0.9") -> bytes:
    datagram = frames.udp("127.0.0.1", dst, b"x" * 8, sport, dport)
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", dst, UDP, datagram))


def tcp(sport: int, dport: int) -> bytes:
    """A bare TCP header (20 bytes, ACK): 54 bytes on the wire."""
    header = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, 0x10, 0, 0, 0)
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", "127.0.0.9", TCP, header))


def icmp(dst: str = "127.0.0.9") -> bytes:
    echo = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + bytes(56)
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", dst, ICMP, echo))


def ipv6(next_header: int, payload: bytes) -> bytes:
    return frames.ethernet(frames.ETH_P_IPV6, frames.ipv6("::1", "fd00::9", next_header, payload))


def capture(*sent: bytes) -> list[Frame]:
    """What the capture sees of ``sent`` on lo: each frame leaving, then arriving."""
    return [frame for each in sent for frame in both_ways(each)]


def test_the_first_icmp_on_a_fresh_record_has_port_0() -> None:
    assert UPSTREAM.count(capture(icmp())) == {(HOST, DST, 0, 0, ICMP): (2, 2 * ICMP_LENGTH)}


def test_icmp_after_udp_is_counted_under_udps_ports() -> None:
    captured = capture(udp(1000, 2000), icmp())
    assert UPSTREAM.count(captured) == {
        (HOST, DST, 1000, 2000, UDP): (2, 2 * UDP_LENGTH),
        (HOST, DST, 1000, 2000, ICMP): (2, 2 * ICMP_LENGTH),
    }
    # The fix: ICMP under port 0, whatever came before.
    assert FIXED.count(captured)[(HOST, DST, 0, 0, ICMP)] == (2, 2 * ICMP_LENGTH)


def test_each_icmp_takes_the_ports_of_the_last_tcp_or_udp_packet_before_it() -> None:
    sent = (icmp(), tcp(50000, 80), icmp(), udp(1000, 2000), icmp(), icmp())
    counts = UPSTREAM.count(capture(*sent))
    icmp_keys = {key: value for key, value in counts.items() if key[4] == ICMP}
    assert icmp_keys == {
        (HOST, DST, 0, 0, ICMP): (2, 2 * ICMP_LENGTH),
        (HOST, DST, 50000, 80, ICMP): (2, 2 * ICMP_LENGTH),
        (HOST, DST, 1000, 2000, ICMP): (4, 4 * ICMP_LENGTH),
    }


def test_the_record_is_fresh_for_each_count_call() -> None:
    UPSTREAM.count(capture(udp(1000, 2000)))
    assert list(UPSTREAM.count(capture(icmp()))) == [(HOST, DST, 0, 0, ICMP)]


def test_frames_not_counted_leave_the_ports_as_they_were() -> None:
    cut = frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", "127.0.0.7", UDP, b""))
    icmpv6 = ipv6(58, struct.pack("!BBH", 128, 0, 0) + bytes(4))
    captured = capture(
        udp(1000, 2000),
        frames.build("fragment", "127.0.0.5"),  # a later fragment: the parse ends at once
        frames.build("arp", "127.0.0.5"),  # not IP
        icmpv6,  # IPv6 sets the addresses, ICMPv6 is no case of the switch
        cut,  # UDP ending at its transport header: the ports' load ends the program
        frames.build("gre", "127.0.0.6"),  # GRE with optional words: nothing (below)
        icmp(),
    )
    assert UPSTREAM.count(captured) == {
        (HOST, DST, 1000, 2000, UDP): (2, 2 * UDP_LENGTH),
        (HOST, DST, 1000, 2000, ICMP): (2, 2 * ICMP_LENGTH),
    }


def test_ipv6_udp_sets_the_ports_and_ipv6_icmp_keeps_them() -> None:
    datagram = frames.udp("::1", "fd00::9", b"x" * 8, 3000, 4000)
    captured = capture(ipv6(UDP, datagram), ipv6(ICMP, bytes(8)))
    assert UPSTREAM.count(captured) == {
        (1, 0xFD000009, 3000, 4000, UDP): (2, 2 * (14 + 40 + 16)),
        (1, 0xFD000009, 3000, 4000, ICMP): (2, 2 * (14 + 40 + 8)),
    }


def test_gre_with_optional_words_counts_nothing_when_flags_are_tested_in_host_order() -> None:
    # "gre" (checksum, key, sequence; 142 bytes): the IPv4 header is read at the checksum
    # word, whose frag_off is the key's low half (0x0c0d): a fragment. "gre-vlan" (key;
    # 138 bytes): the tag read at the key has ethertype 0x0c0d: no program for it.
    captured = capture(frames.build("gre", "127.0.0.20"), frames.build("gre-vlan", "127.0.0.21"))
    assert UPSTREAM.count(captured) == {}
    assert FIXED.count(captured) == {
        (HOST, 0x7F000014, 40000, 9, UDP): (2, 2 * 142),
        (HOST, 0x7F000015, 40000, 9, UDP): (2, 2 * 138),
    }


def test_gre_without_optional_words_is_followed_either_way() -> None:
    inner = frames.ipv4("127.0.0.1", "127.0.0.9", UDP, frames.udp("127.0.0.1", "127.0.0.9", b""))
    tunnel = struct.pack("!HH", 0, frames.ETH_P_IP) + inner
    frame = frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.7", "127.0.0.8", 47, tunnel))
    for parse in (UPSTREAM, FIXED):
        assert parse.count(capture(frame)) == {(HOST, DST, 40000, 9, UDP): (2, 2 * 66)}


def test_tunnels_count_their_innermost_flow() -> None:
    captured = capture(frames.build("ipip", "127.0.0.9"), frames.build("ip6ip", "fd00::9"))
    assert UPSTREAM.count(captured) == {
        (HOST, DST, 40000, 9, UDP): (2, 2 * 126),
        (1, 0xFD000009, 40000, 9, UDP): (2, 2 * 146),
    }


def test_any_number_of_tags_in_any_order_and_both_copies_are_counted() -> None:
    # 802.1Q, 802.1AD, 802.1Q: more than a correct dissector takes (802.1AD, then 802.1Q).
    # lo strips the outer tag of the arriving copy, 4 bytes shorter; both are counted.
    body = frames.ipv4("127.0.0.1", "127.0.0.9", UDP, frames.udp("127.0.0.1", "127.0.0.9", b""))
    tags = ((0x8100, 1), (0x88A8, 2), (0x8100, 3))
    frame = frames.ethernet(frames.ETH_P_IP, body, tags)
    assert frames.dissect(frame) is None
    # Ethernet 14, three tags 12, IPv4 20, UDP 8: 54 bytes leaving, 50 arriving.
    assert UPSTREAM.count(capture(frame)) == {(HOST, DST, 40000, 9, UDP): (2, 54 + 50)}


def test_mpls_is_followed_as_written_the_version_test_never_picks_ipv4() -> None:
    bottom = struct.pack("!I", 16 << 12 | 0x100 | 64)
    datagram = frames.udp("::1", "fd00::9", b"", 3000, 4000)
    over_ipv6 = frames.ethernet(
        frames.ETH_P_MPLS_UC, bottom + frames.ipv6("::1", "fd00::9", UDP, datagram)
    )
    # IPv4 read as IPv6 (long enough for its addresses): its "next header" is the flags
    # byte, 0, no case of the switch.
    datagram4 = frames.udp("127.0.0.1", "127.0.0.9", bytes(32))
    body = frames.ipv4("127.0.0.1", "127.0.0.9", UDP, datagram4)
    over_ipv4 = frames.ethernet(frames.ETH_P_MPLS_UC, bottom + body)
    assert UPSTREAM.count(capture(over_ipv6, over_ipv4)) == {
        (1, 0xFD000009, 3000, 4000, UDP): (2, 2 * (14 + 4 + 40 + 8))
    }


def test_a_frame_needing_more_tail_calls_than_the_model_follows_is_an_error() -> None:
    body = frames.ipv4("127.0.0.1", "127.0.0.9", UDP, frames.udp("127.0.0.1", "127.0.0.9", b""))
    frame = frames.ethernet(frames.ETH_P_IP, body, ((0x8100, 1),) * frames.TAIL_CALLS)
    with pytest.raises(frames.UnmodelledFrame, match="more than 32 tail calls"):
        UPSTREAM.count([Frame(0, len(frame), frame)])
    fewer = frames.ethernet(frames.ETH_P_IP, body, ((0x8100, 1),) * (frames.TAIL_CALLS - 1))
    assert UPSTREAM.count([Frame(0, len(fewer), fewer)]) == {
        (HOST, DST, 40000, 9, UDP): (1, len(fewer))
    }
