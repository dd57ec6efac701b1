"""sockex1 in a VM: the map's bytes per protocol equal what an independent capture saw."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vmcase import KernelRun, Traffic

from harness.checks import Expectation, problems
from harness.errors import HarnessError
from harness.guest.result import load_result
from harness.report import PROPERTIES, PROTOCOLS

pytestmark = pytest.mark.vm


def test_sockex1_counts_match_the_capture(
    kernel_run: KernelRun,
    loader: str,
    traffic: Traffic,
    record_property: Callable[[str, object], None],
) -> None:
    properties = dict.fromkeys(PROPERTIES, "")
    properties.update(
        kernel=kernel_run.spec,
        release=kernel_run.release,
        accel=kernel_run.accel,
        boot_seconds="" if kernel_run.seconds is None else f"{kernel_run.seconds:.1f}",
        loader=loader,
    )
    try:
        message = _judge(kernel_run, loader, traffic, properties)
    finally:
        for name in PROPERTIES:
            record_property(name, properties[name])
    if message:
        pytest.fail(message, pytrace=False)


def _judge(run: KernelRun, loader: str, traffic: Traffic, properties: dict[str, str]) -> str:
    """The failure message of this case ("" when it passes); fills ``properties``."""
    where = f"\nconsole log: {run.console_log}" if run.console_log else ""
    if run.error is not None:
        return f"kernel {run.spec}: {run.error}"
    assert run.results_dir is not None
    path = run.results_dir / f"{loader}.json"
    if not path.is_file():
        return (
            f"kernel {run.release}: the guest wrote no result for the {loader} loader "
            f"({path} is missing){where}"
        )
    try:
        result = load_result(path)
    except HarnessError as exc:
        return f"kernel {run.release}, {loader} loader: {exc}{where}"
    properties["release"] = result.release
    for name in PROTOCOLS:
        counts = result.protocols.get(name)
        if counts is not None:
            properties[f"{name}_map"] = str(counts.map_bytes)
            properties[f"{name}_capture"] = str(counts.capture_bytes)
    expected = Expectation(
        release=run.release,
        tcp_bytes=traffic.tcp_bytes,
        udp_bytes=traffic.udp_bytes,
        icmp_count=traffic.icmp_count,
    )
    found = problems(result, expected)
    if not found:
        return ""
    listed = "\n".join(f"  - {problem}" for problem in found)
    return f"kernel {run.release}, {loader} loader:\n{listed}\nresult: {path}{where}"
