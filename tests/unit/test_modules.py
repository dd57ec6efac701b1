"""The trimmed module tree: the boot's modules, their dependencies, depmod's indexes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import kernel_fixtures as fx
import pytest
from fakes import Answer, Call, FakeRunner

from harness.errors import CommandError, KernelConfigError, KernelError, ToolMissingError
from harness.kernels import modules
from harness.kernels.modules import (
    missing_required,
    module_dependencies,
    module_name,
    parse_builtin,
    parse_modinfo,
    read_modinfo,
    soft_dependencies,
    trim_modules,
)
from harness.proc import Completed, Runner, SubprocessRunner

RELEASE = "6.1.0-99-amd64"
needs_depmod = pytest.mark.skipif(
    shutil.which("depmod") is None, reason="depmod (Debian package kmod) is not installed"
)

BOOT_6_1 = [
    "9p",
    "9pnet",
    "9pnet_virtio",
    "fscache",
    "fuse",
    "netfs",
    "overlay",
    "virtio",
    "virtio_console",
    "virtio_mmio",
    "virtio_pci",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_ring",
    "virtiofs",
]


def depmod(returncode: int = 0) -> Answer:
    """``depmod -b BASE RELEASE`` that writes an empty modules.dep, or fails."""

    def answer(call: Call) -> Completed:
        if returncode == 0:
            base, release = Path(call.argv[2]), call.argv[3]
            (base / "lib" / "modules" / release / "modules.dep").write_text("")
        return Completed(call.argv, returncode, "", "depmod: ERROR: boom" * returncode)

    return answer


def fake_depmod(returncode: int = 0) -> FakeRunner:
    return FakeRunner({"depmod": depmod(returncode)})


def test_module_names() -> None:
    assert module_name("kernel/net/9p/9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert module_name("kernel/sound/snd-hda-intel.ko.zst") == "snd_hda_intel"
    assert module_name(Path("fs/9p/9p.ko")) == "9p"
    assert parse_builtin("kernel/net/unix/unix.ko\n\nkernel/net/packet/af_packet.ko\n") == {
        "unix",
        "af_packet",
    }


def test_modinfo_dependencies() -> None:
    info = parse_modinfo(b"name=9p\0depends=9pnet,netfs\0softdep=pre: crc32c post: x-y\0\0")
    assert info["name"] == ["9p"]
    assert module_dependencies(info) == ["9pnet", "netfs"]
    assert soft_dependencies(info) == ["crc32c", "x_y"]
    assert module_dependencies(parse_modinfo(b"depends=\0")) == []
    assert soft_dependencies(parse_modinfo(b"depends=\0")) == []


def test_soft_dependencies_are_kept_where_the_tree_has_them(tmp_path: Path) -> None:
    tree = dict(fx.TREE_6_1)
    tree["kernel/fs/9p/9p.ko"] = ("9pnet,netfs,fscache", "pre: crc32c_helper post: ghost")
    tree["kernel/lib/crc32c_helper.ko"] = ("", "")
    full = fx.module_tree(tmp_path / "pkg", tree)

    kept = trim_modules(full, tmp_path / "entry", RELEASE, runner=fake_depmod())

    assert "crc32c_helper" in kept
    assert "ghost" not in kept


@pytest.mark.parametrize("suffix", [".ko", ".ko.xz", ".ko.gz", ".ko.zst"])
def test_read_modinfo_of_compressed_modules(tmp_path: Path, suffix: str) -> None:
    path = fx.write_module(tmp_path / f"9p{suffix}", "9p", depends="9pnet,netfs")

    info = read_modinfo(path, runner=SubprocessRunner())

    assert info["depends"] == ["9pnet,netfs"]


def test_a_damaged_module_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "9p.ko.xz"
    bad.write_bytes(b"not xz")
    with pytest.raises(KernelError, match=r"cannot read the module .*9p\.ko\.xz"):
        read_modinfo(bad, runner=SubprocessRunner())


def test_a_tree_without_modules_misses_exactly_the_required_ones() -> None:
    required = {m.name for m in missing_required((), set())}
    assert {"9p", "9pnet_virtio", "virtio_pci", "virtio_console", "af_packet", "overlay"} <= (
        required
    )
    # Merged away (fscache into netfs in 6.12) or new (5.14, 5.16) in some series.
    assert {"fscache", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "netfs"}.isdisjoint(
        required
    )
    # What is built in is not missing.
    assert {m.name for m in missing_required((), {"9p", "overlay"})} == required - {
        "9p",
        "overlay",
    }


@needs_depmod
@pytest.mark.parametrize("suffix", ["", ".xz"])
def test_trim_keeps_the_boot_closure_and_indexes_it(tmp_path: Path, suffix: str) -> None:
    full = fx.module_tree(tmp_path / "pkg" / "lib" / "modules" / RELEASE, suffix=suffix)
    dest_root = tmp_path / "entry"

    kept = trim_modules(full, dest_root, RELEASE, runner=SubprocessRunner())

    assert kept == BOOT_6_1
    moddir = dest_root / "lib" / "modules" / RELEASE
    files = sorted(p.name for p in moddir.rglob("*.ko*"))
    assert files == sorted(f"{m}.ko{suffix}" for m in BOOT_6_1)
    assert not list(moddir.rglob("ahci*"))
    # depmod takes dependencies from symbols, which these stand-ins do not have:
    # here it only shows that every kept module is indexed (the real tree below
    # checks the dependency lines).
    indexed = {line.split(":")[0] for line in (moddir / "modules.dep").read_text().splitlines()}
    assert {modules.module_name(p) for p in indexed} == set(BOOT_6_1)
    assert "af_packet" in (moddir / "modules.builtin").read_text()
    for name in ("modules.builtin.modinfo", "modules.order", "modules.alias"):
        assert (moddir / name).is_file()
    assert os.listdir(dest_root / "lib" / "modules") == [RELEASE]
    assert not (full / "modules.dep").exists(), "the package's tree is left untouched"


@needs_depmod
def test_trim_a_6_12_like_tree_with_virtio_built_in(tmp_path: Path) -> None:
    tree = {
        "kernel/fs/9p/9p.ko.xz": ("netfs,9pnet", ""),
        "kernel/net/9p/9pnet.ko.xz": ("netfs", ""),
        "kernel/net/9p/9pnet_virtio.ko.xz": ("9pnet", ""),
        "kernel/fs/netfs/netfs.ko.xz": ("", ""),
        "kernel/fs/overlayfs/overlay.ko.xz": ("", ""),
        "kernel/drivers/virtio/virtio_mmio.ko.xz": ("", ""),
    }
    builtin = (
        "kernel/net/packet/af_packet.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/char/virtio_console.ko",
    )
    # The helper appends the suffix; these names carry it already.
    full = fx.module_tree(tmp_path / "pkg", tree, builtin)

    kept = trim_modules(full, tmp_path / "entry", RELEASE, runner=SubprocessRunner())

    assert kept == ["9p", "9pnet", "9pnet_virtio", "netfs", "overlay", "virtio_mmio"]


def test_a_missing_required_module_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    tree = {k: v for k, v in fx.TREE_6_1.items() if "/9p/" not in k}
    full = fx.module_tree(tmp_path / "pkg", tree)
    dest_root = tmp_path / "entry"

    with pytest.raises(KernelConfigError) as caught:
        trim_modules(full, dest_root, RELEASE, runner=fake_depmod())

    message = str(caught.value)
    for name in ("9pnet (", "9pnet_virtio (", "9p ("):
        assert name in message
    assert "virtio_pci" not in message
    assert "cloud-amd64" in message
    assert not dest_root.exists()


def test_a_dependency_nowhere_to_be_found_is_an_error(tmp_path: Path) -> None:
    tree = dict(fx.TREE_6_1)
    tree["kernel/fs/9p/9p.ko"] = ("9pnet,netfs,fscache,crc_ghost", "")
    full = fx.module_tree(tmp_path / "pkg", tree)

    with pytest.raises(KernelError, match=r"9p .* depends on crc_ghost"):
        trim_modules(full, tmp_path / "entry", RELEASE, runner=fake_depmod())
    assert not (tmp_path / "entry" / "lib" / "modules" / RELEASE).exists()


def test_depmod_runs_on_a_base_where_the_tree_is_under_both_lib_and_usr_lib(
    tmp_path: Path,
) -> None:
    full = fx.module_tree(tmp_path / "pkg")
    seen: list[tuple[bool, bool]] = []

    def inspecting(call: Call) -> str | Completed:
        base = Path(call.argv[2]) / "lib" / "modules" / RELEASE
        usr_base = Path(call.argv[2]) / "usr" / "lib" / "modules" / RELEASE
        seen.append(((base / "modules.order").is_file(), (usr_base / "modules.order").is_file()))
        return depmod()(call)

    runner = FakeRunner({"depmod": inspecting})
    trim_modules(full, tmp_path / "entry", RELEASE, runner=runner)

    assert runner.programs() == ["depmod"]
    argv = runner.calls[0].argv
    assert argv[1] == "-b" and argv[3] == RELEASE
    assert seen == [(True, True)]
    assert not Path(argv[2]).exists(), "the scratch base is removed"


def test_a_failing_depmod_leaves_no_tree(tmp_path: Path) -> None:
    full = fx.module_tree(tmp_path / "pkg")
    dest_root = tmp_path / "entry"

    with pytest.raises(CommandError, match=r"depmod on the module tree .* failed"):
        trim_modules(full, dest_root, RELEASE, runner=fake_depmod(returncode=1))

    assert os.listdir(dest_root / "lib" / "modules") == []


def test_depmod_missing_says_which_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = fx.module_tree(tmp_path / "pkg")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(ToolMissingError, match="kmod"):
        trim_modules(full, tmp_path / "entry", RELEASE, runner=fake_depmod())


def test_a_missing_module_directory(tmp_path: Path) -> None:
    runner: Runner = fake_depmod()
    with pytest.raises(KernelError, match="not a directory; expected the lib/modules"):
        trim_modules(tmp_path / "nope", tmp_path / "entry", RELEASE, runner=runner)


def test_trim_replaces_an_older_trimmed_tree(tmp_path: Path) -> None:
    full = fx.module_tree(tmp_path / "pkg")
    stale = tmp_path / "entry" / "lib" / "modules" / RELEASE / "kernel" / "stale.ko"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")

    trim_modules(full, tmp_path / "entry", RELEASE, runner=fake_depmod())

    assert not stale.exists()
    assert modules.modules_in_tree(stale.parent.parent) == set(BOOT_6_1)


# A real Debian module tree, where one is at hand (see test_image.py).
def _real_module_dirs() -> list[Path]:
    root = os.environ.get("HARNESS_TEST_KERNEL_ROOT")
    if not root:
        return []
    return sorted(Path(root).glob("lib/modules/*")) + sorted(Path(root).glob("usr/lib/modules/*"))


@needs_depmod
@pytest.mark.skipif(
    not _real_module_dirs(),
    reason="set HARNESS_TEST_KERNEL_ROOT to an extracted Debian linux-image package",
)
def test_a_real_debian_module_tree(tmp_path: Path) -> None:
    for full in _real_module_dirs():
        kept = trim_modules(full, tmp_path, full.name, runner=SubprocessRunner())
        assert {"9p", "9pnet", "9pnet_virtio"} <= set(kept)
        dep = (tmp_path / "lib" / "modules" / full.name / "modules.dep").read_text()
        line = next(x for x in dep.splitlines() if x.startswith("kernel/fs/9p/9p.ko"))
        assert "9pnet.ko" in line, "depmod found 9p's dependencies"
        size = sum(p.stat().st_size for p in (tmp_path / "lib").rglob("*") if p.is_file())
        assert size < 10 * 1024 * 1024
