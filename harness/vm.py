"""Booting a cached kernel in a virtme-ng VM and telling apart how the run ended.

``vng`` is used as a program (an argv list), never imported. The guest shares the
host's root read-only over 9p (or virtiofs) and gets one directory read-write, where
the guest scenario writes its JSON results. The serial console and the guest
command's output go to one log file.

How a run ends, from best to worst:

* the guest wrote its result files: :class:`VmResult` (the results may still report a
  failing loader; the caller reads them);
* the guest command failed before writing a result: :class:`GuestError`;
* the console shows ``Kernel panic - not syncing``: :class:`KernelPanicError` (a
  panic before the guest's init ran, which under TCG can be bad luck, boots the
  kernel once more first, as a stall does: :data:`BOOT_ATTEMPTS`);
* the VM ended and nothing was written: :class:`VmLostError`;
* the VM ran past its time limit and was killed: :class:`VmTimeoutError`.

Each error carries the console's last lines and the log's path.

The accelerator: ``/dev/kvm`` may exist and still not run a guest (nested setups
where qemu aborts with ``failed to set MSR 0x10a``, or the guest spins at kernel
entry). :func:`probe_accel` therefore boots a few bytes of real-mode code under KVM
with the CPU model ``vng`` itself asks for, and, given a kernel, boots that kernel
under KVM too. The answer is remembered per host boot.

The boot is cut short where virtme-ng's init does work the run does not need; see
:data:`INIT_SHIMS` and :data:`BASE_APPEND`, and ``benchmarks/boot_phases.py`` for
what each cut saves and what did not help.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import files, paths
from harness.errors import (
    CommandStalledError,
    CommandTimeoutError,
    ConfigError,
    GuestError,
    KernelPanicError,
    ToolMissingError,
    VmError,
    VmLostError,
    VmStalledError,
    VmTimeoutError,
)
from harness.guest import kernel_log
from harness.kernels.model import KernelEntry
from harness.proc import Runner, Stall, SubprocessRunner

log = logging.getLogger(__name__)

ACCELS = ("kvm", "tcg")

#: Seconds a whole run (boot, guest scenario, shutdown) may take. Under TCG a Debian
#: kernel boots in 8-20 s on an idle machine and about four times slower with four
#: VMs sharing two cores; the guest scenario adds the Python start-up and the traffic.
DEFAULT_TIMEOUTS = {"kvm": 120.0, "tcg": 480.0}

#: Seconds of console silence, before the guest's init has run, after which a boot
#: counts as stalled. A booting kernel printing everything gives a line every second
#: or so (the longest gap seen in the console logs of Debian's 5.10 to 7.2 under TCG is
#: 1.3 s); with :data:`QUIET_BOOT` the console is silent from the kernel's first lines
#: until the init runs, 2 to 4 s under TCG (6 s seen with other VMs on the machine), so
#: a minute of silence is still not a slow machine. Under TCG a boot very rarely stops for good
#: right after the clock source switch ("Switched to clocksource hpet"); booting again
#: is the cure, and killing it after a minute instead of the run's whole time limit
#: keeps the run's time.
STALL_SECONDS = {"kvm": 30.0, "tcg": 60.0}

#: How many times a VM is booted when each boot stalls or panics before its init.
BOOT_ATTEMPTS = 2

#: Console lines an error quotes.
TAIL_LINES = 40

#: Kernel options added to every boot. Tried under TCG (qemu 7.2, Debian 6.1) and left
#: out because they gained nothing measurable: ``mitigations=off``, ``tsc=reliable``;
#: see benchmarks/boot_phases.py.
#:
#: ``cryptomgr.notests``: Debian's kernels test every crypto algorithm as it registers
#: and again late in the boot (``crypto_algapi_init`` alone took 0.27 s of a 6.1 boot
#: under TCG, ``initcall_debug``); ``vng ... -- true`` took 0.80 x the time (CPU
#: 0.79 x, 4 rounds) without them. No run uses the kernel's crypto.
#:
#: ``initcall_blacklist=crypto_kdf108_init``: from Linux 5.18 the kernel runs the
#: SP800-108 KDF's self-test at boot whatever ``cryptomgr.notests`` says; its whole
#: init is that test, which first has the kernel ask user space for ``hmac(sha256)``
#: (a module helper started under emulation). 139 ms of a 6.1 boot under TCG
#: (``initcall_debug``); the KDF itself stays usable. Kernels without it ignore the
#: name.
#:
#: ``panic=-1``: virtme-ng already asks for it (with qemu's ``-no-reboot`` a panic
#: ends the VM at once); repeating it here keeps that true whatever a later
#: virtme-ng defaults to.
#:
#: ``init_on_alloc=0``: Debian builds its kernels with ``INIT_ON_ALLOC_DEFAULT_ON``,
#: so every allocation is zeroed. Before Linux 6.0 the 9p client allocates two
#: buffers of the full ``msize`` (virtme-ng mounts the root with 512 KB) for every
#: request, however small; zeroing that megabyte under TCG made each 9p round trip
#: about five times slower on 5.10 than on 6.1 (same number of requests), and so
#: the guest's init, udev and Python's start-up over the 9p root. Newer kernels size
#: the buffers to the message and gain little. The guest is thrown away after the
#: run and no check depends on zeroed memory.
#:
#: ``no_timer_check``: at boot the kernel checks that the IO-APIC timer ticks by
#: waiting a few jiffies for it; a TCG guest on a loaded host (other VMs on the same
#: cores) can miss that window and the boot ends in "IO-APIC + timer doesn't work!"
#: (seen once here with several VMs on two cores). The option skips the check; a
#: timer that really did not work would still show as a boot that never gets on.
#:
#: ``sysctl.kernel.timer_migration=0``: a timer stays on the CPU that armed it. The
#: guest runs a case's traffic on one CPU so that everything on ``lo`` is processed
#: there, in the capture's order (:func:`harness.guest.traffic.on_one_cpu`); a TCP
#: timer's frame (a delayed ACK) moved to the other CPU would break that for a program
#: that keeps state per CPU (a flow record per CPU, as one of the kernel's own samples keeps).
#:
#: ``rodata=off``: the kernel leaves its read-only data and its modules' writable.
#: With it on, the end of the boot write-protects them and then (Debian builds with
#: ``DEBUG_WX``) walks every page table looking for a mapping both writable and
#: executable: 0.15 s between two console lines of a 6.1 boot under TCG, and in six
#: alternating pairs of boots to the guest command a median 0.5 s less without it
#: (noisy; the lines around the walk moved with it). What BPF protects is unchanged:
#: the JIT's images, trampolines and packs are made read-only and executable by
#: their own calls (``set_memory_ro``/``set_memory_rox``), which the option does not
#: touch. Accepted by 5.10 to 7.2 (none lists it as unknown).
BASE_APPEND = (
    "panic=-1",
    "init_on_alloc=0",
    "no_timer_check",
    "cryptomgr.notests",
    "initcall_blacklist=crypto_kdf108_init",
    "sysctl.kernel.timer_migration=0",
    "rodata=off",
)

#: Kernel options of a boot with the init's stand-ins (:func:`install_init_shims`):
#: until the init runs ``systemd-tmpfiles`` (after the initramfs and the init's
#: mounts), the console shows only errors and worse (``loglevel=4`` after virtme-ng's
#: ``loglevel=7``); the ``systemd-tmpfiles`` stand-in sets the console's level back to
#: 7 then, so the init's later lines, the guest's kernel messages and the power-off
#: show as before. A boot again after a stall is not quiet (:func:`run_vm`). Every byte
#: of the console is a write to an emulated UART, and the kernel's own boot prints
#: about 400 lines:
#: ``vng ... -- true`` took 0.78 x the time (CPU 0.78 x, 4 rounds, 6.1 under TCG) with
#: ``loglevel=4``. Nothing is lost: the guest writes the whole kernel log, with its
#: timestamps, beside its results (:data:`harness.guest.kernel_log.NAME`), where the
#: timeline reads the boot's phases; ``panic_print=0x20`` prints the whole log on a
#: panic (a boot that never reaches the guest); a ``loglevel`` of the caller's own
#: (``pytest --vm-append loglevel=7``) comes later on the command line and wins. A
#: quiet console before init stays far inside :data:`STALL_SECONDS` (the kernel's own
#: boot takes 2 to 4 s under TCG).
#: The console's level of a quiet boot: errors and worse.
QUIET_LEVEL = 4
QUIET_BOOT = (f"loglevel={QUIET_LEVEL}", "panic_print=0x20")
#: The console level the stand-in restores (virtme-ng's), when it finds QUIET_BOOT's.
CONSOLE_LEVEL = 7

#: qemu options of every TCG boot (vng's ``--qemu-opts``). vng asks for ``-cpu max``,
#: whose features under TCG include ERMS ("enhanced rep movsb/stosb"); a kernel that
#: sees it clears every new page with ``rep stosb`` and copies to and from user space
#: with ``rep movsb``, and qemu 7.2 emulates such an instruction one byte per step.
#: Without the flag the kernel takes ``rep stosq``/``movsq`` (eight bytes a step), and
#: glibc its vector loops. In a 6.1 guest: 64 MB written to ``tmpfs`` in 0.29-0.30 s
#: against 0.48-0.65 s, a 64 MB ``bytearray`` made in 0.23-0.30 s against 0.37-0.45 s
#: (two boots each); a run of 6.1 with two cases a median 0.95 x per pair (12
#: alternating pairs; medians 6.63 against 6.94 s), the guest's Python start-up 1.33
#: against 1.46 s (``benchmarks/bench_test.py`` has the runs). The property is the
#: ``max`` model's own, so a CPU model other than vng's ``max`` is left as it is.
TCG_QEMU_OPTIONS = ("-global", "max-x86_64-cpu.erms=off")

#: Exit status vng gives when the VM itself failed (qemu died, the kernel panicked,
#: the guest's init never ran the command).
VNG_FAILED = 255

QEMU = "qemu-system-x86_64"

#: The isa-debug-exit device turns a byte ``v`` written to its port into qemu's exit
#: status ``(v << 1) | 1``.
_PROBE_PORT = 0xF4
_PROBE_VALUE = 0x10
PROBE_OK_STATUS = (_PROBE_VALUE << 1) | 1
#: Seconds the real-mode probe may take: a working KVM answers in well under one.
PROBE_TIMEOUT = 15.0
#: Seconds the confirming kernel boot under KVM may take (about 3 s where KVM works).
PROBE_BOOT_TIMEOUT = 60.0

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
KVM_DEVICE = Path("/dev/kvm")

#: Where virtme-ng looks for the Rust virtiofsd (without it, it waits about 3 s and
#: then falls back to 9p; ``--force-9p`` skips the wait).
_VIRTIOFSD_PATHS = (
    "/usr/libexec/virtiofsd",
    "/usr/lib/virtiofsd/virtiofsd",
    "/usr/lib/virtiofsd",
)


@dataclass(frozen=True)
class VmResult:
    """A VM run whose guest wrote its results."""

    accel: str
    seconds: float
    returncode: int
    console_log: Path
    results_dir: Path
    #: The console logs of boots that stalled or panicked before their init, before
    #: this one (kept for a look).
    stalled_logs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ConsoleVerdict:
    """What a console log says about the boot.

    ``panic`` is the panic line (``Kernel panic - not syncing: ...``) or "";
    ``oopses`` are kernel oops/BUG lines; ``reached_init`` is True once virtme-ng's
    init ran in the guest (the root filesystem was mounted); ``qemu_said`` is qemu's
    own first message (a line it starts with its name: an option it refused, a device
    it could not make) or "".
    """

    panic: str
    oopses: tuple[str, ...]
    reached_init: bool
    root_mount_failed: bool
    tail: str
    qemu_said: str = ""

    @property
    def panicked(self) -> bool:
        return bool(self.panic)


_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")
_PANIC = re.compile(r"Kernel panic - not syncing:?.*")
_OOPS = re.compile(r"(?:BUG: .*|Oops: .*|general protection fault.*|kernel BUG at .*)")
#: virtme-ng-init (Rust) and the older shell init both announce themselves.
_INIT_MARKERS = ("virtme-ng-init:", "virtme-init:")
_ROOT_MOUNT_FAILED = "Failed to mount real root"


def parse_console(text: str, *, tail_lines: int = TAIL_LINES) -> ConsoleVerdict:
    """Read a console log (kernel messages and guest output mixed) into a verdict."""
    panic = ""
    oopses: list[str] = []
    reached_init = False
    root_mount_failed = False
    qemu_said = ""
    lines = text.splitlines()
    for raw in lines:
        if not qemu_said and raw.startswith(f"{QEMU}: "):
            qemu_said = raw.strip()
        line = _TIMESTAMP.sub("", raw.rstrip("\r"))
        if not panic:
            found = _PANIC.search(line)
            if found:
                panic = found.group(0).strip()
        oops = _OOPS.match(line)
        if oops:
            oopses.append(oops.group(0).strip())
        if any(marker in line for marker in _INIT_MARKERS):
            reached_init = True
        if _ROOT_MOUNT_FAILED in line:
            root_mount_failed = True
    tail = "\n".join(lines[-tail_lines:])
    return ConsoleVerdict(panic, tuple(oopses), reached_init, root_mount_failed, tail, qemu_said)


@dataclass(frozen=True)
class Phase:
    """A stretch of the guest's boot, timed by the console's kernel timestamps."""

    name: str
    seconds: float


#: The console lines that end each phase of a boot, in order; a phase starts where
#: the one before it ended (the first at the kernel's time zero). virtme-ng-init
#: logs through /dev/kmsg, so its lines carry kernel timestamps too.
BOOT_MARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kernel to /init", ("Run /init as init process",)),
    ("initramfs", ("virtme initramfs: done; switching to real root",)),
    ("init mounts", ("virtme-ng-init: running systemd-tmpfiles",)),
    ("tmpfiles", ("virtme-ng-init: basic initialization done",)),
    ("udev", ("virtme-ng-init: udev is done", "virtme-ng-init: unable to find udevd")),
    ("to command start", ("virtme-ng-init: starting script",)),
    ("command", ("reboot: Power down", "ACPI: PM: Preparing to enter system sleep state")),
    ("power-off", ("reboot: Power down",)),
)

_STAMPED = re.compile(r"^\[\s*(\d+\.\d+)\]\s*(.*)$")


def parse_boot_phases(text: str) -> tuple[Phase, ...]:
    """The :data:`BOOT_MARKS` phases a console log shows, each with its seconds.

    A phase whose end line is missing is left out and the next one starts where the
    last line found was.
    """
    seen: dict[str, float] = {}
    for raw in text.splitlines():
        stamped = _STAMPED.match(raw.rstrip("\r"))
        if stamped is None:
            continue
        when, line = float(stamped.group(1)), stamped.group(2)
        for _, ends in BOOT_MARKS:
            for end in ends:
                if end in line and end not in seen:
                    seen[end] = when
    phases: list[Phase] = []
    start = 0.0
    for name, ends in BOOT_MARKS:
        found = [seen[end] for end in ends if end in seen and seen[end] >= start]
        if found:
            end_time = min(found)
            phases.append(Phase(name, end_time - start))
            start = end_time
    return tuple(phases)


def have_virtiofsd() -> bool:
    """Whether a virtiofsd that virtme-ng would use is installed."""
    return shutil.which("virtiofsd") is not None or any(
        os.access(path, os.X_OK) for path in _VIRTIOFSD_PATHS
    )


# --- the guest's init, cut short -------------------------------------------------------
#
# virtme-ng-init (vng 1.42) spends most of a TCG boot on work no run needs:
# ``systemd-tmpfiles --create --boot`` (1.2-2 s), then udevd, a coldplug of every
# device and a settle (2-5 s), although all the run needs from udev are the links
# ``/dev/virtio-ports/virtme.*`` to the script's serial ports; then, on the path to the
# guest command, ``ip link set dev lo up``, whose first run loads iproute2's libraries
# over the uncached 9p root (0.3-0.8 s). vng has no option to skip any of it, but the
# init runs all three by name through ``$PATH``, prepends the ``PATH`` it was started
# with, and the kernel hands ``PATH=...`` from its command line to init. So a
# directory of stand-ins goes first in the guest's ``PATH``:
#
# * ``systemd-tmpfiles`` runs before the init looks for udevd. It deletes udevd on
#   the guest's writable overlay of ``/usr`` (the host is untouched), so the init
#   logs "unable to find udevd, skip udev.", and makes the ``virtio-ports`` links the
#   way udev's rule would. Should the delete fail, udev runs as before. It also sets
#   the console's level back after the quiet kernel boot (:data:`QUIET_BOOT`).
# * ``ip`` does ``link set dev lo up`` with busybox's applet and hands anything else
#   (the guest command's own calls) to the real ``ip``.
#
# The scripts run under the host's busybox (vng needs one for its initramfs): a
# static binary starts without loading libraries over 9p, and its shell runs rm, ln
# and mkdir without exec (the same script under dash took 1.0 s instead of 0.2-0.4 s).
# The directory stays first in the guest command's PATH.
#
# Measured with benchmarks/boot_phases.py (Debian 6.1.0-57, qemu 7.2 TCG, vng 1.42, a
# 2-core machine, 3 alternating rounds, medians): ``vng ... -- true`` took 0.22 x a
# plain ``vng -r <shipped vmlinuz> --disable-kvm -- true`` with the stand-ins and
# 0.37 x without (tmpfiles 1.31 -> 0.21 s, udev 3.41 -> 0.02 s); 0.24 x against
# 0.48 x with other VMs and builds loading the machine. Checked on 5.10,
# 6.1, 6.12 and 7.2: the guest command's exit status, stdout, stderr and the files it
# writes in the read-write directory all still arrive.

#: The guest's view of the root it links and deletes in; tests point it elsewhere.
_SHIM_ROOT = "${HARNESS_SHIM_ROOT:-}"

_TMPFILES_SHIM = f"""\
# harness.vm: stands in for systemd-tmpfiles in virtme-ng-init (see harness/vm.py).
root={_SHIM_ROOT}
level=
read -r level _ < "$root/proc/sys/kernel/printk"  # at EOF without a newline: see the tests
[ "$level" = {QUIET_LEVEL} ] && echo {CONSOLE_LEVEL} > "$root/proc/sys/kernel/printk"
rm -f "$root/usr/lib/systemd/systemd-udevd" "$root/lib/systemd/systemd-udevd"
mkdir -p "$root/dev/virtio-ports"
for port in "$root"/sys/class/virtio-ports/vport*; do
  read -r name < "$port/name" || continue
  [ -n "$name" ] && ln -sf "../${{port##*/}}" "$root/dev/virtio-ports/$name"
