from __future__ import annotations

import errno
import itertools
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fakes import Call, FakeRunner, recorded_apt_cache

from harness.errors import CommandError, KernelError, MirrorError, ToolMissingError
from harness.kernels import apt
from harness.kernels.catalog import load_catalog
from harness.kernels.sources import Mirrors
from harness.proc import Completed, SubprocessRunner
from harness.progress import Event, Transfer

CATALOG = load_catalog()
MIRRORS = Mirrors(
    main="http://mirror.example/debian",
    security="http://mirror.example/debian-security",
    snapshot="http://snapshot.example",
)

VERSION_PAIRS = [
    ("6.1.192-2", "6.1.190-1"),
    ("6.1.0-56", "6.1.0-9"),
    ("1.0~rc1-1", "1.0-1"),
    ("1.0-1", "1.0-1"),
    ("1:0.9", "2.0"),
    ("6.6.13-1~bpo12+1", "6.6.13-1"),
    ("6.12.118-1", "6.12.9-1"),
    ("1.0a-1", "1.0+-1"),
    ("1.0-1", "1.0"),
    ("2.0~~a", "2.0~"),
    ("7.2.13-1", "7.2.13-1+b1"),
]


def _package(version: str, name: str = "p") -> apt.IndexPackage:
    return apt.IndexPackage(name, version, "linux", version, 1, "", "")


@pytest.mark.parametrize(("a", "b"), VERSION_PAIRS)
def test_newest_orders_versions_as_dpkg_does(a: str, b: str) -> None:
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is not installed")

    def dpkg_says(op: str) -> bool:
        argv = ["dpkg", "--compare-versions", a, op, b]
        return SubprocessRunner().run(argv, check=False).returncode == 0

    first, second = _package(a, "first"), _package(b, "second")
    # Among equal versions the first seen wins, whichever order they come in.
    expected_ab = first if dpkg_says("ge") else second
    expected_ba = second if dpkg_says("le") else first
    assert apt.newest([first, second]) == expected_ab
    assert apt.newest([second, first]) == expected_ba


def test_a_signed_binary_takes_its_source_version_from_built_using() -> None:
    stanza = {
        "Package": "linux-binary-7.2.13+deb14-amd64",
        "Source": "linux-signed-amd64 (7.2.13+1)",
        "Version": "7.2.13-1",
        "Built-Using": "linux (= 7.2.13-1)",
        "Size": "14252084",
    }
    pkg = apt.index_package(stanza)
    assert (pkg.source, pkg.source_version, pkg.size) == ("linux", "7.2.13-1", 14252084)
    unsigned = apt.index_package(
        {"Package": "linux-image-x", "Source": "linux", "Version": "6.1.1-1"}
    )
    assert (unsigned.source, unsigned.source_version) == ("linux", "6.1.1-1")


@pytest.mark.parametrize(
    ("series", "release", "names", "headers"),
    [
        ("5.10", "5.10.0-46-amd64", ["linux-image-5.10.0-46-amd64-unsigned"], "5.10.262-1"),
        ("6.1", "6.1.0-56-amd64", ["linux-image-6.1.0-56-amd64-unsigned"], "6.1.192-2"),
        (
            "6.12",
            "6.12.118+deb13-amd64",
            ["linux-image-6.12.118+deb13-amd64-unsigned"],
            "6.12.118-1",
        ),
        (
            "7.2",
            "7.2.13+deb14-amd64",
            [
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64",
                "linux-base-7.2.13+deb14-amd64",
            ],
            "7.2.13-1",
        ),
    ],
)
def test_recorded_index_resolves_to_the_newest_generic_kernel(
    tmp_path: Path, series: str, release: str, names: list[str], headers: str
) -> None:
    runner = FakeRunner({"apt-cache": recorded_apt_cache(series)})
    resolved = apt.query(apt.AptRoot(tmp_path), CATALOG[series], runner)
    assert resolved.release == release
    assert [p.name for p in resolved.kernel_packages] == names
    assert resolved.headers.name == "linux-libc-dev"
    assert resolved.headers.version == headers
    assert all(p.sha256 and p.size > 0 for p in resolved.packages)
    assert all(call.argv[1:3] == ("-c", str(tmp_path / "apt.conf")) for call in runner.calls)


def index_root(tmp_path: Path) -> apt.AptRoot:
    root = apt.AptRoot(tmp_path / "6.1")
    root.lists.mkdir(parents=True)
    (root.lists / "deb.example_dists_bookworm_main_binary-amd64_Packages").write_text("index")
    root.conf.write_text("// apt.conf\n")
    root.stamp.write_text("deb ...\n")
    return root


