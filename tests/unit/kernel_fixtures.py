"""Tiny stand-ins for kernel files: ELF vmlinux, bzImage, modules, module trees.

Each is built byte by byte here, so the tests need no toolchain and no real kernel.
They carry exactly what the harness reads: ELF headers, a PT_NOTE segment with Xen
notes, a ``Linux version`` banner, the bzImage setup header, ``.modinfo``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from harness.proc import SubprocessRunner

EM_X86_64 = 62
EM_AARCH64 = 183
ET_EXEC = 2
ET_REL = 1
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_NOTE = 7
PT_LOAD = 1
PT_NOTE = 4
XEN_PHYS32_ENTRY = 18
XEN_ENTRY = 1  # XEN_ELFNOTE_ENTRY: present in non-PVH Xen kernels too


def note(owner: str, n_type: int, desc: bytes) -> bytes:
    """One ELF note, padded as the format wants."""
    name = owner.encode() + b"\0"

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


def build_elf(
    sections: list[tuple[str, int, bytes]],
    *,
    e_type: int = ET_EXEC,
    machine: int = EM_X86_64,
    note_section: str | None = None,
) -> bytes:
    """A 64-bit little-endian ELF with ``sections`` (name, sh_type, data).

    An executable gets a PT_LOAD over its first section and, if ``note_section`` is
    given, a PT_NOTE over that section.
    """
    phdrs: list[tuple[int, str]] = []
    if e_type == ET_EXEC:
        phdrs.append((PT_LOAD, sections[0][0]))
        if note_section is not None:
            phdrs.append((PT_NOTE, note_section))
    shstrtab = b"\0"
    name_offsets = []
    for name, _, _ in [*sections, (".shstrtab", SHT_STRTAB, b"")]:
        name_offsets.append(len(shstrtab))
        shstrtab += name.encode() + b"\0"
    all_sections = [*sections, (".shstrtab", SHT_STRTAB, shstrtab)]

    offset = 64 + 56 * len(phdrs)
    body = b""
    placed: dict[str, tuple[int, int]] = {}
    for name, _, data in all_sections:
        pad = -(offset + len(body)) % 8
        body += b"\0" * pad
        placed[name] = (offset + len(body), len(data))
        body += data
    shoff = offset + len(body) + (-(offset + len(body)) % 8)
    body += b"\0" * (shoff - offset - len(body))

    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack(
        "<HHIQQQIHHHHHH",
        e_type,
        machine,
        1,
        0x1000000 if e_type == ET_EXEC else 0,
        64 if phdrs else 0,
        shoff,
        0,
        64,
        56,
        len(phdrs),
        64,
        len(all_sections) + 1,
        len(all_sections),  # .shstrtab is the last section
    )
    ph = b""
    for p_type, name in phdrs:
        off, size = placed[name]
        ph += struct.pack("<IIQQQQQQ", p_type, 5, off, 0x1000000, 0x1000000, size, size, 4)
    sh = b"\0" * 64
    for (name, sh_type, _), name_off in zip(all_sections, name_offsets, strict=True):
        off, size = placed[name]
        sh += struct.pack("<IIQQQQIIQQ", name_off, sh_type, 0, 0, off, size, 0, 0, 1, 0)
    return header + ph + body + sh


def vmlinux(
    release: str = "6.1.0-99-amd64",
    *,
    pvh: bool = True,
    machine: int = EM_X86_64,
    ikconfig: str | None = None,
    zeros: int = 0,
) -> bytes:
    """An ELF that looks to the harness like a kernel's vmlinux (``zeros``: that many
    zero bytes after its text, as a kernel's .bss and padding are)."""
    text = b"\x90" * 64 + f"Linux version {release} (builder@host) (gcc 12) #1 SMP\n".encode()
    text += b"Linux version %s (%s)\0"  # a format string that must not be taken for the banner
    if ikconfig is not None:
        text += b"IKCFG_ST" + gzip.compress(ikconfig.encode()) + b"IKCFG_ED"
    text += bytes(zeros)
    notes = note("Linux", 256, b"6.1\0") + note("Xen", XEN_ENTRY, struct.pack("<Q", 0x1000))
    if pvh:
        notes += note("Xen", XEN_PHYS32_ENTRY, struct.pack("<I", 0x1000))
    return build_elf(
        [(".text", SHT_PROGBITS, text), (".notes", SHT_NOTE, notes)],
        machine=machine,
        note_section=".notes",
    )


def _with_program(program: str, options: list[str], data: bytes) -> bytes:
    """``data`` run through ``program OPTIONS IN -o OUT`` (``lz4``: ``IN OUT``)."""
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed")
    with tempfile.TemporaryDirectory() as scratch:
        src = Path(scratch) / "in"
        dst = Path(scratch) / "out"
        src.write_bytes(data)
        output = [str(dst)] if program == "lz4" else ["-o", str(dst)]
        SubprocessRunner().run([program, *options, str(src), *output])
        return dst.read_bytes()


