"""Kernel image files: the x86 bzImage, the ELF vmlinux inside it, and what they say.

A bzImage is a real-mode setup header followed by a compressed payload. The payload
decompresses to the kernel's ELF ``vmlinux`` (with its relocation table appended).
Where that ELF carries a PVH entry point (a Xen ELF note, ``CONFIG_PVH=y``), QEMU boots
it directly with ``-kernel`` and skips the decompression, which costs about 3 s under
TCG for a Debian kernel. Debian's images are xz (6.1) or zstd (6.12 and later)
compressed; its ``cloud`` flavour uses lz4.

The offsets are those of the x86 boot protocol (Documentation/arch/x86/boot.rst).
"""

from __future__ import annotations

import bz2
import contextlib
import io
import logging
import lzma
import mmap
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import files
from harness.errors import CommandError, KernelError, NotAKernelError, ToolMissingError
from harness.proc import Runner, SubprocessRunner, require

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

log = logging.getLogger(__name__)

# Setup header fields (offsets into the file).
_SETUP_SECTS = 0x1F1
_HEADER_MAGIC_AT = 0x202
_HEADER_MAGIC = b"HdrS"
_PROTOCOL_VERSION = 0x206
_KERNEL_VERSION_PTR = 0x20E
_PAYLOAD_OFFSET = 0x248
_PAYLOAD_LENGTH = 0x24C
#: payload_offset and payload_length exist from boot protocol 2.08 (Linux 2.6.26).
_PROTOCOL_WITH_PAYLOAD_FIELDS = 0x208

ELF_MAGIC = b"\x7fELF"
#: XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical entry point of the PVH boot protocol.
XEN_ELFNOTE_PHYS32_ENTRY = 18

#: Magic numbers at the start of each compressed payload the kernel can build.
_PAYLOAD_MAGICS: tuple[tuple[str, bytes], ...] = (
    ("xz", b"\xfd7zXZ\x00"),
    ("gzip", b"\x1f\x8b"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lz4", b"\x02\x21\x4c\x18"),  # the legacy frame the kernel's lz4 wrapper writes
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),
    ("lzo", b"\x89LZO"),
)

_BANNER = re.compile(rb"Linux version ([^\s%]+) \(")
_IKCONFIG_START = b"IKCFG_ST"
_IKCONFIG_END = b"IKCFG_ED"


@dataclass(frozen=True)
class Payload:
    """The compressed kernel inside a bzImage.

    ``data`` excludes the 4-byte little-endian uncompressed size that the kernel's
    build appends to every payload (``size_append``), which stand-alone
    decompressors such as ``zstd`` reject as trailing garbage.
    """

    compression: str
    data: bytes
    uncompressed_size: int


def is_bzimage(head: bytes) -> bool:
    """Whether ``head`` (at least the first 0x206 bytes of a file) is an x86 bzImage."""
    return head[_HEADER_MAGIC_AT : _HEADER_MAGIC_AT + 4] == _HEADER_MAGIC


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


def read_head(path: Path, size: int = 0x1000) -> bytes:
    try:
        with path.open("rb") as stream:
            return stream.read(size)
    except OSError as exc:
        raise NotAKernelError(f"cannot read {path}: {exc.strerror}") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NotAKernelError(f"cannot read {path}: {exc.strerror}") from exc


def _require_bzimage(path: Path, data: bytes) -> None:
    if not is_bzimage(data):
        what = "an ELF file" if is_elf(data) else "no x86 boot header"
        raise NotAKernelError(
            f"{path} is not an x86 bzImage ({what}: no 'HdrS' at offset 0x202); "
            "expected a compressed kernel such as arch/x86/boot/bzImage or /boot/vmlinuz-*"
        )


def find_payload(data: bytes) -> Payload | None:
    """The compressed payload of bzImage ``data``, or None if no known format is found."""
    if len(data) < _PAYLOAD_LENGTH + 4:
        return None
    setup_sects = data[_SETUP_SECTS] or 4  # 0 means 4, says the boot protocol
    protected_mode_start = (setup_sects + 1) * 512
    (protocol,) = struct.unpack_from("<H", data, _PROTOCOL_VERSION)
    if protocol >= _PROTOCOL_WITH_PAYLOAD_FIELDS:
        offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
        start = protected_mode_start + offset
        if start + length > len(data):
            raise KernelError(
                f"the image is truncated: its header places the payload up to byte "
                f"{start + length}, the file has {len(data)}; download or build it again"
            )
        raw = data[start : start + length]
        for name, magic in _PAYLOAD_MAGICS:
            if raw.startswith(magic) and len(raw) > 4:
                (size,) = struct.unpack_from("<I", raw, len(raw) - 4)
                return Payload(name, raw[:-4], size)
    # Older boot protocols: the first known magic after the setup code.
    found = [
        (pos, name)
        for name, magic in _PAYLOAD_MAGICS[:3]
        if (pos := data.find(magic, protected_mode_start)) >= 0
    ]
    if not found:
        return None
    pos, name = min(found)
    return Payload(name, data[pos:], 0)


