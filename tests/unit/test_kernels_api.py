from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import DATA, Call, FakeRunner, recorded_apt_cache
from test_cache import TREES, dpkg_deb

import harness.kernels as kernels
from harness.errors import MirrorError, UnknownSeriesError
from harness.kernels import KernelOptions, apt, cache, sources
from harness.kernels.model import Kernel, KernelEntry, Package
from harness.progress import Event, Note, Transfer

APT_SOURCES = DATA / "apt-sources" / "deb822"
RELEASE_612 = "6.12.118+deb13-amd64"


@pytest.fixture
def options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KernelOptions:
    for var in ("HARNESS_MIRROR", "HARNESS_SECURITY_MIRROR", "HARNESS_SNAPSHOT_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    # The snapshot archive does not answer; the main and security archives do.
    monkeypatch.setattr(
        apt, "probe", lambda url: "Name or service not known" if "snapshot" in url else None
    )
    return KernelOptions(cache=tmp_path / "cache", apt_dir=APT_SOURCES)


def apt_get(call: Call) -> str:
    argv, cwd = call.argv, call.cwd
    if argv[3] == "update":
        lists = Path(argv[2]).parent / "lists"
        (lists / "x_Packages.lz4").write_text("index")
        return ""
    assert argv[3] == "download" and cwd is not None
    for spec in argv[4:]:
        name, version = spec.split("=")
        tree = TREES[name] if name in TREES else TREES["linux-image-6.12.118+deb13-amd64-unsigned"]
        (cwd / f"{name}_{version}_amd64.deb").write_text(json.dumps(tree))
    return ""


def runner() -> FakeRunner:
    return FakeRunner({"apt-cache": recorded_apt_cache(), "apt-get": apt_get, "dpkg-deb": dpkg_deb})


def test_catalog_series_are_the_catalogs() -> None:
    assert kernels.catalog_series() == ["5.10", "6.1", "6.6", "6.12", "7.2"]


def test_all_is_every_reachable_series(options: KernelOptions) -> None:
    assert kernels.expand_specs("all", options) == ["5.10", "6.1", "6.12", "7.2"]
    assert kernels.expand_specs("", options) == ["5.10", "6.1", "6.12", "7.2"]


def test_a_series_left_out_is_named_with_what_would_bring_it_in(
    options: KernelOptions, caplog: pytest.LogCaptureFixture
) -> None:
    kernels.expand_specs("all", options)

    left_out = [r.getMessage() for r in caplog.records if "leaving out" in r.getMessage()]
    assert len(left_out) == 1
    assert left_out[0].startswith("leaving out series 6.6: its archive is not reachable")
    assert "HARNESS_SNAPSHOT_MIRROR" in left_out[0]


def test_nothing_reachable_is_a_mirror_error(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apt, "probe", lambda url: "timed out")
    with pytest.raises(MirrorError, match="HARNESS_MIRROR"):
        kernels.expand_specs("all", options)


def test_named_series_and_paths_are_kept_in_order(options: KernelOptions, tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    assert kernels.expand_specs(f"6.12, 5.10,{image},6.12", options) == ["6.12", "5.10", str(image)]


def test_an_unknown_series_lists_the_known_ones(options: KernelOptions) -> None:
    with pytest.raises(UnknownSeriesError) as err:
        kernels.expand_specs("6.1,9.9", options)
    message = str(err.value)
    assert "'9.9'" in message
    assert "5.10, 6.1, 6.6, 6.12, 7.2" in message
    assert "--kernel PATH" in message


def test_resolve_uses_the_private_index(options: KernelOptions) -> None:
    fake = runner()
    kernel = kernels.resolve("6.12", options, runner=fake)
    assert kernel.release == RELEASE_612
    assert kernel.origin == "debian"
    assert [p.name for p in kernel.packages][-1] == "linux-libc-dev"
    assert fake.programs()[0] == "apt-get"
    sources = (options.cache / "apt" / "6.12" / "sources.list").read_text()
    assert "http://mirror.example.org/debian trixie main" in sources
    assert "http://mirror.example.org/debian-security trixie-security main" in sources


def test_the_snapshot_series_fails_fast_here(options: KernelOptions) -> None:
    fake = runner()
    with pytest.raises(MirrorError, match="snapshot archive, which is not reachable") as err:
        kernels.resolve("6.6", options, runner=fake)
    assert "http://snapshot.example.org/archive/debian/" in str(err.value)
    assert fake.calls == []


def _fake_boot_pieces(monkeypatch: pytest.MonkeyPatch) -> list[KernelEntry]:
    def trim(full: Path, dest_root: Path, release: str, *, runner: object) -> list[str]:
        (dest_root / "lib" / "modules" / release).mkdir(parents=True)
        return []

    # The fake .debs are not the real ones: take their sha256 to be what the index says.
    recorded = json.loads((DATA / "apt" / "6.12.json").read_text())
    index = {
        (s["Package"], s["Version"]): s["SHA256"]
        for command, output in recorded.items()
        if command.startswith("show ")
        for s in sources.parse_stanzas(output)
        if "SHA256" in s
    }
    monkeypatch.setattr(cache, "_sha256", lambda deb: index[tuple(deb.name.split("_")[:2])])
    checked: list[KernelEntry] = []
    monkeypatch.setattr(
        "harness.kernels.image.extract_vmlinux", lambda image, dest, runner=None: False
    )
    monkeypatch.setattr("harness.kernels.modules.trim_modules", trim)
    monkeypatch.setattr("harness.kernels.kconfig.check_entry", checked.append)
    return checked


def test_prepare_fetches_once_and_checks_the_config(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = _fake_boot_pieces(monkeypatch)
    fake = runner()
    heard: list[Event] = []
    entry = kernels.prepare("6.12", options, runner=fake, progress=heard.append)
    assert (
        entry.image == options.cache / "kernels" / RELEASE_612 / "boot" / f"vmlinuz-{RELEASE_612}"
    )
    assert checked == [entry]
    transfers = [e for e in heard if isinstance(e, Transfer)]
    assert {e.kernel for e in transfers} == {"6.12"}
    assert {e.package for e in transfers if e.complete} == {p.name for p in entry.kernel.packages}
    assert Note(f"{RELEASE_612}: extracting") in heard
    downloads = [c for c in fake.calls if c.argv[3:4] == ("download",)]
    assert len(downloads) == 1
    again = kernels.prepare("6.12", options, runner=fake)
    assert again == entry
    assert len([c for c in fake.calls if c.argv[3:4] == ("download",)]) == 1


def test_list_shows_resolved_cached_and_unreachable(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_boot_pieces(monkeypatch)
    kernels.prepare("6.12", options, runner=runner())
    rows = {row.series: row for row in kernels.list_kernels(options, runner=runner())}
    assert list(rows) == ["5.10", "6.1", "6.6", "6.12", "7.2"]
    assert rows["6.12"].cached and rows["6.12"].size > 0
    assert rows["6.12"].path == options.cache / "kernels" / RELEASE_612
    assert rows["6.1"].release == "6.1.0-56-amd64" and not rows["6.1"].cached
    assert rows["6.6"].release is None
    assert "snapshot" in (rows["6.6"].problem or "")


def test_offline_prepare_falls_back_to_the_cached_entry(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_boot_pieces(monkeypatch)
    entry = kernels.prepare("6.12", options, runner=runner())
    shutil.rmtree(options.cache / "apt")
    monkeypatch.setattr(apt, "probe", lambda url: "Name or service not known")
    offline = runner()
    again = kernels.prepare("6.12", options, runner=offline)
    assert again.image == entry.image
    manifest = cache.read_manifest(entry.image.parent.parent)
    assert manifest is not None
    assert again.kernel.packages == manifest.packages
    assert offline.calls == []
    with pytest.raises(MirrorError):
        kernels.prepare("6.1", options, runner=offline)


def test_offline_prepare_takes_the_newest_cached_entry_by_debian_version(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6.12.10 sorts after 6.12.9 as a Debian version, before it as a string.
    for upstream in ("6.12.9", "6.12.10", "6.12.8"):
        release = f"{upstream}+deb13-amd64"
        staged = options.cache / "kernels" / release
        (staged / "boot").mkdir(parents=True)
        (staged / "boot" / f"vmlinuz-{release}").write_bytes(b"kernel")
        kernel = Kernel(
            "6.12", "6.12", release, "debian", (Package("linux-image", upstream + "-1"),)
        )
        cache.write_manifest(staged, kernel, kernel.packages, f"boot/vmlinuz-{release}", [])
    monkeypatch.setattr(apt, "probe", lambda url: "Name or service not known")
    monkeypatch.setattr("harness.kernels.kconfig.check_entry", lambda entry: None)
    entry = kernels.prepare("6.12", options, runner=runner())
    assert entry.kernel.release == "6.12.10+deb13-amd64"
    assert entry.kernel.spec == "6.12"


def test_a_fetch_trims_older_releases_and_unknown_indexes(
    options: KernelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_boot_pieces(monkeypatch)

    def older(release: str) -> Path:
        staged = options.cache / "kernels" / release
        (staged / "boot").mkdir(parents=True)
        (staged / "boot" / f"vmlinuz-{release}").write_bytes(b"kernel")
        kernel = Kernel("6.12", "6.12", release, "debian", (Package("linux-image", "6.12.9-1"),))
        cache.write_manifest(staged, kernel, kernel.packages, f"boot/vmlinuz-{release}", [])
        return staged

    before = older("6.12.9+deb13-amd64")
    dropped = options.cache / "apt" / "5.4"
    dropped.mkdir(parents=True)
    heard: list[Event] = []
    entry = kernels.prepare("6.12", options, runner=runner(), progress=heard.append)
    assert entry.image.is_file()
    assert not before.exists() and not dropped.exists()
    assert (options.cache / "apt" / "6.12").is_dir()
    assert any(isinstance(e, Note) and e.text.startswith(f"removed {before} ") for e in heard)
    # Only a fetch trims: an entry used from the cache leaves the rest alone.
    again = older("6.12.8+deb13-amd64")
    kernels.prepare("6.12", options, runner=runner())
    assert again.exists()
    assert [r.path for r in kernels.prune(options, dry_run=True).removed] == [again]
