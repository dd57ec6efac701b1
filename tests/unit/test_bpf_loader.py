"""The Python loader's logic against a fake kernel (tests/unit/fake_bpf.py): no root needed.

The object is tests/data/objects/flows_kern.c: a hash map keyed by a struct, a
prog array and an array; "socket/0" tail-calls "socket/1" through index 1.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from fake_bpf import FakeKernel
from sockex1_objects import compile_object

from harness import samples
from harness.bpf import elf, loader, syscall
from harness.errors import BpfObjectError, LoaderError, PacketSocketError, VerifierError
from harness.loaders.protocol import LoadRequest

SOCKET_FILTER = syscall.BPF_PROG_TYPE_SOCKET_FILTER


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_object("flows", tmp_path_factory.mktemp("objects"))


def request(obj: Path, **changes: object) -> LoadRequest:
    """What the flows sample asks: both programs, the tail call at 1, the two counting maps."""
    base = LoadRequest(
        object=obj,
        programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
        prog_arrays=(("jmp_table", 1, "socket/1"),),
        dump=("flows", "runs"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def map_fd(kernel: FakeKernel, map_type: int) -> int:
    (fd,) = [fd for fd, m in kernel.maps.items() if m.type == map_type]
    return fd


def program(kernel: FakeKernel, name: str) -> tuple[int, bytes]:
    (found,) = [(p.type, p.insns) for p in kernel.programs.values() if p.name == name]
    return found


def test_every_program_the_loader_loads_has_a_type_samples_may_name() -> None:
    assert set(samples.PROGRAM_TYPES) <= set(loader.PROGRAM_TYPES)


def test_each_program_is_loaded_with_the_requested_type_and_its_maps_fds(
    kernel: FakeKernel, flows: Path
) -> None:
    obj = elf.read_object(flows)

    with loader.load_request(request(flows)) as attached:
        fds = {name: m.fd for name, m in attached.loaded.maps.items()}
        for source in obj.programs:
            prog_type, insns = program(kernel, source.name)
            assert prog_type == SOCKET_FILTER
            assert len(source.relocations) >= 2
            for reloc in source.relocations:
                at = reloc.offset
                assert insns[at + 1] >> 4 == loader.BPF_PSEUDO_MAP_FD
                assert int.from_bytes(insns[at + 4 : at + 8], "little") == fds[reloc.symbol]

    assert sorted(fds) == ["flows", "jmp_table", "runs"]
    assert len(set(fds.values())) == 3


def test_the_prog_array_is_filled_after_every_program_is_loaded(
    kernel: FakeKernel, flows: Path
) -> None:
    with loader.load_request(request(flows)):
        pass

    steps = [event for event in kernel.events if event[0] != "map_create"]
    assert steps == [
        ("prog_load", "dispatch"),
        ("prog_load", "count_udp"),
        ("prog_array_update", "1", "count_udp"),
    ]
    # Maps exist before any program refers to them.
    assert [e[0] for e in kernel.events[:3]] == ["map_create"] * 3


def test_only_the_requested_programs_are_loaded(kernel: FakeKernel, flows: Path) -> None:
    only_dispatch = request(flows, programs=(("socket/0", "socket_filter"),), prog_arrays=())

    with loader.load_request(only_dispatch) as attached:
        assert list(attached.loaded.programs) == ["socket/0"]

    assert [p.name for p in kernel.programs.values()] == ["dispatch"]


def test_dump_of_an_array_has_every_index_and_of_a_hash_its_keys(
    kernel: FakeKernel, flows: Path
) -> None:
    flow_a = bytes([127, 0, 0, 1]) + (9000).to_bytes(2, "big") + bytes(2)
    flow_b = bytes([127, 0, 0, 2]) + (53).to_bytes(2, "big") + bytes(2)
    stats_a = (2).to_bytes(8, "little") + (2100).to_bytes(8, "little")
    stats_b = (4).to_bytes(8, "little") + (400).to_bytes(8, "little")

    with loader.load_request(request(flows)) as attached:
        # What the programs would have written.
        kernel.maps[map_fd(kernel, syscall.BPF_MAP_TYPE_HASH)].entries.update(
            {flow_a: stats_a, flow_b: stats_b}
        )
        kernel.maps[map_fd(kernel, syscall.BPF_MAP_TYPE_ARRAY)].entries[bytes(4)] = (7).to_bytes(
            8, "little"
        )

        dump = attached.dump()

    assert dump == {
        "flows": [(flow_a, stats_a), (flow_b, stats_b)],
        "runs": [
            ((0).to_bytes(4, "little"), (7).to_bytes(8, "little")),
            ((1).to_bytes(4, "little"), bytes(8)),
        ],
    }
    # The hash walk starts from a NULL key, then follows the keys it was given.
    assert kernel.next_key_calls == [None, flow_a, flow_b]


def test_dump_of_an_empty_hash_is_empty(kernel: FakeKernel, flows: Path) -> None:
    with loader.load_request(request(flows, dump=("flows",))) as attached:
        assert attached.dump() == {"flows": []}


def test_dump_of_a_prog_array_has_the_filled_slots_only(kernel: FakeKernel, flows: Path) -> None:
    with loader.load_request(request(flows, dump=("jmp_table",))) as attached:
        dump = attached.dump()

    count_udp = next(p for p in kernel.programs.values() if p.name == "count_udp")
    assert dump == {"jmp_table": [((1).to_bytes(4, "little"), count_udp.id.to_bytes(4, "little"))]}


def test_closing_closes_every_fd_and_socket(
    kernel: FakeKernel, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[int, str, socket.socket]] = []

    def fake_attach(prog_fd: int, interface: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        theirs.close()
        opened.append((prog_fd, interface, ours))
        return ours

    monkeypatch.setattr(loader, "attach_socket", fake_attach)

    with loader.load_request(request(flows, attach=(("socket/0", "socket:lo"),))) as attached:
        assert [(fd, iface) for fd, iface, _ in opened] == [
            (attached.loaded.program_fd("socket/0"), "lo")
        ]
        assert len(kernel.open_fds()) == 5  # three maps, two programs

    assert kernel.open_fds() == []
    assert opened[0][2].fileno() == -1


def test_a_failed_attach_closes_what_was_loaded(
    kernel: FakeKernel, flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_interface(prog_fd: int, interface: str) -> socket.socket:
        raise PacketSocketError(f"cannot bind to {interface}")

    monkeypatch.setattr(loader, "attach_socket", no_such_interface)

    with pytest.raises(PacketSocketError, match="eth9"):
        loader.load_request(request(flows, attach=(("socket/0", "socket:eth9"),)))

    assert len(kernel.fds) == 5
    assert kernel.open_fds() == []


def test_a_rejected_program_keeps_the_log_and_closes_what_was_loaded(
    monkeypatch: pytest.MonkeyPatch, flows: Path
) -> None:
    log = "0: R1=ctx() R10=fp0\nR2 invalid mem access 'scalar'\nprocessed 3 insns\n"
    kernel = FakeKernel(reject={"count_udp": log})
    monkeypatch.setattr(syscall, "bpf", kernel)

    with pytest.raises(VerifierError, match="rejected program count_udp") as raised:
        loader.load_request(request(flows))

    assert raised.value.log == log.strip()
    assert len(kernel.fds) == 4  # three maps and dispatch, made before count_udp
    assert kernel.open_fds() == []


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"programs": (("socket/2", "socket_filter"),), "prog_arrays": ()},
            BpfObjectError,
            r"no program section 'socket/2' \(programs: socket/0, socket/1\); rebuild",
        ),
        (
            {"dump": ("counts",)},
            BpfObjectError,
            r"no map 'counts' in section maps \(maps: flows, jmp_table, runs\); rebuild",
        ),
        (
            {"prog_arrays": (("jmp_table", 4, "socket/1"),)},
            LoaderError,
            r"prog array jmp_table has 4 entries \(indices 0 to 3\), so program socket/1 "
            r"cannot go at index 4",
        ),
        (
            {"prog_arrays": (("runs", 0, "socket/1"),)},
            LoaderError,
            r"map runs has type array, not prog_array; a program fd can only",
        ),
        (
            {
                "prog_arrays": (("jmp_table", 1, "socket/1"),),
                "programs": (("socket/0", "socket_filter"),),
            },
            LoaderError,
            r"jmp_table\[1\] names program socket/1, which is not loaded; "
            r"request it with --program socket/1:TYPE",
        ),
        (
            {"programs": (("socket/0", "xdp"),), "prog_arrays": ()},
            LoaderError,
            r"program socket/0: the Python loader knows no program type 'xdp'; "
            r"it loads socket_filter",
        ),
        (
            {"attach": (("socket/0", "xdp:lo"),)},
            LoaderError,
            r"cannot attach to 'xdp:lo'; it attaches to \"socket:IFACE\"",
        ),
        (
            {"attach": (("socket/1", "socket:lo"), ("socket/1", "socket:lo"))},
            LoaderError,
            r"program socket/1 is to be attached twice",
        ),
    ],
    ids=[
        "missing-section",
        "missing-map",
        "index-beyond",
        "not-a-prog-array",
        "target-not-loaded",
        "unknown-type",
        "unknown-target",
        "attached-twice",
    ],
)
def test_a_bad_request_is_refused_before_any_bpf_call(
    kernel: FakeKernel,
    flows: Path,
    changes: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        loader.load_request(request(flows, **changes))

    assert kernel.events == []


def test_a_map_type_the_loader_does_not_know_is_refused(kernel: FakeKernel, tmp_path: Path) -> None:
    percpu = compile_object("percpu", tmp_path)

    with pytest.raises(
        BpfObjectError,
        match=r"map per_cpu has type 6, which the Python loader does not support "
        r"\(it supports hash \(1\), array \(2\), prog_array \(3\), array_of_maps \(12\), "
        r"hash_of_maps \(13\)\)",
    ):
        loader.load_request(LoadRequest(percpu, programs=(("socket1", "socket_filter"),)))

    assert kernel.events == []


def test_the_old_interface_loads_every_program_typed_by_its_section(
    kernel: FakeKernel, flows: Path
) -> None:
    with loader.load(flows) as loaded:
        assert list(loaded.programs) == ["socket/0", "socket/1"]
        kernel.maps[loaded.map("runs").fd].entries[(1).to_bytes(4, "little")] = (42).to_bytes(
            8, "little"
        )
        assert loaded.map_value("runs", 1) == 42
        assert loaded.map_value("runs", 0) == 0

    assert {p.type for p in kernel.programs.values()} == {SOCKET_FILTER}
    assert kernel.open_fds() == []
