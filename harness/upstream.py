"""The kernel's own samples: each release's samples/bpf programs, built from its source.

A sample's descriptor may have an upstream part (:class:`harness.samples.Upstream`,
``UPSTREAM`` in its ``sample.py``): the kernel's own ``samples/bpf/<name>`` is then judged
like that sample. ``--sample kernel:all`` (or ``kernel:<name>``, ...) adds, per kernel,
two kinds of case for each of them:

- the release's kernel-side object (``<name>_kern.o``, built here from its
  ``<name>_kern.c``) loaded by the harness's loaders of its format, with the declaring
  sample's traffic, and judged exactly against the capture by that sample's oracle as
  the upstream part adapts it (:func:`variant` says how, from the release's source);
- the release's own user program (``<name>_user.c``, unmodified) run in the guest as
  upstream runs it, loader ``own``: it loads its object with the release's libbpf, runs
  ``ping`` and prints its map once a second; its exit status and output are checked by
  :func:`check_output`, reading its lines as the upstream part says.

The source comes from :mod:`harness.kernels.source`. Nothing here uses the kernel's
Makefile: the objects are compiled with clang against the release's UAPI headers (the
kernel cache entry's ``include/``, from ``linux-libc-dev`` of the same source version)
and its ``tools/lib/bpf`` headers, with :file:`upstream_prelude.h` standing in for the
few kernel-internal names the sources use; the tree's libbpf is compiled into a static
library by the commands below and linked into each user program, so the guest needs
nothing beyond the host's libelf and zlib. Each release is built once per source
version (a stamp), into ``<build>/<release>/kernel-samples/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import files, frames, paths, samples as samples_mod
from harness.bpf import elf
from harness.build import (
    BPF_CFLAGS,
    BTF_CFLAGS,
    USER_CFLAGS,
    BuildOutput,
    SampleBuild,
    check_programs,
    guest_link_options,
    run_step,
)
from harness.errors import CommandError, HarnessError, SampleError
from harness.guest.result import GuestResult
from harness.kernels import KernelOptions
from harness.kernels.model import KernelEntry
from harness.kernels.source import SourceTree, SourceUnavailable
from harness.loaders import Loader
from harness.packets import Fields, Frame
from harness.proc import Runner, SubprocessRunner, require, tail
from harness.progress import Listener
from harness.samples import Expected, Sample

log = logging.getLogger(__name__)

#: The prefix of the kernel's own samples' names: ``kernel:<name>``.
PREFIX = samples_mod.KERNEL_PREFIX
#: The loader of the second kind of case: the release's own user program.
OWN = Loader("own", (), "the release's own user program (samples/bpf/<name>_user.c), unmodified")
PRELUDE = Path(__file__).resolve().parent / "upstream_prelude.h"
BUILD_DIR = "kernel-samples"
STATUS_NAME = "status.json"
LOG_NAME = "build.log"
#: libbpf's own Makefile builds with these (large-file I/O on 32-bit hosts is moot here).
LIBBPF_CFLAGS = ("-O2", "-Wall", "-D_LARGEFILE64_SOURCE", "-D_FILE_OFFSET_BITS=64")
#: How many times each user program prints its map: its loop of five, a second apart.
ROUNDS = 5
#: ping's default echo: 56 bytes of data, 8 of ICMP, 20 of IP, 14 of Ethernet.
PING_FRAME = 98
#: ``ping -c5``: five requests, five replies.
PING_PACKETS = 10


def available() -> dict[str, Sample]:
    """Every sample ``--sample`` can name: the harness's own and the kernel's own."""
    own = samples_mod.discover()
    return {**own, **descriptors(own)}


def is_kernel_sample(sample: Sample | str) -> bool:
    return (sample if isinstance(sample, str) else sample.name).startswith(PREFIX)


def short_name(sample: Sample | str) -> str:
    return (sample if isinstance(sample, str) else sample.name).removeprefix(PREFIX)


def declared_names(own: dict[str, Sample] | None = None) -> tuple[str, ...]:
    """The kernel's samples the samples' descriptors declare (their upstream parts)."""
    own = own if own is not None else samples_mod.discover()
    return tuple(sorted(s.upstream.name for s in own.values() if s.upstream is not None))


def upstream_of(sample: Sample) -> samples_mod.Upstream:
    """The upstream part a kernel sample was made from."""
    if sample.upstream is None:
        raise SampleError(f"sample {sample.name} has no upstream part (UPSTREAM in sample.py)")
    return sample.upstream


def descriptors(own: dict[str, Sample] | None = None) -> dict[str, Sample]:
    """The kernel samples as the plan knows them (before a release's source is read)."""
    own = own if own is not None else samples_mod.discover()
    found = {}
    for base in own.values():
        spec = base.upstream
        if spec is None:
            continue
        sample = dataclasses.replace(
            base,
            name=PREFIX + spec.name,
            title=f"the kernel's own samples/bpf/{spec.name}, judged like {base.name}",
            kern=f"{spec.name}_kern.c",
            user=(f"{spec.name}_user.c",),
            format="btf",
        )
        if spec.adapt is not None:
            sample = spec.adapt(sample)
        found[sample.name] = sample
    return dict(sorted(found.items()))


def defect_note(sample: Sample, captured: Sequence[Frame]) -> str:
    """How the entries the sample's oracle expects differ from a correct program's ("" if
    they do not, or the sample has no known defect), e.g. ``upstream defect: 3 keys of
    hash_map differ from a correct GRE parse: 0.0.0.0 ...``."""
    spec = sample.upstream if is_kernel_sample(sample) else None
    defect = spec.defect if spec is not None else None
    if defect is None:
        return ""
    modelled, correct = sample.oracle(captured), defect.oracle(captured)
    parts = []
    for check in sample.maps:
        have, want = modelled.get(check.name, {}), correct.get(check.name, {})
        keys = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        if not keys:
            continue
        show = check.describe_key or check.key.describe
        listed = ", ".join(
            f"{show(k)} {_value(check, have.get(k))} (correct: {_value(check, want.get(k))})"
            for k in keys
        )
        parts.append(f"{len(keys)} keys of {check.name} differ from {defect.correct}: {listed}")
    return f"upstream defect: {'; '.join(parts)}" if parts else ""


def _value(check: samples_mod.MapCheck, value: Fields | None) -> str:
    return "absent" if value is None else check.value.describe(value)


def variant(sample: Sample, tree: SourceTree, own: dict[str, Sample] | None = None) -> Sample:
    """``sample`` as this release's source has it (its upstream part's ``variant`` reads
    the release's ``<name>_kern.c``); a :class:`SampleError` when the harness's loaders
    cannot load it (the reason says why)."""
    spec = upstream_of(sample)
    if spec.variant is None:
        return sample
    text = tree.path(f"samples/bpf/{spec.name}_kern.c").read_text(errors="replace")
    source = f"{tree.package} {tree.version}'s {spec.name}_kern.c"
    return spec.variant(sample, text, source, own if own is not None else samples_mod.discover())


def own_cases(chosen: Sequence[Sample]) -> list[tuple[Sample, Loader]]:
    """The second kind of case: each chosen kernel sample with its own user program."""
    return [(sample, OWN) for sample in chosen if is_kernel_sample(sample)]


def own_command(program: Path, sample: Sample) -> tuple[str, ...]:
    """How the guest starts a user program: by its full path (it opens ``argv[0]_kern.o``)."""
    return (str(program), *upstream_of(sample).arguments)


# --- building -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseBuild:
    """What was built for one release: per sample its object and its user program.

    ``broken`` maps ``NAME`` (nothing of the sample built) or ``NAME/own`` (its user
    program did not) to the reason, with the build log's path.
    """

    directory: Path
    objects: dict[str, Path]
    programs: dict[str, Path]
    broken: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def sample_build(self, sample: Sample, release: str, headers: Path | None) -> SampleBuild:
        name = short_name(sample)
        outputs = {"object": self.objects[name]}
        if name in self.programs:
            outputs["user"] = self.programs[name]
        output = BuildOutput(
            name=f"{BUILD_DIR}/{name}",
            release=release,
            directory=self.directory,
            outputs=outputs,
            include_dir=headers,
            log_path=self.log_path or self.directory / LOG_NAME,
            rebuilt=False,
        )
        return SampleBuild(sample, output)


def uapi_shim(directory: Path, headers: Path) -> Path:
    """A directory whose ``uapi`` is ``headers``: the samples include ``<uapi/linux/bpf.h>``."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "uapi"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(headers)
    return directory


def helper_defs_argv(tree: SourceTree) -> list[str]:
    """The tree's generator of ``bpf_helper_defs.h`` (bpf_helpers_doc.py before 5.13)."""
    script = tree.path("scripts/bpf_doc.py")
    if not script.is_file():
        script = tree.path("scripts/bpf_helpers_doc.py")
    return [
        sys.executable,
        str(script),
        "--header",
        "--file",
        str(tree.path("tools/include/uapi/linux/bpf.h")),
    ]


def libbpf_argv(cc: str, tree: SourceTree, source: Path, output: Path) -> list[str]:
    """One file of the tree's libbpf, compiled as its own Makefile would (no -fPIC: static)."""
    return [
        cc,
        *LIBBPF_CFLAGS,
        f"-I{tree.path('tools/lib/bpf')}",
        f"-I{tree.path('tools/include')}",
        f"-I{tree.path('tools/include/uapi')}",
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def host_include_dirs() -> tuple[str, ...]:
    """The C library's headers, after the kernel's: the UAPI ``linux/if.h`` wants
    ``sys/socket.h`` outside the kernel."""
    return ("-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu")


def kern_argv(
    clang: str, tree: SourceTree, headers: Path, shim: Path, include: Path, name: str, output: Path
) -> list[str]:
    """The clang command for a release's ``<name>_kern.c`` (BTF-defined maps: ``-g``)."""
    return [
        clang,
        *BPF_CFLAGS,
        *BTF_CFLAGS,
        # What the kernel's samples/bpf Makefile also turns off for these sources.
        "-Wno-unused-value",
        "-Wno-pointer-sign",
        "-Wno-compare-distinct-pointer-types",
        # A kernel-internal name the prelude lacks would otherwise compile into a call.
        "-Werror=implicit-function-declaration",
        "-include",
        str(PRELUDE),
        f"-I{shim}",
        f"-I{headers}",
        f"-I{include}",
        f"-I{tree.path('tools/testing/selftests/bpf')}",
        *host_include_dirs(),
        "-c",
        str(tree.path(f"samples/bpf/{name}_kern.c")),
        "-o",
        str(output),
    ]


#: What the release's libbpf, built from its source, is linked with in turn.
LIBBPF_NEEDS = ("pkg-config:libelf", "pkg-config:zlib")


def user_argv(
    cc: str,
    tree: SourceTree,
    headers: Path,
    include: Path,
    name: str,
    library: Path,
    output: Path,
    link: Sequence[str],
) -> list[str]:
    """The user program, against the release's UAPI and libbpf headers, libbpf linked in,
    then ``link``: :data:`LIBBPF_NEEDS` linked as the harness's own programs are
    (:func:`harness.build.guest_link_options`)."""
    return [
        cc,
        *USER_CFLAGS,
        f"-I{headers}",
        f"-I{include}",
        f"-I{tree.path('tools/include')}",
        str(tree.path(f"samples/bpf/{name}_user.c")),
        "-o",
        str(output),
        str(library),
        *link,
    ]


def build_release(
    tree: SourceTree,
    entry: KernelEntry,
    names: Sequence[str] | None = None,
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
) -> ReleaseBuild:
    """Build ``names`` of ``tree`` for ``entry``'s release, or find them built.

    A sample that does not build is in ``broken`` with its reason; the others are built.
    ``names`` defaults to every declared one (:func:`declared_names`).
    """
    names = names if names is not None else declared_names()
    runner = runner or SubprocessRunner()
    if entry.headers is None:
        raise HarnessError(f"kernel {entry.release} brings no UAPI headers to build its samples")
    clang = require("clang", "clang")
    cc = shutil.which("cc") or require("gcc", "gcc")
    ar = require("ar", "binutils")
    directory = (build_root or paths.build_dir()) / entry.release / BUILD_DIR
    directory.parent.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(tree, entry, names, [clang, cc, ar])
    with files.locked(directory.parent / f".{BUILD_DIR}.lock"):
        found = _read_status(directory, stamp)
        if found is not None:
            return found
        staged = Path(tempfile.mkdtemp(prefix=f".{BUILD_DIR}-", dir=directory.parent))
        try:
            built = _build(tree, entry, names, staged, runner, clang=clang, cc=cc, ar=ar)
            status = {
                "stamp": stamp,
                "objects": sorted(built.objects),
                "programs": sorted(built.programs),
                "broken": built.broken,
            }
            files.write_atomic(staged / STATUS_NAME, json.dumps(status, indent=1) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            staged.rename(directory)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        result = _read_status(directory, stamp)
        assert result is not None
        return result


def _stamp(tree: SourceTree, entry: KernelEntry, names: Sequence[str], tools: Sequence[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{tree.package} {tree.version} {entry.release} {sorted(names)}\n".encode())
    digest.update((tree.root.parent / "manifest.json").read_bytes())  # what was kept, and sizes
    digest.update(PRELUDE.read_bytes())
    digest.update(Path(__file__).read_bytes())  # the commands are in this file
    for tool in tools:
        info = Path(tool).resolve().stat()
        digest.update(f"{Path(tool).resolve()}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_status(directory: Path, stamp: str) -> ReleaseBuild | None:
    try:
        status = json.loads((directory / STATUS_NAME).read_text())
        if status["stamp"] != stamp:
            return None
        objects = {n: directory / f"{n}_kern.o" for n in status["objects"]}
        programs = {n: directory / n for n in status["programs"]}
        if not all(p.is_file() for p in (*objects.values(), *programs.values())):
            return None
        broken = {str(k): str(v) for k, v in status["broken"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ReleaseBuild(directory, objects, programs, broken, directory / LOG_NAME)


def _build(
    tree: SourceTree,
    entry: KernelEntry,
    names: Sequence[str],
    work: Path,
    runner: Runner,
    *,
    clang: str,
    cc: str,
    ar: str,
) -> ReleaseBuild:
    assert entry.headers is not None
    final = work.parent / BUILD_DIR
    log_path = final / LOG_NAME
    transcript: list[str] = []

    def step(argv: list[str], cwd: Path = work) -> str:
        line = shlex.join(argv)
        log.info("build kernel samples of %s: %s", entry.release, line)
        transcript.append(f"$ {line}\n")
        try:
            done = run_step(runner, argv, cwd, transcript)
        except CommandError as exc:
            transcript.append(exc.output + "\n")
            raise
        transcript.append(done.stderr)
        return done.stdout

    def failure(what: str, exc: CommandError) -> str:
        return f"{what} failed (log: {log_path}):\n{tail(exc.output)}"

    include = work / "include"
    (include / "bpf").mkdir(parents=True)
    for header in sorted(tree.path("tools/lib/bpf").glob("*.h")):
        shutil.copyfile(header, include / "bpf" / header.name)
    shim = uapi_shim(work / "shim", entry.headers)
    link = guest_link_options(LIBBPF_NEEDS, runner)
    objects: dict[str, Path] = {}
    programs: dict[str, Path] = {}
    broken: dict[str, str] = {}
    library: Path | None = None
    try:
        defs = step(helper_defs_argv(tree))
        (include / "bpf" / "bpf_helper_defs.h").write_text(defs)
        library = _build_libbpf(tree, work, cc, ar, step)
    except CommandError as exc:
        why = failure(f"building {tree.package} {tree.version}'s libbpf (tools/lib/bpf)", exc)
        for name in names:
            broken[f"{name}/own"] = why
        if not (include / "bpf" / "bpf_helper_defs.h").is_file():
            for name in names:
                broken[name] = why
    for name in names:
        if name in broken:
            continue
        obj = work / f"{name}_kern.o"
        try:
            step(kern_argv(clang, tree, entry.headers, shim, include, name, Path(obj.name)))
        except CommandError as exc:
            broken[name] = failure(f"compiling {tree.package}'s samples/bpf/{name}_kern.c", exc)
            continue
        objects[name] = obj
        if library is None or f"{name}/own" in broken:
            continue
        try:
            step(user_argv(cc, tree, entry.headers, include, name, library, Path(name), link))
        except CommandError as exc:
            broken[f"{name}/own"] = failure(
                f"building {tree.package}'s samples/bpf/{name}_user.c", exc
            )
            continue
        programs[name] = work / name
    shutil.rmtree(work / "libbpf", ignore_errors=True)
    files.write_atomic(work / LOG_NAME, "".join(transcript))
    return ReleaseBuild(final, objects, programs, broken, log_path)


def _build_libbpf(tree: SourceTree, work: Path, cc: str, ar: str, step: Callable[..., str]) -> Path:
    objects_dir = work / "libbpf"
    objects_dir.mkdir()
    objects = []
    for source in sorted(tree.path("tools/lib/bpf").glob("*.c")):
        output = Path(source.with_suffix(".o").name)
        step(libbpf_argv(cc, tree, source, output), cwd=objects_dir)
        objects.append(str(output))
    library = work / "libbpf.a"
    step([ar, "rcs", str(library), *objects], cwd=objects_dir)
    return library


# --- the user program's output -----------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One map entry as a user program printed it: the oracle's key and value fields."""

    line: int
    key: Fields
    value: Fields


def parse_output(spec: samples_mod.Upstream, text: str) -> tuple[list[Reading], int, list[str]]:
    """The readings of a user program's output, its rounds, and the lines it should not
    print, each line read by the upstream part's ``read_line``."""
    readings: list[Reading] = []
    rounds = 0
    stray: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        printed = spec.read_line(line)
        if printed is None:
            stray.append(f"line {number}: {line!r}")
            continue
        rounds += printed.round
        readings.extend(Reading(number, key, value) for key, value in printed.entries)
    return readings, rounds, stray


def achievable(
    oracle: Callable[[Sequence[Frame]], Expected], captured: Sequence[Frame]
) -> dict[Fields, set[Fields]]:
    """Every value each key held at some moment: the oracle over each prefix of the capture.

    The program's socket and the capture's see the frames in the same order, so
    whenever the program reads its map, each entry holds what the oracle gives for
    some prefix of what the capture saw (zero before the first).
    """
    seen: dict[Fields, set[Fields]] = {}
    for end in range(len(captured) + 1):
        expected = oracle(captured[:end])
        for entries in expected.values():
            for key, value in entries.items():
                seen.setdefault(key, set()).add(value)
    return seen


def check_output(sample: Sample, result: GuestResult) -> list[str]:
    """What is wrong with a user program's run (none: it passed); see the README.

    Checked: exit status 0 and nothing on stderr that says ERROR (a program may exit 0
    even when it cannot load its object); every stdout line is one the program prints;
    five rounds (of a program that marks them: one line or header per round), or else at
    least one entry; the ping it runs
    reached ``lo`` (the capture saw ICMP); and every number it printed is one its map
    really held at some moment, by the oracle of the own sample of the same semantics
    over a prefix of the capture. Not checked: how far the count had got at each
    round, which depends on how fast ping starts (a second or more under TCG).
    """
    name = short_name(sample)
    spec = upstream_of(sample)
    problems = []
    status = result.details.get("exit_status", "?")
    stdout = result.details.get("stdout", "")
    stderr = result.details.get("stderr", "")
    if status != "0":
        problems.append(
            f"{name} exited with status {status}; stderr: {stderr.strip() or '(empty)'}"
        )
    if any("error" in line.lower() for line in stderr.splitlines()):
        # The program did not run its loop: what follows from that (no rounds, no ping)
        # would only hide the reason.
        return [*problems, _load_error(name, stderr)]
    readings, rounds, stray = parse_output(spec, stdout)
    if stray:
        listed = "; ".join(stray[:5]) + (f"; and {len(stray) - 5} more" if len(stray) > 5 else "")
        problems.append(f"{name} printed lines it does not print: {listed}")
    if spec.rounds and rounds != ROUNDS:
        problems.append(f"{name} printed {rounds} rounds, its loop prints {ROUNDS}")
    if not spec.rounds and not readings:
        problems.append(f"{name} printed no entry: its map was empty every time it looked")
    flows = (frames.dissect(f.head, f.length) for f in result.frames)
    if not any(flow is not None and flow.ip_proto == frames.IPPROTO_ICMP for flow in flows):
        problems.append(
            "the capture saw no ICMP: the ping the program runs did not run (is ping installed "
            "on the host, whose root the guest uses?)"
        )
    seen = achievable(sample.oracle, result.frames)
    for reading in readings:
        keys = [k for k in seen if k[: len(reading.key)] == reading.key]
        # Zero before the first frame: an array prints its entries from the start.
        values = {v for k in keys for v in seen[k]} | {tuple(0 for _ in reading.value)}
        if reading.value not in values:
            shown = sorted(values)[:8]
            where = _describe(spec, reading.key)
            problems.append(
                f"{name} line {reading.line}: {reading.value} under {where} is no value its "
                f"map held while the capture watched (it held {shown})"
            )
    if result.drops:
        problems.append(f"the capture dropped {result.drops} of {result.offered} frames")
    return problems


#: libbpf 1.0 and later refuse a section name that names no program type (``socket/3``).
_NO_PROG_TYPE = re.compile(r"missing BPF prog type, check ELF section name '([^']*)'")


def _load_error(name: str, stderr: str) -> str:
    """One line: why the program stopped, from what it and its libbpf wrote on stderr."""
    found = _NO_PROG_TYPE.search(stderr)
    if found:
        return (
            f"{name} could not load its object: the release's own libbpf rejects its section "
            f"name '{found.group(1)}' (\"missing BPF prog type\"): from 1.0 libbpf matches a "
            "section name exactly, no longer by its prefix (socket)"
        )
    # All of it: libbpf says why before the program's own "ERROR: ..." line.
    return f"{name} reported an error on stderr: {' | '.join(stderr.splitlines())}"


def _describe(spec: samples_mod.Upstream, key: Fields) -> str:
    if spec.describe is not None:
        return spec.describe(key)
    numbers = [part for part in key if isinstance(part, int)]
    return " -> ".join(frames.show_ipv4(n) for n in numbers[:2])


#: What the cells of :func:`own_cells` are, for the title of their table.
OWN_CELLS = "own user program: its exit status, the rounds it printed, its last line's values"


def own_cells(sample: Sample, result: GuestResult) -> dict[str, str]:
    """The report's cells of a user program's case (:data:`OWN_CELLS`)."""
    readings, rounds, _ = parse_output(upstream_of(sample), result.details.get("stdout", ""))
    cells = {"exit": result.details.get("exit_status", "?"), "rounds": str(rounds)}
    if readings:
        last = readings[-1]
        cells["last"] = " ".join(str(v) for v in last.value)
    return cells


# --- a kernel's part of the run ---------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The kernel samples of one kernel, as :func:`harness.run.prepare_kernel` keeps them.

    ``skipped`` and ``broken`` are keyed as the run keys them: a sample's name (all its
    cases), or :func:`case_key` (its loaders' cases, or its own user program's).
    """

    builds: dict[str, SampleBuild] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)


def case_key(sample: Sample, loader: Loader) -> str:
    """``kernel:<name> own`` or ``kernel:<name> loaders``: one kind of a sample's cases."""
    return f"{sample.name} {'own' if loader.name == OWN.name else 'loaders'}"


def prepare(
    entry: KernelEntry,
    chosen: Sequence[Sample],
    options: KernelOptions,
    *,
    build_root: Path | None = None,
    progress: Listener | None = None,
    runner: Runner | None = None,
) -> Prepared:
    """The release's source fetched (once) and its samples built; what cannot, with why."""
    from harness import kernels  # the kernels package imports the build: not at import time

    prepared = Prepared()
    try:
        tree = kernels.source_tree(entry, options, runner=runner, progress=progress)
    except SourceUnavailable as exc:
        prepared.skipped.update({s.name: str(exc) for s in chosen})
        return prepared
    except HarnessError as exc:
        why = f"the source of {entry.release} could not be fetched: {exc}"
        prepared.broken.update({f"sample {s.name}": why for s in chosen})
        return prepared
    try:
        built = build_release(
            tree, entry, [short_name(s) for s in chosen], build_root=build_root, runner=runner
        )
    except HarnessError as exc:
        prepared.broken.update({f"sample {s.name}": str(exc) for s in chosen})
        return prepared
    for sample in chosen:
        name = short_name(sample)
        if name in built.broken:
            prepared.broken[f"sample {sample.name}"] = built.broken[name]
            continue
        if f"{name}/own" in built.broken:
            prepared.broken[f"case {case_key(sample, OWN)}"] = built.broken[f"{name}/own"]
        try:
            sample = variant(sample, tree)
        except SampleError as exc:
            prepared.skipped[f"{sample.name} loaders"] = str(exc)
        else:
            try:
                # What the loaders are to be asked for is in the object the release built.
                check_programs(sample, elf.read_object(built.objects[name]))
            except HarnessError as exc:
                prepared.broken[f"case {sample.name} loaders"] = str(exc)
        prepared.builds[sample.name] = built.sample_build(sample, entry.release, entry.headers)
    return prepared
