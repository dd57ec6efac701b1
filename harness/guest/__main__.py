"""``python3 -m harness.guest``: run the sockex1 scenario and write one JSON per loader.

Runs inside the test VM and, for the host tests, in a private network namespace.
Exit status 0 when the scenario ran (whatever the counts: the host judges them);
1 when a loader failed, with its error in the JSON and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.guest.result import write_result
from harness.guest.scenario import LOADERS, Options, run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m harness.guest",
        description="Load sockex1, send loopback traffic, compare its map with a capture.",
    )
    parser.add_argument("--loader", choices=[*LOADERS, "both"], default="both")
    parser.add_argument("--object", type=Path, required=True, help="sockex1_kern.o")
    parser.add_argument("--c-loader", type=Path, help="the C program sockex1 (for --loader c)")
    parser.add_argument("--out", type=Path, required=True, help="directory for <loader>.json")
    parser.add_argument("--tcp-bytes", type=int, default=256 * 1024)
    parser.add_argument("--udp-bytes", type=int, default=0)
    parser.add_argument("--icmp-count", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("tcp_bytes", "udp_bytes", "icmp_count"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        bpf_object=args.object,
        c_loader=args.c_loader,
        tcp_bytes=args.tcp_bytes,
        udp_bytes=args.udp_bytes,
        icmp_count=args.icmp_count,
    )
    loaders = LOADERS if args.loader == "both" else (args.loader,)
    status = 0
    for loader in loaders:
        result = run(loader, options)
        path = write_result(args.out, result)
        if result.error is not None:
            first_line = result.error.splitlines()[0] if result.error else "failed"
            print(
                f"error: {loader} loader: {first_line} (details in {path})",
                file=sys.stderr,
                flush=True,
            )
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
