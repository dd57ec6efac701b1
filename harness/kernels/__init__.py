"""Kernels: from a name (``6.1``) or a path to an entry virtme-ng can boot.

The public API::

    options = KernelOptions(cache=cache_dir())
    expand_specs("5.10,6.12", options)   # -> ["5.10", "6.12"]
    entry = prepare("6.1", options)     # resolve, fetch and cache if needed, check config
    list_kernels(options)               # what is known, resolved and cached

A series resolves through apt with a private configuration (:mod:`.apt`) against the
suites the catalog names (:mod:`.catalog`), on the mirrors of the host's apt sources or
explicit ones (:mod:`.sources`); the packages are turned into a cache entry
(:mod:`.cache`). A path is the user's own kernel (:mod:`.local`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import files
from harness.errors import KernelError, MirrorError, UnknownSeriesError
from harness.kernels import apt, cache, kconfig, local, source as kernel_source
from harness.kernels.catalog import Series, load_catalog
from harness.kernels.model import Kernel, KernelEntry, KernelStatus, Package
from harness.kernels.sources import HOST_APT_DIR, Mirrors, choose_mirrors
from harness.paths import CATALOG_PATH, cache_dir
from harness.proc import Runner, SubprocessRunner
from harness.progress import Listener, Note

log = logging.getLogger(__name__)

__all__ = [
    "Kernel",
    "KernelEntry",
    "KernelOptions",
    "KernelStatus",
    "Package",
    "catalog_series",
    "default_series",
    "expand_specs",
    "is_path_spec",
    "list_kernels",
    "prepare",
    "prune",
    "resolve",
    "source_tree",
]


@dataclass(frozen=True)
class KernelOptions:
    """Where kernels come from and where they are kept.

    Each mirror: the option, else its environment variable (``HARNESS_MIRROR``,
    ``HARNESS_SECURITY_MIRROR``, ``HARNESS_SNAPSHOT_MIRROR``), else the host's apt
    sources. ``snapshot_mirror`` is the snapshot archive's base URL (the part before
    ``/archive/debian/...``).
    """

    cache: Path = field(default_factory=cache_dir)
    mirror: str | None = None
    security_mirror: str | None = None
    snapshot_mirror: str | None = None
    refresh: bool = False
    apt_dir: Path = HOST_APT_DIR
    catalog: Path = CATALOG_PATH

    def mirrors(self) -> Mirrors:
        return choose_mirrors(
            mirror=self.mirror,
            security_mirror=self.security_mirror,
            snapshot_mirror=self.snapshot_mirror,
            apt_dir=self.apt_dir,
        )


def _catalog(options: KernelOptions | None = None) -> dict[str, Series]:
    return load_catalog(options.catalog if options else CATALOG_PATH)


def catalog_series(options: KernelOptions | None = None) -> list[str]:
    """Every series the catalog knows, in catalog order."""
    return list(_catalog(options))


def is_path_spec(spec: str) -> bool:
    """True when ``spec`` names a file or directory rather than a series."""
    return os.sep in spec or spec.startswith(("~", ".")) or os.path.exists(spec)


def default_series(options: KernelOptions) -> list[str]:
    """The catalog's series whose archives answer from here (or that were indexed or
    cached before, so that a machine gone offline still tests what it has)."""
    mirrors = options.mirrors()
    answers: dict[str, str | None] = {}
    chosen = []
    for name, series in _catalog(options).items():
        try:
            sources = apt.sources_for(series, mirrors)
        except MirrorError as exc:
            log.info("leaving out series %s: %s", name, exc)
            continue
        for source in sources:
            if source.release_url not in answers:
                answers[source.release_url] = apt.probe(source.release_url)
        problems = [
            f"{s.release_url}: {answers[s.release_url]}" for s in sources if answers[s.release_url]
        ]
        if not problems:
            chosen.append(name)
        elif apt.AptRoot.of(options.cache, name).has_index() or _newest_cached(
            name, series, options
        ):
            log.warning(
                "series %s: %s; using what was downloaded before", name, "; ".join(problems)
            )
            chosen.append(name)
        else:
            log.warning(
                "leaving out series %s: its archive is not reachable (%s); name a reachable "
                "copy with HARNESS_MIRROR, HARNESS_SECURITY_MIRROR or HARNESS_SNAPSHOT_MIRROR "
                "to include it",
                name,
                "; ".join(problems),
            )
    return chosen


def expand_specs(text: str, options: KernelOptions) -> list[str]:
    """The kernels named by a ``--kernel`` value: series and paths, comma-separated.

    ``""`` or ``"all"`` is every series reachable from here; paths are kept as given.
    """
    text = text.strip()
    if text in ("", "all"):
        chosen = default_series(options)
        if not chosen:
            raise MirrorError(
                "no kernel series is reachable from here: the Debian archives of the "
                "host's apt sources do not answer; set HARNESS_MIRROR (or --mirror) to a "
                "reachable mirror, or give your own kernel with --kernel PATH"
            )
        return chosen
    known = _catalog(options)
    specs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in known or is_path_spec(part):
            specs.append(part)
        else:
            raise _unknown(part, known)
    return list(dict.fromkeys(specs))


def _unknown(spec: str, known: dict[str, Series]) -> UnknownSeriesError:
    return UnknownSeriesError(
        f"no kernel series {spec!r} in the catalog (available: {', '.join(known)}); "
        "give a path to your own image with --kernel PATH"
    )


def _series(spec: str, options: KernelOptions) -> Series:
    known = _catalog(options)
    if spec not in known:
        raise _unknown(spec, known)
    return known[spec]


def _resolve_series(series: Series, options: KernelOptions, runner: Runner) -> apt.Resolved:
    sources = apt.sources_for(series, options.mirrors())
    root = apt.AptRoot.of(options.cache, series.name)
    with files.locked(root.lock):
        apt.update_index(root, series, sources, runner, refresh=options.refresh)
        return apt.query(root, series, runner)


def _kernel(spec: str, series: Series, resolved: apt.Resolved) -> Kernel:
    return Kernel(
        spec=spec,
        series=series.name,
        release=resolved.release,
        origin=series.origin,
        packages=tuple(Package(p.name, p.version, p.sha256, p.size) for p in resolved.packages),
    )


def resolve(spec: str, options: KernelOptions, *, runner: Runner | None = None) -> Kernel:
    """The concrete kernel ``spec`` names now: the newest of a series in its suites, or
    the user's own kernel at a path."""
    runner = runner or SubprocessRunner()
    if _is_local(spec, options):
        return local.entry_from_path(Path(spec).expanduser(), runner).kernel
    series = _series(spec, options)
    return _kernel(spec, series, _resolve_series(series, options, runner))


