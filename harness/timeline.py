"""Where a kernel's run went, phase by phase, from the files its results directory keeps.

Three clocks: the host's (``timeline.json``: preparing the kernel, building, the VM),
the kernel's console timestamps (the boot's phases, :func:`harness.vm.parse_boot_phases`)
and the guest's (``guest-times.json``, and each case's ``timings`` in its result). The
guest's marks are seconds since the kernel started, like the console's, so the guest
command's time splits into the interpreter's start-up and imports, reading the plan,
importing the Python loader, the cases (each phase summed over them) and the exit.

``invoke test --timings`` and ``invoke report --timings`` print it for each kernel;
``benchmarks/bench_test.py`` takes medians of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import vm
from harness.errors import ResultsError
from harness.guest import kernel_log
from harness.guest.__main__ import TIMES_NAME
from harness.guest.plan import PLAN_NAME
from harness.guest.result import load_result
from harness.run import TIMELINE_NAME

#: A case's phases in the guest, in the order the scenario runs them.
CASE_PHASES = ("capture", "attach", "traffic", "quiet", "dump", "detach")
_GUEST = ("guest:", "cases:")


def phases(kernel_dir: Path) -> dict[str, float]:
    """The phases of one kernel's run, in order, in seconds; what a file lacks is left out."""
    rows: dict[str, float] = {}
    host = _json(kernel_dir / TIMELINE_NAME)
    for name in ("prepare", "build"):
        if name in host:
            rows[f"host: {name}"] = float(host[name])
    boot: dict[str, float] = {}
    ends: dict[str, float] = {}
    # The guest's copy of the kernel log holds the boot's lines a quiet console left
    # out (harness.vm.QUIET_BOOT); the console has what came after it (the power-off).
    console = "".join(_text(kernel_dir / name) for name in (kernel_log.NAME, "console.log"))
    at = 0.0
    for phase in vm.parse_boot_phases(console):
        at += phase.seconds
        boot[phase.name] = phase.seconds
        ends[phase.name] = at
    if "vm" in host and boot:
        rows["vng, qemu, firmware"] = float(host["vm"]) - sum(boot.values())
    guest = _guest(kernel_dir, ends)
    for name, seconds in boot.items():
        rows[f"boot: {name}"] = seconds
        if name == "command":
            rows.update(guest)  # the command's parts, as the guest's clock has them
    rows.update(guest)
    return rows


def _guest(kernel_dir: Path, ends: dict[str, float]) -> dict[str, float]:
    """The guest command's parts; ``ends``: when each boot phase ended (console clock)."""
    times = _json(kernel_dir / TIMES_NAME)
    if not {"main", "start", "end"} <= set(times):
        return {}
    rows: dict[str, float] = {}
    if "to command start" in ends:
        rows["guest: python start-up, imports"] = times["main"] - ends["to command start"]
    loaded = _cases_start(times)
    rows["guest: read the plan"] = times["start"] - times["main"]
    if "loader_imported" in times:
        name = "guest: import the Python loader"
        if times.get("loader_beside"):
            # In a child, while the other loaders' cases ran (harness/guest/beside.py):
            # it overlaps the cases' rows instead of adding to them.
            name = "guest: loader import, beside the cases"
        rows[name] = times["loader_imported"] - times["start"]
    totals = dict.fromkeys(CASE_PHASES, 0.0)
    for result in _results(kernel_dir):
        for name, seconds in result.items():
            totals[name] = totals.get(name, 0.0) + seconds
    for name, seconds in totals.items():
        rows[f"cases: {name}"] = seconds
    rows["cases: between phases (results written)"] = times["end"] - loaded - sum(totals.values())
    if "command" in ends:
        rows["guest: exit"] = ends["command"] - times["end"]
    return rows


def case_seconds(kernel_dir: Path) -> tuple[int, float] | None:
    """How many cases the guest ran and its seconds for them (the loader's import apart)."""
    times = _json(kernel_dir / TIMES_NAME)
    if not {"start", "end"} <= set(times):
        return None
    return len(_results(kernel_dir)), times["end"] - _cases_start(times)


def _cases_start(times: dict[str, Any]) -> float:
    """When the first case started: after the Python loader's import, unless beside them."""
    if times.get("loader_beside"):
        return float(times["start"])
    return float(times.get("loader_imported", times["start"]))


def render(results_dir: Path) -> str:
    """Each kernel's phases under ``results_dir``, one line each, as ``--timings`` prints."""
    blocks = []
    for plan in sorted(results_dir.glob(f"*/{PLAN_NAME}")):
        rows = phases(plan.parent)
        if rows:
            lines = [f"{plan.parent.name}: where the time went (s)"]
            # The guest's own rows are parts of the boot's "command" phase: indented.
            lines += [
                f"    {name:<40}{seconds:>8.2f}"
                if name.startswith(_GUEST)
                else f"  {name:<42}{seconds:>8.2f}"
                for name, seconds in rows.items()
            ]
            blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _results(kernel_dir: Path) -> list[dict[str, float]]:
    """The timings of each case the plan names whose result is there."""
    plan = _json(kernel_dir / PLAN_NAME)
    timings = []
    for case in plan.get("cases", []):
        try:
            timings.append(load_result(Path(case["result"])).timings)
        except (ResultsError, KeyError, TypeError):
            continue
    return timings


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
