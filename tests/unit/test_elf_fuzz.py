"""Property: however an object is corrupted, the reader raises only its own error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sockex1_objects import build_host, compile_object

from harness.bpf import elf, loader
from harness.errors import BpfObjectError

#: The objects corrupted: sockex1, and one of several programs, maps and map types.
_OBJECTS: dict[str, bytes] = {}


@pytest.fixture(scope="module", autouse=True)
def objects(tmp_path_factory: pytest.TempPathFactory) -> None:
    _OBJECTS["sockex1"] = build_host(tmp_path_factory.mktemp("build")).bpf_object.read_bytes()
    _OBJECTS["flows"] = compile_object("flows", tmp_path_factory.mktemp("objects")).read_bytes()


def test_a_section_flagged_compressed_that_is_not_is_a_bpf_object_error() -> None:
    # Found by the property below: pyelftools inflates an SHF_COMPRESSED section and
    # zlib's own error escaped the reader.
    data = bytearray(_OBJECTS["flows"])
    shoff, shentsize, shnum = (
        int.from_bytes(data[0x28:0x30], "little"),
        int.from_bytes(data[0x3A:0x3C], "little"),
        int.from_bytes(data[0x3C:0x3E], "little"),
    )
    for index in range(1, shnum):
        header = shoff + index * shentsize
        if int.from_bytes(data[header + 4 : header + 8], "little") == 1:  # SHT_PROGBITS
            data[header + 9] |= 0x08  # sh_flags |= SHF_COMPRESSED (0x800)
    with pytest.raises(BpfObjectError, match="not a readable ELF object"):
        obj = elf.parse_object(bytes(data), Path("compressed_kern.o"))
        for program in obj.programs:
            loader.relocate(program, {m.name: 3 for m in obj.maps})


def _corrupt(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    image = bytearray(data)
    for position, value in edits:
        image[position % len(image)] = value
    return bytes(image[:cut] if cut is not None else image)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["sockex1", "flows"]),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=2000)),
)
def test_corrupted_object_raises_only_bpf_object_error(
    name: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = _corrupt(_OBJECTS[name], edits, cut)
    try:
        obj = elf.parse_object(data, Path("mutated_kern.o"))
        loader.check_map_types(obj)
        fds = {m.name: 3 + i for i, m in enumerate(obj.maps)}
        for program in obj.programs:
            loader.program_type(program.section)
            loader.relocate(program, fds)
    except BpfObjectError:
        pass
