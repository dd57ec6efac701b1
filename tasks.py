"""Front door of the harness: ``invoke --list`` shows what it can do.

Tasks are thin: they parse options, call the ``harness`` package and turn a
:class:`harness.errors.HarnessError` into a clear message and a non-zero exit.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke import Collection, Context, Exit, task

from harness.errors import HarnessError
from harness.loaders import BUILTIN
from harness.vm import DEFAULT_TIMEOUTS

BUILTIN_LOADERS = [loader.name for loader in BUILTIN]

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a HarnessError into ``error: ...`` on stderr and exit status 1.

    Ctrl-C exits with status 130, SIGTERM and SIGHUP with 128 + the signal, each once
    the commands and VMs of the run were killed (see :mod:`harness.proc`).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from harness import proc

        logging.basicConfig(
            level=logging.DEBUG if kwargs.get("verbose") else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        proc.exit_on_signals()
        try:
            try:
                return func(*args, **kwargs)
            except HarnessError as exc:
                raise Exit(f"error: {exc}", code=1) from exc
            except KeyboardInterrupt:
                raise Exit("interrupted", code=130) from None
        finally:
            # A signal that pytest (inside invoke test) turned into an interrupted
            # session, or that came while an error was reported, still decides the exit.
            if (signum := proc.termination_signal()) is not None:
                name = signal.Signals(signum).name
                raise Exit(f"terminated by {name}", code=128 + signum)

    return wrapper  # type: ignore[return-value]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


ns = Collection()
kernels_ns = Collection("kernels")
ns.add_collection(kernels_ns)

# Each section below defines its tasks and registers them in ``ns`` or ``kernels_ns``.

# --- kernels: kernels.list, kernels.fetch, kernels.resolve, kernels.prune ---------------


_MIRROR_HELP = (
    "URL of the Debian archive to use instead of the host's apt sources "
    "(also $HARNESS_MIRROR; $HARNESS_SECURITY_MIRROR and $HARNESS_SNAPSHOT_MIRROR "
    "for the security and snapshot archives)"
)


def _kernel_options(mirror: str | None, refresh: bool) -> Any:
    from harness import kernels, paths

    return kernels.KernelOptions(cache=paths.cache_dir(), mirror=mirror, refresh=refresh)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size else "-"


@task(
    help={
        "refresh": "download the package index again even if it is less than a day old",
        "mirror": _MIRROR_HELP,
        "verbose": "log details",
    }
)
@_reports_errors
def kernels_list(
    c: Context, refresh: bool = False, mirror: str | None = None, verbose: bool = False
) -> None:
    """List kernel series: resolved release, package versions, cached or not, size.

    ``source`` is the part of the release's own source tree kept for its samples/bpf
    (``--sample kernel:...``), included in ``size``.
    """
    from harness import kernels

    options = _kernel_options(mirror, refresh)
    rows = kernels.list_kernels(options)
    table = [("series", "release", "packages", "cached", "size", "source")]
    notes = []
    for row in rows:
        packages = ", ".join(f"{p.name} {p.version}" for p in row.packages) or "-"
        table.append(
            (
                row.series or "?",
                row.release or "-",
                packages,
                "yes" if row.cached else "no",
                _megabytes(row.size),
                f"{row.source_size / 1e6:.1f} MB" if row.source_size else "-",
            )
        )
        if row.problem and row.release is None:
            notes.append(f"{row.series}: {row.problem}")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    from harness.kernels.cache import disk_usage

    print(f"\ncache: {options.cache} ({_megabytes(disk_usage(options.cache))} in all)")
    for note in notes:
        print(f"note: {note}")


@task(
    help={
        "kernel": 'series to fetch: "all" (the default: every series reachable from here), '
        'one such as "6.1", or several as "5.10,6.12"; a path to your own kernel is checked',
        "refresh": "download the package index again even if it is less than a day old",
        "mirror": _MIRROR_HELP,
        "verbose": "log details",
    }
)
@_reports_errors
def kernels_fetch(
    c: Context,
    kernel: str = "all",
    refresh: bool = False,
    mirror: str | None = None,
    verbose: bool = False,
) -> None:
    """Download and cache kernels: vmlinux, trimmed modules, UAPI headers."""
    import time

    from harness import display, kernels
    from harness.kernels.cache import disk_usage

    options = _kernel_options(mirror, refresh)
    failed = []
    with display.shown() as show:
        for spec in kernels.expand_specs(kernel, options):
            start = time.monotonic()
            try:
                entry = kernels.prepare(spec, options, progress=show)
            except HarnessError as exc:
                _say(f"error: {spec}: {exc}")
                failed.append(spec)
                continue
            root = entry.image.parent.parent
            print(
                f"{spec}: {entry.release} ready in {time.monotonic() - start:.1f} s, "
                f"{_megabytes(disk_usage(root))} at {root}",
                flush=True,
            )
    if failed:
        raise Exit(f"error: could not fetch {', '.join(failed)}", code=1)


@task(
    help={
        "kernel": 'a series of kernels/catalog.toml, such as "6.1"',
        "packages": "print the packages and versions the release is made of instead",
        "verbose": "log details",
    }
)
@_reports_errors
def kernels_resolve(c: Context, kernel: str, packages: bool = False, verbose: bool = False) -> None:
    """Print the release a kernel series resolves to now (CI keys its kernel cache on it)."""
    from harness import kernels, paths

    found = kernels.resolve(kernel, kernels.KernelOptions(cache=paths.cache_dir()))
    if packages:
        # Debian can upload a new build of the same release: a cache key needs both.
        print(" ".join(f"{p.name}={p.version}" for p in found.packages))
    else:
        print(found.release)


@task(
    help={
        "dry_run": "list what would be removed, remove nothing",
        "verbose": "log details",
    }
)
@_reports_errors
def kernels_prune(c: Context, dry_run: bool = False, verbose: bool = False) -> None:
    """Remove cached kernels that are not the newest of their series, and unused indexes."""
    from harness import kernels, paths

    pruned = kernels.prune(kernels.KernelOptions(cache=paths.cache_dir()), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for removal in pruned.removed:
        print(f"{verb} {removal.path} ({_megabytes(removal.size)}): {removal.why}")
    for removal in pruned.in_use:
        print(f"kept {removal.path}: in use by another run ({removal.why})")
    if not pruned.removed and not pruned.in_use:
        print("nothing to remove")
    else:
        print(f"{verb} {_megabytes(pruned.freed)} in all")


kernels_ns.add_task(kernels_list, name="list")
kernels_ns.add_task(kernels_fetch, name="fetch")
kernels_ns.add_task(kernels_resolve, name="resolve")
kernels_ns.add_task(kernels_prune, name="prune")

# --- samples: samples.list ------------------------------------------------------------

samples_ns = Collection("samples")
ns.add_collection(samples_ns)


@task(help={"verbose": "log details"})
@_reports_errors
def samples_list(c: Context, verbose: bool = False) -> None:
    """List the samples: name, title, format, loaders, programs, maps.

    The kernel's own samples (``--sample kernel:all``) follow, as the plan knows them
    before a release's source is read.
    """
    from harness import loaders, upstream

    builtin = loaders.builtin()
    for sample in upstream.available().values():
        names = [loader.name for loader in builtin if loader.applies_to(sample.format)]
        if upstream.is_kernel_sample(sample):
            names.append(upstream.OWN.name)
        programs = ", ".join(
            f"{p.name} ({p.type}{', ' + p.attach if p.attach else ''})" for p in sample.programs
        )
        maps = ", ".join(
            f"{m.name} ({m.kind}: {','.join(m.key.fields)} -> {','.join(m.value.fields)})"
            for m in sample.maps
        )
        print(f"{sample.name}: {sample.title}")
        print(f"  format:   {sample.format}")
        print(f"  loaders:  {', '.join(names)}")
        print(f"  programs: {programs}")
        print(f"  maps:     {maps}")
        if sample.min_kernel:
            print(f"  needs:    Linux {sample.min_kernel}+ ({sample.min_kernel_reason})")


samples_ns.add_task(samples_list, name="list")

# --- build --------------------------------------------------------------------------


@task(
    help={
        "kernel": 'what to build for: "host" (the default: the running kernel and the host\'s '
        'headers), a series such as "6.1", several as "5.10,6.1", or a path to a kernel',
        "sample": 'samples to build: "all" (the default) or NAME[,NAME...]',
        "verbose": "log details",
    }
)
@_reports_errors
def build(c: Context, kernel: str = "host", sample: str = "all", verbose: bool = False) -> None:
    """Build the samples and the program loaders against a kernel's UAPI headers."""
    import os

    from harness import loaders, paths, samples, upstream
    from harness.build import build_loader, build_sample
    from harness.errors import ConfigError

    picked = samples.select(sample, upstream.available())
    chosen = [s for s in picked if not upstream.is_kernel_sample(s)]
    theirs = [s for s in picked if upstream.is_kernel_sample(s)]
    for spec in [s.strip() for s in kernel.split(",") if s.strip()]:
        if spec == "host":
            if theirs:
                raise ConfigError(
                    "the kernel's own samples are built from a series' source package: give "
                    "--kernel a series such as 6.1"
                )
            release, headers = os.uname().release, None
        else:
            from harness import display, kernels

            with display.shown() as show:
                entry = kernels.prepare(
                    spec, kernels.KernelOptions(cache=paths.cache_dir()), progress=show
                )
            release, headers = entry.release, entry.headers
            if theirs:
                options = kernels.KernelOptions(cache=paths.cache_dir())
                part = upstream.prepare(entry, theirs, options)
                directory = paths.build_dir() / release / upstream.BUILD_DIR
                for name, build in part.builds.items():
                    print(f"{name} for {release}: in {build.output.directory}")
                for key, why in {**part.skipped, **part.broken}.items():
                    print(f"{key} for {release}: {why}")
                print(f"commands and their output: {directory / upstream.LOG_NAME}")
        outputs = [build_sample(s, release, headers).output for s in chosen]
        formats = {s.format for s in chosen}
        outputs += [
            build_loader(loader, release, headers)
            for loader in loaders.builtin()
            if loader.sources and any(loader.applies_to(f) for f in formats)
        ]
        for built in outputs:
            for command in built.commands:
                print(f"$ {command}")
            state = "built" if built.rebuilt else "up to date"
            print(f"{built.name} for {release}: {state} in {built.directory}")
        print(f"UAPI headers: {headers or 'the host /usr/include'}")


