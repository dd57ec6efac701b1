"""In the guest: a kernel release's own user program (loader ``own``), run as upstream runs it.

The program (``<name>``, built by :mod:`harness.upstream`) opens ``argv[0]_kern.o``,
loads it with the release's libbpf, attaches it to a packet socket on ``lo``, starts
``ping`` itself and prints its map once a second. The guest only starts it, with the
capture open on ``lo`` as in every case, and keeps its exit status and output; the host
judges them (:func:`harness.upstream.check_output`). The program's process group is
killed at the end, so the ``ping`` it leaves running dies with it.
"""

from __future__ import annotations

import subprocess
import time

from harness import proc
from harness.errors import HarnessError
from harness.guest.capture import Capture
from harness.guest.plan import CasePlan
from harness.guest.result import GuestResult
from harness.guest.traffic import bring_up, on_one_cpu

#: The loader name of these cases (``harness.upstream.OWN``; not imported: the guest
#: needs none of the host's build code).
OWN = "own"
#: The programs run five one-second rounds; TCG makes every start slow.
TIMEOUT = 90.0
INTERFACE = "lo"


def run(case: CasePlan, release: str) -> GuestResult:
    """Run the user program of ``case`` to its end; its status and output in ``details``."""
    timings: dict[str, float] = {}
    details: dict[str, str] = {}
    started = time.monotonic()
    try:
        if bring_up(INTERFACE):
            details["interface"] = f"{INTERFACE} was down and was brought up"
        with Capture(INTERFACE) as capture:
            # On one CPU, and the ping it starts too (inherited), as every case's traffic:
            # a program keeping state per CPU then saw the frames in the capture's order.
            with on_one_cpu():
                child = proc.spawn(case.command)
            try:
                try:
                    # communicate() closes its stdin: the programs read nothing.
                    out, err = child.communicate(timeout=TIMEOUT)
                    details["exit_status"] = str(child.returncode)
                except subprocess.TimeoutExpired:
                    details["exit_status"] = f"none: killed after {TIMEOUT:.0f} s"
                    out, err = b"", b""
            finally:
                proc.kill_group(child)  # and the ping it started
            timings["program"] = round(time.monotonic() - started, 4)
            capture.wait_quiet()
            captured = capture.frames()
            stats = capture.statistics()
    except HarnessError as exc:
        return GuestResult(case.sample, case.loader, release, error=str(exc), timings=timings)
    details["stdout"] = out.decode(errors="replace")
    details["stderr"] = err.decode(errors="replace")
    return GuestResult(
        sample=case.sample,
        loader=case.loader,
        release=release,
        frames=tuple(captured),
        offered=stats.packets,
        drops=stats.drops,
        timings=timings,
        details=details,
    )