def _decompress_stream(payload: Payload) -> bytes:
    """Decompress with a Python decompressor that stops at the end of the stream."""
    decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor | zlib._Decompress
    if payload.compression == "xz":
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    elif payload.compression == "lzma":
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    elif payload.compression == "bzip2":
        decompressor = bz2.BZ2Decompressor()
    else:  # gzip
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    data = decompressor.decompress(payload.data)
    if not decompressor.eof:
        raise EOFError("the compressed stream ends early")
    return data


def _decompress_with_program(
    payload: Payload, program: str, package: str, runner: Runner, scratch: Path
) -> bytes:
    require(program, package)
    source = scratch / f"payload.{program}"
    target = scratch / "vmlinux.bin"
    source.write_bytes(payload.data)
    if program == "zstd":
        runner.run([program, "-d", "-q", "-f", str(source), "-o", str(target)])
    else:  # lz4 takes the output as its second operand
        runner.run([program, "-d", "-q", "-f", str(source), str(target)])
    return target.read_bytes()


_PROGRAMS = {"zstd": ("zstd", "zstd"), "lz4": ("lz4", "lz4")}


def decompress_payload(payload: Payload, *, runner: Runner, scratch: Path) -> bytes | None:
    """The decompressed payload, or None for a compression this host cannot undo."""
    try:
        if payload.compression in ("xz", "lzma", "bzip2", "gzip"):
            data = _decompress_stream(payload)
        elif payload.compression in _PROGRAMS:
            program, package = _PROGRAMS[payload.compression]
            data = _decompress_with_program(payload, program, package, runner, scratch)
        else:
            log.warning("no decompressor for a %s-compressed kernel", payload.compression)
            return None
        if payload.uncompressed_size and len(data) != payload.uncompressed_size:
            raise EOFError(
                f"{len(data)} bytes out where the image announces {payload.uncompressed_size}"
            )
        return data
    except ToolMissingError as exc:
        log.warning("cannot decompress a %s kernel: %s", payload.compression, exc)
        return None
    except (lzma.LZMAError, OSError, zlib.error, EOFError, CommandError) as exc:
        raise KernelError(
            f"the {payload.compression} payload of the kernel image could not be "
            f"decompressed ({exc}); "
            "download or build the image again"
        ) from exc


def _elf_extent(elf: ELFFile) -> int:
    """Where the ELF's last header, section or segment ends (the relocs follow)."""
    header = elf.header
    ends = [header.e_shoff + header.e_shnum * header.e_shentsize]
    ends += [header.e_phoff + header.e_phnum * header.e_phentsize]
    ends += [
        s.header.sh_offset + s.header.sh_size
        for s in elf.iter_sections()
        if s.header.sh_type != "SHT_NOBITS"
    ]
    ends += [seg.header.p_offset + seg.header.p_filesz for seg in elf.iter_segments()]
    return int(max(ends))


def _elf_has_pvh(elf: ELFFile) -> bool:
    from elftools.elf.segments import NoteSegment

    for segment in elf.iter_segments():
        if not isinstance(segment, NoteSegment):
            continue
        for note in segment.iter_notes():
            # pyelftools names the types it knows from GNU notes (and types some
            # as str); 18 is not one of them and stays an int.
            n_type: object = note["n_type"]
            if note["n_name"] == "Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
    return False


def _check_x86_64(elf: ELFFile, what: str) -> None:
    if elf.elfclass != 64 or elf.header.e_machine != "EM_X86_64":
        raise NotAKernelError(
            f"{what} is a {elf.elfclass}-bit {elf.header.e_machine} ELF, not an x86-64 "
            "kernel; the harness boots x86-64 guests only"
        )


def has_pvh_entry(vmlinux: Path) -> bool:
    """Whether the ELF ``vmlinux`` has a PVH entry point, so QEMU can boot it directly."""
    # pyelftools here and below, not at the top: a run of cached kernels needs none of it.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with vmlinux.open("rb") as stream:
            return _elf_has_pvh(ELFFile(stream))
    except ELFError as exc:
        raise NotAKernelError(f"{vmlinux} is not a readable ELF file ({exc})") from exc
    except OSError as exc:
        raise NotAKernelError(f"cannot read {vmlinux}: {exc.strerror}") from exc


