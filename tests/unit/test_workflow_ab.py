"""The workflow's A/B on pull requests: the test step's command, as GitHub would run it.

The step's ``env:`` is evaluated for a pull request and for a push (with the expression
reader of ``test_workflow.py``), then its ``run:`` line runs under bash with a fake
``docker`` and ``invoke``; the job summary is written by ``report-summary.sh`` with the
real ``invoke report`` on the JUnit file of an A/B run.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from test_baseline import case, junit_of
from test_workflow import Expression, calls, evaluate_field, fake, run_script, vm_job

from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner

BASE_SHA = "0123456789abcdef0123456789abcdef01234567"
PULL_REQUEST = {
    "event_name": "pull_request",
    "event": {"pull_request": {"base": {"sha": BASE_SHA}}},
}
PUSH = {"event_name": "push", "event": {}}


def the_test_step() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [s for s in vm_job()["steps"] if s.get("id") == "test"]
    assert len(steps) == 1, "the vm job has no step with id test"
    return steps[0]


def run_test_step(
    tmp_path: Path, github: dict[str, Any], status: int = 0
) -> tuple[Completed, Path]:
    """The test step's ``run:`` under bash, with its ``env:`` as GitHub would set it."""
    step = the_test_step()
    evaluate = Expression({"github": github, "matrix": {"kernel": "6.1"}})
    env = {k: evaluate_field(str(v), evaluate) for k, v in step.get("env", {}).items()}
    fake(tmp_path, "docker", 'shift 2; exec "$@"')  # docker exec NAME COMMAND...
    invoke = fake(tmp_path, "invoke", f"exit {status}")
    environment = {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "KERNEL": "6.1",  # the job's env
        **{k: "" if v is None else str(v) for k, v in env.items()},
    }
    done = SubprocessRunner().run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        check=False,
        cwd=PROJECT_ROOT,
        env=environment,
        timeout=60,
    )
    return done, invoke


def test_a_pull_request_is_tested_against_its_base(tmp_path: Path) -> None:
    done, invoke = run_test_step(tmp_path, PULL_REQUEST)

    assert done.returncode == 0, done.stderr
    assert calls(invoke) == [["test", "--kernel", "6.1", "--baseline", BASE_SHA]]


def test_a_push_is_a_plain_run(tmp_path: Path) -> None:
    done, invoke = run_test_step(tmp_path, PUSH)

    assert done.returncode == 0, done.stderr
    assert calls(invoke) == [["test", "--kernel", "6.1"]]


@pytest.mark.parametrize("status", [0, 1])
def test_the_step_fails_when_the_ab_run_does(tmp_path: Path, status: int) -> None:
    # invoke test --baseline exits 1 on a regression only (harness/baseline.py).
    done, _ = run_test_step(tmp_path, PULL_REQUEST, status)

    assert done.returncode == status


def test_the_checkout_holds_the_base_revision() -> None:
    (checkout,) = [
        s for s in vm_job()["steps"] if str(s.get("uses", "")).startswith("actions/checkout")
    ]

    assert checkout.get("with", {}).get("fetch-depth") == 0  # every commit, the base's too


def test_without_enough_arguments_the_script_says_how_to_call_it(tmp_path: Path) -> None:
    step = run_script(tmp_path, "test-kernel.sh", "6.1")

    assert step.returncode == 2
    assert "usage: test-kernel.sh SERIES BASE INVOKE..." in step.stderr


@pytest.mark.parametrize(("now", "headline"), [("passed", "✅"), ("failed", "❌")])
def test_the_job_summary_of_a_pull_request_shows_the_comparison_first(
    tmp_path: Path, now: str, headline: str
) -> None:
    before = "failed" if now == "passed" else "passed"
    run = [case("sockex3@base", "python@base", before), case("sockex3", "python", now)]
    junit = junit_of(run, tmp_path / "junit.xml")
    # The real `invoke report`, on this JUnit file instead of the latest run's.
    tasks = f"{sys.executable} -m invoke --search-root {shlex.quote(str(PROJECT_ROOT))}"
    fake(tmp_path, "invoke", f'exec {tasks} "$@" --junit {shlex.quote(str(junit))}')

    step = run_script(tmp_path, "report-summary.sh", "6.1", "invoke")

    assert step.returncode == 0, step.stderr
    lines = step.summary.splitlines()
    kind = "1 fixed" if now == "passed" else "1 regression"
    assert lines[0] == f"### {headline} BPF samples on kernel 6.1: baseline vs candidate: {kind}"
    assert step.summary.index("baseline vs candidate") < step.summary.index("#### sockex3")
