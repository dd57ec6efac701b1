"""apt with a private configuration: resolve a series to packages, download them.

Each series gets its own apt state under ``<cache>/apt/<series>/``: a sources list of
just the suites the catalog names, the downloaded index, an empty dpkg status, an
archives directory and apt-cache's answers about the index (asked again when it
changes). The host's apt state is never read or written beyond its configuration (a
proxy set there still applies), and no root is needed. The hooks the
host's configuration may attach to ``apt-get update`` (cleaning the system's caches,
notifying PackageKit) are cleared. Signatures are checked against Debian's archive
keyring; ``apt-get download`` checks each ``.deb`` against the signed index.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import files
from harness.errors import CommandError, KernelError, MirrorError, ToolMissingError
from harness.kernels.catalog import Series, Suite
from harness.kernels.sources import HOST_APT_DIR, Mirrors, parse_stanzas
from harness.proc import Runner, require
from harness.progress import Listener, Transfer

log = logging.getLogger(__name__)

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEYRING_PACKAGE = "debian-archive-keyring"
#: The index is downloaded again when older than this.
INDEX_MAX_AGE = 24 * 3600.0
#: How long a reachability probe of an archive may take.
PROBE_TIMEOUT = 5.0
#: apt-get update / download time limits (large kernels on a slow link take minutes).
UPDATE_TIMEOUT = 600.0
DOWNLOAD_TIMEOUT = 3600.0
HEADERS_PACKAGE = "linux-libc-dev"


@dataclass(frozen=True)
class AptSource:
    """One line of the private sources list."""

    uri: str
    suite: str
    check_valid_until: bool = True

    def line(self, keyring: Path) -> str:
        options = [f"signed-by={keyring}", "target=Packages"]
        if not self.check_valid_until:
            options.append("check-valid-until=no")
        return f"deb [{' '.join(options)}] {self.uri} {self.suite} main"

    @property
    def release_url(self) -> str:
        return f"{self.uri}/dists/{self.suite}/InRelease"


@dataclass(frozen=True)
class IndexPackage:
    """One version of one package, as the signed index lists it."""

    name: str
    version: str
    source: str
    source_version: str
    size: int
    sha256: str
    filename: str


@dataclass(frozen=True)
class Resolved:
    """A series resolved against the index: the kernel's packages and its headers."""

    series: str
    version: str
    release: str
    kernel_packages: tuple[IndexPackage, ...]
    headers: IndexPackage

    @property
    def packages(self) -> tuple[IndexPackage, ...]:
        return (*self.kernel_packages, self.headers)


# --- parsing apt-cache output ---------------------------------------------------------


_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^)]+)\))?$")
_BUILT_USING_LINUX = re.compile(r"(?:^|,)\s*linux\s+\(=\s*(?P<version>[^)\s]+)\)")


def index_package(stanza: Mapping[str, str]) -> IndexPackage:
    """An :class:`IndexPackage` from one stanza.

    The source version is that of the ``linux`` source package the binary was built
    from: a signed image names ``linux-signed-amd64`` as its source and ``linux`` in
    ``Built-Using``.
    """
    version = stanza.get("Version", "")
    source_field = stanza.get("Source", stanza.get("Package", ""))
    match = _SOURCE.match(source_field)
    source = match.group("name") if match else source_field
    source_version = (match.group("version") if match else None) or version
    built = _BUILT_USING_LINUX.search(stanza.get("Built-Using", ""))
    if source != "linux" and built:
        source, source_version = "linux", built.group("version")
    return IndexPackage(
        name=stanza.get("Package", ""),
        version=version,
        source=source,
        source_version=source_version,
        size=int(stanza.get("Size", "0") or 0),
        sha256=stanza.get("SHA256", ""),
        filename=stanza.get("Filename", ""),
    )


def newest(packages: Sequence[IndexPackage]) -> IndexPackage:
    """The package with the highest Debian version (the first seen among equals)."""
    from debian.debian_support import Version  # here: see sources.parse_stanzas

    return max(packages, key=lambda pkg: Version(pkg.version))


