"""Results of a run: read from the JUnit file, shown as a table and a Markdown summary.

The contract between the VM tests and this module: each test case records these
properties with pytest's ``record_property`` (they land in the JUnit file), and the
report is built from the JUnit file alone.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Properties every VM test case records (values are strings in the JUnit file).
PROPERTIES = (
    "kernel",        # what was asked: "6.1" or a path
    "release",       # what ran: uname -r in the guest (or the resolved release if it never ran)
    "accel",         # "kvm" or "tcg"
    "boot_seconds",  # wall time of the VM run, float
    "loader",        # "python" or "c"
    "tcp_map", "tcp_capture",
    "udp_map", "udp_capture",
    "icmp_map", "icmp_capture",
)

PROTOCOLS = ("tcp", "udp", "icmp")


@dataclass(frozen=True)
class CaseResult:
    """One test case of one kernel and one loader."""

    name: str
    outcome: str  # "passed", "failed", "error", "skipped"
    message: str
    properties: dict[str, str]
