"""Values the VM tests' fixtures hand to the cases (a module of its own, so both import it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelRun:
    """One kernel's VM run, shared by its cases; ``error`` when it produced no results."""

    spec: str
    release: str
    accel: str
    seconds: float | None
    results_dir: Path | None
    console_log: Path | None
    error: str | None = None


@dataclass(frozen=True)
class Traffic:
    tcp_bytes: int
    udp_bytes: int
    icmp_count: int
