"""One directory per kernel release, ready to boot and to build against.

``<cache>/kernels/<release>/`` holds::

    boot/vmlinux-<release>       the uncompressed ELF kernel (PVH entry: no decompression
                                 at boot), or boot/vmlinuz-<release> when it has none
    boot/config-<release>
    boot/System.map-<release>
    lib/modules/<release>/       the modules the boot and the samples need, depmod'ed;
                                 virtme-ng finds them by walking up from the image
    include/                     the release's UAPI headers (linux/, asm/, asm-generic/)
    manifest.json                written last: an entry without it is incomplete

An entry is built in a temporary directory beside it and renamed into place, under a
lock per release, so two runs at once download once and a crash leaves nothing behind
that could pass for an entry. :func:`prune` removes what no run will use again (older
releases of a series, indexes of series the catalog no longer has), never what a
holder of the release's lock is building or using.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from debian.debian_support import Version

from harness import paths
from harness.errors import CacheError, CommandError, KernelError
from harness.files import locked, write_atomic
from harness.kernels import image as image_mod, modules as modules_mod
from harness.kernels.apt import APT_DIR, HEADERS_PACKAGE, AptRoot
from harness.kernels.catalog import Series
from harness.kernels.model import Kernel, KernelEntry, Package
from harness.proc import Runner, require
from harness.progress import Listener, Note

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: The architecture whose asm/ headers are merged into include/.
ARCH_TRIPLET = "x86_64-linux-gnu"

#: Downloads the kernel's packages into a directory; returns each ``.deb`` by name.
Downloader = Callable[[Path], Mapping[str, Path]]


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records about one entry."""

    series: str | None
    release: str
    origin: str
    packages: tuple[Package, ...]
    image: str  # relative to the entry
    files: Mapping[str, int]  # relative path -> size in bytes
    modules: tuple[str, ...]
    created: str


def kernels_dir(cache: Path) -> Path:
    return cache / "kernels"


def entry_dir(cache: Path, release: str) -> Path:
    return kernels_dir(cache) / release


def module_copies(cache: Path, entry: Path) -> Path:
    """The directory of the decompressed module copies of the cache entry ``entry``."""
    return cache / paths.MODULE_COPIES / entry.resolve().relative_to("/")


def _lock_path(cache: Path, release: str) -> Path:
    return kernels_dir(cache) / ".locks" / f"{release}.lock"


def release_lock(cache: Path, release: str) -> Path:
    """The lock held while the entry of ``release`` (or what is kept beside it) is written."""
    return _lock_path(cache, release)


# --- reading and checking ------------------------------------------------------------


