"""The loader protocol: how the harness drives a loader that is a program.

A loader is anything that loads a BPF object, attaches its programs and, when
asked, reports the entries of its maps. The project's C loaders speak this
protocol, and so can a user's own loader (``--loader-cmd NAME=COMMAND``)::

    COMMAND --object FILE
            [--program PROGRAM:TYPE]...          load this program as TYPE
            [--attach PROGRAM:socket:IFACE]...   attach it with SO_ATTACH_BPF to a
                                                 packet socket bound to IFACE
            [--prog-array MAP:INDEX:PROGRAM]...  store the program's fd at INDEX of the
                                                 BPF_MAP_TYPE_PROG_ARRAY MAP
            [--dump MAP]...                      maps to report at the end

A PROGRAM is ``SECTION``, the one program of an executable section (``socket/0``), or
``SECTION#FUNCTION``, the program of function FUNCTION (its ``STT_FUNC`` symbol) in a
section that holds several, as libbpf allows and the kernel's samples use from 6.12
(five programs in ``SEC("socket")``). ``#`` is in no C identifier and in none of the
section names programs use, so the two forms cannot be confused; the second also names
the one program of a section. A loader that loads one program per section (the ``c``
loader) is not given the second form: its case is skipped with that reason.

1. The loader loads every ``--program`` (TYPE is ``socket_filter``), fills the prog
   arrays, attaches, then prints the line ``ready`` on stdout and flushes it. A prog
   array whose ``values`` the object initialises itself (a BTF-defined map with a static
   initialiser: ``R_BPF_64_ABS64`` relocations in ``.rel.maps`` against program
   symbols) is filled as the object says, as libbpf does, with no ``--prog-array``;
   every program it names is among the ``--program`` ones.
2. The harness sends the traffic, then closes the loader's stdin.
3. On end of input (or SIGTERM), the loader prints one JSON document on stdout and
   exits 0::

       {"maps": {"MAP": [["KEY_HEX", "VALUE_HEX"], ...], ...}}

   one pair per entry of each ``--dump`` map (for an array, every index), key and
   value as the kernel holds them, in lower-case hex.
4. Any failure: a message on stderr (the verifier's log with a rejected program),
   and a non-zero exit status, before or instead of ``ready``.

Section names hold no ``:`` nor ``#``; MAP names are the object's map symbols.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import LoaderProtocolError

if TYPE_CHECKING:
    # Imported where a command line is parsed: the guest, which only writes one,
    # pays for every import (harness/guest/bundle.py).
    import argparse

READY = "ready"
#: Between a section and a function in a PROGRAM: ``socket#count_flows``.
FUNCTION_SEPARATOR = "#"
#: The one attach target the protocol names: ``socket:IFACE``.
SOCKET_TARGET = "socket:"

#: A map's entries as a loader reports them: raw key and value bytes.
Dump = dict[str, list[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked to do for one case."""

    object: Path
    programs: tuple[tuple[str, str], ...]  # (PROGRAM, type)
    attach: tuple[tuple[str, str], ...] = ()  # (PROGRAM, "socket:IFACE")
    prog_arrays: tuple[tuple[str, int, str], ...] = ()  # (map, index, PROGRAM)
    dump: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The protocol's arguments for this request (after the loader's own command)."""
        args = ["--object", str(self.object)]
        for program, kind in self.programs:
            args += ["--program", f"{program}:{kind}"]
        for program, target in self.attach:
            args += ["--attach", f"{program}:{target}"]
        for name, index, program in self.prog_arrays:
            args += ["--prog-array", f"{name}:{index}:{program}"]
        for name in self.dump:
            args += ["--dump", name]
        return args

    @classmethod
    def from_argv(
        cls,
        argv: Sequence[str] | None,
        *,
        program_types: Collection[str],
        prog: str | None = None,
        description: str | None = None,
    ) -> LoadRequest:
        """The request a command line makes, the inverse of :meth:`argv`.

        ``program_types`` are the TYPEs the loader takes; ``prog`` and ``description``
        are for its usage message. argparse prints the usage error and exits 2 on a
        malformed command line.
        """
        args = request_parser(program_types, prog=prog, description=description).parse_args(argv)
        return cls(
            object=args.object,
            programs=tuple(args.program),
            attach=tuple(args.attach),
            prog_arrays=tuple(args.prog_array),
            dump=tuple(args.dump),
        )


def request_parser(
    program_types: Collection[str], *, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """An argument parser for the protocol's command line (:meth:`LoadRequest.from_argv`)."""
    import argparse

    def program_spec(text: str) -> tuple[str, str]:
        program, _, kind = text.partition(":")
        if not kind or not is_program(program):
            raise argparse.ArgumentTypeError(f"{text!r} is not PROGRAM:TYPE")
        if kind not in program_types:
            raise argparse.ArgumentTypeError(
                f"{text!r}: unknown program type {kind!r}; known: {', '.join(program_types)}"
            )
        return program, kind

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--object", type=Path, required=True, help="the BPF object (.o) to load")
    parser.add_argument(
        "--program",
        type=program_spec,
        action="append",
        default=[],
        metavar="PROGRAM:TYPE",
        help=(
            f"load this program as TYPE ({', '.join(program_types)}); PROGRAM is SECTION or "
            f"SECTION{FUNCTION_SEPARATOR}FUNCTION"
        ),
    )
    parser.add_argument(
        "--attach",
        type=attach_spec,
        action="append",
        default=[],
        metavar=f"PROGRAM:{SOCKET_TARGET}IFACE",
        help="attach the program with SO_ATTACH_BPF to a packet socket bound to IFACE",
    )
    parser.add_argument(
        "--prog-array",
        type=prog_array_spec,
        action="append",
        default=[],
        metavar="MAP:INDEX:PROGRAM",
        help="store the program's fd at INDEX of the BPF_MAP_TYPE_PROG_ARRAY MAP",
    )
    parser.add_argument(
        "--dump",
        action="append",
        default=[],
        metavar="MAP",
        help="report this map's entries at the end",
    )
    return parser


