"""sockex1 in a VM per kernel: options, parametrization, one boot per kernel.

    pytest tests/vm --kernel 6.1 --loader both
    pytest tests/vm --kernel 5.10,6.12 -n 2 --dist loadgroup

Each kernel is prepared (fetched and cached), the sample built against it, and the
kernel booted once; the guest runs every requested loader and writes one JSON per
loader; each (kernel, loader) case then judges its own JSON. A kernel's cases carry
an ``xdist_group`` so ``--dist loadgroup`` keeps them on one worker (one boot).

The options below are known to pytest when it is started on tests/vm (as ``invoke
test`` does); a plain ``pytest`` from the project root runs these cases with their
defaults (every reachable series, both loaders).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmcase import KernelRun, Traffic

from harness import paths, vm
from harness.build import build_sample
from harness.errors import HarnessError
from harness.guest.scenario import LOADERS
from harness.kernels import KernelOptions, expand_specs, is_path_spec, prepare
from harness.report import CaseResult, render_table

#: Traffic the guest sends unless told otherwise.
DEFAULT_TCP_BYTES = 256 * 1024
DEFAULT_UDP_BYTES = 64 * 1024
DEFAULT_ICMP_COUNT = 16

_SPECS = pytest.StashKey[list[str]]()
_SPEC_ERROR = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "sockex1 in VMs (tests/vm)")
    group.addoption(
        "--kernel",
        default="",
        help="kernels to boot: a series (6.1), a comma list (5.10,6.12), 'all' "
        "(default: every series reachable from the configured sources) or a path to "
        "your own kernel image",
    )
    group.addoption(
        "--loader",
        default="both",
        choices=(*LOADERS, "both"),
        help="which loader of the sample to test (default: both)",
    )
    group.addoption(
        "--accel",
        default="auto",
        choices=("auto", "kvm", "tcg"),
        help="accelerator of the VMs (default: KVM where a probe shows it works, else TCG)",
    )
    group.addoption("--tcp-bytes", type=int, default=DEFAULT_TCP_BYTES, help="TCP payload")
    group.addoption(
        "--udp-bytes", type=int, default=DEFAULT_UDP_BYTES, help="UDP payload (0: no UDP)"
    )
    group.addoption(
        "--icmp-count", type=int, default=DEFAULT_ICMP_COUNT, help="ICMP echoes (0: no ICMP)"
    )
    group.addoption(
        "--vm-timeout",
        type=float,
        default=None,
        help="seconds one VM may run (default: {tcg:.0f} under TCG, {kvm:.0f} under KVM)".format(
            **vm.DEFAULT_TIMEOUTS
        ),
    )
    group.addoption("--vm-memory", default="1G", help="guest memory (default 1G)")
    group.addoption(
        "--vm-cpus",
        type=int,
        default=None,
        help="guest CPUs (default: 2, or 1 when several VMs run in parallel)",
    )
    group.addoption(
        "--vm-append",
        action="append",
        default=[],
        help="an extra kernel command-line option (repeatable), e.g. for debugging a boot",
    )
    group.addoption("--mirror", default=None, help="Debian mirror URL (default: the host's)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep these cases on one worker")
    if not hasattr(config, "workerinput"):  # the table is printed by the controller only
        config.pluginmanager.register(ResultsTable(), ResultsTable.name)
    text = str(config.getoption("kernel", default="") or "")
    try:
        config.stash[_SPECS] = expand_specs(text, _kernel_options(config))
    except HarnessError as exc:
        # Not a collection error: every case of this run fails with the message.
        config.stash[_SPECS] = [text or "all"]
        config.stash[_SPEC_ERROR] = str(exc)


def _kernel_options(config: pytest.Config) -> KernelOptions:
    mirror = config.getoption("mirror", default=None)
    return KernelOptions(mirror=str(mirror) if mirror else None)


def _loaders(config: pytest.Config) -> tuple[str, ...]:
    chosen = str(config.getoption("loader", default="both"))
    return LOADERS if chosen == "both" else (chosen,)


def kernel_id(spec: str) -> str:
    """A short test id for a kernel: the series, or a path's last component."""
    return Path(spec).name if is_path_spec(spec) else spec


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_spec" in metafunc.fixturenames:
        specs = metafunc.config.stash[_SPECS]
        metafunc.parametrize(
            "kernel_spec",
            [
                pytest.param(
                    spec, id=kernel_id(spec), marks=pytest.mark.xdist_group(f"kernel-{spec}")
                )
                for spec in specs
            ],
            scope="session",
        )
    if "loader" in metafunc.fixturenames:
        metafunc.parametrize("loader", _loaders(metafunc.config))


