"""harness/guest/forked.py: another checkout's ``harness.bpf`` in a child forked from this process.

The other checkout here is a stand-in package written for each test: its
``harness.bpf.__main__`` says where it was imported from, so the test sees that the
child dropped this process's ``harness`` and ran the other's, with its arguments
and its streams on pipes.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from harness.guest import forked

#: How long a test waits for a child that should end by itself (a hang, not a speed).
PATIENCE = 60.0


def other_checkout(tmp_path: Path, main: str) -> Path:
    tree = tmp_path / "other"
    (tree / "harness" / "bpf").mkdir(parents=True)
    (tree / "harness" / "__init__.py").write_text("")
    (tree / "harness" / "bpf" / "__init__.py").write_text("")
    (tree / "harness" / "bpf" / "__main__.py").write_text(main)
    return tree


def run(child: forked.ForkedLoader, stdin: bytes = b"") -> tuple[int, str, str]:
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdin.write(stdin)
    child.stdin.close()
    out, err = child.stdout.read(), child.stderr.read()
    return child.wait(PATIENCE), out.decode(), err.decode()


def test_the_child_runs_the_other_checkouts_package_with_the_arguments(tmp_path: Path) -> None:
    main = (
        "import json, sys, harness, harness.bpf\n"
        "print('ready', flush=True)\n"
        "said = sys.stdin.read()\n"
        "print(json.dumps({'file': harness.__file__, 'argv': sys.argv[1:], 'said': said}))\n"
    )
    tree = other_checkout(tmp_path, main)

    status, out, err = run(forked.spawn([str(tree)], ["--object", "x.o"]), b"end")

    assert status == 0, err
    ready, report = out.splitlines()
    assert ready == "ready"
    assert json.loads(report) == {
        "file": str(tree / "harness" / "__init__.py"),
        "argv": ["--object", "x.o"],
        "said": "end",
    }
    import harness

    assert Path(harness.__file__).parent != tree / "harness"  # this process keeps its own


def test_an_exit_with_a_message_is_status_1_and_the_message_on_stderr(tmp_path: Path) -> None:
    tree = other_checkout(tmp_path, "raise SystemExit('cannot load: no such object')\n")

    status, out, err = run(forked.spawn([str(tree)], []))

    assert (status, out) == (1, "")
    assert err.strip() == "cannot load: no such object"


def test_a_crash_is_status_1_and_its_traceback(tmp_path: Path) -> None:
    tree = other_checkout(tmp_path, "raise RuntimeError('bug in the other loader')\n")

    status, _, err = run(forked.spawn([str(tree)], []))

    assert status == 1
    assert "RuntimeError: bug in the other loader" in err


def test_a_child_that_hangs_is_killed_with_its_group(tmp_path: Path) -> None:
    tree = other_checkout(tmp_path, "import time\nprint('ready', flush=True)\ntime.sleep(3600)\n")
    child = forked.spawn([str(tree)], [])
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"

    with pytest.raises(Exception, match="pid"):
        child.wait(0.1)
    started = time.monotonic()
    child.kill_group()

    assert child.returncode == -signal.SIGKILL
    assert time.monotonic() - started < PATIENCE
