"""The kernel's own samples: each release's samples/bpf sockex1..3, built from its source.

``--sample kernel:all`` (or ``kernel:sockex1``, ...) adds, per kernel, two kinds of case
for each of the release's own ``sockex1``, ``sockex2`` and ``sockex3``:

- the release's kernel-side object (``sockexN_kern.o``, built here from its
  ``sockexN_kern.c``) loaded by the harness's loaders of its format, with our own
  sample's traffic, and judged exactly against the capture by the oracle of the own
  sample of the same semantics (:func:`variant` says which, from the release's source);
- the release's own user program (``sockexN_user.c``, unmodified) run in the guest as
  upstream runs it, loader ``own``: it loads its object with the release's libbpf, runs
  ``ping`` and prints its map once a second; its exit status and output are checked by
  :func:`check_output`.

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

from harness import files, frames, paths
from harness import samples as samples_mod
from harness.build import BPF_CFLAGS, BTF_CFLAGS, USER_CFLAGS, BuildOutput, SampleBuild
from harness.errors import CommandError, HarnessError, SampleError
from harness.guest.result import GuestResult
from harness.kernels import KernelOptions
from harness.kernels.model import KernelEntry
from harness.kernels.source import SourceTree, SourceUnavailable
from harness.loaders import Loader
from harness.proc import Runner, SubprocessRunner, require, tail
from harness.progress import Listener
from harness.samples import Expected, Fields, Frame, ProgArray, Program, Sample

log = logging.getLogger(__name__)

#: The prefix of the kernel's own samples' names: ``kernel:sockex1``.
PREFIX = samples_mod.KERNEL_PREFIX
NAMES = ("sockex1", "sockex2", "sockex3")
#: The own sample each kernel sample is judged like, before :func:`variant` looks at the
#: release's source. Upstream moved its samples to BTF-defined maps in 5.10 and earlier.
BASE = {"sockex1": "sockex1-btf", "sockex2": "sockex2-btf", "sockex3": "sockex3-btf"}
#: The loader of the second kind of case: the release's own user program.
OWN = Loader("own", (), "the release's own user program (sockexN_user.c), unmodified")
PRELUDE = Path(__file__).resolve().parent / "upstream_prelude.h"
BUILD_DIR = "kernel-samples"
STATUS_NAME = "status.json"
LOG_NAME = "build.log"
#: libbpf's own Makefile builds with these (large-file I/O on 32-bit hosts is moot here).
LIBBPF_CFLAGS = ("-O2", "-Wall", "-D_LARGEFILE64_SOURCE", "-D_FILE_OFFSET_BITS=64")
#: Upstream's sockex1/2 run ping themselves; sockex3 runs netperf, which Debian carries only
#: in non-free, unless it is given any argument, when it runs the same ping: it gets one.
ARGUMENTS = {"sockex3": ("ping",)}
#: How many times each user program prints its map: its loop of five, a second apart.
ROUNDS = 5
#: How every release here (5.10 to 7.2) of sockex2_kern.c parses GRE, departing from a
#: correct parse in each way :class:`harness.frames.GreParse` names. Above all it tests the
#: flags it read with ``load_half`` (host order) against ``<linux/if_tunnel.h>``'s
#: ``GRE_CSUM``, ``GRE_KEY``, ``GRE_SEQ``, ``GRE_ROUTING`` and ``GRE_VERSION``, which are
#: big-endian: on x86 it does not skip a GRE header's optional words and parses the
#: payload from the first of them, so GRE frames with any are counted wrongly (ours with
#: checksum, key and sequence under 0.0.0.0, ours with a key and a VLAN tag not at all).
#: The row's oracle models that, so it checks that the sample does what its own code says
#: on each kernel (a kernel that changes what it computes shows); :func:`defect_note`
#: says how far that is from a correct parse.
UPSTREAM_GRE = frames.GreParse(
    flags_host_order=True,
    addresses_of_gre=False,  # parse_ip() sets the addresses only if the protocol is not GRE
    non_ip_counted=False,  # flow_dissector() returns false for a GRE payload not IP
    tags=(frames.ETH_P_8021Q,),  # one 802.1Q tag after GRE, no 802.1AD
)
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


def descriptors(own: dict[str, Sample] | None = None) -> dict[str, Sample]:
    """The kernel samples as the plan knows them (before a release's source is read)."""
    own = own if own is not None else samples_mod.discover()
    found = {}
    for name in NAMES:
        base = own[BASE[name]]
        sample = dataclasses.replace(
            base,
            name=PREFIX + name,
            title=f"the kernel's own samples/bpf/{name}, judged like {base.name}",
            kern=f"{name}_kern.c",
            user=(f"{name}_user.c",),
            format="btf",
        )
        if name == "sockex2":
            sample = dataclasses.replace(sample, oracle=_upstream_sockex2_oracle)
        if name == "sockex3":
            sample = _upstream_sockex3(sample)
        found[sample.name] = sample
    return found


def _upstream_sockex2_oracle(captured: Sequence[Frame]) -> Expected:
    """sockex2-btf's oracle with upstream's GRE parse (:data:`UPSTREAM_GRE`)."""
    return {"hash_map": frames.per_destination(captured, gre=UPSTREAM_GRE)}


@dataclass(frozen=True)
class Defect:
    """A known defect of an upstream sample that its row's oracle models: what a
    correct program would hold instead, to show the difference beside the verdict."""

    correct: str  # what the correct program is: "a correct GRE parse"
    oracle: Callable[[Sequence[Frame]], Expected]


DEFECTS = {
    "sockex2": Defect(
        "a correct GRE parse", lambda captured: {"hash_map": frames.per_destination(captured)}
    ),
}


def defect_note(sample: Sample, captured: Sequence[Frame]) -> str:
    """How the entries the sample's oracle expects differ from a correct program's ("" if
    they do not, or the sample has no known defect), e.g. ``upstream defect: 3 keys of
    hash_map differ from a correct GRE parse: 0.0.0.0 ...``."""
    defect = DEFECTS.get(short_name(sample)) if is_kernel_sample(sample) else None
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


def _upstream_sockex3(sample: Sample) -> Sample:
    """Our sockex3 renamed and laid out as upstream (5.10 to 6.11) has it.

    Upstream's main program is ``socket/0``; it tail-calls through ``jmp_table`` at
    PARSE_VLAN 1, PARSE_MPLS 2, PARSE_IP 3, PARSE_IPV6 4, each ``socket/N`` (its user
    program stores each ``socket/N`` at N); the flows are in ``hash_map``. Its key stores
    both ports with one ``load_word`` into a union, so on x86 the destination port comes
    first in memory: the layout names them in that order and the oracle's keys follow.
    """
    check = sample.maps[0]
    ours = check.name
    base_oracle = sample.oracle

    def oracle(captured: Sequence[Frame]) -> Expected:
        flows = base_oracle(captured)[ours]
        return {"hash_map": {(k[0], k[1], k[3], k[2], k[4]): v for k, v in flows.items()}}

    def describe(key: Fields) -> str:
        return frames.describe_flow((key[0], key[1], key[3], key[2], key[4]))

    key = samples_mod.Layout(check.key.format, ("src", "dst", "dport", "sport", "ip_proto"))
    upstream_map = dataclasses.replace(check, name="hash_map", key=key, describe_key=describe)
    return dataclasses.replace(
        sample,
        programs=(Program("socket/0"), *(Program(f"socket/{n}", attach="") for n in range(1, 5))),
        prog_arrays=(ProgArray("jmp_table", {n: f"socket/{n}" for n in range(1, 5)}),),
        maps=(upstream_map,),
        columns=tuple(
            dataclasses.replace(
                c, map="hash_map", key=(c.key[0], c.key[1], c.key[3], c.key[2], c.key[4])
            )
            for c in sample.columns
        ),
        oracle=oracle,
    )


#: sockex1's filter counts only outgoing frames from Linux 5.x on (each packet once on lo).
_OUTGOING_ONLY = re.compile(r"pkt_type\s*!=\s*PACKET_OUTGOING")
#: sockex3's ICMP case falls through from TCP's and UDP's after their ports load, into a
#: flow kept per CPU between packets (``this_cpu_globals()``): it keys ICMP by stale ports.
_STALE_PORTS = re.compile(
    r"case IPPROTO_UDP:\s*g->flow\.ports\s*=\s*load_word\([^;]*;\s*case IPPROTO_ICMP:"
)
_PER_CPU_FLOW = re.compile(r"this_cpu_globals\s*\(")


def variant(sample: Sample, tree: SourceTree, own: dict[str, Sample] | None = None) -> Sample:
    """``sample`` as this release's source has it; a :class:`SampleError` when the
    harness's loaders cannot load it (the reason says why).

    - sockex1: every release here (5.10 to 7.2) returns 0 unless ``skb->pkt_type`` is
      ``PACKET_OUTGOING``, so it is judged like sockex1-btf; a tree without that test
      counts every frame, as our classic sockex1 does, and is judged like it.
    - sockex3 (5.10 to 7.2): its flow record is kept per CPU between packets
      (``this_cpu_globals()``, an array indexed by ``bpf_get_smp_processor_id()``), and
      its ``case IPPROTO_ICMP`` shares TCP's and UDP's count without setting the ports,
      so an ICMP packet is counted under the ports the last TCP or UDP packet on the same
      CPU left there. The capture does not record the CPU, so which of the ports it saw
      those are cannot be told: its map cannot be judged exactly.
    - sockex3 from 6.12 also puts its five programs in one section, ``SEC("socket")``,
      and libbpf fills ``prog_array_init`` from a static initialiser; the loader
      protocol names programs by section, so no loader of ours can say which to attach.
    """
    name = short_name(sample)
    text = tree.path(f"samples/bpf/{name}_kern.c").read_text(errors="replace")
    source = f"{tree.package} {tree.version}'s {name}_kern.c"
    if name == "sockex1" and not _OUTGOING_ONLY.search(text):
        own = own if own is not None else samples_mod.discover()
        return dataclasses.replace(sample, oracle=own["sockex1"].oracle)
    if name != "sockex3":
        return sample
    stale = bool(_STALE_PORTS.search(text) and _PER_CPU_FLOW.search(text))
    if 'SEC("socket/0")' not in text:
        besides = " (and it counts ICMP under stale per-CPU ports, as 5.10's does)"
        raise SampleError(
            f'{source} puts its programs in one section (SEC("socket")) and fills its prog '
            "array statically; the loader protocol names programs by section, so only its "
            f"own user program (loader own) can run it{besides if stale else ''}"
        )
    if stale:
        raise SampleError(
            f"{source} counts ICMP under the ports the last TCP or UDP packet on the same CPU "
            "left in its per-CPU flow (this_cpu_globals(); case IPPROTO_ICMP sets no ports), "
            "and the capture does not record the CPU: its map cannot be judged exactly, so "
            "only its own user program (loader own) is checked"
        )
    return sample


def own_cases(chosen: Sequence[Sample]) -> list[tuple[Sample, Loader]]:
    """The second kind of case: each chosen kernel sample with its own user program."""
    return [(sample, OWN) for sample in chosen if is_kernel_sample(sample)]


def own_command(program: Path, sample: Sample | str) -> tuple[str, ...]:
    """How the guest starts a user program: by its full path (it opens ``argv[0]_kern.o``)."""
    return (str(program), *ARGUMENTS.get(short_name(sample), ()))


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


def user_argv(
    cc: str, tree: SourceTree, headers: Path, include: Path, name: str, library: Path, output: Path
) -> list[str]:
    """The user program, against the release's UAPI and libbpf headers, libbpf linked in."""
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
        "-lelf",
        "-lz",
    ]


