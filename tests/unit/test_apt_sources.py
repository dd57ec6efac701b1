from __future__ import annotations

from pathlib import Path

from fakes import DATA

from harness.kernels.sources import (
    choose_mirrors,
    parse_deb822,
    parse_one_line,
    parse_stanzas,
    read_host_sources,
    snapshot_base,
)

SOURCES = DATA / "apt-sources"


def test_deb822_sources_give_main_security_and_the_snapshot_comment() -> None:
    host = read_host_sources(SOURCES / "deb822")
    assert host.main == "http://mirror.example.org/debian"
    assert host.security == "http://mirror.example.org/debian-security"
    assert host.snapshot == "http://snapshot.example.org"


def test_one_line_sources_skip_comments_deb_src_and_third_parties() -> None:
    host = read_host_sources(SOURCES / "oneline")
    assert host.main == "http://ftp.example.net/debian"
    assert host.security == "http://security.example.net/debian-security"
    # A snapshot URI is the snapshot archive, never the live main archive.
    assert host.snapshot == "http://snapshot.example.net"


def test_no_debian_source_gives_nothing() -> None:
    host = read_host_sources(SOURCES / "none")
    assert (host.main, host.security, host.snapshot) == (None, None, None)
    assert read_host_sources(Path("/nonexistent")).main is None


def test_disabled_stanzas_are_skipped() -> None:
    text = "Types: deb\nURIs: http://a.example/debian\nSuites: sid\nEnabled: no\n"
    assert parse_deb822(text) == []
    text = (
        "Types: deb-src deb\nURIs: http://a.example/debian\n"
        "  http://b.example/debian\nSuites: sid\n"
    )
    (entry,) = parse_deb822(text)
    assert entry.uris == ("http://a.example/debian", "http://b.example/debian")


def test_one_line_options_do_not_shift_the_fields() -> None:
    (entry,) = parse_one_line("deb [ arch=amd64 trusted=yes ] http://a.example/debian sid main\n")
    assert entry.uris == ("http://a.example/debian",)
    assert entry.suites == ("sid",)


def test_stanzas_skip_comments_and_keep_continuation_lines() -> None:
    text = (
        "# a comment\n"
        "Package: linux-image-amd64\n"
        "Description: first line\n"
        " second line\n"
        "\n\n"
        "Types: deb\n"
    )
    first, second = parse_stanzas(text)
    assert dict(first) == {
        "Package": "linux-image-amd64",
        "Description": "first line\n second line",
    }
    # Field names are matched without regard to case, as apt reads them.
    assert (first["package"], second["TYPES"]) == ("linux-image-amd64", "deb")
    assert first["Description"].split() == ["first", "line", "second", "line"]


def test_snapshot_base_is_what_precedes_archive() -> None:
    assert snapshot_base("# http://s.example/archive/debian/20250520T000000Z") == "http://s.example"
    assert snapshot_base("# https://s.example/mirror/archive/debian-security/20250520T000000Z") == (
        "https://s.example/mirror"
    )
    assert snapshot_base("URIs: http://a.example/debian") is None


def test_option_beats_environment_beats_host() -> None:
    apt_dir = SOURCES / "deb822"
    env = {
        "HARNESS_MIRROR": "http://env.example/debian/",
        "HARNESS_SNAPSHOT_MIRROR": "http://s.example/archive/debian/20240101T000000Z",
    }
    mirrors = choose_mirrors(
        mirror="http://opt.example/debian",
        security_mirror=None,
        snapshot_mirror=None,
        environ=env,
        apt_dir=apt_dir,
    )
    assert mirrors.main == "http://opt.example/debian"
    assert mirrors.main_from == "option"
    assert mirrors.security == "http://mirror.example.org/debian-security"
    assert mirrors.snapshot == "http://s.example"
    assert mirrors.snapshot_from == "$HARNESS_SNAPSHOT_MIRROR"
    mirrors = choose_mirrors(
        mirror=None, security_mirror=None, snapshot_mirror=None, environ=env, apt_dir=apt_dir
    )
    assert mirrors.main == "http://env.example/debian"