def select_kernel(
    series: Series, names: Sequence[str], show: Callable[[Sequence[str]], str]
) -> Resolved:
    """The newest kernel of ``series`` among the package ``names`` the index has.

    ``show`` returns ``apt-cache show`` output for some package names; it is the seam
    tests answer from recorded output.
    """
    pattern = series.version_regex()
    matching = sorted(n for n in names if pattern.match(n))
    if not matching:
        raise KernelError(
            f"no {series.packages[0].format(version=series.name + '.*')} package in "
            f"{_suite_names(series.suites)}; the series may have left these suites: "
            "update its suites in kernels/catalog.toml, or run again with --refresh"
        )
    stanzas = [index_package(s) for s in parse_stanzas(show(matching))]
    images = [p for p in stanzas if p.name in matching]
    if not images:
        raise KernelError(f"apt-cache show gave no stanza for {', '.join(matching)}")
    image = newest(images)
    match = pattern.match(image.name)
    assert match is not None
    version = match.group("version")
    names_needed = series.package_names(version)
    rest = [n for n in names_needed if n != image.name]
    kernel_packages = [image]
    if rest:
        others = [index_package(s) for s in parse_stanzas(show(rest))]
        for name in rest:
            same = [p for p in others if p.name == name and p.version == image.version]
            if not same:
                raise KernelError(
                    f"{image.name} {image.version} needs {name} of the same version, "
                    f"which the index of {_suite_names(series.suites)} does not have"
                )
            kernel_packages.append(same[0])
    linux_built = next((p for p in kernel_packages if p.source == "linux"), image)
    source_version = linux_built.source_version
    headers = [
        p
        for p in (index_package(s) for s in parse_stanzas(show([HEADERS_PACKAGE])))
        if p.name == HEADERS_PACKAGE and p.version == source_version
    ]
    if not headers:
        raise KernelError(
            f"no {HEADERS_PACKAGE} {source_version} (the source version of {image.name}) "
            f"in {_suite_names(series.suites)}; run again with --refresh, the index "
            "may have changed between two uploads"
        )
    return Resolved(
        series=series.name,
        version=version,
        release=series.release(version),
        kernel_packages=tuple(kernel_packages),
        headers=headers[0],
    )


def _suite_names(suites: Sequence[Suite]) -> str:
    return ", ".join(s.name for s in suites)


# --- the private apt state ------------------------------------------------------------


def sources_for(series: Series, mirrors: Mirrors) -> tuple[AptSource, ...]:
    """The sources list of ``series``; a :class:`MirrorError` if an archive is unknown."""
    result = []
    for suite in series.suites:
        if suite.archive == "snapshot":
            if not mirrors.snapshot:
                raise MirrorError(
                    f"series {series.name} comes from the Debian snapshot archive, which is "
                    "not configured: set HARNESS_SNAPSHOT_MIRROR to its base URL, or give "
                    "your own kernel with --kernel PATH"
                )
            uri = f"{mirrors.snapshot}/archive/debian/{series.timestamp}"
            result.append(AptSource(uri, suite.name, check_valid_until=False))
        else:
            uri_or_none = mirrors.main if suite.archive == "main" else mirrors.security
            if not uri_or_none:
                var = "HARNESS_MIRROR" if suite.archive == "main" else "HARNESS_SECURITY_MIRROR"
                raise MirrorError(
                    f"no Debian {suite.archive} archive in the host's apt sources for "
                    f"{suite.name}: set {var} (or --mirror) to the archive's URL"
                )
            result.append(AptSource(uri_or_none, suite.name))
    return tuple(result)


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when ``url`` answers, else why not (one short HTTP HEAD request)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, ValueError) as exc:
        return str(exc)


#: The directory of the cache that holds each series' private apt state.
APT_DIR = "apt"


@dataclass(frozen=True)
class AptRoot:
    """The private apt state of one series, under ``<cache>/apt/<series>``."""

    root: Path

    @classmethod
    def of(cls, cache: Path, series: str) -> AptRoot:
        return cls(cache / APT_DIR / series)

    @property
    def lock(self) -> Path:
        """Held while apt runs on this state (apt's own locks are per process)."""
        return self.root / "lock"

    @property
    def conf(self) -> Path:
        return self.root / "apt.conf"

    @property
    def sources_list(self) -> Path:
        return self.root / "sources.list"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def stamp(self) -> Path:
        """Written after a successful update; holds the sources list it was made from."""
        return self.root / "updated"

    def argv(self, program: str, *args: str) -> list[str]:
        return [program, "-c", str(self.conf), *args]

    def has_index(self) -> bool:
        return self.stamp.is_file() and any(self.lists.glob("*Packages*"))


