"""Benchmark of ``invoke test`` (not a test): boot to verdict against a plain vng boot.

    python3 benchmarks/bench_test.py [--kernel 6.1] [--sample sockex1] [--rounds 3]
                                     [--matrix 5.10,6.1,6.12,7.2] [--shipped-image PATH]

Runs, in rounds (each arm once per round, the order turned by one each round so no
arm always follows the same other), and prints medians and per-round ratios:

* ``plain``: ``vng -r <the series' vmlinuz as Debian ships it> [--disable-kvm] -- true``
  (the ``.deb`` fetched through the harness's private apt, as
  ``benchmarks/boot_phases.py`` does, unless ``--shipped-image`` names one);
* ``one``: ``invoke test --kernel K --sample S`` (every loader of the sample);
* ``all``: ``invoke test --kernel K``, every sample and loader of the kernel;
* ``matrix``: ``invoke test --kernel <four series> -j 2``.

and prints:

(a) ``one`` / ``plain`` wall time (the issue's budget 0.35, aim 0.25);
(b) where ``one``'s time went: invoke and pytest on the host, then the kernel's
    timeline as ``invoke test --timings`` prints it (:mod:`harness.timeline`: preparing
    and building, vng and qemu, the boot's phases, the guest's start-up, the imports of
    the Python loader, each case phase summed over the cases, the exit);
(c) guest seconds per added (sample, loader) case: ``all``'s case time minus ``one``'s,
    over the cases added (budget 1 s under TCG);
(d) ``matrix`` / ``all`` wall time (budget 2.2).

Kernels should be cached beforehand (``invoke kernels.fetch``); the first round also
builds what later rounds find up to date, one more reason to take medians. Other VMs
on the machine move wall times a lot: each arm's load average is printed with it, and
only ratios from one run mean anything. The README's numbers come from this script.

What the guest's cuts gained, and what was tried and not kept (6.1 under TCG, within one
boot unless said otherwise; the machine was shared, load average 3 to 7):

* kept, the guest bundle (harness/guest/bundle.py): ``python3 -m harness.guest`` took
  50.6 s of VM for sockex1's two cases, the bundle 16.9 s, then 13.7 s with the cuts
  below. Importing ``harness.guest.__main__`` and the Python loader took 17 to 23 s from
  the checkout (no ``__pycache__``: compiled in the guest), 8 to 11 s from a zip of
  compiled modules in guest memory that holds the standard library's modules too, and 10
  to 14 s from one that holds only the harness and pyelftools.
* kept, ``-S``: ``python3 -c pass`` took 2.1 s, ``-I -S`` 1.0 s: ``site`` reads every
  ``.pth`` of site-packages and imports what they name; the bundle holds pyelftools, so
  the guest needs nothing from site-packages.
* kept, no ``argparse`` and ``tempfile`` on the guest's path (0.96 and 0.78 s with what
  they import, from the checkout), the Python loader imported before the first case, the TCP sender
  without ``getaddrinfo`` (its ``idna`` codec imported ``unicodedata`` in the first
  case: 0.85 s), ``os._exit`` after the last result (the interpreter's teardown took 0.3
  to 0.7 s), pytest without the hypothesis plugin (1.1 s of every start on the host).
* not kept, the zip read in place over 9p: slower than the checkout's files (21 to 22 s
  against 17 s): ``zipimport`` opens, seeks, reads and closes the archive for every
  module, each a 9p round trip without a page cache.
* kept, the interpreter's shared objects in guest memory (harness/guest/runtime.py):
  one uncompressed tar of libpython, libc, libm, libffi, libz and the extension
  modules, stripped (libpython 23 MB -> 5.7 MB; 9.4 MB in all), unpacked by busybox's
  ``tar`` into ``/run`` (0.3 s) before the interpreter starts. In one 6.1 boot:
  ``python3 -I -S -c pass`` 1.05 to 1.15 s from the 9p root, 0.42 s from ``tmpfs``;
  the guest's start-up to its ``main()``, unpacking included, 4.7 s against 6.0 s
  (medians of 6 alternations on a loaded machine, per-pair median 0.81 x). Earlier
  tries copied the files one by one, unstripped (libpython alone took 4 to 5 s to
  copy), or only the extension modules (their own libraries still came over 9p):
  the copy then cost what it saved.
* kept, the bundle as one marshalled table of compiled modules instead of a zip
  (harness/guest/entry.py): ``zipimport`` is Python code run for every import (the
  archive's directory parsed, each module unmarshalled twice) and running a zip
  imports ``runpy`` first; the table is read in one ``read`` and served by a
  ``sys.path`` hook, the entry compiled beside it. The whole guest run of sockex1's
  two cases on the host: 459 M instructions against 379 M (callgrind). In 6.1 boots
  under TCG (two each, back to back): Python's start-up and imports 2.31 -> 1.35 s,
  the Python loader's imports 0.61 -> 0.33 s, the boot 8.6 -> 6.4-6.7 s. (An earlier
  try ran the zip's ``__main__`` as a script beside it, so that ``runpy`` was not
  imported from the zip: within the noise, 4 alternations in one boot.)
* kept, no ``platform`` in the guest (the syscall number by ``os.uname()``): 1.5 of
  73 ms of the guest's imports on the host (``-X importtime``).
* kept, the capture's reader wakes on a pipe when the capture closes instead of
  polling with a 50 ms read timeout: ``detach`` 0.064/0.084 -> 0.035/0.045 s for the
  c and python cases.
* not kept, the Python loader imported in a thread while the program loaders' cases
  run first: their traffic phase took 0.45 to 0.88 s instead of 0.07 s (the import
  holds the interpreter's lock while the sender needs it), eating what it saved.
* not kept at first, a home for the interpreter in the unpacked tar (``PYTHONHOME``: the
  ``encodings`` package compiled, ``os.py`` as the landmark, the extension modules as
  ``lib-dynload``), so that its start-up reads nothing from the 9p root: alone,
  ``python3 -S -c pass`` took 0.35-0.40 s against 0.52-0.64 s (5 alternations in one
  boot), but in three alternating pairs of whole runs the guest's start-up and imports
  were 1.64, 1.99, 2.27 s against 2.08, 1.62, 1.96 s: the tar grew by 0.75 MB and 122
  files to unpack, and nothing showed out of the noise.
* not kept at first, modules imported lazily (``importlib.util.LazyLoader`` for
  ``inspect``, ``pdb``, ``ipaddress``, ``textwrap``, ``urllib.parse``, which the guest
  imports but does not use): 3.5 % fewer instructions, since a second ``import`` of a
  lazy module anywhere loads it; not worth a loader that changes when modules run.
* kept later, ``inspect`` and ``ipaddress`` lazy (harness/guest/entry.py
  ``DEFERRED``): ``inspect`` had run all along because one guest dataclass had no
  docstring, for which ``dataclasses`` asks ``inspect`` for a signature to write one;
  with a docstring on every guest dataclass nothing uses it, and each of the two is
  imported once. The guest's start-up to its plan, 5 alternations in one 6.1 boot:
  median 0.99 s against 1.09 s. ``traceback`` (with ``textwrap``, ``linecache``,
  ``tokenize``) gained nothing: ``logging`` imports it a second time. Nor did ``pdb``,
  which pyelftools' ``construct.debug`` imports (with ``inspect`` again) while the
  Python loader is imported: that import took 0.44-0.66 s against 0.42-0.66 s (5
  alternations in one boot).
* kept, the deferred modules as a module type of the bundle's own instead of
  ``LazyLoader`` (harness/guest/entry.py ``Deferred``): its import attributes are set,
  so importing it again does not run it, and its body runs on the first name it lacks.
  ``pdb`` and ``inspect`` (imported by pyelftools' ``construct.debug``), ``traceback``
  (by ``logging``) and ``locale`` (by ``subprocess``) now stay unrun too. On the host
  (callgrind): the guest's imports up to its plan 176.6 -> 161.1 M instructions, with
  the Python loader 324.9 -> 285.5 M. In one 6.1 boot (8 alternations, medians, the
  interpreter's start-up included): up to the plan 1.17 s both ways, with the Python
  loader 1.54 s against 1.80 s; this script's two runs after it (loads 1.6 and 1.5)
  put the loader's import beside the cases at 0.59 and 0.70 s, and the ratio at 0.36
  and 0.36 (the round before: 0.33-0.35; the start-up and the boot were slower in
  both runs, which the change does not touch).
  Not tried: ``logging`` itself (the guest's modules each make a logger at import, and
  ``harness.proc`` logs every program it starts).
* kept, pyelftools' DWARF and ARM unwinding readers deferred by name (harness/guest/
  entry.py ``DEFERRED_CALLABLES``): ``elftools.elf.elffile`` imports ``DWARFInfo``,
  ``DebugSectionDescriptor``, ``DwarfConfig`` and ``EHABIInfo`` at its top and calls
  them only when asked for DWARF or unwinding tables; a from-import of one now gets a
  stand-in (``entry.Later``) that runs the module when called. ``-X importtime`` in the
  guest put the DWARF reader with its constants, line programs, location lists and call
  frames at 0.18 s of the Python loader's 0.54 s of imports. In one 6.1 boot (6
  alternations) the interpreter's start with the guest's and the loader's imports took
  1.07-1.88 s against 1.19-2.08 s (0.02-0.2 s less at each rank), and this script's
  "loader import, beside the cases" went from 0.59-0.70 s to 0.39 s. The other
  loader's case (0.5-0.6 s) is now the longer of the two branches that run side by side.
* kept, on the host: the checkout compiled by ``.ci/install`` (``compileall``), as pip
  compiles a package it installs. This machine sets ``PYTHONDONTWRITEBYTECODE``, so an
  editable install's modules were compiled from source by every ``invoke`` (about 70
  of them): the imports of a run took 0.53-0.58 s before, 0.28-0.33 s after (3 each).
* kept, on the host: each header tree's digest (part of every build's stamp) kept under
  the build directory by what the tree's files were (paths, sizes, times), so a run
  walks the 900 headers without reading them again: this script's "host: build" row
  0.10-0.19 s before, 0.07 s in three runs after (0.15 s in the run that wrote it).
* kept, the TSC's rate a TCG boot measured passed to the later boots of the host boot
  (``tsc_early_khz``, harness/vm.py ``remembered_tsc``): the kernel's quick measurement
  against the PIT fails in about one boot in four under TCG (126 of 478 kernel logs
  here), and the slow one after it stood the kernel's clock still for 0.31 and 0.35 s
  in two of eight boots timed from the host (0.02-0.05 s in the others and in all eight
  boots given the rate).
* not kept, the kernel's log read while the guest only waits for the child's cases
  (the boot's 440 records, 0.05-0.08 s under TCG, then the few since after them):
  ``invoke test --kernel 6.1 --sample sockex1``'s guest command took 2.39-3.20 s
  against 2.29-3.07 s without it (6 alternations of two checkouts), the exit phase
  0.07-0.10 s against 0.07-0.12 s: on a 2-core host the read shares the cores with
  the child's case.
* measured and not done, the C loader run from a copy in ``tmpfs``: exec'd from the 9p
  root it printed its usage in 0.06-0.09 s (three times in one boot), against 0.01-0.04 s
  from ``tmpfs`` before; reading the 1 MB program over 9p and writing the copy takes
  part of the difference back, for some 0.04 s a case at most.
* kept, the programs the guest runs linked statically (harness/build.py
  ``guest_link_options``): the classic loader printed its usage in 0.09-0.16 s linked
  against libelf, libz and libc (the dynamic linker and each library read over the
  uncached 9p root), 0.02-0.08 s linked statically (4 each, one boot).
* kept, the Python loader's cases in a child forked once the guest's own modules are
  imported (harness/guest/beside.py): the child imports the loader (0.4-0.7 s) while
  the parent runs the other loaders' cases, then runs its own after them. The guest
  command of ``invoke test --kernel 6.1 --sample sockex1`` took 2.83-3.01 s in four
  boots against 3.27 s; ``bench_test.py``'s ratio went from 0.39/0.46 to 0.35 (plain
  16.6 s, one 5.85 s, a quiet machine). A VM with one CPU (each VM of a ``-j 2`` run)
  imports in line as before: two processes on one CPU gain nothing.
* kept, a home for the interpreter in the runtime tar after all (harness/guest/
  runtime.py): only the three codecs its start-up imports (``-X utf8``, so no locale
  asks for more), so the tar grew by 11 KB, not 0.75 MB; the entry gives the
  interpreter its own paths back. Seven alternating pairs of whole runs: start-up and
  imports median 1.31 s against 1.53 s, lower in each pair; in one boot, the guest's
  start-up to its plan 0.86-1.13 s against 0.97-1.57 s (6 alternations).
* kept, the modules the guest's imports try and nothing holds (``nt``, ``msvcrt``,
  ``_winapi``, ``org``) answered "not found" by the entry's first finder, from the
  bundle's probe: the first such try read the standard library's directory over 9p
  (``org``, 30 ms under TCG, ``-X importtime`` in the guest).
* kept, a case's result encoded by json's C encoder (one line, no indent): 0.33 ms
  against 1.3-1.8 ms a sockex1 case on the host.
* kept, the runtime's unpacking script as a file beside the tar: vng puts the guest's
  command, base64-encoded, on the kernel's command line, which holds 2048 bytes in
  all; a longer script stopped 6.1 before its first line (``PANIC: early exception``).
* not kept, the runtime tar unpacked by the init's ``systemd-tmpfiles`` stand-in,
  started in the background from kernel options, while the init goes on: it was
  unpacked by the time the guest command started, but in four alternating pairs
  Python's start-up was 1.21-1.39 s against 1.13-1.68 s (medians 1.30 and 1.31): on
  a 2-core host the tar's 9p reads and the init's steps share the same cores.
  Tried again (2026-12-02) as the stand-in's first step, named by an init
  environment variable from the kernel's command line, the command waiting on a
  claim (a FIFO) for the early run's mark. Stamps in the guest showed the early run
  starting 0.22-0.29 s after the init ran the stand-in (three busybox starts over 9p)
  and unpacking for 0.31-0.82 s, beside the init's last steps. Over 32 alternating
  pairs of ``invoke test --kernel 6.1 --sample sockex1`` against the commit before,
  in four runs, the guest's start-up was shorter in three of the runs: medians 1.23
  against 1.49 s, 1.13 against 1.30 s, and 1.48 against 1.84 s (11 pairs of 12); the
  fourth gave 1.11 against 1.08 s. But the init ran the guest's command later, by
  up to 0.11 s (median), and the end of the guest's work moved within the noise:
  -0.33, +0.14 and -0.03 s (medians of the first three runs), and a paired median of
  -0.26 s in the fourth, with 7 wins in 12. The whole run: -0.05, +0.34, -0.11 s, and
  a paired median of +0.05 s. A claim protocol, a wait and one more kernel option,
  for a gain that does not show end to end: reverted.
* not kept, ``--qemu-opts=-cpu qemu64`` instead of vng's ``-cpu max``: the kernel's
  boot was the same (1.48-2.01 s against 1.47-2.14 s), Python's start-up slower in
  each of four pairs (2.06-2.76 s against 1.38-2.06 s).
* not kept, ``initcall_blacklist=init_encrypted,jent_mod_init``: on 6.12 under
  ``initcall_debug`` the jitter RNG's self-test took 90-133 ms and the encrypted keys'
  init 87 ms (asking user space for AES modules the initramfs lacks), but in three
  alternating pairs on 6.12 and on 7.2 the kernel's boot to ``/init`` showed nothing
  out of the noise (6.12: 1.95-2.14 s against 1.82-2.22 s).
* not kept, libc and libm left out of the runtime tar (mapped over 9p page by page
  instead of copied whole): the guest's start-up to its plan 1.63 s against 1.51 s
  (medians of 5 alternations in one boot).
* not kept, the bundle's finder on ``sys.meta_path`` instead of a ``sys.path`` hook:
  importing the guest's modules took 18.5-20.4 ms against 18.5-19.5 ms on the host (4
  alternations); the import machinery is not where the time goes, the modules'
  bodies are.
* not tried further, Debian's ``/usr/bin/python3`` (extension modules built in): its
  start-up was within the noise of the harness's interpreter, and it is another
  interpreter than the one the bundle is compiled by.
* kept, on the host: the garbage collector off while ``invoke test`` imports the
  harness and pytest, then frozen and on again (tasks.py): from the process's start to
  vng's ``exec`` (``perf trace`` of the process events) a median 48 ms less over 10
  alternating pairs of checkouts, 579 against 613 ms (per pair -218 to +118 ms).
* kept, on the host: python-debian's ``deb822`` imported only where deb822 text is read
  (40 ms of a run's imports, ``-X importtime``). A run of cached kernels reads none
  unless the host's apt sources are deb822 ``.sources`` files; Debian 12's
  ``debian.sources`` is one, so there every run still pays it. Not done: a memo of the
  host's mirrors by what its source files were, for 0.6 % of a run.
* left as they are, the per-case waits: the quiet wait (0.1 s without a frame, about
  0.12 s a case) is what lets the last control packets reach both the capture and the
  map before either is read; shorter, a capture that misses a frame the map counted
  would be a false FAIL. The capture thread's 50 ms read timeout makes ``detach`` 0.04
  to 0.14 s.
* kept, the extracted ``vmlinux`` written with holes for its zero blocks
  (harness/kernels/image.py): 34 of the 6.1 image's 65 MB are all-zero 4 KiB blocks,
  which qemu reads at each boot with the loaded segments. This machine's page cache is
  reclaimed continually (1.5 MB/s while idle) and its disk read the dense image cold
  in 10.3 s; the sparse one is 31 MB on disk. Warm, the two read alike.
* measured, the compressed ``vmlinuz`` booted instead (so less to read): 7.28 s
  against 4.05 s for a boot to ``true`` (medians of 4 alternating pairs, kernel uptime
  at power-off 3.19 against 3.09 s): its decompression under TCG, before the kernel's
  clock starts, costs about 3.2 s.
* measured, a ``-j 2`` run with two vCPUs per VM (``--vm-cpus 2``): 53-60 s against
  29-44 s with one (3 alternating pairs): four vCPU threads on a 2-core host.
* measured, the first Python process in the guest pays for qemu translating the
  interpreter's code: importing ``harness.guest.__main__`` (``-h``) took 1.25 s the
  first time in one boot and 0.78-0.89 s the next two; ``python3 -I -S -c pass`` 1.22 s,
  then 0.30 s. Translated blocks are found again by physical address, so the
  libraries unpacked in ``tmpfs`` are translated once a boot.
* kept, ERMS off in the guest's CPU under TCG (harness/vm.py ``TCG_QEMU_OPTIONS``,
  ``-global max-x86_64-cpu.erms=off``): the kernel then clears pages with ``rep stosq``
  instead of ``rep stosb``, which qemu 7.2 runs one byte per step. Two runs of
  alternating pairs of ``invoke test --kernel 6.1 --sample sockex1`` (as
  ``--qemu-opts=-cpu max,-erms,-fsrm``): per-pair medians 0.89 (6 pairs) and 0.95 (12
  pairs; medians 6.63 against 6.94 s, the guest's start-up and imports 1.33 against
  1.46 s). Five ``python3 -I -S -c pass`` in one boot did not move (1.86-1.95 s): the
  bare interpreter makes few new pages; a 64 MB ``bytearray`` did (0.23-0.30 s against
  0.37-0.45 s).
* not kept, AVX off as well (``-avx,-avx2,-fma,-f16c,-vaes``): 1.14 per pair (8 pairs).
* not kept, ``-accel tcg,thread=single`` (the two vCPUs on one host thread): 0.99 per
  pair (8 pairs): the Python start-up gained 0.16 s, but the loader's import beside the
  cases then shares the thread with them (attach 0.60 against 0.29 s).
* not kept, ``-machine pc`` instead of vng's ``q35``: the initramfs took 1.94 s instead
  of about 0.5 s (one boot).
* measured, one vCPU (``--vm-cpus 1``) for a single kernel: 0.92 and 0.94 per pair (6
  and 10 pairs; each phase a little shorter, the loader imported in line). Not the
  default: the VM keeps two CPUs, so that what runs in it (per-CPU state, a tail call
  chain keeping its record per CPU) runs on an SMP kernel, as on the machines the
  samples are for. ``-j 2`` already gives each VM one.
* measured, reads over the 9p root by release (one boot each, two rounds, ERMS off,
  medians): the runtime tar with ``dd bs=512k`` 0.055 s (5.10), 0.060 s (6.1), 1.30 s
  (6.12), 1.09 s (7.2); with ``dd bs=4096`` 1.36-1.91 s on all four; busybox ``tar -x``
  of it 0.23, 0.24, 1.35, 1.26 s; ``cat`` of the bundle 0.06, 0.06, 0.58, 0.59 s. On 7.2
  ``O_DIRECT``, 64 KB and 4 MB reads and an ``mmap`` were all as slow: the newer client
  seems to send about a page per read request. Not worked around yet (a read-only
  virtio disk holding the tar is the candidate).
* the clock source: under TCG the kernel runs on ``hpet`` (the TSC is marked unstable
  and cannot be chosen at run time); a clock read from Python costs about 5 us, too
  little to matter. ``tsc=reliable`` is in ``boot_phases.py``'s list.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from boot_phases import plain_argv, shipped_image

from harness import paths, timeline, vm
from harness.errors import HarnessError
from harness.guest.plan import PLAN_NAME
from harness.proc import SubprocessRunner
from harness.run import TIMELINE_NAME

#: Seconds any one measured command may take.
LIMIT = 3600.0
#: The issue's budgets.
RATIO_BUDGET = 0.35
CASE_BUDGET = 1.0
MATRIX_BUDGET = 2.2


@dataclass
class Run:
    """One arm's run: its wall time, and for an ``invoke test``, what its results say."""

    arm: str
    seconds: float
    returncode: int
    load: tuple[float, float]  # 1-minute load average before and after
    phases: dict[str, float] = field(default_factory=dict)
    cases: int = 0
    case_seconds: float | None = None  # guest time of the cases (after the loader's import)