def _is_local(spec: str, options: KernelOptions) -> bool:
    return is_path_spec(spec) and spec not in _catalog(options)


def prepare(
    spec: str,
    options: KernelOptions,
    *,
    runner: Runner | None = None,
    progress: Listener | None = None,
) -> KernelEntry:
    """A kernel ready to boot: resolved, fetched and cached if needed, config checked.

    When the archive cannot be reached and no index was downloaded before, the newest
    entry of the series already in the cache is used (with a warning).
    """
    runner = runner or SubprocessRunner()
    if _is_local(spec, options):
        entry = local.entry_from_path(Path(spec).expanduser(), runner)
    else:
        series = _series(spec, options)
        try:
            resolved = _resolve_series(series, options, runner)
        except MirrorError as exc:
            cached = _newest_cached(spec, series, options)
            if cached is None:
                raise
            log.warning("%s; using %s from the cache", exc, cached.release)
            entry = cached
        else:
            kernel = _kernel(spec, series, resolved)
            root = apt.AptRoot.of(options.cache, series.name)

            def download(dest: Path) -> dict[str, Path]:
                with files.locked(root.lock):
                    return apt.download(
                        root, resolved.packages, dest, runner, progress, kernel=spec
                    )

            fetching = cache.entry_problem(cache.entry_dir(options.cache, kernel.release), kernel)
            entry = cache.ensure_entry(
                kernel, series, options.cache, download, runner=runner, progress=progress
            )
            if fetching:
                # A new release makes the series' older entries dead weight.
                trim(options, progress=progress)
    kconfig.check_entry(entry)
    return entry


