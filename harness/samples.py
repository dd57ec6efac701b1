"""Samples: one folder each under ``samples/``, described by its ``sample.py``.

A sample's folder holds its sources and one descriptor, ``sample.py``, which
defines ``SAMPLE = Sample(...)``. The descriptor is Python, not a data file,
because one part of it is code: the oracle, which turns the frames an
independent packet capture saw into the map entries the sample must hold. The
rest is plain typed data (programs, maps with their key and value layouts, the
traffic, the report columns, kernel options), checked when the folder is
discovered, so a mistake in a descriptor is reported before anything is built.

Nothing outside a sample's folder names the sample: the build, the guest, the
checks and the report read only the descriptor.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from harness import paths
from harness.errors import ConfigError, SampleError
from harness.loaders.protocol import FUNCTION_SEPARATOR, program_name

# Re-exported: descriptors written before harness.packets existed import them from here
# (an A/B baseline's among them, read by this harness).
from harness.packets import (
    FRAME_KINDS as FRAME_KINDS,
    PACKET_HOST as PACKET_HOST,
    PACKET_OUTGOING as PACKET_OUTGOING,
    Fields as Fields,
    Frame as Frame,
    Frames as Frames,
    Icmp as Icmp,
    Tcp as Tcp,
    TrafficStep as TrafficStep,
    Udp as Udp,
)

#: What a sample's map must hold: map name -> key -> value, decoded.
Expected = dict[str, dict[Fields, Fields]]

DESCRIPTOR = "sample.py"

#: Loaders by object format: the classic ``SEC("maps")`` form and the BTF ``.maps`` form.
FORMATS = ("classic", "btf")

#: Program types the loaders know, by the name the descriptor uses.
PROGRAM_TYPES = ("socket_filter",)


@dataclass(frozen=True)
class Program:
    """A program of the object and how it is attached.

    ``section`` is its ELF section; ``function`` its function, needed only where the
    section holds several programs (``SEC("socket")`` five times, as libbpf allows):
    the loaders are then given ``SECTION#FUNCTION``
    (:attr:`name`). ``attach`` is ``"socket:IFACE"`` (``SO_ATTACH_BPF`` on a packet
    socket bound to IFACE) or ``""`` for a program that is loaded only, e.g. a
    tail-call target.
    """

    section: str
    type: str = "socket_filter"
    attach: str = "socket:lo"
    function: str = ""

    @property
    def name(self) -> str:
        """How the loader protocol names it: ``SECTION`` or ``SECTION#FUNCTION``."""
        return program_name(self.section, self.function)


#: Who fills a prog array: the loader, from the descriptor, or the object itself.
FilledBy = Literal["loader", "object"]
FILLED_BY: tuple[str, ...] = get_args(FilledBy)


@dataclass(frozen=True)
class ProgArray:
    """A ``BPF_MAP_TYPE_PROG_ARRAY`` and its slots: index -> program (its :attr:`Program.name`).

    ``filled_by`` "loader": the harness asks the loader to store each program
    (``--prog-array``). "object": the object's own static initialiser of the map's
    ``values`` fills it (relocations in ``.rel.maps`` against the programs' symbols),
    as libbpf does it and every loader of the protocol must; the entries then say what
    the object must hold, which the build checks against the object.
    """

    map: str
    entries: Mapping[int, str]
    filled_by: FilledBy = "loader"


@dataclass(frozen=True)
class Layout:
    """How a map key or value is laid out: a :mod:`struct` format and its field names."""

    format: str  # e.g. "<I", "<qq"; native alignment is not assumed
    fields: tuple[str, ...]

    @property
    def size(self) -> int:
        return struct.calcsize(self.format)

    def decode(self, raw: bytes) -> Fields:
        return tuple(struct.unpack(self.format, raw))

    def encode(self, values: Fields) -> bytes:
        return struct.pack(self.format, *values)

    def describe(self, values: Fields) -> str:
        if len(self.fields) == 1:
            return _show(values[0])
        return (
            "{"
            + ", ".join(f"{n}={_show(v)}" for n, v in zip(self.fields, values, strict=True))
            + "}"
        )


def _show(value: int | bytes) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class MapCheck:
    """A map the check reads.

    ``kind`` "array": every index exists; an index the oracle does not name must
    hold zeros. "hash": the map's keys must be exactly the oracle's.
    """

    name: str
    kind: Literal["array", "hash"]
    key: Layout
    value: Layout
    describe_key: Callable[[Fields], str] | None = None  # e.g. an address as 127.0.0.2


@dataclass(frozen=True)
class Column:
    """One report column: the value of ``field`` under ``key`` of map ``map``, and the oracle's.

    ``deterministic``: the numbers are the same on every run (a count of crafted frames,
    of UDP datagrams), so a baseline and a candidate that both pass yet differ here
    differ for a reason (``changed`` in an A/B run); False where they vary from run to
    run (the bytes of a TCP stream: its ACKs and segments do).
    """

    header: str
    map: str
    key: Fields
    field: str
    deterministic: bool = True


