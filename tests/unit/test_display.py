"""harness.display: plain lines off a terminal, a live view on one, kernels' verdicts."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness.display import KernelVerdicts, LiveDisplay, PlainLines, one_line, shown
from harness.progress import Event, EventLog, KernelState, Note, Transfer, follow

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain() -> tuple[PlainLines, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return PlainLines(out, clock=clock), out, clock


def lines_of(out: io.StringIO) -> list[str]:
    """The lines written, checked to be plain: whole lines, no control characters."""
    text = out.getvalue()
    assert text == "" or text.endswith("\n")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text), repr(text)
    return text.splitlines()


def test_plain_lines_tell_each_state_change_of_a_kernel_once() -> None:
    show, out, clock = plain()
    for event in [
        KernelState("6.1", "waiting"),
        KernelState("6.1", "preparing"),
        KernelState("6.12", "preparing"),
        KernelState("6.1", "preparing"),
        KernelState("6.1", "building", "6.1.0-57-amd64"),
        KernelState("6.1", "booting", "tcg"),
        KernelState("6.1", "running", "tcg", done=0, total=2),
        KernelState("6.1", "running", "tcg", done=1, total=2),
        KernelState("6.1", "running", "tcg", done=1, total=2),
        KernelState("6.1", "running", "tcg", done=2, total=2),
    ]:
        clock.now += 5
        show(event)
    clock.now += 50
    show(KernelState("6.1", "done", "2 passed"))
    # A worker's last look at its VM, read after the verdicts: too late to count.
    show(KernelState("6.1", "running", "tcg", done=2, total=2))
    show(KernelState("6.12", "failed", "2 error; kernel 6.12: \x1b[31mVM lost\x1b[0m\r\nand more"))

    assert lines_of(out) == [
        "6.1: preparing",
        "6.12: preparing",
        "6.1: building (6.1.0-57-amd64)",
        "6.1: booting (tcg)",
        "6.1: running (tcg): 0/2 cases",
        "6.1: running (tcg): 1/2 cases",
        "6.1: running (tcg): 2/2 cases",
        "6.1: done in 90 s: 2 passed",
        "6.12: failed in 85 s: 2 error; kernel 6.12: VM lost and more",
    ]


def test_plain_lines_tell_a_download_now_and_then_not_per_chunk() -> None:
    show, out, clock = plain()
    name = "linux-image-6.1.0-57-amd64-unsigned"
    start = clock.now
    show(Transfer("6.1", name, 0, 60 * MB))  # queued behind another package
    for second in range(1, 30):
        clock.now = start + second
        show(Transfer("6.1", name, 2 * second * MB, 60 * MB))
    clock.now = start + 30
    show(Transfer("6.1", name, 60 * MB, 60 * MB))
    show(Transfer("6.1", name, 60 * MB, 60 * MB))

    assert lines_of(out) == [
        f"6.1: {name}: downloading 60.0 MB",
        f"6.1: {name}: 22.0 MB of 60.0 MB (36%), 2.0 MB/s",
        f"6.1: {name}: 42.0 MB of 60.0 MB (70%), 2.0 MB/s",
        f"6.1: {name}: 60.0 MB in 29 s",
    ]


def test_plain_lines_tell_a_cut_off_download_once() -> None:
    show, out, _ = plain()
    show(Transfer("6.1", "linux-libc-dev", 0, 9 * MB))
    show(Transfer("6.1", "linux-libc-dev", 3 * MB, 9 * MB, "downloading linux-libc-dev failed"))
    show(Transfer("6.1", "linux-libc-dev", 3 * MB, 9 * MB, "downloading linux-libc-dev failed"))
    show(Transfer("", "busybox", 1000, 1000))  # a small one: just its end
    show(Note("6.1.0-57-amd64: extracting\n"))

    assert lines_of(out) == [
        "6.1: linux-libc-dev: download failed after 3.0 MB of 9.0 MB: "
        "downloading linux-libc-dev failed",
        "busybox: 0.0 MB in 0 s",
        "6.1.0-57-amd64: extracting",
    ]


def test_one_line_drops_escapes_and_joins_lines() -> None:
    assert one_line("\x1b[1;31mFAIL\x1b[0m:\ta\r\nb\x07") == "FAIL: a b"


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=140, color_system="standard"), out


def _unstyled(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_the_live_view_renders_kernels_and_downloads_on_a_terminal() -> None:
    console, out = _terminal()
    view = LiveDisplay(console, kernels=["6.1", "6.12", "7.2"])
    view(KernelState("6.1", "running", "tcg", done=1, total=2))
    view(KernelState("6.12", "preparing"))
    view(Transfer("6.12", "linux-libc-dev", 1 * MB, 2 * MB))
    view(Transfer("6.12", "linux-image-6.12.57+deb13-amd64", 5 * MB, 90 * MB, "[cut off]"))
    view(KernelState("6.1", "done", "2 passed"))

    console.print(view)

    text = out.getvalue()
    assert "\x1b[" in text  # styled for a terminal
    rows = _unstyled(text).splitlines()
    assert any("6.1 " in r and "done: 2 passed" in r for r in rows), rows
    assert any("6.12 " in r and "preparing" in r for r in rows), rows
    assert any("7.2 " in r and "waiting" in r for r in rows), rows
    (bar,) = [r for r in rows if "linux-libc-dev" in r]
    assert "1.0/2.0 MB" in bar
    (cut,) = [r for r in rows if "linux-image" in r]
    assert "5.0/90.0 MB" in cut and "failed 6.12 linux-image-6.12.57+deb13-amd64: [cut off]" in cut


def test_the_live_view_prints_notes_output_and_logs_above_itself() -> None:
    console, out = _terminal()
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        with LiveDisplay(console, kernels=["6.1"]) as view:
            view(Note("6.1.0-57-amd64: extracting"))
            # As pytest -v writes a case: its name, a flush, its outcome in colour later.
            sys.stdout.write("tests/vm/test_samples.py::test_case[6.1-sockex1-c] ")
            sys.stdout.flush()
            sys.stdout.write("\x1b[32mPASSED\x1b[0m\x1b[32m [100%]\x1b[0m\n")
            logging.getLogger("harness.test").warning("a warning, logged")
            view(KernelState("6.1", "done", "1 passed"))
            sys.stderr.write("an unfinished line")
    finally:
        logging.getLogger().removeHandler(handler)
    assert handler.stream is sys.stderr  # given back

    raw = out.getvalue()
    text = _unstyled(raw)
    assert "[32m" not in text  # the escapes became styles
    assert "\x1b[32mPASSED" in raw
    lines = text.splitlines()
    case = lines.index("tests/vm/test_samples.py::test_case[6.1-sockex1-c] PASSED [100%]")
    assert lines.index("6.1.0-57-amd64: extracting") < case
    assert case < lines.index("a warning, logged") < lines.index("an unfinished line")
    assert "done: 1 passed" in lines[-1]


def test_off_a_terminal_the_display_is_plain_lines() -> None:
    out = io.StringIO()
    with shown(out, kernels=["6.1"]) as show:
        assert isinstance(show, PlainLines)
        show(KernelState("6.1", "booting", "kvm"))
    assert out.getvalue() == "6.1: booting (kvm)\n"


def test_plain_lines_reach_the_log_while_its_descriptor_is_captured(tmp_path: Path) -> None:
    """As pytest does during a test: the stream's descriptor points elsewhere for a while."""
    log, captured = tmp_path / "ci.log", tmp_path / "captured"
    with log.open("w") as stream, captured.open("w") as capture, shown(stream) as show:
        saved = os.dup(stream.fileno())
        os.dup2(capture.fileno(), stream.fileno())
        try:
            show(KernelState("6.1", "booting", "tcg"))
        finally:
            os.dup2(saved, stream.fileno())
            os.close(saved)
    assert log.read_text() == "6.1: booting (tcg)\n"
    assert captured.read_text() == ""


