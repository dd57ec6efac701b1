"""A/B plumbing: the baseline's checkout, its twin loaders and samples, the checks before
a boot, and the comparison read back from a run's cases."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import baseline, compare, loaders, report, samples, upstream
from harness.errors import BuildError, ConfigError, SampleError
from harness.paths import PROJECT_ROOT
from harness.proc import Terminated
from harness.report import CaseResult, case_properties

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(autouse=True)
def build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Builds and bundles go to a directory of the test's own."""
    directory = tmp_path / "build"
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(directory))
    return directory


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with two commits: "one" (tagged v1) and "two"."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "ab@example.invalid")
    git(root, "config", "user.name", "ab")
    for text in ("one", "two"):
        (root / "file").write_text(text)
        git(root, "add", "file")
        git(root, "commit", "-q", "-m", text)
        if text == "one":
            git(root, "tag", "v1")
    return root


def worktrees(repo: Path) -> list[str]:
    return [
        line.split(" ", 1)[1]
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


# --- the checkout ----------------------------------------------------------------------


def test_a_revision_is_checked_out_for_the_block_and_removed_after(
    repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "baselines"
    with baseline.checkout("v1", repo=repo, root=root) as base:
        assert (base.tree / "file").read_text() == "one"
        assert base.commit == git(repo, "rev-parse", "v1")
        assert base.tree.parent == root
        assert len(worktrees(repo)) == 2

    assert not base.tree.exists()
    assert worktrees(repo) == [str(repo)]


@pytest.mark.parametrize(
    "ending",
    [KeyboardInterrupt(), Terminated(signal.SIGTERM), ConfigError("stop")],
    ids=["ctrl-c", "sigterm", "error"],
)
def test_the_worktree_goes_however_the_block_ends(
    repo: Path, tmp_path: Path, ending: BaseException
) -> None:
    with pytest.raises(type(ending)), baseline.checkout("HEAD~1", repo=repo, root=tmp_path) as base:
        (base.tree / "__pycache__").mkdir()  # what running its Python leaves behind
        raise ending

    assert not base.tree.exists()
    assert worktrees(repo) == [str(repo)]


def test_a_revision_that_does_not_exist_is_one_line_saying_what_to_give(
    repo: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err, baseline.checkout("no-such-rev", repo=repo):
        pytest.fail("checked out a revision that does not exist")

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--baseline no-such-rev: no such revision in")
    assert "give a commit, branch or tag" in message
    assert worktrees(repo) == [str(repo)]


def test_a_directory_is_used_as_it_is_and_kept(repo: Path) -> None:
    (repo / "harness").mkdir()
    (repo / "harness" / "__init__.py").write_text("")

    with baseline.checkout(str(repo)) as base:
        assert base.tree == repo.resolve()
        assert base.commit is None

    assert (repo / "file").exists()


def test_a_directory_that_is_no_checkout_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match="not a checkout of this harness"),
        baseline.checkout(str(tmp_path)),
    ):
        pytest.fail("took a directory without the harness as a baseline")


def test_worktrees_of_runs_that_died_are_removed_first(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    stale = root / f"0123456789ab-{dead.pid}"
    root.mkdir()
    git(repo, "worktree", "add", "-q", "--detach", str(stale), "v1")
    living = root / f"0123456789ab-{os.getppid()}"
    living.mkdir()

    with baseline.checkout("v1", repo=repo, root=root):
        assert not stale.exists()
        assert living.exists()


# --- the baseline's loaders and samples -------------------------------------------------


def tree_with(tmp_path: Path, *relative: str) -> Path:
    """A baseline tree holding copies of these files of this checkout."""
    tree = tmp_path / "base"
    for name in relative:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, tree / name)
        else:
            shutil.copy(PROJECT_ROOT / name, tree / name)
    return tree


def test_each_loader_has_a_twin_from_the_baseline_tree(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "harness/loaders", "examples/stdlib_loader.py")
    base = baseline.Baseline(tree, "v1")
    example = loaders.parse_command(f"stdlib:classic={PROJECT_ROOT / 'examples/stdlib_loader.py'}")
    outside = loaders.parse_command(f"mine={sys.executable} -c pass")

    python, c, libbpf, stdlib, mine = baseline.loaders_of(
        base, [*loaders.builtin(), example, outside]
    )

    assert python.name == "python@base"
    path = os.pathsep.join([str(tree), *site.getsitepackages()])
    assert python.command[1:5] == (f"PYTHONPATH={path}", sys.executable, "-P", "-S")
    assert python.command[5] == "-c" and python.command[7] == str(baseline.bundle_path(base))
    assert python.formats == ("classic", "btf")
    assert c.name == "c@base" and libbpf.name == "libbpf@base"
    for twin, own in ((c, loaders.builtin(["c"])[0]), (libbpf, loaders.builtin(["libbpf"])[0])):
        assert twin.sources == tuple(tree / s.relative_to(PROJECT_ROOT) for s in own.sources)
        assert twin.libraries == own.libraries and twin.formats == own.formats
    assert stdlib.command == (str(tree / "examples" / "stdlib_loader.py"),)
    assert stdlib.formats == ("classic",)
    assert mine.command == outside.command  # not in this checkout: the same program


def test_a_baseline_without_a_loaders_source_says_which(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "harness/loaders/classic")  # no common/protocol.c yet

    with pytest.raises(BuildError) as err:
        baseline.loaders_of(baseline.Baseline(tree, "old"), loaders.builtin(["c"]))

    assert str(err.value) == (
        "baseline old: loader c@base does not build: the baseline has no "
        "harness/loaders/common/protocol.c; compare against a revision that has it"
    )


def test_baseline_samples_are_read_from_its_tree_as_twins(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "samples/sockex1")
    base = baseline.Baseline(tree, "v1")
    chosen = samples.select("sockex1,sockex2", samples.discover())

    (twin,) = baseline.samples_of(base, chosen)  # sockex2 is not in the baseline

    assert twin.name == "sockex1@base"
    assert twin.directory == tree / "samples" / "sockex1"
    assert twin.maps == chosen[0].maps
    assert baseline.samples_of(baseline.Baseline(tree, "v1", loaders_only=True), chosen) == chosen


def test_a_baseline_from_before_samples_were_folders_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "old"
    (tree / "samples").mkdir(parents=True)
    (tree / "samples" / "sockex1_kern.c").write_text("")

    with pytest.raises(SampleError) as err:
        baseline.samples_of(baseline.Baseline(tree, "v0"), list(samples.discover().values()))

    assert "before samples were folders" in str(err.value)
    assert "--baseline-loaders-only" in str(err.value)


def test_a_baseline_sample_this_harness_cannot_read_says_so(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "samples/sockex1")
    (tree / "samples" / "sockex1" / "sample.py").write_text("from harness import gone\n")

    with pytest.raises(SampleError, match="cannot read its sample sockex1") as err:
        baseline.samples_of(
            baseline.Baseline(tree, "v1"), samples.select("sockex1", samples.discover())
        )

    assert "\n" not in str(err.value)


def test_the_baseline_cases_are_twins_of_the_candidates(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "samples/sockex3", "harness/loaders")
    chosen = samples.select("sockex3", samples.discover())

    cases = baseline.cases(baseline.Baseline(tree, "v1"), chosen, loaders.builtin())

    assert [c.id for c in cases] == ["sockex3@base-python@base", "sockex3@base-c@base"]


@pytest.mark.parametrize("loaders_only", [False, True])
def test_the_kernels_own_samples_are_loaded_by_the_baseline_loaders_as_they_are(
    tmp_path: Path, loaders_only: bool
) -> None:
    tree = tree_with(tmp_path, "samples/sockex1", "harness/loaders")
    chosen = samples.select("sockex1,kernel:sockex1", upstream.available())

    cases = baseline.cases(
        baseline.Baseline(tree, "v1", loaders_only=loaders_only), chosen, loaders.builtin()
    )

    ours = "sockex1" if loaders_only else "sockex1@base"
    assert [c.id for c in cases] == [
        f"{ours}-python@base",
        f"{ours}-c@base",
        "kernel:sockex1-python@base",  # the kernel's object: the same on both sides
        "kernel:sockex1-libbpf@base",
    ]  # and no twin of the kernel's own user program, which is the kernel's too


# --- checks before a boot -------------------------------------------------------------


def test_a_python_loader_from_before_the_protocol_is_refused(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "samples/sockex1")
    base = baseline.Baseline(tree, "v0", loaders_only=True)
    cases = baseline.cases(
        base, samples.select("sockex1", samples.discover()), loaders.builtin(["python"])
    )

    with pytest.raises(ConfigError, match="loader python@base cannot run") as err:
        baseline.check(base, cases)

    assert "harness/bpf/__main__.py" in str(err.value)


def test_a_python_loader_that_does_not_start_says_why(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "harness")
    (tree / "harness" / "bpf" / "loader.py").write_text("raise SystemExit('broken on purpose')\n")
    base = baseline.Baseline(tree, "v1", loaders_only=True)
    cases = baseline.cases(
        base, samples.select("sockex1", samples.discover()), loaders.builtin(["python"])
    )

    with pytest.raises(ConfigError) as err:
        baseline.check(base, cases)

    assert str(err.value) == (
        "baseline v1: loader python@base does not start (exit status 1): broken on purpose"
    )


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_a_c_loader_that_does_not_build_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(tmp_path / "build"))
    tree = tree_with(tmp_path, "harness/loaders")
    with (tree / "harness" / "loaders" / "classic" / "loader.c").open("a") as f:
        f.write("\nthis is not C;\n")
    base = baseline.Baseline(tree, "v1", loaders_only=True)
    cases = baseline.cases(
        base, samples.select("sockex1", samples.discover()), loaders.builtin(["c"])
    )

    with pytest.raises(BuildError) as err:
        baseline.check(base, cases)

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("baseline v1: loader c@base does not build for the host: ")
    assert "loader.c" in message and "error" in message
    assert f"log: {tmp_path / 'build'}" in message


