"""The values that describe a kernel as it moves from a name to a bootable entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """A Debian package pinned to one version, as the signed index lists it."""

    name: str
    version: str
    sha256: str = ""
    size: int = 0  # bytes of the .deb


@dataclass(frozen=True)
class Kernel:
    """A kernel resolved to a concrete release; not necessarily on disk yet.

    ``spec`` is what the user asked for (``"6.1"`` or a path); ``origin`` is
    ``"debian"``, ``"snapshot"`` or ``"local"``.
    """

    spec: str
    series: str | None
    release: str
    origin: str
    packages: tuple[Package, ...] = ()


@dataclass(frozen=True)
class KernelEntry:
    """A kernel ready to boot and to build against.

    ``image`` is what ``vng -r`` boots (the uncompressed vmlinux where the kernel
    has a PVH entry). ``modules`` is ``<root>/lib/modules/<release>`` beside the
    image's ``<root>/boot/``, as virtme-ng finds it, or None when everything is
    built in. ``headers`` is an include directory holding that release's UAPI
    headers (``linux/``, ``asm/``), or None when the kernel brings none.
    """

    kernel: Kernel
    image: Path
    modules: Path | None
    config: Path | None
    headers: Path | None

    @property
    def release(self) -> str:
        return self.kernel.release


@dataclass(frozen=True)
class KernelStatus:
    """One row of ``invoke kernels.list``: a series, what it resolves to, what is cached.

    ``release`` is None when the series could not be resolved (``problem`` says why);
    ``size`` is the entry's size on disk in bytes, 0 when not cached, the kept part of
    the release's own source (``source_size``, see :mod:`.source`) included.
    """

    series: str | None
    release: str | None
    packages: tuple[Package, ...]
    cached: bool
    size: int
    path: Path | None
    problem: str | None = None
    source_size: int = 0  # bytes of the release's own source kept beside it (0: none)
