"""The report: JUnit files as pytest writes them, rendered as a table and a job summary."""

from __future__ import annotations

import importlib
import os
import stat
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from harness.errors import HarnessError, ResultsError
from harness.paths import PROJECT_ROOT
from harness.report import (
    EXIT_FAILED,
    EXIT_NO_CASES,
    EXIT_OK,
    MESSAGE_LINES,
    PROPERTIES,
    CaseResult,
    junit_path,
    parse_junit,
    render_markdown,
    render_table,
    summary_exit_code,
)

pytest_plugins = ["pytester"]

JUNIT = Path(__file__).resolve().parent.parent / "data" / "junit"


def case(
    name: str = "test_sockex1[6.1-python]", outcome: str = "passed", **props: str
) -> CaseResult:
    return CaseResult(name=name, outcome=outcome, message="", properties=dict(props))


def full(kernel: str, loader: str, **overrides: str) -> CaseResult:
    props = {
        "kernel": kernel,
        "release": f"{kernel}.0-1-amd64",
        "accel": "tcg",
        "boot_seconds": "7.8",
        "loader": loader,
        "tcp_map": "1000",
        "tcp_capture": "1000",
        "udp_map": "20",
        "udp_capture": "20",
        "icmp_map": "3",
        "icmp_capture": "3",
    }
    props.update(overrides)
    return CaseResult(f"test_sockex1[{kernel}-{loader}]", "passed", "", props)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(textwrap.dedent(body).strip() + "\n", encoding="utf-8")
    return path


# --- parse_junit ---------------------------------------------------------------------


def test_parses_every_case_with_its_properties() -> None:
    cases = parse_junit(JUNIT / "all_passed.xml")

    assert [c.name for c in cases] == [
        "test_sockex1[6.1-python]",
        "test_sockex1[5.10-c]",
        "test_sockex1[6.1-c]",
        "test_sockex1[5.10-python]",
    ]
    assert {c.outcome for c in cases} == {"passed"}
    assert all(c.message == "" for c in cases)
    assert set(cases[0].properties) == set(PROPERTIES)
    assert cases[1].properties["release"] == "5.10.0-46-amd64"
    assert cases[1].properties["tcp_capture"] == "1066420"


def test_outcomes_and_messages_come_from_the_children() -> None:
    by_name = {c.name: c for c in parse_junit(JUNIT / "mixed.xml")}

    assert by_name["test_sockex1[6.12-python]"].outcome == "passed"
    mismatch = by_name["test_sockex1[6.12-c]"]
    assert mismatch.outcome == "failed"
    assert mismatch.message.splitlines() == [
        "AssertionError: tcp: the map counted 1044120 bytes, the capture saw 1066312 "
        "(console log: build/results/6.12/console.log)",
        "assert 1044120 == 1066312",
    ]
    assert by_name["test_sockex1[7.2-python]"].outcome == "error"
    assert "VmTimeoutError" in by_name["test_sockex1[7.2-python]"].message
    skipped = by_name["test_sockex1[6.6-python]"]
    assert (skipped.outcome, skipped.message) == (
        "skipped",
        "no kernel of series 6.6 in the configured sources",
    )
    never_ran = by_name["test_sockex1[5.10-python]"]
    assert (never_ran.outcome, never_ran.properties) == ("error", {})


def test_a_case_written_twice_is_one_case_with_the_worse_outcome() -> None:
    # pytest writes a second <testcase> when teardown errors after a failure.
    cases = [c for c in parse_junit(JUNIT / "mixed.xml") if c.name == "test_sockex1[6.1-python]"]

    assert len(cases) == 1
    assert cases[0].outcome == "failed"
    assert "3 packets dropped" in cases[0].message
    assert "ProcessLookupError" in cases[0].message


def test_a_bare_testsuite_root_is_read_too() -> None:
    (only,) = parse_junit(JUNIT / "single_suite.xml")

    assert only.name == "test_sockex1[7.2-c]"
    assert only.properties["accel"] == "kvm"
    assert "udp_map" not in only.properties


def test_a_file_without_cases_gives_no_cases() -> None:
    assert parse_junit(JUNIT / "no_cases.xml") == []


def test_long_messages_keep_their_first_lines(tmp_path: Path) -> None:
    lines = "&#10;".join(f"line {i}" for i in range(MESSAGE_LINES + 5))
    path = write(
        tmp_path,
        f"""
        <testsuites><testsuite name="pytest">
          <testcase classname="t" name="test_long">
            <failure message="{lines}">trace</failure>
          </testcase>
        </testsuite></testsuites>
        """,
    )

    (only,) = parse_junit(path)

    kept = only.message.splitlines()
    assert kept[:MESSAGE_LINES] == [f"line {i}" for i in range(MESSAGE_LINES)]
    assert kept[MESSAGE_LINES:] == ["... (5 more lines in the JUnit file)"]


