"""Samples in a VM per kernel: options, parametrization, one boot per kernel.

    pytest tests/vm --kernel 6.1 --sample NAME --loader python
    pytest tests/vm --kernel 5.10,6.12 -n 2 --dist loadgroup

Each kernel is prepared, every sample built against it and the kernel booted once
(:mod:`harness.run`); the guest runs every (sample, loader) case and writes one JSON
per case; each test case then judges its own JSON. A kernel's cases carry an
``xdist_group`` so ``--dist loadgroup`` keeps them on one worker (one boot).

Collection reads only local files: the samples' descriptors and the catalog. A
kernel is resolved (and fetched) when its first case runs; with ``--kernel all``
a series whose archive cannot be reached is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import baseline, kernels, loaders, proc, progress, run, samples, upstream, vm
from harness.errors import ConfigError, HarnessError, MirrorError
from harness.report import CaseResult, render_table

_CHOICES = pytest.StashKey[list[run.KernelChoice]]()
_CASES = pytest.StashKey[list[run.Case]]()
_ERROR = pytest.StashKey[str]()
_RESULTS = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "samples in VMs (tests/vm)")
    group.addoption(
        "--kernel",
        default="",
        help="kernels to boot: a series (6.1), a comma list (5.10,6.12), 'all' "
        "(default: every series of the catalog; unreachable ones are skipped) or a path",
    )
    group.addoption(
        "--sample", default="all", help="samples to run: 'all' (default) or NAME[,NAME...]"
    )
    group.addoption(
        "--loader",
        default="all",
        help="loaders to run: 'all' (default) or NAME[,NAME...] of python, c, libbpf",
    )
    group.addoption(
        "--loader-cmd",
        action="append",
        default=[],
        help="NAME=COMMAND: a loader of your own speaking the loader protocol (repeatable)",
    )
    group.addoption(
        "--accel",
        default="auto",
        choices=("auto", "kvm", "tcg"),
        help="accelerator of the VMs (default: KVM where a probe shows it works, else TCG)",
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
    group.addoption(
        "--baseline",
        default=None,
        help="the path of another checkout whose loaders (and samples) run beside these "
        "as NAME@base, in the same boot (invoke test --baseline also takes a git revision)",
    )
    group.addoption(
        "--baseline-loaders-only",
        action="store_true",
        help="with --baseline: its loaders only, on this checkout's sample objects",
    )
    group.addoption("--mirror", default=None, help="Debian mirror URL (default: the host's)")
    group.addoption(
        "--progress-events",
        default=None,
        help="append each kernel's progress to this file as JSON lines (invoke test shows them)",
    )
    group.addoption(
        "--results-dir",
        default=None,
        help="where this run's results go (default: a new directory under build/results)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep these cases on one worker")
    # SIGTERM (CI cancelling, docker stop) and SIGHUP unwind like Ctrl-C: every VM is killed.
    proc.PytestSignals.register(config)
    if not hasattr(config, "workerinput"):  # the table is printed by the controller only
        config.pluginmanager.register(ResultsTable(), ResultsTable.name)
    try:
        config.stash[_CHOICES] = run.kernel_choices(
            str(config.getoption("kernel") or ""), _kernel_options(config)
        )
        chosen = samples.select(str(config.getoption("sample")), upstream.available())
        chosen_loaders = loaders.select(
            str(config.getoption("loader")), list(config.getoption("loader_cmd"))
        )
        config.stash[_CASES] = run.plan_cases(chosen, chosen_loaders)
        if config.getoption("baseline"):
            config.stash[_CASES] += baseline.cases(_baseline(config), chosen, chosen_loaders)
    except HarnessError as exc:
        # Not a collection error: the run's one case fails with the message.
        config.stash[_CHOICES] = [run.KernelChoice("options", True)]
        config.stash[_CASES] = []
        config.stash[_ERROR] = str(exc)


def _baseline(config: pytest.Config) -> baseline.Baseline:
    given = str(config.getoption("baseline"))
    tree = Path(given).expanduser()
    if not tree.is_dir():
        raise ConfigError(
            f"--baseline {given}: no such directory; give the path of another checkout "
            "(invoke test --baseline takes a git revision too)"
        )
    return baseline.Baseline(
        tree.resolve(), given, loaders_only=bool(config.getoption("baseline_loaders_only"))
    )


def _kernel_options(config: pytest.Config) -> kernels.KernelOptions:
    mirror = config.getoption("mirror", default=None)
    return kernels.KernelOptions(mirror=str(mirror) if mirror else None)


def kernel_id(spec: str) -> str:
    """A short test id for a kernel: the series, or a path's last component."""
    return Path(spec).name if kernels.is_path_spec(spec) else spec


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_choice" not in metafunc.fixturenames:
        return
    config = metafunc.config
    metafunc.parametrize(
        "kernel_choice",
        [
            pytest.param(
                choice, id=kernel_id(choice.spec), marks=pytest.mark.xdist_group(choice.spec)
            )
            for choice in config.stash[_CHOICES]
        ],
        scope="session",
    )
    cases: list[run.Case | None] = [*config.stash[_CASES]] or [None]
    metafunc.parametrize("case", cases, ids=[c.id if c else "none" for c in cases])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every case names its kernel, sample and loader in the JUnit file, also one whose
    # kernel was skipped or failed before the test body could record anything.
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        choice, case = params.get("kernel_choice"), params.get("case")
        if isinstance(choice, run.KernelChoice) and isinstance(case, run.Case):
            item.user_properties += [
                ("kernel", choice.spec),
                ("sample", case.sample.name),
                ("loader", case.loader.name),
            ]


