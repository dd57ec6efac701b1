"""The unit layer's network guard (conftest.py's ``no_network``) blocks what it must,
and only that."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from harness.kernels import apt


def test_a_name_look_up_fails_loudly_even_where_oserror_is_caught(
    no_network: list[str],
) -> None:
    # apt.probe turns every OSError into "unreachable": the guard's error must not be
    # one (it is an AssertionError, which neither urllib nor probe catches).
    with pytest.raises(AssertionError, match=r"archive\.example\.org"):
        apt.probe("http://archive.example.org/debian/dists/sid/InRelease")
    with pytest.raises(AssertionError, match="tried to reach the network"):
        urllib.request.urlopen("http://archive.example.org/", timeout=1)
    assert len(no_network) == 2
    no_network.clear()  # seen and expected: do not fail this test at teardown


def test_a_connect_to_another_address_fails_loudly(no_network: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        with pytest.raises(AssertionError, match=r"192\.0\.2\.1"):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
        with pytest.raises(AssertionError, match="tried to reach the network"):
            sock.connect_ex(("2001:db8::1", 80))
    assert len(no_network) == 2
    no_network.clear()


def test_this_machine_stays_reachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"x")
                assert peer.recv(1) == b"x"
    left, right = socket.socketpair()
    left.close()
    right.close()


def test_a_swallowed_attempt_still_fails_the_test(tmp_path: Path) -> None:
    for helper in ("conftest.py", "process_trees.py"):
        (tmp_path / helper).write_text((Path(__file__).parent / helper).read_text())
    (tmp_path / "test_swallow.py").write_text(
        "import urllib.request\n\n\n"
        "def test_swallows():\n"
        "    try:\n"
        "        urllib.request.urlopen('http://archive.example.org/', timeout=1)\n"
        "    except BaseException:\n"
        "        pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed, 1 error" in run.stdout
    assert "tried to reach the network: name look-up of 'archive.example.org'" in run.stdout