def test_apt_cache_answers_are_kept_until_the_index_changes(tmp_path: Path) -> None:
    root, host_apt = index_root(tmp_path), tmp_path / "etc-apt"
    runner = FakeRunner({"apt-cache": recorded_apt_cache("6.1")})
    first = apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt)
    asked = len(runner.calls)
    assert asked == 3
    assert apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt) == first
    assert len(runner.calls) == asked
    # apt-get update rewrites the index files: apt-cache is asked again.
    (root.lists / "deb.example_dists_bookworm_main_binary-amd64_Packages").write_text("new")
    assert apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt) == first
    assert len(runner.calls) == 2 * asked


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root, host: root.conf.write_text("// other\n"), id="private config"),
        pytest.param(lambda root, host: root.stamp.write_text("deb other\n"), id="update stamp"),
        pytest.param(
            lambda root, host: (
                (host / "apt.conf.d").mkdir(parents=True)
                or (host / "apt.conf.d" / "99proxy").write_text("Acquire::http::Proxy x;")
            ),
            id="host config",
        ),
        pytest.param(
            lambda root, host: (root.root / apt.AptCacheAnswers.NAME).write_text("{not json"),
            id="unreadable answers",
        ),
    ],
)
def test_apt_cache_is_asked_again_when_what_it_reads_changed(
    tmp_path: Path, change: Callable[[apt.AptRoot, Path], object]
) -> None:
    root, host_apt = index_root(tmp_path), tmp_path / "etc-apt"
    runner = FakeRunner({"apt-cache": recorded_apt_cache("6.1")})
    first = apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt)
    change(root, host_apt)
    assert apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt) == first
    assert len(runner.calls) == 6


def test_a_failed_apt_cache_answer_is_not_kept(tmp_path: Path) -> None:
    root, host_apt = index_root(tmp_path), tmp_path / "etc-apt"
    failing = FakeRunner(
        {"apt-cache": lambda call: Completed(call.argv, 100, "", "E: broken cache", None)}
    )
    with pytest.raises(CommandError, match="broken cache"):
        apt.query(root, CATALOG["6.1"], failing, host_apt=host_apt)
    assert not (root.root / apt.AptCacheAnswers.NAME).exists()
    runner = FakeRunner({"apt-cache": recorded_apt_cache("6.1")})
    assert apt.query(root, CATALOG["6.1"], runner, host_apt=host_apt).release == "6.1.0-56-amd64"


def test_the_newest_wins_whatever_the_order(tmp_path: Path) -> None:
    def show(names: Sequence[str]) -> str:
        stanzas = {
            "linux-image-6.1.0-9-amd64-unsigned": "6.1.27-1",
            "linux-image-6.1.0-56-amd64-unsigned": "6.1.192-2",
            "linux-image-6.1.0-10-amd64-unsigned": "6.1.38-1",
            "linux-libc-dev": "6.1.192-2",
        }
        return "\n".join(
            f"Package: {n}\nSource: linux\nVersion: {stanzas[n]}\nSize: 1\nSHA256: ab\n"
            for n in names
        )

    names = [
        "linux-image-6.1.0-9-amd64-unsigned",
        "linux-image-6.1.0-56-amd64-unsigned",
        "linux-image-6.1.0-10-amd64-unsigned",
        "linux-image-6.1.0-56-cloud-amd64-unsigned",
    ]
    resolved = apt.select_kernel(CATALOG["6.1"], names, show)
    assert resolved.release == "6.1.0-56-amd64"


def test_headers_of_another_source_version_are_refused() -> None:
    def show(names: Sequence[str]) -> str:
        version = "6.1.190-1" if names == ["linux-libc-dev"] else "6.1.192-2"
        return "".join(f"Package: {n}\nSource: linux\nVersion: {version}\n\n" for n in names)

    with pytest.raises(KernelError, match=r"no linux-libc-dev 6\.1\.192-2"):
        apt.select_kernel(CATALOG["6.1"], ["linux-image-6.1.0-56-amd64-unsigned"], show)


def test_a_series_absent_from_its_suites_says_so() -> None:
    with pytest.raises(KernelError, match="bookworm, bookworm-security"):
        apt.select_kernel(CATALOG["6.1"], ["linux-image-6.1.0-56-cloud-amd64-unsigned"], str)


def test_sources_come_from_the_mirrors_and_the_snapshot_timestamp() -> None:
    (bookworm, security) = apt.sources_for(CATALOG["6.1"], MIRRORS)
    assert bookworm.line(apt.KEYRING) == (
        f"deb [signed-by={apt.KEYRING} target=Packages] http://mirror.example/debian bookworm main"
    )
    assert security.uri == "http://mirror.example/debian-security"
    (snapshot,) = apt.sources_for(CATALOG["6.6"], MIRRORS)
    assert snapshot.uri == f"http://snapshot.example/archive/debian/{CATALOG['6.6'].timestamp}"
    assert "check-valid-until=no" in snapshot.line(apt.KEYRING)


