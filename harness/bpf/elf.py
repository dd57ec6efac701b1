"""Read a BPF ELF object into plain values: programs, map definitions, relocations, license.

The objects are the legacy kind the kernel's samples/bpf used: maps declared as
``struct bpf_map_def`` in a section named ``maps`` (five 32-bit fields, 20 bytes
each), programs in executable sections (``socket1``, ``socket/0``, ...), map
references as ``R_BPF_64_64`` relocations on 64-bit immediate loads, and the license
string in a section named ``license``.

Everything pyelftools is asked is asked here, inside one ``try``: a malformed file
can make it fail in many ways (``ELFError``, ``struct.error``, ``IndexError`` ...), and
every one of them becomes a :class:`BpfObjectError` naming the file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from harness.errors import BpfObjectError

#: ``e_machine`` of a BPF object.
EM_BPF = 247
#: The one relocation type the loaders apply: a 64-bit immediate load of a map.
R_BPF_64_64 = 1
#: ``struct bpf_map_def``: type, key_size, value_size, max_entries, map_flags.
MAP_DEF = struct.Struct("<5I")
MAP_DEF_SIZE = MAP_DEF.size
#: One BPF instruction.
INSN_SIZE = 8
#: Opcode of the first half of a 64-bit immediate load (BPF_LD | BPF_IMM | BPF_DW).
LD_IMM64 = 0x18

MAPS_SECTION = "maps"
LICENSE_SECTION = "license"
VERSION_SECTION = "version"

# Everything a corrupted file can make pyelftools raise while it is being read.
_PARSE_ERRORS = (
    ELFError,
    struct.error,
    IndexError,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    AssertionError,
    OverflowError,
    UnicodeDecodeError,
    RecursionError,
)


@dataclass(frozen=True)
class Symbol:
    """An entry of the symbol table."""

    name: str
    section: str | None  # None for undefined, absolute and common symbols
    value: int
    size: int
    kind: str  # STT_FUNC, STT_OBJECT, ...


@dataclass(frozen=True)
class MapDef:
    """One ``struct bpf_map_def`` of the ``maps`` section."""

    name: str
    offset: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class Relocation:
    """A reference from an instruction of a program to a map."""

    offset: int  # byte offset of the instruction in its program section
    type: int
    symbol: str


@dataclass(frozen=True)
class Program:
    """The instructions of one program section, and the map references in them."""

    section: str
    name: str  # the function's symbol, or the section name when there is none
    insns: bytes
    relocations: tuple[Relocation, ...]


@dataclass(frozen=True)
class BpfObject:
    """Everything a loader needs from one object file."""

    path: Path
    license: str
    kern_version: int | None
    programs: tuple[Program, ...]
    maps: tuple[MapDef, ...]
    symbols: tuple[Symbol, ...]

    def program(self, section: str) -> Program:
        for program in self.programs:
            if program.section == section:
                return program
        have = ", ".join(p.section for p in self.programs) or "none"
        raise BpfObjectError(
            f"{self.path}: no program section {section!r} (programs: {have}); "
            "rebuild the object with `invoke build`, or name one of its sections"
        )

    def map(self, name: str) -> MapDef:
        for map_def in self.maps:
            if map_def.name == name:
                return map_def
        have = ", ".join(m.name for m in self.maps) or "none"
        raise BpfObjectError(
            f"{self.path}: no map {name!r} in section maps (maps: {have}); "
            "rebuild the object with `invoke build`, or name one of its maps"
        )


def read_object(path: Path) -> BpfObject:
    """Read the BPF object at ``path``; a :class:`BpfObjectError` says what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BpfObjectError(
            f"cannot read BPF object {path}: {exc.strerror}; "
            "build it with `invoke build`, or give the path of a built object"
        ) from exc
    return parse_object(data, path)