def read_manifest(entry: Path) -> Manifest | None:
    """The entry's manifest, or None when it is missing or not one this version wrote."""
    try:
        data = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format") != MANIFEST_FORMAT:
            return None
        kernel = data["kernel"]
        return Manifest(
            series=kernel.get("series"),
            release=kernel["release"],
            origin=kernel["origin"],
            packages=tuple(
                Package(p["name"], p["version"], p["sha256"], int(p.get("size", 0)))
                for p in data["packages"]
            ),
            image=data["image"],
            files={str(k): int(v) for k, v in data["files"].items()},
            modules=tuple(data.get("modules", ())),
            created=str(data.get("created", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def entry_problem(entry: Path, kernel: Kernel | None = None) -> str | None:
    """Why ``entry`` is not a complete entry (for ``kernel``), or None when it is."""
    if not entry.is_dir():
        return "not in the cache"
    manifest = read_manifest(entry)
    if manifest is None:
        return "no valid manifest (an interrupted or older fetch)"
    if manifest.release != entry.name:
        return f"the manifest is for {manifest.release}"
    if kernel is not None:
        want = {(p.name, p.version) for p in kernel.packages}
        have = {(p.name, p.version) for p in manifest.packages}
        if want != have:
            return "built from other package versions than the index now has"
    if manifest.image not in manifest.files:
        return "the manifest names no image"
    for rel, size in manifest.files.items():
        path = entry / rel
        try:
            actual = path.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} has {actual} bytes, the manifest says {size}"
    return None


def entry_of(entry: Path, manifest: Manifest, kernel: Kernel) -> KernelEntry:
    """The :class:`KernelEntry` of a complete cache entry."""
    release = manifest.release
    modules = entry / "lib" / "modules" / release
    config = entry / "boot" / f"config-{release}"
    headers = entry / "include"
    return KernelEntry(
        kernel=kernel,
        image=entry / manifest.image,
        modules=modules if modules.is_dir() else None,
        config=config if config.is_file() else None,
        headers=headers if headers.is_dir() else None,
    )


def kernel_of(manifest: Manifest) -> Kernel:
    """The :class:`Kernel` a manifest records (for entries listed without an index)."""
    return Kernel(
        spec=manifest.series or manifest.release,
        series=manifest.series,
        release=manifest.release,
        origin=manifest.origin,
        packages=manifest.packages,
    )


def cached_entries(cache: Path) -> list[tuple[Path, Manifest]]:
    """The complete entries in the cache, by release."""
    found = []
    root = kernels_dir(cache)
    if not root.is_dir():
        return []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = read_manifest(entry)
        if manifest is not None and entry_problem(entry) is None:
            found.append((entry, manifest))
    return found


def newest_entry(found: Sequence[tuple[Path, Manifest]]) -> tuple[Path, Manifest]:
    """The entry built from the highest Debian version of its kernel package."""
    return max(found, key=lambda item: Version(item[1].packages[0].version))


def disk_usage(path: Path) -> int:
    """Bytes the regular files under ``path`` take on disk: their allocated blocks, as
    ``du`` counts them (the holes of a sparse ``vmlinux`` take none)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_blocks * 512
    return total


# --- building -------------------------------------------------------------------------


def ensure_entry(
    kernel: Kernel,
    series: Series,
    cache: Path,
    download: Downloader,
    *,
    runner: Runner,
    progress: Listener | None = None,
) -> KernelEntry:
    """The cache entry of ``kernel``, built first when missing, incomplete or stale.

    A complete entry is found under the release's lock held shared, as every run that
    boots it holds it (:func:`in_use`): waiting for it exclusively made each run wait
    for every other run's VM of that release to finish (14 to 32 s seen). A build
    holds it exclusively throughout, so a second run for the same release waits and
    then finds the entry the first one built.
    """
    entry = entry_dir(cache, kernel.release)
    kernels_dir(cache).mkdir(parents=True, exist_ok=True)
    with locked(_lock_path(cache, kernel.release), shared=True):
        manifest = read_manifest(entry)
        if manifest is not None and entry_problem(entry, kernel) is None:
            log.info("%s: cached in %s", kernel.release, entry)
            return entry_of(entry, manifest, kernel)
    with locked(_lock_path(cache, kernel.release)):
        problem = entry_problem(entry, kernel)
        if problem is None:
            manifest = read_manifest(entry)
            assert manifest is not None
            log.info("%s: cached in %s", kernel.release, entry)
            return entry_of(entry, manifest, kernel)
        log.info("%s: %s; fetching", kernel.release, problem)
        _remove_leftovers(cache, kernel.release)
        _build(kernel, series, entry, download, runner=runner, progress=progress)
        manifest = read_manifest(entry)
        problem = entry_problem(entry, kernel)
        if manifest is None or problem is not None:
            raise CacheError(f"the entry just built in {entry} is not valid: {problem}")
        return entry_of(entry, manifest, kernel)


def _remove_leftovers(cache: Path, release: str) -> None:
    """Temporary directories of earlier runs for ``release`` (we hold its lock)."""
    for stale in kernels_dir(cache).glob(f".build-{release}-*"):
        log.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _build(
    kernel: Kernel,
    series: Series,
    entry: Path,
    download: Downloader,
    *,
    runner: Runner,
    progress: Listener | None,
) -> None:
    require("dpkg-deb", "dpkg")
    work = Path(tempfile.mkdtemp(prefix=f".build-{kernel.release}-", dir=entry.parent))
    try:
        debs = download(work / "debs")
        if progress is not None:
            progress(Note(f"{kernel.release}: extracting"))
        packages = _checked_packages(kernel, debs)
        root, headers_root = work / "root", work / "headers"
        for pkg in kernel.packages:
            target = headers_root if pkg.name == HEADERS_PACKAGE else root
            _extract(debs[pkg.name], target, runner)
            debs[pkg.name].unlink()  # keep the peak disk use down
        shutil.rmtree(work / "debs", ignore_errors=True)
        staged = work / "entry"
        image_rel, kept = assemble(series, kernel.release, root, headers_root, staged, runner)
        shutil.rmtree(root)
        shutil.rmtree(headers_root)
        write_manifest(staged, kernel, packages, image_rel, kept)
        _swap_in(staged, entry, work)
        if progress is not None:
            size = disk_usage(entry) / 1e6
            progress(Note(f"{kernel.release}: cached in {entry} ({size:.0f} MB)"))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"the disk holding {entry.parent} is full while caching {kernel.release}: "
                f"{exc}; free some space (an entry takes about 70 MB, and up to 600 MB "
                "while it is being built) or set HARNESS_CACHE_DIR to another disk"
            ) from exc
        raise CacheError(f"caching {kernel.release} in {entry} failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _checked_packages(kernel: Kernel, debs: Mapping[str, Path]) -> list[Package]:
    """The kernel's packages with the sha256 of each downloaded ``.deb``."""
    result = []
    for pkg in kernel.packages:
        deb = debs.get(pkg.name)
        if deb is None:
            raise KernelError(f"the download of {kernel.release} brought no {pkg.name}")
        digest = _sha256(deb)
        if pkg.sha256 and digest != pkg.sha256:
            raise KernelError(
                f"{deb.name} has sha256 {digest}, the signed index says {pkg.sha256}; "
                "run again with --refresh"
            )
        result.append(Package(pkg.name, pkg.version, digest, deb.stat().st_size))
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(deb: Path, target: Path, runner: Runner) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        runner.run(["dpkg-deb", "-x", str(deb), str(target)], timeout=600)
    except CommandError as exc:
        if "No space left" in exc.output:
            raise OSError(errno.ENOSPC, f"no space left extracting {deb.name}") from exc
        raise KernelError(f"extracting {deb.name} failed: {exc}") from exc


def assemble(
    series: Series,
    release: str,
    root: Path,
    headers_root: Path,
    staged: Path,
    runner: Runner,
) -> tuple[str, list[str]]:
    """Lay out an entry in ``staged`` from the extracted packages.

    Returns the image's path relative to ``staged`` and the names of the modules kept.
    """
    layout = series.layout(release)
    sources = {key: root / rel for key, rel in layout.items()}
    if not sources["modules"].exists():
        # Debian moved modules from /lib to /usr/lib during 6.x; a backport may differ
        # from the series' usual layout.
        other = _other_modules_dir(layout["modules"])
        if (root / other).is_dir():
            log.info("%s: modules in %s, not %s", release, other, layout["modules"])
            layout["modules"], sources["modules"] = other, root / other
    for key in ("image", "config", "modules"):
        if not sources[key].exists():
            raise KernelError(
                f"the packages of {release} have no {layout[key]}; the catalog's layout "
                f"for series {series.name} does not match what Debian ships now"
            )
    boot = staged / "boot"
    boot.mkdir(parents=True)
    vmlinux = boot / f"vmlinux-{release}"
    if image_mod.extract_vmlinux(sources["image"], vmlinux, runner=runner):
        image = vmlinux
    else:
        image = boot / f"vmlinuz-{release}"
        shutil.copyfile(sources["image"], image)
    shutil.copyfile(sources["config"], boot / f"config-{release}")
    if sources["system_map"].is_file():
        shutil.copyfile(sources["system_map"], boot / f"System.map-{release}")
    kept = modules_mod.trim_modules(sources["modules"], staged, release, runner=runner)
    merge_headers(headers_root / "usr" / "include", staged / "include")
    return str(image.relative_to(staged)), kept


def _other_modules_dir(rel: str) -> str:
    """``usr/lib/modules/...`` for ``lib/modules/...`` and the other way round."""
    return rel.removeprefix("usr/") if rel.startswith("usr/") else "usr/" + rel


def merge_headers(usr_include: Path, dest: Path) -> None:
    """UAPI headers with the x86-64 directory merged, so ``-I dest`` finds ``asm/``.

    ``linux-libc-dev`` keeps ``asm/`` under ``usr/include/<triplet>/`` (from 7.x as
    symlinks into ``usr/lib/linux``); the copy follows the links.
    """
    if not usr_include.is_dir():
        raise KernelError(f"{HEADERS_PACKAGE} has no usr/include ({usr_include})")
    dest.mkdir(parents=True)
    for item in sorted(usr_include.iterdir()):
        if "-linux-" in item.name:
            continue  # per-architecture directories; ours is merged below
        if item.is_dir():
            shutil.copytree(item, dest / item.name, symlinks=False)
        else:
            shutil.copyfile(item, dest / item.name)
    arch = usr_include / ARCH_TRIPLET
    if not (arch / "asm").is_dir():
        raise KernelError(f"{HEADERS_PACKAGE} has no {ARCH_TRIPLET}/asm headers")
    shutil.copytree(arch, dest, symlinks=False, dirs_exist_ok=True)


def write_manifest(
    staged: Path,
    kernel: Kernel,
    packages: Sequence[Package],
    image_rel: str,
    modules: Sequence[str],
) -> None:
    """Write ``manifest.json`` last, listing every file of the entry and its size."""
    files = {}
    for dirpath, _dirs, names in os.walk(staged):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files[str(path.relative_to(staged))] = path.stat().st_size
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "kernel": {"series": kernel.series, "release": kernel.release, "origin": kernel.origin},
        "packages": [
            {"name": p.name, "version": p.version, "sha256": p.sha256, "size": p.size}
            for p in packages
        ],
        "image": image_rel,
        "modules": list(modules),
        "files": dict(sorted(files.items())),
        "size": sum(files.values()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(staged / MANIFEST, json.dumps(document, indent=1) + "\n")


def _swap_in(staged: Path, entry: Path, work: Path) -> None:
    """Rename ``staged`` to ``entry``; an older entry there is moved into ``work`` first."""
    if entry.exists() or entry.is_symlink():
        entry.rename(work / "old")
    staged.rename(entry)


# --- pruning --------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """A directory :func:`prune` removes (or would), its size and why it goes."""

    path: Path
    size: int
    why: str


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` removed (or would), and what it left because it is in use."""

    removed: tuple[Removal, ...]
    in_use: tuple[Removal, ...]

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed)


def prune(cache: Path, keep_series: Collection[str], *, dry_run: bool = False) -> Pruned:
    """Remove what no run will use again from ``cache``.

    That is: entries of a release that is not the newest cached of its series,
    incomplete entries and the leftovers of interrupted fetches, and the apt state of
    series not in ``keep_series``. Each goes only if its lock can be taken at once (a
    run building it, or holding :func:`in_use`, keeps it). ``dry_run`` removes nothing
    and tells what would go.
    """
    removed, busy = [], []
    for removal, lock in _prune_plan(cache, keep_series):
        with locked(lock, blocking=False) as free:
            if not free:
                busy.append(removal)
                continue
            if not dry_run:
                log.info("removing %s: %s", removal.path, removal.why)
                shutil.rmtree(removal.path)
            removed.append(removal)
    return Pruned(tuple(removed), tuple(busy))


@contextlib.contextmanager
def in_use(entry: KernelEntry | Path) -> Iterator[None]:
    """Keep :func:`prune` away from a cache entry while a VM boots it (a shared lock)."""
    path = entry if isinstance(entry, Path) else entry.image.parent.parent
    with locked(_lock_path(path.parent.parent, path.name), shared=True):
        yield


def _prune_plan(cache: Path, keep_series: Collection[str]) -> list[tuple[Removal, Path]]:
    """Each directory to remove with the lock that must be free to remove it."""
    plan: list[tuple[Removal, Path]] = []

    def add(path: Path, why: str, lock: Path) -> None:
        plan.append((Removal(path, disk_usage(path), why), lock))

    root = kernels_dir(cache)
    complete: dict[str | None, list[tuple[Path, Manifest]]] = {}
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        if not path.is_dir() or path.name == ".locks":
            continue
        if path.name.startswith(".build-"):
            # .build-<release>-<random>: mkdtemp's random part has no dash.
            release = path.name.removeprefix(".build-").rsplit("-", 1)[0]
            add(path, "left by an interrupted fetch", _lock_path(cache, release))
            continue
        if path.name.startswith("."):
            continue
        manifest = read_manifest(path)
        problem = entry_problem(path)
        if manifest is None or problem is not None:
            add(path, f"incomplete: {problem}", _lock_path(cache, path.name))
        else:
            complete.setdefault(manifest.series, []).append((path, manifest))
    for series, found in complete.items():
        if series is None:
            continue  # not a series' entry: nothing to compare it with
        newest, newest_manifest = newest_entry(found)
        for path, _manifest in found:
            if path != newest:
                why = f"not the newest cached of series {series} ({newest_manifest.release} is)"
                add(path, why, _lock_path(cache, path.name))
    # The decompressed module copies of each entry that goes, and of entries gone.
    going = {removal.path.name for removal, _ in plan}
    copies = module_copies(cache, root)
    for path in sorted(copies.iterdir()) if copies.is_dir() else ():
        if path.name in going or not (root / path.name).is_dir():
            why = f"decompressed modules of {path.name}, which is no longer cached"
            add(path, why, _lock_path(cache, path.name))
    apt_dir = cache / APT_DIR
    for path in sorted(apt_dir.iterdir()) if apt_dir.is_dir() else ():
        if path.is_dir() and path.name not in keep_series:
            why = f"package index of series {path.name}, not in the catalog"
            add(path, why, AptRoot(path).lock)
    return plan