def test_an_unconfigured_archive_names_the_variable_to_set() -> None:
    with pytest.raises(MirrorError, match="HARNESS_SNAPSHOT_MIRROR"):
        apt.sources_for(
            CATALOG["6.6"], Mirrors(main="http://m.example/debian", security=None, snapshot=None)
        )
    with pytest.raises(MirrorError, match="HARNESS_SECURITY_MIRROR"):
        apt.sources_for(
            CATALOG["5.10"], Mirrors(main="http://m.example/debian", security=None, snapshot=None)
        )


def test_private_config_keeps_apt_off_the_host_state(tmp_path: Path) -> None:
    root = apt.AptRoot(tmp_path / "apt")
    apt.write_config(root, apt.sources_for(CATALOG["6.1"], MIRRORS))
    conf = root.conf.read_text()
    for setting in ("Dir::State::lists", "Dir::State::status", "Dir::Cache::archives"):
        (line,) = [x for x in conf.splitlines() if x.startswith(setting + " ")]
        assert str(tmp_path) in line
    assert 'Dir::Etc::sourceparts "-";' in conf
    assert "#clear APT::Update::Post-Invoke;" in conf
    assert (root.root / "status").read_text() == ""
    assert root.sources_list.read_text().count("\n") == 2


def test_a_missing_keyring_names_its_package(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError, match="debian-archive-keyring"):
        apt.write_config(apt.AptRoot(tmp_path), (), keyring=tmp_path / "none.gpg")


def _updating_runner(root: apt.AptRoot, stderr_lines: str = "") -> FakeRunner:
    def update(call: Call) -> str:
        assert call.argv[1:] == ("-c", str(root.conf), "update")
        (root.lists / "x_Packages.lz4").write_text("index")
        return stderr_lines

    return FakeRunner({"apt-get": update})


def test_index_updated_when_missing_then_kept_for_a_day(tmp_path: Path) -> None:
    root = apt.AptRoot(tmp_path)
    series, sources = CATALOG["6.1"], apt.sources_for(CATALOG["6.1"], MIRRORS)
    runner = _updating_runner(root)
    apt.update_index(root, series, sources, runner, check=lambda url: None)
    assert len(runner.calls) == 1
    apt.update_index(root, series, sources, runner, check=lambda url: None)
    assert len(runner.calls) == 1
    later = root.stamp.stat().st_mtime + apt.INDEX_MAX_AGE + 1
    apt.update_index(root, series, sources, runner, now=lambda: later, check=lambda url: None)
    assert len(runner.calls) == 2
    apt.update_index(root, series, sources, runner, refresh=True, check=lambda url: None)
    assert len(runner.calls) == 3
    other = apt.sources_for(
        CATALOG["6.1"], Mirrors("http://other.example/debian", MIRRORS.security, None)
    )
    apt.update_index(root, series, other, runner, check=lambda url: None)
    assert len(runner.calls) == 4


def test_unreachable_snapshot_fails_before_apt_runs(tmp_path: Path) -> None:
    root = apt.AptRoot(tmp_path)
    series = CATALOG["6.6"]
    runner = _updating_runner(root)
    with pytest.raises(
        MirrorError, match="snapshot archive, which is not reachable from here"
    ) as err:
        apt.update_index(
            root,
            series,
            apt.sources_for(series, MIRRORS),
            runner,
            check=lambda url: "Name or service not known",
        )
    assert "--kernel PATH" in str(err.value)
    assert runner.calls == []


def test_unreachable_archive_falls_back_to_an_earlier_index(tmp_path: Path) -> None:
    root = apt.AptRoot(tmp_path)
    series, sources = CATALOG["6.1"], apt.sources_for(CATALOG["6.1"], MIRRORS)
    apt.update_index(root, series, sources, _updating_runner(root), check=lambda url: None)
    runner = _updating_runner(root)
    apt.update_index(root, series, sources, runner, refresh=True, check=lambda url: "timed out")
    assert runner.calls == []


def test_fetch_failures_reported_by_apt_are_errors(tmp_path: Path) -> None:
    root = apt.AptRoot(tmp_path)
    series, sources = CATALOG["6.1"], apt.sources_for(CATALOG["6.1"], MIRRORS)
    runner = _updating_runner(
        root, "W: Failed to fetch http://mirror.example/debian/dists/bookworm/InRelease  404\n"
    )
    with pytest.raises(MirrorError, match="Failed to fetch"):
        apt.update_index(root, series, sources, runner, check=lambda url: None)