def report(
    kernel: str | None, when: str, outcome: str, longrepr: object = None
) -> pytest.TestReport:
    properties = [("kernel", kernel)] if kernel else []
    return pytest.TestReport(
        f"tests/vm/test_samples.py::test_case[{kernel}]",
        ("tests/vm/test_samples.py", 0, "test_case"),
        {},
        outcome,  # type: ignore[arg-type]
        longrepr,  # type: ignore[arg-type]
        when,  # type: ignore[arg-type]
        user_properties=properties,
    )


def test_verdicts_tell_each_kernel_s_end_once_all_its_cases_are_judged() -> None:
    heard: list[Event] = []
    verdicts = KernelVerdicts(heard.append, {"6.1": 3, "6.12": 2, "6.6": 2})
    lost = "kernel 6.12: the VM for kernel 6.12.57 was lost\nconsole log: x"
    skip = ("tests/vm/conftest.py", 1, "Skipped: kernel 6.6: the snapshot archive is unreachable")
    for one in [
        report("6.1", "setup", "passed"),
        report("6.1", "call", "passed"),
        report("6.1", "teardown", "passed"),
        report("6.12", "setup", "failed", lost),
        report("6.1", "call", "failed", "flow_map differs"),
        report(None, "call", "failed", "not a kernel's case"),
        report("6.6", "setup", "skipped", skip),
        report("6.12", "setup", "failed", lost),
        report("6.6", "setup", "skipped", skip),
    ]:
        verdicts.pytest_runtest_logreport(one)
    failed_and_skipped = [
        KernelState("6.12", "failed", "2 error; kernel 6.12: the VM for kernel 6.12.57 was lost"),
        KernelState("6.6", "skipped", "2 skipped; kernel 6.6: the snapshot archive is unreachable"),
    ]
    assert heard == failed_and_skipped  # 6.1 has one case still to come

    verdicts.pytest_runtest_logreport(report("6.1", "call", "passed"))

    assert heard == [
        *failed_and_skipped,
        KernelState("6.1", "done", "2 passed, 1 failed"),
    ]


