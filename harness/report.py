"""Results of a run: read from the JUnit file, shown as a table and a Markdown summary.

The contract between the VM tests and this module: each test case records these
properties with pytest's ``record_property`` (they land in the JUnit file), and the
report is built from the JUnit file alone.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.errors import ResultsError

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
)  # fmt: skip

PROTOCOLS = ("tcp", "udp", "icmp")


@dataclass(frozen=True)
class CaseResult:
    """One test case of one kernel and one loader."""

    name: str
    outcome: str  # "passed", "failed", "error", "skipped"
    message: str
    properties: dict[str, str]


#: The JUnit file ``invoke test`` writes and ``invoke report`` reads, in the results directory.
JUNIT_NAME = "junit.xml"


def junit_path() -> Path:
    """Where a run's JUnit file is: ``build/results/junit.xml`` unless configured otherwise."""
    return paths.results_dir() / JUNIT_NAME


#: Exit status of a run, from its cases: the same numbers pytest uses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_CASES = 5

#: How many lines of a failure's message the report keeps.
MESSAGE_LINES = 8

#: Shown where a case has no value (a kernel that never booted has no counts).
MISSING = "-"

# When one case appears twice (pytest writes a second <testcase> for an error in
# teardown after a failure), the worse outcome wins.
_SEVERITY = {"passed": 0, "skipped": 1, "error": 2, "failed": 3}
_VERDICTS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}
_MARKS = {"passed": "✅", "failed": "❌", "error": "❌", "skipped": "⏭️"}


# --- reading -------------------------------------------------------------------------