def invoke_test(kernel: str, sample: str | None, jobs: int, accel: str) -> list[str]:
    argv = [sys.executable, "-m", "invoke", "test", f"--kernel={kernel}", f"--accel={accel}"]
    if sample:
        argv.append(f"--sample={sample}")
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    return argv


def measure(arm: str, argv: Sequence[str], log_path: Path) -> Run:
    before = os.getloadavg()[0]
    start = time.monotonic()
    done = SubprocessRunner().run(
        argv, check=False, timeout=LIMIT, log_path=log_path, cwd=paths.PROJECT_ROOT
    )
    seconds = time.monotonic() - start
    run = Run(arm, seconds, done.returncode, (before, os.getloadavg()[0]))
    print(
        f"[bench] {arm}: {seconds:.1f} s, exit status {done.returncode}, "
        f"load {run.load[0]:.1f} -> {run.load[1]:.1f} (log: {log_path})",
        file=sys.stderr,
        flush=True,
    )
    return run


def read_results(run: Run, results: Path) -> None:
    """Fill ``run`` from the run's results directory (a single kernel's, for the phases)."""
    kernels = sorted(p.parent for p in results.glob(f"*/{PLAN_NAME}"))
    run.cases = sum(len(json.loads((k / PLAN_NAME).read_text())["cases"]) for k in kernels)
    if len(kernels) != 1:
        return
    phases = timeline.phases(kernels[0])
    host = json.loads((kernels[0] / TIMELINE_NAME).read_text())
    run.phases["host: invoke, pytest, verdict"] = run.seconds - sum(
        float(host.get(name, 0.0)) for name in ("prepare", "build", "vm")
    )
    run.phases.update(phases)
    ran = timeline.case_seconds(kernels[0])
    if ran is not None:
        run.case_seconds = ran[1]


