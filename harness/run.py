"""A run: kernels x samples x loaders, one VM boot per kernel.

``invoke test`` and the VM tests (``tests/vm``) both call this module; pytest only
parametrizes and judges. The steps, per kernel:

1. :func:`plan_cases`: the (sample, loader) cases, from the samples' formats and the
   loaders chosen (a loader that cannot load a sample's format is not run for it);
2. :func:`prepare_kernel`: the kernel fetched and cached if needed, every sample and
   program loader built against its headers; samples the kernel is too old for, or
   whose kernel options it lacks, are set aside with the reason;
3. :func:`boot`: one VM runs every case (the guest reads a plan, writes one JSON per
   case into the run's results directory);
4. the judgement of each case is :func:`harness.checks.judge`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import files, paths, upstream, vm
from harness.build import SampleBuild, build_loader, build_sample
from harness.errors import ConfigError, HarnessError, NotAKernelError, UnknownSeriesError
from harness.guest import bundle
from harness.guest.plan import PLAN_NAME, CasePlan, Plan, write_plan
from harness.kernels import KernelEntry, KernelOptions, cache, catalog_series, is_path_spec, prepare
from harness.kernels.image import embedded_config
from harness.kernels.kconfig import parse_config
from harness.loaders import Loader
from harness.loaders.protocol import LoadRequest
from harness.progress import KernelState, Listener, VmWatch, watching
from harness.samples import Sample

log = logging.getLogger(__name__)

#: The results of every run are kept apart: ``<results>/<run id>/``; ``latest`` links
#: the newest, which ``invoke report`` reads by default.
LATEST = "latest"
TIMELINE_NAME = "timeline.json"
CONSOLE_NAME = "console.log"
#: The console line that tells the guest's command started (its boot is over).
GUEST_STARTED = dict(vm.BOOT_MARKS)["to command start"]


@dataclass(frozen=True)
class Case:
    sample: Sample
    loader: Loader

    @property
    def id(self) -> str:
        return f"{self.sample.name}-{self.loader.name}"


@dataclass(frozen=True)
class KernelChoice:
    """A kernel of the run: named by the user (fails when unreachable) or implied by "all"."""

    spec: str
    explicit: bool


def kernel_choices(text: str, options: KernelOptions) -> list[KernelChoice]:
    """The kernels of a ``--kernel`` value, checked without touching the network.

    ``""`` or ``"all"`` is every series of the catalog; whether its archive answers
    is found out when the kernel is prepared (an unreachable one is then skipped).
    """
    known = catalog_series(options)
    if text.strip() in ("", "all"):
        return [KernelChoice(series, False) for series in known]
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part not in known and not is_path_spec(part):
            raise UnknownSeriesError(
                f"unknown kernel {part!r}: the catalog has {', '.join(known)} "
                "(kernels/catalog.toml); give a path to your own kernel with --kernel PATH"
            )
        if is_path_spec(part) and not Path(part).expanduser().exists():
            raise NotAKernelError(
                f"--kernel {part}: no such file or directory; give a built kernel tree, a "
                "bzImage or vmlinux, or a series (`invoke kernels.list` lists them)"
            )
        found.append(KernelChoice(part, True))
    if not found:
        raise ConfigError("--kernel names no kernel; give a series such as 6.1, or all")
    return list({c.spec: c for c in found}.values())


def plan_cases(samples: Sequence[Sample], loaders: Sequence[Loader]) -> list[Case]:
    """Every (sample, loader) pair where the loader can load the sample's format, and
    each kernel sample's own user program (:mod:`harness.upstream`)."""
    cases = [Case(s, loader) for s in samples for loader in loaders if loader.applies_to(s.format)]
    return cases + [Case(s, loader) for s, loader in upstream.own_cases(samples)]


