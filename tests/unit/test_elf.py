"""The ELF reader on the built sockex1 object and on broken objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sockex1_objects import (
    build_host,
    compile_broken,
    compile_object,
    sockex1,
    with_machine,
    with_relocation_type,
)

from harness.bpf import elf, loader
from harness.build import check_object
from harness.errors import BpfObjectError, LoaderError


@pytest.fixture(scope="module")
def sample_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_host(tmp_path_factory.mktemp("build")).bpf_object


@pytest.fixture(scope="module")
def sample_bytes(sample_object: Path) -> bytes:
    return sample_object.read_bytes()


def parse(data: bytes) -> elf.BpfObject:
    return elf.parse_object(data, Path("test_kern.o"))


def test_built_object_has_the_sample_shape(sample_object: Path) -> None:
    obj = elf.read_object(sample_object)

    assert obj.license == "GPL"
    assert [p.section for p in obj.programs] == ["socket1"]
    program = obj.program("socket1")
    assert program.name == "count_by_protocol"
    assert len(program.insns) % 8 == 0
    assert obj.maps == (
        elf.MapDef("my_map", 0, type=2, key_size=4, value_size=8, max_entries=256, flags=0),
    )
    assert [(r.type, r.symbol) for r in program.relocations] == [(elf.R_BPF_64_64, "my_map")]
    assert program.insns[program.relocations[0].offset] == elf.LD_IMM64
    assert check_object(sockex1(), sample_object) == obj


def test_relocate_points_the_load_at_the_map_fd(sample_object: Path) -> None:
    program = elf.read_object(sample_object).program("socket1")
    at = program.relocations[0].offset

    patched = loader.relocate(program, {"my_map": 0x1234})

    assert patched[at + 1] >> 4 == loader.BPF_PSEUDO_MAP_FD
    assert patched[at + 1] & 0x0F == program.insns[at + 1] & 0x0F  # dst_reg kept
    assert int.from_bytes(patched[at + 4 : at + 8], "little") == 0x1234
    assert patched[:at] == program.insns[:at]
    assert patched[at + 8 :] == program.insns[at + 8 :]


def test_relocate_without_the_map_is_an_error(sample_object: Path) -> None:
    program = elf.read_object(sample_object).program("socket1")

    with pytest.raises(BpfObjectError, match="unknown map 'my_map'"):
        loader.relocate(program, {})


@pytest.mark.parametrize("length", [0, 3, 16, 63, 64, 200, -100, -1])
def test_truncated_object(sample_bytes: bytes, length: int) -> None:
    with pytest.raises(BpfObjectError, match=r"test_kern\.o"):
        parse(sample_bytes[:length])


def test_not_elf_at_all() -> None:
    with pytest.raises(BpfObjectError, match="not a readable ELF object"):
        parse(b"#!/bin/sh\necho this is not an object\n" * 4)


def test_wrong_machine(sample_bytes: bytes) -> None:
    x86_64 = 62
    with pytest.raises(BpfObjectError, match=r"not a BPF object.*clang -target bpf"):
        parse(with_machine(sample_bytes, x86_64))


def test_unsupported_relocation_type(sample_bytes: bytes) -> None:
    r_bpf_64_abs64 = 2
    broken = with_relocation_type(sample_bytes, ".relsocket1", r_bpf_64_abs64)

    with pytest.raises(BpfObjectError, match=r"unsupported relocation type 2 at socket1\+0x28"):
        parse(broken)


def test_map_section_not_whole_definitions(tmp_path: Path) -> None:
    obj = compile_broken("bad_map_size", tmp_path)

    with pytest.raises(BpfObjectError, match="maps holds 24 bytes, not a whole number of 20"):
        elf.read_object(obj)


def test_missing_license(tmp_path: Path) -> None:
    obj = compile_broken("no_license", tmp_path)

    with pytest.raises(BpfObjectError, match="no license section"):
        elf.read_object(obj)


def test_relocation_against_unknown_symbol(tmp_path: Path) -> None:
    obj = compile_broken("unknown_symbol", tmp_path)

    with pytest.raises(BpfObjectError, match="unknown symbol 'counter'"):
        elf.read_object(obj)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BpfObjectError, match="cannot read BPF object"):
        elf.read_object(tmp_path / "absent_kern.o")


def test_lookup_of_absent_program_and_map_names_what_exists(sample_object: Path) -> None:
    obj = elf.read_object(sample_object)

    with pytest.raises(BpfObjectError, match=r"no program section 'xdp'.*socket1"):
        obj.program("xdp")
    with pytest.raises(BpfObjectError, match=r"no map 'other'.*my_map"):
        obj.map("other")


def test_reading_a_map_the_object_lacks_names_the_maps_and_says_rebuild(
    sample_object: Path,
) -> None:
    loaded = loader.LoadedObject(elf.read_object(sample_object))

    with pytest.raises(
        LoaderError, match=r"no map named 'my_map' \(it defines none\).*invoke build"
    ):
        loaded.map_value("my_map", 6)


def test_a_section_without_a_program_names_those_loaded_and_says_rebuild(
    sample_object: Path,
) -> None:
    loaded = loader.LoadedObject(elf.read_object(sample_object), programs={"socket1": 7})

    with pytest.raises(
        LoaderError, match=r"no program 'socket2' was loaded \(it loaded socket1\).*invoke build"
    ):
        loaded.program_fd("socket2")


# --- objects of several programs and maps (tests/data/objects) -------------------------


@pytest.fixture(scope="module")
def flows_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_object("flows", tmp_path_factory.mktemp("objects"))


def test_every_program_section_is_read_with_its_function_name(flows_object: Path) -> None:
    obj = elf.read_object(flows_object)

    assert [(p.section, p.name) for p in obj.programs] == [
        ("socket/0", "dispatch"),
        ("socket/1", "count_udp"),
    ]
    assert obj.license == "GPL"


def test_every_map_definition_is_read_in_section_order(flows_object: Path) -> None:
    obj = elf.read_object(flows_object)

    hash_, prog_array, array = 1, 3, 2
    assert obj.maps == (
        elf.MapDef("flows", 0, hash_, key_size=8, value_size=16, max_entries=64, flags=0),
        elf.MapDef("jmp_table", 20, prog_array, key_size=4, value_size=4, max_entries=4, flags=0),
        elf.MapDef("runs", 40, array, key_size=4, value_size=8, max_entries=2, flags=0),
    )


def test_relocations_belong_to_their_own_program(flows_object: Path) -> None:
    obj = elf.read_object(flows_object)

    # dispatch counts its run and tail-calls; count_udp counts its run, then looks
    # the flow up, inserts it and looks it up again.
    assert [r.symbol for r in obj.program("socket/0").relocations] == ["runs", "jmp_table"]
    assert [r.symbol for r in obj.program("socket/1").relocations] == [
        "runs",
        "flows",
        "flows",
        "flows",
    ]
    for program in obj.programs:
        for reloc in program.relocations:
            assert reloc.type == elf.R_BPF_64_64
            assert program.insns[reloc.offset] == elf.LD_IMM64


def test_relocate_gives_each_reference_its_own_map_fd(flows_object: Path) -> None:
    obj = elf.read_object(flows_object)
    fds = {"flows": 11, "jmp_table": 12, "runs": 13}

    for program in obj.programs:
        patched = loader.relocate(program, fds)
        for reloc in program.relocations:
            at = reloc.offset
            assert patched[at + 1] >> 4 == loader.BPF_PSEUDO_MAP_FD
            assert int.from_bytes(patched[at + 4 : at + 8], "little") == fds[reloc.symbol]
        untouched = [
            i for i in range(0, len(patched), 8) if all(i != r.offset for r in program.relocations)
        ]
        assert all(patched[i : i + 8] == program.insns[i : i + 8] for i in untouched)


def test_the_reader_reads_map_types_the_loader_refuses(tmp_path: Path) -> None:
    obj = elf.read_object(compile_object("percpu", tmp_path))

    percpu_array = 6
    assert [(m.name, m.type) for m in obj.maps] == [("counts", 2), ("per_cpu", percpu_array)]


def test_a_missing_section_or_map_lists_the_others_and_says_rebuild(flows_object: Path) -> None:
    obj = elf.read_object(flows_object)

    with pytest.raises(
        BpfObjectError, match=r"'socket/2' \(programs: socket/0, socket/1\); rebuild"
    ):
        obj.program("socket/2")
    with pytest.raises(
        BpfObjectError, match=r"'counts' in section maps \(maps: flows, jmp_table, runs\); rebuild"
    ):
        obj.map("counts")