done
exit 0
"""

_IP_SHIM = """\
# harness.vm: stands in for ip in virtme-ng-init (see harness/vm.py).
if [ "$*" = "link set dev lo up" ]; then
  exec {busybox} ip link set dev lo up
fi
for ip in /usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip; do
  [ -x "$ip" ] && exec "$ip" "$@"
done
echo "ip: not found" >&2
exit 127
"""

#: Characters a directory on the kernel's command line may hold (no blank, no quote).
_CMDLINE_SAFE = re.compile(r"^[A-Za-z0-9_./+,:@-]+$")


def init_shims(busybox: str | None) -> dict[str, str]:
    """The stand-in scripts, by program name, for the host's ``busybox`` (or none).

    Without busybox only ``systemd-tmpfiles`` is replaced, under ``/bin/sh``.
    """
    if busybox is None:
        return {"systemd-tmpfiles": "#!/bin/sh\n" + _TMPFILES_SHIM}
    shebang = f"#!{busybox} sh\n"
    return {
        "systemd-tmpfiles": shebang + _TMPFILES_SHIM,
        "ip": shebang + _IP_SHIM.format(busybox=busybox),
    }


def install_init_shims(cache: Path, busybox: str | None) -> Path | None:
    """A directory of :func:`init_shims` under ``cache``, written once per content.

    None when the directory cannot go on a kernel command line (a blank in the cache's
    path) or cannot be written: the boot then takes the long way.
    """
    scripts = init_shims(busybox)
    target = cache / "guest-init" / _digest(scripts)
    if not _CMDLINE_SAFE.match(str(target)):
        log.info("%s cannot go on a kernel command line: udev runs in the guest", target)
        return None
    return _install_scripts(target, scripts, "the guest's init stand-ins")


def _digest(scripts: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(scripts.items())).encode()).hexdigest()[:16]


def _install_scripts(target: Path, scripts: dict[str, str], what: str) -> Path | None:
    """``scripts`` as executables in ``target``, written unless there (None: not written)."""
    if target.is_dir():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".shims-", dir=target.parent))
        for name, text in scripts.items():
            (staging / name).write_text(text, encoding="utf-8")
            (staging / name).chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another run put it in place
            if not target.is_dir():
                raise
    except OSError as exc:
        log.warning("could not write %s in %s: %s", what, target, exc)
        return None
    return target


def shims_path(shims: Path) -> str:
    """The ``PATH=`` kernel option that puts ``shims`` first for the guest's init.

    The initramfs's own script runs under it too and needs its busybox's ``/bin``.
    """
    return f"PATH={shims}:/usr/sbin:/usr/bin:/sbin:/bin"


# --- vng's look for the kernel's release, cut short -------------------------------------
#
# Before it boots, virtme-ng (1.42) finds the image's release, to find its modules:
# it asks ``file``, which names no release for an ELF ``vmlinux`` (the image the harness
# boots, straight into the kernel without decompressing a bzImage under emulation),
# and then runs ``strings`` over the whole image (65 MB for Debian's 6.1) and searches
# its output for the first ``Linux version <release>``. The banner sits in the image's
# read-only data, a quarter of the way in. vng runs ``strings`` by name through
# ``$PATH``, so a directory of the harness's own goes first on the ``PATH`` of the vng
# process (only: the guest's ``PATH`` comes from the kernel command line), holding a
# ``strings`` that gives the same first banner by ``grep``, which stops reading at it:
#
# * ``strings IMAGE`` (one argument, a file) prints the first
#   ``Linux version <release>`` of the file, where ``<release>`` is what follows up to
#   the first blank or unprintable byte (vng takes three or more such characters);
# * anything else (options, several files, no banner found) runs the real ``strings``
#   with the same arguments, as vng would have.
#
# Measured on a 2-core machine (Debian 6.1.0-57's vmlinux, vng 1.42): the real
# ``strings`` took 0.31-0.58 s (0.28-0.48 s CPU) and vng's search of its 4 MB of output
# more; the stand-in 0.02 s. ``vng --dry-run`` (which still looks for the release)
# took 0.39-0.49 s instead of 0.69-0.93 s (CPU 0.35-0.41 s instead of 0.65-0.86 s, 4
# alternating rounds), with the same qemu command. The stand-in gives the release the
# real ``strings`` does for Debian's 5.10, 6.1, 6.12 and 7.2 images.

_STRINGS_SHIM = """\
#!/bin/sh
# harness.vm: stands in for strings when vng looks for a kernel's release (see
# harness/vm.py): the first "Linux version <release>" of the image, read by grep,
# which stops there; anything else goes to the real strings.
case "$1" in -*) ;; *)
  if [ "$#" = 1 ] && [ -f "$1" ]; then
    banner=$(LC_ALL=C grep -a -m 1 -o 'Linux version [[:graph:]]\\{{3,\\}}' -- "$1" 2>/dev/null)
    if [ -n "$banner" ]; then
      newline='
