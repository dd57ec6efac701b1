"""What the guest reports for one (sample, loader) case: one JSON document per case.

The guest writes it into the results directory the host shares with the VM; the
host reads it back with :func:`load_result` and judges it (:mod:`harness.checks`).
The result holds the raw material, not a verdict: the maps as the loader dumped
them, and every frame the capture recorded, so the judgement (and a sample's
oracle) can be run again on the host from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import files
from harness.errors import ResultsError
from harness.packets import Frame


@dataclass(frozen=True)
class GuestResult:
    """One case as the guest saw it.

    ``maps``: each dumped map's entries as (key hex, value hex); ``frames``: what the
    capture recorded; ``offered``/``drops``: the capture socket's PACKET_STATISTICS;
    ``sent``: what each traffic step delivered (bytes or echoes, by step);
    ``timings``: seconds per phase of the case; ``error``: why the case could not run.
    """

    sample: str
    loader: str
    release: str
    error: str | None = None
    maps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    frames: tuple[Frame, ...] = ()
    offered: int = 0
    drops: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def raw_maps(self) -> dict[str, list[tuple[bytes, bytes]]]:
        return {
            name: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in entries]
            for name, entries in self.maps.items()
        }

    def to_json(self) -> str:
        # Field by field rather than dataclasses.asdict, which would copy every frame
        # deeply only to throw the copies away (the guest writes this once per case).
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["frames"] = [[f.pkt_type, f.length, f.head.hex()] for f in self.frames]
        # On one line: with an indent, json encodes in Python rather than in C, 4 to 5
        # times slower (a case of some 240 frames: 1.3-1.8 ms against 0.33 ms on the
        # host, tens of ms under TCG). ``python3 -m json.tool`` shows it indented.
        return json.dumps(data, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> GuestResult:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                sample=str(data["sample"]),
                loader=str(data["loader"]),
                release=str(data["release"]),
                error=None if data.get("error") is None else str(data["error"]),
                maps={
                    str(name): [(str(k), str(v)) for k, v in entries]
                    for name, entries in data.get("maps", {}).items()
                },
                frames=tuple(
                    Frame(int(t), int(n), bytes.fromhex(h)) for t, n, h in data.get("frames", ())
                ),
                offered=int(data.get("offered", 0)),
                drops=int(data.get("drops", 0)),
                sent={str(k): int(v) for k, v in data.get("sent", {}).items()},
                timings={str(k): float(v) for k, v in data.get("timings", {}).items()},
                details={str(k): str(v) for k, v in data.get("details", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsError(f"not a case result: {type(exc).__name__}: {exc}") from exc


def write_result(path: Path, result: GuestResult) -> Path:
    """Write ``result`` to ``path`` (whole or not at all); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, result.to_json())
    return path


def load_result(path: Path) -> GuestResult:
    """Read a result the guest wrote; a :class:`ResultsError` if it is missing or unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsError(
            f"no case result at {path} ({exc.strerror}): the guest did not report this case"
        ) from exc
    try:
        return GuestResult.from_json(text)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from exc
