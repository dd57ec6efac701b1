"""Fetch a real kernel from the Debian archive the host's apt sources name, then boot it.

Needs the mirror (``-m network``); the boot also needs qemu and virtme-ng (``-m vm``).
One fetch into a temporary cache is shared by the tests of this module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.kernels import KernelOptions, cache, list_kernels, prepare
from harness.kernels.model import KernelEntry
from harness.proc import SubprocessRunner
from harness.progress import Event, Transfer

pytestmark = pytest.mark.network

SERIES = "6.1"
MAX_ENTRY_BYTES = 120_000_000


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> KernelOptions:
    return KernelOptions(cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def entry(options: KernelOptions) -> KernelEntry:
    heard: list[Event] = []
    fetched = prepare(SERIES, options, progress=heard.append)
    transfers = [e for e in heard if isinstance(e, Transfer)]
    # Each package's bytes were told as they arrived, up to the whole of it.
    assert {e.package for e in transfers if e.complete} == {p.name for p in fetched.kernel.packages}
    return fetched


def test_the_entry_is_complete_and_small(entry: KernelEntry, options: KernelOptions) -> None:
    root = cache.entry_dir(options.cache, entry.release)
    assert entry.release.startswith("6.1.")
    assert entry.image == root / "boot" / f"vmlinux-{entry.release}"
    assert entry.image.read_bytes()[:4] == b"\x7fELF"
    assert entry.modules is not None
    assert (entry.modules / "modules.dep").is_file()
    assert entry.headers is not None
    assert (entry.headers / "linux" / "bpf.h").is_file()
    assert (entry.headers / "asm" / "types.h").is_file()
    assert cache.entry_problem(root, entry.kernel) is None
    assert list(options.cache.rglob("*.deb")) == []
    assert cache.disk_usage(root) <= MAX_ENTRY_BYTES
    manifest = cache.read_manifest(root)
    assert manifest is not None
    assert [p.name for p in manifest.packages][-1] == "linux-libc-dev"
    assert all(len(p.sha256) == 64 for p in manifest.packages)


def test_a_second_prepare_downloads_nothing(entry: KernelEntry, options: KernelOptions) -> None:
    heard: list[Event] = []
    assert prepare(SERIES, options, progress=heard.append) == entry
    assert heard == []


def test_list_shows_it_cached(entry: KernelEntry, options: KernelOptions) -> None:
    rows = {row.series: row for row in list_kernels(options)}
    assert rows[SERIES].release == entry.release
    assert rows[SERIES].cached
    assert 0 < rows[SERIES].size <= MAX_ENTRY_BYTES


@pytest.mark.vm
def test_the_cached_kernel_boots(entry: KernelEntry, tmp_path: Path) -> None:
    if shutil.which("vng") is None:
        pytest.skip("virtme-ng (vng) is not installed")
    result = SubprocessRunner().run(
        ["vng", "--disable-kvm", "--force-9p", "-r", str(entry.image), "--", "uname", "-r"],
        timeout=300,
        log_path=tmp_path / "console.log",
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert entry.release in result.stdout.splitlines()[-1]


def test_the_releases_own_source_is_kept_small_and_fetched_once(
    entry: KernelEntry, options: KernelOptions
) -> None:
    from harness.kernels import source_tree
    from harness.kernels.source import MAX_KEPT_BYTES

    heard: list[Event] = []
    tree = source_tree(entry, options, progress=heard.append)
    transfers = [e for e in heard if isinstance(e, Transfer)]
    assert transfers[-1].package == "linux-source-6.1" and transfers[-1].complete
    assert tree.version == entry.kernel.packages[-1].version  # linux-libc-dev's: the source's
    for rel in (
        "samples/bpf/sockex1_kern.c",
        "samples/bpf/sockex3_user.c",
        "tools/lib/bpf/libbpf.c",
    ):
        assert tree.path(rel).is_file(), rel
    assert 0 < tree.size <= MAX_KEPT_BYTES
    assert list(options.cache.rglob("*.deb")) == []
    again: list[Event] = []
    assert source_tree(entry, options, progress=again.append) == tree
    assert again == []
    (row,) = [r for r in list_kernels(options) if r.series == SERIES]
    assert row.source_size == tree.size