@dataclass(frozen=True)
class PreparedKernel:
    """A kernel ready to boot, with everything built for it."""

    spec: str
    entry: KernelEntry
    builds: dict[str, SampleBuild]  # by sample name
    programs: dict[str, Path]  # program loaders by name
    skipped: dict[str, str]  # sample name -> why it does not run on this kernel
    seconds: dict[str, float] = field(default_factory=dict)  # prepare, build
    #: What failed to build, by "sample NAME" or "loader NAME": only its cases fail.
    broken: dict[str, str] = field(default_factory=dict)

    def problem(self, case: Case) -> str | None:
        """Why ``case`` cannot run on this kernel because something of it did not build."""
        return build_problem(self.broken, case)


def build_problem(broken: dict[str, str], case: Case) -> str | None:
    """The build failure, in ``broken``, of ``case``'s sample or loader (None: both built)."""
    return (
        broken.get(f"sample {case.sample.name}")
        or broken.get(f"loader {case.loader.name}")
        or broken.get(f"case {upstream.case_key(case.sample, case.loader)}")
    )


def loader_skip_key(case: Case) -> str:
    """``SAMPLE loader NAME``: the key in ``skipped`` of one loader's case of a sample."""
    return f"{case.sample.name} loader {case.loader.name}"


def skip_reason(skipped: dict[str, str], case: Case) -> str | None:
    """Why ``case`` does not run on this kernel: its sample's reason, its kind's, or its
    loader's (:meth:`harness.loaders.Loader.cannot_load`)."""
    return (
        skipped.get(case.sample.name)
        or skipped.get(upstream.case_key(case.sample, case.loader))
        or skipped.get(loader_skip_key(case))
    )


def kernel_version(release: str) -> tuple[int, int] | None:
    """``(6, 1)`` of ``6.1.0-57-amd64``; None when the release does not start with one."""
    found = re.match(r"^(\d+)\.(\d+)", release)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _parse_version(text: str) -> tuple[int, int]:
    version = kernel_version(text)
    if version is None:
        raise HarnessError(f"{text!r} is not a kernel version such as 5.10")
    return version


