"""The Python loader on the host kernel: a hash map keyed by a struct, filled through a tail call.

The object is tests/data/objects/flows_kern.c (classic ``SEC("maps")``) or
flows_btf_kern.c (the same with BTF-defined maps, built with ``clang -g``):
"socket/0" is attached to ``lo`` and tail-calls "socket/1" (index 1 of the prog
array jmp_table) for every IPv4 UDP frame; "socket/1" counts packets and bytes per
destination address and port in the hash map flows. UDP datagrams are sent to a
few destinations, each received by a socket bound there, and the dumped entries
must decode to exactly what was sent: on ``lo`` each datagram is seen twice (leaving
and arriving), as a frame of 14 + 20 + 8 header bytes and its payload.

Each case runs in a private network namespace (``unshare -n``), so the only frames
on its ``lo`` are its own: this file, run as a program, is what runs inside it.
It loads the object in process (:func:`harness.bpf.loader.load_request`) or
through ``python3 -m harness.bpf`` (the loader protocol), sends the datagrams and
prints the dump as the protocol's JSON; what the loader did without (the notes of
:attr:`harness.bpf.loader.Attached.notes`) goes to stderr as ``note:`` lines, and
on this kernel there must be none. Needs root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import proc
from harness.bpf import loader
from harness.build import bpf_argv
from harness.errors import HarnessError, LoaderError
from harness.guest.traffic import bring_up
from harness.loaders.protocol import READY, Dump, LoadRequest, format_dump, parse_dump
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner, require
from harness.samples import Layout

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

OBJECTS = PROJECT_ROOT / "tests" / "data" / "objects"
SOCKEX1_DATA = PROJECT_ROOT / "tests" / "data" / "sockex1"

#: flows' key: the destination address and port as the packet holds them, then padding.
FLOW_KEY = Layout(">4sHH", ("daddr", "dport", "pad"))
FLOW_STATS = Layout("<QQ", ("packets", "bytes"))
RUNS = Layout("<Q", ("runs",))
#: Ethernet, IPv4 (no options) and UDP headers before each datagram's payload.
UDP_FRAME_OVERHEAD = 14 + 20 + 8
#: Index of jmp_table that dispatch tail-calls (COUNT_UDP in flows_kern.c).
COUNT_UDP = 1


@dataclass(frozen=True)
class Flow:
    """``count`` datagrams of ``payload`` bytes to ``dst``:``port``."""

    dst: str
    port: int
    count: int
    payload: int


TRAFFIC = (
    Flow("127.0.0.1", 9000, 3, 100),
    Flow("127.0.0.1", 9001, 1, 1000),
    Flow("127.0.0.2", 9000, 2, 10),
)

#: How the namespace side loads the object and ends the run.
IN_PROCESS = "in-process"
PROTOCOL_EOF = "protocol-eof"
PROTOCOL_SIGTERM = "protocol-sigterm"
NO_TAIL_CALL = "in-process-without-prog-array"
MODES = (IN_PROCESS, PROTOCOL_EOF, PROTOCOL_SIGTERM, NO_TAIL_CALL)


def flows_request(obj: Path, *, fill: bool = True) -> LoadRequest:
    return LoadRequest(
        object=obj,
        programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
        attach=(("socket/0", "socket:lo"),),
        prog_arrays=(("jmp_table", COUNT_UDP, "socket/1"),) if fill else (),
        dump=("flows", "runs", "jmp_table"),
    )


# --- the host side: pytest ------------------------------------------------------------


#: The flows objects: maps in "maps", or BTF-defined in ".maps" (built with BTF).
FLOWS_SOURCES = {"classic": ("flows_kern.c", False), "btf": ("flows_btf_kern.c", True)}


@pytest.fixture(scope="module", params=list(FLOWS_SOURCES))
def flows_object(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, btf = FLOWS_SOURCES[request.param]
    return compile_data(OBJECTS / source, tmp_path_factory.mktemp("objects"), btf=btf)


def compile_data(source: Path, out_dir: Path, *, btf: bool = False) -> Path:
    output = out_dir / source.with_suffix(".o").name
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output, btf=btf))
    return output


def in_namespace(*args: str) -> Completed:
    """This file run as a program in a network namespace of its own."""
    argv = ["unshare", "-n", sys.executable, __file__, *args]
    return SubprocessRunner().run(argv, check=False, cwd=PROJECT_ROOT, timeout=120)


def decoded_flows(dump: Dump) -> dict[tuple[str, int], tuple[int, int]]:
    flows: dict[tuple[str, int], tuple[int, int]] = {}
    for raw_key, raw_value in dump["flows"]:
        daddr, dport, pad = FLOW_KEY.decode(raw_key)
        packets, length = FLOW_STATS.decode(raw_value)
        assert isinstance(daddr, bytes) and pad == 0
        assert isinstance(dport, int) and isinstance(packets, int) and isinstance(length, int)
        flows[(socket.inet_ntoa(daddr), dport)] = (packets, length)
    return flows


def expected_flows() -> dict[tuple[str, int], tuple[int, int]]:
    return {
        (f.dst, f.port): (2 * f.count, 2 * f.count * (UDP_FRAME_OVERHEAD + f.payload))
        for f in TRAFFIC
    }


def runs(dump: Dump) -> list[int]:
    assert [key for key, _ in dump["runs"]] == [i.to_bytes(4, "little") for i in (0, 1)]
    return [int(RUNS.decode(value)[0]) for _, value in dump["runs"]]


@pytest.mark.parametrize("mode", [IN_PROCESS, PROTOCOL_EOF, PROTOCOL_SIGTERM])
def test_each_flow_is_counted_exactly_through_the_tail_call(flows_object: Path, mode: str) -> None:
    done = in_namespace(mode, str(flows_object))

    assert done.returncode == 0, done.stderr
    # This kernel takes the object's BTF, its map types and its line information.
    assert "note:" not in done.stderr
    dump = parse_dump(done.stdout, ["flows", "runs", "jmp_table"], loader=mode)
    assert decoded_flows(dump) == expected_flows()
    frames = 2 * sum(f.count for f in TRAFFIC)
    # Only our datagrams cross this namespace's lo: every frame is one of them.
    assert runs(dump) == [frames, frames]
    # The prog array holds a program (its id) at the one index that was filled.
    assert [key for key, _ in dump["jmp_table"]] == [COUNT_UDP.to_bytes(4, "little")]


def test_without_the_prog_array_filled_the_tail_call_finds_nothing(flows_object: Path) -> None:
    done = in_namespace(NO_TAIL_CALL, str(flows_object))

    assert done.returncode == 0, done.stderr
    dump = parse_dump(done.stdout, ["flows", "runs", "jmp_table"], loader=NO_TAIL_CALL)
    assert dump["flows"] == []
    assert dump["jmp_table"] == []
    assert runs(dump) == [2 * sum(f.count for f in TRAFFIC), 0]


@pytest.mark.parametrize("release", [(5, 10), (6, 1), (6, 12)])
def test_btf_made_for_an_older_kernel_is_taken_by_this_one(
    release: tuple[int, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # FLOAT, DECL_TAG and TYPE_TAG rewritten for 5.10 must still be BTF a kernel takes,
    # with the map's key and value types and the program's line information.
    tags = compile_data(PROJECT_ROOT / "tests" / "data" / "btf" / "tags_kern.c", tmp_path, btf=True)
    monkeypatch.setattr(loader, "kernel_release", lambda: release)

    with loader.load_request(
        LoadRequest(tags, programs=(("socket", "socket_filter"),), dump=("samples",))
    ) as attached:
        assert attached.notes == []
        assert attached.loaded.btf_fd is not None
        assert [key for key, _ in attached.dump()["samples"]] == [bytes(4)]


def test_the_protocol_loader_reports_a_rejection_with_the_verifier_log(tmp_path: Path) -> None:
    rejected = compile_data(SOCKEX1_DATA / "rejected_kern.c", tmp_path)

    done = SubprocessRunner().run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "harness.bpf",
            *LoadRequest(rejected, programs=(("socket1", "socket_filter"),)).argv(),
        ],
        check=False,
        cwd=PROJECT_ROOT,
        input="",
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    first, *log = done.stderr.splitlines()
    assert first.startswith("error: the kernel's verifier rejected program prog: ")
    assert "invalid mem access" in first
    assert log[0] == "verifier log:"
    assert any("map_value_or_null" in line for line in log)


# --- the namespace side: this file as a program ---------------------------------------


def send_traffic() -> None:
    """Send every flow's datagrams, each to a socket bound there that receives it.

    A datagram received has been through lo's receive path, so the packet socket's
    program has run on both of its frames before the maps are read.
    """
    for flow in TRAFFIC:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            receiver.bind((flow.dst, flow.port))
            receiver.settimeout(10)
            for _ in range(flow.count):
                sender.sendto(b"x" * flow.payload, (flow.dst, flow.port))
                if len(receiver.recv(65536)) != flow.payload:
                    raise LoaderError(f"a datagram to {flow.dst}:{flow.port} came back cut")


def run_in_process(obj: Path, *, fill: bool) -> str:
    with loader.load_request(flows_request(obj, fill=fill)) as attached:
        for note in attached.notes:
            print(f"note: {note}", file=sys.stderr)
        send_traffic()
        return format_dump(attached.dump())


def run_protocol(obj: Path, *, end: str) -> str:
    child = proc.spawn(
        [sys.executable, "-m", "harness.bpf", *flows_request(obj).argv()], cwd=PROJECT_ROOT
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        first = child.stdout.readline().decode().strip()
        if first != READY:
            raise LoaderError(
                f"python3 -m harness.bpf said {first!r}, not {READY!r}: "
                f"{child.stderr.read().decode(errors='replace')}"
            )
        send_traffic()
        if end == "sigterm":
            child.send_signal(signal.SIGTERM)
        else:
            child.stdin.close()
        report = child.stdout.read().decode()
        status = child.wait(30)
        if status != 0:
            raise LoaderError(
                f"python3 -m harness.bpf exited with {status}: "
                f"{child.stderr.read().decode(errors='replace')}"
            )
        sys.stderr.write(child.stderr.read().decode(errors="replace"))
        return report
    finally:
        proc.kill_group(child)


def main(argv: Sequence[str]) -> int:
    mode, obj = argv[0], Path(argv[1])
    try:
        bring_up("lo")
        if mode in (IN_PROCESS, NO_TAIL_CALL):
            report = run_in_process(obj, fill=mode == IN_PROCESS)
        else:
            report = run_protocol(obj, end="sigterm" if mode == PROTOCOL_SIGTERM else "eof")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
