"""The in-process Python loader's cases, in a child forked to import it beside the others.

Importing the Python loader (it and pyelftools) is the guest's largest single import,
about half a second under TCG, and the guest waited for it before its first case. When
a plan also has cases of other loaders and the VM has two CPUs or more (a VM of a
``-j 2`` run has one), :func:`start` forks a child once the guest's
own modules are imported and its plan read: the child imports the loader while the
parent runs the other loaders' cases, each on the VM's other CPU, and then, once the
parent says go, runs the Python loader's cases exactly as the parent would have, one
after another. Cases never overlap: the capture on ``lo`` counts every frame, so the
child waits for the parent's last case before its first.

A thread could not do this: the import would hold the interpreter's lock while the
parent's cases capture and send (measured: their traffic phase 0.07 s -> 0.45-0.88 s).

Should the child end without a result for one of its cases (killed, crashed), the
parent writes one that says so (:meth:`Beside.finish`), so every case of the plan is
reported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from harness.errors import HarnessError
from harness.guest.plan import CasePlan
from harness.guest.result import GuestResult, write_result

#: Runs the cases and returns the run's exit status (0: every case ran).
RunCases = Callable[[Sequence[CasePlan], str], int]


class Beside:
    """The forked child that imports the Python loader, then runs ``cases`` on :meth:`finish`."""

    def __init__(self, pid: int, go: int, report: int, cases: Sequence[CasePlan], release: str):
        self.pid = pid
        self._go = go
        self._report = report
        self.cases = tuple(cases)
        self.release = release

    def finish(self) -> tuple[int, float | None]:
        """Let the child run its cases and wait for it: (exit status, when it had imported).

        The time is the guest's uptime the child read once the loader was imported
        (None if it never said).
        """
        with contextlib.suppress(OSError):  # it died: the status below says how
            os.write(self._go, b"go")
        os.close(self._go)
        _, wait_status = os.waitpid(self.pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        said = _read_all(self._report)
        os.close(self._report)
        try:
            imported: float | None = float(said.split()[0])
        except (IndexError, ValueError):
            imported = None
        missing = [case for case in self.cases if not case.result.is_file()]
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        for case in missing:
            write_result(
                case.result,
                GuestResult(
                    sample=case.sample,
                    loader=case.loader,
                    release=self.release,
                    error=(
                        f"the guest's child process for the Python loader's cases {how} "
                        "before it wrote this case's result (its stderr is in the console log)"
                    ),
                ),
            )
        return (1 if status or missing else 0), imported


def start(
    cases: Sequence[CasePlan],
    release: str,
    import_loader: Callable[[], object],
    run_cases: RunCases,
    uptime: Callable[[], float],
) -> Beside:
    """Fork the child; it imports with ``import_loader``, then waits for :meth:`Beside.finish`.

    Call with no other thread running: only the calling thread goes on in the child.
    """
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(go_write)
            os.close(report_read)
            # A failure to import is each case's error, reported by the case itself.
            with contextlib.suppress(HarnessError):
                import_loader()
            os.write(report_write, f"{uptime()}\n".encode())
            os.close(report_write)
            # Read, not waited for to close: a loader the parent forked meanwhile may
            # still hold the pipe. Nothing: the parent is gone, and the VM with it.
            if os.read(go_read, 2):
                status = run_cases(cases, release)
        except BaseException:  # a child never unwinds into its parent's code
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(go_read)
    os.close(report_write)
    return Beside(pid, go_write, report_read, cases, release)


def _read_all(fd: int) -> bytes:
    """What ``fd`` holds until its writers have all closed it."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
