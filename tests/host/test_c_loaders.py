"""The C loaders (classic on libelf, and libbpf) on the host kernel, through the loader protocol.

Each loader is built as the harness builds it (:func:`harness.build.build_loader`)
against the host's headers, and loads its own format of tests/data/objects_c's
udp_ports object: "socket/entry" is attached to ``lo`` and tail-calls index 0 of
the prog array jump, which the loader fills with "socket/count"; that program
counts packets and bytes per UDP destination port in the hash map ports.
Datagrams are sent to a few ports, each received by a socket bound there, and the
dumped entries must decode to exactly what was sent: on ``lo`` each datagram is
seen twice (leaving and arriving), as a frame of 14 + 20 + 8 header bytes and its
payload.

Each traffic case runs in a private network namespace (``unshare -n``), so the
only frames on its ``lo`` are its own: this file, run as a program, is what runs
inside it. It drives the loader with the guest's protocol driver
(:class:`harness.guest.scenario.LoaderProgram`), sends the datagrams and prints
the dump as the protocol's JSON. Needs root.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import paths, proc
from harness.build import bpf_argv, build_loader, link_options, program_argv
from harness.errors import HarnessError, LoaderError
from harness.guest.scenario import LoaderProgram
from harness.guest.traffic import bring_up
from harness.kernels.cache import cached_entries
from harness.loaders import LOADERS_DIR, builtin
from harness.loaders.protocol import READY, Dump, LoadRequest, format_dump, parse_dump
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner, require
from harness.samples import Layout

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

OBJECTS = PROJECT_ROOT / "tests" / "data" / "objects_c"

#: The classic loader, as the harness lists it.
CLASSIC = builtin(["c"])[0]
#: The libbpf loader, as the harness lists it.
LIBBPF = builtin(["libbpf"])[0]
#: Each C loader and the object format it loads.
LOADERS = {"c": "classic", "libbpf": "btf"}

PORT_KEY = Layout("<I", ("port",))
PORT_COUNTS = Layout("<QQ", ("packets", "bytes"))
#: Ethernet, IPv4 (no options) and UDP headers before each datagram's payload.
UDP_FRAME_OVERHEAD = 14 + 20 + 8
#: The index of jump that socket/entry tail-calls.
COUNT_INDEX = 0
#: The destination address of every datagram.
DESTINATION = "127.0.0.1"


@dataclass(frozen=True)
class Datagrams:
    """``count`` datagrams of ``payload`` bytes to ``port``."""

    port: int
    count: int
    payload: int


TRAFFIC = (Datagrams(9000, 3, 100), Datagrams(9001, 1, 1000), Datagrams(9002, 2, 10))

#: How the namespace side ends a run: closing the loader's input, or SIGTERM.
END_EOF = "eof"
END_SIGTERM = "sigterm"
#: A run whose request leaves the prog array empty.
NO_PROG_ARRAY = "no-prog-array"
#: A run of udp_ports_shared: both programs in SEC("socket"), jump filled by the object.
SHARED = "shared"
#: In place of a loader's path: the Python loader, as a program of the protocol.
PYTHON = "python"


def udp_ports_request(obj: Path, *, fill: bool = True) -> LoadRequest:
    return LoadRequest(
        object=obj,
        programs=(("socket/entry", "socket_filter"), ("socket/count", "socket_filter")),
        attach=(("socket/entry", "socket:lo"),),
        prog_arrays=(("jump", COUNT_INDEX, "socket/count"),) if fill else (),
        dump=("ports", "jump"),
    )


def shared_request(obj: Path) -> LoadRequest:
    """udp_ports_shared's programs by their functions; no --prog-array: the object fills jump."""
    return LoadRequest(
        object=obj,
        programs=(("socket#entry", "socket_filter"), ("socket#count_udp", "socket_filter")),
        attach=(("socket#entry", "socket:lo"),),
        dump=("ports", "jump"),
    )


