"""Load a BPF object with bpf(2): its BTF, its maps, patched map references, its programs.

The steps are those of the kernel's old samples/bpf loader, with BTF where the
object has it: the object's ``.BTF``, laid out and rid of kinds the running kernel
lacks, is loaded with ``BPF_BTF_LOAD``; each ``struct bpf_map_def`` of ``maps`` and
each BTF-defined map of ``.maps`` becomes a map (with its key and value BTF types
where it declares both); each ``R_BPF_64_64`` relocation turns the 64-bit immediate
load it points at into a ``BPF_PSEUDO_MAP_FD`` load of that map's fd; each program
(a section, or one function of a section holding several) is loaded with a verifier
log and, with BTF, its function and line information from ``.BTF.ext``; the slots
the object's own static initialisers declare (a prog array's programs, a map of
maps' maps) are filled once everything is loaded.

What the kernel refuses of the BTF is not fatal: the object loads without it (a map
without its BTF types, a program without its line information), and the reason is
kept in :attr:`LoadedObject.notes` for the case's result.

:func:`load_request` does what one :class:`~harness.loaders.protocol.LoadRequest`
asks, in the protocol's order: it checks the request against the object before
any bpf(2) call, creates every map, loads the requested programs with the types
the request gives, stores program fds into prog arrays (only once every program
is loaded, so a tail-call target exists before it is reachable), then attaches
socket filters with ``SO_ATTACH_BPF`` to packet sockets bound to an interface.
The :class:`Attached` it returns dumps the requested maps and closes everything.

:func:`load` and :func:`attach_socket` are the older, one-program interface:
every program of the object, its type guessed from its section name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.bpf import btf, syscall
from harness.bpf.elf import INSN_SIZE, BpfObject, MapDef, Program, Slot, read_object
from harness.closing import Closing
from harness.errors import BpfObjectError, LoaderError, VerifierError
from harness.loaders.protocol import SOCKET_TARGET, Dump, LoadRequest
from harness.packet_socket import open_packet_socket

log = logging.getLogger(__name__)

#: ``src_reg`` of a 64-bit immediate load whose immediate is a map fd.
BPF_PSEUDO_MAP_FD = 1
#: ``SO_ATTACH_BPF`` (include/uapi/asm-generic/socket.h); Python's socket module lacks it.
SO_ATTACH_BPF = 50

#: Program types by the name a load request gives (harness.samples.PROGRAM_TYPES).
PROGRAM_TYPES = {"socket_filter": syscall.BPF_PROG_TYPE_SOCKET_FILTER}

#: Program types by section name prefix, as the old samples named their sections (:func:`load`).
PROG_TYPES = {"socket": syscall.BPF_PROG_TYPE_SOCKET_FILTER}

#: Map types the loader creates, reads and fills, by number. Per-CPU maps are not among
#: them: their values are one slot per possible CPU, which a dump would have to split.
MAP_TYPES = {
    syscall.BPF_MAP_TYPE_HASH: "hash",
    syscall.BPF_MAP_TYPE_ARRAY: "array",
    syscall.BPF_MAP_TYPE_PROG_ARRAY: "prog_array",
    syscall.BPF_MAP_TYPE_ARRAY_OF_MAPS: "array_of_maps",
    syscall.BPF_MAP_TYPE_HASH_OF_MAPS: "hash_of_maps",
}
#: Map types whose keys are the indices 0 .. max_entries - 1.
ARRAY_TYPES = (
    syscall.BPF_MAP_TYPE_ARRAY,
    syscall.BPF_MAP_TYPE_PROG_ARRAY,
    syscall.BPF_MAP_TYPE_ARRAY_OF_MAPS,
)
#: What BPF_MAP_CREATE answers when a map type takes no BTF key and value types.
BTF_IDS_REFUSED = (errno.EINVAL, syscall.ENOTSUPP)

#: An array index or prog array slot as the kernel reads it: a u32 key.
INDEX_SIZE = 4

REBUILD = "rebuild the object with `invoke build`"


@dataclass(frozen=True)
class LoadedMap:
    """A map the loader created: its name in the object, its fd, its definition."""

    name: str
    fd: int
    definition: MapDef


@dataclass
class LoadedObject(Closing):
    """Open fds of the maps and programs of one object; close it (or use ``with``)."""

    source: BpfObject
    maps: dict[str, LoadedMap] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)  # Program.key -> fd
    btf_fd: int | None = None  # None: loaded without BTF
    #: What the kernel refused and the load did without, one sentence each.
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        for fd in [*self.programs.values(), *(m.fd for m in self.maps.values())]:
            _close(fd)
        if self.btf_fd is not None:
            _close(self.btf_fd)
            self.btf_fd = None
        self.programs.clear()
        self.maps.clear()

    def note(self, what: str) -> None:
        log.warning("%s", what)
        self.notes.append(what)

    def program_fd(self, name: str) -> int:
        """The fd of the loaded program ``name`` (``SECTION`` or ``SECTION#FUNCTION``)."""
        try:
            return self.programs[self.source.program(name).key]
        except (KeyError, BpfObjectError):
            raise LoaderError(
                f"{self.source.path}: no program {name!r} was loaded (it loaded "
                f"{', '.join(self.programs) or 'none'}); {REBUILD}"
            ) from None

    def map(self, name: str) -> LoadedMap:
        try:
            return self.maps[name]
        except KeyError:
            raise LoaderError(
                f"{self.source.path}: no map named {name!r} (it defines "
                f"{', '.join(self.maps) or 'none'}); {REBUILD}"
            ) from None

    def map_value(self, name: str, key: int) -> int:
        """The value stored under an integer ``key`` in map ``name``, as an unsigned integer."""
        loaded = self.map(name)
        return read_value(loaded.fd, loaded.definition, key)

    def entries(self, name: str) -> list[tuple[bytes, bytes]]:
        """Every entry of map ``name`` as the kernel holds it: (key bytes, value bytes)."""
        loaded = self.map(name)
        return map_entries(loaded.fd, loaded.definition)


@dataclass
class Attached(Closing):
    """What :func:`load_request` loaded and attached; :meth:`dump` reads, :meth:`close` ends.

    Closing detaches every program (its socket is closed) and closes every map and
    program fd; the kernel frees them once nothing else holds them.
    """

    request: LoadRequest
    loaded: LoadedObject
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # program -> socket

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self.loaded.close()

    def dump(self) -> Dump:
        """The entries of every map the request asked to dump."""
        return {name: self.loaded.entries(name) for name in self.request.dump}

    @property
    def notes(self) -> list[str]:
        """What the kernel refused and the load did without (e.g. the object's BTF)."""
        return self.loaded.notes


def program_type(section: str) -> int:
    """The program type a section name stands for (the old samples' naming)."""
    for prefix, prog_type in PROG_TYPES.items():
        if section.startswith(prefix):
            return prog_type
    raise BpfObjectError(
        f"no known program type for section {section!r}; the loader knows sections "
        f"named {', '.join(p + '*' for p in PROG_TYPES)}"
    )


def requested_type(program: str, name: str) -> int:
    """The program type named ``name`` in a request for ``program``."""
    try:
        return PROGRAM_TYPES[name]
    except KeyError:
        raise LoaderError(
            f"program {program}: the Python loader knows no program type {name!r}; "
            f"it loads {', '.join(PROGRAM_TYPES)}"
        ) from None


def relocate(program: Program, map_fds: Mapping[str, int]) -> bytes:
    """The program's instructions with each map reference turned into that map's fd."""
    insns = bytearray(program.insns)
    for reloc in program.relocations:
        fd = map_fds.get(reloc.symbol)
        if fd is None:
            raise BpfObjectError(f"program {program.key} refers to unknown map {reloc.symbol!r}")
        at = reloc.offset
        if at % INSN_SIZE or at + 2 * INSN_SIZE > len(insns):
            raise BpfObjectError(f"relocation at {program.key}+{at:#x} is outside the program")
        # Byte 1 holds dst_reg in its low nibble and src_reg in its high nibble.
        insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
        insns[at + 4 : at + 8] = (fd & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(insns)


def check_map_types(obj: BpfObject) -> None:
    """A :class:`BpfObjectError` for the first map the loader cannot handle."""
    known = ", ".join(f"{name} ({number})" for number, name in MAP_TYPES.items())
    for definition in obj.maps:
        inner = definition.btf.inner if definition.btf else None
        for name, map_type in (
            (definition.name, definition.type),
            *(((f"{definition.name}'s inner map", inner.type),) if inner else ()),
        ):
            if map_type not in MAP_TYPES:
                raise BpfObjectError(
                    f"{obj.path}: map {name} has type {map_type}, which the "
                    f"Python loader does not support (it supports {known}); declare the map "
                    "with one of those types, or use a loader that knows it"
                )
        if definition.btf and definition.btf.pinning:
            raise BpfObjectError(
                f"{obj.path}: map {definition.name} asks to be pinned (pinning "
                f"{definition.btf.pinning}), which the Python loader does not do; "
                "drop __uint(pinning, ...) or use the libbpf loader"
            )


def check_slots(obj: BpfObject, loaded: set[str]) -> None:
    """Every program a prog array of the object starts with must be loaded (``loaded``:
    their :attr:`~harness.bpf.elf.Program.key`)."""
    for slot in obj.slots:
        if obj.map(slot.map).type == syscall.BPF_MAP_TYPE_PROG_ARRAY and slot.target not in loaded:
            raise LoaderError(
                f"{obj.path}: prog array {slot.map} declares program {slot.target} at index "
                f"{slot.index}, which is not loaded; request it with --program {slot.target}:TYPE"
            )


def kernel_release() -> tuple[int, int]:
    """(major, minor) of the running kernel: which BTF kinds it takes."""
    release = os.uname().release
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or "0")
    except ValueError:
        raise LoaderError(
            f"cannot read a kernel version from uname's release {release!r}"
        ) from None


def load_object(obj: BpfObject, programs: Sequence[tuple[str, int]]) -> LoadedObject:
    """Load the BTF, create every map of ``obj`` and load ``programs``: (PROGRAM, type) pairs.

    Then the slots the object declares filled get their programs and maps: prog arrays
    only once every program is loaded, so a tail-call target exists before it is reachable.
    """
    check_map_types(obj)
    sources = [(obj.program(name), prog_type) for name, prog_type in programs]
    check_slots(obj, {program.key for program, _ in sources})
    loaded = LoadedObject(obj)
    try:
        loaded.btf_fd = load_btf(loaded)
        for definition in obj.maps:
            fd = create_map(loaded, definition)
            loaded.maps[definition.name] = LoadedMap(definition.name, fd, definition)
        fds = {name: m.fd for name, m in loaded.maps.items()}
        for program, prog_type in sources:
            loaded.programs[program.key] = load_program(loaded, program, prog_type, fds)
        for slot in obj.slots:
            fill_slot(loaded, slot)
    except BaseException:
        loaded.close()
        raise
    return loaded


def load_btf(loaded: LoadedObject) -> int | None:
    """The fd of the object's BTF in the kernel, or None (no BTF, or the kernel refused it)."""
    obj = loaded.source
    if obj.btf is None:
        return None
    release = kernel_release()
    try:
        data = btf.kernel_btf(
            obj.btf,
            section_sizes=obj.section_sizes,
            var_offsets=obj.var_offsets,
            release=release,
        )
    except BpfObjectError as exc:
        loaded.note(f"BTF not loaded on kernel {release[0]}.{release[1]}: {exc}")
        return None
    try:
        return syscall.btf_load(data)
    except syscall.BpfCallError as exc:
        loaded.note(
            f"the kernel refused the BTF of {obj.path} ({exc}); loaded without BTF: maps "
            "without key and value types, programs without function and line information"
        )
        return None


def create_map(loaded: LoadedObject, definition: MapDef) -> int:
    """A map as ``definition`` declares it; with its BTF types where it has them and the
    kernel takes them. A map of maps gets its inner map from a template made first."""
    spec = definition.btf
    if spec is None:
        return syscall.map_create(
            definition.type,
            definition.key_size,
            definition.value_size,
            definition.max_entries,
            definition.flags,
            name=definition.name,
        )
    inner_fd = 0
    if spec.inner is not None:
        inner_fd = create_map(loaded, MapDef.from_btf(spec.inner))
    try:
        ids = spec.btf_type_ids if loaded.btf_fd is not None else None

        def create(with_ids: tuple[int, int] | None) -> int:
            return syscall.map_create(
                spec.type,
                spec.key_size,
                spec.value_size,
                spec.max_entries,
                spec.flags,
                name=spec.name,
                inner_map_fd=inner_fd,
                numa_node=spec.numa_node,
                map_extra=spec.map_extra,
                btf_fd=(loaded.btf_fd or 0) if with_ids else 0,
                btf_key_type_id=with_ids[0] if with_ids else 0,
                btf_value_type_id=with_ids[1] if with_ids else 0,
            )

        try:
            return create(ids)
        except syscall.BpfCallError as exc:
            if ids is None or exc.errno not in BTF_IDS_REFUSED:
                raise
            fd = create(None)
            loaded.note(
                f"map {spec.name}: the kernel refused its BTF key and value types ({exc}); "
                "created without them"
            )
            return fd
    finally:
        if inner_fd:
            _close(inner_fd)  # the kernel keeps what it needs of the template


def load_program(
    loaded: LoadedObject, program: Program, prog_type: int, map_fds: Mapping[str, int]
) -> int:
    """Load one program; with its function and line information when the BTF is loaded.

    A kernel that refuses that information (or a verifier that stumbles on it) gets
    the program once more without it; if that load fails too, its error is the one
    raised, the program's own.
    """
    obj = loaded.source
    insns = relocate(program, map_fds)
    func_info = line_info = b""
    if loaded.btf_fd is not None and obj.btf_ext is not None:
        # .BTF.ext counts instructions from the section's start; the kernel from the program's.
        first, count = program.offset // INSN_SIZE, len(program.insns) // INSN_SIZE
        func_info = btf.func_info_bytes(
            btf.of_program(obj.btf_ext.func_info.get(program.section, ()), first, count)
        )
        line_info = btf.line_info_bytes(
            btf.of_program(obj.btf_ext.line_info.get(program.section, ()), first, count)
        )

    def load(with_btf: bool) -> int:
        return syscall.prog_load(
            prog_type,
            insns,
            obj.license,
            name=program.name,
            kern_version=obj.kern_version or 0,
            btf_fd=(loaded.btf_fd or 0) if with_btf else 0,
            func_info=func_info if with_btf else b"",
            line_info=line_info if with_btf and func_info else b"",
        )

    if not func_info:
        return load(with_btf=False)
    try:
        return load(with_btf=True)
    except (VerifierError, syscall.BpfCallError) as exc:
        refused = exc
    fd = load(with_btf=False)
    reason = syscall.verifier_reason(refused.log) if isinstance(refused, VerifierError) else refused
    loaded.note(
        f"program {program.key}: the kernel refused its BTF function and line "
        f"information ({reason}); loaded without it"
    )
    return fd


def fill_slot(loaded: LoadedObject, slot: Slot) -> None:
    """Store the program or map a slot of the object starts with."""
    if loaded.map(slot.map).definition.type == syscall.BPF_MAP_TYPE_PROG_ARRAY:
        fill_prog_array(loaded, slot.map, slot.index, slot.target)
        return
    try:
        syscall.map_update(
            loaded.map(slot.map).fd,
            slot.index.to_bytes(INDEX_SIZE, "little"),
            loaded.map(slot.target).fd.to_bytes(INDEX_SIZE, "little"),
        )
    except LoaderError as exc:
        raise LoaderError(
            f"cannot store map {slot.target} at index {slot.index} of map {slot.map}: {exc}"
        ) from exc


def load(source: Path | BpfObject) -> LoadedObject:
    """Create the maps of an object and load every program of it, typed by section name."""
    obj = source if isinstance(source, BpfObject) else read_object(source)
    return load_object(obj, [(p.key, program_type(p.section)) for p in obj.programs])


def load_request(request: LoadRequest) -> Attached:
    """Load, fill and attach what ``request`` asks; close the result (or use ``with``)."""
    obj = read_object(request.object)
    check_request(request, obj)
    programs = [(program, PROGRAM_TYPES[kind]) for program, kind in request.programs]
    attached = Attached(request, load_object(obj, programs))
    try:
        for name, index, program in request.prog_arrays:
            fill_prog_array(attached.loaded, name, index, program)
        for program, target in request.attach:
            interface = target.removeprefix(SOCKET_TARGET)
            attached.sockets[program] = attach_socket(
                attached.loaded.program_fd(program), interface
            )
    except BaseException:
        attached.close()
        raise
    return attached


def check_request(request: LoadRequest, obj: BpfObject) -> None:
    """Everything a request names must be in the object and consistent; checked before loading.

    A missing program or map is a :class:`BpfObjectError` that lists what the object
    has; a request that contradicts itself is a :class:`LoaderError`. Programs are
    compared as the object's (``socket/0`` and ``socket/0#first`` are one program).
    """
    requested: set[str] = set()
    for program, kind in request.programs:
        key = obj.program(program).key
        requested_type(program, kind)
        if key in requested:
            raise LoaderError(f"program {key} is requested twice; give one --program for it")
        requested.add(key)
    check_slots(obj, requested)
    attached: set[str] = set()
    for program, target in request.attach:
        key = obj.program(program).key
        if key in attached:
            raise LoaderError(
                f"program {key} is to be attached twice; give one --attach per program"
            )
        attached.add(key)
        if key not in requested:
            raise LoaderError(
                f"program {program} is to be attached but is not loaded; "
                f"request it with --program {program}:TYPE"
            )
        if not target.startswith(SOCKET_TARGET) or not target.removeprefix(SOCKET_TARGET):
            raise LoaderError(
                f"program {program}: the Python loader cannot attach to {target!r}; "
                f'it attaches to "{SOCKET_TARGET}IFACE" (SO_ATTACH_BPF on a packet socket)'
            )
    for name, index, program in request.prog_arrays:
        definition = obj.map(name)
        if definition.type != syscall.BPF_MAP_TYPE_PROG_ARRAY:
            kind = MAP_TYPES.get(definition.type, str(definition.type))
            raise LoaderError(
                f"{obj.path}: map {name} has type {kind}, not prog_array; "
                "a program fd can only be stored in a BPF_MAP_TYPE_PROG_ARRAY"
            )
        if not 0 <= index < definition.max_entries:
            raise LoaderError(
                f"{obj.path}: prog array {name} has {definition.max_entries} entries "
                f"(indices 0 to {definition.max_entries - 1}), so program {program} cannot "
                f"go at index {index}; use an index the object's tail calls use, or "
                "enlarge the map's max_entries and rebuild"
            )
        if obj.program(program).key not in requested:
            raise LoaderError(
                f"prog array {name}[{index}] names program {program}, which is not loaded; "
                f"request it with --program {program}:TYPE"
            )
    for name in request.dump:
        obj.map(name)


def fill_prog_array(loaded: LoadedObject, name: str, index: int, program: str) -> None:
    """Store the fd of ``program`` (a PROGRAM) at ``index`` of prog array ``name``."""
    prog_array = loaded.map(name)
    prog_fd = loaded.program_fd(program)
    try:
        syscall.map_update(
            prog_array.fd,
            index.to_bytes(INDEX_SIZE, "little"),
            prog_fd.to_bytes(INDEX_SIZE, "little"),
        )
    except LoaderError as exc:
        raise LoaderError(
            f"cannot store program {program} at index {index} of prog array {name}: {exc}"
        ) from exc


def map_entries(fd: int, definition: MapDef) -> list[tuple[bytes, bytes]]:
    """Every entry of a map as the kernel holds it: (key, value) bytes.

    An array has every index; a prog array only the indices that hold a program
    (its values are program ids). A hash map's keys come from
    ``BPF_MAP_GET_NEXT_KEY``, starting from a NULL key; a key deleted while the
    map is read is skipped.
    """
    if definition.type in ARRAY_TYPES:
        keys = [i.to_bytes(INDEX_SIZE, "little") for i in range(definition.max_entries)]
    else:
        keys = hash_keys(fd, definition)
    entries = []
    for key in keys:
        value = syscall.map_lookup(fd, key, definition.value_size)
        if value is not None:
            entries.append((key, value))
    return entries


def hash_keys(fd: int, definition: MapDef) -> list[bytes]:
    """The keys of a hash map, in the kernel's order."""
    keys: list[bytes] = []
    seen: set[bytes] = set()
    key = syscall.map_get_next_key(fd, None, definition.key_size)
    # A key deleted under our feet makes the kernel start over from the first key:
    # stop at the first key seen twice rather than go round again.
    while key is not None and key not in seen:
        keys.append(key)
        seen.add(key)
        key = syscall.map_get_next_key(fd, key, definition.key_size)
    return keys


def attach_socket(prog_fd: int, interface: str) -> socket.socket:
    """A raw packet socket on ``interface`` that runs the program on every packet."""
    sock = open_packet_socket(interface, f"BPF program fd {prog_fd}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as exc:
        sock.close()
        raise LoaderError(
            f"cannot attach program fd {prog_fd} to a packet socket on {interface}: "
            f"{exc.strerror or exc}"
        ) from exc
    return sock


def read_value(fd: int, definition: MapDef, key: int) -> int:
    """One value of an array map."""
    raw = syscall.map_lookup(fd, key.to_bytes(definition.key_size, "little"), definition.value_size)
    return 0 if raw is None else int.from_bytes(raw, "little")


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
