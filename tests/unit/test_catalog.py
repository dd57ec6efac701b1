from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.kernels.catalog import Suite, load_catalog, parse_catalog


def test_the_catalog_knows_the_series_of_the_matrix() -> None:
    catalog = load_catalog()
    assert list(catalog) == ["5.10", "6.1", "6.6", "6.12", "7.2"]
    assert catalog["6.6"].origin == "snapshot"
    assert catalog["6.6"].timestamp is not None
    assert catalog["6.1"].suites == (
        Suite("main", "bookworm"),
        Suite("security", "bookworm-security"),
    )
    assert catalog["5.10"].suites == (Suite("security", "bullseye-security"),)


@pytest.mark.parametrize(
    ("series", "name", "version"),
    [
        ("5.10", "linux-image-5.10.0-46-amd64-unsigned", "5.10.0-46"),
        ("6.1", "linux-image-6.1.0-56-amd64-unsigned", "6.1.0-56"),
        ("6.1", "linux-image-6.1.0-0.deb11.48-amd64-unsigned", "6.1.0-0.deb11.48"),
        ("6.6", "linux-image-6.6.13+bpo-amd64-unsigned", "6.6.13+bpo"),
        ("6.12", "linux-image-6.12.118+deb13-amd64-unsigned", "6.12.118+deb13"),
        ("7.2", "linux-binary-7.2.13+deb14-amd64", "7.2.13+deb14"),
    ],
)
def test_generic_image_names_match_with_their_version(series: str, name: str, version: str) -> None:
    match = load_catalog()[series].version_regex().match(name)
    assert match is not None
    assert match.group("version") == version


@pytest.mark.parametrize(
    ("series", "name"),
    [
        ("5.10", "linux-image-5.10.0-46-cloud-amd64-unsigned"),
        ("5.10", "linux-image-5.10.0-46-rt-amd64-unsigned"),
        ("5.10", "linux-image-5.10.0-46-amd64"),
        ("5.10", "linux-image-5.10.0-46-amd64-dbg"),
        ("6.1", "linux-image-6.12.118+deb13-amd64-unsigned"),
        ("6.1", "linux-image-6.1-amd64"),
        ("6.12", "linux-image-6.12.118+deb13-cloud-amd64-unsigned"),
        ("7.2", "linux-binary-unsigned-7.2.13+deb14-amd64"),
        ("7.2", "linux-binary-7.2.13+deb14-cloud-amd64"),
        ("7.2", "linux-binary-7.2.13+deb14-rt-amd64"),
        ("7.2", "linux-modules-7.2.13+deb14-amd64"),
    ],
)
def test_other_flavours_and_series_do_not_match(series: str, name: str) -> None:
    assert load_catalog()[series].version_regex().match(name) is None


def test_packages_release_and_layout_follow_the_version() -> None:
    series = load_catalog()["7.2"]
    assert series.package_names("7.2.13+deb14") == (
        "linux-binary-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64",
        "linux-base-7.2.13+deb14-amd64",
    )
    release = series.release("7.2.13+deb14")
    assert release == "7.2.13+deb14-amd64"
    assert series.layout(release)["image"] == "usr/lib/modules/7.2.13+deb14-amd64/vmlinuz"
    assert series.name_prefix() == "linux-binary-7.2"


GOOD = """
format = 1
[series."6.1"]
archive = "main"
suites = ["bookworm"]
packages = ["linux-image-{version}-amd64-unsigned"]
release = "{version}-amd64"
image = "boot/vmlinuz-{release}"
config = "boot/config-{release}"
system_map = "boot/System.map-{release}"
modules = "lib/modules/{release}"
"""


def test_a_minimal_catalog_parses() -> None:
    assert parse_catalog(GOOD)["6.1"].description == "6.1"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("format = 1", "format = 2"), "format"),
        (('archive = "main"', 'archive = "mirror"'), "archive 'mirror'"),
        (('archive = "main"', 'archive = "snapshot"'), "timestamp"),
        (('suites = ["bookworm"]', "suites = []"), "suites"),
        (("{version}-amd64-unsigned", "fixed-amd64-unsigned"), "{version}"),
        (('[series."6.1"]', '[series."six"]'), "MAJOR.MINOR"),
        (('modules = "lib/modules/{release}"', ""), "modules"),
        (("format = 1", "format = 1\n[oops"), "TOML"),
    ],
)
def test_a_bad_catalog_is_refused_with_the_field_named(
    change: tuple[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        parse_catalog(GOOD.replace(*change), "test.toml")
