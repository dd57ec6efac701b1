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

import os
import select
import signal
import sys
from collections.abc import Sequence
from types import FrameType, TracebackType

from harness.bpf import loader
from harness.errors import HarnessError, VerifierError
from harness.loaders.protocol import READY, LoadRequest, format_dump

#: Signals that end the wait as end of input does: the harness's SIGTERM, a terminal's ^C.
END_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def parse_args(argv: Sequence[str] | None) -> LoadRequest:
    """The request a command line makes; argparse exits 2 on a malformed one."""
    return LoadRequest.from_argv(
        argv,
        program_types=loader.PROGRAM_TYPES,
        prog="python3 -m harness.bpf",
        description=(
            'Load a BPF object (maps in SEC("maps") or BTF-defined in SEC(".maps")), '
            "attach it, and report its maps "
            "when stdin closes (the loader protocol of harness/loaders/protocol.py)."
        ),
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
