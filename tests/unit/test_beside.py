"""The Python loader's cases in a forked child: imported beside the others, run after them."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.guest import beside
from harness.guest.plan import CasePlan
from harness.guest.result import GuestResult, load_result, write_result
from harness.loaders.protocol import LoadRequest


def cases(tmp_path: Path, count: int = 2) -> list[CasePlan]:
    request = LoadRequest(tmp_path / "sample.o", programs=())
    return [
        CasePlan(f"sample{n}", "python", (), request, (), tmp_path / f"sample{n}" / "python.json")
        for n in range(count)
    ]


def test_the_child_imports_at_once_and_runs_its_cases_only_when_told(tmp_path: Path) -> None:
    parents_case = tmp_path / "parents-case-done"
    order = tmp_path / "order"

    def import_loader() -> None:
        (tmp_path / "imported").write_text(str(os.getpid()))

    def run_cases(todo: Sequence[CasePlan], release: str) -> int:
        # Only after the parent's cases: the capture on lo must see one case at a time.
        order.write_text(f"parent done first: {parents_case.exists()}")
        for case in todo:
            write_result(case.result, GuestResult(case.sample, case.loader, release))
        return 0

    child = beside.start(cases(tmp_path), "6.1-test", import_loader, run_cases, lambda: 7.25)
    parents_case.write_text("")  # the parent's own case, while the child imports
    status, imported = child.finish()

    assert status == 0
    assert imported == 7.25
    assert int((tmp_path / "imported").read_text()) == child.pid != os.getpid()
    assert order.read_text() == "parent done first: True"
    assert [load_result(c.result).release for c in child.cases] == ["6.1-test", "6.1-test"]


def test_a_case_that_could_not_run_fails_the_run(tmp_path: Path) -> None:
    def run_cases(todo: Sequence[CasePlan], release: str) -> int:
        for case in todo:
            write_result(case.result, GuestResult(case.sample, case.loader, release, error="no"))
        return 1

    status, _ = beside.start(cases(tmp_path), "r", lambda: None, run_cases, lambda: 1.0).finish()

    assert status == 1


@pytest.mark.parametrize("end", ["signal", "exception"])
def test_a_child_that_dies_leaves_a_result_saying_so_for_each_case(
    tmp_path: Path, end: str
) -> None:
    def run_cases(todo: Sequence[CasePlan], release: str) -> int:
        write_result(todo[0].result, GuestResult(todo[0].sample, todo[0].loader, release))
        if end == "signal":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("the loader broke the interpreter")

    child = beside.start(cases(tmp_path), "r", lambda: None, run_cases, lambda: 1.0)
    status, _ = child.finish()

    assert status == 1
    first, second = (load_result(c.result) for c in child.cases)
    assert first.error is None  # what the child wrote is kept
    assert second.error is not None
    how = "was killed by signal 9" if end == "signal" else "exited with status 1"
    assert f"child process for the Python loader's cases {how}" in second.error


def test_a_child_whose_import_fails_still_runs_its_cases(tmp_path: Path) -> None:
    from harness.errors import LoaderError

    def import_loader() -> None:
        raise LoaderError("no pyelftools")  # each case reports it when it runs

    def run_cases(todo: Sequence[CasePlan], release: str) -> int:
        for case in todo:
            write_result(case.result, GuestResult(case.sample, case.loader, release, error="x"))
        return 1

    child = beside.start(cases(tmp_path, 1), "r", import_loader, run_cases, lambda: 2.5)
    status, imported = child.finish()

    assert (status, imported) == (1, 2.5)
    assert load_result(child.cases[0].result).error == "x"