def write_atomic(dest: Path, data: bytes) -> None:
    """Write the image ``dest`` through a temporary file beside it, so it is whole or
    absent, its zero blocks left as holes (:func:`harness.files.write_atomic`).

    Half of a vmlinux is zeros (its .bss and the alignment between its segments: 34 of
    65 MB for Debian's 6.1): as holes they take no disk space, and qemu, which reads
    every loaded segment at each boot, reads them without the disk. A cold read of the
    whole file took 10.3 s on a machine whose page cache is reclaimed.
    """
    try:
        files.write_atomic(dest, data, holes=True)
    except OSError as exc:
        raise KernelError(
            f"cannot write {dest}: {exc.strerror}; free some space or choose another "
            "cache directory ($HARNESS_CACHE_DIR)"
        ) from exc


def _decompressed(image: Path, runner: Runner) -> bytes | None:
    """The payload of bzImage ``image`` decompressed, or None when that is not possible."""
    data = _read(image)
    _require_bzimage(image, data)
    try:
        payload = find_payload(data)
    except KernelError as exc:
        raise KernelError(f"{image}: {exc}") from exc
    if payload is None:
        log.warning("%s: no compressed payload of a known format found", image)
        return None
    with tempfile.TemporaryDirectory(prefix="harness-vmlinux-") as scratch:
        return decompress_payload(payload, runner=runner, scratch=Path(scratch))


def extract_vmlinux(image: Path, dest: Path, *, runner: Runner | None = None) -> bool:
    """Write the ELF vmlinux inside bzImage ``image`` to ``dest`` if it can boot by PVH.

    Returns False, and writes nothing, when the kernel has no PVH entry (or its
    compression cannot be undone on this host): boot the compressed image then.
    Raises :class:`NotAKernelError` when ``image`` is not an x86-64 bzImage.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    raw = _decompressed(image, runner or SubprocessRunner())
    if raw is None:
        return False
    if not is_elf(raw):
        raise NotAKernelError(
            f"the payload of {image} does not decompress to an ELF kernel; "
            "the image may be damaged: download or build it again"
        )
    try:
        elf = ELFFile(io.BytesIO(raw))
        _check_x86_64(elf, f"the kernel inside {image}")
        if not _elf_has_pvh(elf):
            log.info("%s has no PVH entry; it boots only compressed", image)
            return False
        extent = _elf_extent(elf)
    except ELFError as exc:
        raise NotAKernelError(f"the kernel inside {image} is a damaged ELF ({exc})") from exc
    write_atomic(dest, raw[:extent])
    return True


def _release_from_bzimage(data: bytes) -> str | None:
    (pointer,) = struct.unpack_from("<H", data, _KERNEL_VERSION_PTR)
    if pointer == 0:
        return None
    start = pointer + 0x200
    text = data[start : start + 256].split(b"\0", 1)[0]
    release = text.split(b" ", 1)[0].decode("ascii", errors="replace")
    return release or None


def image_release(path: Path) -> str | None:
    """The kernel release (``uname -r``) of a bzImage or an ELF vmlinux, if it says."""
    head = read_head(path)
    if is_bzimage(head):
        return _release_from_bzimage(_read(path)[:0x10000])
    if is_elf(head):
        with _mapped(path) as data:
            match = _BANNER.search(data)
            return match.group(1).decode("ascii", errors="replace") if match else None
    return None


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    """The file mapped read-only: an unstripped vmlinux can be hundreds of MB."""
    try:
        with (
            path.open("rb") as stream,
            mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            yield data
    except (OSError, ValueError) as exc:
        raise NotAKernelError(f"cannot read {path}: {exc}") from exc


def _config_in(data: bytes | mmap.mmap) -> str | None:
    start = data.find(_IKCONFIG_START)
    if start < 0:
        return None
    end = data.find(_IKCONFIG_END, start)
    if end < 0:
        return None
    try:
        blob = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(
            data[start + len(_IKCONFIG_START) : end]
        )
    except zlib.error:
        return None
    return blob.decode("utf-8", errors="replace")


def embedded_config(path: Path, *, runner: Runner | None = None) -> str | None:
    """The ``.config`` built into a kernel with ``CONFIG_IKCONFIG``, or None."""
    head = read_head(path)
    data: bytes | None
    if is_bzimage(head):
        data = _decompressed(path, runner or SubprocessRunner())
    elif is_elf(head):
        with _mapped(path) as mapped:
            return _config_in(mapped)
    else:
        return None
    return None if data is None else _config_in(data)
