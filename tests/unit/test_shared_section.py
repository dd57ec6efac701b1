"""Programs that share a section, and a prog array the object fills itself.

The object is tests/data/objects_c/udp_ports_shared_kern.c, built here with ``clang -g``:
two programs in ``SEC("socket")``, ``count_udp`` and ``entry``, and the prog array
``jump`` whose static initialiser puts ``count_udp`` at index 0 (a relocation of
``.rel.maps``), the form the kernel's own sockex3 has from 6.12. The ELF reader splits the
section by its function symbols, the Python loader loads each (against the fake kernel of
fake_bpf.py) and fills ``jump`` as the object says; broken copies of the object (a symbol
outside its section, a relocation into no program, a slot naming no program, ...) are
made by patching its bytes, and each must be refused with an error naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection
from fake_bpf import FakeKernel

from harness import loaders, run
from harness.bpf import elf, loader
from harness.build import bpf_argv, check_programs
from harness.errors import BpfObjectError, LoaderError, SampleError
from harness.loaders.protocol import LoadRequest, program_name, split_program
from harness.proc import SubprocessRunner, require
from harness.samples import ProgArray, Program, Sample, discover, validate

OBJECTS_C = Path(__file__).resolve().parent.parent / "data" / "objects_c"
SAMPLES = discover()

#: Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size.
SYM = struct.Struct("<IBBHQQ")
#: Elf64_Rel: r_offset, r_info (symbol index << 32 | type).
REL = struct.Struct("<QQ")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = OBJECTS_C / "udp_ports_shared_kern.c"
    output = tmp_path_factory.mktemp("objects") / "udp_ports_shared_kern.o"
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output, btf=True))
    return output


@pytest.fixture(autouse=True)
def release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "kernel_release", lambda: (6, 18))


def request(obj: Path, *names: str) -> LoadRequest:
    return LoadRequest(
        object=obj,
        programs=tuple((name, "socket_filter") for name in names),
        dump=("ports",),
    )


# --- the protocol's names ------------------------------------------------------------


def test_a_program_name_is_its_section_or_its_section_and_function() -> None:
    assert program_name("socket/0") == "socket/0"
    assert program_name("socket", "main_prog") == "socket#main_prog"
    assert split_program("socket#main_prog") == ("socket", "main_prog")
    assert split_program("socket/0") == ("socket/0", "")
    assert Program("socket", function="entry").name == "socket#entry"


# --- the ELF reader ------------------------------------------------------------------


def test_each_function_of_a_shared_section_is_a_program_of_its_own_bytes(shared: Path) -> None:
    obj = elf.read_object(shared)

    assert [p.key for p in obj.programs] == ["socket#count_udp", "socket#entry"]
    count_udp, entry = obj.programs
    assert (count_udp.offset, entry.offset) == (0, len(count_udp.insns))
    assert count_udp.shared and entry.shared
    assert count_udp.offset + len(count_udp.insns) + len(entry.insns) == obj.section_sizes["socket"]
    # Each program's relocations are its own, at its own offsets, on its immediate loads.
    assert {r.symbol for r in count_udp.relocations} == {"ports"}
    assert {r.symbol for r in entry.relocations} == {"jump"}
    for program in obj.programs:
        for reloc in program.relocations:
            assert program.insns[reloc.offset] == elf.LD_IMM64
    assert obj.slots == (elf.Slot("jump", 0, "socket#count_udp"),)


def test_a_program_of_a_shared_section_is_named_by_its_function(shared: Path) -> None:
    obj = elf.read_object(shared)

    assert obj.program("socket#entry").name == "entry"
    with pytest.raises(
        BpfObjectError,
        match=r"section socket holds 2 programs \(count_udp, entry\); name one by its "
        r"function, as socket#count_udp",
    ):
        obj.program("socket")
    with pytest.raises(
        BpfObjectError,
        match=r"section socket has no program of function 'nope' \(its programs: count_udp, "
        r"entry\)",
    ):
        obj.program("socket#nope")
    with pytest.raises(BpfObjectError, match=r"no program section 'other' \(programs: socket#"):
        obj.program("other#entry")


def test_a_section_of_one_program_is_named_either_way(tmp_path: Path) -> None:
    output = tmp_path / "udp_ports_btf_kern.o"
    source = OBJECTS_C / "udp_ports_btf_kern.c"
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output, btf=True))
    obj = elf.read_object(output)

    program = obj.program("socket/count")
    assert (program.key, program.name, program.shared) == ("socket/count", "count_udp", False)
    assert obj.program("socket/count#count_udp") is program


# --- broken objects ------------------------------------------------------------------


def symbol_offset(data: bytes, name: str) -> tuple[int, int]:
    """(file offset of symbol ``name``'s entry, its index) in ``.symtab``."""
    elf_file = ELFFile(io.BytesIO(data))
    table = elf_file.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    for index, symbol in enumerate(table.iter_symbols()):
        if symbol.name == name:
            return table["sh_offset"] + index * SYM.size, index
    raise AssertionError(f"no symbol {name}")


def with_symbol(data: bytes, name: str, **changes: int) -> bytes:
    """``data`` with symbol ``name``'s st_value and/or st_size changed."""
    at, _ = symbol_offset(data, name)
    fields = list(SYM.unpack_from(data, at))
    fields[4] = changes.get("value", fields[4])
    fields[5] = changes.get("size", fields[5])
    return data[:at] + SYM.pack(*fields) + data[at + SYM.size :]


def broken(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "broken_kern.o"
    path.write_bytes(data)
    return path


def test_a_function_outside_its_section_is_named(shared: Path, tmp_path: Path) -> None:
    data = with_symbol(shared.read_bytes(), "entry", size=0x10000)

    with pytest.raises(
        BpfObjectError, match=r"function entry lies outside its section socket: it ends at"
    ):
        elf.read_object(broken(tmp_path, data))


def test_a_relocation_into_no_program_is_named(shared: Path, tmp_path: Path) -> None:
    # count_udp shrunk to its first instruction: its map references fall between programs.
    data = with_symbol(shared.read_bytes(), "count_udp", size=elf.INSN_SIZE)

    with pytest.raises(
        BpfObjectError,
        match=r"relocation against ports at socket\+0x[0-9a-f]+ points into no program "
        r"\(the functions of socket: count_udp 0x0-0x8, entry ",
    ):
        elf.read_object(broken(tmp_path, data))


def test_overlapping_functions_are_named(shared: Path, tmp_path: Path) -> None:
    obj = elf.read_object(shared)
    entry = obj.program("socket#entry")
    data = with_symbol(shared.read_bytes(), "entry", value=entry.offset - elf.INSN_SIZE)

    with pytest.raises(BpfObjectError, match=r"functions count_udp and entry of section socket"):
        elf.read_object(broken(tmp_path, data))


def test_a_function_not_on_an_instruction_is_named(shared: Path, tmp_path: Path) -> None:
    data = with_symbol(shared.read_bytes(), "entry", size=12)

    with pytest.raises(BpfObjectError, match=r"function entry of section socket is at offset"):
        elf.read_object(broken(tmp_path, data))


def test_a_slot_naming_no_program_is_named(shared: Path, tmp_path: Path) -> None:
    data = shared.read_bytes()
    _, ports = symbol_offset(data, "ports")
    elf_file = ELFFile(io.BytesIO(data))
    rel_maps = elf_file.get_section_by_name(".rel.maps")
    assert isinstance(rel_maps, RelocationSection)
    at = rel_maps["sh_offset"]
    r_offset, r_info = REL.unpack_from(data, at)
    data = data[:at] + REL.pack(r_offset, ports << 32 | (r_info & 0xFFFFFFFF)) + data[at + 16 :]

    with pytest.raises(
        BpfObjectError,
        match=r"prog array jump declares 'ports' as a value, which is not a program: no "
        r"program of the object starts there \(\.maps\+0x[0-9a-f]+\); its programs are "
        r"socket#count_udp, socket#entry",
    ):
        elf.read_object(broken(tmp_path, data))


def test_a_call_that_leaves_its_program_is_named(shared: Path, tmp_path: Path) -> None:
    data = shared.read_bytes()
    elf_file = ELFFile(io.BytesIO(data))
    section = elf_file.get_section_by_name("socket")
    assert section is not None
    entry = elf.read_object(shared).program("socket#entry")
    # entry's last instruction but one (before its exit) made a call to a BPF function
    # 100 instructions on, past its end.
    within = len(entry.insns) - 2 * elf.INSN_SIZE
    at = section["sh_offset"] + entry.offset + within
    call = struct.pack("<BBhi", elf.CALL, elf.BPF_PSEUDO_CALL << 4, 0, 100)
    data = data[:at] + call + data[at + elf.INSN_SIZE :]

    with pytest.raises(
        BpfObjectError,
        match=rf"program socket#entry calls a function outside itself at \+{within:#x} ",
    ):
        elf.read_object(broken(tmp_path, data))


# --- the Python loader -----------------------------------------------------------------


def test_each_program_is_loaded_with_its_own_function_and_line_information(
    kernel: FakeKernel, shared: Path
) -> None:
    obj = elf.read_object(shared)

    with loader.load_request(request(shared, "socket#entry", "socket#count_udp")) as attached:
        assert attached.notes == []
        by_name = {p.name: p for p in kernel.programs.values()}
        assert set(by_name) == {"entry", "count_udp"}
        for name, fake in by_name.items():
            program = obj.program(f"socket#{name}")
            # Its own instructions, but for the map references the loader patched.
            loaded, own = bytearray(fake.insns), bytearray(program.insns)
            for reloc in program.relocations:
                for insns in (loaded, own):
                    insns[reloc.offset + 1 : reloc.offset + 8] = bytes(7)
            assert loaded == own
            count = len(program.insns) // elf.INSN_SIZE
            functions = [
                struct.unpack_from("<II", fake.func_info, i)
                for i in range(0, len(fake.func_info), 8)
            ]
            assert [insn for insn, _ in functions] == [0]  # its own, counted from its start
            lines = [
                struct.unpack_from("<I", fake.line_info, i)[0]
                for i in range(0, len(fake.line_info), 16)
            ]
            assert lines and lines[0] == 0 and all(0 <= insn < count for insn in lines)
        assert attached.loaded.program_fd("socket#entry") != attached.loaded.program_fd(
            "socket#count_udp"
        )
    # jump is filled as the object's initialiser says: count_udp at 0, once both are loaded.
    assert kernel.events.index(("prog_array_update", "0", "count_udp")) > max(
        kernel.events.index(("prog_load", name)) for name in ("entry", "count_udp")
    )


def test_a_program_the_object_puts_in_its_prog_array_must_be_requested(
    kernel: FakeKernel, shared: Path
) -> None:
    with pytest.raises(
        LoaderError,
        match=r"prog array jump declares program socket#count_udp at index 0, which is not "
        r"loaded; request it with --program socket#count_udp:TYPE",
    ):
        loader.load_request(request(shared, "socket#entry"))
    assert kernel.events == []


def test_a_shared_section_named_alone_is_refused_before_anything_loads(
    kernel: FakeKernel, shared: Path
) -> None:
    with pytest.raises(BpfObjectError, match=r"as socket#count_udp"):
        loader.load_request(request(shared, "socket"))
    assert kernel.events == []


def test_one_program_named_both_ways_is_requested_twice(kernel: FakeKernel, tmp_path: Path) -> None:
    output = tmp_path / "udp_ports_btf_kern.o"
    source = OBJECTS_C / "udp_ports_btf_kern.c"
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output, btf=True))

    with pytest.raises(LoaderError, match=r"program socket/count is requested twice"):
        loader.load_request(request(output, "socket/count", "socket/count#count_udp"))


