"""``--loader-cmd`` loaders tried on the host before a boot: a protocol breach stops the run.

Each loader here is a small script, run as the guest would run it (in ``unshare -n``)
by :func:`harness.preflight.try_on_host` with sockex1 built for the host. Needs root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from harness import loaders, preflight, samples
from harness.errors import LoaderProtocolError
from harness.paths import PROJECT_ROOT

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

CHOSEN = samples.select("sockex1", samples.discover())


def script(tmp_path: Path, name: str, body: str) -> loaders.Loader:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(0o755)
    return loaders.parse_command(f"{name}={path}")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "print('ready', flush=True); sys.stdin.read(); print('garbage')",
            "the garbage loader broke the loader protocol: its report is not JSON",
        ),
        ("sys.exit(0)", "the garbage loader exited with status 0 before it could load"),
    ],
)
def test_a_loader_that_breaks_the_protocol_is_one_line_naming_it(
    tmp_path: Path, body: str, problem: str
) -> None:
    loader = script(tmp_path, "garbage", body)

    with pytest.raises(LoaderProtocolError) as err:
        preflight.try_on_host([loader], CHOSEN, build_root=tmp_path / "build")

    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("loader garbage, tried on the host with sockex1 before any boot: ")
    assert problem in message


def test_a_loader_that_fails_on_the_host_is_left_to_the_vms(tmp_path: Path) -> None:
    # The host's kernel is not the kernels under test: failing here is not a breach.
    loader = script(tmp_path, "refusing", "sys.exit('the kernel refused the program')")

    preflight.try_on_host([loader], CHOSEN, build_root=tmp_path / "build")


def test_the_example_loader_passes(tmp_path: Path) -> None:
    example = loaders.parse_command(f"stdlib:classic={PROJECT_ROOT / 'examples/stdlib_loader.py'}")

    preflight.try_on_host([example], CHOSEN, build_root=tmp_path / "build")
