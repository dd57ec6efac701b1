"""The ELF reader on objects with BTF-defined maps (clang -g) and on ones whose .BTF is broken.

Every broken object must be one line of :class:`BpfObjectError` naming the file and
its ``.BTF``, from the reader and from ``python3 -m harness.bpf``: no traceback.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from test_bpf_loader_btf import BTF_DATA, OBJECTS, compile_btf

from harness.bpf import __main__ as cli, btf, elf
from harness.bpf.btf import BtfKind
from harness.errors import BpfObjectError

NAME = Path("broken_kern.o")


@pytest.fixture(scope="module")
def flows_btf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_btf(OBJECTS / "flows_btf_kern.c", tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def image(flows_btf: Path) -> bytes:
    return flows_btf.read_bytes()


def section(data: bytes, name: str) -> tuple[int, int, int]:
    """(file offset of the section's data, its size, file offset of its sh_size field)."""
    elf_file = ELFFile(io.BytesIO(data))
    for index, found in enumerate(elf_file.iter_sections()):
        if found.name == name:
            header = elf_file["e_shoff"] + index * elf_file["e_shentsize"]
            return found["sh_offset"], found["sh_size"], header + 32  # Elf64_Shdr.sh_size
    raise AssertionError(name)


def patched(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def type_offset(data: bytes, type_id: int) -> int:
    """File offset of the record of BTF type ``type_id`` (clang writes types right after
    the 24-byte header, and encoding what was read gives the same bytes)."""
    start, size, _ = section(data, ".BTF")
    types = btf.parse_btf(data[start : start + size])
    before = dataclasses.replace(types, types=types.types[: type_id - 1], strings=b"")
    return start + len(btf.encode_btf(before))


def one_line(data: bytes, match: str) -> str:
    with pytest.raises(BpfObjectError, match=match) as caught:
        elf.parse_object(data, NAME)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{NAME} .BTF: ") or message.startswith(f"{NAME}: ")
    return message


def test_an_object_with_btf_maps_reads_the_numbers_classic_flows_has(flows_btf: Path) -> None:
    obj = elf.read_object(flows_btf)

    numbers = {m.name: (m.type, m.key_size, m.value_size, m.max_entries, m.flags) for m in obj.maps}
    assert numbers == {
        "flows": (1, 8, 16, 64, 0),
        "jmp_table": (3, 4, 4, 4, 0),
        "runs": (2, 4, 8, 2, 0),
    }
    assert all(m.btf is not None for m in obj.maps)
    assert [m.offset for m in sorted(obj.maps, key=lambda m: m.offset)] == [0, 32, 64]
    assert obj.btf is not None and obj.btf_ext is not None
    assert set(obj.btf_ext.func_info) == {"socket/0", "socket/1"}
    assert obj.section_sizes[".maps"] == 96
    # The debug sections' relocations are not the programs': only map references are.
    assert {r.symbol for p in obj.programs for r in p.relocations} == {"flows", "jmp_table", "runs"}
    assert obj.slots == ()


def test_declared_slots_name_their_program_section_and_map(tmp_path: Path) -> None:
    obj = elf.read_object(compile_btf(OBJECTS / "slots_btf_kern.c", tmp_path))

    assert set(obj.slots) == {
        elf.Slot("outer", 1, "inner_a"),
        elf.Slot("jumps", 2, "socket/1"),
    }
    outer = obj.map("outer")
    assert outer.btf is not None and outer.btf.inner is not None
    assert outer.btf.inner.max_entries == 4


def test_a_map_the_object_lacks_is_looked_for_in_dot_maps(flows_btf: Path) -> None:
    with pytest.raises(BpfObjectError, match=r"no map 'counts' in section \.maps \(maps: "):
        elf.read_object(flows_btf).map("counts")


def test_btf_cut_short(image: bytes) -> None:
    _, _, size_field = section(image, ".BTF")

    message = one_line(patched(image, size_field, struct.pack("<Q", 20)), "BTF header cut short")
    assert "(20 of 24 bytes)" in message


def test_btf_types_cut_short(image: bytes) -> None:
    _, size, size_field = section(image, ".BTF")

    one_line(patched(image, size_field, struct.pack("<Q", size // 2)), "runs past the end")


def test_btf_of_the_wrong_magic(image: bytes) -> None:
    start, _, _ = section(image, ".BTF")

    one_line(patched(image, start, b"\x9f\xec"), "wrong BTF magic 9fec")


def test_btf_type_id_out_of_range(image: bytes) -> None:
    start, size, _ = section(image, ".BTF")
    types = btf.parse_btf(image[start : start + size])
    pointer = next(t for t in types.types if t.kind == BtfKind.PTR)
    broken = patched(image, type_offset(image, pointer.id) + 8, struct.pack("<I", 0xFFFF))

    message = one_line(broken, "out of range")
    assert f"#{pointer.id} PTR" in message and "type id 65535" in message


def test_a_maps_variable_that_is_not_a_struct(tmp_path: Path) -> None:
    obj = compile_btf(BTF_DATA / "not_struct_kern.c", tmp_path)

    # clang 14 gives a variable of .maps that is not a struct the type void.
    with pytest.raises(BpfObjectError, match=r"map 'stray' is a VOID, not a struct") as caught:
        elf.read_object(obj)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{obj} .BTF: ")
    # Given its C type, int, it is refused the same way.
    data = obj.read_bytes()
    start, size, _ = section(data, ".BTF")
    types = btf.parse_btf(data[start : start + size])
    stray = next(t for t in types.types if t.kind == BtfKind.VAR and t.name == "stray")
    int_type = types.find("int", BtfKind.INT)
    assert int_type is not None
    as_int = patched(data, type_offset(data, stray.id) + 8, struct.pack("<I", int_type.id))
    one_line(as_int, r"map 'stray' is a INT, not a struct; declare it as struct \{")


def test_dot_maps_without_btf(image: bytes) -> None:
    # Renamed, the .BTF section is one the reader does not look for.
    elf_file = ELFFile(io.BytesIO(image))
    names = elf_file.get_section(elf_file["e_shstrndx"])
    btf_section = elf_file.get_section_by_name(".BTF")
    assert btf_section is not None
    at = names["sh_offset"] + btf_section["sh_name"]
    assert image[at : at + 5] == b".BTF\0"

    one_line(patched(image, at, b".XTF"), r"section \.maps declares BTF-defined maps but the")


def test_the_protocol_loader_says_it_in_one_line(
    image: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, _, _ = section(image, ".BTF")
    broken = tmp_path / "broken_kern.o"
    broken.write_bytes(patched(image, start, b"\x00\x00"))
    read, write = os.pipe()
    os.close(write)
    try:
        status = cli.main(
            ["--object", str(broken), "--program", "socket/0:socket_filter"], stdin_fd=read
        )
    finally:
        os.close(read)

    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert err.splitlines() == [f"error: {broken} .BTF: " + err.split(".BTF: ", 1)[1].strip()]
    assert "wrong BTF magic 0000" in err and "Traceback" not in err
