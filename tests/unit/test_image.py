"""Kernel images: the vmlinux inside a bzImage, its PVH entry, its release."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import kernel_fixtures as fx
import pytest
from fakes import supports_holes

from harness.errors import KernelError, NotAKernelError
from harness.kernels import image
from harness.kernels.image import (
    embedded_config,
    extract_vmlinux,
    has_pvh_entry,
    image_release,
)

METHODS = ["xz", "gzip", "zstd", "lz4", "bzip2", "lzma"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("method", METHODS)
def test_extract_writes_the_elf_without_the_relocations(tmp_path: Path, method: str) -> None:
    elf = fx.vmlinux()
    bz = write(tmp_path / "vmlinuz", fx.bzimage(elf, method=method))
    dest = tmp_path / "out" / "vmlinux"
    dest.parent.mkdir()

    assert extract_vmlinux(bz, dest) is True

    assert dest.read_bytes() == elf
    assert has_pvh_entry(dest)
    assert os.listdir(dest.parent) == ["vmlinux"]


def test_extract_leaves_the_kernels_zero_blocks_as_holes(tmp_path: Path) -> None:
    if not supports_holes(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} keeps no holes")
    elf = fx.vmlinux(zeros=64 * 4096)
    bz = write(tmp_path / "vmlinuz", fx.bzimage(elf))
    dest = tmp_path / "vmlinux"

    assert extract_vmlinux(bz, dest)

    assert dest.read_bytes() == elf
    assert os.stat(dest).st_blocks * 512 < len(elf) // 2


def test_extract_without_pvh_writes_nothing(tmp_path: Path) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(fx.vmlinux(pvh=False)))
    out = tmp_path / "out"
    out.mkdir()

    assert extract_vmlinux(bz, out / "vmlinux") is False

    assert os.listdir(out) == []


def test_extract_replaces_an_old_file_whole(tmp_path: Path) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(fx.vmlinux("6.1.0-2-amd64")))
    dest = write(tmp_path / "vmlinux", b"old")

    assert extract_vmlinux(bz, dest)

    assert image_release(dest) == "6.1.0-2-amd64"


def test_extract_rejects_what_is_not_a_bzimage(tmp_path: Path) -> None:
    elf = write(tmp_path / "vmlinux", fx.vmlinux())
    text = write(tmp_path / "notes.txt", b"hello\n" * 200)

    with pytest.raises(NotAKernelError, match=r"not an x86 bzImage \(an ELF file"):
        extract_vmlinux(elf, tmp_path / "out")
    with pytest.raises(NotAKernelError, match="HdrS"):
        extract_vmlinux(text, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_rejects_a_kernel_of_another_architecture(tmp_path: Path) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(fx.vmlinux(machine=fx.EM_AARCH64)))

    with pytest.raises(NotAKernelError, match=r"EM_AARCH64.*not an x86-64"):
        extract_vmlinux(bz, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_extract_rejects_a_payload_that_is_not_elf(tmp_path: Path) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(b"MZ not an elf" * 100))

    with pytest.raises(NotAKernelError, match="does not decompress to an ELF"):
        extract_vmlinux(bz, tmp_path / "vmlinux")


def test_a_damaged_payload_is_a_kernel_error(tmp_path: Path) -> None:
    data = bytearray(fx.bzimage(fx.vmlinux()))
    start = 1024 + 0x100
    data[start + 40 : start + 80] = b"\xff" * 40
    bz = write(tmp_path / "vmlinuz", bytes(data))

    with pytest.raises(KernelError, match=r"xz payload .* could not be decompressed"):
        extract_vmlinux(bz, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


@pytest.mark.parametrize("method", ["xz", "gzip", "zstd"])
def test_a_truncated_image_is_a_kernel_error(tmp_path: Path, method: str) -> None:
    whole = fx.bzimage(fx.vmlinux(), method=method)
    bz = write(tmp_path / "vmlinuz", whole[:-200])

    with pytest.raises(KernelError, match=r"vmlinuz: the image is truncated"):
        extract_vmlinux(bz, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


@pytest.mark.parametrize("method", METHODS)
def test_a_stream_that_ends_early_is_a_kernel_error(tmp_path: Path, method: str) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(fx.vmlinux(), method=method, cut_stream=40))

    with pytest.raises(KernelError, match="could not be decompressed"):
        extract_vmlinux(bz, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_without_the_decompressor_program_the_image_boots_compressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bz = write(tmp_path / "vmlinuz", fx.bzimage(fx.vmlinux(), method="zstd"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with caplog.at_level(logging.WARNING):
        assert extract_vmlinux(bz, tmp_path / "vmlinux") is False

    assert "zstd is not installed" in caplog.text
    assert not (tmp_path / "vmlinux").exists()


def test_old_boot_protocol_found_by_scanning(tmp_path: Path) -> None:
    data = bytearray(fx.bzimage(fx.vmlinux()))
    data[0x206:0x208] = b"\x07\x02"  # protocol 2.07: no payload fields
    bz = write(tmp_path / "vmlinuz", bytes(data))

    assert extract_vmlinux(bz, tmp_path / "vmlinux")
    assert has_pvh_entry(tmp_path / "vmlinux")


def test_has_pvh_entry_needs_the_phys32_note_not_just_any_xen_note(tmp_path: Path) -> None:
    assert has_pvh_entry(write(tmp_path / "a", fx.vmlinux(pvh=True)))
    assert not has_pvh_entry(write(tmp_path / "b", fx.vmlinux(pvh=False)))
    with pytest.raises(NotAKernelError, match="not a readable ELF"):
        has_pvh_entry(write(tmp_path / "c", b"\x7fELF" + b"\0" * 10))


def test_image_release(tmp_path: Path) -> None:
    assert image_release(write(tmp_path / "bz", fx.bzimage(fx.vmlinux(), release="5.10.0-9"))) == (
        "5.10.0-9"
    )
    assert image_release(write(tmp_path / "elf", fx.vmlinux("7.2.13+deb14-amd64"))) == (
        "7.2.13+deb14-amd64"
    )
    assert image_release(write(tmp_path / "bz0", fx.bzimage(fx.vmlinux(), release=None))) is None
    assert image_release(write(tmp_path / "txt", b"Linux version 1.2.3 (x)\n" * 100)) is None
    empty_elf = fx.build_elf([(".text", fx.SHT_PROGBITS, b"\x90" * 16)])
    assert image_release(write(tmp_path / "e", empty_elf)) is None


def test_embedded_config(tmp_path: Path) -> None:
    config = "CONFIG_NET_9P=y\n# CONFIG_KVM is not set\n"
    elf = fx.vmlinux(ikconfig=config)

    assert embedded_config(write(tmp_path / "elf", elf)) == config
    assert embedded_config(write(tmp_path / "bz", fx.bzimage(elf))) == config
    assert embedded_config(write(tmp_path / "none", fx.vmlinux())) is None


def test_write_atomic_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)

    with pytest.raises(KernelError, match="No space left on device; free some space"):
        image.write_atomic(tmp_path / "vmlinux", b"data")
    assert os.listdir(tmp_path) == []


# A real Debian kernel, where one is at hand: $HARNESS_TEST_KERNEL_ROOT pointing at an
# extracted linux-image .deb (the directory holding boot/).
def _real_images() -> list[Path]:
    root = os.environ.get("HARNESS_TEST_KERNEL_ROOT")
    if not root:
        return []
    return sorted(Path(root).glob("boot/vmlinuz-*")) + sorted(
        Path(root).glob("usr/lib/modules/*/vmlinuz")
    )


@pytest.mark.skipif(
    not _real_images(),
    reason="set HARNESS_TEST_KERNEL_ROOT to an extracted Debian linux-image package",
)
def test_a_real_debian_kernel(tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed (Debian's kernels from 6.12 on are zstd-compressed)")
    for bz in _real_images():
        release = image_release(bz)
        assert release is not None
        assert release in bz.as_posix()
        dest = tmp_path / f"vmlinux-{release}"
        assert extract_vmlinux(bz, dest), f"{bz}: Debian's kernels are built with CONFIG_PVH"
        assert image_release(dest) == release
        assert dest.stat().st_size > bz.stat().st_size
