"""Where the harness keeps things: the project tree, its build output, the kernel cache."""

from __future__ import annotations

import os
from pathlib import Path

#: The project checkout (the directory holding ``tasks.py``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "samples"
CATALOG_PATH = PROJECT_ROOT / "kernels" / "catalog.toml"

#: Environment variables a user can set instead of passing options.
CACHE_ENV = "HARNESS_CACHE_DIR"
BUILD_ENV = "HARNESS_BUILD_DIR"

APP_NAME = "bpf-sample-harness"
#: Under the cache: where the stand-in for ``modprobe`` that vng runs keeps the modules it
#: decompressed for vng's initramfs (:func:`harness.vm.install_host_shims`), each at its
#: real path under this directory (:func:`harness.kernels.cache.module_copies`).
MODULE_COPIES = "vng-host/modules"


def cache_dir() -> Path:
    """The kernel cache: ``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/bpf-sample-harness``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / APP_NAME).resolve()


def build_dir() -> Path:
    """Build output: ``$HARNESS_BUILD_DIR``, else ``build/`` in the checkout."""
    explicit = os.environ.get(BUILD_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    return PROJECT_ROOT / "build"


def results_dir() -> Path:
    """Where ``invoke test`` leaves its JUnit file, per-kernel results and console logs."""
    return build_dir() / "results"
