from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fakes import Call, FakeRunner, supports_holes

from harness.errors import CacheError, KernelError
from harness.files import locked, write_atomic
from harness.kernels import cache
from harness.kernels.catalog import load_catalog
from harness.kernels.model import Kernel, KernelEntry, Package
from harness.proc import Runner

SERIES = load_catalog()["6.12"]
RELEASE = "6.12.118+deb13-amd64"
IMAGE_PKG = f"linux-image-{RELEASE}-unsigned"

#: What each fake .deb holds: path -> content, or ("->", target) for a symlink.
TREES: dict[str, dict[str, Any]] = {
    IMAGE_PKG: {
        f"boot/vmlinuz-{RELEASE}": "compressed kernel",
        f"boot/config-{RELEASE}": "CONFIG_BPF_SYSCALL=y\n",
        f"boot/System.map-{RELEASE}": "ffffffff T _text\n",
        f"usr/lib/modules/{RELEASE}/kernel/fs/9p/9p.ko.xz": "module",
        f"usr/lib/modules/{RELEASE}/kernel/drivers/ahci.ko.xz": "module nobody needs",
    },
    "linux-libc-dev": {
        "usr/include/linux/bpf.h": "#define BPF 1\n",
        "usr/include/asm-generic/types.h": "generic\n",
        "usr/lib/linux/uapi/x86/asm/types.h": "x86 types\n",
        "usr/include/x86_64-linux-gnu/asm/types.h": (
            "->",
            "../../../lib/linux/uapi/x86/asm/types.h",
        ),
        "usr/include/aarch64-linux-gnu/asm/types.h": "arm64 types\n",
    },
}


def kernel(version: str = "6.12.118-1") -> Kernel:
    return Kernel(
        spec="6.12",
        series="6.12",
        release=RELEASE,
        origin="debian",
        packages=(Package(IMAGE_PKG, version), Package("linux-libc-dev", version)),
    )


class Downloads:
    """A downloader writing fake .debs (JSON trees) and counting its calls."""

    def __init__(self, pause: float = 0.0, error: BaseException | None = None) -> None:
        self.count = 0
        self.pause = pause
        self.error = error
        self._lock = threading.Lock()

    def __call__(self, dest: Path) -> Mapping[str, Path]:
        with self._lock:
            self.count += 1
        time.sleep(self.pause)  # lets a concurrent run reach the lock meanwhile
        if self.error is not None:
            raise self.error
        dest.mkdir(parents=True)
        debs = {}
        for name, tree in TREES.items():
            deb = dest / f"{name}_1_amd64.deb"
            deb.write_text(json.dumps(tree))
            debs[name] = deb
        return debs


def dpkg_deb(call: Call) -> str:
    argv = call.argv
    assert argv[1] == "-x"
    tree = json.loads(Path(argv[2]).read_text())
    target = Path(argv[3])
    for rel, content in tree.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            path.symlink_to(content[1])
        else:
            path.write_text(content)
    return ""


@pytest.fixture(autouse=True)
def fake_image_and_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    def extract_vmlinux(image: Path, dest: Path, *, runner: Runner | None = None) -> bool:
        dest.write_text("ELF vmlinux of " + image.read_text())
        return True

    def trim_modules(full: Path, dest_root: Path, release: str, *, runner: Runner) -> list[str]:
        kept = dest_root / "lib" / "modules" / release / "kernel" / "fs" / "9p" / "9p.ko.xz"
        kept.parent.mkdir(parents=True)
        kept.write_bytes((full / "kernel" / "fs" / "9p" / "9p.ko.xz").read_bytes())
        (dest_root / "lib" / "modules" / release / "modules.dep").write_text("")
        return ["9p"]

    monkeypatch.setattr("harness.kernels.image.extract_vmlinux", extract_vmlinux)
    monkeypatch.setattr("harness.kernels.modules.trim_modules", trim_modules)


def fetch(tmp_path: Path, downloads: Downloads, version: str = "6.12.118-1") -> KernelEntry:
    runner = FakeRunner({"dpkg-deb": dpkg_deb})
    return cache.ensure_entry(kernel(version), SERIES, tmp_path, downloads, runner=runner)


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "kernels").glob(".build-*"))


