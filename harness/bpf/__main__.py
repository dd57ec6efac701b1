"""``python3 -m harness.bpf``: the Python loader as a program that speaks the loader protocol.

The arguments and the exchange are those :mod:`harness.loaders.protocol`
documents: load, fill prog arrays and attach as asked, print ``ready``, wait for
end of input (or SIGTERM), print the requested maps as one JSON document, exit 0.
What the kernel refused and the load did without (an object's BTF, say) is a line
``note: ...`` on stderr each, before ``ready``.
A failure is one line on stderr (followed by the verifier's log when a program is
rejected) and exit status 1; a malformed command line exits 2.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

from harness.bpf import loader
from harness.errors import HarnessError, VerifierError
from harness.loaders.protocol import READY, LoadRequest, format_dump

#: Signals that end the wait as end of input does: the harness's SIGTERM, a terminal's ^C.
END_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def program_spec(text: str) -> tuple[str, str]:
    """``SECTION:TYPE`` of ``--program``."""
    section, _, kind = text.partition(":")
    if not section or not kind:
        raise argparse.ArgumentTypeError(f"{text!r} is not SECTION:TYPE")
    if kind not in loader.PROGRAM_TYPES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown program type {kind!r}; known: {', '.join(loader.PROGRAM_TYPES)}"
        )
    return section, kind


def attach_spec(text: str) -> tuple[str, str]:
    """``SECTION:socket:IFACE`` of ``--attach``."""
    section, _, target = text.partition(":")
    interface = target.removeprefix(loader.SOCKET_TARGET)
    if not section or not target.startswith(loader.SOCKET_TARGET) or not interface:
        raise argparse.ArgumentTypeError(f"{text!r} is not SECTION:{loader.SOCKET_TARGET}IFACE")
    return section, target


def prog_array_spec(text: str) -> tuple[str, int, str]:
    """``MAP:INDEX:SECTION`` of ``--prog-array``."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[2] or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MAP:INDEX:SECTION with INDEX a number from 0"
        )
    return parts[0], int(parts[1]), parts[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m harness.bpf",
        description=(
            'Load a BPF object (maps in SEC("maps") or BTF-defined in SEC(".maps")), '
            "attach it, and report its maps "
            "when stdin closes (the loader protocol of harness/loaders/protocol.py)."
        ),
    )
    parser.add_argument("--object", type=Path, required=True, help="the BPF object (.o) to load")
    parser.add_argument(
        "--program",
        type=program_spec,
        action="append",
        default=[],
        metavar="SECTION:TYPE",
        help=f"load this program section as TYPE ({', '.join(loader.PROGRAM_TYPES)})",
    )
    parser.add_argument(
        "--attach",
        type=attach_spec,
        action="append",
        default=[],
        metavar="SECTION:socket:IFACE",
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


def parse_args(argv: Sequence[str] | None) -> LoadRequest:
    """The request a command line makes; argparse exits 2 on a malformed one."""
    args = build_parser().parse_args(argv)
    return LoadRequest(
        object=args.object,
        programs=tuple(args.program),
        attach=tuple(args.attach),
        prog_arrays=tuple(args.prog_array),
        dump=tuple(args.dump),
    )


class EndOfRun:
    """Waits for end of input or one of :data:`END_SIGNALS`, whichever comes first.

    A signal is turned into a byte on a pipe (``signal.set_wakeup_fd``) that the
    wait selects on with stdin, so a signal that arrives before the wait starts
    (while the object is loading) is not lost.
    """

    def __init__(self, stdin_fd: int) -> None:
        self.stdin_fd = stdin_fd
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_write)
        self.previous_handlers = {sig: signal.signal(sig, _note) for sig in END_SIGNALS}

    def __enter__(self) -> EndOfRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self.previous_wakeup)
        os.close(self.wake_read)
        os.close(self.wake_write)

    def wait(self) -> None:
        watched = [self.stdin_fd, self.wake_read]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if self.wake_read in ready:
                return
            if not os.read(self.stdin_fd, 65536):
                return


def _note(signum: int, frame: FrameType | None) -> None:
    """The wakeup pipe has recorded the signal; nothing else to do here."""


def describe(error: HarnessError) -> str:
    """The error as stderr shows it: one line, then the log of a rejected program."""
    if isinstance(error, VerifierError):
        return str(error)
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None, *, stdin_fd: int | None = None) -> int:
    """Run the protocol; the exit status."""
    try:
        request = parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with (
            EndOfRun(sys.stdin.fileno() if stdin_fd is None else stdin_fd) as end,
            loader.load_request(request) as attached,
        ):
            for note in attached.notes:
                print(f"note: {note}", file=sys.stderr, flush=True)
            print(READY, flush=True)
            end.wait()
            report = format_dump(attached.dump())
    except HarnessError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr, flush=True)
        return 1
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
