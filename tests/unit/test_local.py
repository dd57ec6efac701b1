"""A user's own kernel: an image with its modules beside it, or a built tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import kernel_fixtures as fx
import pytest

from harness.errors import NotAKernelError
from harness.kernels.kconfig import check_entry
from harness.kernels.local import entry_from_path, rootfs_of_image
from harness.paths import cache_dir
from harness.proc import SubprocessRunner

RELEASE = "6.1.0-99-amd64"
RUNNER = SubprocessRunner()
needs_depmod = pytest.mark.skipif(
    shutil.which("depmod") is None, reason="depmod (Debian package kmod) is not installed"
)


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_an_extracted_debian_package(tmp_path: Path) -> None:
    image = put(tmp_path / "boot" / f"vmlinuz-{RELEASE}", fx.bzimage(fx.vmlinux(RELEASE)))
    config = put(tmp_path / "boot" / f"config-{RELEASE}", "CONFIG_NET_9P=m\n")
    moddir = fx.module_tree(tmp_path / "lib" / "modules" / RELEASE)

    entry = entry_from_path(image, RUNNER)

    assert entry.kernel.spec == str(image)
    assert entry.kernel.series is None
    assert entry.kernel.origin == "local"
    assert entry.release == RELEASE
    assert entry.image == image
    assert entry.modules == moddir
    assert entry.config == config
    assert entry.headers is None


def test_the_7_x_layout_under_usr_lib_modules(tmp_path: Path) -> None:
    moddir = tmp_path / "usr" / "lib" / "modules" / RELEASE
    image = put(moddir / "vmlinuz", fx.bzimage(fx.vmlinux(RELEASE)))
    config = put(moddir / "config", "CONFIG_NET_9P=m\n")
    fx.module_tree(moddir)

    entry = entry_from_path(image, RUNNER)

    assert entry.modules == moddir
    assert entry.config == config


def test_an_image_without_modules_beside_it(tmp_path: Path) -> None:
    image = put(tmp_path / "kernels" / "vmlinux", fx.vmlinux(RELEASE))

    entry = entry_from_path(image, RUNNER)

    assert entry.image == image
    assert entry.modules is None
    assert entry.config is None


def test_modules_of_another_release_are_not_taken(tmp_path: Path) -> None:
    image = put(tmp_path / "boot" / "vmlinuz", fx.bzimage(fx.vmlinux(RELEASE)))
    fx.module_tree(tmp_path / "lib" / "modules" / "6.1.0-98-amd64")

    assert entry_from_path(image, RUNNER).modules is None


def test_a_config_file_beside_the_image(tmp_path: Path) -> None:
    image = put(tmp_path / "bzImage", fx.bzimage(fx.vmlinux(RELEASE)))
    config = put(tmp_path / "config", "CONFIG_NET_9P=y\n")

    assert entry_from_path(image, RUNNER).config == config


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (fx.vmlinux(pvh=False), "without a PVH entry"),
        (fx.build_elf([(".text", fx.SHT_PROGBITS, b"\x90" * 32)]), "without a 'Linux version'"),
        (b"#!/bin/sh\necho hi\n" * 100, "is a file but not a kernel image"),
        (fx.bzimage(fx.vmlinux(), release=None), "does not say its release"),
    ],
)
def test_files_that_are_not_bootable_kernels(tmp_path: Path, content: bytes, message: str) -> None:
    path = put(tmp_path / "thing", content)
    with pytest.raises(NotAKernelError, match=message):
        entry_from_path(path, RUNNER)


def test_a_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(NotAKernelError, match="does not exist; expected a bzImage"):
        entry_from_path(tmp_path / "nope", RUNNER)


def test_directories_that_are_not_built_trees(tmp_path: Path) -> None:
    with pytest.raises(NotAKernelError, match=r"directory with no \.config"):
        entry_from_path(tmp_path, RUNNER)
    put(tmp_path / ".config", "CONFIG_NET_9P=y\n")
    with pytest.raises(NotAKernelError, match=r"no arch/x86/boot/bzImage .*make"):
        entry_from_path(tmp_path, RUNNER)


def kernel_tree(root: Path, *, pvh: bool = True, headers: bool = True) -> Path:
    put(root / ".config", "CONFIG_NET_9P=y\n")
    put(root / "arch" / "x86" / "boot" / "bzImage", fx.bzimage(fx.vmlinux(RELEASE, pvh=pvh)))
    put(root / "vmlinux", fx.vmlinux(RELEASE, pvh=pvh))
    put(root / "include" / "config" / "kernel.release", RELEASE + "\n")
    if headers:
        put(root / "usr" / "include" / "linux" / "bpf.h", "/* */\n")
    return root


def test_a_built_tree_boots_its_vmlinux(tmp_path: Path) -> None:
    tree = kernel_tree(tmp_path / "linux")

    entry = entry_from_path(tree, RUNNER, staging_root=tmp_path / "staging")

    assert entry.image == tree / "vmlinux"
    assert entry.release == RELEASE
    assert entry.config == tree / ".config"
    assert entry.headers == tree / "usr" / "include"
    assert entry.modules is None
    assert entry.kernel.spec == str(tree)
    assert not (tmp_path / "staging").exists()


def test_a_tree_without_pvh_or_headers_installed(tmp_path: Path) -> None:
    tree = kernel_tree(tmp_path / "linux", pvh=False, headers=False)

    entry = entry_from_path(tree, RUNNER, staging_root=tmp_path / "staging")

    assert entry.image == tree / "arch" / "x86" / "boot" / "bzImage"
    assert entry.headers is None


@needs_depmod
def test_a_tree_with_modules_gets_them_beside_a_link_to_its_image(tmp_path: Path) -> None:
    tree = kernel_tree(tmp_path / "linux")
    built = {rel.removeprefix("kernel/"): deps for rel, deps in fx.TREE_6_1.items()}
    fx.module_tree(tree, built)
    staging = tmp_path / "staging"

    entry = entry_from_path(tree, RUNNER, staging_root=staging)
    again = entry_from_path(tree, RUNNER, staging_root=staging)

    assert entry == again
    assert entry.image.is_symlink()
    assert entry.image.resolve() == (tree / "vmlinux").resolve()
    assert entry.modules is not None
    assert (entry.modules / "fs" / "9p" / "9p.ko").is_file()
    assert (entry.modules / "modules.dep").is_file()
    assert not list(entry.modules.rglob("ahci.ko"))
    # where virtme-ng will look, given this image
    assert rootfs_of_image(entry.image) / "lib" / "modules" / RELEASE == entry.modules
    assert [p.name for p in staging.iterdir()] == [entry.image.parent.parent.name]


LAYOUTS = [
    ("boot/vmlinuz", ["lib/modules/x"]),
    ("usr/lib/modules/x/vmlinuz", ["usr/lib/modules/x"]),
    ("a/b/c/bzImage", []),
    ("a/boot/vmlinuz", ["a/lib/modules/x", "lib/modules/y"]),
]


@pytest.mark.parametrize(("image", "dirs"), LAYOUTS)
def test_rootfs_lookup_matches_virtme_ng(tmp_path: Path, image: str, dirs: list[str]) -> None:
    run = pytest.importorskip("virtme.commands.run")
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    path = put(tmp_path / image, b"")

    ours = rootfs_of_image(path)

    assert str(ours) == run.get_rootfs_from_kernel_path(str(path))


def _cached_images() -> list[Path]:
    return sorted((cache_dir() / "kernels").glob("*/boot/vmlinu[xz]-*"))


@pytest.mark.skipif(not _cached_images(), reason="no kernel in the cache (invoke kernels.fetch)")
def test_cached_kernels_are_found_as_virtme_ng_finds_them_and_pass_the_check() -> None:
    for image in _cached_images():
        entry = entry_from_path(image, RUNNER)
        release = image.name.split("-", 1)[1]
        assert entry.release == release
        assert entry.modules == image.parent.parent / "lib" / "modules" / release
        assert entry.config == image.parent / f"config-{release}"
        check_entry(entry)
