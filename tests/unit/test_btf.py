"""The BTF reader on objects clang builds here (tests/data/btf/) and on corrupted BTF."""

from __future__ import annotations

import dataclasses
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.bpf import btf, syscall
from harness.bpf.btf import BtfKind
from harness.build import BPF_CFLAGS, include_flags
from harness.errors import BpfObjectError
from harness.proc import SubprocessRunner, require

DATA = Path(__file__).resolve().parent.parent / "data" / "btf"

# From include/uapi/linux/bpf.h, as the C sources use them.
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_F_NO_PREALLOC = 1


@dataclass(frozen=True)
class Compiled:
    """What a loader would take from one object's ELF for the BTF reader."""

    btf: bytes
    ext: bytes
    section_sizes: dict[str, int]
    var_offsets: dict[str, int]
    maps_relocations: tuple[tuple[int, str], ...]  # (offset in .maps, symbol)


def compile_object(name: str, out_dir: Path, target: str = "bpf") -> Compiled:
    """Compile ``tests/data/btf/<name>_kern.c`` with BTF and read what the reader needs."""
    output = out_dir / f"{name}_{target}_kern.o"
    argv = [
        require("clang", "clang"),
        "-g",
        *BPF_CFLAGS,
        "-target",
        target,  # the last -target wins
        *include_flags(None),
        "-c",
        str(DATA / f"{name}_kern.c"),
        "-o",
        str(output),
    ]
    SubprocessRunner().run(argv)
    elf = ELFFile(io.BytesIO(output.read_bytes()))
    symtab = elf.get_section_by_name(".symtab")
    assert isinstance(symtab, SymbolTableSection)
    relocations: list[tuple[int, str]] = []
    rel_maps = elf.get_section_by_name(".rel.maps")
    if isinstance(rel_maps, RelocationSection):
        relocations = [
            (r["r_offset"], symtab.get_symbol(r["r_info_sym"]).name)
            for r in rel_maps.iter_relocations()
        ]
    btf_section = elf.get_section_by_name(".BTF")
    ext_section = elf.get_section_by_name(".BTF.ext")
    assert btf_section is not None and ext_section is not None, "clang -g gives both"
    return Compiled(
        btf=btf_section.data(),
        ext=ext_section.data(),
        section_sizes={s.name: s["sh_size"] for s in elf.iter_sections()},
        var_offsets={s.name: s["st_value"] for s in symtab.iter_symbols() if s.name},
        maps_relocations=tuple(relocations),
    )


def laid_out(compiled: Compiled) -> btf.Btf:
    return btf.with_layout(
        btf.parse_btf(compiled.btf), compiled.section_sizes, compiled.var_offsets
    )


