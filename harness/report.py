"""Results of a run: read from the JUnit file, shown as tables and a Markdown summary.

The contract between the VM tests and this module: each test case records the
properties of :func:`case_properties` (plus one ``cell:<column>`` per report column
of its sample) with pytest's ``record_property``; they land in the JUnit file, and
the report is built from the JUnit file alone. One table per sample, since each
sample has its own columns.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Properties, Skipped, TestCase
from junitparser.junitparser import JUnitXmlError
from rich import box
from rich.console import Console
from rich.table import Table

from harness.errors import ResultsError

#: The fixed properties of every case, in the order of the table's first columns.
FIXED = ("kernel", "release", "accel", "boot_seconds", "sample", "loader")
CELL = "cell:"
#: What a case's cells are when they are not a map's value against the capture's, e.g.
#: a kernel sample's own user program: its cases get a table of their own, so titled.
CELLS = "cells"
#: What the cells are by default, as the tables' titles say it.
MAP_CELLS = "each column: the map's value = the capture's"
MAP_CELLS_SHORT = "each column: map = capture"
#: A remark on a case beyond its verdict, shown under its table (a known upstream defect).
NOTE = "note"

JUNIT_NAME = "junit.xml"

#: Exit status of a run, from its cases: the same numbers pytest uses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_CASES = 5

#: How many lines of a failure's message the report keeps.
MESSAGE_LINES = 8

#: Shown where a case has no value (a kernel that never booted has no counts).
MISSING = "-"

_SEVERITY = {"passed": 0, "skipped": 1, "error": 2, "failed": 3}
#: How each outcome reads in a report.
VERDICTS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}
_MARKS = {"passed": "✅", "failed": "❌", "error": "❌", "skipped": "⏭️"}


@dataclass(frozen=True)
class CaseResult:
    """One test case of one kernel, sample and loader."""

    name: str
    outcome: str  # "passed", "failed", "error", "skipped"
    message: str
    properties: dict[str, str]

    def value(self, key: str) -> str:
        return self.properties.get(key, "").strip() or self._from_name(key) or MISSING

    def _from_name(self, key: str) -> str:
        # A case that never reached its body (a skipped or failed kernel) may have no
        # properties; its id names the kernel (a series has no "-"), the sample (which
        # may have) and the loader (which may not).
        found = re.search(r"\[([^-\]]+)-(.+)-([^-\]]+)\]$", self.name)
        if not found:
            return ""
        return {"kernel": found.group(1), "sample": found.group(2), "loader": found.group(3)}.get(
            key, ""
        )

    @property
    def cells(self) -> dict[str, str]:
        return {k[len(CELL) :]: v for k, v in self.properties.items() if k.startswith(CELL)}


def case_properties(
    *, kernel: str, release: str, accel: str, seconds: float | None, sample: str, loader: str
) -> dict[str, str]:
    """The fixed properties a VM test case records."""
    return {
        "kernel": kernel,
        "release": release,
        "accel": accel,
        "boot_seconds": "" if seconds is None else f"{seconds:.1f}",
        "sample": sample,
        "loader": loader,
    }


# --- reading -------------------------------------------------------------------------


def parse_junit(path: Path) -> list[CaseResult]:
    """The test cases of a JUnit XML file as pytest writes it (``--junitxml``)."""
    if not path.exists():
        raise ResultsError(
            f"no JUnit file at {path}; run `invoke test` first, or name the file with --junit FILE"
        )
    try:
        xml = JUnitXml.fromfile(str(path))
    except OSError as exc:
        raise ResultsError(f"cannot read the JUnit file {path}: {exc.strerror or exc}") from exc
    except (JUnitXmlError, SyntaxError, ValueError) as exc:
        raise ResultsError(
            f"{path} is not a readable JUnit file ({exc}); an interrupted run may have cut "
            "it short: run `invoke test` again"
        ) from exc
    merged: dict[tuple[str, str], CaseResult] = {}
    suites = [xml] if xml._tag == "testsuite" else list(xml)
    for suite in suites:
        for case in suite:
            if not isinstance(case, TestCase):
                continue
            if not case.name:
                raise ResultsError(f"{path}: a <testcase> has no name; is it a JUnit file?")
            result = _case(case)
            key = (case.classname or "", case.name)
            merged[key] = _merge(merged[key], result) if key in merged else result
    return list(merged.values())


def _case(case: TestCase) -> CaseResult:
    properties: dict[str, str] = {}
    block = case.child(Properties)  # type: ignore[no-untyped-call]
    if block is not None:
        for prop in block:
            if prop.name:
                properties[prop.name] = prop.value or ""
    outcome, message = "passed", ""
    for kind, name in ((Failure, "failed"), (Error, "error"), (Skipped, "skipped")):
        found = [r for r in case.result if isinstance(r, kind)]
        if found:
            outcome = name
            message = _first_lines(found[0].message or found[0].text or "")
            break
    return CaseResult(case.name, outcome, message, properties)


def _merge(first: CaseResult, second: CaseResult) -> CaseResult:
    # pytest writes a second <testcase> for an error in teardown: the worse outcome wins.
    worse = first if _SEVERITY[first.outcome] >= _SEVERITY[second.outcome] else second
    messages = [m for m in (first.message, second.message) if m]
    return CaseResult(
        first.name, worse.outcome, "\n".join(messages), {**second.properties, **first.properties}
    )


def _first_lines(text: str, limit: int = MESSAGE_LINES) -> str:
    lines = text.strip().splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines in the JUnit file)"]
    return "\n".join(line.rstrip() for line in lines)


# --- the rows both renderings share ---------------------------------------------------


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Order "5.10" after "5.4" and "6.12" after "6.6"."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)
    )


def _kernel(case: CaseResult) -> str:
    kernel = case.value("kernel")
    # A kernel of the user's own, given by path: its last component is enough beside
    # the release column; the full path is in the JUnit file.
    return kernel.rstrip("/").rsplit("/", 1)[-1] if "/" in kernel else kernel


def _seconds(case: CaseResult) -> str:
    raw = case.value("boot_seconds")
    try:
        return f"{float(raw):.1f}"
    except ValueError:
        return raw


def by_sample(cases: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    """The cases grouped by sample (in name order), each ordered by kernel and loader."""
    groups: dict[str, list[CaseResult]] = {}
    for case in cases:
        groups.setdefault(case.value("sample"), []).append(case)
    return {
        name: sorted(groups[name], key=lambda c: (natural(_kernel(c)), c.value("loader"), c.name))
        for name in sorted(groups)
    }


def tables(
    cases: Sequence[CaseResult], *, short: bool = False
) -> list[tuple[str, str, list[CaseResult]]]:
    """The report's tables as (sample, what its cells are, cases): one per sample, and
    one more for a sample's cases whose cells mean something else (:data:`CELLS`)."""
    found = []
    for sample, group in by_sample(cases).items():
        kinds: dict[str, list[CaseResult]] = {}
        for case in group:
            kinds.setdefault(case.properties.get(CELLS, ""), []).append(case)
        for meaning, members in sorted(kinds.items(), key=lambda item: item[0] != ""):
            found.append((sample, meaning or (MAP_CELLS_SHORT if short else MAP_CELLS), members))
    return found