def parse_junit(path: Path) -> list[CaseResult]:
    """The test cases of a JUnit XML file as pytest writes it (``--junitxml``).

    Raises :class:`ResultsError` when the file is missing, not XML, or not JUnit.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError as exc:
        raise ResultsError(
            f"no JUnit file at {path}; run `invoke test` first, or name the file with --junit FILE"
        ) from exc
    except OSError as exc:
        raise ResultsError(f"cannot read the JUnit file {path}: {exc.strerror or exc}") from exc
    except ElementTree.ParseError as exc:
        raise ResultsError(
            f"{path} is not well-formed XML ({exc}); an interrupted run may have cut it "
            "short: run `invoke test` again"
        ) from exc
    return parse_junit_root(root, source=str(path))


def parse_junit_root(root: ElementTree.Element, *, source: str) -> list[CaseResult]:
    """The test cases under a parsed ``<testsuites>`` or ``<testsuite>`` element."""
    if root.tag not in ("testsuites", "testsuite"):
        raise ResultsError(
            f"{source} is XML but not a JUnit file: its root element is <{root.tag}>, "
            "expected <testsuites> or <testsuite> (as written by pytest --junitxml)"
        )
    merged: dict[tuple[str, str], CaseResult] = {}
    for element in root.iter("testcase"):
        name = element.get("name")
        if not name:
            raise ResultsError(f"{source}: a <testcase> has no name attribute; is it a JUnit file?")
        case = _case(element, name)
        key = (element.get("classname", ""), name)
        merged[key] = _merge(merged[key], case) if key in merged else case
    return list(merged.values())


def _case(element: ElementTree.Element, name: str) -> CaseResult:
    properties: dict[str, str] = {}
    for prop in element.iterfind("properties/property"):
        key = prop.get("name")
        if key:
            properties[key] = prop.get("value", prop.text or "")
    outcome, message = "passed", ""
    for tag, result in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        child = element.find(tag)
        if child is not None:
            outcome = result
            message = _first_lines(child.get("message") or child.text or "")
            break
    return CaseResult(name=name, outcome=outcome, message=message, properties=properties)


def _merge(first: CaseResult, second: CaseResult) -> CaseResult:
    worse = first if _SEVERITY[first.outcome] >= _SEVERITY[second.outcome] else second
    messages = [m for m in (first.message, second.message) if m]
    return CaseResult(
        name=first.name,
        outcome=worse.outcome,
        message="\n".join(messages),
        properties={**second.properties, **first.properties},
    )


def _first_lines(text: str, limit: int = MESSAGE_LINES) -> str:
    lines = text.strip().splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines in the JUnit file)"]
    return "\n".join(line.rstrip() for line in lines)


# --- the cells both renderings share ------------------------------------------------


@dataclass(frozen=True)
class _Column:
    header: str
    width: int  # the least width in the terminal table; wider content widens it
    numeric: bool = False


_COLUMNS = (
    _Column("kernel", 6),
    _Column("release", 20),
    _Column("accel", 5),
    _Column("boot s", 6, numeric=True),
    _Column("loader", 6),
    *(_Column(f"{proto.upper()} map:capture", 17, numeric=True) for proto in PROTOCOLS),
    _Column("verdict", 7),
)


def _value(case: CaseResult, key: str) -> str:
    return case.properties.get(key, "").strip() or MISSING


def _kernel(case: CaseResult) -> str:
    kernel = case.properties.get("kernel", "").strip()
    if "/" in kernel:
        # A kernel of the user's own, given by path: its file or directory name is
        # enough beside the release column; the full path is in the JUnit file.
        return kernel.rstrip("/").rsplit("/", 1)[-1]
    if kernel:
        return kernel
    # A case that failed before recording anything still names its parameters.
    match = re.search(r"\[(.+)\]$", case.name)
    return match.group(1) if match else case.name


def _seconds(case: CaseResult) -> str:
    raw = _value(case, "boot_seconds")
    try:
        return f"{float(raw):.1f}"
    except ValueError:
        return raw


def _counts(case: CaseResult, proto: str, *, differ: str) -> str:
    counted = _value(case, f"{proto}_map")
    captured = _value(case, f"{proto}_capture")
    if counted == MISSING and captured == MISSING:
        return MISSING
    if MISSING in (counted, captured):
        return f"{counted} vs {captured}"
    sign = "=" if counted == captured else differ
    return f"{counted} {sign} {captured}"


def _cells(case: CaseResult, *, differ: str = "!=") -> list[str]:
    return [
        _kernel(case),
        _value(case, "release"),
        _value(case, "accel"),
        _seconds(case),
        _value(case, "loader"),
        *(_counts(case, proto, differ=differ) for proto in PROTOCOLS),
        _VERDICTS.get(case.outcome, case.outcome.upper()),
    ]


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Order "5.10" after "5.4" and "6.12" after "6.6"."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)
    )


def _ordered(cases: Sequence[CaseResult]) -> list[CaseResult]:
    # Parallel runs write cases in the order they finish; the report reads by kernel.
    return sorted(cases, key=lambda c: (_natural(_kernel(c)), _value(c, "loader"), c.name))


def _tally(cases: Sequence[CaseResult]) -> str:
    counts = {outcome: 0 for outcome in _SEVERITY}
    for case in cases:
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
    words = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}
    parts = [f"{counts[o]} {words.get(o, o)}" for o in ("passed", "failed", "error", "skipped")]
    return ", ".join(part for part in parts if not part.startswith("0 "))


# --- rendering ----------------------------------------------------------------------


def render_table(cases: Sequence[CaseResult]) -> str:
    """A plain-text table for the terminal, one row per case, ordered by kernel and loader."""
    rows = [_cells(case) for case in _ordered(cases)]
    widths = [max([col.width, len(col.header), *(len(row[i]) for row in rows)])
              for i, col in enumerate(_COLUMNS)]  # fmt: skip

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if col.numeric else cell.ljust(width)
            for cell, width, col in zip(cells, widths, _COLUMNS, strict=True)
        )
        return "  ".join(padded).rstrip()

    out = [line([col.header for col in _COLUMNS]), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    if not rows:
        out.append("(no test cases)")
    return "\n".join(out) + "\n"


def render_markdown(cases: Sequence[CaseResult], *, title: str = "sockex1 on each kernel") -> str:
    """A GitHub job summary: a headline with counts, the table, and each failure's message."""
    ordered = _ordered(cases)
    code = summary_exit_code(ordered)
    if code == EXIT_NO_CASES:
        return f"### ⚠️ {_escape(title)}: no test cases ran\n"
    mark = "✅" if code == EXIT_OK else "❌"
    out = [f"### {mark} {_escape(title)}: {_tally(ordered)}", ""]

    headers = [col.header for col in _COLUMNS]
    out.append("| " + " | ".join(headers) + " |")
    out.append("| " + " | ".join("---:" if col.numeric else "---" for col in _COLUMNS) + " |")
    for case in ordered:
        cells = [_escape(cell) for cell in _cells(case, differ="≠")]
        cells[-1] = f"{_MARKS.get(case.outcome, '')} {cells[-1]}".strip()
        out.append("| " + " | ".join(cells) + " |")

    failures = [case for case in ordered if case.outcome in ("failed", "error")]
    for case in failures:
        what = f"{case.name}: {_VERDICTS.get(case.outcome, case.outcome)}"
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


def _escape(text: str) -> str:
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
