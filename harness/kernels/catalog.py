"""The kernel series the harness knows (``kernels/catalog.toml``), as plain values."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.paths import CATALOG_PATH

FORMAT = 1
ARCHIVES = ("main", "security", "snapshot")
_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")
_SERIES = re.compile(r"^\d+\.\d+$")
#: What may follow the series in a Debian kernel version string: "6.1" -> "6.1.0-56",
#: "6.12.117+deb13", "6.6.13+bpo", "6.1.0-0.deb11.48". A dash segment must start with a
#: digit, so "-cloud" and "-rt" flavours never match as part of the version.
_VERSION_TAIL = r"[.+][0-9A-Za-z.+~]*(?:-[0-9][0-9A-Za-z.+~]*)?"


@dataclass(frozen=True)
class Suite:
    """A suite of one archive: ``("main", "bookworm")``."""

    archive: str
    name: str


@dataclass(frozen=True)
class Series:
    """Where Debian ships one kernel series and how its packages are laid out."""

    name: str
    description: str
    suites: tuple[Suite, ...]
    timestamp: str | None
    packages: tuple[str, ...]
    release_pattern: str
    image: str
    config: str
    system_map: str
    modules: str

    @property
    def archives(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.archive for s in self.suites))

    @property
    def origin(self) -> str:
        """``"snapshot"`` when the series comes from the snapshot archive, else ``"debian"``."""
        return "snapshot" if "snapshot" in self.archives else "debian"

    def version_regex(self) -> re.Pattern[str]:
        """Matches the name of the series' first package and captures its ``version``."""
        before, after = self.packages[0].split("{version}", 1)
        body = re.escape(self.name) + _VERSION_TAIL
        return re.compile(f"^{re.escape(before)}(?P<version>{body}){re.escape(after)}$")

    def name_prefix(self) -> str:
        """A prefix of every matching first-package name (for ``apt-cache pkgnames``)."""
        return self.packages[0].split("{version}", 1)[0] + self.name

    def package_names(self, version: str) -> tuple[str, ...]:
        return tuple(p.format(version=version) for p in self.packages)

    def release(self, version: str) -> str:
        return self.release_pattern.format(version=version)

    def layout(self, release: str) -> dict[str, str]:
        """Paths inside the extracted packages for ``release``."""
        return {
            "image": self.image.format(release=release),
            "config": self.config.format(release=release),
            "system_map": self.system_map.format(release=release),
            "modules": self.modules.format(release=release),
        }


def load_catalog(path: Path = CATALOG_PATH) -> dict[str, Series]:
    """The catalog at ``path``, series in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the kernel catalog {path}: {exc}") from exc
    return parse_catalog(text, str(path))


def parse_catalog(text: str, origin: str = "catalog") -> dict[str, Series]:
    """Parse catalog TOML text; a :class:`ConfigError` names the bad series and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML: {exc}") from exc
    if data.get("format") != FORMAT:
        raise ConfigError(f"{origin}: format = {data.get('format')!r}, expected {FORMAT}")
    tables = data.get("series")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f'{origin} has no [series."X.Y"] tables')
    return {name: _parse_series(name, table, origin) for name, table in tables.items()}


def _parse_series(name: str, table: Any, origin: str) -> Series:
    where = f'{origin}, [series."{name}"]'
    if not _SERIES.match(name):
        raise ConfigError(f"{where}: a series is named MAJOR.MINOR, like 6.1")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")

    def text(key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
        return value

    def texts(key: str) -> tuple[str, ...]:
        value = table.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a non-empty list of strings")
        return tuple(value)

    archive = text("archive")
    suites = tuple(_parse_suite(s, archive, where) for s in texts("suites"))
    timestamp = table.get("timestamp")
    if any(s.archive == "snapshot" for s in suites):
        if not isinstance(timestamp, str) or not _TIMESTAMP.match(timestamp):
            raise ConfigError(f"{where}: a snapshot series needs timestamp = YYYYMMDDTHHMMSSZ")
    elif timestamp is not None:
        raise ConfigError(f"{where}: timestamp only applies to the snapshot archive")
    packages = texts("packages")
    if "{version}" not in packages[0]:
        raise ConfigError(f"{where}: the first package pattern must contain {{version}}")
    return Series(
        name=name,
        description=text("description", name),
        suites=suites,
        timestamp=timestamp,
        packages=packages,
        release_pattern=text("release"),
        image=text("image"),
        config=text("config"),
        system_map=text("system_map"),
        modules=text("modules"),
    )


def _parse_suite(value: str, archive: str, where: str) -> Suite:
    if ":" in value:
        archive, value = value.split(":", 1)
    if archive not in ARCHIVES:
        raise ConfigError(f"{where}: archive {archive!r} is not one of {', '.join(ARCHIVES)}")
    return Suite(archive=archive, name=value)
