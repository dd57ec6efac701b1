"""The guest's copy of the kernel log: /dev/kmsg records as the console prints them."""

from __future__ import annotations

import os
import re

import pytest

from harness import vm
from harness.guest import kernel_log

CONSOLE_LINE = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def test_a_record_reads_as_its_console_line() -> None:
    line = kernel_log.console_line(b"6,339,5140900,-;Run /init as init process\n")
    assert line == "[    5.140900] Run /init as init process"
    # continuation lines (device dictionary) are left out, as on the console
    device = b"6,340,12,-;virtio_net virtio0: up\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio0\n"
    assert kernel_log.console_line(device) == "[    0.000012] virtio_net virtio0: up"
    assert kernel_log.console_line(b"garbage") is None


def test_the_lines_give_the_boot_phases_as_the_console_would() -> None:
    records = [
        b"6,1,3259791,-;Run /init as init process\n",
        b"12,2,3912000,-;virtme initramfs: done; switching to real root\n",
    ]
    text = "\n".join(str(kernel_log.console_line(r)) for r in records)
    phases = vm.parse_boot_phases(text)
    assert [p.name for p in phases] == ["kernel to /init", "initramfs"]
    assert phases[0].seconds == pytest.approx(3.259791)


@pytest.mark.skipif(
    not os.access("/dev/kmsg", os.R_OK), reason="this host's kernel log cannot be read"
)
def test_this_hosts_kernel_log_reads_whole() -> None:
    text = kernel_log.read()
    lines = text.splitlines()
    assert lines and all(CONSOLE_LINE.match(line) for line in lines)
