"""Front door of the harness: ``invoke --list`` shows what it can do.

Tasks are thin: they parse options, call the ``harness`` package and turn a
:class:`harness.errors.HarnessError` into a clear message and a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke import Collection, Context, Exit, task

from harness.errors import HarnessError
from harness.guest.scenario import LOADERS
from harness.vm import DEFAULT_TIMEOUTS

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

# --- kernels: kernels.list, kernels.fetch, kernels.resolve --------------------------


_MIRROR_HELP = (
    "URL of the Debian archive to use instead of the host's apt sources "
    "(also $HARNESS_MIRROR; $HARNESS_SECURITY_MIRROR and $HARNESS_SNAPSHOT_MIRROR "
    "for the security and snapshot archives)"
)


def _kernel_options(mirror: str | None, refresh: bool) -> Any:
    from harness import kernels, paths

    return kernels.KernelOptions(cache=paths.cache_dir(), mirror=mirror, refresh=refresh)


def _download_progress() -> Callable[[str], None]:
    """Progress lines on stderr; byte counts overwrite each other on a terminal."""
    tty = sys.stderr.isatty()
    pending = False

    def show(line: str) -> None:
        nonlocal pending
        counting = line.startswith("downloaded ")
        if counting and not tty:
            return
        if tty and counting:
            print(f"\r  {line}\033[K", end="", file=sys.stderr, flush=True)
            pending = True
            return
        if pending:
            print(file=sys.stderr)
            pending = False
        _say(line)

    return show


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
    """List kernel series: resolved release, package versions, cached or not, size."""
    from harness import kernels

    options = _kernel_options(mirror, refresh)
    rows = kernels.list_kernels(options)
    table = [("series", "release", "packages", "cached", "size")]
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
            )
        )
        if row.problem and row.release is None:
            notes.append(f"{row.series}: {row.problem}")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    print(f"\ncache: {options.cache}")
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

    from harness import kernels
    from harness.kernels.cache import disk_usage

    options = _kernel_options(mirror, refresh)
    failed = []
    for spec in kernels.expand_specs(kernel, options):
        start = time.monotonic()
        try:
            entry = kernels.prepare(spec, options, progress=_download_progress())
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


kernels_ns.add_task(kernels_list, name="list")
kernels_ns.add_task(kernels_fetch, name="fetch")
kernels_ns.add_task(kernels_resolve, name="resolve")

# --- build --------------------------------------------------------------------------


@task(
    help={
        "kernel": 'what to build for: "host" (the default: the running kernel and the host\'s '
        'headers), a series such as "6.1", several as "5.10,6.1", or a path to a kernel',
        "verbose": "log details",
    }
)
@_reports_errors
def build(c: Context, kernel: str = "host", verbose: bool = False) -> None:
    """Build sockex1 (BPF object and C loader) against a kernel's UAPI headers."""
    import os

    from harness import paths
    from harness.build import build_sample

    for spec in [s.strip() for s in kernel.split(",") if s.strip()]:
        if spec == "host":
            release, headers = os.uname().release, None
        else:
            from harness import kernels

            entry = kernels.prepare(
                spec, kernels.KernelOptions(cache=paths.cache_dir()), progress=_say
            )
            release, headers = entry.release, entry.headers
        built = build_sample(release, headers)
        for command in built.commands:
            print(f"$ {command}")
        state = "built" if built.rebuilt else "up to date, nothing rebuilt"
        where = built.include_dir or "the host's /usr/include"
        print(f"sockex1 for {release}: {state} in {built.directory} (UAPI headers: {where})")


ns.add_task(build, name="build")

# --- test ---------------------------------------------------------------------------


def _test_progress(line: str) -> None:
    # Byte counts of downloads are too many lines for a log; the rest is progress.
    if not line.startswith("downloaded "):
        _say(f"  {line}")


