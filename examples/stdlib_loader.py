#!/usr/bin/env python3
"""A loader of the harness's loader protocol in plain Python: no packages, no harness.

It reads the ELF object itself with ``struct`` and calls ``bpf(2)`` through ``ctypes``;
an example to follow when writing a loader in another language. It loads classic
objects only: maps as 20-byte ``struct bpf_map_def`` in section ``maps`` (array,
hash and prog-array maps), ``R_BPF_64_64`` relocations of map references, and
socket filters attached to packet sockets::

    stdlib_loader.py --object FILE [--program SECTION:TYPE]...
                     [--attach SECTION:socket:IFACE]... [--prog-array MAP:INDEX:SECTION]...
                     [--dump MAP]...

It prints ``ready`` once everything is loaded and attached, waits for the end of its
input (or SIGTERM), prints ``{"maps": {"MAP": [["KEY_HEX", "VALUE_HEX"], ...]}}`` and
exits 0. A failure is a message on stderr and exit status 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from typing import NoReturn

# bpf(2) commands and constants, from include/uapi/linux/bpf.h.
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM = 0, 1, 2
BPF_MAP_GET_NEXT_KEY, BPF_PROG_LOAD = 4, 5
MAP_TYPES = {1: "hash", 2: "array", 3: "prog_array"}
PROG_TYPES = {"socket_filter": 1}
BPF_PSEUDO_MAP_FD = 1
LD_IMM64 = 0x18
INSN_SIZE = 8
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "s390x": 351, "ppc64le": 361}

# ELF, from include/uapi/linux/elf.h.
EM_BPF = 247
SHT_SYMTAB, SHT_REL = 2, 9
R_BPF_64_64 = 1
MAP_DEF = struct.Struct("<IIIII")  # struct bpf_map_def: type, key/value size, entries, flags

SO_ATTACH_BPF = 50  # include/uapi/asm-generic/socket.h; Python's socket module lacks it
ETH_P_ALL = 0x0003
LOG_SIZE = 1 << 20


class LoadError(Exception):
    """Anything that stops the load: its message is the one line the harness shows."""


# --- the ELF object ---------------------------------------------------------------------


@dataclass
class Section:
    name: str
    type: int
    link: int
    info: int
    data: bytes


@dataclass
class Symbol:
    name: str
    section: int
    value: int


class ElfObject:
    """The sections and symbols of a little-endian 64-bit BPF object."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as file:
            image = file.read()
        if image[:6] != b"\x7fELF\x02\x01":
            raise LoadError(f"{path}: not a 64-bit little-endian ELF file")
        (machine,) = struct.unpack_from("<H", image, 18)
        if machine != EM_BPF:
            raise LoadError(f"{path}: ELF machine {machine}, not BPF ({EM_BPF})")
        (shoff,) = struct.unpack_from("<Q", image, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
        headers = []
        for index in range(shnum):
            # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, ...
            name, kind, _, _, offset, size, link, info = struct.unpack_from(
                "<IIQQQQII", image, shoff + index * shentsize
            )
            if offset + size > len(image) and kind != 8:  # 8: SHT_NOBITS holds no bytes
                raise LoadError(f"{path}: section {index} runs past the end of the file")
            headers.append((name, kind, link, info, image[offset : offset + size]))
        names = headers[shstrndx][4]
        self.sections = [
            Section(_string(names, name), kind, link, info, data)
            for name, kind, link, info, data in headers
        ]
        self.symbols: list[Symbol] = []
        for section in self.sections:
            if section.type == SHT_SYMTAB:
                strings = self.sections[section.link].data
                for name, _, _, shndx, value, _ in struct.iter_unpack("<IBBHQQ", section.data):
                    self.symbols.append(Symbol(_string(strings, name), shndx, value))

    def index(self, name: str) -> int | None:
        return next((i for i, s in enumerate(self.sections) if s.name == name), None)


def _string(table: bytes, offset: int) -> str:
    return table[offset : table.index(b"\0", offset)].decode()


# --- bpf(2) ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """One bpf(2) call on ``attr`` (union bpf_attr as bytes); its result, or OSError."""
    number = SYS_BPF.get(platform.machine())
    if number is None:
        raise LoadError(f"no bpf(2) syscall number known for {platform.machine()}")
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(command), attr, len(attr))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


