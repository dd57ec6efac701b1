"""The part of a release's own source tree that its BPF samples need, kept beside its entry.

Debian ships each kernel's source as ``linux-source-<series>``: a ``.deb`` of 120 to 165 MB
holding ``usr/src/linux-source-<series>.tar.xz``, about 1.3 GB unpacked. The samples of
``samples/bpf`` need a few MB of it: their own files, the tree's libbpf
(``tools/lib/bpf``) and the headers it builds with (``tools/include``), the legacy
helpers header of the selftests, and the script that generates ``bpf_helper_defs.h``.

The package is fetched through the series' private apt state (:mod:`.apt`, signatures
and hashes checked), at the source version the kernel image was built from (that of
its ``linux-libc-dev``), streamed: the ``.deb``'s data tarball and the source tarball
inside it are read member by member and only what :func:`kept_path` selects is
written. The result goes to ``<entry>/source/`` through a temporary directory renamed
into place under the release's lock, so a cut-off fetch leaves nothing, and a
``manifest.json`` written last records the package and every kept file; a second run
finds it complete and downloads nothing. It goes with its entry when that is pruned.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import json
import logging
import lzma
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from debian.arfile import ArError, ArFile

from harness.errors import CacheError, KernelError
from harness.files import locked, write_atomic
from harness.kernels import apt
from harness.kernels.cache import disk_usage, release_lock
from harness.kernels.catalog import Series
from harness.kernels.model import KernelEntry
from harness.kernels.sources import parse_stanzas
from harness.proc import Runner, require
from harness.progress import Listener, Note

log = logging.getLogger(__name__)

SOURCE_DIR = "source"
#: Where a fetch stages its files, inside the entry, until it renames them into place.
STAGING_PREFIX = ".source-"
MANIFEST = "manifest.json"
PACKAGE = "linux-source-{series}"
#: The kept part must stay small: the issue's budget is 15 MB per release.
MAX_KEPT_BYTES = 15 * 1000 * 1000

#: What the kernel's samples need besides their own sources, relative to the tree's top.
SHARED = (
    "samples/bpf/sock_example.h",
    # bpf_legacy.h: load_byte() and friends, which the socket samples' kernel sides use;
    # gnu/stubs.h: an empty stand-in for glibc's, which wants a 32-bit stubs file for
    # -target bpf.
    "tools/testing/selftests/bpf/bpf_legacy.h",
    "tools/testing/selftests/bpf/gnu/stubs.h",
    # The tree's libbpf, built as a static library by the harness's own commands.
    "tools/lib/bpf/*.c",
    "tools/lib/bpf/*.h",
    # libbpf's headers (tools/include/linux, the tools' copy of the UAPI headers), and the
    # x86 ones they reach (tools/include/uapi/asm/errno.h includes tools/arch/x86's).
    "tools/include/*",
    "tools/arch/x86/include/*",
    # bpf_helper_defs.h is generated from the UAPI bpf.h by this script (its 5.10 name first).
    "scripts/bpf_helpers_doc.py",
    "scripts/bpf_doc.py",
)


@functools.cache
def kept_patterns() -> tuple[str, ...]:
    """What is kept: each kernel sample's own files (the names the samples' descriptors
    declare, :class:`harness.samples.Upstream`), then :data:`SHARED`."""
    from harness import samples  # the descriptors import the kernels package's users

    names = sorted(s.upstream.name for s in samples.discover().values() if s.upstream)
    own = (f"samples/bpf/{n}_{part}.c" for part in ("kern", "user") for n in names)
    return (*own, *SHARED)


@dataclass(frozen=True)
class SourceTree:
    """The kept part of one release's source tree: ``root`` is the tree's top."""

    release: str
    package: str
    version: str
    root: Path
    size: int

    def path(self, rel: str) -> Path:
        return self.root / rel


class SourceUnavailable(KernelError):
    """The release's source cannot be had here; the message says exactly why."""


def package_name(series: str) -> str:
    return PACKAGE.format(series=series)


def source_version(entry: KernelEntry) -> str:
    """The Debian source version the kernel was built from: its ``linux-libc-dev``'s.

    :func:`apt.select_kernel` takes the headers of exactly the image's source version.
    """
    for package in entry.kernel.packages:
        if package.name == apt.HEADERS_PACKAGE:
            return package.version
    raise SourceUnavailable(
        f"kernel {entry.release} records no {apt.HEADERS_PACKAGE}, so its source version is "
        "unknown; a kernel of your own has no Debian source package (test a series instead)"
    )


