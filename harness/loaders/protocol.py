"""The loader protocol: how the harness drives a loader that is a program.

A loader is anything that loads a BPF object, attaches its programs and, when
asked, reports the entries of its maps. The project's C loaders speak this
protocol, and so can a user's own loader (``--loader-cmd NAME=COMMAND``)::

    COMMAND --object FILE
            [--program SECTION:TYPE]...          load this program section as TYPE
            [--attach SECTION:socket:IFACE]...   attach it with SO_ATTACH_BPF to a
                                                 packet socket bound to IFACE
            [--prog-array MAP:INDEX:SECTION]...  store the program's fd at INDEX of the
                                                 BPF_MAP_TYPE_PROG_ARRAY MAP
            [--dump MAP]...                      maps to report at the end

1. The loader loads every ``--program`` (TYPE is ``socket_filter``), fills the prog
   arrays, attaches, then prints the line ``ready`` on stdout and flushes it.
2. The harness sends the traffic, then closes the loader's stdin.
3. On end of input (or SIGTERM), the loader prints one JSON document on stdout and
   exits 0::

       {"maps": {"MAP": [["KEY_HEX", "VALUE_HEX"], ...], ...}}

   one pair per entry of each ``--dump`` map (for an array, every index), key and
   value as the kernel holds them, in lower-case hex.
4. Any failure: a message on stderr (the verifier's log with a rejected program),
   and a non-zero exit status, before or instead of ``ready``.

Section names hold no ``:``; MAP names are the object's map symbols.
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
#: The one attach target the protocol names: ``socket:IFACE``.
SOCKET_TARGET = "socket:"

#: A map's entries as a loader reports them: raw key and value bytes.
Dump = dict[str, list[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked to do for one case."""

    object: Path
    programs: tuple[tuple[str, str], ...]  # (section, type)
    attach: tuple[tuple[str, str], ...] = ()  # (section, "socket:IFACE")
    prog_arrays: tuple[tuple[str, int, str], ...] = ()  # (map, index, section)
    dump: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The protocol's arguments for this request (after the loader's own command)."""
        args = ["--object", str(self.object)]
        for section, kind in self.programs:
            args += ["--program", f"{section}:{kind}"]
        for section, target in self.attach:
            args += ["--attach", f"{section}:{target}"]
        for name, index, section in self.prog_arrays:
            args += ["--prog-array", f"{name}:{index}:{section}"]
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
        section, _, kind = text.partition(":")
        if not section or not kind:
            raise argparse.ArgumentTypeError(f"{text!r} is not SECTION:TYPE")
        if kind not in program_types:
            raise argparse.ArgumentTypeError(
                f"{text!r}: unknown program type {kind!r}; known: {', '.join(program_types)}"
            )
        return section, kind

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--object", type=Path, required=True, help="the BPF object (.o) to load")
    parser.add_argument(
        "--program",
        type=program_spec,
        action="append",
        default=[],
        metavar="SECTION:TYPE",
        help=f"load this program section as TYPE ({', '.join(program_types)})",
    )
    parser.add_argument(
        "--attach",
        type=attach_spec,
        action="append",
        default=[],
        metavar=f"SECTION:{SOCKET_TARGET}IFACE",
        help="attach the program with SO_ATTACH_BPF to a packet socket bound to IFACE",
    )
    parser.add_argument(
        "--prog-array",
        type=prog_array_spec,
        action="append",
        default=[],
        metavar="MAP:INDEX:SECTION",
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


def attach_spec(text: str) -> tuple[str, str]:
    """``SECTION:socket:IFACE`` of ``--attach``."""
    import argparse

    section, _, target = text.partition(":")
    interface = target.removeprefix(SOCKET_TARGET)
    if not section or not target.startswith(SOCKET_TARGET) or not interface:
        raise argparse.ArgumentTypeError(f"{text!r} is not SECTION:{SOCKET_TARGET}IFACE")
    return section, target


def prog_array_spec(text: str) -> tuple[str, int, str]:
    """``MAP:INDEX:SECTION`` of ``--prog-array``."""
    import argparse

    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[2] or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MAP:INDEX:SECTION with INDEX a number from 0"
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