def compress(data: bytes, method: str) -> bytes:
    """``data`` compressed the way the kernel's build compresses its payload."""
    if method == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if method == "gzip":
        return gzip.compress(data)
    if method == "bzip2":
        return bz2.compress(data)
    if method == "zstd":
        return _with_program("zstd", ["-q", "-f"], data)
    if method == "lz4":
        return _with_program("lz4", ["-q", "-f", "-l"], data)
    raise ValueError(method)


def bzimage(
    payload_plain: bytes,
    *,
    method: str = "xz",
    release: str | None = "6.1.0-99-amd64",
    relocs: bytes = b"RELOCS" * 10,
    cut_stream: int = 0,
) -> bytes:
    """A bzImage: setup header, some decompressor code, the payload, trailing data.

    As in the kernel's build, the payload is the ELF followed by its relocations,
    compressed, with the uncompressed size appended as 4 little-endian bytes.
    ``cut_stream`` drops that many bytes from the end of the compressed stream.
    """
    setup_sects = 1
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    if release is not None:
        version = f"{release} (builder@host) #1 SMP Debian".encode() + b"\0"
        setup[0x300 : 0x300 + len(version)] = version
        struct.pack_into("<H", setup, 0x20E, 0x300 - 0x200)
    plain = payload_plain + relocs
    stream = compress(plain, method)
    packed = stream[: len(stream) - cut_stream] + struct.pack("<I", len(plain))
    decompressor = b"\xcc" * 0x100
    struct.pack_into("<II", setup, 0x248, len(decompressor), len(packed))
    return bytes(setup) + decompressor + packed + b"\0" * 64


def module(name: str, *, depends: str = "", softdep: str = "", alias: str = "") -> bytes:
    """A relocatable ELF with the ``.modinfo`` a module of that name would have."""
    items = [f"name={name}", f"depends={depends}", "license=GPL"]
    if softdep:
        items.append(f"softdep={softdep}")
    if alias:
        items.append(f"alias={alias}")
    items.append("vermagic=6.1.0-99-amd64 SMP mod_unload modversions ")
    modinfo = b"".join(i.encode() + b"\0" for i in items)
    return build_elf([(".modinfo", SHT_PROGBITS, modinfo)], e_type=ET_REL)


def write_module(path: Path, name: str, **info: str) -> Path:
    """Write a module file; ``.ko.xz`` / ``.ko.gz`` / ``.ko.zst`` are compressed."""
    data = module(name, **info)
    if path.name.endswith(".xz"):
        data = lzma.compress(data, check=lzma.CHECK_CRC32)
    elif path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = _with_program("zstd", ["-q", "-f"], data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


#: A module tree shaped like Debian 6.1's, with what the boot needs and more.
TREE_6_1: dict[str, tuple[str, str]] = {
    # path: (depends, softdep)
    "kernel/fs/9p/9p.ko": ("9pnet,fscache,netfs", ""),
    "kernel/fs/fscache/fscache.ko": ("netfs", ""),
    "kernel/fs/netfs/netfs.ko": ("", ""),
    "kernel/net/9p/9pnet.ko": ("", ""),
    "kernel/net/9p/9pnet_virtio.ko": ("virtio,9pnet,virtio_ring", ""),
    "kernel/drivers/virtio/virtio.ko": ("virtio_ring", ""),
    "kernel/drivers/virtio/virtio_ring.ko": ("", ""),
    "kernel/drivers/virtio/virtio_pci.ko": (
        "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
        "",
    ),
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko": ("", ""),
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko": ("", ""),
    "kernel/drivers/virtio/virtio_mmio.ko": ("virtio,virtio_ring", ""),
    "kernel/drivers/char/virtio_console.ko": ("virtio,virtio_ring", ""),
    "kernel/fs/fuse/fuse.ko": ("", ""),
    "kernel/fs/fuse/virtiofs.ko": ("fuse,virtio,virtio_ring", ""),
    "kernel/fs/overlayfs/overlay.ko": ("", ""),
    # Not needed by the boot: must not be kept.
    "kernel/drivers/ata/ahci.ko": ("libahci", ""),
    "kernel/drivers/ata/libahci.ko": ("", ""),
    "kernel/arch/x86/kvm/kvm.ko": ("", ""),
}
BUILTIN_6_1 = ("kernel/net/unix/unix.ko", "kernel/net/packet/af_packet.ko")


def module_tree(
    moddir: Path,
    modules: dict[str, tuple[str, str]] | None = None,
    builtin: tuple[str, ...] = BUILTIN_6_1,
    *,
    suffix: str = "",
) -> Path:
    """Write a module tree as a ``.deb`` ships it: modules, builtin lists, no modules.dep."""
    modules = TREE_6_1 if modules is None else modules
    moddir.mkdir(parents=True, exist_ok=True)
    for rel, (depends, softdep) in modules.items():
        name = Path(rel).name.removesuffix(".ko")
        write_module(moddir / (rel + suffix), name, depends=depends, softdep=softdep)
    (moddir / "modules.builtin").write_text("".join(f"{b}\n" for b in builtin))
    (moddir / "modules.builtin.modinfo").write_bytes(
        b"".join(f"{Path(b).stem}.file={Path(b).stem}\0".encode() for b in builtin)
    )
    (moddir / "modules.order").write_text("".join(f"{rel}\n" for rel in modules))
    return moddir