def kept_path(name: str, top: str) -> str | None:
    """The path under the tree's top of tarball member ``name`` if it is kept, else None.

    ``top`` is the tarball's top directory (``linux-source-6.1``); names that leave it,
    or climb with ``..``, are never kept.
    """
    path = PurePosixPath(name.removeprefix("./"))
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        return None
    if path.parts[0] != top:
        return None
    rel = PurePosixPath(*path.parts[1:]).as_posix()
    for pattern in kept_patterns():
        if pattern.endswith("/*") and rel.startswith(pattern[:-1]):
            return rel
        if rel.count("/") == pattern.count("/") and fnmatch.fnmatchcase(rel, pattern):
            return rel
    return None


def pick_package(show_output: str, series: Series, version: str) -> apt.IndexPackage:
    """The ``linux-source-<series>`` stanza of exactly ``version`` in ``apt-cache show`` output."""
    name = package_name(series.name)
    found = [apt.index_package(s) for s in parse_stanzas(show_output)]
    found = [p for p in found if p.name == name]
    suites = ", ".join(s.name for s in series.suites)
    if not found:
        raise SourceUnavailable(
            f"{name} is not in {suites}: the release's own samples cannot be built; "
            "test the harness's samples only (leave out --sample kernel:...)"
        )
    for package in found:
        if package.version == version:
            return package
    have = ", ".join(sorted({p.version for p in found}))
    raise SourceUnavailable(
        f"{suites} carry {name} {have}, not {version}, the source version of the kernel "
        "under test (the archive moved on); run again with --refresh to test the newer kernel"
    )


def extract(deb: Path, dest: Path, series: str) -> list[str]:
    """Write the kept members of ``deb``'s source tarball under ``dest``; their paths.

    Both tarballs are streamed (``r|*``): nothing but the kept files touches the disk.
    """
    top = f"linux-source-{series}"
    inner_name = f"usr/src/{top}.tar.xz"
    try:
        archive = ArFile(str(deb))
    except (ArError, OSError) as exc:
        raise KernelError(f"{deb.name} is not a Debian package ({exc}); run again") from exc
    data = next((m for m in archive.getnames() if m.startswith("data.tar")), None)
    if data is None:
        raise KernelError(f"{deb.name} has no data.tar member: not a Debian package")
    member_file: IO[bytes] = archive.getmember(data)  # type: ignore[assignment]
    try:
        with tarfile.open(fileobj=member_file, mode="r|*") as outer:
            for member in outer:
                if member.name.removeprefix("./") != inner_name:
                    continue
                inner_file = outer.extractfile(member)
                if inner_file is None:
                    break
                with tarfile.open(fileobj=inner_file, mode="r|*") as inner:
                    return _extract_kept(inner, dest, top)
    except (tarfile.TarError, EOFError, lzma.LZMAError) as exc:
        raise KernelError(f"{deb.name} is damaged: {exc}; run again to download it anew") from exc
    raise KernelError(f"{deb.name} holds no {inner_name}")


def _extract_kept(tar: tarfile.TarFile, dest: Path, top: str) -> list[str]:
    kept = []
    for member in tar:
        rel = kept_path(member.name, top)
        if rel is None or not member.isfile():
            continue
        source = tar.extractfile(member)
        if source is None:
            continue
        target = dest / top / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        kept.append(rel)
    return kept


def selection() -> str:
    """A digest of :func:`kept_patterns`: a tree kept by another selection is fetched again."""
    return hashlib.sha256("\n".join(kept_patterns()).encode()).hexdigest()[:16]