# --- descriptors, loaders and the run ----------------------------------------------------


def shared_sample(**changes: object) -> Sample:
    """sockex3-btf as if its programs were udp_ports_shared's."""
    base = dataclasses.replace(
        SAMPLES["sockex3-btf"],
        programs=(
            Program("socket", function="entry"),
            Program("socket", function="count_udp", attach=""),
        ),
        prog_arrays=(ProgArray("jump", {0: "socket#count_udp"}, filled_by="object"),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_build_checks_a_prog_array_the_object_fills_against_the_descriptor(
    shared: Path,
) -> None:
    obj = elf.read_object(shared)
    check_programs(shared_sample(), obj)

    wrong = shared_sample(
        prog_arrays=(ProgArray("jump", {1: "socket#count_udp"}, filled_by="object"),)
    )
    with pytest.raises(
        BpfObjectError,
        match=r"prog array jump is filled by the object with \[0\] socket#count_udp, but "
        r"sample sockex3-btf says \[1\] socket#count_udp",
    ):
        check_programs(wrong, obj)


@pytest.mark.parametrize(
    ("programs", "arrays", "complaint"),
    [
        (
            (Program("socket", function="entry"), Program("socket", function="entry", attach="")),
            (),
            "program socket#entry is listed twice",
        ),
        (
            (Program("socket"), Program("socket", function="count_udp", attach="")),
            (),
            "section socket is named both alone and with a function",
        ),
        ((Program("socket", function="not a name"),), (), "is not a C identifier"),
        ((Program("sock#et"),), (), "without ':' or '#'"),
        (
            (Program("socket", function="entry"),),
            (ProgArray("jump", {0: "socket#nope"}, filled_by="object"),),
            r"prog array jump\[0\] names no program: 'socket#nope' \(programs: socket#entry\)",
        ),
        (
            (Program("socket", function="entry"),),
            (ProgArray("jump", {0: "socket#entry"}, filled_by="kernel"),),  # type: ignore[arg-type]
            "filled_by 'kernel'; use one of loader, object",
        ),
    ],
)
def test_a_descriptor_naming_programs_wrongly_is_refused(
    programs: tuple[Program, ...], arrays: tuple[ProgArray, ...], complaint: str
) -> None:
    sample = shared_sample(programs=programs, prog_arrays=arrays)

    with pytest.raises(SampleError, match=complaint):
        validate(sample, sample.directory / "sample.py")


def test_the_classic_loader_is_skipped_for_programs_sharing_a_section(tmp_path: Path) -> None:
    classic = dataclasses.replace(shared_sample(), format="classic", name="sockex3")
    python, c = loaders.builtin(["python", "c"])

    assert python.cannot_load(classic) is None
    reason = c.cannot_load(classic)
    assert reason == (
        "the c loader loads a whole section as one program, and sockex3 has several programs "
        "in one section (socket#entry, socket#count_udp); the python and libbpf loaders load "
        "them by their functions"
    )
    assert c.cannot_load(SAMPLES["sockex3"]) is None
    case = run.Case(classic, c)
    assert run.skip_reason({run.loader_skip_key(case): reason}, case) == reason


def test_the_plan_names_programs_by_function_and_leaves_the_object_s_prog_array_alone(
    tmp_path: Path,
) -> None:
    from harness.build import BuildOutput, SampleBuild
    from harness.kernels.model import Kernel, KernelEntry

    sample = shared_sample()
    output = BuildOutput(
        sample.name, "r", Path("/b"), {"object": Path("/b/x.o")}, None, Path("/b/l"), False
    )
    kernel_entry = KernelEntry(
        Kernel("x", None, "6.12.0", "debian"), Path("/k/vmlinux"), None, None, None
    )
    prepared = run.PreparedKernel(
        "6.12", kernel_entry, {sample.name: SampleBuild(sample, output)}, {}, {}, {}, {}
    )
    cases = run.plan_cases([sample], loaders.builtin(["python"]))

    (case,) = run.guest_plan(prepared, cases, tmp_path).cases

    assert case.request.programs == (
        ("socket#entry", "socket_filter"),
        ("socket#count_udp", "socket_filter"),
    )
    assert case.request.attach == (("socket#entry", "socket:lo"),)
    assert case.request.prog_arrays == ()  # the object fills jump itself
