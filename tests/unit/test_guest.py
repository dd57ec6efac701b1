"""The guest's seams that need no root: the plan and result JSON, and driving loader programs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.errors import LoaderError, LoaderProtocolError, ResultsError
from harness.guest import own, scenario
from harness.guest.plan import CasePlan, Plan, read_plan, write_plan
from harness.guest.result import GuestResult, load_result, write_result
from harness.guest.scenario import attach
from harness.guest.traffic import on_one_cpu
from harness.loaders.protocol import LoadRequest
from harness.packets import Frame, Frames, Icmp, Tcp, Udp

REQUEST = LoadRequest(
    object=Path("obj_kern.o"),
    programs=(("socket/0", "socket_filter"), ("socket/1", "socket_filter")),
    attach=(("socket/0", "socket:lo"),),
    prog_arrays=(("jmp_table", 1, "socket/1"),),
    dump=("flows",),
)


def case(tmp_path: Path, command: tuple[str, ...] = (), loader: str = "python") -> CasePlan:
    return CasePlan(
        sample="demo",
        loader=loader,
        command=command,
        request=REQUEST,
        traffic=(Tcp(1000, "127.0.0.2"), Udp(10), Icmp(2), Frames("vlan", 3, payload=20)),
        result=tmp_path / "demo" / f"{loader}.json",
    )


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    plan = Plan((case(tmp_path), case(tmp_path, ("/bin/loader",), "c")))

    write_plan(tmp_path / "plan.json", plan)

    assert read_plan(tmp_path / "plan.json") == plan
    asked = Plan(plan.cases, kernel_log=True)
    write_plan(tmp_path / "asked.json", asked)
    assert read_plan(tmp_path / "asked.json") == asked


@pytest.mark.parametrize("text", ["", "{", "[]", '{"cases": [{"sample": "x"}]}'])
def test_unreadable_plan(tmp_path: Path, text: str) -> None:
    (tmp_path / "plan.json").write_text(text)

    with pytest.raises(ResultsError, match="not a guest plan"):
        read_plan(tmp_path / "plan.json")


def guest_result() -> GuestResult:
    return GuestResult(
        sample="sockex1",
        loader="c",
        release="6.1.0-57-amd64",
        maps={"my_map": [("06000000", "0a00000000000000")]},
        frames=(Frame(4, 74, b"\x00" * 12 + b"\x08\x00"), Frame(0, 74, b"\x01\x02")),
        offered=2,
        sent={"tcp 127.0.0.1": 10},
        timings={"attach": 0.25},
        details={"quiet": "x"},
    )


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    result = guest_result()

    path = write_result(tmp_path / "sockex1" / "c.json", result)

    assert load_result(path) == result
    assert result.raw_maps() == {"my_map": [(b"\x06\0\0\0", b"\x0a" + bytes(7))]}
    assert os.listdir(tmp_path / "sockex1") == ["c.json"]


def test_result_with_an_error_and_nothing_else(tmp_path: Path) -> None:
    failed = GuestResult("sockex2", "python", "5.10.0-46-amd64", error="verifier said no\nlog")

    assert load_result(write_result(tmp_path / "r.json", failed)) == failed


@pytest.mark.parametrize("text", ["", "{", "[]", '{"sample": "x"}', '{"sample": 1, "frames": 3}'])
def test_unreadable_result(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)

    with pytest.raises(ResultsError, match=r"c\.json"):
        load_result(path)


def test_missing_result_says_the_guest_did_not_report(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="did not report"):
        load_result(tmp_path / "python.json")


def fake_loader(tmp_path: Path, body: str) -> Path:
    """A stand-in for a loader program: a Python script with the same conversation."""
    path = tmp_path / "loader"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}")
    path.chmod(0o755)
    return path


def test_loader_conversation(tmp_path: Path) -> None:
    program = fake_loader(
        tmp_path,
        "assert sys.argv[1:3] == ['--object', 'obj_kern.o'], sys.argv\n"
        "assert '--prog-array' in sys.argv and 'jmp_table:1:socket/1' in sys.argv\n"
        "print('libbpf: a line of its own', flush=True)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        'print(\'{"maps": {"flows": [["0100", "ff"]]}}\')\n',
    )

    with attach(case(tmp_path, (str(program),), "mine")) as attached:
        dump = attached.dump()

    assert dump == {"flows": [(b"\x01\x00", b"\xff")]}


def test_loader_failing_to_load_reports_its_stderr(tmp_path: Path) -> None:
    program = fake_loader(
        tmp_path, "sys.stderr.write('obj_kern.o: not an ELF object\\n')\nsys.exit(1)\n"
    )

    with (
        pytest.raises(LoaderError, match=r"mine loader exited with status 1 before .*not an ELF"),
        attach(case(tmp_path, (str(program),), "mine")),
    ):
        pass


def test_loader_that_never_says_ready_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scenario, "LOADER_TIMEOUT", 0.5)
    pid_file = tmp_path / "pid"
    program = fake_loader(
        tmp_path,
        f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n",
    )

    with (
        pytest.raises(LoaderError, match=r"did not load and attach"),
        attach(case(tmp_path, (str(program),), "mine")),
    ):
        pass

    # Killed and reaped, not left running or waited for.
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        ("", "it printed no JSON"),
        ("garbage", "its report is not JSON"),
        ('{"maps": {}}', "its report has no entry list for map 'flows'"),
        ('{"maps": {"flows": [["zz", "00"]]}}', "map flows: an entry is not hex"),
    ],
)
def test_loader_speaking_the_protocol_wrongly(tmp_path: Path, report: str, problem: str) -> None:
    program = fake_loader(
        tmp_path, f"print('ready', flush=True)\nsys.stdin.read()\nprint({report!r})\n"
    )

    with (
        pytest.raises(
            LoaderProtocolError, match=f"mine loader broke the loader protocol: {problem}"
        ),
        attach(case(tmp_path, (str(program),), "mine")) as attached,
    ):
        attached.dump()


def test_loader_failing_after_attach(tmp_path: Path) -> None:
    program = fake_loader(
        tmp_path,
        "print('ready', flush=True)\nsys.stdin.read()\n"
        "sys.stderr.write('cannot read map flows\\n')\nsys.exit(1)\n",
    )

    with (
        pytest.raises(LoaderError, match=r"before it could report its maps: cannot read map"),
        attach(case(tmp_path, (str(program),), "mine")) as attached,
    ):
        attached.dump()


def test_a_loader_without_a_command_must_be_the_python_one(tmp_path: Path) -> None:
    with (
        pytest.raises(LoaderError, match="loader rust has no command"),
        attach(case(tmp_path, (), "rust")),
    ):
        pass


# --- the traffic on one CPU ----------------------------------------------------------

#: With one CPU allowed, pinned and not look alike: these tests could not fail.
needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell pinned from not"
)


@needs_two_cpus
def test_on_one_cpu_pins_the_thread_its_threads_and_children_then_restores() -> None:
    before = os.sched_getaffinity(0)
    with on_one_cpu() as cpu:
        assert cpu == min(before) and os.sched_getaffinity(0) == {cpu}
        seen: list[set[int]] = []
        thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        thread.start()
        thread.join()
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert seen == [{cpu}] and child.stdout.strip() == str([cpu])
    assert os.sched_getaffinity(0) == before


class _NoCapture:
    """Stands in for the capture, which needs root and lo."""

    def __init__(self, interface: str) -> None:
        pass

    def __enter__(self) -> _NoCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait_quiet(self) -> bool:
        return True

    def frames(self) -> list[Frame]:
        return []

    def statistics(self) -> object:
        return type("Stats", (), {"packets": 0, "drops": 0})()


@needs_two_cpus
def test_every_traffic_step_is_sent_from_one_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = fake_loader(tmp_path, "print('ready', flush=True)\nsys.stdin.read()\n")
    program.write_text(program.read_text() + 'print(\'{"maps": {"flows": []}}\')\n')
    sent_on: list[set[int]] = []

    def send(step: object) -> tuple[str, int]:
        sent_on.append(os.sched_getaffinity(0))
        return "step", 1

    monkeypatch.setattr(scenario, "Capture", _NoCapture)
    monkeypatch.setattr(scenario, "bring_up", lambda interface: False)
    monkeypatch.setattr(scenario, "send", send)
    before = os.sched_getaffinity(0)

    result = scenario.run(case(tmp_path, (str(program),), "mine"), "test")

    assert result.error is None, result.error
    assert sent_on == [{min(before)}] * 4 and os.sched_getaffinity(0) == before


@needs_two_cpus
def test_an_own_program_starts_on_one_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(own, "Capture", _NoCapture)
    monkeypatch.setattr(own, "bring_up", lambda interface: False)
    command = (sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))")
    plan = dataclasses.replace(case(tmp_path), loader=own.OWN, command=command)

    result = own.run(plan, "test")

    assert result.details["exit_status"] == "0"
    assert result.details["stdout"].strip() == str([min(os.sched_getaffinity(0))])
