"""Benchmark of the harness's boot (not a test): its ratio to a plain vng boot, per phase.

    python3 benchmarks/boot_phases.py [--kernel 6.1] [--pairs 3] [--arm with:OPTION ...]

Boots, in alternating rounds (the order turned by one each round, so no arm always
follows the same other), each arm once per round, and prints medians:

* ``plain``: ``vng -r <the series' vmlinuz as Debian ships it> [--disable-kvm] -- true``,
  the image and its whole module tree as a user would boot them without the harness
  (the ``.deb`` is fetched through the harness's private apt into a temporary
  directory unless ``--shipped-image`` names one);
* ``harness``: ``vng ... -- true`` as :func:`harness.vm.vng_argv` builds it for
  :func:`harness.vm.run_vm` (cached ``vmlinux``, trimmed modules, the guest's init cut
  short, :data:`harness.vm.BASE_APPEND`);
* any ``--arm``: the harness's command changed by one thing, to measure a cut alone:
  ``with:OPT`` / ``without:OPT`` add or drop a kernel option, ``qemu:OPTS`` adds qemu
  options (vng's ``--qemu-opts``), ``vng:OPT`` adds a vng option (``vng:--cpus=1``),
  ``long-init`` boots without the init's stand-ins (udev and tmpfiles run).

Each arm's wall time is a median over the rounds; each ratio is the median of the
per-round ratios against the first arm (pairs taken in the same round share the
machine's load of that moment). The per-phase table comes from the kernel's console
timestamps (:func:`harness.vm.parse_boot_phases`); "host" is the wall time the console
does not cover (vng's start-up, the initramfs it writes, qemu and the firmware).
``--guest-command`` times another command than ``true`` in the harness's arms, e.g.
``python3 -c pass`` or ``python3 -X importtime -c 'import harness.guest'``. In the
guest (6.1, TCG, quiet machine, 3 rounds) ``python3 -c pass`` took 1.38 s, with
``-I -S`` 1.11 s, and importing ``harness.guest.__main__`` 3.84 s: every import is a
few uncached 9p round trips (virtme-ng mounts the root without a cache).

Each arm's CPU time (the vng process tree's, from ``getrusage``) is printed beside its
wall time: on a shared machine it moves far less with other work than wall time does.

Measured with this script (Debian 6.1.0-57, qemu 7.2 TCG, vng 1.42, a 2-core machine
shared with other engineers' builds and VMs; "ratio" is a median of per-round ratios):

* kept, the init's stand-ins (harness/vm.py): on a quiet machine (3 rounds) the
  harness's ``-- true`` boot took 0.218 x plain's wall time (5.1 s against 21.1 s; CPU
  0.228 x) against 0.374 x (CPU 0.403 x) with udev and tmpfiles (``long-init``):
  tmpfiles 1.31 -> 0.21 s, udev 3.41 -> 0.02 s. Under load (load average 7-10, 3
  rounds) 0.24 x against 0.48 x; in another loaded run (4 rounds) ``long-init`` took
  1.73 x the harness's wall time and 2.04 x its CPU time (per round 1.84-2.08).
  What is left (quiet machine): kernel to /init 2.3 s, initramfs 0.5 s, the init's
  mounts 0.25 s, stand-ins 0.2 s, to the command 0.13 s, host side 1.35 s.
* ``vng:--cpus=1`` (4 rounds): CPU 0.71 x (per round 0.54-0.74), wall 0.97 x with
  rounds from 0.31 to 1.39: one vCPU does the same boot with less of the host, which
  matters when VMs share the cores (``-j 2``); the count is the caller's choice
  (``run_vm(cpus=...)``), so it is left to the test front ends.

Tried and not kept (each against the harness in the same run):

* ``with:mitigations=off``: 1.08 x wall, 1.11 x CPU (5 rounds, quiet machine); an
  earlier 0.76 x under heavy load was noise. Retpolines cost TCG nothing measurable.
* ``qemu:-bios /usr/share/qemu/qboot.rom`` (instead of SeaBIOS): 0.99 x wall, 0.98 x
  CPU (5 rounds); not worth a firmware file some distributions lack.
* ``with:tsc=reliable``: 1.22 x wall, 0.95 x CPU (4 rounds): within the noise.
* ``qemu:-accel tcg,thread=multi``: qemu 7.2 already runs an x86 guest on an x86 host
  multi-threaded under TCG (0.31 x plain against the harness's 0.24 x, 3 loaded rounds).
* ``qemu:-accel tcg,tb-size=N`` (the translation-block cache, in MB): 64 and 4096 took
  0.95 x and 0.93 x the harness's wall time in one run (5 rounds, vng passes no
  ``-accel`` of its own), then 64 took 1.07 x and ``-accel tcg`` alone 1.00 x in the
  next (7 rounds): within the noise. A boot to the guest's command translates far less
  code than qemu 7.2's default cache holds, so it is never flushed.
* ``with:acpi=off`` (``acpi_init`` is 0.23 s of a 6.1 boot under TCG,
  ``initcall_debug``): the 6.1 guest never finished its run (killed after 480 s).
* kept, ``initcall_blacklist=crypto_kdf108_init`` (harness/vm.py): 0.14 s of a 6.1
  boot by ``initcall_debug``; this script's 5 rounds on a machine loaded by other
  work spread too widely to add anything (wall 0.48-1.10 x per round).
* ``vng:--memory=512M``: 0.25 x plain against 0.24 x (3 rounds); the kernel's memory
  map setup for 1 GiB is not a visible phase.
* ``with:loglevel=4``, first try: no gain within the noise (0.31 x plain, 3 rounds),
  and it hid virtme-ng-init's lines, which the console verdict (reached init) and this
  phase table need. Measured again against the harness's own boot (2026-12-01, the
  machine shared with other VMs): 0.78 x wall, 0.78 x CPU (4 rounds; per round 0.71
  to 0.82 wall, 0.77 to 0.93 CPU), and 0.91 x (3 rounds) for ``quiet``. Kept
  (:data:`harness.vm.QUIET_BOOT`): the init's stand-in raises the console's level when
  the init runs, and the guest writes the kernel's whole log, from which the phases of
  this table are read.
* kept, ``with:cryptomgr.notests`` (:data:`harness.vm.BASE_APPEND`): 0.80 x wall,
  0.79 x CPU (4 rounds); ``initcall_debug`` showed ``crypto_algapi_init`` (the deferred
  crypto self-tests) taking 0.27 s of the boot, the slowest initcall after
  ``acpi_init`` (0.30 s).
* kept, ``rodata=off`` (:data:`harness.vm.BASE_APPEND`): the end of a 6.1 boot
  write-protects the kernel's read-only data, then walks every page table for a
  writable and executable mapping (``DEBUG_WX``): 0.15 s between two console lines
  under TCG. Six alternating pairs of boots to the guest command (``/proc/uptime`` at
  its start): a median 0.5 s less, per pair from +0.52 to -0.91 s (noisy); the
  benchmark's kernel-to-``/init`` median went from 1.63 to 1.50 s.
* kept, a ``modprobe`` stand-in on vng's ``PATH`` (harness/vm.py): vng's initramfs no
  longer loads ``fuse``, ``virtiofs`` and ``virtio_mmio`` (a 9p root on ``q35``):
  the initramfs of one 6.1 boot 0.61 s against 0.68 s (console time stamps). The
  stand-in also names each ``.ko.xz`` (Debian's 6.12 and later) by a copy decompressed
  on the host: the initramfs of one 7.2 boot 0.60 s against 0.80 s.
* not kept, vng's initramfs handed its modules without their signatures (copies, like
  the decompressed ``.ko.xz`` ones): the kernel hashes each module it loads, under
  emulation. The initramfs of a 6.1 boot took 0.41-0.52 s against 0.49-0.61 s (4
  alternating pairs, medians 0.43 and 0.57 s), but an unsigned module taints the kernel
  under test (``E``), and a kernel built with ``CONFIG_MODULE_SIG_FORCE`` refuses it.
* not kept, the local APIC timer's calibration skipped (0.11 s of every 6.1 boot under
  TCG: "calibrating APIC timer" to "calibration result" with ``apic=verbose``): x86 has
  no kernel option that gives the timer's period, TCG has no TSC-deadline timer
  (``qemu:-cpu max,+tsc-deadline``: "TCG doesn't support requested feature"), and
  ``with:noapictimer`` (ticks from the HPET) ended one boot in four with qemu exiting
  before the kernel reached ``/init``.
* Host side (the "host" row, 1-2 s): ``vng`` is a Python program that starts
  ``virtme-run``, a second Python process (``vng --dry-run`` alone took 1.0-2.3 s
  under load); calling the ``vng`` script beside the interpreter instead of a pyenv
  shim saved nothing measurable. vng has no option to cut its own start-up.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import kernels, paths, vm
from harness.errors import HarnessError
from harness.guest import kernel_log
from harness.kernels import apt
from harness.kernels.model import KernelEntry
from harness.proc import SubprocessRunner

#: Seconds any one boot may take.
LIMIT = 600.0


@dataclass(frozen=True)
class Arm:
    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Boot:
    arm: str
    seconds: float
    cpu_seconds: float
    returncode: int
    phases: tuple[vm.Phase, ...]
    log_path: Path


def shipped_image(series: str, workdir: Path) -> Path:
    """The series' ``vmlinuz`` as Debian ships it, extracted with its modules, depmod'ed."""
    runner = SubprocessRunner()
    options = kernels.KernelOptions(cache=paths.cache_dir())
    kernel = kernels.resolve(series, options)
    wanted = [p for p in kernel.packages if p.name.startswith(("linux-image-", "linux-binary-"))]
    if not wanted:
        raise SystemExit(f"series {series} ships no image package; give --shipped-image PATH")
    root = apt.AptRoot.of(options.cache, series)  # the series' own apt state
    debs = workdir / "debs"
    debs.mkdir(parents=True)
    runner.run(
        root.argv("apt-get", "download", *(f"{p.name}={p.version}" for p in wanted)),
        cwd=debs,
        timeout=apt.DOWNLOAD_TIMEOUT,
    )
    tree = workdir / "root"
    for deb in sorted(debs.glob("*.deb")):
        runner.run(["dpkg-deb", "-x", str(deb), str(tree)])
    runner.run(["depmod", "-b", str(tree), kernel.release])
    for image in (
        tree / "boot" / f"vmlinuz-{kernel.release}",
        tree / "usr" / "lib" / "modules" / kernel.release / "vmlinuz",
    ):
        if image.is_file():
            return image
    raise SystemExit(f"no vmlinuz of {kernel.release} in {', '.join(p.name for p in wanted)}")


def plain_argv(image: Path, accel: str) -> tuple[str, ...]:
    argv = ["vng", "--run", str(image)]
    if accel == "tcg":
        argv.append("--disable-kvm")
    return (*argv, "--", "true")


def harness_argv(
    entry: KernelEntry, accel: str, results: Path, guest: Sequence[str], *, lean: bool
) -> list[str]:
    shims = vm.install_init_shims(paths.cache_dir(), shutil.which("busybox")) if lean else None
    return vm.vng_argv(entry, guest, accel=accel, results_dir=results, shims=shims)


def with_kernel_log(guest: Sequence[str], results: Path) -> list[str]:
    """``guest``, then the kernel's log written where :func:`boot` reads it.

    A quiet boot (:data:`harness.vm.QUIET_BOOT`) leaves the kernel's boot lines off
    the console; the guest's copy of the log has them, as the harness's guest writes it.
    """
    save = f"dmesg > {shlex.quote(str(results / kernel_log.NAME))} 2>/dev/null"
    return ["sh", "-c", f'"$@"; status=$?; {save}; exit $status', "guest", *guest]


def changed(argv: list[str], change: str) -> list[str]:
    """``argv`` (a harness command, ``--exec`` last) changed as ``change`` says."""
    kind, _, value = change.partition(":")
    head, tail = argv[:-2], argv[-2:]
    if kind == "with":
        return [*head, "--append", value, *tail]
    if kind == "without":
        out: list[str] = []
        skip = False
        for i, arg in enumerate(head):
            if skip:
                skip = False
                continue
            if arg == "--append" and i + 1 < len(head) and head[i + 1] == value:
                skip = True
                continue
            out.append(arg)
        if out == head:
            raise SystemExit(f"--arm {change}: the harness does not pass {value!r}")
        return [*out, *tail]
    if kind == "qemu":
        return [*head, f"--qemu-opts={value}", *tail]
    if kind == "vng":
        return [*head, value, *tail]
    raise SystemExit(f"--arm {change}: use with:, without:, qemu:, vng: or long-init")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def boot(arm: Arm, log_path: Path, saved: Path) -> Boot:
    """One boot of ``arm``; ``saved``: where its guest writes the kernel's log, if it does."""
    cpu = _children_cpu()
    start = time.monotonic()
    done = SubprocessRunner().run(
        arm.argv, check=False, timeout=LIMIT, log_path=log_path, cwd=paths.PROJECT_ROOT
    )
    seconds = time.monotonic() - start
    cpu = _children_cpu() - cpu
    text = "".join(
        path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        for path in (saved, log_path)
    )
    saved.unlink(missing_ok=True)
    phases = vm.parse_boot_phases(text)
    result = Boot(arm.name, seconds, cpu, done.returncode, phases, log_path)
    print(
        f"[bench] {arm.name}: {seconds:.2f} s ({cpu:.2f} s CPU), exit status {done.returncode}",
        file=sys.stderr,
        flush=True,
    )
    return result


