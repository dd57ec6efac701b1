"""The report: JUnit files as pytest writes them, rendered as tables and a job summary.

``recorded_6.1_samples.xml`` is the JUnit file of a real ``invoke test --kernel 6.1``
(three samples, two loaders, all passed); ``mixed_samples.xml`` is synthetic, in the
same shape, with every outcome (see its comment).
"""

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
    CELLS,
    EXIT_FAILED,
    EXIT_NO_CASES,
    EXIT_OK,
    FIXED,
    JUNIT_NAME,
    MESSAGE_LINES,
    NOTE,
    CaseResult,
    by_sample,
    case_properties,
    parse_junit,
    render_markdown,
    render_table,
    render_timings,
    summary_exit_code,
)

pytest_plugins = ["pytester"]

JUNIT = Path(__file__).resolve().parent.parent / "data" / "junit"
RECORDED = JUNIT / "recorded_6.1_samples.xml"
MIXED = JUNIT / "mixed_samples.xml"


def case(name: str, outcome: str = "passed", message: str = "", **props: str) -> CaseResult:
    return CaseResult(name=name, outcome=outcome, message=message, properties=dict(props))


def full(kernel: str, sample: str, loader: str, **cells: str) -> CaseResult:
    """A case that ran, with the fixed properties and ``cells`` as its sample's columns."""
    props = case_properties(
        kernel=kernel,
        release=f"{kernel}.0-1-amd64",
        accel="tcg",
        seconds=7.8,
        sample=sample,
        loader=loader,
    )
    props.update({f"cell:{header}": value for header, value in cells.items()})
    return CaseResult(f"test_case[{kernel}-{sample}-{loader}]", "passed", "", props)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(textwrap.dedent(body).strip() + "\n", encoding="utf-8")
    return path


def table_rows(text: str, sample: str) -> list[list[str]]:
    """The rows of ``sample``'s table in a rendered report, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{sample}: "))
    rows = []
    for line in lines[start + 4 :]:
        if not line.strip():
            break
        rows.append(line.split("   "))
    return [[cell.strip() for cell in row if cell.strip()] for row in rows]


def markdown_rows(text: str, sample: str) -> list[list[str]]:
    """The body rows of ``sample``'s Markdown table, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"#### {sample}: "))
    rows = []
    for line in lines[start + 4 :]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


# --- parse_junit ---------------------------------------------------------------------


def test_a_recorded_run_gives_every_case_with_its_properties() -> None:
    cases = parse_junit(RECORDED)

    assert [c.name for c in cases] == [
        f"test_case[6.1-{sample}-{loader}]"
        for sample in ("sockex1", "sockex2", "sockex3")
        for loader in ("python", "c")
    ]
    assert {(c.outcome, c.message) for c in cases} == {("passed", "")}
    first = cases[0]
    cells = {"cell:TCP", "cell:UDP", "cell:ICMP"}
    assert set(first.properties) == {*FIXED, "timings", "entries", *cells}
    assert first.properties["release"] == "6.1.0-57-amd64"
    assert first.cells == {
        "TCP": "527488 = 527488",
        "UDP": "136448 = 136448",
        "ICMP": "6272 = 6272",
    }
    assert list(cases[4].cells) == ["IPIP", "GRE", "GRE+VLAN", "IPv6 in IP", "QinQ"]


def test_outcomes_and_messages_come_from_the_children() -> None:
    by_name = {c.name: c for c in parse_junit(MIXED)}

    assert len(by_name) == 8
    mismatch = by_name["test_case[6.12-sockex1-c]"]
    assert mismatch.outcome == "failed"
    assert mismatch.message.splitlines() == [
        "kernel 6.12.117+deb13-amd64, sockex1, c loader:",
        "  - my_map[6]: bytes 526960 in the map, 527224 in the capture (-264)",
        "result: build/results/run-1/6.12.117+deb13-amd64/sockex1/c.json",
    ]
    skipped = by_name["test_case[6.6-sockex2-python]"]
    assert (skipped.outcome, skipped.message) == (
        "skipped",
        "no kernel of series 6.6 in bookworm, trixie, sid",
    )
    never_booted = by_name["test_case[7.2-sockex3-python]"]
    assert (never_booted.outcome, never_booted.properties) == ("error", {})
    assert "VmTimeoutError" in never_booted.message


