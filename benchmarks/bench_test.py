"""Benchmark of ``invoke test`` (not a test): parallel VMs, and the harness against plain vng.

    python3 benchmarks/bench_test.py [--kernel all] [--one 6.1] [--shipped-image PATH]

Measures, one after the other in one run, on an otherwise idle machine:

1. ``invoke test --kernel all -j 1`` and ``-j 4``: the whole matrix, wall time;
2. ``invoke test --kernel 6.1``: one kernel from start to verdict, wall time, and the
   VM's own time as the JUnit file records it;
3. plain ``vng -r <the Debian image as shipped> -- true`` for the same series: the
   ``boot/vmlinuz`` of the ``.deb`` with its whole module tree, as a user would boot it
   without the harness (``--disable-kvm`` where KVM does not work, nothing else).

and prints the times and their ratios. Kernels should be cached beforehand
(``invoke kernels.fetch``) so downloads are not measured. The shipped image is fetched
with the host's apt (``apt-get download``) unless ``--shipped-image`` names one whose
modules are in ``../lib/modules/<release>`` beside it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import kernels, paths, report, vm
from harness.errors import HarnessError
from harness.proc import SubprocessRunner, require

#: Seconds any one measured command may take.
LIMIT = 3600.0


@dataclass(frozen=True)
class Measure:
    what: str
    seconds: float
    returncode: int
    log_path: Path


def timed(what: str, argv: Sequence[str], log_path: Path) -> Measure:
    print(f"[bench] {what}: {shlex.join(argv)}", file=sys.stderr, flush=True)
    start = time.monotonic()
    done = SubprocessRunner().run(
        argv, check=False, timeout=LIMIT, log_path=log_path, cwd=paths.PROJECT_ROOT
    )
    seconds = time.monotonic() - start
    print(
        f"[bench] {what}: {seconds:.1f} s, exit status {done.returncode} (log: {log_path})",
        file=sys.stderr,
        flush=True,
    )
    return Measure(what, seconds, done.returncode, log_path)


def invoke_test(kernel: str, jobs: int, accel: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "invoke",
        "test",
        f"--kernel={kernel}",
        f"--jobs={jobs}",
        f"--accel={accel}",
    ]


def vm_seconds() -> float:
    """The longest VM time the last run's JUnit file records."""
    cases = report.parse_junit(report.junit_path())
    times = [float(c.properties.get("boot_seconds") or 0) for c in cases]
    return max(times, default=0.0)


def shipped_image(series: str, workdir: Path) -> Path:
    """The series' ``boot/vmlinuz`` as Debian ships it, extracted with its modules."""
    runner = SubprocessRunner()
    kernel = kernels.resolve(series, kernels.KernelOptions(cache=paths.cache_dir()))
    image_packages = [p for p in kernel.packages if p.name.startswith("linux-image-")]
    if not image_packages:
        raise SystemExit(
            f"series {series} ships no linux-image package with the image in it; "
            "give one with --shipped-image PATH"
        )
    require("apt-get", "apt")
    for package in image_packages:
        runner.run(["apt-get", "download", f"{package.name}={package.version}"], cwd=workdir)
    root = workdir / "root"
    for deb in workdir.glob("*.deb"):
        runner.run(["dpkg-deb", "-x", str(deb), str(root)])
    runner.run(["depmod", "-b", str(root), kernel.release])
    image = root / "boot" / f"vmlinuz-{kernel.release}"
    if not image.is_file():
        raise SystemExit(f"{image} is missing after extracting {kernel.release}")
    return image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="all", help="the matrix (default: all)")
    parser.add_argument("--one", default="6.1", help="the series timed alone (default 6.1)")
    parser.add_argument("--jobs", default="1,4", help="parallel VMs to compare (default 1,4)")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--shipped-image", type=Path, help="Debian vmlinuz with its modules")
    args = parser.parse_args(argv)

    logs = paths.build_dir() / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    accel = vm.probe_accel(args.accel)
    measures: list[Measure] = []
    for jobs in (int(j) for j in args.jobs.split(",")):
        measures.append(
            timed(
                f"invoke test --kernel {args.kernel} -j {jobs}",
                invoke_test(args.kernel, jobs, accel),
                logs / f"matrix-j{jobs}.log",
            )
        )
    one = timed(
        f"invoke test --kernel {args.one}",
        invoke_test(args.one, 1, accel),
        logs / f"one-{args.one}.log",
    )
    measures.append(one)
    one_vm = vm_seconds()
    with tempfile.TemporaryDirectory(prefix="bench-shipped-", dir=paths.build_dir()) as tmp:
        image = args.shipped_image or shipped_image(args.one, Path(tmp))
        plain = ["vng", "--run", str(image)]
        if accel == "tcg":
            plain.append("--disable-kvm")
        plain += ["--", "true"]
        bare = timed(f"vng -r <shipped {args.one} image> -- true", plain, logs / "plain-vng.log")
        measures.append(bare)

    print()
    print(f"accelerator: {accel}")
    width = max(len(m.what) for m in measures)
    for m in measures:
        state = "ok" if m.returncode == 0 else f"exit {m.returncode}"
        print(f"{m.what.ljust(width)}  {m.seconds:7.1f} s  {state}")
    print(f"{'  of which the VM (JUnit boot_seconds)'.ljust(width)}  {one_vm:7.1f} s")
    print()
    matrix = [m for m in measures if m.what.startswith(f"invoke test --kernel {args.kernel} -j")]
    if len(matrix) >= 2:
        first, last = matrix[0], matrix[-1]
        print(f"ratio {first.what} / {last.what}: {first.seconds / last.seconds:.2f}")
    print(f"ratio one kernel start-to-verdict / plain vng true: {one.seconds / bare.seconds:.2f}")
    print(f"ratio one kernel VM time / plain vng true: {one_vm / bare.seconds:.2f}")
    return 0 if all(m.returncode == 0 for m in measures) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