def phase_table(arms: Sequence[Arm], boots: Sequence[Boot]) -> list[str]:
    """Median seconds of each phase, one column per arm (numbered, with a legend)."""
    lines = [f"{'phase (median s)':<18}" + "".join(f"{f'[{i}]':>8}" for i in range(len(arms)))]
    for name in [*(name for name, _ in vm.BOOT_MARKS), "host", "total"]:
        cells = []
        for arm in arms:
            values = [_phase_seconds(b, name) for b in boots if b.arm == arm.name]
            found = [v for v in values if v is not None]
            cells.append(f"{statistics.median(found):.2f}" if found else "-")
        lines.append(f"{name:<18}" + "".join(f"{c:>8}" for c in cells))
    lines += [f"[{i}] {arm.name}" for i, arm in enumerate(arms)]
    return lines


def _phase_seconds(boot: Boot, name: str) -> float | None:
    if name == "total":
        return boot.seconds
    if name == "host":
        return boot.seconds - sum(p.seconds for p in boot.phases) if boot.phases else None
    return next((p.seconds for p in boot.phases if p.name == name), None)


def _listed(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kernel", default="6.1", help="the series booted (default 6.1)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of all arms (default 3)")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--shipped-image", type=Path, help="Debian vmlinuz with its modules")
    parser.add_argument(
        "--arm", action="append", default=[], help="another harness arm (see the docstring)"
    )
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain vng arm")
    parser.add_argument(
        "--guest-command", default="true", help="the harness arms' guest command (default true)"
    )
    args = parser.parse_args(argv)

    logs = paths.build_dir() / "bench" / "boot"
    logs.mkdir(parents=True, exist_ok=True)
    accel = vm.probe_accel(args.accel)
    entry = kernels.prepare(args.kernel, kernels.KernelOptions(cache=paths.cache_dir()))
    command = shlex.split(args.guest_command)
    with tempfile.TemporaryDirectory(prefix="bench-boot-", dir=paths.build_dir()) as tmp:
        results = Path(tmp) / "results"
        results.mkdir()
        guest = with_kernel_log(command, results)
        arms = [Arm("harness", tuple(harness_argv(entry, accel, results, guest, lean=True)))]
        for change in args.arm:
            if change == "long-init":
                changed_argv = harness_argv(entry, accel, results, guest, lean=False)
            else:
                changed_argv = changed(
                    harness_argv(entry, accel, results, guest, lean=True), change
                )
            arms.append(Arm(change, tuple(changed_argv)))
        if not args.no_plain:
            image = args.shipped_image or shipped_image(args.kernel, Path(tmp) / "shipped")
            arms.insert(0, Arm("plain", plain_argv(image, accel)))
        for arm in arms:
            print(f"[bench] {arm.name}: {shlex.join(arm.argv)}", file=sys.stderr)
        boots: list[Boot] = []
        for round_no in range(args.pairs):
            turn = round_no % len(arms)
            for arm in arms[turn:] + arms[:turn]:
                log_path = logs / f"{arm.name.replace('/', '_')}-{round_no}.log"
                boots.append(boot(arm, log_path, results / kernel_log.NAME))

    print()
    print(f"kernel {entry.release}, accelerator {accel}, {args.pairs} rounds, medians")
    reference = [b for b in boots if b.arm == arms[0].name]
    for arm in arms:
        mine = [b for b in boots if b.arm == arm.name]
        failed = sum(1 for b in mine if b.returncode != 0)
        wall = [b.seconds / r.seconds for b, r in zip(mine, reference, strict=True)]
        cpu = [b.cpu_seconds / r.cpu_seconds for b, r in zip(mine, reference, strict=True)]
        state = f", {failed} failed" if failed else ""
        print(
            f"{arm.name:>36}: wall {statistics.median(b.seconds for b in mine):6.2f} s,"
            f" ratio {statistics.median(wall):.3f} (rounds {_listed(wall)});"
            f" CPU {statistics.median(b.cpu_seconds for b in mine):6.2f} s,"
            f" ratio {statistics.median(cpu):.3f} (rounds {_listed(cpu)}){state}"
        )
    print(f"(ratios are to {arms[0].name}, per round, then the median)")
    print()
    print("\n".join(phase_table(arms, boots)))
    return 0 if all(b.returncode == 0 for b in boots) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
