"""``python3 -m harness.bpf``: the loader protocol's command line and exchange, on a fake kernel."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_bpf import FakeKernel
from sockex1_objects import compile_object

from harness.bpf import __main__ as cli, loader, syscall
from harness.loaders.protocol import READY, LoadRequest, parse_dump
from harness.paths import PROJECT_ROOT
from harness.proc import SubprocessRunner


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_object("flows", tmp_path_factory.mktemp("objects"))


@pytest.fixture
def closed_stdin() -> Iterator[int]:
    """A stdin at end of input."""
    read, write = os.pipe()
    os.close(write)
    yield read
    os.close(read)


@pytest.fixture
def open_stdin() -> Iterator[int]:
    """A stdin that never ends: only a signal can end the wait."""
    read, write = os.pipe()
    yield read
    os.close(read)
    os.close(write)


def flows_request(obj: Path) -> LoadRequest:
    return LoadRequest(
        object=obj,
        programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
        prog_arrays=(("jmp_table", 1, "socket/1"),),
        dump=("runs", "flows"),
    )


def test_a_request_survives_its_command_line() -> None:
    request = LoadRequest(
        object=Path("build/flows_kern.o"),
        programs=(
            ("socket/0", "socket_filter"),
            ("socket1", "socket_filter"),
            ("socket#count", "socket_filter"),
        ),
        attach=(("socket/0", "socket:lo"), ("socket1", "socket:veth-a.1")),
        prog_arrays=(
            ("jmp_table", 1, "socket1"),
            ("jmp_table", 0, "socket/0"),
            ("jmp_table", 2, "socket#count"),
        ),
        dump=("flows", "runs"),
    )

    assert cli.parse_args(request.argv()) == request


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--program", "socket1:socket_filter"], "--object"),
        (["--object", "x.o", "--program", "socket1"], "is not PROGRAM:TYPE"),
        (["--object", "x.o", "--program", "socket#:socket_filter"], "is not PROGRAM:TYPE"),
        (["--object", "x.o", "--program", "#main:socket_filter"], "is not PROGRAM:TYPE"),
        (["--object", "x.o", "--program", "s#a#b:socket_filter"], "is not PROGRAM:TYPE"),
        (["--object", "x.o", "--program", "socket1:xdp"], "unknown program type 'xdp'"),
        (["--object", "x.o", "--attach", "socket1:lo"], "is not PROGRAM:socket:IFACE"),
        (["--object", "x.o", "--attach", "socket1:socket:"], "is not PROGRAM:socket:IFACE"),
        (["--object", "x.o", "--attach", "s#:socket:lo"], "is not PROGRAM:socket:IFACE"),
        (["--object", "x.o", "--prog-array", "jmp:-1:s"], "is not MAP:INDEX:PROGRAM"),
        (["--object", "x.o", "--prog-array", "jmp:1"], "is not MAP:INDEX:PROGRAM"),
        (["--object", "x.o", "--prog-array", "jmp:1:s#"], "is not MAP:INDEX:PROGRAM"),
    ],
)
def test_a_malformed_command_line_exits_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str], kernel: FakeKernel
) -> None:
    assert cli.main(argv) == 2

    captured = capsys.readouterr()
    assert complaint in captured.err
    assert captured.out == ""
    assert kernel.events == []


def test_ready_then_the_dump_at_end_of_input(
    flows: Path, kernel: FakeKernel, closed_stdin: int, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(flows_request(flows).argv(), stdin_fd=closed_stdin)

    captured = capsys.readouterr()
    assert status == 0, captured.err
    ready, report = captured.out.split("\n", 1)
    assert ready == READY
    dump = parse_dump(report, ["runs", "flows"], loader="python")
    assert dump == {
        "runs": [(bytes(4), bytes(8)), ((1).to_bytes(4, "little"), bytes(8))],
        "flows": [],
    }
    assert json.loads(report)["maps"].keys() == {"runs", "flows"}
    assert captured.err == ""
    assert kernel.open_fds() == []


def test_sigterm_ends_the_wait_like_end_of_input(
    flows: Path,
    kernel: FakeKernel,
    open_stdin: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_load = loader.load_request

    def load_then_terminated(request: LoadRequest) -> loader.Attached:
        attached = real_load(request)
        os.kill(os.getpid(), signal.SIGTERM)  # before the wait has even started
        return attached

    monkeypatch.setattr(loader, "load_request", load_then_terminated)
    before = signal.getsignal(signal.SIGTERM)

    status = cli.main(flows_request(flows).argv(), stdin_fd=open_stdin)

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith(READY + "\n")
    assert '"runs"' in captured.out
    assert signal.getsignal(signal.SIGTERM) == before
    assert kernel.open_fds() == []


def test_a_failure_is_one_line_on_stderr_and_exit_1(
    flows: Path, kernel: FakeKernel, closed_stdin: int, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*flows_request(flows).argv(), "--prog-array", "jmp_table:9:socket/1"]

    assert cli.main(argv, stdin_fd=closed_stdin) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ")
    assert "prog array jmp_table has 4 entries" in line


def test_a_rejected_program_is_followed_by_the_verifier_log(
    flows: Path,
    closed_stdin: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = FakeKernel(reject={"count_udp": "0: R1=ctx()\nR2 invalid mem access 'scalar'\n"})
    monkeypatch.setattr(syscall, "bpf", kernel)

    assert cli.main(flows_request(flows).argv(), stdin_fd=closed_stdin) == 1

    lines = capsys.readouterr().err.splitlines()
    kernel.release()
    assert lines[0] == (
        "error: the kernel's verifier rejected program count_udp: R2 invalid mem access 'scalar'"
    )
    assert lines[1:] == ["verifier log:", "0: R1=ctx()", "R2 invalid mem access 'scalar'"]


def test_the_module_runs_as_a_program_with_the_protocols_exit_statuses(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    python = [sys.executable, "-m", "harness.bpf"]

    usage = runner.run([*python, "--object"], check=False, cwd=PROJECT_ROOT, input="")
    missing = runner.run(
        [*python, "--object", str(tmp_path / "absent_kern.o"), "--program", "s:socket_filter"],
        check=False,
        cwd=PROJECT_ROOT,
        input="",
    )

    assert usage.returncode == 2
    assert missing.returncode == 1
    assert missing.stdout == ""
    (line,) = missing.stderr.splitlines()
    assert line.startswith(f"error: cannot read BPF object {tmp_path / 'absent_kern.o'}")
