"""The Python loader on objects with BTF-defined maps, against a fake kernel (fake_bpf.py).

The objects are built here with ``clang -g``: tests/data/objects/flows_btf_kern.c
(flows_kern.c with its maps in ``.maps``), slots_btf_kern.c (a prog array and an
array of maps whose first contents the object declares) and, for BTF kinds that
older kernels lack, tests/data/btf/tags_kern.c.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fake_bpf import FakeKernel, FakeMap

from harness.bpf import btf, elf, loader, syscall
from harness.bpf.btf import BtfKind
from harness.build import bpf_argv
from harness.errors import LoaderError
from harness.loaders.protocol import LoadRequest
from harness.proc import SubprocessRunner, require

TESTS = Path(__file__).resolve().parent.parent
OBJECTS = TESTS / "data" / "objects"
BTF_DATA = TESTS / "data" / "btf"
HOST_RELEASE = (6, 18)


def compile_btf(source: Path, out_dir: Path) -> Path:
    """``source`` built as the samples with BTF-defined maps are: clang -g."""
    output = out_dir / source.with_suffix(".o").name
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output, btf=True))
    return output


@pytest.fixture(scope="module")
def flows_btf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_btf(OBJECTS / "flows_btf_kern.c", tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def slots_btf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_btf(OBJECTS / "slots_btf_kern.c", tmp_path_factory.mktemp("objects"))


@pytest.fixture(autouse=True)
def release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running kernel's release, as the loader sees it; a test may change it."""
    monkeypatch.setattr(loader, "kernel_release", lambda: HOST_RELEASE)


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeKernel) -> Iterator[FakeKernel]:
    monkeypatch.setattr(syscall, "bpf", fake)
    yield fake
    fake.release()


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    yield from install(monkeypatch, FakeKernel())


