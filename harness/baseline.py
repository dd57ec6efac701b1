"""A/B: a baseline checkout's loaders (and samples) in the same run as the candidate's.

``invoke test --baseline REV`` answers "does my change break a loader on any kernel?"
in one run. The candidate is this checkout; the baseline is another revision of it
(checked out with ``git worktree add --detach`` under the build directory, removed
afterwards) or the path of another checkout. The baseline joins the run as more
cases, not as a second run, so both sides share each kernel's one VM boot:

- each loader gets a baseline twin named ``NAME@base``: the Python loader speaks the
  loader protocol from a bundle of the baseline's package (:func:`write_bundle`), in
  the guest in a child forked from the guest's process (harness/guest/forked.py),
  elsewhere as a program; a C loader is built from the baseline's sources with this
  checkout's build rules; a user's ``--loader-cmd`` is the same command, or its
  counterpart in the baseline tree when the command lies in this checkout
  (``examples/stdlib_loader.py``);
- each sample gets a twin ``SAMPLE@base`` whose object is built from the baseline's
  ``samples/SAMPLE/`` and judged by the baseline's descriptor (read by this
  harness), unless ``--baseline-loaders-only`` keeps this checkout's samples.

The run's JUnit file then holds both sides; :func:`split` takes the ``@base`` cases
back apart and :mod:`harness.compare` classifies each (kernel, sample, loader). What
can be checked before a kernel is fetched or booted is checked by :func:`check`:
the tree's layout, the baseline's Python loader starting, its C loaders and samples
building against the host's headers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import py_compile
import shutil
import site
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from junitparser import Failure, JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

from harness import compare, files, paths, samples, upstream
from harness.errors import BuildError, CommandError, ConfigError, HarnessError, SampleError
from harness.loaders import Loader
from harness.proc import Runner, SubprocessRunner, require
from harness.report import MISSING, VERDICTS, CaseResult
from harness.run import Case

log = logging.getLogger(__name__)

#: What a baseline loader's or sample's name ends with.
SUFFIX = "@base"
#: Where the worktrees of baseline revisions go, under the build directory.
WORKTREES = "baselines"
#: The comparison of a run, as JUnit (one test case per (kernel, sample, loader)).
JUNIT_NAME = "ab-junit.xml"
#: The property a VM case records: its sample's deterministic column headers, as JSON.
DETERMINISTIC = "deterministic"
#: How long the baseline's Python loader may take to print its usage.
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Baseline:
    """A baseline checkout: where it is and what the user called it."""

    tree: Path
    label: str  # what --baseline said
    commit: str | None = None  # the revision's commit; None for a path
    loaders_only: bool = False

    def __str__(self) -> str:
        return f"{self.label} ({self.commit[:12]})" if self.commit else self.label


def base_name(name: str) -> str:
    """The name of ``name``'s baseline twin."""
    return name + SUFFIX


# --- the checkout --------------------------------------------------------------------


@contextlib.contextmanager
def checkout(
    spec: str,
    *,
    loaders_only: bool = False,
    repo: Path = paths.PROJECT_ROOT,
    root: Path | None = None,
    runner: Runner | None = None,
) -> Iterator[Baseline]:
    """The baseline ``spec`` names, checked out for the ``with`` block and removed after.

    A directory is used as it is. Anything else is a revision of ``repo``, checked
    out with ``git worktree add --detach`` under ``root`` (default
    ``<build>/baselines``) and removed however the block ends (an error, Ctrl-C,
    SIGTERM). Worktrees left by a run that was killed outright are removed first.
    """
    runner = runner or SubprocessRunner()
    given = Path(spec).expanduser()
    if spec.strip() and given.is_dir():
        if not (given / "harness" / "__init__.py").is_file():
            raise ConfigError(
                f"--baseline {spec}: not a checkout of this harness (no harness/__init__.py "
                "in it); give the top directory of another checkout, or a git revision"
            )
        yield Baseline(given.resolve(), spec, None, loaders_only)
        return
    if not spec.strip():
        raise ConfigError("--baseline needs a git revision (e.g. origin/main) or a checkout's path")
    git = require("git", "git")
    commit = _resolve(git, repo, spec, runner)
    root = root or paths.build_dir() / WORKTREES
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(git, repo, root, runner)
    tree = root / f"{commit[:12]}-{os.getpid()}"
    try:
        runner.run([git, "-C", str(repo), "worktree", "add", "--detach", str(tree), commit])
    except CommandError as exc:
        _remove(git, repo, tree, runner)
        raise ConfigError(
            f"--baseline {spec}: git could not check out {commit[:12]} into {tree}: "
            f"{_last_line(exc.output)}"
        ) from exc
    try:
        yield Baseline(tree, spec, commit, loaders_only)
    finally:
        _remove(git, repo, tree, runner)