@dataclass(frozen=True)
class Printed:
    """What one line of a kernel sample's user program says: the map entries it shows
    (the oracle's key, or its first fields, and value) and whether it starts a round."""

    entries: tuple[tuple[Fields, Fields], ...] = ()
    round: bool = False


@dataclass(frozen=True)
class Defect:
    """A known defect of a kernel sample that its row's oracle models: what a correct
    program would hold instead, to show the difference beside the verdict."""

    correct: str  # what the correct program is: "a correct GRE parse"
    oracle: Callable[[Sequence[Frame]], Expected]


@dataclass(frozen=True)
class Upstream:
    """The optional upstream part of a descriptor: the kernel's own sample judged like it.

    The kernel's ``samples/bpf/<name>_kern.c`` and ``<name>_user.c`` of each release
    become the sample ``kernel:<name>`` (:mod:`harness.upstream`), judged like the
    sample whose descriptor holds this (``UPSTREAM = Upstream(...)`` in its
    ``sample.py``).

    - ``arguments``: what its user program is given when the guest runs it;
    - ``adapt``: the judged sample made upstream's (its oracle, names, layout), before
      any release's source is read;
    - ``variant``: the judged sample as one release's ``<name>_kern.c`` has it, from
      its text, a description of the source (for messages) and the harness's samples;
      a :class:`SampleError` says why the harness's loaders cannot judge it;
    - ``defect``: a known defect the oracle models (shown beside the verdict); a
      ``variant`` may set it for one release, from what its source says;
    - ``read_line``: what one line its user program prints says (None: a line it
      does not print); ``rounds``: whether it marks its loop's rounds;
    - ``describe``: a key it printed, in words.
    """

    name: str
    read_line: Callable[[str], Printed | None]
    arguments: tuple[str, ...] = ()
    adapt: Callable[[Sample], Sample] | None = None
    variant: Callable[[Sample, str, str, Mapping[str, Sample]], Sample] | None = None
    defect: Defect | None = None
    rounds: bool = True
    describe: Callable[[Fields], str] | None = None


@dataclass(frozen=True)
class Sample:
    """A sample's descriptor: everything the harness needs to build, run and judge it."""

    name: str
    title: str
    format: Literal["classic", "btf"]
    kern: str  # the kernel-side source, relative to the folder
    programs: tuple[Program, ...]
    maps: tuple[MapCheck, ...]
    traffic: tuple[TrafficStep, ...]
    oracle: Callable[[Sequence[Frame]], Expected]
    columns: tuple[Column, ...]
    user: tuple[str, ...] = ()  # the sample's own user program's sources
    prog_arrays: tuple[ProgArray, ...] = ()
    kconfig: tuple[str, ...] = ()  # options beyond the boot's, e.g. "CONFIG_BPF_JIT"
    min_kernel: str | None = None  # oldest kernel version, e.g. "5.2"
    min_kernel_reason: str = ""
    directory: Path = field(default=Path("."), compare=False)
    #: The kernel's own sample judged like this one (``UPSTREAM`` in ``sample.py``).
    upstream: Upstream | None = field(default=None, compare=False)

    @property
    def object_name(self) -> str:
        return Path(self.kern).with_suffix(".o").name

    def map_check(self, name: str) -> MapCheck:
        for check in self.maps:
            if check.name == name:
                return check
        raise SampleError(f"sample {self.name} checks no map {name!r}")


_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def discover(root: Path | None = None) -> dict[str, Sample]:
    """Every sample under ``root`` (default ``samples/``), by name."""
    root = root or paths.SAMPLES_DIR
    found: dict[str, Sample] = {}
    if not root.is_dir():
        raise SampleError(f"no samples directory at {root}")
    for folder in sorted(p for p in root.iterdir() if (p / DESCRIPTOR).is_file()):
        sample = load(folder)
        found[sample.name] = sample
    return found


