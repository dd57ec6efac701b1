"""A/B on the host kernel: a Python loader that leaves the prog array empty, both ways round.

A temporary git repository holds this checkout's files twice: as they are (the fix),
and with the Python loader no longer filling the prog arrays a request names (the
bug). :func:`harness.baseline.checkout` checks revisions of it out as a run would;
the baseline's cases come from :func:`harness.baseline.cases`, both sides go into one
guest plan (:func:`harness.run.guest_plan`), which runs as in a VM: ``unshare -n
python3 -m harness.guest PLAN``. Each case is judged, and :func:`harness.baseline.rows`
must call sockex3 and sockex3-btf ``fixed`` (exit status 0) with the bug as the
baseline, and ``regression`` (exit status 1) the other way round. Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness import baseline, checks, compare, loaders, run, samples
from harness.build import build_sample
from harness.guest.plan import PLAN_NAME, write_plan
from harness.guest.result import load_result
from harness.kernels.model import Kernel, KernelEntry
from harness.paths import PROJECT_ROOT
from harness.proc import SubprocessRunner
from harness.report import CaseResult, case_properties

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
]

RELEASE = os.uname().release
CHOSEN = samples.select("sockex3,sockex3-btf", samples.discover())
PYTHON = loaders.builtin(["python"])
LOADER = Path("harness/bpf/loader.py")
FILLING = """        for name, index, program in request.prog_arrays:
            fill_prog_array(attached.loaded, name, index, program)
"""
#: How long one guest run may take before the test gives up on it (a hang, not a speed).
GUEST_TIMEOUT = 300.0


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository of this checkout's files: tag ``fixed`` as they are, ``broken`` patched."""
    root = tmp_path_factory.mktemp("ab") / "repo"
    root.mkdir()
    listed = git(PROJECT_ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    git(root, "init", "-q")
    git(root, "config", "user.email", "ab@example.invalid")
    git(root, "config", "user.name", "ab")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fixed")
    git(root, "tag", "fixed")
    text = (root / LOADER).read_text()
    assert text.count(FILLING) == 1, f"{LOADER} no longer fills prog arrays the way this test cuts"
    (root / LOADER).write_text(text.replace(FILLING, ""))
    git(root, "commit", "-q", "-am", "the Python loader forgets the prog arrays")
    git(root, "tag", "broken")
    yield root


@pytest.fixture(autouse=True)
def build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The baseline's checks build and bundle into a directory of the test's own."""
    directory = tmp_path / "build"
    monkeypatch.setenv("HARNESS_BUILD_DIR", str(directory))
    return directory


def judged(case: run.Case, results: Path) -> CaseResult:
    """The case as a VM run's JUnit file has it (tests/vm/test_samples.py records the same)."""
    properties = case_properties(
        kernel="host", release=RELEASE, accel="none", seconds=None,
        sample=case.sample.name, loader=case.loader.name,
    )  # fmt: skip
    properties[baseline.DETERMINISTIC] = json.dumps(
        [c.header for c in case.sample.columns if c.deterministic]
    )
    result = load_result(run.case_result_path(results, case))
    judgement = checks.judge(case.sample, result, release=RELEASE)
    properties.update({f"cell:{header}": cell for header, cell in judgement.cells.items()})
    outcome = "failed" if judgement.problems else "passed"
    name = f"test_case[host-{case.sample.name}-{case.loader.name}]"
    return CaseResult(name, outcome, "\n".join(judgement.problems), properties)


def run_both(base: baseline.Baseline, guest: Sequence[str], tmp_path: Path) -> list[compare.Row]:
    """The candidate's and the baseline's cases in one guest run, compared."""
    base_cases = baseline.cases(base, CHOSEN, PYTHON)
    baseline.check(base, base_cases)  # as invoke test does: python@base runs from its bundle
    cases = [*run.plan_cases(CHOSEN, PYTHON), *base_cases]
    build_root = tmp_path / "build"
    builds = {
        c.sample.name: build_sample(c.sample, RELEASE, None, build_root=build_root) for c in cases
    }
    kernel = Kernel(spec="host", series=None, release=RELEASE, origin="local")
    entry = KernelEntry(kernel, image=Path("/"), modules=None, config=None, headers=None)
    prepared = run.PreparedKernel("host", entry, builds, programs={}, skipped={})
    results = tmp_path / "results"
    plan = run.guest_plan(prepared, cases, results)
    assert len(plan.cases) == len(cases) == 4
    write_plan(results / PLAN_NAME, plan)
    done = SubprocessRunner().run(
        ["unshare", "-n", *guest, str(results / PLAN_NAME)],
        check=False,
        cwd=PROJECT_ROOT,
        timeout=GUEST_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return baseline.rows([judged(case, results) for case in cases])


def kinds(rows: Sequence[compare.Row]) -> list[tuple[str, str, str]]:
    return [(row.sample, row.loader, row.kind) for row in rows]


def test_the_fix_against_the_broken_baseline_is_fixed(repo: Path, tmp_path: Path) -> None:
    with baseline.checkout("broken", repo=repo, root=tmp_path / "baselines") as base:
        # The candidate is this checkout: its guest, with the Python loader in-process.
        rows = run_both(base, [sys.executable, "-m", "harness.guest"], tmp_path)

    assert kinds(rows) == [
        ("sockex3", "python", compare.FIXED),
        ("sockex3-btf", "python", compare.FIXED),
    ]
    assert all("flow_map" in row.differs for row in rows), [row.differs for row in rows]
    assert compare.exit_status(rows) == 0


def test_the_broken_loader_against_the_fixed_baseline_is_a_regression(
    repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "baselines"
    with (
        baseline.checkout("fixed", repo=repo, root=root) as base,
        baseline.checkout("broken", repo=repo, root=root / "candidate") as candidate,
    ):
        # The candidate is the broken revision: the guest runs from its tree.
        guest = ["env", f"PYTHONPATH={candidate.tree}", sys.executable, "-P", "-m", "harness.guest"]
        rows = run_both(base, guest, tmp_path)

    assert kinds(rows) == [
        ("sockex3", "python", compare.REGRESSION),
        ("sockex3-btf", "python", compare.REGRESSION),
    ]
    assert compare.exit_status(rows) == 1
    assert git(repo, "worktree", "list").count("\n") == 0  # both checkouts are gone