# --- the host side: pytest ------------------------------------------------------------


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each C loader built against the host's headers, by name."""
    root = tmp_path_factory.mktemp("build")
    loaders = [CLASSIC, LIBBPF]
    return {
        loader.name: build_loader(loader, "host", None, build_root=root).outputs["program"]
        for loader in loaders
    }


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The udp_ports object of each format, by format."""
    out = tmp_path_factory.mktemp("objects")
    return {
        fmt: compile_data(f"udp_ports_{fmt}_kern.c", out, btf=fmt == "btf")
        for fmt in set(LOADERS.values())
    }


@pytest.fixture(scope="module")
def shared_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_data("udp_ports_shared_kern.c", tmp_path_factory.mktemp("shared"), btf=True)


def compile_data(name: str, out_dir: Path, *, btf: bool) -> Path:
    source = OBJECTS / name
    output = out_dir / source.with_suffix(".o").name
    clang = require("clang", "clang")
    SubprocessRunner().run(bpf_argv(clang, None, source, output, btf=btf))
    return output


def in_namespace(*args: str) -> Completed:
    """This file run as a program in a network namespace of its own."""
    argv = ["unshare", "-n", sys.executable, __file__, *args]
    return SubprocessRunner().run(argv, check=False, cwd=PROJECT_ROOT, timeout=120)


def run_loader(program: Path, *args: str) -> Completed:
    """The loader with ``args`` and an empty input, in a namespace of its own."""
    return SubprocessRunner().run(
        ["unshare", "-n", str(program), *args], check=False, input="", timeout=60
    )


def decoded_ports(dump: Dump) -> dict[int, tuple[int, int]]:
    ports: dict[int, tuple[int, int]] = {}
    for raw_key, raw_value in dump["ports"]:
        (port,) = PORT_KEY.decode(raw_key)
        packets, length = PORT_COUNTS.decode(raw_value)
        assert isinstance(port, int) and isinstance(packets, int) and isinstance(length, int)
        ports[port] = (packets, length)
    return ports


def expected_ports() -> dict[int, tuple[int, int]]:
    return {d.port: (2 * d.count, 2 * d.count * (UDP_FRAME_OVERHEAD + d.payload)) for d in TRAFFIC}


@pytest.mark.parametrize("end", [END_EOF, END_SIGTERM])
@pytest.mark.parametrize("name", LOADERS)
def test_each_port_is_counted_exactly_through_the_tail_call(
    programs: dict[str, Path], objects: dict[str, Path], name: str, end: str
) -> None:
    done = in_namespace(end, str(programs[name]), str(objects[LOADERS[name]]))

    assert done.returncode == 0, done.stderr
    dump = parse_dump(done.stdout, ["ports", "jump"], loader=name)
    assert decoded_ports(dump) == expected_ports()
    # The prog array holds a program (its id) at the one index that was filled.
    assert [key for key, _ in dump["jump"]] == [PORT_KEY.encode((COUNT_INDEX,))]


@pytest.mark.parametrize("name", ["libbpf", PYTHON])
def test_programs_sharing_a_section_count_through_the_prog_array_the_object_fills(
    programs: dict[str, Path], shared_object: Path, name: str
) -> None:
    loader = PYTHON if name == PYTHON else str(programs[name])
    done = in_namespace(SHARED, loader, str(shared_object))

    assert done.returncode == 0, done.stderr
    dump = parse_dump(done.stdout, ["ports", "jump"], loader=name)
    assert decoded_ports(dump) == expected_ports()
    # What the object's initialiser put in jump: a program at index 0 and nothing else.
    assert [key for key, _ in dump["jump"]] == [PORT_KEY.encode((0,))]


def test_the_classic_loader_refuses_a_program_of_a_shared_section_saying_why(
    programs: dict[str, Path], shared_object: Path
) -> None:
    done = run_loader(programs["c"], *shared_request(shared_object).argv())

    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"{shared_object}: cannot load socket#entry: this loader loads a whole section as one "
        "program (as the kernel's old bpf_load.c did), not one function of a section holding "
        "several; use the python or libbpf loader"
    ), done.stderr


@pytest.mark.parametrize(
    ("program", "complaint"),
    [
        (
            "socket",
            "section socket holds more than one program (count_udp, entry, ...); name one by "
            "its function, as socket#count_udp",
        ),
        (
            "socket#nope",
            "no program socket#nope: no function nope in section socket (it has: "
            "socket#count_udp, socket#entry)",
        ),
        (
            "socket/entry#entry",
            "no program socket/entry#entry: no function entry in section socket/entry",
        ),
    ],
)
def test_libbpf_names_what_a_program_of_a_shared_section_lacks(
    programs: dict[str, Path], shared_object: Path, program: str, complaint: str
) -> None:
    request = LoadRequest(shared_object, programs=((program, "socket_filter"),))

    done = run_loader(programs["libbpf"], *request.argv())

    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{shared_object}: {complaint}"), done.stderr


@pytest.mark.parametrize("name", LOADERS)
def test_without_the_prog_array_filled_nothing_is_counted(
    programs: dict[str, Path], objects: dict[str, Path], name: str
) -> None:
    done = in_namespace(NO_PROG_ARRAY, str(programs[name]), str(objects[LOADERS[name]]))

    assert done.returncode == 0, done.stderr
    dump = parse_dump(done.stdout, ["ports", "jump"], loader=name)
    assert dump == {"ports": [], "jump": []}


@pytest.mark.parametrize("name", LOADERS)
def test_a_truncated_object_fails_naming_it(
    programs: dict[str, Path], objects: dict[str, Path], name: str, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated_kern.o"
    truncated.write_bytes(objects[LOADERS[name]].read_bytes()[:300])

    done = run_loader(programs[name], *udp_ports_request(truncated).argv())

    assert done.returncode == 1
    assert done.stdout == ""
    # libbpf says what it found first; the loader's own line, the last, names the file.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{truncated}: "), done.stderr
    assert "rebuild" in last or "libbpf cannot open the object" in last, done.stderr


@pytest.mark.parametrize("name", LOADERS)
@pytest.mark.parametrize("source", ["rejected", "rejected_long"])
def test_a_verifier_rejection_names_the_section_and_keeps_the_whole_log(
    programs: dict[str, Path], name: str, source: str, tmp_path: Path
) -> None:
    """rejected_long's log (over 100 KiB) outgrows the loaders' first log buffer."""
    fmt = LOADERS[name]
    rejected = compile_data(f"{source}_{fmt}_kern.c", tmp_path, btf=fmt == "btf")
    request = LoadRequest(rejected, programs=(("socket/rejected", "socket_filter"),))

    done = run_loader(programs[name], *request.argv())

    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    summary = [line for line in lines if line.startswith(f"{rejected}: ")]
    assert len(summary) == 1, done.stderr
    assert "socket/rejected" in summary[0]
    # The verifier's log reaches stderr whole: its first instruction and its verdict.
    assert any(line.startswith("0: (") for line in lines), done.stderr[:2000]
    assert any("invalid mem access 'map_value_or_null'" in line for line in lines), done.stderr
    assert any(line.startswith("processed ") for line in lines), done.stderr[-2000:]


@pytest.mark.parametrize("name", LOADERS)
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"dump": ("nosuch",)}, "nosuch"),
        (
            {"programs": (("socket/nosuch", "socket_filter"),), "attach": (), "prog_arrays": ()},
            "socket/nosuch",
        ),
        ({"prog_arrays": (("ports", 0, "socket/count"),)}, "ports"),
    ],
    ids=["missing-map", "missing-section", "not-a-prog-array"],
)
def test_a_request_the_object_cannot_meet_fails_naming_what_is_missing(
    programs: dict[str, Path],
    objects: dict[str, Path],
    name: str,
    change: dict[str, Any],
    named: str,
) -> None:
    obj = objects[LOADERS[name]]
    request = dataclasses.replace(udp_ports_request(obj), **change)

    done = run_loader(programs[name], *request.argv())

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{obj}: ") and named in last, done.stderr


#: A request that is well formed: the usage errors below add to it or take from it.
LOAD_COUNT = ["--object", "OBJ", "--program", "socket/count:socket_filter"]
USAGE_ERRORS = {
    "nothing": [],
    "no-program": ["--object", "OBJ"],
    "unknown-type": ["--object", "OBJ", "--program", "socket/count:xdp"],
    "program-without-type": ["--object", "OBJ", "--program", "socket/count"],
    "unknown-option": [*LOAD_COUNT, "--bogus", "x"],
    "option-without-value": [*LOAD_COUNT, "--dump"],
    "attach-not-socket": [*LOAD_COUNT, "--attach", "socket/count:tc:lo"],
    "attach-unloaded-section": [*LOAD_COUNT, "--attach", "socket/entry:socket:lo"],
    "prog-array-index-not-a-number": [*LOAD_COUNT, "--prog-array", "jump:x:socket/count"],
    "object-twice": ["--object", "OBJ", *LOAD_COUNT],
}


@pytest.mark.parametrize("name", LOADERS)
@pytest.mark.parametrize("args", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_a_wrong_argument_exits_2_with_usage(
    programs: dict[str, Path], objects: dict[str, Path], name: str, args: list[str]
) -> None:
    obj = str(objects[LOADERS[name]])
    argv = [obj if arg == "OBJ" else arg for arg in args]

    done = run_loader(programs[name], *argv)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "usage: " in done.stderr


def header_sets() -> dict[str, Path | None]:
    """The host's headers and each cached kernel's UAPI headers, by release."""
    found: dict[str, Path | None] = {"host": None}
    for entry, manifest in cached_entries(paths.cache_dir()):
        if (entry / "include" / "linux" / "bpf.h").is_file():
            found[manifest.release] = entry / "include"
    return found


HEADER_SETS = header_sets()
#: What is built against each kernel's headers: the loaders, and sockex1's demo on bpf_load.c
#: (and protocol.c, whose packet socket bpf_load.h's bpf_attach_packet_socket is).
PROGRAMS = {
    "c": (CLASSIC.sources, CLASSIC.libraries),
    "libbpf": (LIBBPF.sources, LIBBPF.libraries),
    "sockex1": (
        (
            PROJECT_ROOT / "samples" / "sockex1" / "sockex1_user.c",
            LOADERS_DIR / "classic" / "bpf_load.c",
            LOADERS_DIR / "common" / "protocol.c",  # bpf_attach_packet_socket
        ),
        CLASSIC.libraries,
    ),
}


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("release", HEADER_SETS)
def test_the_c_programs_build_without_a_warning_against_each_kernels_headers(
    program: str, release: str, tmp_path: Path
) -> None:
    sources, libraries = PROGRAMS[program]
    runner = SubprocessRunner()
    cc, *flags = program_argv(
        require("cc", "gcc"),
        HEADER_SETS[release],
        sources,
        tmp_path / program,
        include=sorted({source.parent for source in sources}),
        libraries=link_options(libraries, runner),
    )

    done = runner.run([cc, "-Wextra", "-Werror", *flags], check=False)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# --- the namespace side: this file as a program ---------------------------------------


def send_traffic() -> None:
    """Send every datagram to a socket bound at its port, which receives it.

    A datagram received has been through lo's receive path, so the packet socket's
    program has run on both of its frames before the maps are read.
    """
    for datagrams in TRAFFIC:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            receiver.bind((DESTINATION, datagrams.port))
            receiver.settimeout(10)
            for _ in range(datagrams.count):
                sender.sendto(b"x" * datagrams.payload, (DESTINATION, datagrams.port))
                if len(receiver.recv(65536)) != datagrams.payload:
                    raise LoaderError(f"a datagram to port {datagrams.port} came back cut")


def loader_argv(program: Path) -> list[str]:
    """How to start a loader: its path, or the Python loader's module (:data:`PYTHON`)."""
    if str(program) == PYTHON:
        return [sys.executable, "-m", "harness.bpf"]
    return [str(program)]


