"""Read a BPF ELF object into plain values: programs, map definitions, relocations, license.

Programs are the functions of executable sections (``socket1``, ``socket/0``, ...):
a section holds one program, or several side by side, each its ``STT_FUNC`` symbol's
bytes (several programs in one ``SEC("socket")``, as libbpf allows).
Map references are ``R_BPF_64_64`` relocations on 64-bit immediate loads, each given to
the program whose bytes it points into; the license is the string in a section named
``license``. Maps come in two kinds, both read into :class:`MapDef`:

* classic: ``struct bpf_map_def`` in a section named ``maps`` (five 32-bit fields,
  20 bytes each), as the kernel's samples/bpf declared them until 2019;
* BTF-defined: variables of section ``.maps`` (built with ``clang -g``), whose
  definitions are in the object's ``.BTF`` (:func:`harness.bpf.btf.map_defs`). The
  first contents of a prog array or map of maps declared with ``__array(values, ...)``
  are ``R_BPF_64_ABS64`` relocations of ``.maps``, read into :class:`Slot`: each names
  the map, or the function whose first instruction starts the program.

The ``.BTF`` and ``.BTF.ext`` sections are parsed here, so that a malformed one is an
error of reading the object, before anything is loaded.

Everything pyelftools is asked is asked here, inside one ``try``: a malformed file
can make it fail in many ways (``ELFError``, ``struct.error``, ``IndexError`` ...), and
every one of them becomes a :class:`BpfObjectError` naming the file.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, Symbol as ElfSymbol, SymbolTableSection

from harness.bpf.btf import (
    BTF_MAPS_SECTION,
    Btf,
    BtfExt,
    BtfMapDef,
    map_defs,
    map_slot,
    parse_btf,
    parse_btf_ext,
    with_layout,
)
from harness.errors import BpfObjectError
from harness.loaders.protocol import program_name, split_program

#: ``e_machine`` of a BPF object.
EM_BPF = 247
#: The one relocation type the loaders apply to programs: a 64-bit immediate load of a map.
R_BPF_64_64 = 1
#: A 64-bit address in data: in ``.maps``, a program or map that a slot starts with.
R_BPF_64_ABS64 = 2
#: A call to a function of another section (a subprogram in ``.text``).
R_BPF_64_32 = 10
#: ``struct bpf_map_def``: type, key_size, value_size, max_entries, map_flags.
MAP_DEF = struct.Struct("<5I")
MAP_DEF_SIZE = MAP_DEF.size
#: One BPF instruction.
INSN_SIZE = 8
#: Opcode of the first half of a 64-bit immediate load (BPF_LD | BPF_IMM | BPF_DW).
LD_IMM64 = 0x18
#: Opcode of a call (BPF_JMP | BPF_CALL); with src_reg BPF_PSEUDO_CALL, of a BPF function.
CALL = 0x85
BPF_PSEUDO_CALL = 1

MAPS_SECTION = "maps"
BTF_SECTION = ".BTF"
BTF_EXT_SECTION = ".BTF.ext"
LICENSE_SECTION = "license"
VERSION_SECTION = "version"

# Everything a corrupted file can make pyelftools raise while it is being read.
_PARSE_ERRORS = (
    ELFError,
    zlib.error,  # a section flagged SHF_COMPRESSED that is not zlib data
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
    """One map: a ``struct bpf_map_def`` of ``maps``, or a BTF-defined map of ``.maps``.

    A BTF-defined map keeps its whole definition in ``btf`` (BTF type ids, inner map,
    NUMA node ...); the fields before it are the same numbers.
    """

    name: str
    offset: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    btf: BtfMapDef | None = None

    @classmethod
    def from_btf(cls, definition: BtfMapDef) -> MapDef:
        return cls(
            definition.name,
            definition.offset,
            type=definition.type,
            key_size=definition.key_size,
            value_size=definition.value_size,
            max_entries=definition.max_entries,
            flags=definition.flags,
            btf=definition,
        )


@dataclass(frozen=True)
class Slot:
    """A slot of a prog array or map of maps that the object declares filled.

    ``target`` is the program (its :attr:`Program.key`: ``SECTION`` or
    ``SECTION#FUNCTION``) of a prog array, or the map's name of a map of maps.
    """

    map: str
    index: int
    target: str


@dataclass(frozen=True)
class Relocation:
    """A reference from an instruction of a program to a map."""

    offset: int  # byte offset of the instruction in its program
    type: int
    symbol: str


@dataclass(frozen=True)
class Program:
    """The instructions of one program, and the map references in them.

    A program is a whole section, or, where a section holds several, one function's
    bytes of it (``shared``): ``offset`` is where they start in the section (which
    ``.BTF.ext`` counts its instructions from), and the relocations' offsets are the
    program's own.
    """

    section: str
    name: str  # the function's symbol, or the section name when there is none
    insns: bytes
    relocations: tuple[Relocation, ...]
    offset: int = 0
    shared: bool = False

    @property
    def key(self) -> str:
        """The loader protocol's name of exactly this program: SECTION or SECTION#FUNCTION."""
        return program_name(self.section, self.name if self.shared else "")


@dataclass(frozen=True)
class BpfObject:
    """Everything a loader needs from one object file."""

    path: Path
    license: str
    kern_version: int | None
    programs: tuple[Program, ...]
    maps: tuple[MapDef, ...]
    symbols: tuple[Symbol, ...]
    #: The parsed ``.BTF`` as clang wrote it (not laid out), or None without one.
    btf: Btf | None = None
    #: Function and line information of ``.BTF.ext``, or None without one.
    btf_ext: BtfExt | None = None
    #: What :func:`harness.bpf.btf.kernel_btf` lays the BTF out with: every section's
    #: size, every named object symbol's offset in its section.
    section_sizes: Mapping[str, int] = field(default_factory=dict)
    var_offsets: Mapping[str, int] = field(default_factory=dict)
    slots: tuple[Slot, ...] = ()

    def program(self, name: str) -> Program:
        """The program of a PROGRAM name of the protocol: ``SECTION`` (the one program of
        that section) or ``SECTION#FUNCTION``."""
        section, function = split_program(name)
        found = [p for p in self.programs if p.section == section]
        if not found:
            have = ", ".join(p.key for p in self.programs) or "none"
            raise BpfObjectError(
                f"{self.path}: no program section {section!r} (programs: {have}); "
                "rebuild the object with `invoke build`, or name one of its sections"
            )
        if function:
            for program in found:
                if program.name == function:
                    return program
            raise BpfObjectError(
                f"{self.path}: section {section} has no program of function {function!r} "
                f"(its programs: {', '.join(p.name for p in found)})"
            )
        if len(found) > 1:
            raise BpfObjectError(
                f"{self.path}: section {section} holds {len(found)} programs "
                f"({', '.join(p.name for p in found)}); name one by its function, as "
                f"{found[0].key}"
            )
        return found[0]

    def map(self, name: str) -> MapDef:
        for map_def in self.maps:
            if map_def.name == name:
                return map_def
        have = ", ".join(m.name for m in self.maps) or "none"
        sections = " or ".join(
            sorted({BTF_MAPS_SECTION if m.btf else MAPS_SECTION for m in self.maps})
        )
        raise BpfObjectError(
            f"{self.path}: no map {name!r} in section {sections or MAPS_SECTION} (maps: {have}); "
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
        section_sizes = {s.name: s["sh_size"] for s in self.elf.iter_sections() if s.name}
        var_offsets = {
            s.name: s.value for s in symbols if s.name and s.section and s.kind == "STT_OBJECT"
        }
        types = self.btf()
        ext = self.btf_ext(types)
        btf_maps = self.btf_maps(types, section_sizes, var_offsets)
        maps = self.maps(symbols) + tuple(MapDef.from_btf(m) for m in btf_maps)
        programs = self.programs(names, symbols, maps)
        if not programs:
            raise self.fail("no program: no executable section holds instructions")
        return BpfObject(
            path=self.path,
            license=self.license(),
            kern_version=self.kern_version(),
            programs=programs,
            maps=maps,
            symbols=symbols,
            btf=types,
            btf_ext=ext,
            section_sizes=section_sizes,
            var_offsets=var_offsets,
            slots=self.slots(btf_maps, programs),
        )

    def btf(self) -> Btf | None:
        section = self.elf.get_section_by_name(BTF_SECTION)
        if section is None:
            return None
        return parse_btf(self.whole(section), f"{self.path} {BTF_SECTION}")

    def btf_ext(self, types: Btf | None) -> BtfExt | None:
        section = self.elf.get_section_by_name(BTF_EXT_SECTION)
        if section is None or types is None:
            return None
        return parse_btf_ext(self.whole(section), types, f"{self.path} {BTF_EXT_SECTION}")

    def whole(self, section: Section) -> bytes:
        data: bytes = section.data()
        if len(data) != section["sh_size"]:
            raise self.fail(
                f"section {section.name} is cut short ({len(data)} of {section['sh_size']} "
                "bytes); rebuild the object"
            )
        return data

    def btf_maps(
        self,
        types: Btf | None,
        section_sizes: Mapping[str, int],
        var_offsets: Mapping[str, int],
    ) -> tuple[BtfMapDef, ...]:
        size = section_sizes.get(BTF_MAPS_SECTION)
        if size is None:
            return ()
        if types is None:
            raise self.fail(
                f"section {BTF_MAPS_SECTION} declares BTF-defined maps but the object has no "
                f"{BTF_SECTION} section; compile it with clang -g"
            )
        maps = map_defs(with_layout(types, section_sizes, var_offsets))
        if size and not maps:
            raise self.fail(
                f"section {BTF_MAPS_SECTION} holds {size} bytes but {BTF_SECTION} describes "
                f"no map in it; compile the object with clang -g and do not strip its BTF"
            )
        return maps

    def slots(self, maps: tuple[BtfMapDef, ...], programs: tuple[Program, ...]) -> tuple[Slot, ...]:
        """The slots ``.rel.maps`` fills: each relocation is a pointer in a map's ``values``."""
        index = next(
            (i for i, s in enumerate(self.elf.iter_sections()) if s.name == BTF_MAPS_SECTION),
            None,
        )
        result: list[Slot] = []
        for section in self.elf.iter_sections():
            if not isinstance(section, RelocationSection) or section["sh_info"] != index:
                continue
            table = self.symbol_table(section)
            for entry in section.iter_relocations():
                where = f"{BTF_MAPS_SECTION}+{entry['r_offset']:#x}"
                if entry["r_info_type"] != R_BPF_64_ABS64:
                    raise self.fail(
                        f"unsupported relocation type {entry['r_info_type']} at {where}; "
                        f"only R_BPF_64_ABS64 ({R_BPF_64_ABS64}), a program or map a slot "
                        "starts with, is supported there"
                    )
                symbol = self.symbol(table, entry["r_info_sym"], where)
                try:
                    map_def, slot = map_slot(maps, entry["r_offset"])
                except BpfObjectError as exc:
                    raise self.fail(str(exc)) from exc
                if slot >= map_def.max_entries:
                    raise self.fail(
                        f"map {map_def.name} declares a value at index {slot} but has "
                        f"{map_def.max_entries} entries"
                    )
                result.append(Slot(map_def.name, slot, self.slot_target(map_def, symbol, programs)))
        return tuple(result)

    def slot_target(
        self, map_def: BtfMapDef, symbol: ElfSymbol, programs: tuple[Program, ...]
    ) -> str:
        name = symbol.name
        if map_def.inner is not None:
            section = (
                self.elf.get_section(symbol["st_shndx"])
                if isinstance(symbol["st_shndx"], int)
                else None
            )
            if section is None or section.name != BTF_MAPS_SECTION:
                raise self.fail(
                    f"map {map_def.name} declares {name!r} as a value, which is not a map of "
                    f"section {BTF_MAPS_SECTION}"
                )
            return str(name)
        shndx = symbol["st_shndx"]
        home = self.elf.get_section(shndx).name if isinstance(shndx, int) else None
        for program in programs:
            if program.section == home and program.offset == symbol["st_value"]:
                return program.key
        where = f"{home}+{symbol['st_value']:#x}" if home else "no section"
        raise self.fail(
            f"prog array {map_def.name} declares {name!r} as a value, which is not a "
            f"program: no program of the object starts there ({where}); its programs are "
            f"{', '.join(p.key for p in programs) or 'none'}"
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
        self, names: dict[int, str], symbols: tuple[Symbol, ...], maps: tuple[MapDef, ...]
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
            relocations[target] = self.relocations(section, names[target], maps)

        result: list[Program] = []
        for index, section in enumerate(self.elf.iter_sections()):
            if not self.is_program(index):
                continue
            insns = section.data()
            if len(insns) != section["sh_size"] or len(insns) % INSN_SIZE:
                raise self.fail(
                    f"program section {section.name} holds {len(insns)} bytes, "
                    f"not a whole number of {INSN_SIZE}-byte instructions"
                )
            relocs = relocations.get(index, [])
            for reloc in relocs:
                self.check_target(section.name, insns, reloc)
            result += self.split(section.name, insns, symbols, relocs)
        return tuple(result)

    def split(
        self, section: str, insns: bytes, symbols: tuple[Symbol, ...], relocs: list[Relocation]
    ) -> list[Program]:
        """The programs of one section: one per function symbol, each its own bytes.

        A section without a function symbol (hand-written instructions), or whose one
        function starts it with no size, is one program, named by its function or else
        its section. Each relocation goes to the program it points into, at that
        program's offset; one that points into none is an error, as is a function
        outside its section or overlapping another, and a call that leaves its program
        (a function of the same section that is no program of its own).
        """
        functions = sorted(
            (s for s in symbols if s.section == section and s.kind == "STT_FUNC" and s.name),
            key=lambda s: s.value,
        )
        if not functions or (
            len(functions) == 1 and functions[0].value == 0 and not functions[0].size
        ):
            name = functions[0].name if functions else section
            program = Program(section, name, insns, tuple(relocs))
            self.check_calls(program)
            return [program]
        for function in functions:
            end = function.value + function.size
            if function.value % INSN_SIZE or function.size % INSN_SIZE or not function.size:
                raise self.fail(
                    f"function {function.name} of section {section} is at offset "
                    f"{function.value:#x} with size {function.size}, not a whole number of "
                    f"{INSN_SIZE}-byte instructions; rebuild the object with clang"
                )
            if end > len(insns):
                raise self.fail(
                    f"function {function.name} lies outside its section {section}: it ends at "
                    f"{end:#x}, the section holds {len(insns):#x} bytes; rebuild the object"
                )
        for before, after in itertools.pairwise(functions):
            if before.value + before.size > after.value:
                raise self.fail(
                    f"functions {before.name} and {after.name} of section {section} overlap "
                    f"({before.value:#x}+{before.size} runs past {after.value:#x}); rebuild "
                    "the object"
                )
        shared = len(functions) > 1
        programs = []
        for function in functions:
            start, end = function.value, function.value + function.size
            own = tuple(
                Relocation(r.offset - start, r.type, r.symbol)
                for r in relocs
                if start <= r.offset < end
            )
            programs.append(Program(section, function.name, insns[start:end], own, start, shared))
        for reloc in relocs:
            if not any(p.offset <= reloc.offset < p.offset + len(p.insns) for p in programs):
                spans = ", ".join(
                    f"{p.name} {p.offset:#x}-{p.offset + len(p.insns):#x}" for p in programs
                )
                raise self.fail(
                    f"relocation against {reloc.symbol} at {section}+{reloc.offset:#x} points "
                    f"into no program (the functions of {section}: {spans}); rebuild the object"
                )
        for program in programs:
            self.check_calls(program)
        return programs

    def check_calls(self, program: Program) -> None:
        """A call to a BPF function must stay inside the program: no subprograms are loaded."""
        count = len(program.insns) // INSN_SIZE
        # Only the opcode bytes are walked in Python (the guest reads objects under
        # emulation, where every executed line counts); the rare call is then decoded.
        for at, code in enumerate(program.insns[::INSN_SIZE]):
            if code != CALL or program.insns[at * INSN_SIZE + 1] >> 4 != BPF_PSEUDO_CALL:
                continue
            (imm,) = struct.unpack_from("<i", program.insns, at * INSN_SIZE + 4)
            target = at + 1 + imm
            if not 0 <= target < count:
                raise self.fail(
                    f"program {program.key} calls a function outside itself at "
                    f"+{at * INSN_SIZE:#x} (instruction {target} of {count}): the Python loader "
                    "loads no subprograms; declare the function static __always_inline"
                )

    def is_program(self, index: int) -> bool:
        if not 0 < index < self.elf.num_sections():
            return False
        section = self.elf.get_section(index)
        return bool(
            section["sh_type"] == "SHT_PROGBITS"
            and section["sh_flags"] & 0x4  # SHF_EXECINSTR
            and section["sh_size"] > 0
        )

    def symbol_table(self, section: RelocationSection) -> SymbolTableSection:
        table = self.elf.get_section(section["sh_link"])
        if not isinstance(table, SymbolTableSection):
            raise self.fail(f"relocation section {section.name} has no symbol table")
        return table

    def symbol(self, table: SymbolTableSection, index: int, where: str) -> ElfSymbol:
        if not 0 < index < table.num_symbols():
            raise self.fail(
                f"relocation at {where} names symbol #{index}, which is not in the symbol table"
            )
        return table.get_symbol(index)

    def relocations(
        self, section: RelocationSection, target: str, maps: tuple[MapDef, ...]
    ) -> list[Relocation]:
        table = self.symbol_table(section)
        insns = self.elf.get_section(section["sh_info"]).data()
        result = []
        for entry in section.iter_relocations():
            kind = entry["r_info_type"]
            offset = entry["r_offset"]
            where = f"{target}+{offset:#x}"
            if kind == R_BPF_64_32:
                raise self.fail(
                    f"call to another section's function at {where} (relocation type "
                    f"{kind}): the Python loader loads no subprograms; declare the function "
                    "static __always_inline"
                )
            if kind != R_BPF_64_64:
                raise self.fail(
                    f"unsupported relocation type {kind} at {where}; "
                    f"only R_BPF_64_64 ({R_BPF_64_64}), a reference to a map, is supported"
                )
            index = entry["r_info_sym"]
            symbol = self.symbol(table, index, where)
            name = self.map_of(symbol, maps, insns, offset)
            if name is None:
                raise self.fail(
                    f"relocation at {where} refers to unknown symbol "
                    f"{symbol.name or '#' + str(index)!r}, not a map of section "
                    f"{MAPS_SECTION} or {BTF_MAPS_SECTION}"
                )
            result.append(Relocation(offset, kind, name))
        return result

    def map_of(
        self, symbol: ElfSymbol, maps: tuple[MapDef, ...], insns: bytes, offset: int
    ) -> str | None:
        """The map a relocation's symbol names: by name, or, for a section symbol (a static
        map), by the offset the instruction's immediate holds."""
        if symbol["st_info"]["type"] != "STT_SECTION":
            return next((m.name for m in maps if m.name == symbol.name), None)
        shndx = symbol["st_shndx"]
        if not isinstance(shndx, int):
            return None
        section = self.elf.get_section(shndx).name
        if offset + INSN_SIZE > len(insns):
            return None  # check_target says what is wrong with it
        at = int.from_bytes(insns[offset + 4 : offset + 8], "little")
        for m in maps:
            if (m.btf is not None) == (section == BTF_MAPS_SECTION) and m.offset == at:
                return m.name if section in (MAPS_SECTION, BTF_MAPS_SECTION) else None
        return None

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