def test_a_missing_entry_is_built_with_a_manifest_last(tmp_path: Path) -> None:
    downloads = Downloads()
    entry = fetch(tmp_path, downloads)
    root = tmp_path / "kernels" / RELEASE
    assert entry.image == root / "boot" / f"vmlinux-{RELEASE}"
    assert entry.image.read_text() == "ELF vmlinux of compressed kernel"
    assert entry.config == root / "boot" / f"config-{RELEASE}"
    assert entry.modules == root / "lib" / "modules" / RELEASE
    assert (root / "boot" / f"System.map-{RELEASE}").is_file()
    assert not (entry.modules / "kernel" / "drivers").exists()
    assert entry.headers == root / "include"
    assert (entry.headers / "asm" / "types.h").read_text() == "x86 types\n"
    assert not (entry.headers / "asm" / "types.h").is_symlink()
    assert (entry.headers / "linux" / "bpf.h").is_file()
    assert not (entry.headers / "aarch64-linux-gnu").exists()
    manifest = cache.read_manifest(root)
    assert manifest is not None
    assert manifest.files[f"boot/vmlinux-{RELEASE}"] == entry.image.stat().st_size
    assert {p.name: len(p.sha256) for p in manifest.packages} == {
        IMAGE_PKG: 64,
        "linux-libc-dev": 64,
    }
    assert manifest.modules == ("9p",)
    assert list(root.rglob("*.deb")) == []
    assert leftovers(tmp_path) == []
    assert downloads.count == 1


def test_a_complete_entry_is_used_without_downloading(tmp_path: Path) -> None:
    fetch(tmp_path, Downloads())
    downloads = Downloads(error=AssertionError("must not download"))
    entry = fetch(tmp_path, downloads)
    assert entry.image.is_file()
    assert downloads.count == 0


def test_a_complete_entry_is_found_while_another_run_boots_it(tmp_path: Path) -> None:
    booting = fetch(tmp_path, Downloads())
    found: list[KernelEntry] = []
    # A run that waited here for the other run's VM to end would hang (until released).
    with cache.in_use(booting):
        finder = threading.Thread(target=lambda: found.append(fetch(tmp_path, Downloads())))
        finder.start()
        finder.join(60)
        waited = finder.is_alive()
    finder.join()

    assert not waited
    assert found == [booting]


def _drop_manifest(root: Path) -> None:
    (root / "manifest.json").unlink()


def _garble_manifest(root: Path) -> None:
    (root / "manifest.json").write_text('{"format": 1, "kernel": ')


def _truncate_image(root: Path) -> None:
    with open(root / "boot" / f"vmlinux-{RELEASE}", "r+") as handle:
        handle.truncate(3)


def _drop_header(root: Path) -> None:
    (root / "include" / "linux" / "bpf.h").unlink()


@pytest.mark.parametrize(
    "damage", [_drop_manifest, _garble_manifest, _truncate_image, _drop_header]
)
def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path: Path, damage: Any) -> None:
    fetch(tmp_path, Downloads())
    root = tmp_path / "kernels" / RELEASE
    damage(root)
    assert cache.entry_problem(root) is not None
    downloads = Downloads()
    fetch(tmp_path, downloads)
    assert downloads.count == 1
    assert cache.entry_problem(root) is None
    assert leftovers(tmp_path) == []


def test_an_entry_of_other_package_versions_is_rebuilt(tmp_path: Path) -> None:
    fetch(tmp_path, Downloads())
    downloads = Downloads()
    fetch(tmp_path, downloads, version="6.12.118-2")
    assert downloads.count == 1
    manifest = cache.read_manifest(tmp_path / "kernels" / RELEASE)
    assert manifest is not None
    assert {p.version for p in manifest.packages} == {"6.12.118-2"}


def test_two_runs_at_once_download_once(tmp_path: Path) -> None:
    downloads = Downloads(pause=0.3)
    start = threading.Barrier(2)
    entries: list[KernelEntry] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            entries.append(fetch(tmp_path, downloads))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert downloads.count == 1
    assert entries[0] == entries[1]
    assert cache.entry_problem(tmp_path / "kernels" / RELEASE) is None