def prune(options: KernelOptions, *, dry_run: bool = False) -> cache.Pruned:
    """Remove from the cache what no run will use again (see :func:`cache.prune`):
    releases that are not the newest cached of their series, and the package indexes
    of series the catalog does not have."""
    return cache.prune(options.cache, catalog_series(options), dry_run=dry_run)


def trim(options: KernelOptions, *, progress: Listener | None = None) -> cache.Pruned:
    """:func:`prune`, after a fetch; a failure to remove is a warning, not an error."""
    try:
        pruned = prune(options)
    except OSError as exc:
        log.warning("could not trim the kernel cache %s: %s", options.cache, exc)
        return cache.Pruned((), ())
    for removal in pruned.removed:
        line = f"removed {removal.path} ({removal.size / 1e6:.0f} MB): {removal.why}"
        if progress is not None:
            progress(Note(line))
        else:
            log.info("%s", line)
    return pruned


def _newest_cached(spec: str, series: Series, options: KernelOptions) -> KernelEntry | None:
    """The complete cache entry of ``series`` built from the newest packages, if any."""
    found = [(e, m) for e, m in cache.cached_entries(options.cache) if m.series == series.name]
    if not found:
        return None

    path, manifest = cache.newest_entry(found)
    kernel = cache.kernel_of(manifest)
    return cache.entry_of(path, manifest, replace(kernel, spec=spec))


def _source_size(entry: Path) -> int:
    tree = kernel_source.read_tree(entry, entry.name)
    return tree.size if tree else 0


def source_tree(
    entry: KernelEntry,
    options: KernelOptions,
    *,
    runner: Runner | None = None,
    progress: Listener | None = None,
) -> kernel_source.SourceTree:
    """The part of ``entry``'s own source tree its BPF samples need, fetched once.

    A :class:`kernel_source.SourceUnavailable` says why there is none (a kernel of your own,
    a source version the suites no longer carry).
    """
    series_name = entry.kernel.series
    if entry.kernel.origin == "local" or series_name is None:
        raise kernel_source.SourceUnavailable(
            f"{entry.release} is a kernel of your own: the harness fetches only the source of "
            "a catalog series (Debian's linux-source package); test a series for this"
        )
    series = _series(series_name, options)
    return kernel_source.ensure_tree(
        entry, series, options.cache, runner=runner or SubprocessRunner(), progress=progress
    )


def list_kernels(options: KernelOptions, *, runner: Runner | None = None) -> list[KernelStatus]:
    """Each catalog series with what it resolves to and whether that is cached, then any
    other cached entries (older releases, a series no longer resolvable)."""
    runner = runner or SubprocessRunner()
    rows: list[KernelStatus] = []
    shown: set[str] = set()
    for name, series in _catalog(options).items():
        try:
            kernel = _kernel(name, series, _resolve_series(series, options, runner))
        except KernelError as exc:
            rows.append(KernelStatus(name, None, (), False, 0, None, str(exc)))
            continue
        entry = cache.entry_dir(options.cache, kernel.release)
        problem = cache.entry_problem(entry, kernel)
        manifest = cache.read_manifest(entry) if problem is None else None
        packages = manifest.packages if manifest else kernel.packages
        size = cache.disk_usage(entry) if manifest else 0
        rows.append(
            KernelStatus(
                name,
                kernel.release,
                packages,
                manifest is not None,
                size,
                entry if manifest else None,
                None if manifest else problem,
                _source_size(entry),
            )
        )
        shown.add(kernel.release)
    for entry, manifest in cache.cached_entries(options.cache):
        if manifest.release in shown:
            continue
        rows.append(
            KernelStatus(
                manifest.series,
                manifest.release,
                manifest.packages,
                True,
                cache.disk_usage(entry),
                entry,
                "cached; not the newest of its series",
                _source_size(entry),
            )
        )
    return rows
