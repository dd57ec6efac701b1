"""Benchmark of the A/B run (not a test): ``invoke test --baseline`` against a plain run.

    python3 benchmarks/bench_ab.py [--kernel 6.1] [--sample sockex3] [--baseline HEAD] [--pairs 3]

An A/B run adds the baseline's cases to each kernel's one boot, so it should cost the
extra cases and builds, not a second boot. This runs, in alternating pairs so that a
machine that gets busier or quieter over time weighs on both alike:

1. ``invoke test --kernel K --sample S``: the plain run;
2. the same with ``--baseline REV``: the worktree of REV checked out and removed, its
   loaders and samples built and checked on the host, then both sides in one boot;

and prints each time (the whole run's wall time, and the VM's as the JUnit file records
it), the medians and their ratios (the README's budget: at most 1.5 for the wall time).
Kernels should be cached beforehand (``invoke kernels.fetch``) so downloads are not
measured; the first pair also builds what later pairs find up to date, so it is one
more reason to take medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import paths, report, run
from harness.proc import SubprocessRunner

#: Seconds any one measured command may take.
LIMIT = 3600.0
#: The A/B run may cost at most this many plain runs of the same cases.
BUDGET = 1.5


#: A run that fails (a TCG boot that panics on a starved host, say) is run again this often.
RETRIES = 2


def timed(what: str, argv: list[str], log_path: Path) -> tuple[float, float]:
    """The wall time of a run, and its VM's time as its JUnit file records it."""
    for attempt in range(1 + RETRIES):
        print(f"[bench] {what}: {' '.join(argv)}", file=sys.stderr, flush=True)
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
        if done.returncode == 0:
            return seconds, vm_seconds()
        print(f"[bench] {what} failed (attempt {attempt + 1}); again", file=sys.stderr)
    raise SystemExit(f"error: {what} failed {1 + RETRIES} times; see {log_path}")


def vm_seconds() -> float:
    """The VM's wall time in the latest run (every case of a kernel records its boot's)."""
    junit = run.latest_results_dir() / report.JUNIT_NAME
    times = [float(c.properties.get("boot_seconds") or 0) for c in report.parse_junit(junit)]
    return max(times, default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="6.1", help="one kernel series (default 6.1)")
    parser.add_argument("--sample", default="sockex3", help="samples (default sockex3)")
    parser.add_argument(
        "--baseline", default="HEAD", help="the baseline revision or path (default HEAD)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs (default 3)")
    args = parser.parse_args(argv)
    plain = [
        sys.executable, "-m", "invoke", "test", f"--kernel={args.kernel}",
        f"--sample={args.sample}",
    ]  # fmt: skip
    ab = [*plain, f"--baseline={args.baseline}"]
    times: dict[str, list[float]] = {"plain": [], "ab": []}
    vms: dict[str, list[float]] = {"plain": [], "ab": []}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        for pair in range(args.pairs):
            for what, command in (("plain", plain), ("ab", ab)):
                log_path = Path(tmp) / f"{what}-{pair}.log"
                wall, vm = timed(f"{what} #{pair + 1}", command, log_path)
                times[what].append(wall)
                vms[what].append(vm)
    ratios = {}
    for label, measured in (("wall", times), ("VM", vms)):
        medians = {what: statistics.median(values) for what, values in measured.items()}
        ratios[label] = medians["ab"] / medians["plain"]
        for what, values in measured.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"{label:>4} {what:>5}: {shown} s; median {medians[what]:.1f} s")
    print(
        f"A/B / plain = {ratios['wall']:.2f} wall, {ratios['VM']:.2f} VM (kernel {args.kernel}, "
        f"samples {args.sample}, baseline {args.baseline}, {args.pairs} pairs; budget {BUDGET})"
    )
    return 0 if ratios["wall"] <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
