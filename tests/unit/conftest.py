"""The unit layer never touches the network.

Every unit test runs with socket connections and name resolution limited to this
machine: a connect to any other address, or a look-up of any name but ``localhost``,
raises :class:`NetworkUseError`. It is no ``OSError`` on purpose: code under test that
treats an unreachable archive as an answer (``apt.probe`` returns the reason) must not
swallow it, and the test fails at its teardown even if something caught it.
Subprocesses are not covered; unit tests run them through a fake runner.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from process_trees import alive

from harness import proc
from harness.bpf import syscall

if TYPE_CHECKING:
    from fake_bpf import FakeKernel


class NetworkUseError(AssertionError):
    """A unit test tried to reach the network."""


_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host: object) -> bool:
    if host is None or host == "":
        return True  # the local host, in getaddrinfo's terms
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name: it would need DNS


def _address_is_local(family: int, address: Any) -> bool:
    if family == socket.AF_UNIX or family == getattr(socket, "AF_NETLINK", -1):
        return True
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        return _is_local(address[0])
    return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any connection or look-up leaving this machine; yields the attempts seen."""
    attempts: list[str] = []

    def refuse(what: str) -> NetworkUseError:
        attempts.append(what)
        return NetworkUseError(
            f"a unit test tried to reach the network ({what}); answer through a fake "
            "runner or a monkeypatched probe instead, or move the test to tests/network"
        )

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if not _address_is_local(self.family, address):
            raise refuse(f"connect to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _address_is_local(self.family, address):
            raise refuse(f"connect to {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            raise refuse(f"name look-up of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def by_name(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"name look-up of {host!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, by_name)
    yield attempts
    if attempts:
        pytest.fail(f"the test tried to reach the network: {'; '.join(attempts)}")


@pytest.fixture
def reaped() -> Iterator[list[int]]:
    """Pids a test started; whatever still runs at the end is killed, pass or fail."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def pytest_configure(config: pytest.Config) -> None:
    proc.PytestSignals.register(config)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    """``bpf(2)`` answered by a :class:`FakeKernel` for the test; its objects freed after."""
    # Imported here: test_no_network runs a copy of this file on its own.
    from fake_bpf import FakeKernel

    fake = FakeKernel()
    monkeypatch.setattr(syscall, "bpf", fake)
    yield fake
    fake.release()
