"""Load a legacy BPF object with bpf(2): create its maps, patch map references, load programs.

The steps are those of the kernel's old samples/bpf loader: each ``struct
bpf_map_def`` becomes a map; each ``R_BPF_64_64`` relocation turns the 64-bit
immediate load it points at into a ``BPF_PSEUDO_MAP_FD`` load of that map's fd;
each program section is loaded with a verifier log. A socket filter is attached
with ``SO_ATTACH_BPF`` to a packet socket bound to an interface.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.bpf import syscall
from harness.bpf.elf import INSN_SIZE, BpfObject, MapDef, Program, read_object
from harness.errors import BpfObjectError, LoaderError
from harness.packet_socket import open_packet_socket

#: ``src_reg`` of a 64-bit immediate load whose immediate is a map fd.
BPF_PSEUDO_MAP_FD = 1
#: ``SO_ATTACH_BPF`` (include/uapi/asm-generic/socket.h); Python's socket module lacks it.
SO_ATTACH_BPF = 50

#: Program types by section name prefix, as the old samples named their sections.
PROG_TYPES = {"socket": syscall.BPF_PROG_TYPE_SOCKET_FILTER}


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
                f"{', '.join(self.programs) or 'none'}); rebuild the object with `invoke build`"
            ) from None

    def map_value(self, name: str, key: int) -> int:
        """The value stored under an integer ``key`` in map ``name``, as an unsigned integer."""
        try:
            loaded = self.maps[name]
        except KeyError:
            raise LoaderError(
                f"{self.source.path}: no map named {name!r} (it defines "
                f"{', '.join(self.maps) or 'none'}); rebuild the object with `invoke build`"
            ) from None
        return read_value(loaded.fd, loaded.definition, key)


def program_type(section: str) -> int:
    """The program type a section name stands for."""
    for prefix, prog_type in PROG_TYPES.items():
        if section.startswith(prefix):
            return prog_type
    raise BpfObjectError(
        f"no known program type for section {section!r}; the loader knows sections "
        f"named {', '.join(p + '*' for p in PROG_TYPES)}"
    )


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


def load(source: Path | BpfObject) -> LoadedObject:
    """Create the maps of an object and load every program of it."""
    obj = source if isinstance(source, BpfObject) else read_object(source)
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
        for program in obj.programs:
            loaded.programs[program.section] = syscall.prog_load(
                program_type(program.section),
                relocate(program, fds),
                obj.license,
                name=program.name,
                kern_version=obj.kern_version or 0,
            )
    except BaseException:
        loaded.close()
        raise
    return loaded


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
