"""Where the Debian archives are: the host's apt sources, or an explicit override.

No mirror host is written in the harness. The main archive and the security archive
are the ones the host's own apt sources use (deb822 ``*.sources`` files and one-line
``sources.list`` / ``*.list`` files both). The snapshot archive's base comes from an
explicit setting, else from the comment Debian's container images keep above the URIs
of ``debian.sources``::

    # http://<snapshot host>/archive/debian/20250520T000000Z
    URIs: http://<mirror>/debian

Everything here is pure over text and directories, so tests point it at fixture files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from debian.deb822 import Deb822

log = logging.getLogger(__name__)

#: The host's apt configuration directory.
HOST_APT_DIR = Path("/etc/apt")

#: Environment variables that override the host's apt sources.
MIRROR_ENV = "HARNESS_MIRROR"
SECURITY_MIRROR_ENV = "HARNESS_SECURITY_MIRROR"
SNAPSHOT_MIRROR_ENV = "HARNESS_SNAPSHOT_MIRROR"

#: A snapshot archive URL: ``<base>/archive/debian[-security]/<timestamp>``.
_SNAPSHOT_URL = re.compile(
    r"(?P<base>https?://[^\s/]+(?:/[^\s]*?)?)/archive/debian(?:-security)?/\d{8}T\d{6}Z"
)


@dataclass(frozen=True)
class SourceEntry:
    """One enabled ``deb`` source: its URIs and suites, as apt reads them."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    origin: str  # the file it came from, for messages


@dataclass(frozen=True)
class HostSources:
    """What the host's apt configuration tells about the Debian archives."""

    main: str | None = None
    security: str | None = None
    snapshot: str | None = None


@dataclass(frozen=True)
class Mirrors:
    """The archive URLs the harness uses, each with where it came from."""

    main: str | None
    security: str | None
    snapshot: str | None
    main_from: str = ""
    security_from: str = ""
    snapshot_from: str = ""


def parse_one_line(text: str, origin: str = "") -> list[SourceEntry]:
    """The enabled ``deb`` lines of a one-line-style ``sources.list`` file."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Options in brackets ("[arch=amd64 signed-by=...]") come right after the type.
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) < 3 or fields[0] != "deb":
            continue
        entries.append(SourceEntry(uris=(fields[1],), suites=(fields[2],), origin=origin))
    return entries


def parse_deb822(text: str, origin: str = "") -> list[SourceEntry]:
    """The enabled stanzas of type ``deb`` of a deb822-style ``*.sources`` file."""
    entries = []
    for stanza in parse_stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        uris = tuple(stanza.get("uris", "").split())
        suites = tuple(stanza.get("suites", "").split())
        if uris and suites:
            entries.append(SourceEntry(uris=uris, suites=suites, origin=origin))
    return entries


def parse_stanzas(text: str) -> list[Deb822]:
    """The stanzas of deb822 control text (``*.sources`` files, ``apt-cache show``).

    Field names are looked up without regard to case, as apt does; a value that
    continues over several lines keeps its line breaks; ``#`` comment lines are skipped.
    """
    # Here, not at the top: python-debian costs 40 ms to import, paid only by a run that
    # reads deb822 text. A run of cached kernels reads none unless the host's own apt
    # sources are deb822 ``.sources`` files (Debian 12's are: such a host pays it).
    from debian.deb822 import Deb822

    return list(Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False))


def snapshot_base(text: str) -> str | None:
    """The snapshot archive's base URL named anywhere in ``text`` (a URI or a comment)."""
    match = _SNAPSHOT_URL.search(text)
    return match.group("base") if match else None


def _archive_kind(uri: str) -> str | None:
    """``"main"`` for a Debian archive URI, ``"security"`` for a security one, else None."""
    if _SNAPSHOT_URL.search(uri):
        return None  # frozen in time: not a live archive
    path = urlsplit(uri).path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if last == "debian":
        return "main"
    if last == "debian-security":
        return "security"
    return None


def source_files(apt_dir: Path) -> list[Path]:
    """The source files apt reads, in apt's order (``sources.list`` first)."""
    files = []
    main = apt_dir / "sources.list"
    if main.is_file():
        files.append(main)
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files.extend(
            sorted(p for p in parts.iterdir() if p.is_file() and p.suffix in (".list", ".sources"))
        )
    return files


def read_host_sources(apt_dir: Path = HOST_APT_DIR) -> HostSources:
    """The Debian main, security and snapshot archives named by the apt sources in ``apt_dir``."""
    main = security = snapshot = None
    for path in source_files(apt_dir):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("cannot read apt source file %s: %s", path, exc)
            continue
        if path.suffix == ".sources":
            entries = parse_deb822(text, str(path))
        else:
            entries = parse_one_line(text, str(path))
        snapshot = snapshot or snapshot_base(text)
        for entry in entries:
            for uri in entry.uris:
                kind = _archive_kind(uri)
                if kind == "main" and main is None:
                    main = uri.rstrip("/")
                elif kind == "security" and security is None:
                    security = uri.rstrip("/")
    return HostSources(main=main, security=security, snapshot=snapshot)


def _normal_snapshot(value: str) -> str:
    """Accept a snapshot base given with or without ``/archive/debian/<timestamp>``."""
    value = value.strip().rstrip("/")
    return value.split("/archive/", 1)[0]


def choose_mirrors(
    *,
    mirror: str | None,
    security_mirror: str | None,
    snapshot_mirror: str | None,
    environ: Mapping[str, str] | None = None,
    apt_dir: Path = HOST_APT_DIR,
) -> Mirrors:
    """Each archive from the explicit option, else its environment variable, else the host."""
    env = os.environ if environ is None else environ
    host = read_host_sources(apt_dir)

    def pick(option: str | None, var: str, found: str | None) -> tuple[str | None, str]:
        if option:
            return option.rstrip("/"), "option"
        if env.get(var):
            return env[var].rstrip("/"), f"${var}"
        return found, f"apt sources in {apt_dir}" if found else ""

    main, main_from = pick(mirror, MIRROR_ENV, host.main)
    security, security_from = pick(security_mirror, SECURITY_MIRROR_ENV, host.security)
    snapshot, snapshot_from = pick(snapshot_mirror, SNAPSHOT_MIRROR_ENV, host.snapshot)
    if snapshot is not None:
        snapshot = _normal_snapshot(snapshot)
    return Mirrors(main, security, snapshot, main_from, security_from, snapshot_from)
