"""What the guest scenario reports for one loader: one JSON document per loader.

The guest writes it into the results directory the host shares with the VM; the
host's tests read it back with :func:`load_result`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import files
from harness.errors import ResultsError

PROTOCOLS = ("tcp", "udp", "icmp")
#: IP protocol numbers, the map's keys.
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}


@dataclass(frozen=True)
class ProtocolCount:
    """One protocol's numbers.

    ``map_bytes``: what the sample's map counted; ``capture_bytes`` and
    ``packets``: what an independent packet capture on ``lo`` saw (frame lengths
    with their Ethernet header, each frame once leaving and once arriving);
    ``payload_bytes``: what the scenario sent above the transport (TCP stream
    bytes, UDP datagram payloads, ICMP echo data); ``drops``: packets the capture
    socket lost (one figure for the whole capture, repeated per protocol).
    """

    map_bytes: int
    capture_bytes: int
    payload_bytes: int
    packets: int
    drops: int


@dataclass(frozen=True)
class SampleResult:
    """One run of the scenario with one loader.

    ``error`` is set when the loader failed (then the counts may be missing).
    ``other_frames`` counts frames on ``lo`` that were not IPv4 (the filter reads
    their byte 23 as if it were a protocol number; the capture does not).
    """

    release: str
    loader: str
    protocols: dict[str, ProtocolCount]
    error: str | None = None
    other_frames: int = 0
    details: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SampleResult:
        try:
            data: dict[str, Any] = json.loads(text)
            protocols = {
                str(name): ProtocolCount(**{k: int(v) for k, v in counts.items()})
                for name, counts in data["protocols"].items()
            }
            return cls(
                release=str(data["release"]),
                loader=str(data["loader"]),
                protocols=protocols,
                error=None if data.get("error") is None else str(data["error"]),
                other_frames=int(data.get("other_frames", 0)),
                details={str(k): str(v) for k, v in data.get("details", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsError(f"not a sample result: {type(exc).__name__}: {exc}") from exc


def write_result(directory: Path, result: SampleResult) -> Path:
    """Write ``<directory>/<loader>.json`` (whole or not at all); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.loader}.json"
    files.write_atomic(path, result.to_json())
    return path


def load_result(path: Path) -> SampleResult:
    """Read a result the guest wrote; a :class:`ResultsError` if it is missing or unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsError(
            f"no sample result at {path} ({exc.strerror}): the scenario did not report"
        ) from exc
    try:
        return SampleResult.from_json(text)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from exc