class _Listener:
    """Every event heard, in order; :meth:`wait_for` blocks until one arrives."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, wanted: Event) -> None:
        with self.changed:
            # Generous: the poller looks every millisecond; this only guards a hang.
            assert self.changed.wait_for(lambda: wanted in self.events, timeout=30), self.events

    def of(self, package: str) -> list[Transfer]:
        return [e for e in self.events if isinstance(e, Transfer) and e.package == package]


IMAGE = apt.IndexPackage("linux-image-x", "1-1", "linux", "1-1", 4, "", "")
HEADERS = apt.IndexPackage("linux-libc-dev", "1-1", "linux", "1-1", 6, "", "")


def test_download_tells_each_package_s_bytes_up_to_all_of_them(tmp_path: Path) -> None:
    heard = _Listener()

    def download(call: Call) -> str:
        cwd = call.cwd
        assert cwd is not None
        assert call.argv[3:] == ("download", "linux-image-x=1-1", "linux-libc-dev=1-1")
        (cwd / "linux-image-x_1-1_amd64.deb").write_bytes(b"ab")
        heard.wait_for(Transfer("6.1", "linux-image-x", 2, 4))
        (cwd / "linux-image-x_1-1_amd64.deb").write_bytes(b"abcd")
        (cwd / "linux-libc-dev_1-1_amd64.deb").write_bytes(b"abcdef")
        return ""

    debs = apt.download(
        apt.AptRoot(tmp_path),
        [IMAGE, HEADERS],
        tmp_path / "debs",
        FakeRunner({"apt-get": download}),
        heard,
        kernel="6.1",
        interval=0.001,
    )
    assert debs["linux-libc-dev"].read_bytes() == b"abcdef"
    image = heard.of("linux-image-x")
    assert image[0] == Transfer("6.1", "linux-image-x", 0, 4)
    assert [e.done for e in image] == sorted(e.done for e in image)
    assert image[-1] == Transfer("6.1", "linux-image-x", 4, 4) and image[-1].complete
    headers = heard.of("linux-libc-dev")
    assert headers[0].done == 0 and headers[-1].complete
    # Only changes are told: no two events in a row alike.
    assert all(a != b for a, b in itertools.pairwise(image))


def test_a_cut_off_download_tells_each_unfinished_package_it_failed(tmp_path: Path) -> None:
    heard = _Listener()

    def cut_off(call: Call) -> str:
        cwd = call.cwd
        assert cwd is not None
        (cwd / "linux-image-x_1-1_amd64.deb").write_bytes(b"abcd")
        (cwd / "linux-libc-dev_1-1_amd64.deb").write_bytes(b"abc")
        raise CommandError(
            "apt-get download failed with exit status 100",
            argv=call.argv,
            output="Err:2 http://mirror.example linux-libc-dev\n  Connection reset by peer",
        )

    with pytest.raises(MirrorError, match="downloading linux-image-x, linux-libc-dev failed"):
        apt.download(
            apt.AptRoot(tmp_path),
            [IMAGE, HEADERS],
            tmp_path / "debs",
            FakeRunner({"apt-get": cut_off}),
            heard,
            kernel="6.1",
        )
    (last,) = heard.of("linux-libc-dev")[-1:]
    assert (last.done, last.total) == (3, 6) and not last.complete
    assert last.error is not None and "downloading linux-image-x" in last.error
    # The package that had arrived whole is not said to have failed.
    assert all(e.error is None for e in heard.of("linux-image-x"))


def test_a_failed_download_is_a_mirror_error(tmp_path: Path) -> None:
    def fail(call: Call) -> str:
        raise CommandError("apt-get download failed with exit status 100", argv=call.argv)

    package = apt.IndexPackage("linux-image-x", "1-1", "linux", "1-1", 4, "", "")
    with pytest.raises(MirrorError, match="downloading linux-image-x failed"):
        apt.download(
            apt.AptRoot(tmp_path), [package], tmp_path / "debs", FakeRunner({"apt-get": fail})
        )


def test_a_full_disk_during_download_is_enospc(tmp_path: Path) -> None:
    def full(call: Call) -> str:
        raise CommandError(
            "apt-get download failed",
            argv=call.argv,
            output="Err:1 ...\n  Error writing to file - write (28: No space left on device)",
        )

    package = apt.IndexPackage("linux-image-x", "1-1", "linux", "1-1", 4, "", "")
    with pytest.raises(OSError, match="no space left") as err:
        apt.download(
            apt.AptRoot(tmp_path), [package], tmp_path / "debs", FakeRunner({"apt-get": full})
        )
    assert err.value.errno == errno.ENOSPC
