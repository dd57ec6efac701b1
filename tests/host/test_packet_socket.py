"""Packet sockets on an interface: what they see and how they fail. Needs root."""

from __future__ import annotations

import os
import socket

import pytest

from harness.errors import PacketSocketError
from harness.packet_socket import open_packet_socket

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (packet sockets)"),
]


def test_a_socket_on_lo_sees_a_datagram_sent_over_lo() -> None:
    payload = os.urandom(16)
    with (
        open_packet_socket("lo", "the test", receive_buffer=1 << 20) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        sock.settimeout(5)
        sender.sendto(payload, ("127.0.0.1", 9))
        while True:
            frame, (interface, *_) = sock.recvfrom(65536)
            if payload in frame:
                break
    assert interface == "lo"


def test_an_unknown_interface_is_named() -> None:
    with pytest.raises(PacketSocketError, match=r"the test to nosuch0: .*no such interface"):
        open_packet_socket("nosuch0", "the test")
