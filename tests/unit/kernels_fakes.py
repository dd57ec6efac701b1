"""A fake :class:`harness.proc.Runner` for the kernel tests: answers by program name."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from harness.errors import CommandError
from harness.proc import Completed

DATA = Path(__file__).resolve().parent.parent / "data"

#: An answer: given argv and cwd, return stdout (raise to fail the command).
Answer = Callable[[Sequence[str], Path | None], str]


class FakeRunner:
    """Records every command; answers each from the handler registered for its program."""

    def __init__(self, handlers: Mapping[str, Answer] | None = None) -> None:
        self.handlers = dict(handlers or {})
        self.calls: list[tuple[str, ...]] = []
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
    ) -> Completed:
        with self._lock:
            self.calls.append(tuple(argv))
        handler = self.handlers.get(Path(argv[0]).name)
        if handler is None:
            raise AssertionError(f"unexpected command {argv}")
        return Completed(tuple(argv), 0, handler(argv, cwd), "")

    def programs(self) -> list[str]:
        return [c[0] for c in self.calls]


def recorded_apt_cache(series: str) -> Answer:
    """``apt-cache`` answering from the output recorded for ``series``."""
    recorded: dict[str, str] = json.loads((DATA / "apt" / f"{series}.json").read_text())

    def answer(argv: Sequence[str], cwd: Path | None) -> str:
        assert argv[1] == "-c", argv
        key = " ".join(argv[3:])
        if key not in recorded:
            raise CommandError(f"no recorded answer for apt-cache {key}", argv=tuple(argv))
        return recorded[key]

    return answer