def build_release(
    tree: SourceTree,
    entry: KernelEntry,
    names: Sequence[str] = NAMES,
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
) -> ReleaseBuild:
    """Build ``names`` of ``tree`` for ``entry``'s release, or find them built.

    A sample that does not build is in ``broken`` with its reason; the others are built.
    """
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
            done = runner.run(argv, cwd=cwd)
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
            step(user_argv(cc, tree, entry.headers, include, name, library, Path(name)))
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


_SOCKEX1 = re.compile(r"^TCP (\d+) UDP (\d+) ICMP (\d+) bytes$")
_SOCKEX2 = re.compile(r"^ip (\d+\.\d+\.\d+\.\d+) bytes (\d+) packets (\d+)$")
_SOCKEX3_HEADER = re.compile(r"^IP\s+src\.port -> dst\.port\s+bytes\s+packets$")
_SOCKEX3 = re.compile(
    r"^(\d+\.\d+\.\d+\.\d+)\.(\d+) -> (\d+\.\d+\.\d+\.\d+)\.(\d+)\s+(\d+)\s+(\d+)$"
)


@dataclass(frozen=True)
class Reading:
    """One map entry as a user program printed it: the oracle's key and value fields."""

    line: int
    key: Fields
    value: Fields


def parse_output(name: str, text: str) -> tuple[list[Reading], int, list[str]]:
    """The readings of a user program's output, its rounds, and the lines it should not print.

    sockex1 prints one line per round; sockex2 one per entry per round (no round marker);
    sockex3 a header per round, then one line per flow.
    """
    readings: list[Reading] = []
    rounds = 0
    stray: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if name == "sockex1" and (found := _SOCKEX1.match(line)):
            tcp, udp, icmp = (int(g) for g in found.groups())
            rounds += 1
            for proto, value in ((frames.IPPROTO_TCP, tcp), (frames.IPPROTO_UDP, udp)):
                readings.append(Reading(number, (proto,), (value,)))
            readings.append(Reading(number, (frames.IPPROTO_ICMP,), (icmp,)))
        elif name == "sockex2" and (found := _SOCKEX2.match(line)):
            address, size, packets = found.groups()
            key = frames.destination_key(address)
            readings.append(Reading(number, key, (int(packets), int(size))))
        elif name == "sockex3" and _SOCKEX3_HEADER.match(line):
            rounds += 1
        elif name == "sockex3" and (found := _SOCKEX3.match(line)):
            src, sport, dst, dport, size, packets = found.groups()
            key = (
                frames.ipv4_key(src),
                frames.ipv4_key(dst),
                int(sport),
                int(dport),
            )
            readings.append(Reading(number, key, (int(packets), int(size))))
        else:
            stray.append(f"line {number}: {line!r}")
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

    Checked: exit status 0 and nothing on stderr that says ERROR (sockex3 exits 0 even
    when it cannot load its object); every stdout line is one the program prints;
    five rounds (sockex1, sockex3: one line or header per round); the ping it runs
    reached ``lo`` (the capture saw ICMP); and every number it printed is one its map
    really held at some moment, by the oracle of the own sample of the same semantics
    over a prefix of the capture. Not checked: how far the count had got at each
    round, which depends on how fast ping starts (a second or more under TCG).
    """
    name = short_name(sample)
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
    readings, rounds, stray = parse_output(name, stdout)
    if stray:
        listed = "; ".join(stray[:5]) + (f"; and {len(stray) - 5} more" if len(stray) > 5 else "")
        problems.append(f"{name} printed lines it does not print: {listed}")
    if name != "sockex2" and rounds != ROUNDS:
        problems.append(f"{name} printed {rounds} rounds, its loop prints {ROUNDS}")
    if name == "sockex2" and not readings:
        problems.append("sockex2 printed no entry: its map was empty every time it looked")
    flows = (frames.dissect(f.head, f.length) for f in result.frames)
    if not any(flow is not None and flow.ip_proto == frames.IPPROTO_ICMP for flow in flows):
        problems.append(
            "the capture saw no ICMP: the ping the program runs did not run (is ping installed "
            "on the host, whose root the guest uses?)"
        )
    seen = achievable(sample.oracle, result.frames)
    for reading in readings:
        keys = [k for k in seen if k[: len(reading.key)] == reading.key]
        # Zero before the first frame: an array (sockex1) prints its entries from the start.
        values = {v for k in keys for v in seen[k]} | {tuple(0 for _ in reading.value)}
        if reading.value not in values:
            shown = sorted(values)[:8]
            where = _describe(name, reading.key)
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


def _describe(name: str, key: Fields) -> str:
    numbers = [part for part in key if isinstance(part, int)]
    if name == "sockex1":
        return frames.PROTOCOL_NAMES.get(numbers[0], str(numbers[0]))
    return " -> ".join(frames.show_ipv4(n) for n in numbers[:2])


#: What the cells of :func:`own_cells` are, for the title of their table.
OWN_CELLS = "own user program: its exit status, the rounds it printed, its last line's values"


def own_cells(sample: Sample, result: GuestResult) -> dict[str, str]:
    """The report's cells of a user program's case (:data:`OWN_CELLS`)."""
    readings, rounds, _ = parse_output(short_name(sample), result.details.get("stdout", ""))
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
    """``kernel:sockex3 own`` or ``kernel:sockex3 loaders``: one kind of a sample's cases."""
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
        prepared.builds[sample.name] = built.sample_build(sample, entry.release, entry.headers)
    return prepared
