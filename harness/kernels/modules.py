"""The module tree a kernel needs to boot under virtme-ng and run the sample, and no more.

A distribution kernel ships about 4000 modules. Booted with all of them, udev in the
guest spends about 6 s under TCG loading drivers for emulated hardware nobody uses
(ahci, i2c, kvm, crypto ...). Trimmed to what the boot needs, the same kernel boots
in about half the time, and its cache entry shrinks from about 400 MB to a few MB.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from harness.errors import CommandError, KernelConfigError, KernelError
from harness.proc import Runner, command_failed, require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WantedModule:
    """A module the boot or the sample uses, and whether it may be missing.

    A required module must be in the tree or built in. An optional one may be
    absent: it was merged into another (``fscache`` into ``netfs`` in 6.12), does not
    exist yet (``virtio_pci_modern_dev`` came in 5.14, ``virtio_pci_legacy_dev`` in
    5.16, ``netfs`` in 5.13), or serves a way of booting the harness does not use.
    """

    name: str
    required: bool
    purpose: str


WANTED_MODULES: tuple[WantedModule, ...] = (
    WantedModule("virtio_pci", True, "the PCI transport of every virtio device of the VM"),
    WantedModule("virtio_console", True, "virtme-ng's console and command ports"),
    WantedModule("9pnet", True, "the 9p protocol that shares the host's root"),
    WantedModule("9pnet_virtio", True, "the virtio transport of 9p"),
    WantedModule("9p", True, "the 9p filesystem virtme-ng mounts as the guest's root"),
    WantedModule("af_packet", True, "the packet socket the sample attaches to"),
    # vng (unlike virtme-run) mounts an overlay on /etc, /lib, /home, /opt, /srv,
    # /usr, /var and /tmp of every guest, --rw only on /tmp.
    WantedModule("overlay", True, "overlayfs, which vng mounts over the guest's directories"),
    # Dependencies of the above; listed so that their absence is explained, not fatal.
    WantedModule("virtio", False, "the virtio core"),
    WantedModule("virtio_ring", False, "virtio's rings"),
    WantedModule("virtio_pci_modern_dev", False, "virtio-pci's modern device (5.14+)"),
    WantedModule("virtio_pci_legacy_dev", False, "virtio-pci's legacy device (5.16+)"),
    # UNIX sockets, which udev needs, are a plain built-in option from 6.11 on, so
    # they appear in no module list there; the config check requires CONFIG_UNIX.
    WantedModule("unix", False, "UNIX sockets, which udev in the guest needs"),
    WantedModule("netfs", False, "the network filesystem library 9p uses (5.13+)"),
    WantedModule("fscache", False, "the file cache 9p uses (inside netfs from 6.12)"),
    # What virtme-ng asks for when it boots another way than the harness does.
    WantedModule("virtio_mmio", False, "virtio over MMIO (virtme-ng's microvm machine)"),
    WantedModule("fuse", False, "FUSE, under virtiofs"),
    WantedModule("virtiofs", False, "virtiofs, virtme-ng's root when virtiofsd exists"),
)

#: What a virtme-ng boot with a 9p root and the sample need (names as in modules.dep).
BOOT_MODULES: tuple[str, ...] = tuple(m.name for m in WANTED_MODULES)

#: Files of a module directory that depmod reads (besides the modules themselves).
_INDEX_INPUTS = ("modules.builtin", "modules.builtin.modinfo", "modules.order")
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str | Path) -> str:
    """The module name of a file name: ``kernel/net/9p/9pnet-virtio.ko.xz`` -> ``9pnet_virtio``."""
    base = os.path.basename(str(path))
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def is_module_file(path: Path) -> bool:
    return path.name.endswith(_MODULE_SUFFIXES)


def index_modules(moddir: Path) -> dict[str, Path]:
    """Every module file under ``moddir``, by module name (the first one sorted wins)."""
    found: dict[str, Path] = {}
    for path in sorted(moddir.rglob("*.ko*")):
        if is_module_file(path) and path.is_file():
            found.setdefault(module_name(path), path)
    return found


def parse_builtin(text: str) -> set[str]:
    """The module names listed in a ``modules.builtin`` file."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def builtin_modules(moddir: Path) -> set[str]:
    path = moddir / "modules.builtin"
    if not path.is_file():
        return set()
    return parse_builtin(path.read_text(encoding="utf-8", errors="replace"))