def config_text(root: AptRoot) -> str:
    """The private apt configuration, read after the host's (``apt-get -c``)."""
    r = root.root
    settings = {
        "Dir::Etc::sourcelist": str(root.sources_list),
        "Dir::Etc::sourceparts": "-",
        "Dir::Etc::preferences": str(r / "preferences"),
        "Dir::Etc::preferencesparts": str(r / "preferences.d"),
        "Dir::State": str(r),
        "Dir::State::lists": str(root.lists),
        "Dir::State::status": str(r / "status"),
        "Dir::State::extended_states": str(r / "extended_states"),
        "Dir::Cache": str(r / "cache"),
        "Dir::Cache::archives": str(r / "archives"),
        # Binary caches make each query fast; all queries run under the root's lock.
        "Dir::Cache::pkgcache": str(r / "cache" / "pkgcache.bin"),
        "Dir::Cache::srcpkgcache": "",
        "Dir::Log": str(r / "log"),
        "APT::Architecture": "amd64",
        "Acquire::Languages": "none",
    }
    lines = ["// Private apt configuration of the kernel cache; rewritten on every run."]
    lines += [f'{key} "{value}";' for key, value in settings.items()]
    lines.append('APT::Architectures { "amd64"; };')
    if os.geteuid() == 0:
        # As root apt would drop to the _apt user, who cannot enter a cache under /root.
        lines.append('APT::Sandbox::User "root";')
    # Hooks of the host's configuration act on the host's apt state: not ours to run.
    for hook in (
        "APT::Update::Pre-Invoke",
        "APT::Update::Post-Invoke",
        "APT::Update::Post-Invoke-Success",
        "DPkg::Pre-Invoke",
        "DPkg::Post-Invoke",
        "DPkg::Pre-Install-Pkgs",
    ):
        lines.append(f"#clear {hook};")
    return "\n".join(lines) + "\n"


def write_config(root: AptRoot, sources: Sequence[AptSource], keyring: Path = KEYRING) -> str:
    """Create the private apt tree; return the sources list text."""
    if not keyring.is_file():
        raise ToolMissingError(
            f"Debian's archive keyring {keyring} is missing; install the Debian package "
            f"{KEYRING_PACKAGE} (apt-get install {KEYRING_PACKAGE})"
        )
    for sub in ("lists/partial", "archives/partial", "cache", "preferences.d", "log"):
        (root.root / sub).mkdir(parents=True, exist_ok=True)
    status = root.root / "status"
    if not status.exists():
        status.write_text("")
    _write_if_changed(root.conf, config_text(root))
    text = "".join(s.line(keyring) + "\n" for s in sources)
    _write_if_changed(root.sources_list, text)
    return text


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    files.write_atomic(path, text)


def index_is_fresh(root: AptRoot, sources_text: str, now: float) -> bool:
    """True when the index was updated from this sources list less than a day ago."""
    try:
        if root.stamp.read_text() != sources_text:
            return False
        return now - root.stamp.stat().st_mtime < INDEX_MAX_AGE
    except OSError:
        return False


def update_index(
    root: AptRoot,
    series: Series,
    sources: Sequence[AptSource],
    runner: Runner,
    *,
    refresh: bool = False,
    now: Callable[[], float] = time.time,
    check: Callable[[str], str | None] | None = None,
) -> None:
    """Bring the index of ``series`` up to date (caller holds the root's lock).

    When the archive cannot be reached but an older index exists, that index is used
    (with a warning), so cached kernels stay usable offline.
    """
    check = check or probe
    text = write_config(root, sources)
    if not refresh and index_is_fresh(root, text, now()):
        return
    problems = [f"{s.release_url}: {p}" for s in sources if (p := check(s.release_url))]
    if problems:
        error = _unreachable(series, problems)
    else:
        require("apt-get", "apt")
        log.info("updating the package index of series %s", series.name)
        try:
            result = runner.run(root.argv("apt-get", "update"), timeout=UPDATE_TIMEOUT)
        except CommandError as exc:
            error = MirrorError(f"updating the package index of series {series.name}: {exc}")
        else:
            failed = update_failures(result.stdout + "\n" + result.stderr)
            if not failed:
                root.stamp.write_text(text)
                return
            error = MirrorError(
                f"updating the package index of series {series.name} failed:\n" + "\n".join(failed)
            )
    if root.has_index() and root.stamp.read_text() == text:
        log.warning("%s; using the index downloaded before", error)
        return
    raise error