def read_tree(entry_dir: Path, release: str) -> SourceTree | None:
    """The complete kept tree beside ``entry_dir``, or None (missing, partial, altered,
    or kept by another selection of files)."""
    base = entry_dir / SOURCE_DIR
    try:
        data: dict[str, Any] = json.loads((base / MANIFEST).read_text())
        if data.get("selection") != selection():
            return None
        files = {str(k): int(v) for k, v in data["files"].items()}
        root = base / str(data["top"])
        for rel, size in files.items():
            if (root / rel).stat().st_size != size:
                return None
        return SourceTree(
            release, str(data["package"]), str(data["version"]), root, sum(files.values())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


Downloader = Callable[[apt.IndexPackage, Path], Path]


def ensure_tree(
    entry: KernelEntry,
    series: Series,
    cache: Path,
    *,
    runner: Runner,
    download: Downloader | None = None,
    progress: Listener | None = None,
) -> SourceTree:
    """The kept source tree of ``entry``'s release, fetched first when not there.

    ``download`` fetches one package into a directory (default: the series' private
    apt); tests pass their own.
    """
    version = source_version(entry)
    entry_dir = entry.image.parent.parent
    # A kept tree is only ever renamed into place whole: found complete, it can be used
    # without the release's lock, which booting runs hold shared for minutes.
    tree = read_tree(entry_dir, entry.release)
    if tree is not None and tree.version == version:
        return tree
    # The release's lock shared (as booting runs hold it: no waiting for their VMs) keeps
    # a prune from removing the entry meanwhile; the source's own lock makes two runs
    # fetch it once.
    with (
        locked(release_lock(cache, entry.release), shared=True),
        locked(release_lock(cache, entry.release).with_suffix(".source.lock")),
    ):
        tree = read_tree(entry_dir, entry.release)
        if tree is not None and tree.version == version:
            return tree
        for stale in entry_dir.glob(f"{STAGING_PREFIX}*"):
            log.info("removing %s, left by an interrupted fetch", stale)
            shutil.rmtree(stale, ignore_errors=True)
        root = apt.AptRoot.of(cache, series.name)
        if download is None:
            package = _find_package(root, series, version, runner)
            download = _apt_downloader(root, runner, progress, entry.kernel.spec)
        else:
            package = apt.IndexPackage(
                package_name(series.name), version, "linux", version, 0, "", ""
            )
        return _fetch(entry, series, package, entry_dir, download, progress)


def _find_package(
    root: apt.AptRoot, series: Series, version: str, runner: Runner
) -> apt.IndexPackage:
    require("apt-cache", "apt")
    with locked(root.lock):
        shown = runner.run(root.argv("apt-cache", "show", package_name(series.name)), check=False)
    return pick_package(shown.stdout, series, version)


def _apt_downloader(
    root: apt.AptRoot, runner: Runner, progress: Listener | None, kernel: str
) -> Downloader:
    def fetch(package: apt.IndexPackage, dest: Path) -> Path:
        with locked(root.lock):
            found = apt.download(root, [package], dest, runner, progress, kernel=kernel)
            return found[package.name]

    return fetch


def _fetch(
    entry: KernelEntry,
    series: Series,
    package: apt.IndexPackage,
    entry_dir: Path,
    download: Downloader,
    progress: Listener | None,
) -> SourceTree:
    work = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=entry_dir))
    try:
        deb = download(package, work / "debs")
        if progress is not None:
            progress(Note(f"{entry.release}: keeping what samples/bpf needs of {deb.name}"))
        staged = work / SOURCE_DIR
        kept = extract(deb, staged, series.name)
        deb.unlink()
        top = f"linux-source-{series.name}"
        _check_kept(kept, staged / top, entry.release)
        sizes = {rel: (staged / top / rel).stat().st_size for rel in sorted(kept)}
        document = {
            "package": package.name,
            "version": package.version,
            "sha256": package.sha256,
            "top": top,
            "selection": selection(),
            "files": sizes,
            "size": sum(sizes.values()),
        }
        write_atomic(staged / MANIFEST, json.dumps(document, indent=1) + "\n")
        target = entry_dir / SOURCE_DIR
        if target.exists():
            target.rename(work / "old")
        staged.rename(target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                f"the disk holding {entry_dir} is full while keeping the source of "
                f"{entry.release}: {exc}; free about 200 MB or set HARNESS_CACHE_DIR to "
                "another disk"
            ) from exc
        raise CacheError(
            f"keeping the source of {entry.release} in {entry_dir} failed: {exc}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tree = read_tree(entry_dir, entry.release)
    if tree is None:
        raise CacheError(f"the source just kept in {entry_dir / SOURCE_DIR} does not read back")
    if progress is not None:
        size = tree.size / 1e6
        progress(Note(f"{entry.release}: kept {size:.1f} MB of {package.name} {package.version}"))
    return tree


#: Files without which no sample of the tree can be built.
REQUIRED = (
    "samples/bpf/sock_example.h",
    "tools/lib/bpf/libbpf.h",
    "tools/include/uapi/linux/bpf.h",
)


def _check_kept(kept: Sequence[str], root: Path, release: str) -> None:
    missing = [rel for rel in REQUIRED if rel not in kept]
    if missing:
        raise SourceUnavailable(
            f"the source of {release} has no {', '.join(missing)}: its samples/bpf cannot be "
            "built by the harness"
        )
    size = disk_usage(root)
    if size > MAX_KEPT_BYTES:
        raise CacheError(
            f"the part of {release}'s source the samples need is {size / 1e6:.1f} MB, more than "
            f"{MAX_KEPT_BYTES / 1e6:.0f} MB: harness/kernels/source.py keeps too much"
        )