def test_a_kernel_whose_cases_did_not_all_report_ends_with_the_session() -> None:
    heard: list[Event] = []
    verdicts = KernelVerdicts(heard.append, {"6.1": 3, "6.12": 2})
    verdicts.pytest_runtest_logreport(report("6.1", "call", "passed"))
    assert heard == []
    verdicts.pytest_sessionfinish()  # -x stopped the run; 6.12 never started
    assert heard == [KernelState("6.1", "done", "1 passed")]


def test_plain_lines_of_a_run_through_its_event_log(tmp_path: Path) -> None:
    """What a worker writes and the verdicts reach the display in order, each once."""
    events = tmp_path / "progress.jsonl"
    out, clock = io.StringIO(), Clock()
    worker = EventLog(events)
    with follow(events, PlainLines(out, clock=clock), interval=3600):
        verdicts = KernelVerdicts(EventLog(events), {"6.1": 1})
        worker(KernelState("6.1", "preparing"))
        worker(Transfer("6.1", "linux-libc-dev", 2 * MB, 2 * MB))
        worker(KernelState("6.1", "booting", "tcg"))
        worker(KernelState("6.1", "running", "tcg", done=1, total=1))
        worker(KernelState("6.1", "running", "tcg", done=1, total=1))
        verdicts.pytest_runtest_logreport(report("6.1", "call", "passed"))

    assert lines_of(out) == [
        "6.1: preparing",
        "6.1: linux-libc-dev: 2.0 MB in 0 s",
        "6.1: booting (tcg)",
        "6.1: running (tcg): 1/1 cases",
        "6.1: done in 0 s: 1 passed",
    ]
