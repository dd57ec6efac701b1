"""The guest scenario's seams that need no root: its JSON, and driving the C program."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.errors import LoaderError, ResultsError
from harness.guest.__main__ import parse_args
from harness.guest.result import ProtocolCount, SampleResult, load_result, write_result
from harness.guest.scenario import Options, attach


def sample_result() -> SampleResult:
    return SampleResult(
        release="6.1.0-56-amd64",
        loader="c",
        protocols={
            "tcp": ProtocolCount(527224, 527224, 262144, 44, 0),
            "udp": ProtocolCount(0, 0, 0, 0, 0),
            "icmp": ProtocolCount(1960, 1960, 280, 20, 0),
        },
        details={"quiet_seconds": "0.301"},
    )


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    result = sample_result()

    path = write_result(tmp_path, result)

    assert path == tmp_path / "c.json"
    assert load_result(path) == result
    assert os.listdir(tmp_path) == ["c.json"]


def test_result_with_an_error_and_no_counts(tmp_path: Path) -> None:
    failed = SampleResult("5.10.0-46-amd64", "python", {}, error="verifier said no\nlog")

    assert load_result(write_result(tmp_path, failed)) == failed


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"release": "x"}', '{"release": "x", "loader": "c", "protocols": 3}']
)
def test_unreadable_result(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)

    with pytest.raises(ResultsError, match=r"c\.json"):
        load_result(path)


def test_missing_result_says_the_scenario_did_not_report(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="did not report"):
        load_result(tmp_path / "python.json")


def test_arguments() -> None:
    args = parse_args(["--loader", "c", "--object", "o", "--out", "d", "--icmp-count", "3"])

    assert (args.loader, args.object, args.out) == ("c", Path("o"), Path("d"))
    assert (args.tcp_bytes, args.udp_bytes, args.icmp_count) == (256 * 1024, 0, 3)
    with pytest.raises(SystemExit):
        parse_args(["--object", "o", "--out", "d", "--udp-bytes", "-1"])


def fake_c_loader(tmp_path: Path, body: str) -> Path:
    """A stand-in for the C program: a Python script with the same conversation."""
    path = tmp_path / "sockex1"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}")
    path.chmod(0o755)
    return path


def test_c_loader_conversation(tmp_path: Path) -> None:
    binary = fake_c_loader(
        tmp_path,
        "assert sys.argv[1:] == ['--harness', 'obj_kern.o']\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "print('TCP 10 UDP 20 ICMP 30 bytes')\n",
    )
    options = Options(bpf_object=Path("obj_kern.o"), c_loader=binary)

    with attach("c", options) as sample:
        counts = sample.read()

    assert counts == {"tcp": 10, "udp": 20, "icmp": 30}


def test_c_loader_failing_to_load_reports_its_stderr(tmp_path: Path) -> None:
    binary = fake_c_loader(
        tmp_path,
        "sys.stderr.write('obj_kern.o: not an ELF object\\n')\nsys.exit(1)\n",
    )
    options = Options(bpf_object=Path("obj_kern.o"), c_loader=binary)

    with (
        pytest.raises(LoaderError, match=r"exited with status 1 before attaching: obj_kern"),
        attach("c", options),
    ):
        pass


def test_c_loader_failing_after_attach(tmp_path: Path) -> None:
    binary = fake_c_loader(
        tmp_path,
        "print('ready', flush=True)\nsys.stdin.read()\n"
        "sys.stderr.write('cannot read my_map[6]\\n')\nsys.exit(1)\n",
    )
    options = Options(bpf_object=Path("obj_kern.o"), c_loader=binary)

    with (
        pytest.raises(LoaderError, match=r"before reporting its counts: cannot read my_map"),
        attach("c", options) as sample,
    ):
        sample.read()


def test_unknown_loader() -> None:
    with (
        pytest.raises(LoaderError, match="unknown loader 'rust'"),
        attach("rust", Options(bpf_object=Path("o"))),
    ):
        pass