ns.add_task(build, name="build")

# --- test ---------------------------------------------------------------------------


@task(
    help={
        "kernel": 'kernels to test: "all" (the default: every series of the catalog; one '
        'whose archive cannot be reached is skipped), one series such as "6.1", several as '
        '"5.10,6.12", or a path to your own kernel',
        "sample": 'samples to run: "all" (the default) or NAME[,NAME...] (invoke samples.list)',
        "loader": 'loaders to run: "all" (the default) or NAME[,NAME...] of '
        + ", ".join(BUILTIN_LOADERS),
        "loader_cmd": "NAME=COMMAND: also run a loader of your own that speaks the loader "
        "protocol (repeatable; see the README)",
        "jobs": "VMs to run in parallel (pytest-xdist; a kernel's cases stay on one worker)",
        "accel": "kvm, tcg, or auto (the default: KVM where a short probe shows it works)",
        "timeout": "seconds one VM may run (default 0: {tcg:.0f} under TCG, {kvm:.0f} under "
        "KVM)".format(**DEFAULT_TIMEOUTS),
        "timings": "print where the time went: each case's phases in the guest, and each "
        "kernel's timeline (host, boot phases, the guest's start-up, cases, exit)",
        "mirror": "URL of the Debian archive to use instead of the host's apt sources "
        "(also $HARNESS_MIRROR)",
        "pytest_args": "more arguments for pytest, as one string (e.g. '-x -vv')",
        "baseline": "A/B: a git revision (e.g. origin/main) or another checkout's path whose "
        "loaders and samples run beside these as NAME@base in the same boots; the exit "
        "status is 1 only when a case regressed (see the README)",
        "baseline_loaders_only": "with --baseline: its loaders only, on this checkout's samples",
        "verbose": "log details",
    },
    iterable=["loader_cmd"],
)
@_reports_errors
def test(
    c: Context,
    kernel: str = "all",
    sample: str = "all",
    loader: str = "all",
    loader_cmd: list[str] | None = None,
    jobs: int = 1,
    accel: str = "auto",
    timeout: int = 0,
    timings: bool = False,
    mirror: str | None = None,
    pytest_args: str = "",
    baseline: str = "",
    baseline_loaders_only: bool = False,
    verbose: bool = False,
) -> None:
    """Boot each kernel in a VM, run every sample with every loader, check the maps."""
    # The collector is off while the harness and pytest are imported: imports make many
    # objects and almost no garbage, and its passes over them took about 40 ms of every
    # run (see the freeze below).
    gc.disable()
    import contextlib
    import shlex

    import pytest

    from harness import (
        baseline as ab,
        display,
        kernels,
        loaders,
        paths,
        preflight,
        progress,
        report as results,
        run,
        samples,
        timeline,
        upstream,
    )
    from harness.errors import ConfigError

    # What the imports made lives as long as the process: the garbage collector stops
    # looking at it (its collections took 0.047 s instead of 0.063 s of a run, and the
    # host's work up to vng 2.6 % fewer instructions, 3.40 against 3.49 billion).
    gc.freeze()
    gc.enable()

    # Every option is checked here, before anything is downloaded or booted.
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {jobs}")
    if timeout < 0:
        raise ConfigError(f"--timeout must be a number of seconds (0: the default), not {timeout}")
    if accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {accel!r}; use auto, kvm or tcg")
    if baseline_loaders_only and not baseline:
        raise ConfigError("--baseline-loaders-only goes with --baseline REV")
    commands = list(loader_cmd or [])
    options = kernels.KernelOptions(cache=paths.cache_dir(), mirror=mirror)
    choices = run.kernel_choices(kernel, options)
    chosen = samples.select(sample, upstream.available())
    chosen_loaders = loaders.select(loader, commands)
    cases = run.plan_cases(chosen, chosen_loaders)
    if not cases:
        raise ConfigError(
            f"no loader of --loader {loader} can load the samples {sample} "
            "(invoke samples.list says which loaders apply)"
        )
    try:
        extra = shlex.split(pytest_args)
    except ValueError as exc:
        raise ConfigError(f"--pytest-args {pytest_args!r}: {exc}") from exc

    results_dir = run.new_results_dir()
    junit = results_dir / results.JUNIT_NAME
    events = results_dir / progress.EVENTS_NAME
    args = [
        str(paths.PROJECT_ROOT / "tests" / "vm"),
        f"--kernel={kernel}",
        f"--sample={sample}",
        f"--loader={loader}",
        *(f"--loader-cmd={command}" for command in commands),
        f"--accel={accel}",
        f"--results-dir={results_dir}",
        f"--junitxml={junit}",
        f"--progress-events={events}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:results-table",
        # Plugins the VM tests do not use; hypothesis's alone took 1.1 s of every start.
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:benchmark",
        # pytest's turning of exceptions in __del__ into warnings ends the session with
        # five full garbage collections of this process (its heap holds pytest, rich
        # and the harness): from the VM's end to the exit took 0.14 s instead of 0.26 s
        # (medians of 6 alternating runs). Such an exception is still printed, by Python.
        "-p",
        "no:unraisableexception",
        # The VM tests judge with messages of their own, not with assert statements:
        # pytest need not parse and rewrite their modules on every start (where
        # bytecode is not written it cannot keep the rewritten code), 3.5 % of the
        # instructions up to vng (3.29 against 3.41 billion, callgrind).
        "--assert=plain",
        "-v",
    ]
    if mirror:
        args.append(f"--mirror={mirror}")
    if timeout:
        args.append(f"--vm-timeout={timeout}")
    if jobs > 1:
        args += ["-n", str(min(jobs, len(choices))), "--dist", "loadgroup"]
    args += extra
    with contextlib.ExitStack() as stack:
        tried = {loader.command: loader for loader in chosen_loaders if loader.command}
        per_kernel = len(cases)
        if baseline:
            # Checked out (and removed after) around the run; checked before any boot.
            base = stack.enter_context(ab.checkout(baseline, loaders_only=baseline_loaders_only))
            base_cases = ab.cases(base, chosen, chosen_loaders)
            per_kernel += len(base_cases)
            ab.check(base, base_cases)
            for twin in (c.loader for c in base_cases if c.loader.command):
                if twin.name != ab.base_name("python"):  # ab.check has started that one
                    tried.setdefault(twin.command, twin)
            args += [f"--baseline={base.tree}"]
            args += ["--baseline-loaders-only"] if baseline_loaders_only else []
        # A --loader-cmd that breaks the protocol is found here, once, not in every VM.
        preflight.try_on_host(list(tried.values()), chosen)
        _say(f"$ pytest {shlex.join(args)}")
        # Each kernel's state live on a terminal, a line per change elsewhere (CI logs).
        cases_of = {choice.spec: per_kernel for choice in choices}
        with display.shown(kernels=list(cases_of)) as show, progress.follow(events, show):
            verdicts = display.KernelVerdicts(progress.EventLog(events), cases_of)
            code = pytest.main(args, plugins=[verdicts])
    if code == pytest.ExitCode.INTERRUPTED:
        raise Exit("interrupted", code=130)
    if not junit.exists():
        raise Exit(f"error: pytest ended with status {int(code)} and wrote no results", code=1)
    cases_run = results.parse_junit(junit)
    print()
    sys.stdout.write(results.render_table(cases_run, color=sys.stdout.isatty()))
    if timings:
        print()
        sys.stdout.write(results.render_timings(cases_run))
        if by_kernel := timeline.render(results_dir):
            sys.stdout.write("\n" + by_kernel)
    if baseline:
        ab.write_junit(cases_run, results_dir / ab.JUNIT_NAME)
        print()
        sys.stdout.write(ab.render_table(cases_run))
    print(f"\nresults: {results_dir}/ (JUnit, and <release>/<sample>/<loader>.json)")
    if baseline:
        # Cases that fail on both sides are not the change's doing: only a regression
        # (or pytest failing for another reason than its cases) fails an A/B run.
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise Exit(code=1)
        if ab.exit_status(cases_run):
            raise Exit(code=1)
        return
    if code != pytest.ExitCode.OK or results.summary_exit_code(cases_run):
        raise Exit(code=1)


