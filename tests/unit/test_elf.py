"""The ELF reader on the built sockex1 object and on broken objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sockex1_objects import (
    build_host,
    compile_broken,
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
    assert check_object(sample_object) == obj


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

    with pytest.raises(LoaderError, match=r"section 'socket2' \(it loaded socket1\).*invoke build"):
        loaded.program_fd("socket2")
