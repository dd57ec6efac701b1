"""BPF objects for the ELF reader, loader and build tests: the real sample, broken ones, others.

Broken objects are either compiled from the small sources in
``tests/data/sockex1/`` (a map section of the wrong size, no license, a reference
to a global that is not a map, a program the verifier refuses) or made by
patching bytes of the real object (wrong machine, unsupported relocation type).
Objects with several programs and maps are compiled from ``tests/data/objects/``.
"""

from __future__ import annotations

import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

from harness import paths, samples
from harness.build import SampleBuild, bpf_argv, build_sample
from harness.proc import SubprocessRunner, require
from harness.samples import Sample

DATA = Path(__file__).resolve().parent.parent / "data" / "sockex1"
BROKEN = ("bad_map_size", "no_license", "unknown_symbol", "rejected")
OBJECTS = Path(__file__).resolve().parent.parent / "data" / "objects"


def sockex1() -> Sample:
    """The sockex1 sample's descriptor."""
    return samples.load(paths.SAMPLES_DIR / "sockex1")


def build_host(root: Path) -> SampleBuild:
    """The sample built against the host's headers into ``root``."""
    return build_sample(sockex1(), "host", None, build_root=root)


def compile_broken(name: str, out_dir: Path) -> Path:
    """Compile ``tests/data/sockex1/<name>_kern.c``; the object's path."""
    return _compile(DATA / f"{name}_kern.c", out_dir)


def compile_object(name: str, out_dir: Path) -> Path:
    """Compile ``tests/data/objects/<name>_kern.c`` against the host's headers."""
    return _compile(OBJECTS / f"{name}_kern.c", out_dir)


def _compile(source: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / source.with_suffix(".o").name
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, output))
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