def test_a_case_written_twice_is_one_case_with_the_worse_outcome() -> None:
    # pytest writes a second <testcase> of the same name when teardown errors.
    cases = [c for c in parse_junit(MIXED) if c.name == "test_case[6.1-sockex1-python]"]

    assert len(cases) == 1
    (merged,) = cases
    assert merged.outcome == "error"
    assert "ProcessLookupError" in merged.message
    # The teardown's record has no properties: the call's are kept.
    assert merged.value("release") == "6.1.0-57-amd64"
    assert merged.cells["TCP"] == "527488 = 527488"


def test_a_teardown_error_after_a_failure_keeps_the_failure_and_both_messages(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
        <testsuites><testsuite name="pytest">
          <testcase classname="t" name="test_case[6.1-sockex1-c]">
            <properties><property name="release" value="6.1.0-57-amd64" /></properties>
            <failure message="my_map[6]: bytes 1 in the map, 2 in the capture">x</failure>
          </testcase>
          <testcase classname="t" name="test_case[6.1-sockex1-c]">
            <error message="failed on teardown with &quot;ProcessLookupError&quot;">y</error>
          </testcase>
          <testcase classname="other" name="test_case[6.1-sockex1-c]" />
        </testsuite></testsuites>
        """,
    )

    merged, other = parse_junit(path)

    assert merged.outcome == "failed"
    assert merged.message.splitlines() == [
        "my_map[6]: bytes 1 in the map, 2 in the capture",
        'failed on teardown with "ProcessLookupError"',
    ]
    assert merged.value("release") == "6.1.0-57-amd64"
    assert other.outcome == "passed"  # another class's case of the same name stays apart


def test_a_bare_testsuite_root_is_read_too() -> None:
    (only,) = parse_junit(JUNIT / "single_suite.xml")

    assert only.name == "test_case[7.2-sockex1-c]"
    assert only.properties["accel"] == "kvm"
    assert only.cells == {"TCP": "527224 = 527224"}


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


def test_a_missing_file_says_to_run_the_tests_first(tmp_path: Path) -> None:
    missing = tmp_path / "junit.xml"

    with pytest.raises(ResultsError) as raised:
        parse_junit(missing)

    assert str(raised.value) == (
        f"no JUnit file at {missing}; run `invoke test` first, or name the file with --junit FILE"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("PASS 6.1 sockex1 python\n", "syntax error"),  # not XML at all
        (None, "unclosed token"),  # truncated.xml: a run cut short mid-write
        ((JUNIT / "not_junit.xml").read_text(), "Invalid format"),  # XML, but an HTML page
    ],
    ids=["not-xml", "truncated", "not-junit"],
)
def test_unreadable_files_raise_a_results_error_naming_them(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = JUNIT / "truncated.xml" if content is None else tmp_path / "junit.xml"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ResultsError) as raised:
        parse_junit(path)

    message = str(raised.value)
    assert message.startswith(f"{path} is not a readable JUnit file (")
    assert reason in message
    assert message.endswith("run `invoke test` again")
    assert isinstance(raised.value, HarnessError) and raised.value.__cause__ is not None


def test_a_directory_is_not_a_junit_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=f"cannot read the JUnit file {tmp_path}"):
        parse_junit(tmp_path)


def test_a_testcase_without_a_name_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, '<testsuites><testsuite><testcase classname="t"/></testsuite></testsuites>'
    )

    with pytest.raises(ResultsError, match=f"{path}: a <testcase> has no name"):
        parse_junit(path)


def test_reads_what_pytest_itself_writes(pytester: pytest.Pytester) -> None:
    """The contract end to end: record_property in a test, parse_junit on pytest's file."""
    fixed = case_properties(
        kernel="6.1", release="6.1.0-57-amd64", accel="kvm", seconds=2.95, sample="s", loader="x"
    )
    pytester.makepyfile(
        f"""
        import pytest

        FIXED = {fixed!r}

        @pytest.mark.parametrize("loader", ["python", "c"])
        def test_case(record_property, loader):
            for name, value in FIXED.items():
                record_property(name, value)
            record_property("cell:TCP", "1 = 1")
            if loader == "c":
                pytest.fail("c loader:\\n  - my_map[6]: bytes 1 in the map", pytrace=False)
        """
    )
    junit = pytester.path / "junit.xml"

    pytester.runpytest_inprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")

    passed, failed = parse_junit(junit)
    assert (passed.name, passed.outcome) == ("test_case[python]", "passed")
    assert passed.properties == {**fixed, "cell:TCP": "1 = 1"}
    assert passed.value("boot_seconds") == "3.0" == f"{2.95:.1f}"
    assert failed.outcome == "failed"
    assert failed.message == "Failed: c loader:\n  - my_map[6]: bytes 1 in the map"


# --- the kernel, sample and loader of a case ----------------------------------------


def test_a_case_without_properties_is_named_by_its_id() -> None:
    skipped = case("test_case[6.6-sockex2-python]", "skipped")

    assert [skipped.value(k) for k in ("kernel", "sample", "loader", "release")] == [
        "6.6",
        "sockex2",
        "python",
        "-",
    ]


def test_a_recorded_property_wins_over_the_id() -> None:
    ran = case("test_case[6.1-sockex1-c]", kernel="/home/dev/bzImage", loader="c")

    assert ran.value("kernel") == "/home/dev/bzImage"


def test_cases_are_grouped_by_sample_and_ordered_by_kernel_then_loader() -> None:
    groups = by_sample(parse_junit(MIXED))

    assert list(groups) == ["sockex1", "sockex2", "sockex3"]
    assert [(c.value("kernel"), c.value("loader")) for c in groups["sockex1"]] == [
        ("5.10", "python"),
        ("6.1", "c"),
        ("6.1", "python"),
        ("6.12", "c"),
    ]
    assert [c.value("kernel") for c in groups["sockex3"]] == ["6.12", "7.2"]


# --- render_table --------------------------------------------------------------------


def test_a_table_per_sample_with_its_own_columns() -> None:
    text = render_table(parse_junit(RECORDED))

    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert titles == [
        f"{s}: 2 passed (each column: the map's value = the capture's)"
        for s in ("sockex1", "sockex2", "sockex3")
    ]
    headers = [line.split() for line in text.splitlines() if line.startswith(" kernel")]
    common = ["kernel", "release", "accel", "boot", "s", "loader"]
    assert headers == [
        [*common, "TCP", "UDP", "ICMP", "verdict"],
        [*common, "TCP", "UDP", "ICMP", "GRE", "QinQ", "IPv6", "verdict"],
        [*common, "IPIP", "GRE", "GRE+VLAN", "IPv6", "in", "IP", "QinQ", "verdict"],
    ]
    assert table_rows(text, "sockex1") == [
        ["6.1", "6.1.0-57-amd64", "tcg", "32.0", "c", "527224 = 527224", "136448 = 136448",
         "6272 = 6272", "PASS"],
        ["6.1", "6.1.0-57-amd64", "tcg", "32.0", "python", "527488 = 527488", "136448 = 136448",
         "6272 = 6272", "PASS"],
    ]  # fmt: skip
    assert [row[-3:] for row in table_rows(text, "sockex3")] == [["8 = 8", "8 = 8", "PASS"]] * 2


def test_table_rows_follow_kernel_versions_then_loaders() -> None:
    text = render_table(parse_junit(MIXED))

    assert [row[:2] + row[4:5] + row[-1:] for row in table_rows(text, "sockex1")] == [
        ["5.10", "5.10.0-46-amd64", "python", "PASS"],
        ["6.1", "6.1.0-57-amd64", "c", "PASS"],
        ["6.1", "6.1.0-57-amd64", "python", "ERROR"],
        ["6.12", "6.12.117+deb13-amd64", "c", "FAIL"],
    ]
    assert "526960 != 527224" in table_rows(text, "sockex1")[3]
    assert text.splitlines()[0].startswith("sockex1: 2 passed, 1 failed, 1 error")


def test_kernels_order_as_versions_not_as_text() -> None:
    kernels = ["6.12", "5.10", "7.2", "6.1", "5.4", "6.6"]

    rows = table_rows(render_table([full(k, "s", "python") for k in kernels]), "s")

    assert [row[0] for row in rows] == ["5.4", "5.10", "6.1", "6.6", "6.12", "7.2"]


def test_table_shows_a_case_without_properties_by_its_id_with_dashes() -> None:
    text = render_table(parse_junit(MIXED))

    assert table_rows(text, "sockex2")[1] == ["6.6", "-", "-", "-", "python", "-", "-", "SKIP"]
    assert table_rows(text, "sockex3")[1] == ["7.2", "-", "-", "-", "python", "-", "ERROR"]


def test_table_names_a_kernel_given_by_path_by_its_last_component() -> None:
    own = full("/home/dev/linux/arch/x86/boot/bzImage", "sockex1", "c")
    tree = full("/home/dev/linux/", "sockex1", "python")

    rows = table_rows(render_table([own, tree]), "sockex1")

    assert [row[0] for row in rows] == ["bzImage", "linux"]


def test_a_wide_count_widens_its_column_and_the_verdicts_stay_aligned() -> None:
    one = render_table([full("6.1", "s", "c", TCP="1 = 1")]).splitlines()
    many = render_table(
        [full("5.10", "s", "python", TCP="1 = 1"), full("7.2", "s", "c", TCP="1234567 = 1234567")]
    ).splitlines()

    assert many[2].index("verdict") > one[2].index("verdict")
    passes = [line for line in many if line.endswith("PASS")]
    assert len(passes) == 2
    assert {line.rfind("PASS") for line in passes} == {many[2].index("verdict")}


def test_table_without_cases_says_so() -> None:
    assert render_table([]) == "(no test cases)\n"


def test_timings_list_each_case_in_table_order() -> None:
    lines = render_timings(parse_junit(RECORDED)).splitlines()

    assert [line.split()[:3] for line in lines] == [
        ["6.1", s, loader] for s in ("sockex1", "sockex2", "sockex3") for loader in ("c", "python")
    ]
    assert lines[1].endswith("attach=4.030 capture=0.031 detach=0.082 dump=0.049 quiet=0.101 "
                             "traffic=0.554")  # fmt: skip
    assert render_timings(parse_junit(MIXED)) == "(no timings recorded)\n"


# --- render_markdown -----------------------------------------------------------------


def test_markdown_of_a_recorded_run() -> None:
    text = render_markdown(parse_junit(RECORDED))

    lines = text.splitlines()
    assert lines[0] == "### ✅ Samples on each kernel: 6 passed"
    assert [line for line in lines if line.startswith("#### ")] == [
        f"#### {s}: 2 passed (each column: map = capture)"
        for s in ("sockex1", "sockex2", "sockex3")
    ]
    assert "| kernel | release | accel | boot s | loader | TCP | UDP | ICMP | verdict |" in lines
    assert "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- |" in lines
    assert markdown_rows(text, "sockex2")[0] == [
        "6.1", "6.1.0-57-amd64", "tcg", "32.0", "c", "132012 = 132012", "34112 = 34112",
        "1568 = 1568", "8 = 8", "8 = 8", "8 = 8", "✅ PASS",
    ]  # fmt: skip
    assert "<details>" not in text


def test_markdown_of_failures() -> None:
    text = render_markdown(parse_junit(MIXED), title="CI")

    assert text.splitlines()[0] == "### ❌ CI: 4 passed, 1 failed, 2 errors, 1 skipped"
    assert [row[0] + " " + row[4] + " " + row[-1] for row in markdown_rows(text, "sockex1")] == [
        "5.10 python ✅ PASS",
        "6.1 c ✅ PASS",
        "6.1 python ❌ ERROR",
        "6.12 c ❌ FAIL",
    ]
    assert "526960 ≠ 527224" in markdown_rows(text, "sockex1")[3]
    assert markdown_rows(text, "sockex2")[1] == ["6.6", "-", "-", "-", "python", "-", "-",
                                                  "⏭️ SKIP"]  # fmt: skip
    # Each failure and error, not the skip, in a <details> block with its whole message.
    summaries = [line for line in text.splitlines() if line.startswith("<details>")]
    assert summaries == [
        "<details><summary>test_case[6.1-sockex1-python]: ERROR</summary>",
        "<details><summary>test_case[6.12-sockex1-c]: FAIL</summary>",
        "<details><summary>test_case[7.2-sockex3-python]: ERROR</summary>",
    ]
    assert text.count("</details>") == 3
    assert (
        "```text\nkernel 6.12.117+deb13-amd64, sockex1, c loader:\n"
        "  - my_map[6]: bytes 526960 in the map, 527224 in the capture (-264)\n"
    ) in text


def test_markdown_without_cases_says_nothing_ran() -> None:
    assert render_markdown([], title="CI") == "### ⚠️ CI: no test cases ran\n"


def test_markdown_cells_and_titles_cannot_break_the_table() -> None:
    odd = case(
        "test_case[k-s-l]",
        kernel="my|kernel <b>",
        release="r1\nr2",
        sample="a|<i>",
        loader="l",
        **{"cell:T|x": "1 | 2"},
    )

    text = render_markdown([odd], title="<script>|")

    lines = text.splitlines()
    assert lines[0] == "### ✅ &lt;script&gt;\\|: 1 passed"
    assert lines[2].startswith("#### a\\|&lt;i&gt;: 1 passed")
    assert lines[4] == "| kernel | release | accel | boot s | loader | T\\|x | verdict |"
    assert lines[6] == "| my\\|kernel &lt;b&gt; | r1 r2 | - | - | l | 1 \\| 2 | ✅ PASS |"


def test_markdown_message_cannot_close_its_code_block_or_inject_html() -> None:
    broken = case("test_case[<6.1>-s-l]", "failed", "look:\n```\n<script>", kernel="6.1")

    text = render_markdown([broken])

    assert "<summary>test_case[&lt;6.1&gt;-s-l]: FAIL</summary>" in text
    assert "\n````text\nlook:\n```\n<script>\n````\n" in text


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


def results_dir(tmp_path: Path, junit: Path) -> Path:
    """A run's results directory holding a copy of ``junit``."""
    directory = tmp_path / "run-1"
    directory.mkdir()
    (directory / JUNIT_NAME).write_bytes(junit.read_bytes())
    return directory


def test_invoke_report_prints_the_tables_of_a_results_directory(
    tasks: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks.report(Context(), results=str(results_dir(tmp_path, RECORDED)))

    assert capsys.readouterr().out == render_table(parse_junit(RECORDED))


def test_invoke_report_reads_the_latest_run_by_default(
    tasks: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(tmp_path))
    (tmp_path / "results").mkdir()
    results_dir(tmp_path / "results", MIXED)
    (tmp_path / "results" / "latest").symlink_to("run-1")

    tasks.report(Context(), format="markdown", title="here", timings=True)

    out = capsys.readouterr().out
    assert out.startswith("### ❌ here: 4 passed, 1 failed, 2 errors, 1 skipped\n")
    assert out.endswith("\n(no timings recorded)\n")


def test_invoke_report_writes_markdown_to_a_file(tasks: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "summary" / "report.md"

    tasks.report(Context(), junit=str(MIXED), format="markdown", output=str(out), title="CI")

    assert out.read_text(encoding="utf-8") == render_markdown(parse_junit(MIXED), title="CI")
    assert [p.name for p in out.parent.iterdir()] == ["report.md"]


@pytest.mark.parametrize(("junit", "code"), [(MIXED, 1), (JUNIT / "no_cases.xml", 5)])
def test_invoke_report_check_exits_like_pytest(
    tasks: ModuleType, junit: Path, code: int, tmp_path: Path
) -> None:
    out = tmp_path / "r.md"

    with pytest.raises(Exit) as info:
        tasks.report(Context(), junit=str(junit), check=True, output=str(out))

    assert info.value.code == code
    assert out.is_file()  # the report is written before the exit status is decided


def test_invoke_report_check_passes_a_good_run(tasks: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "r.md"

    tasks.report(Context(), junit=str(RECORDED), check=True, output=str(out))

    assert out.read_text().count("PASS") == 6


def test_invoke_report_without_check_exits_0_on_failures(tasks: ModuleType, tmp_path: Path) -> None:
    tasks.report(Context(), junit=str(MIXED), output=str(tmp_path / "r.md"))


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_invoke_report_writes_into_a_null_device_instead_of_replacing_it(
    tasks: ModuleType, tmp_path: Path
) -> None:
    # A node of the null device (1, 3), made here: the real /dev/null is not put at risk.
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))

    tasks.report(Context(), junit=str(MIXED), format="markdown", output=str(null), check=False)

    assert stat.S_ISCHR(null.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_invoke_report_writes_into_a_pipe_instead_of_replacing_it(
    tasks: ModuleType, tmp_path: Path
) -> None:
    # The read end is open first, so the write cannot block.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        tasks.report(Context(), junit=str(RECORDED), output=str(fifo))
        received = os.read(read_end, 1 << 16).decode()
    finally:
        os.close(read_end)

    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received == render_table(parse_junit(RECORDED))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"junit": str(JUNIT / "missing.xml")}, f"error: no JUnit file at {JUNIT}/missing.xml"),
        ({"results": str(JUNIT / "nowhere")}, f"error: no JUnit file at {JUNIT}/nowhere/junit"),
        ({"junit": str(JUNIT / "truncated.xml")}, "truncated.xml is not a readable JUnit file"),
        ({"junit": str(RECORDED), "format": "html"}, "error: unknown report format 'html'"),
    ],
)
def test_invoke_report_errors_are_one_clear_line(
    tasks: ModuleType, options: dict[str, str], message: str
) -> None:
    with pytest.raises(Exit) as info:
        tasks.report(Context(), **options)

    assert info.value.code == 1
    assert message in str(info.value.message)
    assert len(str(info.value.message).splitlines()) == 1


