"""Every (kernel, sample, loader) case: the sample's maps hold exactly what the capture says."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from harness import baseline, checks, run, upstream
from harness.errors import HarnessError
from harness.guest.result import load_result
from harness.report import CELLS, NOTE, case_properties

pytestmark = pytest.mark.vm


def test_case(
    kernel_run: run.KernelRun,
    case: run.Case | None,
    record_property: Callable[[str, object], None],
) -> None:
    if case is None:
        pytest.fail(kernel_run.error or "no (sample, loader) case to run", pytrace=False)
    properties = case_properties(
        kernel=kernel_run.spec,
        release=kernel_run.release,
        accel=kernel_run.accel,
        seconds=kernel_run.seconds,
        sample=case.sample.name,
        loader=case.loader.name,
    )
    if case.loader == upstream.OWN:  # its cells are no map's values: a table of their own
        properties[CELLS] = upstream.OWN_CELLS
    # Which of its columns an A/B run may call "changed" (harness.baseline reads it).
    properties[baseline.DETERMINISTIC] = json.dumps(
        [column.header for column in case.sample.columns if column.deterministic]
    )
    try:
        outcome, message = _judge(kernel_run, case, properties)
    finally:
        for name, value in properties.items():
            record_property(name, value)
    if outcome == "skip":
        pytest.skip(message)
    if message:
        pytest.fail(message, pytrace=False)


def _judge(kernel: run.KernelRun, case: run.Case, properties: dict[str, str]) -> tuple[str, str]:
    """("skip" or "judged", the failure message or skip reason; "" when it passes)."""
    what = f"kernel {kernel.release or kernel.spec}, {case.sample.name}, {case.loader.name} loader"
    reason = run.skip_reason(kernel.skipped, case)
    if reason is not None:
        return "skip", f"{case.sample.name} on {kernel.release}: {reason}"
    broken = run.build_problem(kernel.broken, case)
    if broken is not None:
        return "judged", f"{what}: did not build: {broken}"
    where = f"\nconsole log: {kernel.console_log}" if kernel.console_log else ""
    if kernel.error is not None:
        return "judged", f"kernel {kernel.spec}: {kernel.error}"
    assert kernel.results_dir is not None
    path = run.case_result_path(kernel.results_dir, case)
    try:
        result = load_result(path)
    except HarnessError as exc:
        return "judged", f"{what}: {exc}{where}"
    properties["release"] = result.release
    properties["timings"] = " ".join(f"{k}={v:.3f}" for k, v in result.timings.items())
    sample = kernel.samples.get(case.sample.name, case.sample)  # as this release has it
    if case.loader == upstream.OWN:
        problems = upstream.check_output(sample, result)
        if result.error is not None:
            problems.insert(0, f"the user program could not run in the guest: {result.error}")
        for header, cell in upstream.own_cells(sample, result).items():
            properties[f"cell:{header}"] = cell
        if not problems:
            return "judged", ""
        listed = "\n".join(f"  - {problem}" for problem in problems)
        return "judged", f"{what}:\n{listed}\nresult: {path}{where}"
    judgement = checks.judge(sample, result, release=kernel.release)
    for header, cell in judgement.cells.items():
        properties[f"cell:{header}"] = cell
    properties["entries"] = str(judgement.entries)
    if judgement.cells:  # the oracle ran: a known upstream defect can be measured
        note = upstream.defect_note(sample, result.frames)
        if note:
            properties[NOTE] = note
    if not judgement.problems:
        return "judged", ""
    listed = "\n".join(f"  - {problem}" for problem in judgement.problems)
    return "judged", f"{what}:\n{listed}\nresult: {path}{where}"