def test_a_failed_download_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="boom"):
        fetch(tmp_path, Downloads(error=KernelError("boom")))
    assert not (tmp_path / "kernels" / RELEASE).exists()
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_a_cache_error_saying_so(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="is full"):
        fetch(tmp_path, Downloads(error=OSError(errno.ENOSPC, "No space left on device")))
    assert leftovers(tmp_path) == []


def test_leftovers_of_an_interrupted_run_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / "kernels" / f".build-{RELEASE}-abc" / "root"
    stale.mkdir(parents=True)
    fetch(tmp_path, Downloads())
    assert leftovers(tmp_path) == []


def test_a_layout_the_catalog_does_not_expect_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = dict(TREES[IMAGE_PKG])
    del tree[f"boot/vmlinuz-{RELEASE}"]
    monkeypatch.setitem(TREES, IMAGE_PKG, tree)
    with pytest.raises(KernelError, match="catalog's layout"):
        fetch(tmp_path, Downloads())
    assert not (tmp_path / "kernels" / RELEASE).exists()


def test_a_kernel_without_pvh_keeps_its_compressed_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "harness.kernels.image.extract_vmlinux", lambda image, dest, runner=None: False
    )
    entry = fetch(tmp_path, Downloads())
    assert entry.image.name == f"vmlinuz-{RELEASE}"
    assert entry.image.read_text() == "compressed kernel"


def test_a_deb_differing_from_the_index_is_refused(tmp_path: Path) -> None:
    k = kernel()
    bad = Kernel(
        k.spec, k.series, k.release, k.origin, (Package(IMAGE_PKG, "1", "00" * 32), k.packages[1])
    )
    runner = FakeRunner({"dpkg-deb": dpkg_deb})
    with pytest.raises(KernelError, match="signed index says"):
        cache.ensure_entry(bad, SERIES, tmp_path, Downloads(), runner=runner)
    assert leftovers(tmp_path) == []


def test_modules_found_under_the_other_lib_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = {
        (k.replace("usr/lib/modules", "lib/modules") if k.startswith("usr/lib/modules") else k): v
        for k, v in TREES[IMAGE_PKG].items()
    }
    monkeypatch.setitem(TREES, IMAGE_PKG, tree)
    entry = fetch(tmp_path, Downloads())
    assert entry.modules is not None
    assert (entry.modules / "kernel" / "fs" / "9p" / "9p.ko.xz").is_file()


# --- pruning ----------------------------------------------------------------------------


def cached(cache_root: Path, series: str, release: str, version: str) -> Path:
    """A complete entry of ``release`` (image package ``version``) in a fake cache."""
    entry = cache.entry_dir(cache_root, release)
    (entry / "boot").mkdir(parents=True)
    (entry / "boot" / f"vmlinux-{release}").write_bytes(b"k" * 1000)
    pkg = Package(f"linux-image-{release}-unsigned", version)
    kernel = Kernel(series, series, release, "debian", (pkg,))
    cache.write_manifest(entry, kernel, [pkg], f"boot/vmlinux-{release}", [])
    assert cache.entry_problem(entry) is None
    return entry


@pytest.fixture
def cache_tree(tmp_path: Path) -> dict[str, Path]:
    """Two 6.1 releases (9 before 10 only as Debian versions), one 6.12, an interrupted
    fetch, an entry without manifest, and the apt state of a series still known and of
    one the catalog dropped."""
    root = tmp_path / "cache"
    tree = {
        "6.1 old": cached(root, "6.1", "6.1.0-9-amd64", "6.1.27-1"),
        "6.1 new": cached(root, "6.1", "6.1.0-10-amd64", "6.1.38-1"),
        "6.12": cached(root, "6.12", RELEASE, "6.12.118-1"),
        "leftover": cache.kernels_dir(root) / f".build-{RELEASE}-k2j4x_1q",
        "incomplete": cache.kernels_dir(root) / "6.1.0-11-amd64",
        "apt 6.1": root / "apt" / "6.1",
        "apt 5.4": root / "apt" / "5.4",
    }
    for key in ("leftover", "incomplete", "apt 6.1", "apt 5.4"):
        (tree[key] / "lists").mkdir(parents=True)
        (tree[key] / "lists" / "x_Packages").write_bytes(b"p" * 500)
    return tree


GOES = ("6.1 old", "leftover", "incomplete", "apt 5.4")
STAYS = ("6.1 new", "6.12", "apt 6.1")


