"""The A/B comparison: every class, the exit status, and both renderings."""

from __future__ import annotations

import pytest

from harness.compare import (
    CHANGED,
    FIXED,
    GONE,
    NEW,
    REGRESSION,
    SAME,
    Row,
    classify,
    compare,
    deterministic_columns,
    exit_status,
    render_markdown,
    render_table,
)
from harness.errors import ResultsError
from harness.report import CaseResult, case_properties

#: sockex3's crafted-frame counts are the same on every run; sockex1's TCP bytes are not.
STABLE = deterministic_columns({"sockex3": {"GRE"}, "sockex1": {"UDP"}})


def case(
    kernel: str = "6.1",
    sample: str = "sockex3",
    loader: str = "python",
    outcome: str = "passed",
    message: str = "",
    **cells: str,
) -> CaseResult:
    props = case_properties(
        kernel=kernel, release=f"{kernel}.0-1-amd64", accel="tcg", seconds=1.0,
        sample=sample, loader=loader,
    )  # fmt: skip
    props.update({f"cell:{header}": value for header, value in cells.items()})
    return CaseResult(f"test_samples[{kernel}-{sample}-{loader}]", outcome, message, props)


def one(before: CaseResult | None, after: CaseResult | None) -> Row:
    (row,) = compare([before] if before else [], [after] if after else [], STABLE)
    return row


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ("passed", "passed", SAME),
        ("failed", "failed", SAME),
        ("failed", "error", SAME),
        ("skipped", "skipped", SAME),
        ("passed", "failed", REGRESSION),
        ("passed", "error", REGRESSION),
        ("failed", "passed", FIXED),
        ("error", "passed", FIXED),
        ("skipped", "passed", NEW),
        ("skipped", "failed", NEW),
        ("passed", "skipped", GONE),
        ("failed", "skipped", GONE),
    ],
)
def test_each_pair_of_outcomes_has_its_class(before: str, after: str, kind: str) -> None:
    row = one(case(outcome=before, message="why"), case(outcome=after, message="why"))

    assert row.kind == kind
    assert exit_status([row]) == (1 if kind == REGRESSION else 0)


def test_a_regression_says_why_the_candidate_fails() -> None:
    row = one(case(), case(outcome="failed", message="flow_map: 3 != 4\nmore"))

    assert (row.kind, row.differs) == (REGRESSION, "flow_map: 3 != 4")


def test_a_case_on_one_side_only_is_new_or_gone() -> None:
    assert one(None, case()).kind == NEW
    assert one(None, case(outcome="failed")).kind == NEW
    assert one(case(), None).kind == GONE
    assert one(case(outcome="skipped"), None).kind == SAME


def test_a_deterministic_cell_that_differs_is_a_change() -> None:
    row = one(case(GRE="4 = 4", IPIP="4 = 4"), case(GRE="3 = 3", IPIP="4 = 4"))

    assert (row.kind, row.differs) == (CHANGED, "GRE: 4 = 4 -> 3 = 3")


def test_a_cell_that_varies_from_run_to_run_is_not_a_change() -> None:
    before = case(sample="sockex1", TCP="270000 = 270000", UDP="66000 = 66000")
    after = case(sample="sockex1", TCP="270112 = 270112", UDP="66000 = 66000")

    assert one(before, after).kind == SAME


def test_a_deterministic_column_is_per_sample() -> None:
    # "UDP" is deterministic for sockex1 only.
    before = case(sample="sockex2", UDP="1 = 1")
    after = case(sample="sockex2", UDP="2 = 2")

    assert one(before, after).kind == SAME


def test_a_deterministic_cell_missing_on_one_side_is_a_change() -> None:
    row = one(case(GRE="4 = 4"), case())

    assert (row.kind, row.differs) == (CHANGED, "GRE: 4 = 4 -> -")


def test_cells_of_failing_cases_are_not_compared() -> None:
    assert (
        one(case(outcome="failed", GRE="1 = 4"), case(outcome="failed", GRE="2 = 4")).kind == SAME
    )


def test_cases_match_by_kernel_sample_and_loader() -> None:
    baseline = [case("6.1", loader="python"), case("6.1", loader="c"), case("5.10")]
    candidate = [case("6.1", loader="c"), case("6.1", loader="python", outcome="failed")]

    rows = {row.key: row.kind for row in compare(baseline, candidate, STABLE)}

    assert rows == {
        ("6.1", "sockex3", "python"): REGRESSION,
        ("6.1", "sockex3", "c"): SAME,
        ("5.10", "sockex3", "python"): GONE,
    }


def test_a_case_without_properties_is_keyed_by_its_name() -> None:
    # A kernel that never booted leaves cases with no properties, only the test id.
    bare = CaseResult("test_samples[6.1-sockex1-btf-c]", "error", "boot failed", {})

    row = one(case(sample="sockex1-btf", loader="c"), bare)

    assert (row.key, row.kind) == (("6.1", "sockex1-btf", "c"), REGRESSION)


def test_rows_are_ordered_regressions_first() -> None:
    baseline = [case("5.10"), case("6.1", outcome="failed"), case("6.12"), case("7.2")]
    candidate = [case("5.10"), case("6.1"), case("6.12", outcome="error"), case("6.6")]

    rows = compare(baseline, candidate, STABLE)

    assert [(r.kernel, r.kind) for r in rows] == [
        ("6.12", REGRESSION),
        ("6.1", FIXED),
        ("6.6", NEW),
        ("7.2", GONE),
        ("5.10", SAME),
    ]


def test_only_regressions_make_the_exit_status_1() -> None:
    fixed_only = compare([case(outcome="failed")], [case()], STABLE)
    assert exit_status(fixed_only) == 0
    assert exit_status(compare([case()], [case(outcome="failed")], STABLE)) == 1
    assert exit_status([]) == 0


def test_the_same_key_twice_on_one_side_is_an_error() -> None:
    with pytest.raises(ResultsError, match=r"the candidate run has two cases for kernel 6\.1,"):
        compare([case()], [case(), case()], STABLE)


def test_classify_needs_a_case_on_one_side_at_least() -> None:
    assert classify("sockex3", None, None, STABLE) == (SAME, "")


def test_the_table_shows_each_row_with_both_verdicts() -> None:
    rows = compare(
        [case(loader="c"), case(outcome="failed")],
        [case(loader="c", outcome="failed", message="no ready"), case()],
        STABLE,
    )

    text = render_table(rows)

    lines = text.splitlines()
    assert lines[0] == "baseline vs candidate: 1 regression, 1 fixed"
    assert lines[2].split() == ["kernel", "sample", "loader", "baseline", "candidate", "class",
                                "what", "differs"]  # fmt: skip
    assert lines[4].split() == ["6.1", "sockex3", "c", "PASS", "FAIL", "regression", "no", "ready"]
    assert lines[5].split()[:6] == ["6.1", "sockex3", "python", "FAIL", "PASS", "fixed"]
    assert render_table([]) == "(no test cases on either side)\n"


def test_the_markdown_table_escapes_cells_and_marks_a_regression() -> None:
    rows = compare([case()], [case(outcome="failed", message="a | b <x>")], STABLE)

    text = render_markdown(rows)

    assert text.startswith("### ❌ Baseline vs candidate: 1 regression\n")
    assert "| 6.1 | sockex3 | python | PASS | FAIL | **regression** | a \\| b &lt;x&gt; |" in text
    assert render_markdown(compare([case()], [case()], STABLE)).startswith("### ✅")