def _kernel_config(entry: KernelEntry) -> dict[str, str] | None:
    if entry.config is not None:
        try:
            return parse_config(entry.config.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None
    text = embedded_config(entry.image)
    return parse_config(text) if text is not None else None


def why_not(sample: Sample, entry: KernelEntry) -> str | None:
    """Why ``sample`` cannot run on ``entry`` (too old, options missing), or None."""
    if sample.min_kernel:
        have = kernel_version(entry.release)
        need = _parse_version(sample.min_kernel)
        if have is not None and have < need:
            reason = f": {sample.min_kernel_reason}" if sample.min_kernel_reason else ""
            return f"needs Linux {sample.min_kernel} or later{reason}"
    if sample.kconfig:
        config = _kernel_config(entry)
        if config is not None:
            missing = [o for o in sample.kconfig if config.get(o) not in ("y", "m")]
            if missing:
                return f"the kernel lacks {', '.join(missing)}"
    return None


def prepare_kernel(
    spec: str,
    cases: Sequence[Case],
    options: KernelOptions,
    *,
    progress: Listener | None = None,
    build_root: Path | None = None,
) -> PreparedKernel:
    """Fetch ``spec`` if needed and build every sample and loader of ``cases`` for it.

    ``progress`` hears the kernel's states (preparing, building) and its downloads.
    """
    started = time.monotonic()
    if progress is not None:
        progress(KernelState(spec, "preparing"))
    entry = prepare(spec, options, progress=progress)
    prepared_at = time.monotonic()
    if progress is not None:
        progress(KernelState(spec, "building", entry.release))
    builds: dict[str, SampleBuild] = {}
    programs: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    broken: dict[str, str] = {}
    kernel_samples = {c.sample.name: c.sample for c in cases if upstream.is_kernel_sample(c.sample)}
    if kernel_samples:
        # Built from the release's own source; the loop below then finds them built.
        part = upstream.prepare(
            entry, list(kernel_samples.values()), options, build_root=build_root, progress=progress
        )
        builds.update(part.builds)
        skipped.update(part.skipped)
        broken.update(part.broken)
    for case in cases:
        sample, loader = case.sample, case.loader
        if sample.name not in builds and sample.name not in skipped:
            reason = why_not(sample, entry)
            if reason is not None:
                skipped[sample.name] = reason
            elif f"sample {sample.name}" not in broken:
                # One sample that does not build fails its own cases, not the kernel's.
                try:
                    builds[sample.name] = build_sample(
                        sample, entry.release, entry.headers, build_root=build_root
                    )
                except HarnessError as exc:
                    broken[f"sample {sample.name}"] = str(exc)
        if loader.sources and loader.name not in programs and f"loader {loader.name}" not in broken:
            try:
                built = build_loader(loader, entry.release, entry.headers, build_root=build_root)
            except HarnessError as exc:
                broken[f"loader {loader.name}"] = str(exc)
            else:
                programs[loader.name] = built.outputs["program"]
    for case in cases:
        build = builds.get(case.sample.name)  # a kernel sample as its release has it
        reason = case.loader.cannot_load(build.sample) if build is not None else None
        if reason is not None:
            skipped[loader_skip_key(case)] = reason
    seconds = {
        "prepare": round(prepared_at - started, 3),
        "build": round(time.monotonic() - prepared_at, 3),
    }
    return PreparedKernel(spec, entry, builds, programs, skipped, seconds, broken)


def case_result_path(results_dir: Path, case: Case) -> Path:
    """Where the guest writes a case's JSON: ``<release dir>/<sample>/<loader>.json``."""
    return results_dir / case.sample.name / f"{case.loader.name}.json"


def guest_plan(prepared: PreparedKernel, cases: Sequence[Case], results_dir: Path) -> Plan:
    """The plan the guest runs: the cases of ``cases`` whose sample was built."""
    planned = []
    for case in cases:
        build = prepared.builds.get(case.sample.name)
        if build is None or prepared.problem(case) is not None:
            continue
        if skip_reason(prepared.skipped, case) is not None:
            continue
        sample = build.sample  # a kernel sample as its release's source has it
        request = LoadRequest(
            object=build.bpf_object,
            programs=tuple((p.name, p.type) for p in sample.programs),
            attach=tuple((p.name, p.attach) for p in sample.programs if p.attach),
            # A prog array the object initialises itself, the loader fills as it says.
            prog_arrays=tuple(
                (array.map, index, program)
                for array in sample.prog_arrays
                if array.filled_by == "loader"
                for index, program in sorted(array.entries.items())
            ),
            dump=tuple(m.name for m in sample.maps),
        )
        if case.loader.command:
            command: tuple[str, ...] = case.loader.command
        elif case.loader == upstream.OWN:
            if build.user_program is None:
                continue
            command = upstream.own_command(build.user_program, sample)
        elif case.loader.sources:
            command = (str(prepared.programs[case.loader.name]),)
        else:
            command = ()
        planned.append(
            CasePlan(
                sample=sample.name,
                loader=case.loader.name,
                command=command,
                request=request,
                traffic=sample.traffic,
                result=case_result_path(results_dir, case),
                python_path=case.loader.python_path,
            )
        )
    return Plan(tuple(planned))


@dataclass(frozen=True)
class VmOptions:
    accel: str
    timeout: float | None = None
    memory: str = "1G"
    cpus: int = 2
    append: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelRun:
    """One kernel's VM run, shared by its cases; ``error`` when it produced no results."""

    spec: str
    release: str
    accel: str
    seconds: float | None
    results_dir: Path | None
    console_log: Path | None
    error: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    #: The samples as built for this kernel (a kernel sample as its release has it).
    samples: dict[str, Sample] = field(default_factory=dict)


def boot(
    prepared: PreparedKernel,
    cases: Sequence[Case],
    options: VmOptions,
    results_root: Path,
    *,
    progress: Listener | None = None,
) -> KernelRun:
    """Boot the kernel once and run every case in it; errors are kept in the result.

    ``progress`` hears the VM's states: booting, then running with the cases done.
    """
    entry = prepared.entry
    results = results_root / entry.release
    plan = guest_plan(prepared, cases, results)
    if not plan.cases:
        return KernelRun(
            prepared.spec, entry.release, options.accel, None, results, None,
            skipped=prepared.skipped, broken=prepared.broken, samples=_built(prepared),
        )  # fmt: skip
    plan_path = results / PLAN_NAME
    for case in plan.cases:
        case.result.unlink(missing_ok=True)
    write_plan(plan_path, Plan(plan.cases, kernel_log=True))  # the boot's phases
    guest = bundle.guest_argv(plan_path, bundle.ensure_bundle(), shutil.which("busybox"))
    started = time.monotonic()
    # A cache entry is kept from `invoke kernels.prune` (of another run) while it boots.
    hold = cache.in_use(entry) if entry.kernel.origin != "local" else contextlib.nullcontext()
    console_log = results / CONSOLE_NAME
    watch = (
        VmWatch(progress, prepared.spec, console_log, [c.result for c in plan.cases],
                GUEST_STARTED, detail=options.accel)
        if progress is not None else None
    )  # fmt: skip
    try:
        with hold, watching(watch):
            ran = vm.run_vm(
                entry,
                guest,
                results,
                accel=options.accel,
                expect=[str(c.result.relative_to(results)) for c in plan.cases],
                timeout=options.timeout,
                memory=options.memory,
                cpus=options.cpus,
                append=list(options.append),
                console_log=console_log,
            )
    except HarnessError as exc:
        log_path = getattr(exc, "log_path", None)
        _write_timeline(results, prepared, time.monotonic() - started)
        return KernelRun(
            prepared.spec,
            entry.release,
            options.accel,
            time.monotonic() - started,
            results,
            log_path if isinstance(log_path, Path) else None,
            str(exc),
            prepared.skipped,
            prepared.broken,
            _built(prepared),
        )
    _write_timeline(results, prepared, ran.seconds, ran.stalled_logs)
    return KernelRun(
        prepared.spec,
        entry.release,
        ran.accel,
        ran.seconds,
        ran.results_dir,
        ran.console_log,
        skipped=prepared.skipped,
        broken=prepared.broken,
        samples=_built(prepared),
    )


def _built(prepared: PreparedKernel) -> dict[str, Sample]:
    return {name: build.sample for name, build in prepared.builds.items()}


def _write_timeline(
    results: Path, prepared: PreparedKernel, vm_seconds: float, stalled: Sequence[Path] = ()
) -> None:
    timeline: dict[str, object] = {**prepared.seconds, "vm": round(vm_seconds, 3)}
    if stalled:
        # Boots that stalled before their init and were booted again (see vm.run_vm).
        timeline["stalled_boots"] = [path.name for path in stalled]
    try:
        files.write_atomic(results / TIMELINE_NAME, json.dumps(timeline) + "\n")
    except OSError as exc:
        log.warning("could not write the timeline of %s: %s", results, exc)


# --- results directories -----------------------------------------------------------


def new_results_dir(root: Path | None = None) -> Path:
    """A fresh directory for one run's results, and ``latest`` pointed at it."""
    root = root or paths.results_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Unique even for two runs started in the same second (by one process, too).
    directory = Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=root))
    directory.chmod(0o755)
    link = root / LATEST
    temp = root / f".{LATEST}.{os.getpid()}"
    temp.unlink(missing_ok=True)
    temp.symlink_to(directory.name)
    os.replace(temp, link)
    return directory


def latest_results_dir(root: Path | None = None) -> Path:
    """The newest run's results directory (``<results>/latest``)."""
    root = root or paths.results_dir()
    return root / LATEST