# --- cases whose cells are not map = capture, and notes -------------------------------


def kernel_sample_cases() -> list[CaseResult]:
    loaders = full("6.1", "kernel:sockex2", "python", GRE="0 = 0")
    loaders.properties[NOTE] = "upstream defect: 3 keys of hash_map differ"
    own = full("6.1", "kernel:sockex2", "own", exit="0", rounds="0", last="16 1568")
    own.properties[CELLS] = "own user program: its exit status, rounds, last values"
    return [own, loaders]


def test_own_rows_get_a_table_titled_with_what_their_cells_are() -> None:
    text = render_table(kernel_sample_cases())

    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert titles[0] == "kernel:sockex2: 1 passed (each column: the map's value = the capture's)"
    assert titles[2] == (
        "kernel:sockex2: 1 passed (own user program: its exit status, rounds, last values)"
    )
    first, second = text.split(titles[2])
    assert [row[4:] for row in table_rows(first, "kernel:sockex2")] == [["python", "0 = 0", "PASS"]]
    assert [row[4:] for row in table_rows(titles[2] + second, "kernel:sockex2")] == [
        ["own", "0", "0", "16 1568", "PASS"]
    ]


def test_a_note_is_shown_under_its_table() -> None:
    text = render_table(kernel_sample_cases())
    assert "note, 6.1 python: upstream defect: 3 keys of hash_map differ" in text.splitlines()
    markdown = render_markdown(kernel_sample_cases())
    assert "- note, 6.1 python: upstream defect: 3 keys of hash_map differ" in markdown
    assert "#### kernel:sockex2: 1 passed (each column: map = capture)" in markdown
    assert "#### kernel:sockex2: 1 passed (own user program: its exit status" in markdown


def test_a_failed_case_says_why_under_its_table() -> None:
    own = full("6.1", "kernel:sockex3", "own", exit="0", rounds="0")
    message = (
        "Failed: kernel 6.1.0-57-amd64, kernel:sockex3, own loader:\n"
        "  - sockex3 could not load its object: its libbpf rejects section 'socket/3'\n"
        "result: /r/own.json"
    )
    failed = CaseResult(own.name, "failed", message, own.properties)
    broken = CaseResult("test_case[6.1-sockex1-c]", "error", "VM lost: no result", {})

    text = render_table([failed, broken])

    lines = text.splitlines()
    assert (
        "FAIL, 6.1 own: sockex3 could not load its object: its libbpf rejects section 'socket/3'"
        in lines
    )
    assert "ERROR, 6.1 c: VM lost: no result" in lines
    assert "PASS" not in text and "note," not in text
