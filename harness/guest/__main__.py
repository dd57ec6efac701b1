"""``python3 -m harness.guest PLAN``: run every case of a plan and write one JSON per case.

Beside them: the guest's clock (:data:`TIMES_NAME`) and, when the plan asks (in a VM),
the kernel's log (:mod:`harness.guest.kernel_log`).

Runs inside the test VM (from the bundle :mod:`harness.guest.bundle` makes) and, for
the host tests, in a private network namespace. Exit status 0 when every case ran
(whatever the counts: the host judges them); 1 when a case could not run, with its
error in its JSON and one line on stderr; 2 when the plan cannot be read.

Every import costs in the guest (see :mod:`harness.guest.bundle`): no ``argparse``
for a single argument, and the Python loader is imported once, when a case needs it,
before its first case, so that the cases' own times compare. When other loaders'
cases are in the plan too, they run first while a forked child imports the Python
loader and then runs its cases (:mod:`harness.guest.beside`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness import files
from harness.errors import HarnessError
from harness.guest import beside, kernel_log
from harness.guest.plan import IN_PROCESS, CasePlan, read_plan
from harness.guest.result import write_result
from harness.guest.scenario import python_loader, run

#: Written beside the plan: the guest's own clock, for the run's timeline.
TIMES_NAME = "guest-times.json"


USAGE = "usage: python3 -m harness.guest PLAN  (the plan.json the host wrote)"


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    entered = _uptime()
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr, flush=True)
        return 0 if args in (["-h"], ["--help"]) else 2
    plan_path = Path(args[0])
    try:
        plan = read_plan(plan_path)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    release = os.uname().release
    # Before Linux 5.11 the kernel charges maps to RLIMIT_MEMLOCK, whose default a hash map
    # of a thousand entries exceeds (bpf(2) then says EPERM); every loader of the run,
    # in this process or started from it, gets it lifted, as libbpf does for itself.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(
            resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
    times: dict[str, float | bool] = {"main": entered, "start": _uptime()}
    in_process = [case for case in plan.cases if case.loader == IN_PROCESS and not case.command]
    others = [case for case in plan.cases if case.loader != IN_PROCESS or case.command]
    status = 0
    if in_process and others and len(os.sched_getaffinity(0)) > 1:
        # The loader's import in a child, beside the other loaders' cases, on the VM's
        # other CPU (see beside.py); with one CPU there is nothing to gain.
        child = beside.start(in_process, release, python_loader, run_cases, _uptime)
        times["loader_beside"] = True
        status = run_cases(others, release)
        child_status, imported = child.finish()
        status = status or child_status
        if imported is not None:
            times["loader_imported"] = imported
    else:
        if in_process:
            _import_loader()
            times["loader_imported"] = _uptime()
        status = run_cases(plan.cases, release)
    times["end"] = _uptime()
    times["cases_seconds"] = round(time.monotonic() - started, 3)
    # Without them the timeline only loses its guest-side marks and the boot's phases.
    with contextlib.suppress(OSError):
        files.write_atomic(plan_path.parent / TIMES_NAME, json.dumps(times) + "\n")
    if plan.kernel_log:
        with contextlib.suppress(OSError):
            files.write_atomic(plan_path.parent / kernel_log.NAME, kernel_log.read())
    return status


def run_cases(cases: Sequence[CasePlan], release: str) -> int:
    """Run ``cases`` one after another, each result written; 1 if one could not run."""
    status = 0
    for case in cases:
        result = run(case, release)
        path = write_result(case.result, result)
        if result.error is not None:
            first_line = result.error.splitlines()[0] if result.error else "failed"
            print(
                f"error: {case.sample}, {case.loader} loader: {first_line} (details in {path})",
                file=sys.stderr,
                flush=True,
            )
            status = 1
    return status


def _import_loader() -> None:
    # A failure to import is the case's error, reported by the case itself.
    with contextlib.suppress(HarnessError):
        python_loader()


def _uptime() -> float:
    """Seconds since the guest kernel started (its console timestamps use this clock)."""
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


if __name__ == "__main__":
    sys.exit(main())