def median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def rounds_of(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kernel", default="6.1", help="the series of one and all (6.1)")
    parser.add_argument("--sample", default="sockex1", help="the sample of one (sockex1)")
    parser.add_argument("--matrix", default="5.10,6.1,6.12,7.2", help="the kernels of -j 2")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every arm (3)")
    parser.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--shipped-image", type=Path, help="Debian vmlinuz with its modules")
    parser.add_argument("--no-matrix", action="store_true", help="leave out the -j 2 arm")
    args = parser.parse_args(argv)

    logs = paths.build_dir() / "bench" / "test"
    logs.mkdir(parents=True, exist_ok=True)
    accel = vm.probe_accel(args.accel)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-test-", dir=paths.build_dir()) as tmp:
        image = args.shipped_image or shipped_image(args.kernel, Path(tmp) / "shipped")
        arms = {
            "plain": plain_argv(image, accel),
            "one": tuple(invoke_test(args.kernel, args.sample, 1, accel)),
            "all": tuple(invoke_test(args.kernel, None, 1, accel)),
        }
        if not args.no_matrix:
            arms["matrix"] = tuple(invoke_test(args.matrix, None, 2, accel))
        for name, arm_argv in arms.items():
            print(f"[bench] {name}: {shlex.join(arm_argv)}", file=sys.stderr)
        names = list(arms)
        for round_no in range(args.rounds):
            turn = round_no % len(names)
            for name in names[turn:] + names[:turn]:
                run = measure(name, arms[name], logs / f"{name}-{round_no}.log")
                if name != "plain":
                    read_results(run, (paths.results_dir() / "latest").resolve())
                runs.append(run)

    def of(arm: str) -> list[Run]:
        return [r for r in runs if r.arm == arm]

    print()
    print(
        f"kernel {args.kernel}, accelerator {accel}, {args.rounds} rounds, medians; "
        f"load average {median([r.load[0] for r in runs])} "
        f"(from {min(r.load[0] for r in runs):.1f} to {max(r.load[1] for r in runs):.1f})"
    )
    for arm in arms:
        mine = of(arm)
        failed = sum(1 for r in mine if r.returncode != 0)
        print(
            f"{arm:>7}: {median([r.seconds for r in mine]):>7} s"
            f" (rounds {rounds_of([r.seconds for r in mine])})"
            f"{f', {failed} failed' if failed else ''}"
        )
    print()
    ratio = [o.seconds / p.seconds for o, p in zip(of("one"), of("plain"), strict=True)]
    print(
        f"(a) invoke test --kernel {args.kernel} --sample {args.sample} / plain vng: "
        f"{median(ratio)} (rounds {rounds_of(ratio)}; budget {RATIO_BUDGET})"
    )
    print()
    print("(b) where the time went (median s)")
    for name in dict.fromkeys(name for r in of("one") for name in r.phases):
        print(f"    {name:<42}{median([r.phases[name] for r in of('one') if name in r.phases]):>8}")
    print(f"    {'total (wall)':<42}{median([r.seconds for r in of('one')]):>8}")
    print()
    per_case = [
        (a.case_seconds - o.case_seconds) / (a.cases - o.cases)
        for a, o in zip(of("all"), of("one"), strict=True)
        if a.case_seconds is not None and o.case_seconds is not None and a.cases > o.cases
    ]
    cases = [
        f"{arm}: {r.cases} cases, {r.case_seconds:.2f} s"
        for arm in ("one", "all")
        for r in of(arm)[:1]
        if r.case_seconds is not None
    ]
    print(
        f"(c) guest seconds per added (sample, loader) case: {median(per_case)} "
        f"(rounds {rounds_of(per_case)}; {', '.join(cases)}; budget {CASE_BUDGET})"
    )
    if "matrix" in arms:
        matrix = [m.seconds / a.seconds for m, a in zip(of("matrix"), of("all"), strict=True)]
        print(
            f"(d) invoke test --kernel {args.matrix} -j 2 / invoke test --kernel {args.kernel}: "
            f"{median(matrix)} (rounds {rounds_of(matrix)}; budget {MATRIX_BUDGET})"
        )
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