def _notes(cases: Sequence[CaseResult]) -> list[str]:
    return [
        f"{_kernel(case)} {case.value('loader')}: {case.properties[NOTE]}"
        for case in cases
        if case.properties.get(NOTE)
    ]


def _reasons(cases: Sequence[CaseResult]) -> list[str]:
    """Why each case that failed did: its message's first problem, under its row's names."""
    return [
        f"{VERDICTS[case.outcome]}, {_kernel(case)} {case.value('loader')}: {_reason(case.message)}"
        for case in cases
        if case.outcome in ("failed", "error")
    ]


def _reason(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    problems = [line[2:] for line in lines if line.startswith("- ")]
    return (problems or lines or ["(no message)"])[0]


def _columns(cases: Sequence[CaseResult]) -> list[str]:
    seen: dict[str, None] = {}
    for case in cases:
        for header in case.cells:
            seen.setdefault(header, None)
    return list(seen)


def _row(case: CaseResult, columns: Sequence[str], *, differ: str = "!=") -> list[str]:
    cells = case.cells
    return [
        _kernel(case),
        case.value("release"),
        case.value("accel"),
        _seconds(case),
        case.value("loader"),
        *(cells.get(c, MISSING).replace("!=", differ) for c in columns),
        VERDICTS.get(case.outcome, case.outcome.upper()),
    ]


_HEADERS = ("kernel", "release", "accel", "boot s", "loader")


def _headers(columns: Sequence[str]) -> list[str]:
    return [*_HEADERS, *columns, "verdict"]


def _tally(cases: Sequence[CaseResult]) -> str:
    counts = dict.fromkeys(_SEVERITY, 0)
    for case in cases:
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
    words = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}
    parts = [
        f"{counts[o]} {words[o] if counts[o] != 1 or o != 'error' else 'error'}"
        for o in ("passed", "failed", "error", "skipped")
    ]
    return ", ".join(part for part in parts if not part.startswith("0 "))


