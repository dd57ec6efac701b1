"""BPF objects for the ELF reader and build tests: the real sample and broken ones.

Broken objects are either compiled from the small sources in
``tests/data/sockex1/`` (a map section of the wrong size, no license, a reference
to a global that is not a map, a program the verifier refuses) or made by
patching bytes of the real object (wrong machine, unsupported relocation type).
"""

from __future__ import annotations

import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

from harness.build import BuildOutput, bpf_argv, build_sample
from harness.proc import SubprocessRunner, require

DATA = Path(__file__).resolve().parent.parent / "data" / "sockex1"
BROKEN = ("bad_map_size", "no_license", "unknown_symbol", "rejected")


def build_host(root: Path) -> BuildOutput:
    """The sample built against the host's headers into ``root``."""
    return build_sample("host", None, build_root=root)


def compile_broken(name: str, out_dir: Path) -> Path:
    """Compile ``tests/data/sockex1/<name>_kern.c``; the object's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}_kern.o"
    argv = bpf_argv(require("clang", "clang"), None, DATA / f"{name}_kern.c", output)
    SubprocessRunner().run(argv)
    return output


def section_offset(data: bytes, name: str) -> int:
    """File offset of the section ``name`` of the ELF image ``data``."""
    import io

    section = ELFFile(io.BytesIO(data)).get_section_by_name(name)
    assert section is not None, name
    offset: int = section["sh_offset"]
    return offset


def with_machine(data: bytes, machine: int) -> bytes:
    """The image with ``e_machine`` (offset 18, 16 bits) replaced."""
    return data[:18] + struct.pack("<H", machine) + data[20:]


def with_relocation_type(data: bytes, section: str, kind: int) -> bytes:
    """The image with the type of the first relocation of ``section`` replaced.

    An Elf64_Rel is r_offset (8 bytes) then r_info, whose low 32 bits are the type.
    """
    at = section_offset(data, section) + 8
    return data[:at] + struct.pack("<I", kind) + data[at + 4 :]