def attr(fields: str, *values: int) -> ctypes.Array[ctypes.c_char]:
    """A zeroed union bpf_attr (128 bytes) starting with ``values`` packed as ``fields``."""
    buffer = ctypes.create_string_buffer(128)
    struct.pack_into(fields, buffer, 0, *values)
    return buffer


def address(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buffer is None else ctypes.addressof(buffer)


@dataclass
class Map:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    fd: int = -1

    def lookup(self, key: bytes) -> bytes | None:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(self.value_size)
        try:
            bpf(BPF_MAP_LOOKUP_ELEM, attr("<IIQQ", self.fd, 0, address(k), address(v)))
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # a hash entry deleted since its key was read
                return None
            raise
        return v.raw

    def update(self, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        bpf(BPF_MAP_UPDATE_ELEM, attr("<IIQQQ", self.fd, 0, address(k), address(v), 0))

    def indices(self) -> list[bytes]:
        """Every key: each index of an array, each key a hash holds now."""
        if self.type != 1:  # an array: every index
            return [struct.pack("<I", i) for i in range(self.max_entries)]
        found: list[bytes] = []
        while True:  # a NULL key asks for the first one (Linux 4.12 and later)
            key = ctypes.create_string_buffer(found[-1]) if found else None
            following = ctypes.create_string_buffer(self.key_size)
            try:
                bpf(
                    BPF_MAP_GET_NEXT_KEY,
                    attr("<IIQQ", self.fd, 0, address(key), address(following)),
                )
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return found
                raise
            found.append(following.raw)


# --- loading --------------------------------------------------------------------------------


def create_maps(obj: ElfObject, path: str) -> dict[str, Map]:
    """Every map of section ``maps``, created; by symbol name."""
    index = obj.index("maps")
    if index is None:
        if obj.index(".maps") is not None:
            raise LoadError(
                f'{path}: only classic SEC("maps") objects are supported; this one has BTF-defined '
                "maps in .maps (load it with the libbpf or python loader)"
            )
        return {}
    data = obj.sections[index].data
    symbols = sorted(
        (s for s in obj.symbols if s.section == index and s.name), key=lambda s: s.value
    )
    if len(data) != MAP_DEF.size * len(symbols):
        raise LoadError(
            f"section maps holds {len(data)} bytes for {len(symbols)} maps; each must be a "
            f"{MAP_DEF.size}-byte struct bpf_map_def"
        )
    maps = {}
    for symbol in symbols:
        kind, key_size, value_size, entries, flags = MAP_DEF.unpack_from(data, symbol.value)
        if kind not in MAP_TYPES:
            raise LoadError(f"map {symbol.name}: type {kind} is not one of {MAP_TYPES}")
        bpf_map = Map(symbol.name, kind, key_size, value_size, entries)
        try:
            bpf_map.fd = bpf(
                BPF_MAP_CREATE, attr("<IIIII", kind, key_size, value_size, entries, flags)
            )
        except OSError as exc:
            raise LoadError(f"cannot create map {symbol.name}: {exc.strerror}") from exc
        maps[symbol.name] = bpf_map
    return maps


def relocate(obj: ElfObject, section: int, maps: dict[str, Map]) -> bytes:
    """The instructions of ``section`` with each map reference holding the map's fd."""
    code = bytearray(obj.sections[section].data)
    name = obj.sections[section].name
    for rel in obj.sections:
        if rel.type != SHT_REL or rel.info != section:
            continue
        for offset, info in struct.iter_unpack("<QQ", rel.data):
            kind, symbol = info & 0xFFFFFFFF, obj.symbols[info >> 32]
            if kind != R_BPF_64_64 or code[offset] != LD_IMM64:
                raise LoadError(f"{name}: relocation of type {kind} at {offset} is not supported")
            if symbol.name not in maps:
                raise LoadError(
                    f"{name}: refers to {symbol.name!r}, which is not a map of section maps"
                )
            code[offset + 1] = (code[offset + 1] & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
            struct.pack_into("<i", code, offset + 4, maps[symbol.name].fd)
    return bytes(code)


def load_program(name: str, kind: int, code: bytes, license_text: bytes) -> int:
    """The fd of the loaded program; the verifier's log in the error if it is rejected."""
    insns, text = (
        ctypes.create_string_buffer(code),
        ctypes.create_string_buffer(license_text + b"\0"),
    )

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        return bpf(
            BPF_PROG_LOAD,
            attr("<IIQQIIQ", kind, len(code) // INSN_SIZE, address(insns), address(text),
                 1 if log else 0, len(log) if log else 0, address(log)),
        )  # fmt: skip

    try:
        return load(None)
    except OSError:
        log = ctypes.create_string_buffer(LOG_SIZE)  # again, with the log this time
        try:
            return load(log)
        except OSError as exc:
            raise LoadError(
                f"the verifier rejected program {name} ({exc.strerror}):\n"
                + log.value.decode(errors="replace").strip()
            ) from exc


def attach(prog_fd: int, interface: str) -> socket.socket:
    """A packet socket on ``interface`` with the program attached (SO_ATTACH_BPF)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((interface, ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as exc:
        raise LoadError(f"cannot attach to a packet socket on {interface}: {exc.strerror}") from exc
    return sock


# --- the protocol ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load a classic BPF object (the loader protocol).")
    parser.add_argument("--object", required=True)
    parser.add_argument("--program", action="append", default=[], metavar="SECTION:TYPE")
    parser.add_argument("--attach", action="append", default=[], metavar="SECTION:socket:IFACE")
    parser.add_argument("--prog-array", action="append", default=[], metavar="MAP:INDEX:SECTION")
    parser.add_argument("--dump", action="append", default=[], metavar="MAP")
    args = parser.parse_args(argv)
    for text in args.program:
        if text.rpartition(":")[2] not in PROG_TYPES:
            parser.error(f"--program {text}: not SECTION:TYPE with TYPE one of {list(PROG_TYPES)}")
    for text in args.attach:
        if len(text.split(":")) != 3 or text.split(":")[1] != "socket":
            parser.error(f"--attach {text}: not SECTION:socket:IFACE")
    for text in args.prog_array:
        if len(text.split(":")) != 3 or not text.split(":")[1].isdigit():
            parser.error(f"--prog-array {text}: not MAP:INDEX:SECTION")
    return args


class Stop(Exception):
    """SIGTERM: report now, as at the end of input."""


def on_sigterm(signum: int, frame: object) -> NoReturn:
    raise Stop


def run(args: argparse.Namespace) -> dict[str, list[list[str]]]:
    try:
        obj = ElfObject(args.object)
    except (OSError, struct.error, IndexError, ValueError) as exc:
        raise LoadError(
            f"{args.object}: not a readable BPF object, cut short or corrupt ({exc})"
        ) from exc
    maps = create_maps(obj, args.object)
    license_index = obj.index("license")
    if license_index is None:
        raise LoadError(f'{args.object}: no license section; add char _license[] SEC("license")')
    license_text = obj.sections[license_index].data.split(b"\0")[0]
    programs: dict[str, int] = {}
    for text in args.program:
        section, _, kind = text.rpartition(":")
        index = obj.index(section)
        if index is None:
            raise LoadError(f"{args.object}: no program section {section}")
        programs[section] = load_program(
            section, PROG_TYPES[kind], relocate(obj, index, maps), license_text
        )
    for text in args.prog_array:
        name, slot, section = text.split(":")
        if name not in maps or maps[name].type != 3 or section not in programs:
            raise LoadError(f"--prog-array {text}: no prog array {name} or no --program {section}")
        maps[name].update(struct.pack("<I", int(slot)), struct.pack("<I", programs[section]))
    sockets = []
    for text in args.attach:
        section, _, interface = text.split(":")
        if section not in programs:
            raise LoadError(f"--attach {text}: no --program {section}")
        sockets.append(attach(programs[section], interface))
    for name in args.dump:
        if name not in maps:
            raise LoadError(f"--dump {name}: the object has no such map (it has {', '.join(maps)})")

    signal.signal(signal.SIGTERM, on_sigterm)
    print("ready", flush=True)
    with contextlib.suppress(Stop):
        sys.stdin.buffer.read()  # until the harness closes our input
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the report is not cut short
    report = {}
    for name in args.dump:
        entries = ((key, maps[name].lookup(key)) for key in maps[name].indices())
        report[name] = [[key.hex(), value.hex()] for key, value in entries if value is not None]
    return report


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Kernels before 5.11 charge maps to RLIMIT_MEMLOCK, which a hash map of a thousand
    # entries can exceed (bpf(2) then fails with EPERM): lift it, as libbpf does.
    # Unprivileged, it stays: the kernel says so when the first map is created.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)
    try:
        report = run(args)
    except (LoadError, OSError) as exc:
        print(f"stdlib_loader: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"maps": report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
