"""What one loader's result from the guest must show for the sample to pass.

Pure functions over :class:`harness.guest.result.SampleResult`, so the VM tests and
their unit tests judge a result the same way. Each problem is one sentence naming
both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.guest.result import SampleResult

#: On ``lo`` every frame is seen twice (leaving and arriving), each with its headers,
#: so the bytes a protocol's map entry counts are at least twice the payload sent.
LOOPBACK_COPIES = 2


@dataclass(frozen=True)
class Expectation:
    """What was asked of the guest: the kernel release and the traffic per protocol."""

    release: str
    tcp_bytes: int
    udp_bytes: int = 0
    icmp_count: int = 0

    @property
    def protocols(self) -> tuple[str, ...]:
        sent = {"tcp": self.tcp_bytes, "udp": self.udp_bytes, "icmp": self.icmp_count}
        return tuple(name for name, amount in sent.items() if amount > 0)


def problems(result: SampleResult, expected: Expectation) -> list[str]:
    """Every way ``result`` falls short of ``expected``; empty when it passes."""
    found: list[str] = []
    if expected.release and result.release != expected.release:
        found.append(
            f"the guest ran kernel {result.release}, but {expected.release} was resolved and booted"
        )
    if result.error is not None:
        found.append(f"the {result.loader} loader failed in the guest: {result.error}")
        return found
    for name in expected.protocols:
        counts = result.protocols.get(name)
        label = name.upper()
        if counts is None:
            found.append(f"{label}: the guest reported no counts for this protocol")
            continue
        if counts.map_bytes != counts.capture_bytes:
            found.append(
                f"{label}: the map counted {counts.map_bytes} bytes, the capture saw "
                f"{counts.capture_bytes} bytes (difference "
                f"{counts.map_bytes - counts.capture_bytes:+d})"
            )
        if counts.drops:
            found.append(
                f"{label}: the capture dropped {counts.drops} packets, so its count "
                f"({counts.capture_bytes} bytes) is not a complete reference"
            )
        if counts.capture_bytes <= 0:
            found.append(f"{label}: the capture saw no traffic ({counts.packets} packets)")
    tcp = result.protocols.get("tcp")
    if "tcp" in expected.protocols and tcp is not None:
        floor = LOOPBACK_COPIES * tcp.payload_bytes
        if tcp.payload_bytes < expected.tcp_bytes:
            found.append(
                f"TCP: the guest sent {tcp.payload_bytes} payload bytes, "
                f"{expected.tcp_bytes} were asked for"
            )
        if tcp.map_bytes < floor:
            found.append(
                f"TCP: the map counted {tcp.map_bytes} bytes, less than twice the "
                f"{tcp.payload_bytes} payload bytes sent ({floor})"
            )
    return found