#: The key under which xdist hands the controller's results directory to its workers.
_WORKER_RESULTS = "harness_results_dir"


def results_root(config: pytest.Config) -> Path:
    """This run's results directory: --results-dir, else one new directory for the run.

    Under xdist the controller makes it when it starts a worker and hands it over,
    so every worker's VMs write into the same run.
    """
    if _RESULTS not in config.stash:
        given = config.getoption("results_dir")
        workerinput = getattr(config, "workerinput", {})
        if given:
            config.stash[_RESULTS] = Path(str(given))
        elif _WORKER_RESULTS in workerinput:
            config.stash[_RESULTS] = Path(workerinput[_WORKER_RESULTS])
        else:
            config.stash[_RESULTS] = run.new_results_dir()
    return config.stash[_RESULTS]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller: every worker gets the run's one results directory."""
    node.workerinput[_WORKER_RESULTS] = str(results_root(node.config))


@pytest.fixture(scope="session")
def kernel_run(
    kernel_choice: run.KernelChoice, pytestconfig: pytest.Config
) -> Iterator[run.KernelRun]:
    """Prepare, build and boot one kernel; the guest runs every case."""
    config = pytestconfig
    spec = kernel_choice.spec
    error = config.stash.get(_ERROR, None)
    if error is not None:
        yield run.KernelRun(spec, "", "", None, None, None, error)
        return
    cases = config.stash[_CASES]
    events = config.getoption("progress_events")
    listener = progress.EventLog(Path(str(events))) if events else None
    try:
        prepared = run.prepare_kernel(spec, cases, _kernel_options(config), progress=listener)
    except MirrorError as exc:
        if not kernel_choice.explicit:
            pytest.skip(f"kernel {spec}: {exc}")
        yield run.KernelRun(spec, "", "", None, None, None, str(exc))
        return
    except HarnessError as exc:
        yield run.KernelRun(spec, "", "", None, None, None, str(exc))
        return
    try:
        accel = vm.probe_accel(str(config.getoption("accel")), image=prepared.entry)
    except HarnessError as exc:
        yield run.KernelRun(spec, prepared.entry.release, "", None, None, None, str(exc))
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = config.getoption("vm_cpus") or (1 if workers > 1 else 2)
    timeout = config.getoption("vm_timeout")
    options = run.VmOptions(
        accel=accel,
        timeout=float(timeout) if timeout else None,
        memory=str(config.getoption("vm_memory")),
        cpus=int(cpus),
        append=tuple(config.getoption("vm_append")),
    )
    yield run.boot(prepared, cases, options, results_root(config), progress=listener)


class ResultsTable:
    """Prints the table ``invoke test`` prints at the end of a plain pytest run (as in CI).

    ``invoke test`` prints its own from the JUnit file and turns this one off with
    ``-p no:results-table``.
    """

    name = "results-table"

    def __init__(self) -> None:
        self.cases: list[CaseResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = {str(name): str(value) for name, value in report.user_properties}
        if "loader" not in properties:
            return  # not a VM case, or one that never reached its checks
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome: str = report.outcome
            if report.when == "setup" and report.failed:
                outcome = "error"
            message = str(report.longrepr or "") if not report.passed else ""
            if report.skipped and isinstance(report.longrepr, tuple):
                message = str(report.longrepr[2])
            self.cases.append(CaseResult(report.nodeid, outcome, message, properties))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.cases:
            terminalreporter.section("samples on each kernel")
            terminalreporter.write(render_table(self.cases))
        if baseline.has_baseline(self.cases):
            terminalreporter.section("baseline vs candidate")
            terminalreporter.write(baseline.render_table(self.cases))
