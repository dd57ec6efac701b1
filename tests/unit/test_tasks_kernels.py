"""The kernels section of tasks.py: the table, and the exit status of a partial fetch."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import Context, Exit
from process_trees import PATIENCE, python as python_child, survivors, tree, tree_pids
from test_cache import cached

import harness.kernels as kernels
from harness.errors import MirrorError
from harness.kernels.model import Kernel, KernelEntry, KernelStatus, Package

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tasks


def test_list_prints_one_row_per_series(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [
        KernelStatus(
            "6.1",
            "6.1.0-56-amd64",
            (Package("linux-image-x", "6.1.192-2"),),
            True,
            73_000_000,
            tmp_path,
            source_size=2_900_000,
        ),
        KernelStatus("6.6", None, (), False, 0, None, "snapshot archive not reachable"),
    ]
    monkeypatch.setattr(kernels, "list_kernels", lambda options: rows)
    tasks.kernels_list(Context())
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["series", "release", "packages", "cached", "size", "source"]
    assert out[1].split() == [
        "6.1",
        "6.1.0-56-amd64",
        "linux-image-x",
        "6.1.192-2",
        "yes",
        "73",
        "MB",
        "2.9",
        "MB",
    ]
    assert out[2].split() == ["6.6", "-", "-", "no", "-", "-"]
    assert "note: 6.6: snapshot archive not reachable" in out


def test_fetch_goes_on_after_a_failure_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def prepare(spec: str, options: Any, progress: Any = None) -> KernelEntry:
        if spec == "6.6":
            raise MirrorError("the snapshot archive is not reachable from here")
        image = tmp_path / spec / "boot" / "vmlinux"
        image.parent.mkdir(parents=True)
        image.write_bytes(b"x" * 1000)
        return KernelEntry(
            Kernel(spec, spec, f"{spec}.0-1-amd64", "debian"), image, None, None, None
        )

    monkeypatch.setattr(kernels, "expand_specs", lambda text, options: text.split(","))
    monkeypatch.setattr(kernels, "prepare", prepare)
    with pytest.raises(Exit) as err:
        tasks.kernels_fetch(Context(), kernel="6.6,6.1")
    assert err.value.code == 1
    assert "6.6" in str(err.value.message)
    captured = capsys.readouterr()
    assert "error: 6.6: the snapshot archive is not reachable" in captured.err
    assert captured.out.startswith("6.1: 6.1.0-1-amd64 ready in")


def test_resolve_prints_the_release_or_the_packages_of_a_series(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    found = Kernel(
        "7.2",
        "7.2",
        "7.2.13+deb14-amd64",
        "debian",
        (
            Package("linux-binary-7.2.13+deb14-amd64", "7.2.13-1"),
            Package("linux-libc-dev", "7.2.13-1"),
        ),
    )
    monkeypatch.setattr(kernels, "resolve", lambda spec, options: found)

    tasks.kernels_resolve(Context(), kernel="7.2")
    tasks.kernels_resolve(Context(), kernel="7.2", packages=True)

    assert capsys.readouterr().out.splitlines() == [
        "7.2.13+deb14-amd64",
        "linux-binary-7.2.13+deb14-amd64=7.2.13-1 linux-libc-dev=7.2.13-1",
    ]


def test_resolve_of_an_unknown_series_exits_with_the_catalog_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    with pytest.raises(Exit) as err:
        tasks.kernels_resolve(Context(), kernel="9.9")
    assert err.value.code == 1
    assert "no kernel series '9.9'" in str(err.value.message)
    assert "--kernel PATH" in str(err.value.message)


def test_list_shows_the_caches_total(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    (tmp_path / "apt" / "6.1").mkdir(parents=True)
    (tmp_path / "apt" / "6.1" / "Packages").write_bytes(b"x" * 3_000_000)
    monkeypatch.setattr(kernels, "list_kernels", lambda options: [])
    tasks.kernels_list(Context())
    assert f"cache: {tmp_path} (3 MB in all)" in capsys.readouterr().out


def test_prune_dry_run_lists_then_prune_removes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    old = cached(tmp_path, "6.1", "6.1.0-9-amd64", "6.1.27-1")
    cached(tmp_path, "6.1", "6.1.0-10-amd64", "6.1.38-1")
    why = "not the newest cached of series 6.1 (6.1.0-10-amd64 is)"

    tasks.kernels_prune(Context(), dry_run=True)
    assert old.exists()
    assert capsys.readouterr().out.splitlines() == [
        f"would remove {old} (0 MB): {why}",
        "would remove 0 MB in all",
    ]
    tasks.kernels_prune(Context())
    assert not old.exists()
    assert capsys.readouterr().out.splitlines()[0] == f"removed {old} (0 MB): {why}"
    tasks.kernels_prune(Context())
    assert capsys.readouterr().out == "nothing to remove\n"


def test_sigterm_to_a_task_kills_its_commands_and_exits_143(
    tmp_path: Path, reaped: list[int]
) -> None:
    code = """
        import sys
        from invoke import Exit
        import tasks
        from harness import proc

        @tasks._reports_errors
        def work(verbose=False):
            proc.SubprocessRunner().run(sys.argv[1:])

        try:
            work()
        except Exit as exc:
            print(exc.message, file=sys.stderr)
            sys.exit(exc.code)
    """
    marker = tmp_path / "pids"
    child = python_child(code, *tree(marker))
    reaped.append(child.pid)
    reaped += tree_pids(marker, child)
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=PATIENCE)
    assert child.returncode == 143, err
    assert err.strip().endswith("terminated by SIGTERM")
    assert survivors(reaped) == []
