"""A kernel's timeline from the files of its results: host, console and guest clocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import timeline
from harness.guest.plan import PLAN_NAME
from harness.guest.result import GuestResult, write_result

CONSOLE = Path(__file__).resolve().parent.parent / "data" / "console" / "lean-init-6.1.log"
#: The recorded console's "starting script" and power-off lines.
COMMAND_START = 6.247153
POWER_DOWN = 6.588416


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    """A 6.1 kernel's results: the host's seconds, the console, the guest's marks, two cases."""
    kernel = tmp_path / "6.1.0-57-amd64"
    kernel.mkdir()
    (kernel / "timeline.json").write_text(json.dumps({"prepare": 0.5, "build": 1.5, "vm": 9.0}))
    shutil.copy(CONSOLE, kernel / "console.log")
    marks = {"main": 6.3, "start": 6.31, "loader_imported": 6.4, "end": 6.55}
    (kernel / "guest-times.json").write_text(json.dumps(marks))
    cases = []
    for loader, attach in (("c", 0.02), ("python", 0.03)):
        result = kernel / "sockex1" / f"{loader}.json"
        timings = {"capture": 0.01, "attach": attach, "traffic": 0.02, "quiet": 0.01}
        write_result(result, GuestResult("sockex1", loader, "6.1.0-57-amd64", timings=timings))
        cases.append({"result": str(result)})
    (kernel / PLAN_NAME).write_text(json.dumps({"cases": cases}))
    return kernel


def test_each_clock_gives_its_phases_in_order(kernel_dir: Path) -> None:
    rows = timeline.phases(kernel_dir)

    names = list(rows)
    assert names[:3] == ["host: prepare", "host: build", "vng, qemu, firmware"]
    assert names.index("boot: command") < names.index("guest: python start-up, imports")
    assert names[-1] == "boot: power-off"
    assert rows["host: build"] == 1.5
    assert rows["vng, qemu, firmware"] == pytest.approx(9.0 - POWER_DOWN)
    assert rows["guest: python start-up, imports"] == pytest.approx(6.3 - COMMAND_START)
    assert rows["guest: import the Python loader"] == pytest.approx(0.09)
    assert rows["cases: attach"] == pytest.approx(0.05)
    assert rows["cases: dump"] == 0.0
    assert rows["cases: between phases (results written)"] == pytest.approx(0.15 - 0.13)
    ran = timeline.case_seconds(kernel_dir)
    assert ran is not None
    assert ran[0] == 2
    assert ran[1] == pytest.approx(0.15)


def test_a_loader_import_beside_the_cases_is_not_taken_from_them(kernel_dir: Path) -> None:
    marks = {"main": 6.3, "start": 6.31, "loader_imported": 6.4, "loader_beside": True, "end": 6.55}
    (kernel_dir / "guest-times.json").write_text(json.dumps(marks))

    rows = timeline.phases(kernel_dir)

    assert "guest: import the Python loader" not in rows
    assert rows["guest: loader import, beside the cases"] == pytest.approx(0.09)
    # The cases started with the guest, not after the import: 0.24 s of them.
    assert rows["cases: between phases (results written)"] == pytest.approx(0.24 - 0.13)
    ran = timeline.case_seconds(kernel_dir)
    assert ran is not None
    assert ran[1] == pytest.approx(0.24)


def test_a_quiet_console_takes_the_boot_from_the_guests_kernel_log(kernel_dir: Path) -> None:
    whole = timeline.phases(kernel_dir)
    lines = CONSOLE.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "starting script" in line)
    # The guest's copy of the log ends when it is read, after the command started; the
    # quiet console shows only what came after the init (here: from the command on).
    (kernel_dir / "kernel.log").write_text("".join(lines[: start + 1]))
    (kernel_dir / "console.log").write_text("".join(lines[start + 1 :]))

    assert timeline.phases(kernel_dir) == whole
    assert "boot: kernel to /init" in whole and "boot: power-off" in whole


def test_what_a_kernel_lacks_is_left_out(kernel_dir: Path) -> None:
    (kernel_dir / "guest-times.json").unlink()
    (kernel_dir / "console.log").write_text("")

    rows = timeline.phases(kernel_dir)

    assert list(rows) == ["host: prepare", "host: build"]
    assert timeline.case_seconds(kernel_dir) is None


def test_render_shows_each_kernel_with_the_guest_inside_the_command(kernel_dir: Path) -> None:
    text = timeline.render(kernel_dir.parent)

    assert text.startswith("6.1.0-57-amd64: where the time went (s)\n")
    assert "\n  boot: command " in text
    assert "\n    cases: attach " in text
    assert timeline.render(kernel_dir / "nothing-here") == ""