def parse_object(data: bytes, path: Path) -> BpfObject:
    """Read a BPF object held in memory; ``path`` names it in error messages."""
    try:
        return _Reader(data, path).read()
    except BpfObjectError:
        raise
    except _PARSE_ERRORS as exc:
        raise BpfObjectError(
            f"{path} is not a readable ELF object ({type(exc).__name__}: {exc}); "
            "rebuild it with `invoke build`"
        ) from exc


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.path = path
        self.elf = ELFFile(io.BytesIO(data))

    def fail(self, what: str) -> BpfObjectError:
        return BpfObjectError(f"{self.path}: {what}")

    def read(self) -> BpfObject:
        header = self.elf.header
        if header["e_machine"] != "EM_BPF" and header["e_machine"] != EM_BPF:
            raise self.fail(
                f"not a BPF object (machine {header['e_machine']}); "
                "compile it with clang -target bpf"
            )
        if self.elf.elfclass != 64 or not self.elf.little_endian:
            raise self.fail("not a 64-bit little-endian object; compile it with clang -target bpf")
        if header["e_type"] != "ET_REL":
            raise self.fail(f"not a relocatable object (type {header['e_type']})")

        names = self.section_names()
        symbols = self.symbols(names)
        maps = self.maps(symbols)
        programs = self.programs(names, symbols, {m.name for m in maps})
        if not programs:
            raise self.fail("no program: no executable section holds instructions")
        return BpfObject(
            path=self.path,
            license=self.license(),
            kern_version=self.kern_version(),
            programs=programs,
            maps=maps,
            symbols=symbols,
        )

    def section_names(self) -> dict[int, str]:
        return {index: section.name for index, section in enumerate(self.elf.iter_sections())}

    def symbols(self, names: dict[int, str]) -> tuple[Symbol, ...]:
        table = self.elf.get_section_by_name(".symtab")
        if not isinstance(table, SymbolTableSection):
            raise self.fail("no symbol table (.symtab); do not strip BPF objects")
        result = []
        for symbol in table.iter_symbols():
            shndx = symbol["st_shndx"]
            result.append(
                Symbol(
                    name=symbol.name,
                    section=names.get(shndx) if isinstance(shndx, int) else None,
                    value=symbol["st_value"],
                    size=symbol["st_size"],
                    kind=str(symbol["st_info"]["type"]),
                )
            )
        return tuple(result)

    def maps(self, symbols: tuple[Symbol, ...]) -> tuple[MapDef, ...]:
        section = self.elf.get_section_by_name(MAPS_SECTION)
        if section is None:
            return ()
        data = section.data()
        if len(data) != section["sh_size"]:
            raise self.fail(
                f"section maps is cut short ({len(data)} of {section['sh_size']} bytes)"
            )
        if len(data) % MAP_DEF_SIZE:
            raise self.fail(
                f"section maps holds {len(data)} bytes, not a whole number of "
                f"{MAP_DEF_SIZE}-byte struct bpf_map_def; declare maps with the five-field "
                "struct bpf_map_def"
            )
        by_offset = {s.value: s.name for s in symbols if s.section == MAPS_SECTION and s.name}
        result = []
        for offset in range(0, len(data), MAP_DEF_SIZE):
            fields = MAP_DEF.unpack_from(data, offset)
            name = by_offset.get(offset)
            if name is None:
                raise self.fail(f"no symbol names the map at offset {offset} of section maps")
            result.append(MapDef(name, offset, *fields))
        return tuple(result)

    def programs(
        self, names: dict[int, str], symbols: tuple[Symbol, ...], map_names: set[str]
    ) -> tuple[Program, ...]:
        relocations: dict[int, list[Relocation]] = {}
        for section in self.elf.iter_sections():
            if section["sh_type"] == "SHT_RELA" and self.is_program(section["sh_info"]):
                raise self.fail(
                    f"unsupported relocation section {section.name} (RELA); "
                    "only REL sections of R_BPF_64_64 are supported"
                )
            if not isinstance(section, RelocationSection) or section["sh_type"] != "SHT_REL":
                continue
            target = section["sh_info"]
            if not self.is_program(target):
                continue  # debug information and the like: nothing a loader patches
            relocations[target] = self.relocations(section, names[target], map_names)

        result = []
        for index, section in enumerate(self.elf.iter_sections()):
            if not self.is_program(index):
                continue
            insns = section.data()
            if len(insns) != section["sh_size"] or len(insns) % INSN_SIZE:
                raise self.fail(
                    f"program section {section.name} holds {len(insns)} bytes, "
                    f"not a whole number of {INSN_SIZE}-byte instructions"
                )
            relocs = tuple(relocations.get(index, ()))
            for reloc in relocs:
                self.check_target(section.name, insns, reloc)
            functions = [
                s.name
                for s in symbols
                if s.section == section.name and s.kind == "STT_FUNC" and s.value == 0
            ]
            name = functions[0] if functions and functions[0] else section.name
            result.append(Program(section.name, name, insns, relocs))
        return tuple(result)

    def is_program(self, index: int) -> bool:
        if not 0 < index < self.elf.num_sections():
            return False
        section = self.elf.get_section(index)
        return bool(
            section["sh_type"] == "SHT_PROGBITS"
            and section["sh_flags"] & 0x4  # SHF_EXECINSTR
            and section["sh_size"] > 0
        )

    def relocations(
        self, section: RelocationSection, target: str, map_names: set[str]
    ) -> list[Relocation]:
        table = self.elf.get_section(section["sh_link"])
        if not isinstance(table, SymbolTableSection):
            raise self.fail(f"relocation section {section.name} has no symbol table")
        result = []
        for entry in section.iter_relocations():
            kind = entry["r_info_type"]
            offset = entry["r_offset"]
            if kind != R_BPF_64_64:
                raise self.fail(
                    f"unsupported relocation type {kind} at {target}+{offset:#x}; "
                    f"only R_BPF_64_64 ({R_BPF_64_64}), a reference to a map, is supported"
                )
            index = entry["r_info_sym"]
            if not 0 < index < table.num_symbols():
                raise self.fail(
                    f"relocation at {target}+{offset:#x} names symbol #{index}, "
                    f"which is not in the symbol table"
                )
            symbol = table.get_symbol(index).name
            if symbol not in map_names:
                raise self.fail(
                    f"relocation at {target}+{offset:#x} refers to unknown symbol "
                    f"{symbol or '#' + str(index)!r}, not a map of section maps"
                )
            result.append(Relocation(offset, kind, symbol))
        return result

    def check_target(self, section: str, insns: bytes, reloc: Relocation) -> None:
        if reloc.offset % INSN_SIZE or reloc.offset + 2 * INSN_SIZE > len(insns):
            raise self.fail(
                f"relocation against {reloc.symbol} at {section}+{reloc.offset:#x} "
                f"does not point at a 16-byte immediate load inside the section"
            )
        if insns[reloc.offset] != LD_IMM64:
            raise self.fail(
                f"relocation against {reloc.symbol} at {section}+{reloc.offset:#x} "
                f"points at opcode {insns[reloc.offset]:#04x}, not a 64-bit immediate load"
            )

    def license(self) -> str:
        section = self.elf.get_section_by_name(LICENSE_SECTION)
        if section is None:
            raise self.fail(
                'no license section; add char _license[] SEC("license") = "GPL"; '
                "(the kernel refuses GPL-only helpers otherwise)"
            )
        raw = section.data().split(b"\0", 1)[0]
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.fail("the license section is not an ASCII string") from exc

    def kern_version(self) -> int | None:
        section = self.elf.get_section_by_name(VERSION_SECTION)
        if section is None:
            return None
        data = section.data()
        if len(data) != 4:
            raise self.fail(f"section version holds {len(data)} bytes, not one 32-bit number")
        value: int = struct.unpack("<I", data)[0]
        return value
