"""Load a legacy BPF object with bpf(2): create its maps, patch map references, load programs.

The steps are those of the kernel's old samples/bpf loader: each ``struct
bpf_map_def`` becomes a map; each ``R_BPF_64_64`` relocation turns the 64-bit
immediate load it points at into a ``BPF_PSEUDO_MAP_FD`` load of that map's fd;
each program section is loaded with a verifier log.

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
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.bpf import syscall
from harness.bpf.elf import INSN_SIZE, BpfObject, MapDef, Program, read_object
from harness.errors import BpfObjectError, LoaderError
from harness.loaders.protocol import Dump, LoadRequest
from harness.packet_socket import open_packet_socket

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
}
#: Map types whose keys are the indices 0 .. max_entries - 1.
ARRAY_TYPES = (syscall.BPF_MAP_TYPE_ARRAY, syscall.BPF_MAP_TYPE_PROG_ARRAY)

#: The one attach target a request can name: ``socket:IFACE``.
SOCKET_TARGET = "socket:"

#: An array index or prog array slot as the kernel reads it: a u32 key.
INDEX_SIZE = 4

REBUILD = "rebuild the object with `invoke build`"


@dataclass(frozen=True)
class LoadedMap:
    name: str
    fd: int
    definition: MapDef


@dataclass
class LoadedObject:
    """Open fds of the maps and programs of one object; close it (or use ``with``)."""

    source: BpfObject
    maps: dict[str, LoadedMap] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)  # section -> fd

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for fd in [*self.programs.values(), *(m.fd for m in self.maps.values())]:
            _close(fd)
        self.programs.clear()
        self.maps.clear()

    def program_fd(self, section: str) -> int:
        try:
            return self.programs[section]
        except KeyError:
            raise LoaderError(
                f"{self.source.path}: no program loaded from section {section!r} (it loaded "
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
class Attached:
    """What :func:`load_request` loaded and attached; :meth:`dump` reads, :meth:`close` ends.

    Closing detaches every program (its socket is closed) and closes every map and
    program fd; the kernel frees them once nothing else holds them.
    """

    request: LoadRequest
    loaded: LoadedObject
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # section -> socket

    def __enter__(self) -> Attached:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self.loaded.close()

    def dump(self) -> Dump:
        """The entries of every map the request asked to dump."""
        return {name: self.loaded.entries(name) for name in self.request.dump}


def program_type(section: str) -> int:
    """The program type a section name stands for (the old samples' naming)."""
    for prefix, prog_type in PROG_TYPES.items():
        if section.startswith(prefix):
            return prog_type
    raise BpfObjectError(
        f"no known program type for section {section!r}; the loader knows sections "
        f"named {', '.join(p + '*' for p in PROG_TYPES)}"
    )


def requested_type(section: str, name: str) -> int:
    """The program type named ``name`` in a request for ``section``."""
    try:
        return PROGRAM_TYPES[name]
    except KeyError:
        raise LoaderError(
            f"program {section}: the Python loader knows no program type {name!r}; "
            f"it loads {', '.join(PROGRAM_TYPES)}"
        ) from None


def relocate(program: Program, map_fds: Mapping[str, int]) -> bytes:
    """The program's instructions with each map reference turned into that map's fd."""
    insns = bytearray(program.insns)
    for reloc in program.relocations:
        fd = map_fds.get(reloc.symbol)
        if fd is None:
            raise BpfObjectError(
                f"program {program.section} refers to unknown map {reloc.symbol!r}"
            )
        at = reloc.offset
        if at % INSN_SIZE or at + 2 * INSN_SIZE > len(insns):
            raise BpfObjectError(f"relocation at {program.section}+{at:#x} is outside the program")
        # Byte 1 holds dst_reg in its low nibble and src_reg in its high nibble.
        insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
        insns[at + 4 : at + 8] = (fd & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(insns)


def check_map_types(obj: BpfObject) -> None:
    """A :class:`BpfObjectError` for the first map of a type the loader cannot handle."""
    for definition in obj.maps:
        if definition.type not in MAP_TYPES:
            known = ", ".join(f"{name} ({number})" for number, name in MAP_TYPES.items())
            raise BpfObjectError(
                f"{obj.path}: map {definition.name} has type {definition.type}, which the "
                f"Python loader does not support (it supports {known}); declare the map "
                "with one of those types, or use a loader that knows it"
            )


def load_object(obj: BpfObject, programs: Sequence[tuple[str, int]]) -> LoadedObject:
    """Create every map of ``obj`` and load ``programs``: (section, program type) pairs."""
    check_map_types(obj)
    sources = [(obj.program(section), prog_type) for section, prog_type in programs]
    loaded = LoadedObject(obj)
    try:
        for definition in obj.maps:
            fd = syscall.map_create(
                definition.type,
                definition.key_size,
                definition.value_size,
                definition.max_entries,
                definition.flags,
            )
            loaded.maps[definition.name] = LoadedMap(definition.name, fd, definition)
        fds = {name: m.fd for name, m in loaded.maps.items()}
        for program, prog_type in sources:
            loaded.programs[program.section] = syscall.prog_load(
                prog_type,
                relocate(program, fds),
                obj.license,
                name=program.name,
                kern_version=obj.kern_version or 0,
            )
    except BaseException:
        loaded.close()
        raise
    return loaded


def load(source: Path | BpfObject) -> LoadedObject:
    """Create the maps of an object and load every program of it, typed by section name."""
    obj = source if isinstance(source, BpfObject) else read_object(source)
    return load_object(obj, [(p.section, program_type(p.section)) for p in obj.programs])


def load_request(request: LoadRequest) -> Attached:
    """Load, fill and attach what ``request`` asks; close the result (or use ``with``)."""
    obj = read_object(request.object)
    check_request(request, obj)
    programs = [(section, PROGRAM_TYPES[kind]) for section, kind in request.programs]
    attached = Attached(request, load_object(obj, programs))
    try:
        for name, index, section in request.prog_arrays:
            fill_prog_array(attached.loaded, name, index, section)
        for section, target in request.attach:
            interface = target.removeprefix(SOCKET_TARGET)
            attached.sockets[section] = attach_socket(
                attached.loaded.program_fd(section), interface
            )
    except BaseException:
        attached.close()
        raise
    return attached


def check_request(request: LoadRequest, obj: BpfObject) -> None:
    """Everything a request names must be in the object and consistent; checked before loading.

    A missing section or map is a :class:`BpfObjectError` that lists what the object
    has; a request that contradicts itself is a :class:`LoaderError`.
    """
    requested: set[str] = set()
    for section, kind in request.programs:
        obj.program(section)
        requested_type(section, kind)
        if section in requested:
            raise LoaderError(f"program {section} is requested twice; give one --program for it")
        requested.add(section)
    attached: set[str] = set()
    for section, target in request.attach:
        if section in attached:
            raise LoaderError(
                f"program {section} is to be attached twice; give one --attach per program"
            )
        attached.add(section)
        if section not in requested:
            raise LoaderError(
                f"program {section} is to be attached but is not loaded; "
                f"request it with --program {section}:TYPE"
            )
        if not target.startswith(SOCKET_TARGET) or not target.removeprefix(SOCKET_TARGET):
            raise LoaderError(
                f"program {section}: the Python loader cannot attach to {target!r}; "
                f'it attaches to "{SOCKET_TARGET}IFACE" (SO_ATTACH_BPF on a packet socket)'
            )
    for name, index, section in request.prog_arrays:
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
                f"(indices 0 to {definition.max_entries - 1}), so program {section} cannot "
                f"go at index {index}; use an index the object's tail calls use, or "
                "enlarge the map's max_entries and rebuild"
            )
        if section not in requested:
            raise LoaderError(
                f"prog array {name}[{index}] names program {section}, which is not loaded; "
                f"request it with --program {section}:TYPE"
            )
    for name in request.dump:
        obj.map(name)


def fill_prog_array(loaded: LoadedObject, name: str, index: int, section: str) -> None:
    """Store the fd of the program loaded from ``section`` at ``index`` of prog array ``name``."""
    prog_array = loaded.map(name)
    prog_fd = loaded.program_fd(section)
    try:
        syscall.map_update(
            prog_array.fd,
            index.to_bytes(INDEX_SIZE, "little"),
            prog_fd.to_bytes(INDEX_SIZE, "little"),
        )
    except LoaderError as exc:
        raise LoaderError(
            f"cannot store program {section} at index {index} of prog array {name}: {exc}"
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