# --- rendering ----------------------------------------------------------------------


def render_table(cases: Sequence[CaseResult], *, width: int = 240, color: bool = False) -> str:
    """Plain-text tables for a terminal or a log: one per sample, one row per case, and
    under each the first problem of every case that failed and every note."""
    if not cases:
        return "(no test cases)\n"
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, color_system="auto" if color else None, force_terminal=color
    )
    for sample, meaning, group in tables(cases):
        columns = _columns(group)
        # Not the table's own title, which would wrap at the width of a narrow table.
        console.print(
            f"{sample}: {_tally(group)} ({meaning})", soft_wrap=True, markup=False, highlight=False
        )
        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        numeric = {3, *range(5, 5 + len(columns))}
        for index, header in enumerate(_headers(columns)):
            table.add_column(header, justify="right" if index in numeric else "left", no_wrap=True)
        for case in group:
            table.add_row(*_row(case, columns))
        console.print(table)
        # Each failure's first problem (the whole message is in the JUnit file and in
        # pytest's output), then the notes.
        below = [*_reasons(group), *(f"note, {note}" for note in _notes(group))]
        for line in below:
            console.print(line, soft_wrap=True, markup=False, highlight=False)
        if below:
            console.print()
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def render_markdown(cases: Sequence[CaseResult], *, title: str = "Samples on each kernel") -> str:
    """A GitHub job summary: a headline with counts, a table per sample, each failure's message."""
    code = summary_exit_code(cases)
    if code == EXIT_NO_CASES:
        return f"### ⚠️ {escape(title)}: no test cases ran\n"
    mark = "✅" if code == EXIT_OK else "❌"
    out = [f"### {mark} {escape(title)}: {_tally(cases)}"]
    groups = tables(cases, short=True)
    for sample, meaning, group in groups:
        columns = _columns(group)
        headers = _headers(columns)
        numeric = {3, *range(5, 5 + len(columns))}
        out += [
            "",
            f"#### {escape(sample)}: {_tally(group)} ({escape(meaning)})",
            "",
        ]
        out.append("| " + " | ".join(escape(h) for h in headers) + " |")
        out.append(
            "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(headers))) + " |"
        )
        for case in group:
            cells = [escape(cell) for cell in _row(case, columns, differ="≠")]
            cells[-1] = f"{_MARKS.get(case.outcome, '')} {cells[-1]}".strip()
            out.append("| " + " | ".join(cells) + " |")
        notes = _notes(group)
        if notes:
            out += ["", *(f"- note, {escape(note)}" for note in notes)]
    for _, _, group in groups:
        for case in group:
            if case.outcome not in ("failed", "error"):
                continue
            what = f"{case.name}: {VERDICTS.get(case.outcome, case.outcome)}"
            fence = _fence(case.message)
            out += [
                "",
                f"<details><summary>{html.escape(what)}</summary>",
                "",
                f"{fence}text",
                case.message or "(no message)",
                fence,
                "",
                "</details>",
            ]
    return "\n".join(out) + "\n"


def render_timings(cases: Sequence[CaseResult]) -> str:
    """Each case's phases in the guest (seconds), from the ``timings`` property."""
    lines = []
    for group in by_sample(cases).values():
        for case in group:
            timings = case.properties.get("timings", "")
            if timings:
                lines.append(
                    f"{_kernel(case):>6} {case.value('sample'):<14} "
                    f"{case.value('loader'):<8} {timings}"
                )
    return "\n".join(lines) + "\n" if lines else "(no timings recorded)\n"


def escape(text: str) -> str:
    """Text safe in a Markdown table cell: no HTML, no column breaks, one line."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def summary_exit_code(cases: Sequence[CaseResult]) -> int:
    """0 when every case passed or was skipped, 1 when any failed, 5 when there were none."""
    if not cases:
        return EXIT_NO_CASES
    if any(case.outcome in ("failed", "error") for case in cases):
        return EXIT_FAILED
    return EXIT_OK