# --- the comparison, from a run's cases ------------------------------------------------


def case(
    sample: str, loader: str, outcome: str = "passed", kernel: str = "6.1", **cells: str
) -> CaseResult:
    props = case_properties(
        kernel=kernel, release=f"{kernel}.0-1-amd64", accel="tcg", seconds=1.0,
        sample=sample, loader=loader,
    )  # fmt: skip
    props[baseline.DETERMINISTIC] = json.dumps(["GRE"])
    props.update({f"cell:{header}": value for header, value in cells.items()})
    return CaseResult(f"test_case[{kernel}-{sample}-{loader}]", outcome, "", props)


def test_the_base_cases_are_the_baseline_side_under_the_candidates_names() -> None:
    run = [
        case("sockex3", "python"),
        case("sockex3@base", "python@base", "failed"),
        case("sockex3", "c@base"),  # --baseline-loaders-only
    ]

    before, after = baseline.split(run)

    assert [(c.value("sample"), c.value("loader"), c.outcome) for c in before] == [
        ("sockex3", "python", "failed"),
        ("sockex3", "c", "passed"),
    ]
    assert after == [run[0]]
    assert baseline.has_baseline(run) and not baseline.has_baseline(after)


def test_what_differs_is_the_first_problem_not_the_cases_heading() -> None:
    failed = dataclasses.replace(
        case("sockex3", "python", "failed"),
        message="Failed: kernel 6.1.0-57-amd64, sockex3, python loader:\n"
        "  - flow_map is empty, but the capture says it must hold 14 entries\n"
        "  - flow_map[...]: missing from the map",
    )
    run = [case("sockex3@base", "python@base"), failed]

    (row,) = baseline.rows(run)

    assert (row.kind, row.differs) == (
        compare.REGRESSION,
        "flow_map is empty, but the capture says it must hold 14 entries",
    )


