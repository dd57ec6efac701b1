"""The kernels section of tasks.py: the table, and the exit status of a partial fetch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import Context, Exit

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
        ),
        KernelStatus("6.6", None, (), False, 0, None, "snapshot archive not reachable"),
    ]
    monkeypatch.setattr(kernels, "list_kernels", lambda options: rows)
    tasks.kernels_list(Context())
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["series", "release", "packages", "cached", "size"]
    assert out[1].split() == [
        "6.1",
        "6.1.0-56-amd64",
        "linux-image-x",
        "6.1.192-2",
        "yes",
        "73",
        "MB",
    ]
    assert out[2].split() == ["6.6", "-", "-", "no", "-"]
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