'
      printf '%s\\n' "${{banner%%"$newline"*}}"
      exit 0
    fi
  fi
esac
{fallback}
"""


# --- the modules of vng's initramfs, the VM's own ---------------------------------------
#
# vng (1.42) builds the initramfs of each boot with the modules of a fixed list of
# aliases, each resolved by ``modprobe --show-depends`` (found through ``$PATH`` first,
# like ``strings``), and the initramfs loads every one of them before it mounts the
# root. Two are for devices the harness's VMs never have: ``virtio_mmio`` (the
# ``microvm`` machine's transport; vng boots x86 on ``q35``, where virtio is PCI) and,
# when no ``virtiofsd`` is installed and the root is 9p, ``fs-virtiofs`` (``virtiofs``
# and its ``fuse``). Loading a module under TCG is its relocations and its init run
# under emulation, after a decompression for Debian's ``.ko.xz`` (6.12 and later).
# The ``modprobe`` stand-in answers ``--show-depends`` for those aliases as modprobe
# does for a built-in one (nothing, and a failure, which vng takes as "built in") and
# hands everything else to the real ``modprobe``. Measured on Debian's 6.1 under TCG
# (console time stamps): ``fuse`` 46 ms and ``virtio_mmio`` 61 ms of the initramfs.
# With ``xz`` on the host it also names each ``.ko.xz`` the real one lists by a copy
# decompressed under the cache (:data:`harness.paths.MODULE_COPIES`), as vng itself does for
# ``.ko.zst``: 7.2's initramfs took 0.60 s instead of 0.80 s. The copies are made once
# per module; ``invoke kernels.prune`` removes a kernel's copies with the kernel.

_MODPROBE_SHIM = """\
#!/bin/sh
# harness.vm: stands in for modprobe when vng lists the modules of its initramfs (see
# harness/vm.py): no module for a device the VM does not have, and .ko.xz modules named
# by copies decompressed on the host; anything else goes to the real modprobe.
if [ "$1" = --show-depends ]; then
  for alias; do :; done  # the last argument
  case "$alias" in {unused}) exit 1 ;; esac
{decompress}fi
exec {modprobe} "$@"
"""

#: The part of the stand-in that names each ``.ko.xz`` by a decompressed copy: kept
#: under ``store`` at the module's real path, made again when the module is newer.
_DECOMPRESS = """\
  listed=$({modprobe} "$@") || exit
  printf '%s\\n' "$listed" | while IFS= read -r line; do
    case "$line" in "insmod "*)
      rest=${{line#insmod }}
      module=${{rest%% *}}
      case "$module" in *.ko.xz)
        real=$(readlink -f -- "$module") && plain={store}${{real%.xz}} &&
        if [ "$plain" -nt "$real" ] || {{ mkdir -p "${{plain%/*}}" &&
            {xz} -dc -- "$real" > "$plain.$$" && mv -f "$plain.$$" "$plain"; }}; then
          line="insmod $plain${{rest#"$module"}}"
        else
          rm -f "$plain.$$"
        fi ;;
      esac ;;
    esac
    printf '%s\\n' "$line"
  done
  exit 0
"""

#: The aliases whose modules no VM of the harness uses: always, and without virtiofs.
UNUSED_ALIASES = ("virtio_mmio",)
UNUSED_WITHOUT_VIRTIOFS = ("fs-virtiofs",)


def find_modprobe() -> str | None:
    """The real ``modprobe``, where vng looks for it: ``$PATH``, then the sbin directories."""
    found = shutil.which("modprobe")
    if found is not None:
        return found
    for directory in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
        if os.access(f"{directory}/modprobe", os.X_OK):
            return f"{directory}/modprobe"
    return None


def host_shims(
    strings: str | None,
    modprobe: str | None = None,
    *,
    virtiofs: bool = False,
    xz: str | None = None,
    store: Path | None = None,
) -> dict[str, str]:
    """The stand-ins put first on vng's ``PATH``, by name, for the real ``strings`` and
    ``modprobe`` (none for ``modprobe`` when there is no real one: vng says so itself).

    With ``xz`` and ``store``, the ``modprobe`` stand-in also names each ``.ko.xz`` it
    lists by a copy decompressed under ``store``.
    """
    if strings is None:
        fallback = 'echo "strings: not found; install binutils" >&2\nexit 127'
    else:
        fallback = f'exec {shlex.quote(strings)} "$@"'
    scripts = {"strings": _STRINGS_SHIM.format(fallback=fallback)}
    if modprobe is not None:
        unused = UNUSED_ALIASES + (() if virtiofs else UNUSED_WITHOUT_VIRTIOFS)
        decompress = ""
        if xz is not None and store is not None:
            decompress = _DECOMPRESS.format(
                modprobe=shlex.quote(modprobe), xz=shlex.quote(xz), store=shlex.quote(str(store))
            )
        scripts["modprobe"] = _MODPROBE_SHIM.format(
            modprobe=shlex.quote(modprobe),
            unused="|".join(unused),
            decompress=decompress,
        )
    return scripts


def install_host_shims(
    cache: Path,
    strings: str | None,
    modprobe: str | None = None,
    *,
    virtiofs: bool = False,
    xz: str | None = None,
) -> Path | None:
    """A directory of :func:`host_shims` under ``cache``, written once per content, and
    the modules it decompresses (with ``xz``) under ``cache``'s :data:`harness.paths.MODULE_COPIES`.

    None when it cannot be written: vng then runs the real ``strings`` and ``modprobe``.
    """
    store = cache / paths.MODULE_COPIES
    scripts = host_shims(strings, modprobe, virtiofs=virtiofs, xz=xz, store=store)
    return _install_scripts(cache / "vng-host" / _digest(scripts), scripts, "vng's stand-ins")


def vng_env(shims: Path | None) -> dict[str, str] | None:
    """The environment changes that put ``shims`` first on vng's ``PATH`` (None: none)."""
    if shims is None:
        return None
    return {"PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}


#: How much of its command line an x86 kernel keeps (``COMMAND_LINE_SIZE``); the rest is
#: cut off without a word, and the boot then fails in ways that do not say why.
COMMAND_LINE_SIZE = 2048

#: Bytes vng (1.42) writes on the kernel's command line that no option of the harness
#: sets: the hostname, ``nr_open``, its eight overlays, the console's options,
#: ``panic=-1``, ``virtme_root_user=1``, ``loglevel=7`` and ``init=`` with the path vng is
#: installed at (80 bytes of it for a vng in a pyenv Python's ``site-packages``).
#: Checked against ``vng --dry-run`` for three runs (934 to 1522 bytes in all): the
#: estimate of :func:`command_line_bytes` was off by at most one byte.
VNG_OWN_BYTES = 435


def command_line_bytes(argv: Sequence[str], entry: KernelEntry) -> int:
    """About how long the kernel command line of the vng command ``argv`` is.

    What the harness's options put there is counted exactly (each ``--append``, the
    guest's command base64-encoded, the read-write directory and the working directory
    relative to the root, the modules' directory), the rest as :data:`VNG_OWN_BYTES`.
    """
    total = VNG_OWN_BYTES
    if entry.modules is not None:
        total += len(f" virtme_link_mods={entry.modules}")
    for option, value in itertools.pairwise(argv):
        if option == "--append":
            total += 1 + len(value)
        elif option == "--exec":
            total += len(" virtme.exec=``") + len(base64.b64encode(value.encode()))
    for option in argv:
        if option.startswith("--rwdir="):
            guest = option.removeprefix("--rwdir=").lstrip("/")
            total += len(f" virtme_initmount0={guest}")
            total += len(" virtme_initmount0_fstype=9p virtme_initmount0_access=rw")
        elif option.startswith("--cwd="):
            total += len(f" virtme_chdir={option.removeprefix('--cwd=').lstrip('/')}")
    return total


def vng_argv(
    entry: KernelEntry,
    guest_argv: Sequence[str],
    *,
    accel: str,
    results_dir: Path,
    memory: str = "1G",
    cpus: int = 2,
    virtiofs: bool = False,
    append: Sequence[str] = (),
    cwd: Path = paths.PROJECT_ROOT,
    vng: str = "vng",
    shims: Path | None = None,
    quiet: bool = True,
    tsc_khz: int | None = None,
) -> list[str]:
    """The ``vng`` command that boots ``entry`` and runs ``guest_argv`` in it.

    ``--verbose`` sends the kernel's console to vng's stderr, so the log holds the
    boot messages as well as the guest command's output. The guest command runs in
    ``cwd`` (the project root, so ``python3 -m harness.guest`` finds the package) and
    can write only in ``results_dir``. ``shims``, a directory from
    :func:`install_init_shims`, skips the guest's udev and tmpfiles and, unless not
    ``quiet``, keeps the kernel's own boot off the console (:data:`QUIET_BOOT`).
    ``tsc_khz`` (under TCG) spares the kernel measuring the TSC (:func:`remembered_tsc`).
    """
    if accel not in ACCELS:
        raise ConfigError(f"unknown accelerator {accel!r}; use one of {', '.join(ACCELS)}")
    if not guest_argv:
        raise ConfigError("no guest command given to run in the VM")
    argv = [vng, "--run", str(entry.image), "--verbose"]
    if accel == "tcg":
        argv.append("--disable-kvm")
    if not virtiofs:
        argv.append("--force-9p")
    argv += ["--memory", memory, "--cpus", str(cpus)]
    argv += [f"--rwdir={results_dir}", f"--cwd={cwd}"]
    options = [*BASE_APPEND, *(QUIET_BOOT if shims is not None and quiet else ())]
    if tsc_khz is not None and accel == "tcg":
        options.append(f"tsc_early_khz={tsc_khz}")
    options += append
    if shims is not None:
        options.append(shims_path(shims))
    for option in options:
        argv += ["--append", option]
    if accel == "tcg":
        argv.append(f"--qemu-opts={' '.join(TCG_QEMU_OPTIONS)}")
    # --exec takes one shell command line; quoting it here keeps every argument whole
    # (positional arguments would be re-joined by vng and "O=..." taken for itself).
    argv += ["--exec", shlex.join(guest_argv)]
    return argv


def run_vm(
    entry: KernelEntry,
    guest_argv: Sequence[str],
    results_dir: Path,
    *,
    accel: str,
    expect: Sequence[str],
    timeout: float | None = None,
    memory: str = "1G",
    cpus: int = 2,
    append: Sequence[str] = (),
    console_log: Path | None = None,
    runner: Runner | None = None,
    lean_init: bool = True,
    cache: Path | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
) -> VmResult:
    """Boot ``entry``, run ``guest_argv`` in it and wait for the files ``expect``.

    ``results_dir`` is created (results of an earlier run in it are removed first) and
    shared read-write with the guest; the console goes to ``console_log`` (default
    ``results_dir/console.log``). Raises a :class:`VmError` subclass when the guest
    wrote none of the ``expect`` files; see the module's docstring. ``lean_init``
    skips the guest's udev and tmpfiles through stand-ins kept under ``cache``; vng
    finds the kernel's release, and the modules of its initramfs, through ones kept
    there too (:func:`host_shims`). Under TCG, the TSC's rate a boot measured is kept
    there for the later boots of this host boot (:func:`remembered_tsc`).
    """
    runner = runner or SubprocessRunner()
    limit = timeout if timeout is not None else DEFAULT_TIMEOUTS[accel]
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in expect:
        (results_dir / name).unlink(missing_ok=True)
    log_path = console_log or results_dir / "console.log"
    cache = cache or paths.cache_dir()
    shims = install_init_shims(cache, shutil.which("busybox")) if lean_init else None
    virtiofs = have_virtiofsd()
    env = vng_env(
        install_host_shims(
            cache,
            shutil.which("strings"),
            find_modprobe(),
            virtiofs=virtiofs,
            xz=shutil.which("xz"),
        )
    )
    tsc_memo = _memo_path(cache, boot_id_path, "tsc") if accel == "tcg" else None
    tsc_khz = remembered_tsc(tsc_memo)
    stall = Stall(min(STALL_SECONDS[accel], limit), _INIT_MARKERS)
    stalled: list[Path] = []
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        # A boot again after a stall prints everything: its console then shows where
        # the kernel was when it stopped, should it stall again.
        argv = vng_argv(
            entry, guest_argv, accel=accel, results_dir=results_dir, memory=memory,
            cpus=cpus, virtiofs=virtiofs, append=append, shims=shims,
            quiet=not stalled, tsc_khz=tsc_khz,
        )  # fmt: skip
        _check_command_line(argv, entry, results_dir)
        log.info("booting %s (%s): %s", entry.release, accel, shlex.join(argv))
        started = time.monotonic()
        try:
            done = runner.run(
                argv,
                check=False,
                timeout=limit,
                log_path=log_path,
                cwd=paths.PROJECT_ROOT,
                env=env,
                stall=stall,
            )
        except CommandStalledError as exc:
            verdict = parse_console(_read(log_path))
            kept = _keep(log_path, "stalled", attempt)
            stalled.append(kept)
            last = verdict.tail.splitlines()[-1:] or ["(nothing)"]
            if attempt < BOOT_ATTEMPTS:
                log.warning(
                    "the boot of %s (%s) stalled: no console line for %.0f s before its "
                    "init ran, after: %s; booting it again (console log kept in %s)",
                    entry.release, accel, stall.seconds, last[0].strip(), kept,
                )  # fmt: skip
                continue
            raise VmStalledError(
                f"the VM for kernel {entry.release} ({accel}) stalled on each of "
                f"{BOOT_ATTEMPTS} boots: no console line for {stall.seconds:.0f} s before "
                f"the guest's init ran, and was killed; the last line was "
                f"{last[0].strip()!r}; if the kernel boots by hand (vng --run {entry.image} "
                "--verbose), run again, with fewer VMs at once (-j 1); console logs: "
                f"{', '.join(map(str, stalled))}\n--- last console lines ---\n{verdict.tail}",
                console_tail=verdict.tail,
                log_path=kept,
            ) from exc
        except CommandTimeoutError as exc:
            verdict = parse_console(_read(log_path))
            what = f"panicked ({verdict.panic}) and then " if verdict.panicked else ""
            raise VmTimeoutError(
                f"the VM for kernel {entry.release} ({accel}) {what}did not finish within "
                f"{limit:.0f} s and was killed; {_stage(verdict)}; if the console shows it "
                "still making progress, give it more time (invoke test --timeout SECONDS, "
                "pytest --vm-timeout SECONDS) or run fewer VMs at once; console log: "
                f"{log_path}\n--- last console lines ---\n{verdict.tail}",
                console_tail=verdict.tail,
                log_path=log_path,
            ) from exc
        verdict = parse_console(_read(log_path))
        if attempt < BOOT_ATTEMPTS and _panicked_booting(verdict, results_dir, expect):
            kept = _keep(log_path, "panicked", attempt)
            stalled.append(kept)
            log.warning(
                "the kernel %s (%s) panicked before its init ran (%s); booting it again "
                "(console log kept in %s)",
                entry.release, accel, verdict.panic, kept,
            )  # fmt: skip
            continue
        break
    seconds = time.monotonic() - started
    found = [name for name in expect if (results_dir / name).is_file()]
    if tsc_memo is not None and tsc_khz is None:
        remember_tsc(tsc_memo, results_dir / kernel_log.NAME)
    if found:
        return VmResult(accel, seconds, done.returncode, log_path, results_dir, tuple(stalled))
    raise _no_result_error(entry, accel, done.returncode, verdict, log_path, stalled)


def _check_command_line(argv: Sequence[str], entry: KernelEntry, results_dir: Path) -> None:
    """A :class:`ConfigError` when the kernel would not keep the whole command line."""
    length = command_line_bytes(argv, entry)
    if length > COMMAND_LINE_SIZE:
        modules = f"the kernel's modules ({entry.modules}), " if entry.modules else ""
        raise ConfigError(
            f"the kernel command line of this boot would be about {length} bytes, more "
            f"than the {COMMAND_LINE_SIZE} a kernel keeps, and a cut line fails the boot: "
            "vng writes on it the guest's command (base64-encoded; its paths are under "
            f"the build directory {paths.build_dir()}), the results directory "
            f"({results_dir}), the working directory (the checkout, {paths.PROJECT_ROOT}), "
            f"{modules}and the boot options given; set "
            "HARNESS_BUILD_DIR and HARNESS_CACHE_DIR to shorter directories, run from a "
            "checkout at a shorter path, or give fewer boot options"
        )


def _keep(log_path: Path, why: str, attempt: int) -> Path:
    """A boot's console log moved aside (``console.<why>-<attempt>.log``) before a boot again."""
    kept = log_path.with_name(f"{log_path.stem}.{why}-{attempt}{log_path.suffix}")
    os.replace(log_path, kept)
    return kept


def _panicked_booting(verdict: ConsoleVerdict, results_dir: Path, expect: Sequence[str]) -> bool:
    """Whether the boot panicked before the guest's init ran, for a reason worth a retry.

    Under TCG a boot very rarely oopses while the kernel patches its own code (a
    breakpoint the other virtual CPU still executes, ``Oops: int3`` in an initcall)
    and panics; the same kernel boots the next time. A panic after the init ran is
    the run's own (a sample, a loader), and one that could not mount the root is the
    kernel's build: neither is booted again.
    """
    return (
        verdict.panicked
        and not verdict.reached_init
        and not verdict.root_mount_failed
        and not any((results_dir / name).is_file() for name in expect)
    )


def _no_result_error(
    entry: KernelEntry,
    accel: str,
    returncode: int,
    verdict: ConsoleVerdict,
    log_path: Path,
    earlier: Sequence[Path] = (),
) -> VmError:
    before = f" (earlier boots: {', '.join(map(str, earlier))})" if earlier else ""
    where = f"console log: {log_path}{before}\n--- last console lines ---\n{verdict.tail}"
    kernel = f"kernel {entry.release} ({accel})"
    if verdict.panicked:
        if verdict.root_mount_failed:
            cause = (
                " because it could not mount the host's root filesystem; the kernel needs "
                "9p or virtiofs (CONFIG_NET_9P, CONFIG_9P_FS; Debian's cloud flavour has "
                "neither, use the generic amd64 flavour)"
            )
            next_step = ""
        else:
            cause = ""
            next_step = (
                "; the console lines before the panic say why (kernel options that help "
                "it boot can be added with pytest --vm-append, or try another kernel)"
            )
        return KernelPanicError(
            f"{kernel} panicked{cause}: {verdict.panic}{next_step}; {where}",
            console_tail=verdict.tail,
            log_path=log_path,
        )
    if returncode not in (0, VNG_FAILED):
        return GuestError(
            f"the guest command on {kernel} failed with exit status {returncode} before "
            f"writing a result; its own message is in the console log; {where}",
            console_tail=verdict.tail,
            log_path=log_path,
        )
    return VmLostError(
        f"the VM for {kernel} ended (vng exit status {returncode}) without the guest "
        f"reporting a result; {_stage(verdict)}; {_lost_next_step(entry, accel)}; {where}",
        console_tail=verdict.tail,
        log_path=log_path,
    )


def _lost_next_step(entry: KernelEntry, accel: str) -> str:
    if accel == "kvm":
        return "if qemu complained about KVM, run again with --accel tcg"
    return f"boot the kernel by hand to watch it: vng --run {entry.image} --verbose"


def _stage(verdict: ConsoleVerdict) -> str:
    if verdict.oopses:
        return f"the kernel oopsed: {verdict.oopses[0]}"
    if verdict.root_mount_failed:
        return "the guest could not mount the host's root filesystem (no 9p/virtiofs?)"
    if verdict.reached_init:
        return "the guest's init had started"
    if verdict.qemu_said:
        return f"the guest never reached its init ({verdict.qemu_said})"
    return "the guest never reached its init"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --- the accelerator ------------------------------------------------------------------


def probe_bios() -> bytes:
    """A 64 KiB firmware image whose reset vector writes to the isa-debug-exit port.

    The CPU starts in real mode at physical 0xFFFFFFF0, the last 16 bytes of the
    image; ``mov al, 0x10; out 0xf4, al`` makes qemu exit with status 33, and
    ``hlt; jmp $-1`` keeps a guest that missed the port from running wild.
    """
    code = bytes([0xB0, _PROBE_VALUE, 0xE6, _PROBE_PORT, 0xF4, 0xEB, 0xFD])
    image = bytearray(b"\xf4" * 0x10000)
    image[0xFFF0 : 0xFFF0 + len(code)] = code
    return bytes(image)


def probe_qemu_argv(bios: Path, *, qemu: str = QEMU) -> list[str]:
    """qemu under KVM with the CPU model ``vng`` uses there (``-cpu host``)."""
    return [
        qemu,
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        "host",
        "-bios",
        str(bios),
        "-device",
        f"isa-debug-exit,iobase={_PROBE_PORT:#x},iosize=0x04",
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        "none",
        "-monitor",
        "none",
    ]


def probe_accel(
    requested: str = "auto",
    *,
    image: KernelEntry | None = None,
    cache: Path | None = None,
    runner: Runner | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
    kvm_device: Path = KVM_DEVICE,
) -> str:
    """``"kvm"`` where KVM really runs a guest on this host, else ``"tcg"``.

    ``requested`` ``"kvm"`` or ``"tcg"`` is returned as is. For ``"auto"``, a verdict
    remembered for this host boot is used; otherwise KVM must boot the real-mode
    probe and, when ``image`` is given, that kernel (``vng -- true``).
    """
    if requested in ACCELS:
        return requested
    if requested != "auto":
        raise ConfigError(
            f"unknown accelerator {requested!r}; use kvm, tcg or auto (probe for KVM)"
        )
    runner = runner or SubprocessRunner()
    memo = _memo_path(cache or paths.cache_dir(), boot_id_path, "accel")
    if memo is not None:
        try:
            remembered = memo.read_text(encoding="utf-8").strip()
        except OSError:
            remembered = ""
        if remembered in ACCELS:
            log.debug("accelerator for this boot: %s (remembered in %s)", remembered, memo)
            return remembered
    accel = "kvm" if _kvm_runs(kvm_device, image, runner) else "tcg"
    # "kvm" is remembered only once a real kernel booted under it: a host can run the
    # real-mode probe and still hang at kernel entry (seen with qemu 7.2 on a nested
    # host), and a remembered verdict is never checked again until the host reboots.
    if memo is not None and (accel == "tcg" or image is not None):
        _write_atomically(memo, accel + "\n")
    return accel


def _memo_path(cache: Path, boot_id_path: Path, what: str) -> Path | None:
    """Where ``what`` is remembered for this host boot (None: the boot has no id)."""
    try:
        boot_id = boot_id_path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return cache / what / boot_id if boot_id else None


# --- the TSC's rate, measured once per host boot ----------------------------------------
#
# Early in its boot an x86 kernel measures the TSC's rate against the PIT. Under TCG
# that quick measurement fails in about one boot in four (126 of 478 kernel logs of the
# harness's 6.1 boots here: "Fast TSC calibration failed"), and the kernel then measures
# again later, against the PIT in three rounds and the HPET, with its clock standing
# still: 0.31 and 0.35 s in two of eight boots, timed from the host against the console,
# against 0.02-0.05 s in the others and in eight boots given the rate by
# ``tsc_early_khz``. A TCG guest's TSC is the host's own (qemu reads the host's counter
# for the guest's ``rdtsc``), so the rate one boot measured holds for every boot until
# the host reboots: the first boot's kernel log gives it (its quick measurement, when
# that worked), and later boots pass it on the command line. Nothing a run checks
# depends on it; the kernel's clock runs on the HPET under TCG either way (the TSC is
# marked unstable there).

#: The kernel's lines for a quick measurement of the TSC that worked, and its result.
_TSC_MEASURED = "tsc: Fast TSC calibration using PIT"
_TSC_RATE = re.compile(r"tsc: Detected (\d+)\.(\d{3}) MHz processor")


def tsc_khz_of(kernel_log: str) -> int | None:
    """The TSC's rate (kHz) a boot's kernel measured quickly against the PIT, or None."""
    if _TSC_MEASURED not in kernel_log:
        return None
    rate = _TSC_RATE.search(kernel_log)
    return int(rate.group(1)) * 1000 + int(rate.group(2)) if rate else None


def remembered_tsc(memo: Path | None) -> int | None:
    """The TSC's rate (kHz) a TCG boot of this host boot measured, if one was kept."""
    if memo is None:
        return None
    try:
        text = memo.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remember_tsc(memo: Path, kernel_log_path: Path) -> None:
    """Keep the TSC's rate the boot that wrote ``kernel_log_path`` measured, if it did."""
    try:
        khz = tsc_khz_of(kernel_log_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return  # no log (a guest that failed early, a plan without it): next boot
    if khz is not None:
        _write_atomically(memo, f"{khz}\n")


def _kvm_runs(kvm_device: Path, image: KernelEntry | None, runner: Runner) -> bool:
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        log.info("%s is missing or not usable by this user: using TCG", kvm_device)
        return False
    with tempfile.TemporaryDirectory(prefix="harness-kvm-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(probe_bios())
        try:
            done = runner.run(probe_qemu_argv(bios), check=False, timeout=PROBE_TIMEOUT)
        except CommandTimeoutError:
            log.info("KVM probe: the guest did not reach its exit port: using TCG")
            return False
        except ToolMissingError:
            log.info("KVM probe: %s is not installed: using TCG", QEMU)
            return False
        if done.returncode != PROBE_OK_STATUS:
            output = (done.stderr + done.stdout).strip().splitlines()
            log.info(
                "KVM probe: qemu exited with status %d (%s): using TCG",
                done.returncode,
                output[-1] if output else "no output",
            )
            return False
        if image is None:
            return True
        # Real mode working is not proof enough: on some hosts the guest hangs as soon
        # as the kernel switches to long mode. Boot the kernel itself.
        results = Path(tmp) / "results"
        results.mkdir()
        argv = vng_argv(image, ["true"], accel="kvm", results_dir=results, cpus=1)
        try:
            booted = runner.run(argv, check=False, timeout=PROBE_BOOT_TIMEOUT)
        except CommandTimeoutError:
            log.info("KVM probe: kernel %s hung under KVM: using TCG", image.release)
            return False
        if booted.returncode != 0:
            log.info("KVM probe: vng exited with status %d: using TCG", booted.returncode)
            return False
        return True


def _write_atomically(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, text)
    except OSError as exc:
        # Not remembering only costs another probe (or measurement) next time.
        log.warning("could not write %s: %s", path, exc)