def parse_modinfo(blob: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section's NUL-separated ``key=value`` strings, by key."""
    info: dict[str, list[str]] = {}
    for item in blob.split(b"\0"):
        key, sep, value = item.decode("utf-8", errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_dependencies(info: dict[str, list[str]]) -> list[str]:
    """The modules a module cannot load without (its ``depends=``)."""
    names = [n for value in info.get("depends", []) for n in value.split(",") if n]
    return [n.replace("-", "_") for n in names]


def soft_dependencies(info: dict[str, list[str]]) -> list[str]:
    """The modules modprobe loads along with a module (``softdep=pre: a post: b``).

    They may be absent or built in under another name, so they are kept only where
    the tree has them.
    """
    names = [w for value in info.get("softdep", []) for w in value.split() if not w.endswith(":")]
    return [n.replace("-", "_") for n in names]


def _module_bytes(path: Path, runner: Runner) -> bytes:
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        # Python 3.11 has no zstd module.
        require("zstd", "zstd")
        with tempfile.TemporaryDirectory(prefix="harness-ko-") as scratch:
            out = Path(scratch) / "module.ko"
            runner.run(["zstd", "-d", "-q", "-f", str(path), "-o", str(out)])
            return out.read_bytes()
    return path.read_bytes()


def read_modinfo(path: Path, *, runner: Runner) -> dict[str, list[str]]:
    """The ``.modinfo`` of module file ``path`` (plain or compressed)."""
    # pyelftools here, not at the top: a run of cached kernels reads no module.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(BytesIO(_module_bytes(path, runner)))
        section = elf.get_section_by_name(".modinfo")
    except (ELFError, lzma.LZMAError, OSError, EOFError) as exc:
        raise KernelError(
            f"cannot read the module {path} ({exc}); the package may be damaged: "
            "fetch the kernel again"
        ) from exc
    return {} if section is None else parse_modinfo(section.data())


def dependency_closure(
    wanted: Iterable[str],
    available: dict[str, Path],
    builtin: set[str],
    *,
    runner: Runner,
) -> dict[str, Path]:
    """The wanted modules found in ``available`` and everything they depend on."""
    keep: dict[str, Path] = {}
    pending = [n for n in wanted if n in available]
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep[name] = available[name]
        info = read_modinfo(available[name], runner=runner)
        pending += [soft for soft in soft_dependencies(info) if soft in available]
        for dep in module_dependencies(info):
            if dep in available:
                pending.append(dep)
            elif dep not in builtin:
                raise KernelError(
                    f"module {name} ({available[name]}) depends on {dep}, which is "
                    "neither in the module tree nor built in; the package may be "
                    "incomplete: fetch the kernel again"
                )
    return keep


def missing_required(available: Iterable[str], builtin: set[str]) -> list[WantedModule]:
    present = set(available) | builtin
    return [m for m in WANTED_MODULES if m.required and m.name not in present]


@contextlib.contextmanager
def _depmod_base(moddir: Path, release: str) -> Iterator[Path]:
    """A base directory in which ``moddir`` appears as ``lib/modules/<release>``.

    It also appears as ``usr/lib/modules/<release>``: kmod builds differ in which of
    the two ``depmod -b`` searches (Debian 12's kmod 30 looks in ``lib/``, builds
    configured for a merged /usr in ``usr/lib/``).
    """
    with tempfile.TemporaryDirectory(prefix="harness-depmod-") as scratch:
        base = Path(scratch)
        (base / "usr" / "lib" / "modules").mkdir(parents=True)
        (base / "usr" / "lib" / "modules" / release).symlink_to(moddir.resolve())
        (base / "lib").symlink_to(Path("usr") / "lib")
        yield base


def run_depmod(moddir: Path, release: str, *, runner: Runner) -> None:
    """Write ``modules.dep`` and the other indexes modprobe reads into ``moddir``."""
    require("depmod", "kmod")
    with _depmod_base(moddir, release) as base:
        result = runner.run(["depmod", "-b", str(base), release], check=False)
    if result.returncode != 0:
        raise command_failed(result, f"depmod on the module tree {moddir}")
    if not (moddir / "modules.dep").is_file():
        raise CommandError(
            f"depmod wrote no modules.dep into {moddir}; check that the kmod package "
            "of this host works (depmod --version)",
            argv=result.argv,
        )


def trim_modules(full_moddir: Path, dest_root: Path, release: str, *, runner: Runner) -> list[str]:
    """Copy the modules the boot needs from ``full_moddir`` into ``dest_root``.

    ``full_moddir`` is the ``lib/modules/<release>`` (or ``usr/lib/modules/<release>``)
    of an extracted package, without ``modules.dep``. The modules of
    :data:`BOOT_MODULES` and their dependencies, as they are (compressed or not), and
    the files depmod reads go to ``dest_root/lib/modules/<release>``, where virtme-ng
    looks for them beside ``dest_root/boot/``; ``depmod`` then indexes them.
    Returns the names of the modules kept.

    Dependencies come from each kept module's own ``.modinfo`` rather than from a
    depmod run over the whole package: that reads (and decompresses) only the two
    dozen modules kept instead of all 4000, and needs no copy of the full tree.
    """
    require("depmod", "kmod")
    if not full_moddir.is_dir():
        raise KernelError(
            f"{full_moddir} is not a directory; expected the lib/modules/{release} "
            "directory of an extracted kernel package"
        )
    available = index_modules(full_moddir)
    builtin = builtin_modules(full_moddir)
    missing = missing_required(available, builtin)
    if missing:
        listed = "; ".join(f"{m.name} ({m.purpose})" for m in missing)
        raise KernelConfigError(
            f"kernel {release} lacks modules the boot needs, neither in {full_moddir} "
            f"nor built in: {listed}; use a kernel with these built in or as modules "
            "(for Debian, the generic amd64 flavour, not cloud-amd64)"
        )
    for module in WANTED_MODULES:
        if module.name not in available and module.name not in builtin:
            log.debug("%s: no module %s (%s)", release, module.name, module.purpose)
    keep = dependency_closure(BOOT_MODULES, available, builtin, runner=runner)

    dest = dest_root / "lib" / "modules" / release
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=dest.parent))
    try:
        for path in keep.values():
            target = staging / path.relative_to(full_moddir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        for name in _INDEX_INPUTS:
            if (full_moddir / name).is_file():
                shutil.copy2(full_moddir / name, staging / name)
        run_depmod(staging, release, runner=runner)
        staging.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("%s: kept %d modules: %s", release, len(keep), " ".join(sorted(keep)))
    return sorted(keep)


def modules_in_tree(moddir: Path) -> set[str]:
    """The names of the modules present in ``moddir`` (files, not built-ins)."""
    return set(index_modules(moddir))