@pytest.mark.parametrize(
    ("base", "now", "kind", "status"),
    [("failed", "passed", compare.FIXED, 0), ("passed", "failed", compare.REGRESSION, 1)],
)
def test_a_fix_exits_0_and_a_regression_1(base: str, now: str, kind: str, status: int) -> None:
    run = [case("sockex3@base", "python@base", base, kernel=k) for k in ("5.10", "6.1")] + [
        case("sockex3", "python", now, kernel=k) for k in ("5.10", "6.1")
    ]

    rows = baseline.rows(run)

    assert [(r.kernel, r.sample, r.loader, r.kind) for r in rows] == [
        ("5.10", "sockex3", "python", kind),
        ("6.1", "sockex3", "python", kind),
    ]
    assert baseline.exit_status(run) == status


def test_only_the_columns_the_cases_call_deterministic_make_a_change() -> None:
    run = [
        case("sockex3@base", "python@base", GRE="8 = 8", TCP="100 = 100"),
        case("sockex3", "python", GRE="8 = 8", TCP="120 = 120"),
        case("sockex3@base", "c@base", GRE="8 = 8"),
        case("sockex3", "c", GRE="4 = 4"),
    ]

    kinds = {(r.loader, r.kind, r.differs) for r in baseline.rows(run)}

    assert kinds == {("c", compare.CHANGED, "GRE: 8 = 8 -> 4 = 4"), ("python", compare.SAME, "")}