def run_until_eof(program: Path, request: LoadRequest) -> Dump:
    """The loader driven as the guest drives it: ready, traffic, input closed, dump."""
    child = proc.spawn([*loader_argv(program), *request.argv()])
    try:
        driver = LoaderProgram(program.name, child, request)
        driver.wait_ready()
        send_traffic()
        return driver.dump()
    finally:
        proc.kill_group(child)


def run_until_sigterm(program: Path, request: LoadRequest) -> Dump:
    """Ready, traffic, then SIGTERM with the loader's input still open."""
    child = proc.spawn([str(program), *request.argv()])
    assert child.stdout is not None and child.stderr is not None
    try:
        first = child.stdout.readline().decode().strip()
        if first != READY:
            raise LoaderError(
                f"{program.name} said {first!r}, not {READY!r}: "
                f"{child.stderr.read().decode(errors='replace')}"
            )
        send_traffic()
        child.send_signal(signal.SIGTERM)
        report = child.stdout.read().decode()  # to its end: the loader has exited
        status = child.wait(30)
        if status != 0:
            raise LoaderError(
                f"{program.name} exited with {status} after SIGTERM: "
                f"{child.stderr.read().decode(errors='replace')}"
            )
        return parse_dump(report, request.dump, loader=program.name)
    finally:
        proc.kill_group(child)


def main(argv: Sequence[str]) -> int:
    mode, program, obj = argv[0], Path(argv[1]), Path(argv[2])
    try:
        bring_up("lo")
        if mode == END_SIGTERM:
            dump = run_until_sigterm(program, udp_ports_request(obj))
        elif mode == SHARED:
            dump = run_until_eof(program, shared_request(obj))
        else:
            dump = run_until_eof(program, udp_ports_request(obj, fill=mode != NO_PROG_ARRAY))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_dump(dump))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