@pytest.fixture(scope="session")
def traffic(pytestconfig: pytest.Config) -> Traffic:
    return Traffic(
        tcp_bytes=int(pytestconfig.getoption("tcp_bytes")),
        udp_bytes=int(pytestconfig.getoption("udp_bytes")),
        icmp_count=int(pytestconfig.getoption("icmp_count")),
    )


def _parallel_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


@pytest.fixture(scope="session")
def kernel_run(
    kernel_spec: str, pytestconfig: pytest.Config, traffic: Traffic
) -> Iterator[KernelRun]:
    """Prepare, build and boot one kernel; the guest runs every requested loader."""
    config = pytestconfig
    spec_error = config.stash.get(_SPEC_ERROR, None)
    if spec_error is not None:
        yield KernelRun(kernel_spec, "", "", None, None, None, spec_error)
        return
    release = ""
    accel = ""
    results: Path | None = None
    started = time.monotonic()
    try:
        entry = prepare(kernel_spec, _kernel_options(config))
        release = entry.release
        build = build_sample(entry.release, entry.headers)
        accel = vm.probe_accel(str(config.getoption("accel")), image=entry)
        results = paths.results_dir() / entry.release
        loaders = _loaders(config)
        guest = [
            sys.executable,
            "-m",
            "harness.guest",
            "--loader",
            "both" if len(loaders) > 1 else loaders[0],
            "--object",
            str(build.bpf_object),
            "--c-loader",
            str(build.c_loader),
            "--out",
            str(results),
            "--tcp-bytes",
            str(traffic.tcp_bytes),
            "--udp-bytes",
            str(traffic.udp_bytes),
            "--icmp-count",
            str(traffic.icmp_count),
        ]
        cpus = config.getoption("vm_cpus") or (1 if _parallel_workers() > 1 else 2)
        timeout = config.getoption("vm_timeout")
        started = time.monotonic()
        ran = vm.run_vm(
            entry,
            guest,
            results,
            accel=accel,
            expect=[f"{loader}.json" for loader in loaders],
            timeout=float(timeout) if timeout else None,
            memory=str(config.getoption("vm_memory")),
            cpus=int(cpus),
            append=list(config.getoption("vm_append")),
        )
    except HarnessError as exc:
        log = getattr(exc, "log_path", None)
        yield KernelRun(
            kernel_spec,
            release,
            accel,
            time.monotonic() - started if accel else None,
            results,
            log if isinstance(log, Path) else None,
            str(exc),
        )
        return
    yield KernelRun(kernel_spec, release, ran.accel, ran.seconds, ran.results_dir, ran.console_log)


class ResultsTable:
    """Prints the table ``invoke test`` prints at the end of a plain pytest run (as in CI).

    ``invoke test`` prints its own from the JUnit file and turns this one off with
    ``-p no:sockex1-table``.
    """

    name = "sockex1-table"

    def __init__(self) -> None:
        self.cases: list[CaseResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = {str(name): str(value) for name, value in report.user_properties}
        if "loader" not in properties:
            return  # not a VM case, or one that never reached its checks
        if report.when == "call" or (report.when == "setup" and report.failed):
            outcome = "error" if report.when == "setup" else report.outcome
            message = str(report.longrepr or "") if report.failed else ""
            self.cases.append(CaseResult(report.nodeid, outcome, message, properties))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.cases:
            terminalreporter.section("sockex1 on each kernel")
            terminalreporter.write(render_table(self.cases))