def _resolve(git: str, repo: Path, spec: str, runner: Runner) -> str:
    done = runner.run(
        [git, "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        why = _last_line(done.stderr)
        raise ConfigError(
            f"--baseline {spec}: no such revision in {repo}"
            + (f" (git: {why})" if why else "")
            + " and no such directory; give a commit, branch or tag that `git log` shows "
            "(fetch it first), or the path of another checkout"
        )
    return done.stdout.strip()


def _remove(git: str, repo: Path, tree: Path, runner: Runner) -> None:
    # --force: the baseline's Python may have written __pycache__ into it on the host.
    runner.run([git, "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)
    shutil.rmtree(tree, ignore_errors=True)
    bundle_path(Baseline(tree, "")).unlink(missing_ok=True)
    runner.run([git, "-C", str(repo), "worktree", "prune"], check=False)


def _remove_stale(git: str, repo: Path, root: Path, runner: Runner) -> None:
    """Remove the worktrees of runs whose process is gone (killed by SIGKILL, say)."""
    for tree in sorted(root.iterdir()):
        pid = tree.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            log.info("removing the baseline worktree %s of an earlier run", tree)
            _remove(git, repo, tree, runner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the baseline's cases ------------------------------------------------------------


def loaders_of(baseline: Baseline, chosen: Sequence[Loader]) -> list[Loader]:
    """The baseline twin of each loader of ``chosen`` (see the module's docstring)."""
    twins = []
    for loader in chosen:
        name = base_name(loader.name)
        if loader.in_process:
            env = require("env", "coreutils")
            # Its bundle (write_bundle) is put first on sys.path by _START; the tree and
            # site-packages (pyelftools) serve anything the bundle lacks.
            search = [str(baseline.tree), *site.getsitepackages()]
            command: tuple[str, ...] = (
                env,
                f"PYTHONPATH={os.pathsep.join(search)}",
                sys.executable,
                "-P",  # not the current directory (this checkout) first on sys.path
                # No site: its .pth files import a few dozen modules, each import a
                # round of 9p requests under emulation.
                "-S",
                "-c",
                _START,
                str(bundle_path(baseline)),
            )
            what = f"the Python loader of {baseline}, as a protocol loader"
            # In the guest: forked from its process (harness/guest/forked.py), so that a
            # case does not start an interpreter under emulation.
            path = (str(bundle_path(baseline)), str(baseline.tree))
            twins.append(Loader(name, loader.formats, what, command=command, python_path=path))
        elif loader.sources:
            sources = tuple(_in_baseline(baseline, source, name) for source in loader.sources)
            what = f"{loader.name} loader of {baseline}"
            twins.append(dataclasses.replace(loader, name=name, description=what, sources=sources))
        else:
            program = Path(loader.command[0])
            counterpart = _counterpart(baseline, program)
            command = (str(counterpart or program), *loader.command[1:])
            twins.append(dataclasses.replace(loader, name=name, command=command))
    return twins


def _in_baseline(baseline: Baseline, source: Path, loader: str) -> Path:
    counterpart = _counterpart(baseline, source)
    if counterpart is None or not counterpart.is_file():
        relative = _relative(source) or source
        raise BuildError(
            f"baseline {baseline}: loader {loader} does not build: the baseline has no "
            f"{relative}; compare against a revision that has it"
        )
    return counterpart


def _relative(path: Path) -> Path | None:
    try:
        return path.resolve().relative_to(paths.PROJECT_ROOT)
    except ValueError:
        return None


def _counterpart(baseline: Baseline, path: Path) -> Path | None:
    """``path`` of this checkout in the baseline's tree, if it is there."""
    relative = _relative(path)
    if relative is None:
        return None
    found = baseline.tree / relative
    return found if found.exists() else None


def samples_of(baseline: Baseline, chosen: Sequence[samples.Sample]) -> list[samples.Sample]:
    """The baseline twin of each sample of ``chosen`` that the baseline has.

    With ``loaders_only`` the samples are this checkout's own. A sample the baseline
    lacks has no twin (its cases are new in the comparison).
    """
    if baseline.loaders_only:
        return list(chosen)
    # The kernel's own samples (kernel:NAME) come from the kernel, not from either tree:
    # the baseline's loaders load the same objects.
    own = [sample for sample in chosen if upstream.is_kernel_sample(sample)]
    chosen = [sample for sample in chosen if not upstream.is_kernel_sample(sample)]
    root = baseline.tree / "samples"
    if chosen and not any(root.glob(f"*/{samples.DESCRIPTOR}")):
        raise SampleError(
            f"baseline {baseline} has no samples/<name>/{samples.DESCRIPTOR}: it is from "
            "before samples were folders; compare against a newer revision, or give "
            "--baseline-loaders-only to take its loaders only"
        )
    twins = []
    for sample in chosen:
        folder = root / sample.name
        if not (folder / samples.DESCRIPTOR).is_file():
            continue
        try:
            found = samples.load(folder)
        except SampleError as exc:
            raise SampleError(
                f"baseline {baseline}: this harness cannot read its sample {sample.name} "
                f"({_last_line(str(exc))}); give --baseline-loaders-only to take its "
                "loaders only"
            ) from exc
        twins.append(dataclasses.replace(found, name=base_name(sample.name)))
    return twins + own


def cases(
    baseline: Baseline, chosen: Sequence[samples.Sample], loaders: Sequence[Loader]
) -> list[Case]:
    """The baseline's cases: its loaders on its samples (or this checkout's).

    A kernel sample's own user program (:data:`harness.upstream.OWN`) is the kernel's,
    the same on both sides: it has no baseline twin.
    """
    sample_twins = samples_of(baseline, chosen)  # a tree too old for this says so first
    twins = loaders_of(baseline, loaders)
    return [
        Case(sample, loader)
        for sample in sample_twins
        for loader in twins
        if loader.applies_to(sample.format)
    ]


# --- checks before any kernel is fetched or booted -------------------------------------


def check(
    baseline: Baseline, baseline_cases: Sequence[Case], *, runner: Runner | None = None
) -> None:
    """Fail now, with one line naming the loader or sample, if the baseline cannot run.

    Its Python loader must start (print its usage), and its C loaders and samples
    must build against the host's headers; a kernel's own headers are tried when the
    kernel is prepared, where a failure fails only that kernel's baseline cases.
    """
    from harness.build import build_loader, build_sample

    runner = runner or SubprocessRunner()
    release = os.uname().release
    seen: set[str] = set()
    for case in baseline_cases:
        loader, sample = case.loader, case.sample
        if loader.name not in seen and loader.command and loader.name == base_name("python"):
            seen.add(loader.name)
            _check_starts(baseline, loader, runner)
        if loader.name not in seen and loader.sources:
            seen.add(loader.name)
            with _builds(baseline, f"loader {loader.name}"):
                build_loader(loader, release, None, runner=runner)
        if sample.name not in seen and sample.name.endswith(SUFFIX):
            seen.add(sample.name)
            with _builds(baseline, f"sample {sample.name}"):
                build_sample(sample, release, None, runner=runner)


@contextlib.contextmanager
def _builds(baseline: Baseline, what: str) -> Iterator[None]:
    """A build of the baseline's ``what`` that fails is one line naming it."""
    try:
        yield
    except HarnessError as exc:
        raise BuildError(
            f"baseline {baseline}: {what} does not build for the host: {_first_error(exc)}"
        ) from exc


def _check_starts(baseline: Baseline, loader: Loader, runner: Runner) -> None:
    if not (baseline.tree / "harness" / "bpf" / "__main__.py").is_file():
        raise ConfigError(
            f"baseline {baseline}: loader {loader.name} cannot run: its Python loader has no "
            "harness/bpf/__main__.py (it does not speak the loader protocol yet); compare "
            "with --loader c,libbpf, or against a newer revision"
        )
    try:
        write_bundle(baseline, runner)
    except (OSError, py_compile.PyCompileError) as exc:
        what = (
            f"{exc.file}: {_last_line(exc.msg)}"
            if isinstance(exc, py_compile.PyCompileError)
            else str(exc)
        )
        raise ConfigError(
            f"baseline {baseline}: loader {loader.name} does not build: {what}"
        ) from exc
    done = runner.run([*loader.command, "--help"], check=False, timeout=START_TIMEOUT)
    if done.returncode != 0:
        raise ConfigError(
            f"baseline {baseline}: loader {loader.name} does not start "
            f"(exit status {done.returncode}): {_last_line(done.stderr + done.stdout)}"
        )


#: How python@base starts: ``python3 -S -c _START BUNDLE ARGS...`` runs ``harness.bpf``
#: (``python3 -m harness.bpf ARGS...``) with the bundle, a zip read once into memory
#: (``memfd_create``), first on sys.path: ``zipimport`` reading it from the 9p root
#: would cost a few round trips a module under emulation. Without a bundle (pytest
#: --baseline without invoke's checks) the tree is imported from.
_START = """\
import os, sys
path = sys.argv.pop(1)
try:
    with open(path, "rb") as bundle:
        data = bundle.read()
    fd = os.memfd_create("harness-baseline")
    with open(fd, "wb", closefd=False) as copy:
        copy.write(data)
    path = f"/proc/self/fd/{fd}"
except OSError:
    pass
sys.path.insert(0, path)
import runpy
runpy.run_module("harness.bpf", run_name="__main__", alter_sys=True)
"""


def bundle_path(baseline: Baseline) -> Path:
    """Where the baseline's Python loader is bundled: under the build directory, named
    after the tree (a checkout given by path is not written into)."""
    digest = hashlib.sha256(str(baseline.tree).encode()).hexdigest()[:16]
    return paths.build_dir() / WORKTREES / f"python-{digest}.zip"


def write_bundle(baseline: Baseline, runner: Runner) -> Path:
    """The baseline's ``harness`` package, and the standard library and pyelftools modules
    of the guest's own bundle, compiled into one zip (:mod:`harness.guest.bundle`).

    The guest imports python@base's package from it (harness/guest/forked.py; the
    program form, ``_START``, too): read from the tree, each module would be several
    uncached 9p round trips under emulation, and compiled from source (the guest cannot
    write bytecode). The modules both sides share are taken from the guest's bundle,
    which the run builds anyway, rather than compiled again.
    """
    from harness.guest import bundle

    ours: dict[str, Path] = {}
    for source in sorted((baseline.tree / "harness").rglob("*.py")):
        parts = source.relative_to(baseline.tree).with_suffix("").parts
        ours[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = source
    guest = bundle.ensure_bundle(runner=runner)
    if guest is None:  # none could be made: compile the shared modules here
        shared = bundle.module_files(runner)
        ours |= {n: s for n, s in shared.items() if n.partition(".")[0] != "harness"}
    compiled = {
        _archive_name(name, s.name == "__init__.py"): bundle.pyc_bytes(s)
        for name, s in ours.items()
    }
    if guest is not None:
        compiled |= _shared_modules(guest.code)
    path = bundle_path(baseline)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, _zip_bytes(compiled))
    return path


def _shared_modules(guest: Path) -> dict[str, bytes]:
    """Every compiled module of the guest's bundle outside ``harness``, by archive name."""
    from harness.guest import bundle

    return {
        _archive_name(name, is_package): pyc
        for name, (is_package, _, pyc) in bundle.read_modules(guest).items()
        if name.partition(".")[0] != "harness"
    }


def _archive_name(module: str, is_package: bool) -> str:
    """Where ``zipimport`` looks for ``module``'s compiled code."""
    return "/".join([*module.split("."), *(["__init__"] if is_package else [])]) + ".pyc"


def _zip_bytes(compiled: dict[str, bytes]) -> bytes:
    """A zip of ``{archive name: .pyc bytes}``, stored (``zipimport`` needs no ``zlib``)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, pyc in sorted(compiled.items()):
            # A fixed date keeps the zip a function of its content.
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), pyc)
    return out.getvalue()


def _first_error(exc: HarnessError) -> str:
    """The first compiler error of a failed build (else its first line), and the log."""
    cause = exc.__cause__
    text = cause.output if isinstance(cause, CommandError) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    first = (errors or lines or ["(no output)"])[0]
    log_path = getattr(exc, "log_path", None) or _log_of(str(exc))
    return first + (f" (log: {log_path})" if log_path else "")


def _log_of(message: str) -> str | None:
    marker = "; log: "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split(")", 1)[0]


# --- the comparison, from a run's JUnit file --------------------------------------------


def has_baseline(results: Sequence[CaseResult]) -> bool:
    """Whether the run had a baseline (any case of a ``@base`` loader)."""
    return any(case.value("loader").endswith(SUFFIX) for case in results)


def split(results: Sequence[CaseResult]) -> tuple[list[CaseResult], list[CaseResult]]:
    """(baseline, candidate): the ``@base`` cases, renamed as their candidate twins."""
    before, after = [], []
    for case in results:
        loader = case.value("loader")
        gist = dataclasses.replace(case, message=_gist(case.message))
        if not loader.endswith(SUFFIX):
            after.append(gist)
            continue
        properties = {
            **case.properties,
            "kernel": case.value("kernel"),
            "sample": case.value("sample").removesuffix(SUFFIX),
            "loader": loader.removesuffix(SUFFIX),
        }
        before.append(dataclasses.replace(gist, properties=properties))
    return before, after


def _gist(message: str) -> str:
    """A case's message from its first problem on: the comparison shows its first line.

    A VM case's message starts with a heading (``Failed: kernel ..., SAMPLE, LOADER
    loader:``) that the comparison's own columns say already.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return "\n".join(line.removeprefix("Failed: ").removeprefix("- ") for line in lines)


def deterministic(results: Sequence[CaseResult]) -> compare.Deterministic:
    """Which columns' numbers are the same on every run, as the cases recorded it."""
    columns: dict[str, set[str]] = {}
    for case in results:
        raw = case.properties.get(DETERMINISTIC)
        if not raw:
            continue
        try:
            headers = json.loads(raw)
        except ValueError:
            continue
        sample = case.value("sample").removesuffix(SUFFIX)
        columns.setdefault(sample, set()).update(str(h) for h in headers)
    return compare.deterministic_columns(columns)


def rows(results: Sequence[CaseResult]) -> list[compare.Row]:
    """The comparison of a run's baseline and candidate cases."""
    before, after = split(results)
    return compare.compare(before, after, deterministic(results))


def exit_status(results: Sequence[CaseResult]) -> int:
    """1 when a case regressed, else 0."""
    return compare.exit_status(rows(results))


def render_table(results: Sequence[CaseResult]) -> str:
    return compare.render_table(rows(results))


def render_markdown(results: Sequence[CaseResult], *, title: str) -> str:
    return compare.render_markdown(rows(results), title=f"{title}: baseline vs candidate")


def write_junit(results: Sequence[CaseResult], path: Path) -> None:
    """The comparison as JUnit: a regression is a failure; both sides' verdicts and cells
    are properties of its case."""
    suite = TestSuite("baseline vs candidate")
    for row in rows(results):
        case = TestCase(f"{row.kernel}-{row.sample}-{row.loader}", "ab")
        block = Properties()  # type: ignore[no-untyped-call]
        values = {
            "kernel": row.kernel,
            "sample": row.sample,
            "loader": row.loader,
            "class": row.kind,
            "baseline": _verdict(row.baseline),
            "candidate": _verdict(row.candidate),
            "differs": row.differs,
        }
        for side, result in (("baseline", row.baseline), ("candidate", row.candidate)):
            for header, cell in (result.cells if result else {}).items():
                values[f"{side}:{header}"] = cell
        for name, value in values.items():
            block.add_property(Property(name, value))
        case.append(block)  # type: ignore[no-untyped-call]
        if row.kind == compare.REGRESSION:
            case.result = [Failure(f"regression: {row.differs}")]
        elif row.kind in (compare.NEW, compare.GONE):
            case.result = [Skipped(f"{row.kind}: {row.differs}")]
        suite.add_testcase(case)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    files.write_atomic(path, xml.tostring().decode() + "\n")  # type: ignore[no-untyped-call]


def _verdict(result: CaseResult | None) -> str:
    return MISSING if result is None else VERDICTS.get(result.outcome, result.outcome.upper())
