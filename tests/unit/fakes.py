"""The one fake :class:`harness.proc.Runner` of the unit tests, and recorded apt answers.

A :class:`FakeRunner` records every command as a :class:`Call` and answers it from,
in this order: a queue of answers (one per call, for a sequence such as "the probe,
then the boot"), the handler registered for the program's name (``apt-get``,
``depmod``), or a fallback for everything else (:func:`really_run` runs it for
real). An answer returns the command's stdout (exit status 0) or a whole
:class:`Completed`; a non-zero status raises as the real runner does when the
caller asked for ``check``. Raising in an answer fails the command.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CommandError
from harness.proc import Completed, Stall, SubprocessRunner, command_failed

DATA = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class Call:
    """One command as the code under test asked for it."""

    argv: tuple[str, ...]
    check: bool = True
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    input: str | None = None
    log_path: Path | None = None
    stall: Stall | None = None

    @property
    def program(self) -> str:
        """The program's name, without its directory (``/usr/bin/clang`` is ``clang``)."""
        return Path(self.argv[0]).name


#: An answer to one call: its stdout, or what the command left behind.
Answer = Callable[[Call], str | Completed]


class FakeRunner:
    """Records every command; answers from a queue, by program name, or a fallback."""

    def __init__(
        self,
        handlers: Mapping[str, Answer] | None = None,
        *,
        answers: Iterable[Answer] = (),
        otherwise: Answer | None = None,
    ) -> None:
        self.handlers = dict(handlers or {})
        self.answers = list(answers)
        self.otherwise = otherwise
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
        log_path: Path | None = None,
        stall: Stall | None = None,
    ) -> Completed:
        call = Call(tuple(str(a) for a in argv), check, cwd, env, timeout, input, log_path, stall)
        with self._lock:
            self.calls.append(call)
            answer = self._answer_for(call)
        got = answer(call)
        result = got if isinstance(got, Completed) else Completed(call.argv, 0, got, "", log_path)
        if check and result.returncode != 0:
            raise command_failed(result)
        return result

    def _answer_for(self, call: Call) -> Answer:
        if self.answers:
            return self.answers.pop(0)
        handler = self.handlers.get(call.program, self.otherwise)
        if handler is None:
            raise AssertionError(f"unexpected command {list(call.argv)}")
        return handler

    def programs(self) -> list[str]:
        """The programs run so far, in order (as given: a path stays a path)."""
        return [c.argv[0] for c in self.calls]

    def argvs(self) -> list[tuple[str, ...]]:
        """Every command run so far, in order."""
        return [c.argv for c in self.calls]


def really_run(call: Call) -> Completed:
    """Run the call for real (for a :class:`FakeRunner` that only records)."""
    return SubprocessRunner().run(
        call.argv,
        check=call.check,
        cwd=call.cwd,
        env=call.env,
        timeout=call.timeout,
        input=call.input,
        log_path=call.log_path,
        stall=call.stall,
    )


def recorded_apt_cache(series: str | None = None) -> Answer:
    """``apt-cache`` answering from the output recorded for ``series``.

    Without ``series``, from that of the series whose private apt config the
    command names (``apt-cache -c <cache>/apt/<series>/apt.conf ...``).
    """

    def answer(call: Call) -> str:
        argv = call.argv
        assert argv[1] == "-c", argv
        recorded = _recorded_apt(series or Path(argv[2]).parent.name)
        key = " ".join(argv[3:])
        if key not in recorded:
            raise CommandError(f"no recorded answer for apt-cache {key}", argv=argv)
        return str(recorded[key])

    return answer


@functools.cache
def _recorded_apt(series: str) -> dict[str, str]:
    recorded: dict[str, str] = json.loads((DATA / "apt" / f"{series}.json").read_text())
    return recorded


def supports_holes(directory: Path) -> bool:
    """Whether the filesystem of ``directory`` keeps a skipped block as a hole."""
    probe = directory / "hole-probe"
    with probe.open("wb") as stream:
        stream.seek(1 << 20)
        stream.write(b"x")
    blocks = os.stat(probe).st_blocks
    probe.unlink()
    return blocks * 512 < 1 << 20
