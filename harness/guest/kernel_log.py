"""The guest kernel's whole log, written beside the results as its console prints it.

The console of a boot with the init's stand-ins is quiet until the init runs
(:data:`harness.vm.QUIET_BOOT`), so the kernel's own boot lines, and with them the
boot's phases the timeline shows, are only in the kernel's log buffer. The guest
reads it from ``/dev/kmsg`` once its cases are done and writes it in the console's
form (``[    1.234567] text``, the same clock), so :mod:`harness.timeline` reads both
files alike. The buffer holds far more than a boot prints (Debian: at least 128 KB).
"""

from __future__ import annotations

import errno
import os

#: The file the guest writes beside its plan.
NAME = "kernel.log"


def read() -> str:
    """The kernel's log from its first record kept, one console line per record.

    A record's continuation lines (``" KEY=value"`` dictionary entries) are left out,
    as the console leaves them out.
    """
    lines: list[str] = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # read up to the newest record
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten since the last read: go on with the next
                raise
            line = console_line(record)
            if line is not None:
                lines.append(line)
    finally:
        os.close(fd)
    return "\n".join(lines) + "\n" if lines else ""


def console_line(record: bytes) -> str | None:
    """One ``/dev/kmsg`` record (``"6,339,5140900,-;text\\n"``) as the console prints it.

    None for a record that is not one (no timestamp field).
    """
    prefix, _, text = record.decode("utf-8", "replace").partition(";")
    fields = prefix.split(",")
    if len(fields) < 3 or not fields[2].isdigit():
        return None
    usec = int(fields[2])
    message = text.split("\n", 1)[0]
    return f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {message}"