def program_name(section: str, function: str = "") -> str:
    """The PROGRAM of the protocol: ``SECTION``, or ``SECTION#FUNCTION`` with a function."""
    return f"{section}{FUNCTION_SEPARATOR}{function}" if function else section


def split_program(program: str) -> tuple[str, str]:
    """``(section, function)`` of a PROGRAM; the function is "" when it names a section."""
    section, _, function = program.partition(FUNCTION_SEPARATOR)
    return section, function


def is_program(text: str) -> bool:
    """Whether ``text`` is a PROGRAM: a section, then at most one ``#FUNCTION``."""
    section, function = split_program(text)
    return bool(
        section
        and ":" not in text
        and FUNCTION_SEPARATOR not in function
        and (function or not text.endswith(FUNCTION_SEPARATOR))
    )


def attach_spec(text: str) -> tuple[str, str]:
    """``PROGRAM:socket:IFACE`` of ``--attach``."""
    import argparse

    program, _, target = text.partition(":")
    interface = target.removeprefix(SOCKET_TARGET)
    if not is_program(program) or not target.startswith(SOCKET_TARGET) or not interface:
        raise argparse.ArgumentTypeError(f"{text!r} is not PROGRAM:{SOCKET_TARGET}IFACE")
    return program, target


def prog_array_spec(text: str) -> tuple[str, int, str]:
    """``MAP:INDEX:PROGRAM`` of ``--prog-array``."""
    import argparse

    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not is_program(parts[2]) or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MAP:INDEX:PROGRAM with INDEX a number from 0"
        )
    return parts[0], int(parts[1]), parts[2]


def parse_dump(text: str, wanted: Sequence[str], *, loader: str) -> Dump:
    """The map entries a loader printed; a :class:`LoaderProtocolError` naming the loader if not."""

    def fail(what: str) -> LoaderProtocolError:
        return LoaderProtocolError(f"the {loader} loader broke the loader protocol: {what}")

    text = text.strip()
    if not text:
        raise fail("it printed no JSON document after its input was closed")
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise fail(f"its report is not JSON ({exc}): {text[:200]!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("maps"), dict):
        raise fail('its report has no "maps" object')
    dump: Dump = {}
    for name in wanted:
        entries = data["maps"].get(name)
        if not isinstance(entries, list):
            raise fail(f"its report has no entry list for map {name!r}")
        pairs = []
        for entry in entries:
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or not all(isinstance(x, str) for x in entry)
            ):
                raise fail(f'map {name}: an entry is not ["KEY_HEX", "VALUE_HEX"]: {entry!r}')
            try:
                pairs.append((bytes.fromhex(entry[0]), bytes.fromhex(entry[1])))
            except ValueError as exc:
                raise fail(f"map {name}: an entry is not hex: {entry!r}") from exc
        dump[name] = pairs
    return dump


def format_dump(dump: Mapping[str, Sequence[tuple[bytes, bytes]]]) -> str:
    """The JSON document a loader prints (the Python loader's CLI uses it)."""
    return json.dumps({"maps": {n: [[k.hex(), v.hex()] for k, v in e] for n, e in dump.items()}})