@task(
    help={
        "kernel": 'kernels to test: "all" (the default: every series reachable from the '
        'configured sources), one series such as "6.1", several as "5.10,6.12", or a path '
        "to your own kernel image",
        "loader": "python, c, or both (the default): which loader of the sample to test",
        "jobs": "VMs to run in parallel (pytest-xdist; a kernel's cases stay on one worker)",
        "accel": "kvm, tcg, or auto (the default: KVM where a short probe shows it works)",
        "tcp_bytes": "TCP payload the guest sends over loopback (default 256 KiB)",
        "udp": "send UDP as well (default on; --no-udp to leave it out)",
        "icmp": "send ICMP echoes as well (default on; --no-icmp to leave them out)",
        "timeout": "seconds one VM may run (default 0: {tcg:.0f} under TCG, {kvm:.0f} under "
        "KVM)".format(**DEFAULT_TIMEOUTS),
        "mirror": "URL of the Debian archive to use instead of the host's apt sources "
        "(also $HARNESS_MIRROR)",
        "pytest_args": "more arguments for pytest, as one string (e.g. '-x -vv')",
        "verbose": "log details",
    },
)
@_reports_errors
def test(
    c: Context,
    kernel: str = "all",
    loader: str = "both",
    jobs: int = 1,
    accel: str = "auto",
    tcp_bytes: int = 256 * 1024,
    udp: bool = True,
    icmp: bool = True,
    timeout: int = 0,
    mirror: str | None = None,
    pytest_args: str = "",
    verbose: bool = False,
) -> None:
    """Boot each kernel in a VM, run sockex1 under loopback traffic, check its counts."""
    import shlex
    import time

    import pytest

    from harness import kernels, paths, vm
    from harness import report as results
    from harness.build import build_sample
    from harness.errors import ConfigError

    if loader not in (*LOADERS, "both"):
        raise ConfigError(f"unknown loader {loader!r}; use {', '.join(LOADERS)} or both")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {jobs}")
    options = kernels.KernelOptions(cache=paths.cache_dir(), mirror=mirror)
    specs = kernels.expand_specs(kernel, options)
    # Kernels and builds first, one after the other: a kernel that cannot be had ends
    # the run here, with the kernels' own message, before any VM boots.
    entries = []
    for spec in specs:
        start = time.monotonic()
        _say(f"kernel {spec}: preparing")
        entry = kernels.prepare(spec, options, progress=_test_progress)
        built = build_sample(entry.release, entry.headers)
        state = "built" if built.rebuilt else "up to date"
        _say(
            f"kernel {spec}: {entry.release} ready, sockex1 {state} "
            f"({time.monotonic() - start:.1f} s)"
        )
        entries.append(entry)
    chosen = vm.probe_accel(accel, image=entries[0] if entries else None)
    _say(f"accelerator: {chosen}" + (" (probed)" if accel == "auto" else ""))

    junit = results.junit_path()
    junit.unlink(missing_ok=True)
    args = [
        str(paths.PROJECT_ROOT / "tests" / "vm"),
        f"--kernel={','.join(specs)}",
        f"--loader={loader}",
        f"--accel={chosen}",
        f"--tcp-bytes={tcp_bytes}",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:sockex1-table",
        "-v",
    ]
    # The amounts of UDP and ICMP are tests/vm/conftest.py's defaults; only leaving
    # them out is asked for here.
    if not udp:
        args.append("--udp-bytes=0")
    if not icmp:
        args.append("--icmp-count=0")
    if mirror:
        args.append(f"--mirror={mirror}")
    if timeout:
        args.append(f"--vm-timeout={timeout}")
    if jobs > 1:
        args += ["-n", str(min(jobs, len(specs))), "--dist", "loadgroup"]
    args += shlex.split(pytest_args)
    _say(f"$ pytest {shlex.join(args)}")
    code = pytest.main(args)
    if code == pytest.ExitCode.INTERRUPTED:
        raise Exit("interrupted", code=130)
    cases = results.parse_junit(junit)
    print()
    sys.stdout.write(results.render_table(cases))
    print(f"\nJUnit: {junit}\nconsole logs and results: {paths.results_dir()}/<release>/")
    if code != pytest.ExitCode.OK or results.summary_exit_code(cases):
        raise Exit(code=1)


ns.add_task(test, name="test")

# --- report -------------------------------------------------------------------------


@task(
    help={
        "junit": "the JUnit file of a run (default: build/results/junit.xml)",
        "format": "table (for a terminal, the default) or markdown (for a GitHub job summary)",
        "output": "write the report to FILE instead of standard output",
        "title": "the headline of the Markdown summary",
        "check": "exit with status 1 when a case failed (5 when none ran), like pytest",
    }
)
@_reports_errors
def report(
    c: Context,
    junit: str = "",
    format: str = "table",
    output: str = "",
    title: str = "sockex1 on each kernel",
    check: bool = False,
) -> None:
    """Show the results of a run: a table, or a Markdown summary for CI."""
    from harness import report as results
    from harness.errors import ConfigError

    if format not in ("table", "markdown"):
        raise ConfigError(f"unknown report format {format!r}; use one of: table, markdown")
    path = Path(junit) if junit else results.junit_path()
    cases = results.parse_junit(path)
    if format == "markdown":
        text = results.render_markdown(cases, title=title)
    else:
        text = results.render_table(cases)
    if output:
        _write_file(Path(output), text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if check and (code := results.summary_exit_code(cases)):
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