def flows_request(obj: Path, **changes: object) -> LoadRequest:
    base = LoadRequest(
        object=obj,
        programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
        prog_arrays=(("jmp_table", 1, "socket/1"),),
        dump=("flows", "runs"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def fake_map(kernel: FakeKernel, name: str) -> FakeMap:
    (found,) = [m for m in kernel.maps.values() if m.name == name]
    return found


def type_name(obj: elf.BpfObject, type_id: int) -> str:
    assert obj.btf is not None
    return obj.btf.type(type_id).name


def test_maps_are_created_with_the_object_btf_and_their_key_and_value_types(
    kernel: FakeKernel, flows_btf: Path
) -> None:
    obj = elf.read_object(flows_btf)

    with loader.load_request(flows_request(flows_btf)) as attached:
        assert attached.notes == []
        (btf_fd,) = kernel.btfs
        assert attached.loaded.btf_fd == btf_fd
        flows, runs, jumps = (fake_map(kernel, n) for n in ("flows", "runs", "jmp_table"))
        assert (flows.type, flows.key_size, flows.value_size, flows.max_entries) == (1, 8, 16, 64)
        assert (runs.type, runs.key_size, runs.value_size, runs.max_entries) == (2, 4, 8, 2)
        assert (jumps.type, jumps.key_size, jumps.value_size, jumps.max_entries) == (3, 4, 4, 4)
        assert flows.btf_fd == runs.btf_fd == btf_fd
        assert [type_name(obj, i) for i in flows.btf_ids] == ["flow_key", "flow_stats"]
        assert [type_name(obj, i) for i in runs.btf_ids] == [
            "unsigned int",
            "unsigned long long",
        ]
        # A prog array declares sizes, not types: it gets no BTF ids.
        assert (jumps.btf_fd, jumps.btf_ids) == (0, (0, 0))

    assert kernel.events[0] == ("btf_load", "0")
    assert kernel.open_fds() == []


def test_the_btf_loaded_is_laid_out_from_the_elf(kernel: FakeKernel, flows_btf: Path) -> None:
    obj = elf.read_object(flows_btf)

    with loader.load_request(flows_request(flows_btf)):
        (data,) = kernel.btfs.values()

    maps = btf.parse_btf(data).find(".maps", BtfKind.DATASEC)
    assert maps is not None
    assert maps.size == obj.section_sizes[".maps"] == 3 * 32
    assert [s.offset for s in maps.secinfos] == [0, 32, 64]


def test_programs_get_the_btf_with_their_function_and_line_information(
    kernel: FakeKernel, flows_btf: Path
) -> None:
    obj = elf.read_object(flows_btf)
    assert obj.btf is not None and obj.btf_ext is not None

    with loader.load_request(flows_request(flows_btf)) as attached:
        fds = {name: m.fd for name, m in attached.loaded.maps.items()}
        for source in obj.programs:
            (fake,) = [p for p in kernel.programs.values() if p.name == source.name]
            assert fake.btf_fd == attached.loaded.btf_fd
            func = btf.func_info_bytes(obj.btf_ext.func_info[source.section])
            assert fake.func_info == func
            assert int.from_bytes(func[:4], "little") == 0  # the function starts the program
            assert type_name(obj, int.from_bytes(func[4:8], "little")) == source.name
            lines = obj.btf_ext.line_info[source.section]
            assert len(lines) > 3
            assert fake.line_info == btf.line_info_bytes(lines)
            # References to maps of .maps are relocated as those of maps are.
            assert {r.symbol for r in source.relocations} <= set(fds)
            for reloc in source.relocations:
                at = reloc.offset
                assert fake.insns[at + 1] >> 4 == loader.BPF_PSEUDO_MAP_FD
                assert int.from_bytes(fake.insns[at + 4 : at + 8], "little") == fds[reloc.symbol]


def test_btf_the_kernel_refuses_is_loaded_without_and_the_reason_is_kept(
    monkeypatch: pytest.MonkeyPatch, flows_btf: Path
) -> None:
    reason = "[12] STRUCT flow_key size=8 vlen=3 Invalid member bits_offset"
    kernel = next(install(monkeypatch, FakeKernel(refuse_btf=reason)))

    with loader.load_request(flows_request(flows_btf)) as attached:
        (note,) = attached.notes
        assert attached.loaded.btf_fd is None
        assert all(m.btf_fd == 0 and m.btf_ids == (0, 0) for m in kernel.maps.values())
        assert all(p.btf_fd == 0 and not p.func_info for p in kernel.programs.values())
        assert len(kernel.programs) == 2

    assert "the kernel refused the BTF of" in note
    assert "EINVAL" in note and reason in note
    assert "loaded without BTF" in note
    # Asked once without a log and once with one, which gives the reason.
    assert [e for e in kernel.events if e[0] == "btf_load"] == [
        ("btf_load", "0"),
        ("btf_load", "1"),
    ]
    assert kernel.open_fds() == []


def test_a_map_type_that_takes_no_btf_types_is_created_without_them(
    monkeypatch: pytest.MonkeyPatch, flows_btf: Path
) -> None:
    refusing = FakeKernel(refuse_btf_ids=(syscall.BPF_MAP_TYPE_HASH,))
    kernel = next(install(monkeypatch, refusing))

    with loader.load_request(flows_request(flows_btf)) as attached:
        (note,) = attached.notes
        assert fake_map(kernel, "flows").btf_ids == (0, 0)
        assert fake_map(kernel, "runs").btf_ids != (0, 0)

    assert note.startswith("map flows: the kernel refused its BTF key and value types")
    assert "ENOTSUPP" in note or "524" in note


def test_function_information_the_kernel_refuses_is_left_out(
    monkeypatch: pytest.MonkeyPatch, flows_btf: Path
) -> None:
    kernel = next(install(monkeypatch, FakeKernel(refuse_func_info=True)))

    with loader.load_request(flows_request(flows_btf)) as attached:
        notes = attached.notes
        assert all(not p.func_info and not p.line_info for p in kernel.programs.values())
        assert len(kernel.programs) == 2

    assert notes == [
        f"program {section}: the kernel refused its BTF function and line information "
        "(invalid func info); loaded without it"
        for section in ("socket/0", "socket/1")
    ]


def test_on_5_10_the_btf_has_no_kind_that_kernel_lacks(
    monkeypatch: pytest.MonkeyPatch, kernel: FakeKernel, tmp_path: Path
) -> None:
    tags = compile_btf(BTF_DATA / "tags_kern.c", tmp_path)
    request = LoadRequest(tags, programs=(("socket", "socket_filter"),))
    kinds: dict[tuple[int, int], set[BtfKind]] = {}
    for release in ((6, 18), (5, 10)):
        monkeypatch.setattr(loader, "kernel_release", lambda r=release: r)
        with loader.load_request(request) as attached:
            assert attached.notes == []
            data = kernel.btfs[attached.loaded.btf_fd or -1]
            kinds[release] = {t.kind for t in btf.parse_btf(data).types}
            # The ids stay those of the object's BTF, so the map's types are still its own.
            assert fake_map(kernel, "samples").btf_ids != (0, 0)

    new = {BtfKind.FLOAT, BtfKind.DECL_TAG, BtfKind.TYPE_TAG}
    assert new <= kinds[(6, 18)]
    assert not new & kinds[(5, 10)]


def test_a_kernel_without_btf_variables_gets_no_btf_and_says_why(
    monkeypatch: pytest.MonkeyPatch, kernel: FakeKernel, flows_btf: Path
) -> None:
    monkeypatch.setattr(loader, "kernel_release", lambda: (4, 19))

    with loader.load_request(flows_request(flows_btf)) as attached:
        (note,) = attached.notes
        assert fake_map(kernel, "flows").max_entries == 64

    assert note.startswith("BTF not loaded on kernel 4.19: ")
    assert "VAR" in note and "DATASEC" in note
    assert not kernel.btfs


def test_an_inner_map_is_made_first_and_declared_slots_are_filled(
    kernel: FakeKernel, slots_btf: Path
) -> None:
    request = LoadRequest(
        slots_btf,
        programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
        dump=("outer", "jumps"),
    )

    with loader.load_request(request) as attached:
        outer = fake_map(kernel, "outer")
        template = outer.inner
        assert template is not None
        assert (template.type, template.key_size, template.value_size, template.max_entries) == (
            syscall.BPF_MAP_TYPE_ARRAY,
            4,
            8,
            4,
        )
        assert (outer.type, outer.value_size, outer.max_entries) == (12, 4, 3)
        dump = attached.dump()
        # The template is closed once the map of maps exists: what stays open is the
        # object's BTF, its maps and its programs.
        loaded = attached.loaded
        assert set(kernel.open_fds()) == {
            loaded.btf_fd,
            *(m.fd for m in loaded.maps.values()),
            *loaded.programs.values(),
        }
        assert len(kernel.fds) == len(set(kernel.open_fds())) + 1

    inner_a = fake_map(kernel, "inner_a")
    second = next(p for p in kernel.programs.values() if p.name == "second")
    assert dump == {
        "outer": [((1).to_bytes(4, "little"), inner_a.id.to_bytes(4, "little"))],
        "jumps": [((2).to_bytes(4, "little"), second.id.to_bytes(4, "little"))],
    }
    updates = [e for e in kernel.events if e[0] not in ("btf_load", "map_create")]
    # The prog array's slot is filled only once every program is loaded.
    assert updates[-1] == ("prog_array_update", "2", "second")
    assert [e[0] for e in updates[:-1]].count("prog_load") == 2
    assert ("map_of_maps_update", "1", "inner_a") in updates
    assert kernel.open_fds() == []


def test_a_declared_program_that_is_not_requested_is_refused_before_any_bpf_call(
    kernel: FakeKernel, slots_btf: Path
) -> None:
    request = LoadRequest(slots_btf, programs=(("socket/0", "socket_filter"),))

    with pytest.raises(
        LoaderError,
        match=r"prog array jumps declares program socket/1 at index 2, which is not loaded; "
        r"request it with --program socket/1:TYPE",
    ):
        loader.load_request(request)

    assert kernel.events == []