def test_a_failure_without_a_message_attribute_uses_its_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        <testsuites><testsuite name="pytest">
          <testcase classname="t" name="test_x"><error>
            boom
            second</error></testcase>
        </testsuite></testsuites>
        """,
    )

    (only,) = parse_junit(path)

    assert only.outcome == "error"
    assert [line.strip() for line in only.message.splitlines()] == ["boom", "second"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.xml", "no JUnit file at .*missing.xml; run `invoke test` first"),
        ("truncated.xml", "truncated.xml is not well-formed XML .*run `invoke test` again"),
        ("not_junit.xml", "root element is <html>, expected <testsuites> or <testsuite>"),
    ],
)
def test_unreadable_files_raise_a_results_error(name: str, expected: str) -> None:
    with pytest.raises(ResultsError, match=expected) as info:
        parse_junit(JUNIT / name)

    assert isinstance(info.value, HarnessError)
    assert info.value.__cause__ is not None or name == "not_junit.xml"


def test_a_directory_is_not_a_junit_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="cannot read the JUnit file"):
        parse_junit(tmp_path)


def test_a_testcase_without_a_name_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, '<testsuites><testsuite><testcase classname="t"/></testsuite></testsuites>'
    )

    with pytest.raises(ResultsError, match="has no name attribute"):
        parse_junit(path)


def test_reads_what_pytest_itself_writes(pytester: pytest.Pytester) -> None:
    """The contract end to end: record_property in a test, parse_junit on pytest's file."""
    values = {name: f"v-{name}" for name in PROPERTIES}
    pytester.makepyfile(
        f"""
        import pytest

        VALUES = {values!r}

        @pytest.mark.parametrize("loader", ["python", "c"])
        def test_sockex1(record_property, loader):
            for name, value in VALUES.items():
                record_property(name, value)
            if loader == "c":
                pytest.fail("c loader:\\n  - tcp: map 1 != capture 2", pytrace=False)
        """
    )
    junit = pytester.path / "junit.xml"

    pytester.runpytest_inprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")

    passed, failed = parse_junit(junit)
    assert (passed.name, passed.outcome, passed.properties) == (
        "test_sockex1[python]",
        "passed",
        values,
    )
    assert failed.outcome == "failed"
    assert failed.message == "Failed: c loader:\n  - tcp: map 1 != capture 2"


# --- render_table --------------------------------------------------------------------


def test_table_of_a_recorded_run() -> None:
    table = render_table(parse_junit(JUNIT / "all_passed.xml"))

    expected = (JUNIT / "all_passed.table.txt").read_text(encoding="utf-8")
    assert table == expected


def test_table_shows_a_dash_where_a_kernel_never_booted() -> None:
    never_booted = case(
        "test_sockex1[7.2-python]", "error", kernel="7.2", release="7.2.13+deb14-amd64"
    )

    row = render_table([never_booted]).splitlines()[2]

    assert row.split() == ["7.2", "7.2.13+deb14-amd64", "-", "-", "-", "-", "-", "-", "ERROR"]


def test_table_names_a_case_that_recorded_nothing_by_its_parameters() -> None:
    row = render_table([case("test_sockex1[5.10-c]", "error")]).splitlines()[2]

    assert row.split()[0] == "5.10-c"
    assert row.split()[1:] == ["-"] * 7 + ["ERROR"]


def test_table_names_a_kernel_given_by_path_by_its_last_component() -> None:
    own = full("/home/dev/linux/arch/x86/boot/bzImage", "c")
    tree = full("/home/dev/linux/", "python")

    rows = render_table([own, tree]).splitlines()[2:]

    assert sorted(row.split()[0] for row in rows) == ["bzImage", "linux"]


def test_table_marks_counts_that_differ() -> None:
    cases = [full("6.1", "c", tcp_map="990"), full("6.1", "python", udp_capture="")]

    rows = render_table(cases).splitlines()[2:]

    assert "990 != 1000" in rows[0]
    assert "20 vs -" in rows[1]  # a count one side never reported


def test_table_orders_kernels_as_versions() -> None:
    kernels = ["6.12", "5.10", "7.2", "6.1", "6.6"]

    rows = render_table([full(k, "python") for k in kernels]).splitlines()[2:]

    assert [row.split()[0] for row in rows] == ["5.10", "6.1", "6.6", "6.12", "7.2"]


