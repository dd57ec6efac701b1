"""harness.progress: events, their log between processes, and the VM watch."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_run import prepared

from harness import loaders, run, vm
from harness.progress import (
    Event,
    EventLog,
    KernelState,
    Note,
    Transfer,
    VmWatch,
    decode,
    encode,
    follow,
    read_events,
)

EVENTS: list[Event] = [
    Note("6.1.0-57-amd64: extracting"),
    Transfer("6.1", "linux-libc-dev", 1_000, 2_458_036),
    Transfer("6.1", "linux-image-6.1.0-57-amd64-unsigned", 3, 9, "downloading ... failed"),
    KernelState("6.1", "running", "tcg", done=2, total=6),
    KernelState("6.1", "done", "6 passed"),
]


def test_each_event_survives_its_line() -> None:
    for event in EVENTS:
        line = encode(event)
        assert "\n" not in line
        assert decode(line) == event


@pytest.mark.parametrize(
    "line", ["", "not json", "[]", '{"kind": "Bomb"}', '{"kind": "Note", "txt": "x"}']
)
def test_a_line_that_is_no_event_is_none(line: str) -> None:
    assert decode(line) is None


def test_a_kernel_state_is_one_of_the_states() -> None:
    with pytest.raises(ValueError, match="unknown kernel state 'bootin'"):
        KernelState("6.1", "bootin")
    assert KernelState("6.1", "failed").final and not KernelState("6.1", "running").final


def test_events_appended_by_two_processes_arrive_whole(tmp_path: Path) -> None:
    path = tmp_path / "events"
    mine = [Note(f"parent {i} " + "x" * 300) for i in range(200)]
    theirs = [Note(f"child {i} " + "y" * 300) for i in range(200)]
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            for event in theirs:
                EventLog(path)(event)
        finally:
            os._exit(0)
    for event in mine:
        EventLog(path)(event)
    os.waitpid(child, 0)

    events, offset = read_events(path, 0)

    assert offset == path.stat().st_size
    assert sorted(map(encode, events)) == sorted(map(encode, mine + theirs))
    assert [e for e in events if e in mine] == mine  # in the order each process wrote


def test_a_line_being_written_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "events"
    first, second = encode(EVENTS[0]) + "\n", encode(EVENTS[1]) + "\n"
    path.write_text(first + second[:10])

    events, offset = read_events(path, 0)
    assert (events, offset) == ([EVENTS[0]], len(first))

    path.write_text(first + second)
    assert read_events(path, offset) == ([EVENTS[1]], len(first) + len(second))
    assert read_events(tmp_path / "none yet", 0) == ([], 0)


def test_follow_hands_over_every_event_by_the_time_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "events"
    heard: list[Event] = []
    with follow(path, heard.append, interval=3600):
        for event in EVENTS:
            EventLog(path)(event)
    assert heard == EVENTS


class _Heard(list[Event]):
    def __call__(self, event: Event) -> None:
        self.append(event)


MARK = "virtme-ng-init: starting script"


def _watch(tmp_path: Path, heard: _Heard) -> tuple[VmWatch, Path, list[Path]]:
    console = tmp_path / "console.log"
    results = [tmp_path / "a.json", tmp_path / "b.json"]
    return VmWatch(heard, "6.1", console, results, MARK, detail="tcg"), console, results


def test_a_vm_is_booting_until_its_command_starts_then_counts_its_cases(tmp_path: Path) -> None:
    heard = _Heard()
    watch, console, results = _watch(tmp_path, heard)

    watch.poll()  # no console yet
    console.write_text("[    0.000000] Linux version 6.1.0\n[    2.1] virtme-ng-init: star")
    watch.poll()
    with console.open("a") as log:
        log.write("ting script\n")  # the marker, split between two looks
    watch.poll()
    results[0].write_text("{}")
    watch.poll()
    watch.poll()  # nothing changed: nothing told
    results[1].write_text("{}")
    watch.poll()

    assert heard == [
        KernelState("6.1", "booting", "tcg"),
        KernelState("6.1", "running", "tcg", done=0, total=2),
        KernelState("6.1", "running", "tcg", done=1, total=2),
        KernelState("6.1", "running", "tcg", done=2, total=2),
    ]


def test_a_console_log_started_again_is_a_boot_again(tmp_path: Path) -> None:
    heard = _Heard()
    watch, console, _ = _watch(tmp_path, heard)
    console.write_text("[    0.1] clocksource hpet\n" * 3 + f"[    9.9] {MARK}\n")
    watch.poll()
    console.write_text("[    0.0] Linux version\n")  # a stalled boot, booted again
    watch.poll()

    assert [s.state for s in heard if isinstance(s, KernelState)] == ["running", "booting"]


def test_boot_tells_booting_then_the_cases_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = prepared()
    local = dataclasses.replace(kernel.entry.kernel, origin="local")
    kernel = dataclasses.replace(kernel, entry=dataclasses.replace(kernel.entry, kernel=local))
    cases = run.plan_cases([kernel.builds["sockex1"].sample], loaders.builtin(["python", "c"]))

    def run_vm(entry: Any, guest: Sequence[str], results: Path, **options: Any) -> vm.VmResult:
        log = options["console_log"]
        log.write_text(f"[    1.5] {run.GUEST_STARTED[0]}\n")
        for name in options["expect"]:
            (results / name).parent.mkdir(parents=True, exist_ok=True)
            (results / name).write_text("{}")
        return vm.VmResult("tcg", 1.0, 0, log, results)

    monkeypatch.setattr(vm, "run_vm", run_vm)
    heard = _Heard()

    ran = run.boot(kernel, cases, run.VmOptions("tcg"), tmp_path, progress=heard)

    assert ran.error is None
    assert heard[0] == KernelState("6.1", "booting", "tcg")
    assert heard[-1] == KernelState("6.1", "running", "tcg", done=2, total=2)
    # pytest's own path gives no listener.
    assert run.boot(kernel, cases, run.VmOptions("tcg"), tmp_path).error is None
