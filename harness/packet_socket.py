"""Raw packet (AF_PACKET) sockets bound to one interface.

Both the sample's socket (the filter is attached to it) and the capture that
checks the sample's counts are such sockets; they are opened the same way so
they see the same frames.
"""

from __future__ import annotations

import errno
import socket

from harness.errors import PacketSocketError

#: Every protocol (include/uapi/linux/if_ether.h): the socket sees every frame.
ETH_P_ALL = 0x0003
#: ``SO_RCVBUFFORCE`` (include/uapi/asm-generic/socket.h): a receive buffer past rmem_max.
SO_RCVBUFFORCE = 33


def open_packet_socket(
    interface: str, purpose: str, *, receive_buffer: int | None = None
) -> socket.socket:
    """A raw packet socket that receives every frame crossing ``interface``, and only those.

    The socket is opened for no protocol and bound to ``ETH_P_ALL`` on the
    interface afterwards: opened for ``ETH_P_ALL`` it would queue the frames of
    every interface until the bind. ``receive_buffer`` forces the size of its
    receive queue before any frame arrives (root only). ``purpose`` says what the
    socket is for in the error, a :class:`PacketSocketError`.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise _error(f"cannot open a packet socket for {purpose}", exc) from exc
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive_buffer)
        sock.bind((interface, ETH_P_ALL))
    except OSError as exc:
        sock.close()
        raise _error(f"cannot bind the packet socket for {purpose} to {interface}", exc) from exc
    return sock


def _error(what: str, exc: OSError) -> PacketSocketError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        advice = "run as root or with CAP_NET_RAW"
    elif exc.errno == errno.ENODEV:
        advice = "no such interface; name one that `ip link` lists"
    else:
        advice = "check that the kernel has packet sockets (CONFIG_PACKET)"
    return PacketSocketError(f"{what}: {exc.strerror or exc}; {advice}")
