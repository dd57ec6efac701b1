"""The configuration check: what a kernel needs to boot under virtme-ng and run the sample."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import kernel_fixtures as fx
import pytest

from harness.errors import KernelConfigError
from harness.kernels.kconfig import (
    REQUIREMENTS,
    Requirement,
    check_config,
    check_entry,
    parse_config,
)
from harness.kernels.model import Kernel, KernelEntry

# As in Debian 6.1's generic amd64 flavour (abridged).
GENERIC = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"
CONFIG_BPF_SYSCALL=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_NET=y
CONFIG_PACKET=y
CONFIG_UNIX=y
CONFIG_INET=y
CONFIG_NET_9P=m
CONFIG_NET_9P_VIRTIO=m
CONFIG_DEVTMPFS=y
# CONFIG_DEVTMPFS_MOUNT is not set
CONFIG_VIRTIO_CONSOLE=m
CONFIG_VIRTIO_PCI=m
CONFIG_OVERLAY_FS=m
CONFIG_TMPFS=y
CONFIG_9P_FS=m
"""
MODULES = {"9pnet", "9pnet_virtio", "9p", "virtio_console", "virtio_pci", "overlay", "netfs"}

# The cloud-amd64 flavour: no 9p at all.
CLOUD = GENERIC.replace(
    "CONFIG_NET_9P=m\nCONFIG_NET_9P_VIRTIO=m\n", "# CONFIG_NET_9P is not set\n"
).replace("CONFIG_9P_FS=m\n", "")


def test_parse_config() -> None:
    config = parse_config(GENERIC + "  CONFIG_SPACED=y  \nCONFIG_HZ=250\n")

    assert config["CONFIG_BPF_SYSCALL"] == "y"
    assert config["CONFIG_NET_9P"] == "m"
    assert config["CONFIG_DEVTMPFS_MOUNT"] == "n"
    assert config["CONFIG_CC_VERSION_TEXT"] == '"gcc-12 (Debian 12.2.0-14) 12.2.0"'
    assert config["CONFIG_SPACED"] == "y"
    assert config["CONFIG_HZ"] == "250"
    assert "CONFIG_AUTOMATICALLY" not in config
    assert not any(k.startswith("#") for k in config)


def test_the_generic_flavour_passes() -> None:
    check_config(parse_config(GENERIC), modules=MODULES, what="6.1.0-99-amd64")


def test_the_cloud_flavour_is_refused_naming_every_missing_option() -> None:
    with pytest.raises(KernelConfigError) as caught:
        check_config(parse_config(CLOUD), modules=MODULES, what="6.1.0-99-cloud-amd64")

    message = str(caught.value)
    assert "6.1.0-99-cloud-amd64" in message
    assert "# CONFIG_NET_9P is not set: the 9p protocol" in message
    assert "CONFIG_NET_9P_VIRTIO is absent" in message
    assert "CONFIG_9P_FS is absent: the 9p filesystem" in message
    assert "CONFIG_VIRTIO_PCI" not in message
    assert "generic amd64 flavour" in message


def test_a_module_option_needs_its_module() -> None:
    with pytest.raises(KernelConfigError) as caught:
        check_config(parse_config(GENERIC), modules=MODULES - {"9p", "overlay"}, what="x")

    message = str(caught.value)
    assert "CONFIG_9P_FS=m, but its module 9p is not beside the kernel" in message
    assert "CONFIG_OVERLAY_FS=m, but its module overlay" in message
    assert "9pnet " not in message


def test_modules_none_skips_the_module_check() -> None:
    check_config(parse_config(GENERIC), modules=None, what="x")
    # The same configuration with an empty module tree fails that check.
    with pytest.raises(KernelConfigError, match="but its module"):
        check_config(parse_config(GENERIC), modules=set(), what="x")


def test_all_built_in_needs_no_initramfs() -> None:
    built_in = GENERIC.replace("=m\n", "=y\n").replace("CONFIG_BLK_DEV_INITRD=y\n", "")

    check_config(parse_config(built_in), modules=set(), what="x")

    with pytest.raises(KernelConfigError, match="# CONFIG_BLK_DEV_INITRD is not set"):
        check_config(
            parse_config(GENERIC.replace("CONFIG_BLK_DEV_INITRD=y\n", "")),
            modules=MODULES,
            what="x",
        )


@pytest.mark.parametrize("req", [r for r in REQUIREMENTS if not r.only_with_modules])
def test_each_requirement_is_checked(req: Requirement) -> None:
    option = req.option
    text = "\n".join(line for line in GENERIC.splitlines() if not line.startswith(option + "="))

    with pytest.raises(KernelConfigError, match=f"{option} is absent"):
        check_config(parse_config(text), modules=MODULES, what="x")


def test_a_y_only_option_as_a_module() -> None:
    text = GENERIC.replace("CONFIG_DEVTMPFS=y", "CONFIG_DEVTMPFS=m")
    with pytest.raises(KernelConfigError, match=r"CONFIG_DEVTMPFS=m \(needs y\)"):
        check_config(parse_config(text), modules=MODULES, what="x")


def entry(tmp_path: Path, *, config: str | None, image: bytes, modules: bool) -> KernelEntry:
    release = "6.1.0-99-amd64"
    boot = tmp_path / "boot"
    boot.mkdir()
    config_path = None
    if config is not None:
        config_path = boot / f"config-{release}"
        config_path.write_text(config)
    image_path = boot / f"vmlinux-{release}"
    image_path.write_bytes(image)
    moddir = None
    if modules:
        moddir = tmp_path / "lib" / "modules" / release
        for name in MODULES:
            fx.write_module(moddir / "kernel" / f"{name}.ko", name)
    return KernelEntry(
        kernel=Kernel(spec="6.1", series="6.1", release=release, origin="debian"),
        image=image_path,
        modules=moddir,
        config=config_path,
        headers=None,
    )


def test_check_entry_reads_the_config_and_the_module_tree(tmp_path: Path) -> None:
    check_entry(entry(tmp_path, config=GENERIC, image=fx.vmlinux(), modules=True))


def test_check_entry_without_a_module_tree_refuses_module_options(tmp_path: Path) -> None:
    with pytest.raises(KernelConfigError, match=r"6\.1\.0-99-amd64 \(6\.1\)"):
        check_entry(entry(tmp_path, config=GENERIC, image=fx.vmlinux(), modules=False))


def test_check_entry_falls_back_to_the_embedded_config(tmp_path: Path) -> None:
    with pytest.raises(KernelConfigError, match="CONFIG_NET_9P is not set"):
        check_entry(entry(tmp_path, config=None, image=fx.vmlinux(ikconfig=CLOUD), modules=True))


def test_check_entry_without_any_config_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        check_entry(entry(tmp_path, config=None, image=fx.vmlinux(), modules=False))
    assert "no configuration found" in caplog.text


def _real_configs() -> list[Path]:
    root = os.environ.get("HARNESS_TEST_KERNEL_ROOT")
    return sorted(Path(root).glob("boot/config-*")) if root else []


@pytest.mark.skipif(
    not _real_configs(),
    reason="set HARNESS_TEST_KERNEL_ROOT to an extracted Debian linux-image package",
)
def test_a_real_debian_config() -> None:
    for path in _real_configs():
        config = parse_config(path.read_text())
        if "cloud" in path.name:
            with pytest.raises(KernelConfigError, match="CONFIG_NET_9P is not set"):
                check_config(config, modules=None, what=path.name)
        else:
            check_config(config, modules=None, what=path.name)