def test_table_columns_do_not_move_with_the_content() -> None:
    one = render_table([full("6.1", "c")]).splitlines()
    many = render_table([full("5.10", "python"), full("7.2", "c", tcp_map="1234567")]).splitlines()

    assert one[0] == many[0]  # the header
    verdict = one[0].index("verdict")
    assert {line.rfind("PASS") for line in [*one[2:], *many[2:]]} == {verdict}


def test_table_widens_a_column_for_long_content() -> None:
    long = "6.1-with-a-long-local-name"
    lines = render_table([full(long, "c"), full("6.1", "c")]).splitlines()

    assert lines[1].split()[0] == "-" * len(long)
    row = next(line for line in lines if line.startswith("6.1 "))
    assert row.index("6.1.0-1-amd64") == lines[0].index("release") > len(long)


def test_table_without_cases_says_so() -> None:
    assert render_table([]).splitlines()[-1] == "(no test cases)"


def test_boot_seconds_that_are_not_a_number_are_shown_as_recorded() -> None:
    assert "n/a" in render_table([full("6.1", "c", boot_seconds="n/a")])


# --- render_markdown -----------------------------------------------------------------


def test_markdown_of_a_recorded_run_with_failures() -> None:
    cases = parse_junit(JUNIT / "mixed.xml")

    text = render_markdown(cases, title="sockex1")

    lines = text.splitlines()
    assert lines[0] == "### ❌ sockex1: 1 passed, 2 failed, 2 errors, 1 skipped"
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 2 + len(cases)
    assert table[1] == "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- |"
    mismatch = "| 6.12 | 6.12.117+deb13-amd64 | kvm | 3.4 | c | 1044120 ≠ 1066312 | 0 = 0 | 0 = 0 |"
    assert f"{mismatch} ❌ FAIL |" in table
    assert "| 7.2 | 7.2.13+deb14-amd64 | - | - | python | - | - | - | ❌ ERROR |" in table
    assert text.count("<details>") == 4  # two failures and two errors, not the skip
    assert "<summary>test_sockex1[6.12-c]: FAIL</summary>" in text
    assert "the map counted 1044120 bytes, the capture saw 1066312" in text
    assert text.count("</details>") == 4


def test_markdown_headline_when_everything_passed() -> None:
    text = render_markdown(parse_junit(JUNIT / "all_passed.xml"))

    assert text.splitlines()[0] == "### ✅ sockex1 on each kernel: 4 passed"
    assert "<details>" not in text


def test_markdown_without_cases_says_nothing_ran() -> None:
    assert render_markdown([], title="sockex1") == "### ⚠️ sockex1: no test cases ran\n"


def test_markdown_cells_cannot_break_the_table() -> None:
    odd = case("test_x[a|b]", "passed", kernel="my|kernel <b>", release="r1\nr2")

    row = next(line for line in render_markdown([odd]).splitlines() if "my" in line)

    assert row.startswith("| my\\|kernel &lt;b&gt; | r1 r2 | - |")
    assert row.count(" | ") == 8


def test_markdown_message_cannot_close_its_code_block() -> None:
    broken = CaseResult("test_x", "failed", "look:\n```\n<script>", {"kernel": "6.1"})

    text = render_markdown([broken])

    assert "\n````text\nlook:\n```\n<script>\n````\n" in text


def test_markdown_escapes_the_summary_line() -> None:
    broken = CaseResult("test_x[<6.1>]", "error", "", {})

    assert "<summary>test_x[&lt;6.1&gt;]: ERROR</summary>" in render_markdown([broken])


# --- summary_exit_code ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        (["passed", "passed"], EXIT_OK),
        (["passed", "skipped"], EXIT_OK),
        (["skipped"], EXIT_OK),
        (["passed", "failed"], EXIT_FAILED),
        (["error", "passed"], EXIT_FAILED),
        ([], EXIT_NO_CASES),
    ],
)
def test_exit_code(outcomes: list[str], code: int) -> None:
    assert summary_exit_code([case(f"t{i}", o) for i, o in enumerate(outcomes)]) == code


def test_exit_codes_are_pytests() -> None:
    assert (EXIT_OK, EXIT_FAILED, EXIT_NO_CASES) == (
        pytest.ExitCode.OK,
        pytest.ExitCode.TESTS_FAILED,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    )


# --- invoke report -------------------------------------------------------------------


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The project's tasks.py, the front door (it sits beside the package, not in it)."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT))
    return importlib.import_module("tasks")