def update_failures(output: str) -> list[str]:
    """The lines of ``apt-get update`` output that say an index was not updated.

    apt exits 0 when a source cannot be fetched (it keeps the old index, or none).
    """
    return [
        line
        for line in output.splitlines()
        if line.startswith("E:")
        or (line.startswith("W:") and ("Failed to fetch" in line or "GPG error" in line))
    ]


def _unreachable(series: Series, problems: Sequence[str]) -> MirrorError:
    joined = "; ".join(problems)
    if series.origin == "snapshot":
        return MirrorError(
            f"series {series.name} comes from the Debian snapshot archive, which is not "
            f"reachable from here ({joined}). Set HARNESS_SNAPSHOT_MIRROR to a reachable "
            "copy of it, run where it is reachable, or give your own kernel with "
            "--kernel PATH"
        )
    return MirrorError(
        f"the Debian archive for series {series.name} is not reachable ({joined}); "
        "check the network, or set HARNESS_MIRROR / --mirror (and "
        "HARNESS_SECURITY_MIRROR) to a reachable mirror"
    )


def query(
    root: AptRoot, series: Series, runner: Runner, *, host_apt: Path = HOST_APT_DIR
) -> Resolved:
    """Resolve ``series`` against its (already updated) index (caller holds the lock).

    apt-cache's answers are a function of the index and of apt's configuration, so
    they are kept beside the index (:class:`AptCacheAnswers`) and asked again only
    when one of those changed: the three apt-cache runs of a resolution took 0.10 to
    0.12 s of every ``invoke test`` (each with its watchdog, :mod:`harness.proc`).
    """
    apt_cache = require("apt-cache", "apt")
    answers = AptCacheAnswers.load(root, apt_cache, host_apt)

    def ask(*args: str) -> str:
        return answers.ask(root.argv("apt-cache", *args), runner)

    names = ask("pkgnames", series.name_prefix()).split()
    resolved = select_kernel(series, names, lambda packages: ask("show", *packages))
    answers.save()
    return resolved


