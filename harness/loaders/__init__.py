"""Loaders: what loads a sample's object in the guest, attaches it and dumps its maps.

Three are built in:

- ``python``: :mod:`harness.bpf`, pyelftools and ``bpf(2)`` through ctypes, run in
  the guest's own Python process, for both formats;
- ``c``: the classic loader on libelf (``harness/loaders/classic``), for objects
  whose maps are ``struct bpf_map_def SEC("maps")``;
- ``libbpf``: a loader on the distribution's libbpf (``harness/loaders/libbpf``),
  for objects with BTF-defined maps in ``SEC(".maps")``.

The program loaders are built per kernel release, against its headers, like the
samples, and speak the loader protocol (:mod:`harness.loaders.protocol`). So can a
loader of the user's own: ``--loader-cmd NAME=COMMAND`` adds it. Which loaders
apply to a sample follows from its format; a loader that cannot load a sample's
format is not run for it. A loader that reads the format but not the way the
sample lays out its programs (:meth:`Loader.cannot_load`) has its case skipped,
with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.paths import PROJECT_ROOT

if TYPE_CHECKING:
    # harness.samples imports the protocol, which is in this package.
    from harness.samples import Sample

LOADERS_DIR = PROJECT_ROOT / "harness" / "loaders"
#: The loader protocol in C, which every built-in program loader is built with.
PROTOCOL_SOURCE = LOADERS_DIR / "common" / "protocol.c"


@dataclass(frozen=True)
class Loader:
    """One loader.

    ``sources`` are C files built per kernel release into a program (none for the
    in-process Python loader and for a user's command); ``command`` is a user's own
    program and its arguments.
    """

    name: str
    formats: tuple[str, ...]
    description: str
    sources: tuple[Path, ...] = ()
    libraries: tuple[str, ...] = ()  # link options; "pkg-config:NAME" asks pkg-config
    command: tuple[str, ...] = ()
    #: Another checkout's Python loader (an A/B run's python@base): the guest runs it in
    #: a child forked from its own process with these first on sys.path
    #: (harness/guest/forked.py); ``command`` runs the same as a program.
    python_path: tuple[str, ...] = ()
    #: It loads a whole section as one program (the kernel's old bpf_load.c does), so
    #: it cannot be given ``SECTION#FUNCTION``, a program of a section holding several.
    whole_sections: bool = False

    @property
    def in_process(self) -> bool:
        return not self.sources and not self.command

    def applies_to(self, sample_format: str) -> bool:
        return sample_format in self.formats

    def cannot_load(self, sample: Sample) -> str | None:
        """Why this loader cannot load ``sample`` although it reads its format, or None."""
        shared = [p.name for p in sample.programs if p.function]
        if self.whole_sections and shared:
            return (
                f"the {self.name} loader loads a whole section as one program, and "
                f"{sample.name} has several programs in one section ({', '.join(shared)}); "
                "the python and libbpf loaders load them by their functions"
            )
        return None


BUILTIN: tuple[Loader, ...] = (
    Loader(
        "python",
        ("classic", "btf"),
        "harness/bpf: pyelftools and bpf(2) through ctypes, in the guest's Python",
    ),
    Loader(
        "c",
        ("classic",),
        'the classic loader on libelf, for struct bpf_map_def SEC("maps") objects',
        sources=(
            LOADERS_DIR / "classic" / "loader.c",
            LOADERS_DIR / "classic" / "bpf_load.c",
            PROTOCOL_SOURCE,
        ),
        libraries=("pkg-config:libelf",),
        whole_sections=True,
    ),
    Loader(
        "libbpf",
        ("btf",),
        'the bpf_object API of the distribution\'s libbpf, for BTF-defined SEC(".maps") objects',
        sources=(LOADERS_DIR / "libbpf" / "loader.c", PROTOCOL_SOURCE),
        libraries=("pkg-config:libbpf",),
    ),
)

#: No "-": a test id is KERNEL-SAMPLE-LOADER, and a sample's name may have one.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")


def builtin(names: Iterable[str] | None = None) -> list[Loader]:
    """The built-in loaders, or those of ``names``; a :class:`ConfigError` for an unknown one."""
    known = {loader.name: loader for loader in BUILTIN}
    if names is None:
        return list(known.values())
    chosen = []
    for name in names:
        if name not in known:
            raise ConfigError(
                f"unknown loader {name!r}; the built-in loaders are {', '.join(known)} "
                "(add your own with --loader-cmd NAME=COMMAND)"
            )
        chosen.append(known[name])
    return chosen


def select(spec: str, commands: Sequence[str] = ()) -> list[Loader]:
    """The loaders of a ``--loader`` value ("all" or "NAME[,NAME...]") and ``--loader-cmd``s."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    own = [parse_command(text) for text in commands]
    if not names or names == ["all"]:
        chosen = builtin()
    else:
        own_names = {loader.name for loader in own}
        chosen = builtin(n for n in names if n not in own_names)
    taken = {loader.name for loader in chosen}
    for loader in own:
        if loader.name in taken:
            raise ConfigError(
                f"--loader-cmd {loader.name}=...: a loader named {loader.name} exists already; "
                "give yours another name"
            )
        taken.add(loader.name)
    return [*chosen, *own]


def parse_command(text: str) -> Loader:
    """A user's loader from ``NAME[:FORMAT,...]=COMMAND`` (COMMAND split like a shell would).

    The command must be an executable file now; it is run in the guest with the
    loader protocol's arguments appended, for samples of the formats given (every
    format when none is given). No shell runs it.
    """
    name, sep, command = text.partition("=")
    name, _, format_text = name.strip().partition(":")
    formats = tuple(f.strip() for f in format_text.split(",") if f.strip()) or ("classic", "btf")
    unknown = [f for f in formats if f not in ("classic", "btf")]
    if unknown:
        raise ConfigError(
            f"--loader-cmd {text!r}: unknown format {', '.join(unknown)}; "
            "use classic, btf or both (NAME:classic,btf=COMMAND)"
        )
    if not sep or not name or not command.strip():
        raise ConfigError(f"--loader-cmd {text!r}: give NAME=COMMAND, e.g. mine=./my-loader")
    if not _NAME.match(name):
        raise ConfigError(
            f"--loader-cmd {text!r}: {name!r} is not a usable loader name "
            "(letters, digits, _ and ., no -)"
        )
    argv = shlex.split(command)
    program = argv[0]
    import shutil  # here: at the top it would load zlib, bz2 and lzma into the guest

    found = shutil.which(program) if os.sep not in program else program
    if found is None or not os.access(found, os.X_OK) or not os.path.isfile(found):
        raise ConfigError(
            f"--loader-cmd {name}: {program} is not an executable file; give its path "
            "(and chmod +x it)"
        )
    argv[0] = str(Path(found).resolve())
    return Loader(name, formats, f"your own: {shlex.join(argv)}", command=tuple(argv))
