#!/usr/bin/env python3
"""The key under which CI keeps the cache entry of one kernel.

    cache_key.py [--root DIR] SERIES RELEASE PACKAGES

Writes ``key=kernel-<release>-<digest>`` to ``$GITHUB_OUTPUT``. The digest covers
exactly what decides the content of an entry (``harness/kernels/cache.py`` describes it):

- the release and its packages with their versions (``invoke kernels.resolve --kernel S
  --packages``): Debian can upload a new build of the same release;
- the catalog entry of the series, parsed, so that neither comments nor the entries of
  other series count: its package patterns and paths say what is taken from the packages;
- the code that lays out an entry from the packages: ``cache.py`` (the layout, the UAPI
  headers, the manifest and its format), ``image.py`` (vmlinux extracted from the
  compressed image, or not) and ``modules.py`` (which modules are kept, and depmod).

Left out on purpose: the rest of ``harness/kernels/``. ``apt.py`` chooses and downloads
the packages, which their versions already stand for; ``catalog.py`` reads the entry
that is hashed itself; ``kconfig.py`` only checks an entry. A restored entry is checked
against its manifest again (its release and package versions) before it is used, so a
key that missed something of those would cost a rebuild, never a wrong kernel; a key
that missed layout code would restore an entry laid out by other code, which nothing
checks. No restore-keys either, for the same reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

#: The code that lays out an entry, relative to the project root.
LAYOUT_CODE = (
    "harness/kernels/cache.py",
    "harness/kernels/image.py",
    "harness/kernels/modules.py",
)
CATALOG = "kernels/catalog.toml"
DIGEST_LENGTH = 20


def catalog_entry(root: Path, series: str) -> dict[str, object]:
    with (root / CATALOG).open("rb") as f:
        catalog = tomllib.load(f)
    entry = catalog.get("series", {}).get(series)
    if not isinstance(entry, dict):
        known = ", ".join(catalog.get("series", {}))
        raise SystemExit(f"error: no series {series!r} in {CATALOG} (it has: {known})")
    return entry


def cache_key(root: Path, series: str, release: str, packages: str) -> str:
    """The key of ``release`` of ``series`` built from ``packages`` by the code in ``root``."""
    if not release or not packages.strip():
        raise SystemExit("error: a cache key needs the release and its packages")
    document = {
        "release": release,
        "packages": sorted(packages.split()),
        "catalog": catalog_entry(root, series),
        "code": {
            path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in LAYOUT_CODE
        },
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return f"kernel-{release}-{hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("series")
    parser.add_argument("release")
    parser.add_argument("packages", help='as "NAME=VERSION NAME=VERSION ..."')
    args = parser.parse_args(argv)
    key = cache_key(args.root, args.series, args.release, args.packages)
    print(f"kernel {args.series}: cache key {key}")
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as output:
        output.write(f"key={key}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