class AptCacheAnswers:
    """apt-cache's output by command, valid for one state of the index and apt's config.

    The state is a fingerprint of the private configuration, the ``stat`` of every file
    of the index (``apt-get update`` rewrites them), of the host's apt configuration
    (read before the private one) and of the apt-cache program. Answers of another
    state, or a file that cannot be read, are dropped; a failed command is not kept.
    """

    NAME = "apt-cache-answers.json"

    def __init__(self, path: Path, state: str, answers: dict[str, str]) -> None:
        self.path = path
        self.state = state
        self.answers = answers
        self.changed = False

    @classmethod
    def load(cls, root: AptRoot, apt_cache: str, host_apt: Path = HOST_APT_DIR) -> AptCacheAnswers:
        path = root.root / cls.NAME
        state = _index_state(root, apt_cache, host_apt)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            kept = data["answers"] if data["state"] == state else {}
            answers = {str(k): str(v) for k, v in kept.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            answers = {}
        return cls(path, state, answers)

    def ask(self, argv: Sequence[str], runner: Runner) -> str:
        key = "\0".join(argv)
        if key not in self.answers:
            self.answers[key] = runner.run(argv).stdout
            self.changed = True
        return self.answers[key]

    def save(self) -> None:
        if not self.changed:
            return
        text = json.dumps({"state": self.state, "answers": self.answers}, sort_keys=True)
        try:
            files.write_atomic(self.path, text + "\n")
        except OSError as exc:
            log.warning("could not keep apt-cache's answers in %s: %s", self.path, exc)


def _index_state(root: AptRoot, apt_cache: str, host_apt: Path) -> str:
    digest = hashlib.sha256()
    digest.update(os.environ.get("APT_CONFIG", "").encode() + b"\0")
    paths = [Path(apt_cache).resolve(), root.conf, root.stamp, host_apt / "apt.conf"]
    for directory in (root.lists, host_apt / "apt.conf.d"):
        with contextlib.suppress(OSError):
            paths += sorted(p for p in directory.iterdir() if p.is_file())
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            digest.update(f"{path}: none\n".encode())
            continue
        digest.update(f"{path}: {info.st_size} {info.st_mtime_ns} {info.st_ino}\n".encode())
    with contextlib.suppress(OSError):
        digest.update(root.conf.read_bytes())
    return digest.hexdigest()


def download(
    root: AptRoot,
    packages: Sequence[IndexPackage],
    dest: Path,
    runner: Runner,
    progress: Listener | None = None,
    *,
    kernel: str = "",
    interval: float = 1.0,
) -> dict[str, Path]:
    """Download ``packages`` into ``dest``; apt checks each against the signed index.

    Returns the ``.deb`` of each package by name; a full disk is an ``OSError``
    (``ENOSPC``) for the caller to report. While apt runs, ``progress`` hears about
    once per ``interval`` seconds how many bytes of each package (for ``kernel``)
    have arrived: a :class:`Transfer` per package that moved, its last one complete,
    or with the error when the download failed.
    """
    require("apt-get", "apt")
    dest.mkdir(parents=True, exist_ok=True)
    argv = root.argv("apt-get", "download", *(f"{p.name}={p.version}" for p in packages))
    names = ", ".join(p.name for p in packages)
    stop = threading.Event()
    told: dict[str, Transfer] = {}

    def tell(pkg: IndexPackage, done: int, *, total: int = 0, error: str | None = None) -> None:
        assert progress is not None
        event = Transfer(kernel, pkg.name, done, total or max(pkg.size, done), error)
        if told.get(pkg.name) != event:
            told[pkg.name] = event
            progress(event)

    def report() -> None:
        while not stop.wait(interval):
            for pkg in packages:
                tell(pkg, _arrived(dest, pkg.name))

    # apt runs in this thread, so a Ctrl-C reaches the runner, which kills it.
    poller = threading.Thread(target=report, name="download progress", daemon=True)
    if progress is not None:
        for pkg in packages:
            tell(pkg, 0)
        poller.start()
    try:
        runner.run(argv, cwd=dest, timeout=DOWNLOAD_TIMEOUT)
    except CommandError as exc:
        _stop(stop, poller)
        error = _download_error(exc, names, dest)
        if progress is not None:
            why = str(error).splitlines()[0]
            for pkg in packages:
                done = _arrived(dest, pkg.name)
                if not pkg.size or done < pkg.size:
                    tell(pkg, done, error=why)
        raise error from exc
    finally:
        _stop(stop, poller)
    found: dict[str, Path] = {}
    for pkg in packages:
        debs = sorted(dest.glob(f"{pkg.name}_*.deb"))
        if not debs:
            raise MirrorError(f"apt-get download reported success but left no .deb of {pkg.name}")
        found[pkg.name] = debs[0]
        if progress is not None:
            size = debs[0].stat().st_size
            tell(pkg, size, total=size)
    return found


def _download_error(exc: CommandError, names: str, dest: Path) -> Exception:
    if "No space left on device" in exc.output:
        return OSError(errno.ENOSPC, f"no space left downloading {names} into {dest}")
    return MirrorError(f"downloading {names} failed: {exc}")


def _arrived(dest: Path, name: str) -> int:
    """Bytes of package ``name`` in ``dest`` so far (apt writes ``NAME_VERSION_ARCH.deb``)."""
    have = 0
    for deb in dest.glob(f"{name}_*.deb"):
        with contextlib.suppress(OSError):  # apt may be renaming it
            have += deb.stat().st_size
    return have


def _stop(stop: threading.Event, poller: threading.Thread) -> None:
    stop.set()
    if poller.is_alive():
        poller.join()