def load(folder: Path) -> Sample:
    """The sample described by ``folder/sample.py``, checked; a :class:`SampleError` if not."""
    path = folder / DESCRIPTOR
    module_name = f"_harness_sample_{re.sub(r'[^A-Za-z0-9_]', '_', folder.name)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SampleError(f"cannot load the sample descriptor {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a descriptor is user code: any error is reported as its own
        raise SampleError(f"{path}: {type(exc).__name__}: {exc}") from exc
    sample = getattr(module, "SAMPLE", None)
    if not isinstance(sample, Sample):
        raise SampleError(f"{path} defines no SAMPLE = Sample(...)")
    upstream = getattr(module, "UPSTREAM", None)
    if upstream is not None and not isinstance(upstream, Upstream):
        raise SampleError(f"{path}: UPSTREAM is not an Upstream(...)")
    sample = dataclasses.replace(sample, directory=folder.resolve(), upstream=upstream)
    validate(sample, path)
    return sample


def validate(sample: Sample, where: Path) -> None:
    """Check a descriptor for what would otherwise fail later, deep in a build or a VM."""

    def fail(what: str) -> SampleError:
        return SampleError(f"{where}: {what}")

    if sample.name != sample.directory.name:
        raise fail(
            f"the sample's name {sample.name!r} is not its folder's {sample.directory.name!r}"
        )
    if not _NAME.match(sample.name):
        raise fail(f"{sample.name!r} is not a valid sample name (lower case, digits, - _ .)")
    if sample.format not in FORMATS:
        raise fail(f"unknown format {sample.format!r}; use one of {', '.join(FORMATS)}")
    for source in (sample.kern, *sample.user):
        if not (sample.directory / source).is_file():
            raise fail(f"source {source} is not in {sample.directory}")
    if not sample.programs:
        raise fail("no programs")
    names = [p.name for p in sample.programs]
    for program in sample.programs:
        if not program.section or re.search(f"[:{FUNCTION_SEPARATOR}]", program.section):
            raise fail(
                f"program section {program.section!r}: give a section name without "
                f"':' or '{FUNCTION_SEPARATOR}'"
            )
        if program.function and not _FUNCTION.match(program.function):
            raise fail(
                f"program {program.name}: function {program.function!r} is not a C identifier "
                "(the name of the program's function in the object)"
            )
        if names.count(program.name) > 1:
            raise fail(
                f"program {program.name} is listed twice; in a section holding several "
                "programs, name each by its function (Program(section, function=...))"
            )
        if program.type not in PROGRAM_TYPES:
            raise fail(
                f"program {program.name}: unknown type {program.type!r}; "
                f"known: {', '.join(PROGRAM_TYPES)}"
            )
        if program.attach and not re.match(r"^socket:[\w.-]+$", program.attach):
            raise fail(
                f'program {program.name}: attach {program.attach!r} is not "socket:IFACE" or ""'
            )
    shared = sorted(
        {p.section for p in sample.programs if not p.function}
        & {p.section for p in sample.programs if p.function}
    )
    if shared:
        raise fail(
            f"section {shared[0]} is named both alone and with a function; where a section "
            "holds several programs, name every one of them by its function"
        )
    if not any(p.attach for p in sample.programs):
        raise fail("no program is attached; give one attach='socket:lo'")
    maps = {m.name for m in sample.maps}
    for array in sample.prog_arrays:
        if array.filled_by not in FILLED_BY:
            raise fail(
                f"prog array {array.map}: filled_by {array.filled_by!r}; "
                f"use one of {', '.join(FILLED_BY)}"
            )
        for index, program_ref in array.entries.items():
            if program_ref not in names:
                raise fail(
                    f"prog array {array.map}[{index}] names no program: {program_ref!r} "
                    f"(programs: {', '.join(names)})"
                )
    for check in sample.maps:
        for layout, what in ((check.key, "key"), (check.value, "value")):
            try:
                count = len(struct.unpack(layout.format, bytes(layout.size)))
            except struct.error as exc:
                raise fail(f"map {check.name}: {what} format {layout.format!r}: {exc}") from exc
            if count != len(layout.fields):
                raise fail(
                    f"map {check.name}: {what} format {layout.format!r} has {count} fields "
                    f"but {len(layout.fields)} names"
                )
    for column in sample.columns:
        if column.map not in maps:
            raise fail(f"column {column.header!r} reads map {column.map!r}, which is not checked")
        if column.field not in sample.map_check(column.map).value.fields:
            raise fail(f"column {column.header!r}: map {column.map} has no field {column.field!r}")
    for step in sample.traffic:
        if isinstance(step, Frames) and step.kind not in FRAME_KINDS:
            raise fail(f"unknown frame kind {step.kind!r}; known: {', '.join(FRAME_KINDS)}")
        amount = step.count if isinstance(step, Icmp | Frames) else step.bytes
        if amount < 0:
            raise fail(f"negative traffic amount in {step}")


#: The prefix of the kernel's own samples (:mod:`harness.upstream`): ``kernel:<name>``.
KERNEL_PREFIX = "kernel:"


def select(spec: str, available: Mapping[str, Sample]) -> list[Sample]:
    """The samples ``spec`` names; a :class:`ConfigError` if unknown.

    "all" is the harness's own samples; "kernel:all" the kernel's own (those of
    ``available`` named ``kernel:...``); both may be given, with names, comma-separated.
    """
    names = [s.strip() for s in spec.split(",") if s.strip()] or ["all"]
    own = [n for n in available if not n.startswith(KERNEL_PREFIX)]
    kernel = [n for n in available if n.startswith(KERNEL_PREFIX)]
    expanded: list[str] = []
    for name in names:
        if name == "all":
            expanded += own
        elif name == f"{KERNEL_PREFIX}all":
            expanded += kernel
        else:
            expanded.append(name)
    unknown = [n for n in expanded if n not in available]
    if unknown:
        raise ConfigError(
            f"unknown sample {', '.join(unknown)}; available: {', '.join(available) or 'none'}"
            f"{', kernel:all' if kernel else ''} (`invoke samples.list` describes them)"
        )
    return [available[n] for n in dict.fromkeys(expanded)]