def test_the_comparison_as_junit_has_a_failure_per_regression(tmp_path: Path) -> None:
    run = [
        case("sockex3@base", "python@base", GRE="8 = 8"),
        case("sockex3", "python", "failed", GRE="0 != 8"),
        case("sockex3@base", "c@base", "failed"),
        case("sockex3", "c", GRE="8 = 8"),
    ]
    path = tmp_path / baseline.JUNIT_NAME

    baseline.write_junit(run, path)

    read = {c.value("loader"): c for c in report.parse_junit(path)}
    assert read["python"].outcome == "failed"
    assert read["python"].properties["class"] == compare.REGRESSION
    assert read["python"].properties["baseline:GRE"] == "8 = 8"
    assert read["python"].properties["candidate:GRE"] == "0 != 8"
    assert (read["c"].outcome, read["c"].properties["class"]) == ("passed", compare.FIXED)
    assert read["c"].properties["baseline"] == "FAIL"


# --- the front end -------------------------------------------------------------------


def junit_of(cases: list[CaseResult], path: Path) -> Path:
    """A JUnit file as a VM run writes it: each case with its properties."""
    from junitparser import Failure, JUnitXml, Properties, Property, TestCase, TestSuite

    suite = TestSuite("pytest")
    for result in cases:
        test = TestCase(result.name, "tests.vm.test_samples")
        block = Properties()  # type: ignore[no-untyped-call]
        for name, value in result.properties.items():
            block.add_property(Property(name, value))
        test.append(block)  # type: ignore[no-untyped-call]
        if result.outcome == "failed":
            test.result = [Failure("kernel 6.1, sockex3, python loader: jmp_table is empty")]
        suite.add_testcase(test)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path))
    return path


@pytest.fixture
def tasks_module() -> object:
    sys.path.insert(0, str(PROJECT_ROOT))
    import tasks

    return tasks


@pytest.mark.parametrize(("now", "status"), [("passed", 0), ("failed", 1)])
def test_the_summary_of_an_ab_run_shows_the_comparison_first(
    tasks_module: object, tmp_path: Path, capsys: pytest.CaptureFixture[str], now: str, status: int
) -> None:
    from invoke import Context, Exit

    run = [case("sockex3@base", "python@base", "failed" if now == "passed" else "passed")]
    run.append(case("sockex3", "python", now))
    junit = junit_of(run, tmp_path / "junit.xml")

    code = 0
    try:
        tasks_module.report(Context(), junit=str(junit), format="markdown", check=True)  # type: ignore[attr-defined]
    except Exit as exc:
        code = exc.code
    out = capsys.readouterr().out

    kind = compare.FIXED if now == "passed" else compare.REGRESSION
    first = out.splitlines()[0]
    assert first.startswith("### ") and "baseline vs candidate" in first, first
    assert f"| 6.1 | sockex3 | python | {'FAIL' if now == 'passed' else 'PASS'} |" in out
    assert kind in out.split("####")[0]
    assert out.index("baseline vs candidate") < out.index("#### sockex3")
    assert code == status


def test_baseline_loaders_only_without_a_baseline_is_refused(tasks_module: object) -> None:
    from invoke import Context, Exit

    with pytest.raises(Exit, match="--baseline-loaders-only goes with --baseline REV"):
        tasks_module.test(Context(), kernel="6.1", baseline_loaders_only=True)  # type: ignore[attr-defined]


def test_the_baseline_python_loader_runs_from_its_bundle(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "harness")
    base = baseline.Baseline(tree, "v1", loaders_only=True)
    cases = baseline.cases(
        base, samples.select("sockex1", samples.discover()), loaders.builtin(["python"])
    )

    baseline.check(base, cases)

    with zipfile.ZipFile(baseline.bundle_path(base)) as bundle:
        assert "harness/bpf/loader.pyc" in bundle.namelist()
        assert "elftools/elf/elffile.pyc" in bundle.namelist()
    shutil.rmtree(tree / "harness")  # what python@base imports comes from the bundle
    done = subprocess.run([*cases[0].loader.command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--prog-array" in done.stdout


def test_a_baseline_python_module_that_does_not_compile_is_one_line(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "harness")
    (tree / "harness" / "bpf" / "btf.py").write_text("def broken(:\n")
    base = baseline.Baseline(tree, "v1", loaders_only=True)
    cases = baseline.cases(
        base, samples.select("sockex1", samples.discover()), loaders.builtin(["python"])
    )

    with pytest.raises(ConfigError) as err:
        baseline.check(base, cases)

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("baseline v1: loader python@base does not build: ")
    assert "btf.py" in message


def test_the_bundle_of_a_revision_goes_with_its_worktree(repo: Path, tmp_path: Path) -> None:
    with baseline.checkout("v1", repo=repo, root=tmp_path / "baselines") as base:
        path = baseline.bundle_path(base)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    assert not path.exists()
