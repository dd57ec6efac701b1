"""A/B: a baseline run's cases against a candidate run's, one classified row per case.

Both sides are lists of :class:`~harness.report.CaseResult` (each read from its own
JUnit file with :func:`harness.report.parse_junit`), matched by (kernel, sample,
loader). Each key gets one class:

``regression``
    it passed before and fails now (failed or error): the class the exit status is for;
``fixed``
    it failed before (failed or error) and passes now;
``changed``
    it passes on both sides, but a cell whose numbers are deterministic differs;
``new``
    it runs only in the candidate: absent from the baseline, or skipped there;
``gone``
    it ran only in the baseline: absent from the candidate, or skipped there;
``same``
    anything else: the same verdict (failed and error count as one verdict, both
    skipped is ``same``) and no deterministic cell differs.

A skipped case did not run, so it has no verdict to compare: a skip on one side only
makes the case ``new`` or ``gone``, whatever the other side's verdict (a case that
passed before and is skipped now is lost coverage, shown as ``gone``, not a failure).
For the same reason a ``new`` case that fails is not a regression; its verdict is in
its row.

Which cells are deterministic is the caller's knowledge, not this module's: a count
of crafted frames is the same on every run, the bytes of a TCP stream are not (ACKs
and segmentation vary). ``deterministic(sample, column)`` says it per column header;
:func:`deterministic_columns` makes one from a set of headers per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import ResultsError
from harness.report import (
    EXIT_FAILED,
    EXIT_OK,
    MISSING,
    VERDICTS,
    CaseResult,
    escape,
    natural,
)

REGRESSION = "regression"
FIXED = "fixed"
CHANGED = "changed"
NEW = "new"
GONE = "gone"
SAME = "same"
#: The classes in the order rows are shown: what needs attention first.
CLASSES = (REGRESSION, FIXED, CHANGED, NEW, GONE, SAME)

#: (sample, column header) -> whether that column's numbers are the same on every run.
Deterministic = Callable[[str, str], bool]

Key = tuple[str, str, str]  # (kernel, sample, loader)

_FAILING = ("failed", "error")
HEADERS = ("kernel", "sample", "loader", "baseline", "candidate", "class", "what differs")


@dataclass(frozen=True)
class Row:
    """One (kernel, sample, loader) of the comparison."""

    kernel: str
    sample: str
    loader: str
    baseline: CaseResult | None
    candidate: CaseResult | None
    kind: str  # one of CLASSES
    differs: str = ""  # what differs, in words; "" when nothing does

    @property
    def key(self) -> Key:
        return (self.kernel, self.sample, self.loader)


def deterministic_columns(columns: Mapping[str, Collection[str]]) -> Deterministic:
    """``deterministic`` for the column headers of ``columns[sample]``; no others."""
    return lambda sample, header: header in columns.get(sample, ())


def case_key(case: CaseResult) -> Key:
    return (case.value("kernel"), case.value("sample"), case.value("loader"))


def _by_key(cases: Iterable[CaseResult], side: str) -> dict[Key, CaseResult]:
    found: dict[Key, CaseResult] = {}
    for case in cases:
        key = case_key(case)
        if key in found:
            raise ResultsError(
                f"the {side} run has two cases for kernel {key[0]}, sample {key[1]}, loader "
                f"{key[2]} ({found[key].name} and {case.name}); compare the JUnit files of "
                "single runs"
            )
        found[key] = case
    return found


def _verdict(case: CaseResult | None) -> str:
    if case is None:
        return MISSING
    return VERDICTS.get(case.outcome, case.outcome.upper())


def _cell_changes(
    sample: str, before: CaseResult, after: CaseResult, deterministic: Deterministic
) -> list[str]:
    old, new = before.cells, after.cells
    headers = list(dict.fromkeys([*old, *new]))
    return [
        f"{header}: {old.get(header, MISSING)} -> {new.get(header, MISSING)}"
        for header in headers
        if deterministic(sample, header) and old.get(header) != new.get(header)
    ]


def classify(
    sample: str,
    before: CaseResult | None,
    after: CaseResult | None,
    deterministic: Deterministic,
) -> tuple[str, str]:
    """The class of one key and what differs (see the module's docstring)."""
    ran_before = before is not None and before.outcome != "skipped"
    ran_after = after is not None and after.outcome != "skipped"
    if before is None or after is None or not (ran_before and ran_after):
        if not ran_before and not ran_after:
            return SAME, ""
        if ran_after:
            return NEW, "skipped in the baseline" if before is not None else "not in the baseline"
        return GONE, "skipped in the candidate" if after is not None else "not in the candidate"
    failed_before, failed_after = before.outcome in _FAILING, after.outcome in _FAILING
    if not failed_before and failed_after:
        return REGRESSION, _first_line(after.message)
    if failed_before and not failed_after:
        return FIXED, _first_line(before.message)
    if failed_before:
        # Both fail: the same verdict, though the message may say something else now.
        return (
            SAME,
            "" if before.outcome == after.outcome else f"{_verdict(before)} -> {_verdict(after)}",
        )
    changes = _cell_changes(sample, before, after, deterministic)
    return (CHANGED, "; ".join(changes)) if changes else (SAME, "")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def compare(
    baseline: Sequence[CaseResult],
    candidate: Sequence[CaseResult],
    deterministic: Deterministic,
) -> list[Row]:
    """One row per (kernel, sample, loader) of either side, regressions first."""
    before, after = _by_key(baseline, "baseline"), _by_key(candidate, "candidate")
    rows = []
    for key in before.keys() | after.keys():
        kind, differs = classify(key[1], before.get(key), after.get(key), deterministic)
        rows.append(Row(*key, before.get(key), after.get(key), kind, differs))
    return sorted(
        rows,
        key=lambda r: (
            CLASSES.index(r.kind),
            natural(r.kernel),
            r.sample,
            r.loader,
        ),
    )


def exit_status(rows: Iterable[Row]) -> int:
    """1 when any case regressed, else 0 (fixes, changes, new and gone cases included)."""
    return EXIT_FAILED if any(row.kind == REGRESSION for row in rows) else EXIT_OK


def tally(rows: Sequence[Row]) -> str:
    """``1 regression, 2 fixed, 9 same``: the count of each class present."""
    counts = {kind: sum(1 for row in rows if row.kind == kind) for kind in CLASSES}
    words = {REGRESSION: "regressions"}
    return ", ".join(
        f"{n} {words.get(kind, kind) if n != 1 else kind}" for kind, n in counts.items() if n
    )


def _cells(row: Row) -> list[str]:
    return [
        row.kernel,
        row.sample,
        row.loader,
        _verdict(row.baseline),
        _verdict(row.candidate),
        row.kind,
        row.differs,
    ]


def render_table(rows: Sequence[Row]) -> str:
    """The comparison as plain text, aligned columns, one line per row."""
    if not rows:
        return "(no test cases on either side)\n"
    lines = [list(HEADERS), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    out = [f"baseline vs candidate: {tally(rows)}", ""]
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def render_markdown(rows: Sequence[Row], *, title: str = "Baseline vs candidate") -> str:
    """The comparison as a Markdown table for a job summary, a headline with the counts first."""
    if not rows:
        return f"### ⚠️ {escape(title)}: no test cases on either side\n"
    mark = "❌" if exit_status(rows) else "✅"
    out = [f"### {mark} {escape(title)}: {tally(rows)}", ""]
    out.append("| " + " | ".join(HEADERS) + " |")
    out.append("| " + " | ".join("---" for _ in HEADERS) + " |")
    for row in rows:
        cells = [escape(cell) for cell in _cells(row)]
        cells[5] = f"**{cells[5]}**" if row.kind == REGRESSION else cells[5]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