ns.add_task(test, name="test")

# --- report -------------------------------------------------------------------------


@task(
    help={
        "results": "a run's results directory (default: the latest, build/results/latest)",
        "junit": "the JUnit file of a run, instead of --results",
        "format": "table (for a terminal, the default) or markdown (for a GitHub job summary)",
        "timings": "add each case's phases in the guest and each kernel's timeline",
        "output": "write the report to FILE instead of standard output",
        "title": "the headline of the Markdown summary",
        "check": "exit with status 1 when a case failed (5 when none ran), like pytest; "
        "for an A/B run, when a case regressed",
    }
)
@_reports_errors
def report(
    c: Context,
    results: str = "",
    junit: str = "",
    format: str = "table",
    timings: bool = False,
    output: str = "",
    title: str = "Samples on each kernel",
    check: bool = False,
) -> None:
    """Show the results of a run: tables, or a Markdown summary for CI."""
    from harness import baseline as ab, report as reports, run, timeline
    from harness.errors import ConfigError

    if format not in ("table", "markdown"):
        raise ConfigError(f"unknown report format {format!r}; use one of: table, markdown")
    if junit:
        path = Path(junit)
    else:
        path = (Path(results) if results else run.latest_results_dir()) / reports.JUNIT_NAME
    cases = reports.parse_junit(path)
    compared = ab.has_baseline(cases)  # an A/B run: its comparison comes first
    if format == "markdown":
        text = reports.render_markdown(cases, title=title)
        text = ab.render_markdown(cases, title=title) + "\n" + text if compared else text
    else:
        text = reports.render_table(cases, color=not output and sys.stdout.isatty())
        text = ab.render_table(cases) + "\n" + text if compared else text
    if timings:
        text += "\n" + reports.render_timings(cases)
        if by_kernel := timeline.render(path.parent):
            text += "\n" + by_kernel
    if output:
        _write_file(Path(output), text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if check and (code := ab.exit_status(cases) if compared else reports.summary_exit_code(cases)):
        raise Exit(code=code)


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    from harness.errors import ConfigError
    from harness.files import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc


ns.add_task(report, name="report")