def test_prune_keeps_the_newest_of_each_series_and_the_catalogs_indexes(
    cache_tree: dict[str, Path], tmp_path: Path
) -> None:
    pruned = cache.prune(tmp_path / "cache", ["6.1", "6.12"])
    assert {r.path for r in pruned.removed} == {cache_tree[k] for k in GOES}
    assert pruned.in_use == ()
    assert not any(cache_tree[k].exists() for k in GOES)
    assert all(cache_tree[k].exists() for k in STAYS)
    (old,) = [r for r in pruned.removed if r.path == cache_tree["6.1 old"]]
    assert old.why == "not the newest cached of series 6.1 (6.1.0-10-amd64 is)"
    assert old.size > 1000  # the image and the manifest
    assert pruned.freed == sum(r.size for r in pruned.removed)
    assert cache.prune(tmp_path / "cache", ["6.1", "6.12"]).removed == ()


def test_prune_removes_the_decompressed_modules_of_kernels_that_go(
    cache_tree: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "cache"

    def copies_of(entry: Path) -> Path:  # one module copy, where vng's stand-in makes it
        made = cache.module_copies(root, entry) / "lib/modules/r/kernel/fs/9p/9p.ko"
        made.parent.mkdir(parents=True)
        made.write_bytes(b"m" * 100)
        return cache.module_copies(root, entry)

    old, new = copies_of(cache_tree["6.1 old"]), copies_of(cache_tree["6.1 new"])
    gone = copies_of(cache.kernels_dir(root) / "5.10.0-1-amd64")  # its entry removed by hand

    pruned = cache.prune(root, ["6.1", "6.12"])

    assert {old, gone} <= {r.path for r in pruned.removed}
    assert not old.exists() and not gone.exists()
    assert new.exists() and cache_tree["6.1 new"].exists()
    (why,) = [r.why for r in pruned.removed if r.path == gone]
    assert why == "decompressed modules of 5.10.0-1-amd64, which is no longer cached"


def test_a_dry_run_tells_what_would_go_and_removes_nothing(
    cache_tree: dict[str, Path], tmp_path: Path
) -> None:
    pruned = cache.prune(tmp_path / "cache", ["6.1", "6.12"], dry_run=True)
    assert {r.path for r in pruned.removed} == {cache_tree[k] for k in GOES}
    assert all(path.exists() for path in cache_tree.values())


def test_prune_leaves_what_a_run_holds(cache_tree: dict[str, Path], tmp_path: Path) -> None:
    apt_lock = cache_tree["apt 5.4"] / "lock"
    with cache.in_use(cache_tree["6.1 old"]), locked(apt_lock):
        pruned = cache.prune(tmp_path / "cache", ["6.1", "6.12"])
    assert {r.path for r in pruned.in_use} == {cache_tree["6.1 old"], cache_tree["apt 5.4"]}
    assert cache_tree["6.1 old"].exists() and cache_tree["apt 5.4"].exists()
    assert not cache_tree["leftover"].exists()
    # Once the run let go, they go.
    again = cache.prune(tmp_path / "cache", ["6.1", "6.12"])
    assert {r.path for r in again.removed} == {cache_tree["6.1 old"], cache_tree["apt 5.4"]}


def test_a_fetch_in_progress_keeps_its_work_directory(
    cache_tree: dict[str, Path], tmp_path: Path
) -> None:
    # ensure_entry holds the release's lock while it builds in .build-<release>-*.
    with locked(tmp_path / "cache" / "kernels" / ".locks" / f"{RELEASE}.lock"):
        pruned = cache.prune(tmp_path / "cache", ["6.1", "6.12"])
    assert [r.path for r in pruned.in_use] == [cache_tree["leftover"]]
    assert cache_tree["leftover"].exists()


def test_disk_usage_counts_what_the_files_take_on_disk(tmp_path: Path) -> None:
    if not supports_holes(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} keeps no holes")
    (tmp_path / "boot").mkdir()
    write_atomic(tmp_path / "boot" / "vmlinux", b"\1" + bytes(1 << 20), holes=True)
    write_atomic(tmp_path / "config", b"x" * 10_000)

    used = cache.disk_usage(tmp_path)

    # The sparse image's megabyte of zeros takes no disk space; the text file its blocks.
    assert 10_000 <= used < 100_000
