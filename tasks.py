"""Front door of the harness: ``invoke --list`` shows what it can do.

Tasks are thin: they parse options, call the ``harness`` package and turn a
:class:`harness.errors.HarnessError` into a clear message and a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke import Collection, Context, Exit, task

from harness.errors import HarnessError

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a HarnessError into ``error: ...`` on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(
            level=logging.DEBUG if kwargs.get("verbose") else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            raise Exit(f"error: {exc}", code=1) from exc
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


ns = Collection()
kernels_ns = Collection("kernels")
ns.add_collection(kernels_ns)

# Each section below defines its tasks and registers them in ``ns`` or ``kernels_ns``.

# --- kernels: kernels.list, kernels.fetch -------------------------------------------

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

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc


ns.add_task(report, name="report")


@task(help={"kernel": 'a series of kernels/catalog.toml, such as "6.1"', "verbose": "log details"})
@_reports_errors
def kernels_resolve(c: Context, kernel: str, verbose: bool = False) -> None:
    """Print the release a kernel series resolves to now (CI keys its kernel cache on it)."""
    from harness import kernels, paths

    found = kernels.resolve(kernel, kernels.KernelOptions(cache=paths.cache_dir()))
    print(found.release)


kernels_ns.add_task(kernels_resolve, name="resolve")