@pytest.fixture(scope="module")
def maps_object(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    return compile_object("maps", tmp_path_factory.mktemp("btf"))


@pytest.fixture(scope="module")
def tags_object(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    return compile_object("tags", tmp_path_factory.mktemp("btf"))


def by_name(maps: tuple[btf.BtfMapDef, ...]) -> dict[str, btf.BtfMapDef]:
    return {m.name: m for m in maps}


def one_line_error(data: bytes, match: str) -> str:
    """The message of the BpfObjectError reading ``data`` (and its maps) raises."""
    with pytest.raises(BpfObjectError, match=match) as caught:
        btf.map_defs(btf.parse_btf(data, "test_kern.o .BTF"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("test_kern.o .BTF: ")
    return message


# --- Reading the types ---------------------------------------------------------------


def test_types_are_read_with_their_kind_name_size_and_members(maps_object: Compiled) -> None:
    types = btf.parse_btf(maps_object.btf)

    flow_key = types.find("flow_key", BtfKind.STRUCT)
    assert flow_key is not None
    assert flow_key.size == 16
    assert [(m.name, m.bit_offset) for m in flow_key.members] == [
        ("saddr", 0),
        ("daddr", 32),
        ("sport", 64),
        ("dport", 80),
        ("proto", 96),
    ]
    assert types.resolve(flow_key.members[2].type_id).name == "unsigned short"
    stats = types.find("flow_stats", BtfKind.STRUCT)
    assert stats is not None
    last_seen = types.type(stats.members[2].type_id)
    assert last_seen.kind == BtfKind.ARRAY and last_seen.array is not None
    assert last_seen.array.nelems == 3
    assert types.size_of(last_seen.id) == 12
    long_type = types.find("long", BtfKind.INT)
    assert long_type is not None and long_type.int_bits == 64
    classify = types.find("classify", BtfKind.FUNC)
    assert classify is not None
    proto = types.type(classify.type_id)
    assert proto.kind == BtfKind.FUNC_PROTO
    assert [p.name for p in proto.params] == ["skb"]


def test_encoding_what_was_read_gives_the_same_bytes(maps_object: Compiled) -> None:
    assert btf.encode_btf(btf.parse_btf(maps_object.btf)) == maps_object.btf


def test_big_endian_btf_reads_the_same_and_encodes_little_endian(
    maps_object: Compiled, tmp_path: Path
) -> None:
    big = compile_object("maps", tmp_path, target="bpfeb")
    assert big.btf[:2] == b"\xeb\x9f"

    big_btf = btf.parse_btf(big.btf)
    little_btf = btf.parse_btf(maps_object.btf)

    assert big_btf.byteorder == "big"
    assert big_btf.types == little_btf.types
    assert btf.map_defs(laid_out(big)) == btf.map_defs(laid_out(maps_object))
    assert btf.encode_btf(big_btf, "little") == maps_object.btf


# --- Maps ----------------------------------------------------------------------------


def test_array_map_of_u32_to_long(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    counters = by_name(btf.map_defs(types))["counters"]

    assert (counters.type, counters.key_size, counters.value_size) == (BPF_MAP_TYPE_ARRAY, 4, 8)
    assert (counters.max_entries, counters.flags) == (256, 0)
    assert types.type(counters.key_type_id).name == "counter_index"  # the typedef as written
    assert types.resolve(counters.key_type_id).name == "unsigned int"
    assert types.type(counters.value_type_id).name == "long"
    assert counters.offset == maps_object.var_offsets["counters"]
    assert counters.size == 32
    assert counters.inner is None and counters.values_offset is None
    assert counters.btf_type_ids == (counters.key_type_id, counters.value_type_id)


def test_hash_map_with_struct_key_and_value_and_flags(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    flows = by_name(btf.map_defs(types))["flows"]

    assert (flows.type, flows.max_entries, flows.flags) == (
        BPF_MAP_TYPE_HASH,
        1024,
        BPF_F_NO_PREALLOC,
    )
    assert (flows.key_size, flows.value_size) == (16, 32)
    assert types.type(flows.key_type_id).name == "flow_key"
    value = types.type(flows.value_type_id)
    assert value.kind == BtfKind.CONST
    assert types.resolve(value.id).name == "flow_stats"


def test_map_given_by_sizes_has_no_type_ids(maps_object: Compiled) -> None:
    sized = by_name(btf.map_defs(laid_out(maps_object)))["sized"]

    assert (sized.type, sized.key_size, sized.value_size, sized.max_entries) == (
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        24,
        4,
    )
    assert (sized.key_type_id, sized.value_type_id) == (0, 0)
    assert sized.btf_type_ids is None


def test_prog_array_records_where_its_initial_programs_go(maps_object: Compiled) -> None:
    maps = btf.map_defs(laid_out(maps_object))
    jumps = by_name(maps)["jumps"]

    assert (jumps.type, jumps.max_entries, jumps.key_size, jumps.value_size) == (
        BPF_MAP_TYPE_PROG_ARRAY,
        8,
        4,
        4,
    )
    assert jumps.inner is None
    assert jumps.values_offset == jumps.offset + 24  # after three 8-byte __uint members
    assert jumps.initial_slots == 3  # values = { [2] = &classify }
    ((offset, symbol),) = maps_object.maps_relocations
    assert symbol == "classify"
    assert btf.map_slot(maps, offset) == (jumps, 2)


def test_map_in_map_defines_its_inner_map(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    outer = by_name(btf.map_defs(types))["outer"]

    assert (outer.type, outer.max_entries, outer.key_size, outer.value_size) == (
        BPF_MAP_TYPE_ARRAY_OF_MAPS,
        2,
        4,
        4,
    )
    assert outer.initial_slots == 0
    assert outer.key_type_id and not outer.value_type_id
    assert outer.btf_type_ids is None  # a key type alone: the kernel refuses it
    inner = outer.inner
    assert inner is not None
    assert (inner.name, inner.type, inner.key_size, inner.value_size, inner.max_entries) == (
        "outer.inner",
        BPF_MAP_TYPE_ARRAY,
        4,
        8,
        16,
    )
    assert types.type(inner.value_type_id).name == "__u64"


def test_maps_are_listed_by_offset_once_laid_out(maps_object: Compiled) -> None:
    maps = btf.map_defs(laid_out(maps_object))

    assert [(m.name, m.offset) for m in maps] == sorted(
        ((m.name, maps_object.var_offsets[m.name]) for m in maps), key=lambda pair: pair[1]
    )
    assert {m.name for m in maps} == {"counters", "flows", "sized", "jumps", "outer"}


def test_relocation_outside_any_values_is_an_error(maps_object: Compiled) -> None:
    maps = btf.map_defs(laid_out(maps_object))
    counters = by_name(maps)["counters"]
    jumps = by_name(maps)["jumps"]

    with pytest.raises(BpfObjectError, match=r"\.maps\+0x[0-9a-f]+ is not at a slot.*jumps"):
        btf.map_slot(maps, counters.offset)
    with pytest.raises(BpfObjectError, match="not at a slot"):
        btf.map_slot(maps, (jumps.values_offset or 0) + 4)


def test_maps_of_btf_not_laid_out_is_an_error(maps_object: Compiled) -> None:
    one_line_error(maps_object.btf, r"\.maps is not laid out.*with_layout")


def test_object_without_maps_has_none(maps_object: Compiled) -> None:
    types = btf.parse_btf(maps_object.btf)
    without = dataclasses.replace(
        types, types=tuple(t for t in types.types if t.kind != BtfKind.DATASEC)
    )
    assert btf.map_defs(without) == ()


# --- Layout and what the kernel loads ------------------------------------------------


def test_layout_fills_section_sizes_and_variable_offsets(maps_object: Compiled) -> None:
    raw = btf.parse_btf(maps_object.btf)
    maps = raw.find(".maps", BtfKind.DATASEC)
    assert maps is not None and maps.size == 0  # what clang leaves to the loader

    section = laid_out(maps_object).find(".maps", BtfKind.DATASEC)

    assert section is not None
    assert section.size == maps_object.section_sizes[".maps"]
    offsets = [s.offset for s in section.secinfos]
    assert offsets == sorted(offsets)
    names = [laid_out(maps_object).type(s.type_id).name for s in section.secinfos]
    assert offsets == [maps_object.var_offsets[n] for n in names]


def test_layout_without_a_symbol_for_a_variable_is_an_error(maps_object: Compiled) -> None:
    offsets = {k: v for k, v in maps_object.var_offsets.items() if k != "flows"}
    with pytest.raises(BpfObjectError, match=r"variable 'flows' of section '\.maps' has no symbol"):
        btf.with_layout(btf.parse_btf(maps_object.btf), maps_object.section_sizes, offsets)


def test_layout_without_a_section_size_is_an_error(maps_object: Compiled) -> None:
    sizes = {k: v for k, v in maps_object.section_sizes.items() if k != "license"}
    with pytest.raises(BpfObjectError, match=r"section 'license' has size 0"):
        btf.with_layout(btf.parse_btf(maps_object.btf), sizes, maps_object.var_offsets)


def test_kernel_btf_is_the_laid_out_btf_when_every_kind_is_known(maps_object: Compiled) -> None:
    data = btf.kernel_btf(
        btf.parse_btf(maps_object.btf),
        section_sizes=maps_object.section_sizes,
        var_offsets=maps_object.var_offsets,
        release=(5, 10),
    )

    assert data != maps_object.btf
    assert btf.parse_btf(data).types == laid_out(maps_object).types


def test_kinds_follow_the_release_that_brought_them() -> None:
    assert BtfKind.DATASEC in btf.kinds_supported_by((5, 10))
    assert btf.REWRITTEN_KINDS.isdisjoint(btf.kinds_supported_by((5, 10)))
    assert btf.kinds_supported_by((5, 16)) & btf.REWRITTEN_KINDS == {
        BtfKind.FLOAT,
        BtfKind.DECL_TAG,
    }
    assert btf.kinds_supported_by((6, 1)) >= btf.REWRITTEN_KINDS
    assert BtfKind.VAR not in btf.kinds_supported_by((5, 1))


def test_sanitizing_for_5_10_removes_new_kinds_and_keeps_ids_and_sizes(
    tags_object: Compiled,
) -> None:
    types = laid_out(tags_object)
    assert {BtfKind.FLOAT, BtfKind.DECL_TAG, BtfKind.TYPE_TAG} <= {t.kind for t in types.types}

    old = btf.sanitized(types, btf.kinds_supported_by((5, 10)))

    assert not {t.kind for t in old.types} & btf.REWRITTEN_KINDS
    assert len(old.types) == len(types.types)
    sample = old.find("sample", BtfKind.STRUCT)
    assert sample is not None
    assert [old.size_of(m.type_id) for m in sample.members] == [4, 8, 8]
    assert old.find("float", BtfKind.STRUCT) is not None
    assert btf.map_defs(old) == btf.map_defs(types)
    reread = btf.parse_btf(btf.encode_btf(old))
    assert reread.types == old.types
    assert btf.sanitized(types, btf.kinds_supported_by((6, 1))) == types


def test_sanitizing_enum64_keeps_its_size(maps_object: Compiled) -> None:
    # clang 14 cannot emit ENUM64: append one, named with an existing string.
    types = btf.parse_btf(maps_object.btf)
    long_type = types.find("long", BtfKind.INT)
    assert long_type is not None
    enum64 = btf.BtfType(
        id=len(types.types) + 1,
        kind=BtfKind.ENUM64,
        name="long",
        name_off=long_type.name_off,
        kind_flag=True,
        vlen=1,
        size_or_type=8,
        enumerators=(btf.BtfEnumerator("long", long_type.name_off, 1 << 40),),
    )
    with_enum64 = btf.parse_btf(
        btf.encode_btf(dataclasses.replace(types, types=(*types.types, enum64)))
    )
    assert with_enum64.types[-1] == enum64

    old = btf.sanitized(with_enum64, btf.kinds_supported_by((5, 15)))

    assert old.types[-1].kind == BtfKind.UNION
    assert old.size_of(enum64.id) == 8
    assert old.types[-1].vlen == 0 and not old.types[-1].kind_flag


def test_sanitizing_for_a_kernel_without_var_refuses(maps_object: Compiled) -> None:
    with pytest.raises(BpfObjectError, match=r"lacks BTF kinds VAR, DATASEC.*without BTF"):
        btf.sanitized(btf.parse_btf(maps_object.btf), btf.kinds_supported_by((5, 1)))


# --- .BTF.ext ------------------------------------------------------------------------


def test_ext_gives_each_program_its_function_and_lines(maps_object: Compiled) -> None:
    types = btf.parse_btf(maps_object.btf)

    ext = btf.parse_btf_ext(maps_object.ext, types)

    assert set(ext.func_info) == {"socket/1", "socket"}
    ((classify,),) = [ext.func_info["socket/1"]]
    assert classify.insn == 0
    assert types.type(classify.type_id).name == "classify"
    assert types.type(ext.func_info["socket"][0].type_id).name == "count"
    lines = ext.line_info["socket"]
    assert lines and all(types.string(line.file_name_off).endswith("maps_kern.c") for line in lines)
    assert [line.insn for line in lines] == sorted(line.insn for line in lines)
    assert any("bpf_map_lookup_elem(&counters" in types.string(line.line_off) for line in lines)
    assert btf.func_info_bytes(ext.func_info["socket"]) == struct.pack(
        "<II", 0, ext.func_info["socket"][0].type_id
    )
    assert len(btf.line_info_bytes(lines)) == syscall.LINE_INFO_SIZE * len(lines)
    assert not any(ext.core_relocations.values())


def test_ext_with_wrong_magic_is_an_error(maps_object: Compiled) -> None:
    types = btf.parse_btf(maps_object.btf)
    with pytest.raises(BpfObjectError, match=r"^\.BTF\.ext: wrong magic 0000"):
        btf.parse_btf_ext(b"\0\0" + maps_object.ext[2:], types)


# --- Malformed BTF -------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 8, 23])
def test_truncated_header(maps_object: Compiled, length: int) -> None:
    one_line_error(maps_object.btf[:length], rf"header cut short \({length} of 24 bytes\)")


@pytest.mark.parametrize("length", [24, 100, -1])
def test_truncated_sections(maps_object: Compiled, length: int) -> None:
    one_line_error(maps_object.btf[:length], r"runs past the end of the BTF data")


def test_wrong_magic(maps_object: Compiled) -> None:
    one_line_error(b"\x7fE" + maps_object.btf[2:], r"wrong BTF magic 7f45")


def test_wrong_version(maps_object: Compiled) -> None:
    data = maps_object.btf[:2] + b"\x02" + maps_object.btf[3:]
    one_line_error(data, "BTF version 2, this reader knows version 1")


def with_type(types: btf.Btf, new: btf.BtfType) -> btf.Btf:
    """``types`` with the type of ``new``'s id replaced by ``new``, unchecked."""
    return dataclasses.replace(
        types, types=tuple(new if t.id == new.id else t for t in types.types)
    )


def replaced(compiled: Compiled, type_id: int, **changes: Any) -> bytes:
    """The BTF with one type's fields changed, encoded without any check."""
    types = btf.parse_btf(compiled.btf)
    new = dataclasses.replace(types.type(type_id), **changes)
    return btf.encode_btf(with_type(types, new))


def map_struct(types: btf.Btf, name: str) -> btf.BtfType:
    """The struct that defines the map ``name``."""
    var = types.find(name, BtfKind.VAR)
    assert var is not None, name
    return types.resolve(var.type_id)


def first(compiled: Compiled, kind: BtfKind) -> btf.BtfType:
    return next(t for t in btf.parse_btf(compiled.btf).types if t.kind == kind)


def test_type_id_out_of_range(maps_object: Compiled) -> None:
    pointer = first(maps_object, BtfKind.PTR)
    data = replaced(maps_object, pointer.id, size_or_type=100_000)
    one_line_error(data, rf"type #{pointer.id} PTR: type is type id 100000, out of range")


def test_member_type_id_out_of_range(maps_object: Compiled) -> None:
    flow_key = btf.parse_btf(maps_object.btf).find("flow_key", BtfKind.STRUCT)
    assert flow_key is not None
    members = (dataclasses.replace(flow_key.members[0], type_id=5000), *flow_key.members[1:])
    data = replaced(maps_object, flow_key.id, members=members)
    one_line_error(data, r"STRUCT 'flow_key': member 'saddr' is type id 5000, out of range")


def test_string_offset_out_of_range(maps_object: Compiled) -> None:
    length = len(btf.parse_btf(maps_object.btf).strings)
    data = replaced(maps_object, 2, name_off=length + 7)
    one_line_error(
        data,
        rf"type #2 \(at byte 12 of the types\) has a name at string offset {length + 7}, "
        "outside the string section",
    )


def test_unknown_kind(maps_object: Compiled) -> None:
    data = replaced(maps_object, 2, kind=btf.BtfKind.VOID)
    one_line_error(data, r"type #2 \(at byte 12 of the types\) has unknown kind 0")


def test_type_record_cut_short(maps_object: Compiled) -> None:
    types = btf.parse_btf(maps_object.btf)
    header = bytearray(maps_object.btf[: btf.HEADER_SIZE])
    type_len, _, str_len = struct.unpack_from("<III", header, 12)
    # Keep the strings, move them 4 bytes earlier, cut the last type's last word.
    struct.pack_into("<III", header, 12, type_len - 4, type_len - 4, str_len)
    data = bytes(header) + maps_object.btf[24 : 24 + type_len - 4] + types.strings
    one_line_error(data, rf"type #{len(types.types)} .* is cut short")


def test_loop_of_typedefs(maps_object: Compiled) -> None:
    typedef = first(maps_object, BtfKind.TYPEDEF)
    data = replaced(maps_object, typedef.id, size_or_type=typedef.id)
    one_line_error(data, rf"#{typedef.id} TYPEDEF '{typedef.name}' refers to itself")


def test_loop_through_a_pointer_and_an_array(maps_object: Compiled) -> None:
    # Type 1 is the PTR to the ARRAY of type 3 (`int (*type)[3]`): close the loop there.
    types = btf.parse_btf(maps_object.btf)
    array = types.type(types.type(1).type_id)
    assert array.array is not None
    data = replaced(maps_object, array.id, array=dataclasses.replace(array.array, type_id=1))
    one_line_error(data, "refers to itself through a chain")


def test_maps_variable_that_is_not_a_struct(tmp_path: Path) -> None:
    # clang 14 gives a non-struct variable of .maps the type void, not int.
    compiled = compile_object("not_struct", tmp_path)
    with pytest.raises(
        BpfObjectError, match=r"map 'stray' is a VOID, not a struct; declare it as struct"
    ) as caught:
        btf.map_defs(laid_out(compiled))
    assert "\n" not in str(caught.value)


def test_maps_variable_of_an_int(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    var = types.find("counters", BtfKind.VAR)
    assert var is not None
    changed = with_type(types, dataclasses.replace(var, size_or_type=2))
    assert types.type(2).kind == BtfKind.INT
    with pytest.raises(BpfObjectError, match=r"map 'counters' is a INT, not a struct"):
        btf.map_defs(changed)


def test_map_member_not_declared_with_uint(tmp_path: Path) -> None:
    compiled = compile_object("bad_member", tmp_path)
    with pytest.raises(
        BpfObjectError, match=r"map 'plain': member 'max_entries' is not declared with __uint"
    ):
        btf.map_defs(laid_out(compiled))


def test_values_declared_before_the_map_type_are_read_the_same(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    jumps = map_struct(types, "jumps")
    assert [m.name for m in jumps.members][0::3] == ["type", "values"]
    values_first = (jumps.members[3], *jumps.members[:3])

    changed = with_type(types, dataclasses.replace(jumps, members=values_first))

    assert by_name(btf.map_defs(changed))["jumps"] == by_name(btf.map_defs(types))["jumps"]


def test_values_on_a_map_that_holds_neither_programs_nor_maps(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    jumps = map_struct(types, "jumps")
    counters = map_struct(types, "counters")
    assert counters.members[0].name == "type"  # BPF_MAP_TYPE_ARRAY
    members = (counters.members[0], *jumps.members[1:])

    changed = with_type(types, dataclasses.replace(jumps, members=members))

    with pytest.raises(
        BpfObjectError, match=r"map 'jumps': values are programs but the map is of type 2"
    ):
        btf.map_defs(changed)


def test_map_with_an_unknown_member(maps_object: Compiled) -> None:
    types = laid_out(maps_object)
    definition = map_struct(types, "counters")
    renamed = (dataclasses.replace(definition.members[0], name="kind"), *definition.members[1:])
    changed = with_type(types, dataclasses.replace(definition, members=renamed))
    with pytest.raises(
        BpfObjectError, match=r"map 'counters': unknown member 'kind' \(known: type"
    ):
        btf.map_defs(changed)


def test_key_size_disagreeing_with_key_type(maps_object: Compiled) -> None:
    # flows' key is a flow_key (16 bytes): add the `sized` map's __uint(key_size, 4).
    types = laid_out(maps_object)
    sized = map_struct(types, "sized")
    flows = map_struct(types, "flows")
    assert sized.members[1].name == "key_size"
    members = (*flows.members, sized.members[1])
    changed = with_type(types, dataclasses.replace(flows, members=members, vlen=len(members)))
    with pytest.raises(
        BpfObjectError,
        match=r"map 'flows': key_size is 4 but its type #\d+ STRUCT 'flow_key' is 16",
    ):
        btf.map_defs(changed)


# --- Fuzzing -------------------------------------------------------------------------


def run_everything(compiled: Compiled, data: bytes, ext: bytes) -> None:
    """Everything a loader would do with the bytes; only a BpfObjectError may come out."""
    try:
        types = btf.parse_btf(data, "mutated .BTF")
        types = btf.with_layout(types, compiled.section_sizes, compiled.var_offsets)
        maps = btf.map_defs(types)
        for map_def in maps:
            if map_def.key_type_id:
                types.size_of(map_def.key_type_id)
        for offset, _ in compiled.maps_relocations:
            btf.map_slot(maps, offset)
        btf.encode_btf(btf.sanitized(types, btf.kinds_supported_by((5, 10))))
        ext_info = btf.parse_btf_ext(ext, types)
        for records in ext_info.func_info.values():
            btf.func_info_bytes(records)
        for lines in ext_info.line_info.values():
            btf.line_info_bytes(lines)
    except BpfObjectError as exc:
        assert "\n" not in str(exc)


def mutate(data: bytes, edits: list[tuple[int, int, bool]], cut: int | None) -> bytes:
    """Bytes replaced, or 32-bit words (aligned, so type ids and offsets) replaced."""
    image = bytearray(data)
    for position, value, word in edits:
        if word:
            at = (position * 4) % (len(image) - 3)
            at -= at % 4
            struct.pack_into("<I", image, at, value)
        else:
            image[position % len(image)] = value & 0xFF
    return bytes(image[:cut] if cut is not None else image)


_EDITS = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 8), st.integers(min_value=0)),  # the header often
        st.one_of(st.integers(0, 130), st.integers(0, 2**32 - 1)),  # small ids, any word
        st.booleans(),
    ),
    max_size=6,
)
_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(edits=_EDITS, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4000)))
def test_mutated_btf_gives_a_result_or_a_bpf_object_error(
    maps_object: Compiled, edits: list[tuple[int, int, bool]], cut: int | None
) -> None:
    run_everything(maps_object, mutate(maps_object.btf, edits, cut), maps_object.ext)


@_FUZZ
@given(edits=_EDITS, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=600)))
def test_mutated_btf_ext_gives_a_result_or_a_bpf_object_error(
    maps_object: Compiled, edits: list[tuple[int, int, bool]], cut: int | None
) -> None:
    run_everything(maps_object, maps_object.btf, mutate(maps_object.ext, edits, cut))