def test_invoke_report_prints_the_table(
    tasks: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks.report(Context(), junit=str(JUNIT / "all_passed.xml"))

    expected = (JUNIT / "all_passed.table.txt").read_text(encoding="utf-8")
    assert capsys.readouterr().out == expected


def test_invoke_report_writes_markdown_to_a_file(tasks: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "summary" / "report.md"
    tasks.report(Context(), junit=str(JUNIT / "mixed.xml"), format="markdown", output=str(out))

    assert out.read_text(encoding="utf-8") == render_markdown(
        parse_junit(JUNIT / "mixed.xml"), title="sockex1 on each kernel"
    )
    assert [p.name for p in out.parent.iterdir()] == ["report.md"]


@pytest.mark.parametrize(("name", "code"), [("mixed.xml", 1), ("no_cases.xml", 5)])
def test_invoke_report_check_exits_like_pytest(
    tasks: ModuleType, name: str, code: int, tmp_path: Path
) -> None:
    with pytest.raises(Exit) as info:
        tasks.report(Context(), junit=str(JUNIT / name), check=True, output=str(tmp_path / "r.md"))

    assert info.value.code == code


def test_invoke_report_check_passes_a_good_run(tasks: ModuleType, tmp_path: Path) -> None:
    tasks.report(
        Context(), junit=str(JUNIT / "all_passed.xml"), check=True, output=str(tmp_path / "r.md")
    )


def test_invoke_report_writes_into_a_device_instead_of_replacing_it(
    tasks: ModuleType, tmp_path: Path
) -> None:
    # A FIFO stands in for /dev/null or /dev/stdout: the report goes through it and the
    # FIFO itself stays a FIFO. Its read end is open first, so the write cannot block.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        tasks.report(Context(), junit=str(JUNIT / "all_passed.xml"), output=str(fifo))
        received = os.read(read_end, 1 << 16).decode()
    finally:
        os.close(read_end)

    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert "PASS" in received


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"junit": str(JUNIT / "missing.xml")}, "error: no JUnit file at"),
        ({"junit": str(JUNIT / "all_passed.xml"), "format": "html"}, "unknown report format"),
    ],
)
def test_invoke_report_errors_are_clear(
    tasks: ModuleType, options: dict[str, str], message: str
) -> None:
    with pytest.raises(Exit) as info:
        tasks.report(Context(), **options)

    assert info.value.code == 1
    assert message in str(info.value.message)


def test_the_default_junit_file_is_in_the_results_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(tmp_path))

    assert junit_path() == tmp_path / "results" / "junit.xml"


def test_invoke_report_reads_the_default_junit_file(
    tasks: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(tmp_path))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "junit.xml").write_bytes((JUNIT / "mixed.xml").read_bytes())

    tasks.report(Context(), format="markdown", title="here")

    assert capsys.readouterr().out.startswith("### ❌ here: 1 passed, 2 failed")


def test_a_recorded_vm_run_carries_the_whole_contract() -> None:
    """A JUnit file from a real `invoke test --kernel 6.1` (both loaders, under TCG)."""
    cases = parse_junit(JUNIT / "recorded_6.1_tcg.xml")

    assert [(c.properties["loader"], c.outcome) for c in cases] == [
        ("python", "passed"),
        ("c", "passed"),
    ]
    assert all(set(c.properties) == set(PROPERTIES) for c in cases)
    assert summary_exit_code(cases) == EXIT_OK
    assert "| 6.1 | 6.1.0-56-amd64 | tcg | 28.8 | c | 526960 = 526960 |" in render_markdown(cases)


def test_a_recorded_run_of_four_kernels_reads_in_version_order() -> None:
    """A JUnit file from a real `invoke test` of 5.10, 6.1, 6.12 and 7.2 under TCG."""
    cases = parse_junit(JUNIT / "recorded_4_kernels_tcg.xml")
    rows = render_table(cases).splitlines()[2:]

    assert [row.split()[:2] for row in rows] == [
        ["5.10", "5.10.0-46-amd64"],
        ["5.10", "5.10.0-46-amd64"],
        ["6.1", "6.1.0-56-amd64"],
        ["6.1", "6.1.0-56-amd64"],
        ["6.12", "6.12.118+deb13-amd64"],
        ["6.12", "6.12.118+deb13-amd64"],
        ["7.2", "7.2.13+deb14-amd64"],
        ["7.2", "7.2.13+deb14-amd64"],
    ]
    assert render_markdown(cases).splitlines()[0] == "### ✅ sockex1 on each kernel: 8 passed"
