"""The kept part of a release's source: member selection, version matching, streaming, cache."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from fakes import FakeRunner

from harness.errors import CacheError, KernelError
from harness.kernels import apt, source
from harness.kernels.catalog import load_catalog
from harness.kernels.model import Kernel, KernelEntry, Package

SERIES = load_catalog()["6.1"]
RELEASE = "6.1.0-57-amd64"
VERSION = "6.1.192-3"
TOP = "linux-source-6.1"

#: A miniature source tree: what is kept, and what is not.
TREE = {
    "samples/bpf/sockex1_kern.c": "kern 1\n",
    "samples/bpf/sockex1_user.c": "user 1\n",
    "samples/bpf/sock_example.h": "open_raw_sock\n",
    "samples/bpf/tracex1_kern.c": "not a socket sample\n",
    "samples/bpf/Makefile": "not our rules\n",
    "tools/testing/selftests/bpf/bpf_legacy.h": "load_byte\n",
    "tools/testing/selftests/bpf/test_progs.c": "not needed\n",
    "tools/testing/selftests/bpf/gnu/stubs.h": "empty\n",
    "tools/arch/x86/include/uapi/asm/errno.h": "x86 errno\n",
    "tools/arch/arm64/include/uapi/asm/errno.h": "not our architecture\n",
    "tools/lib/bpf/libbpf.c": "libbpf\n",
    "tools/lib/bpf/libbpf.h": "libbpf header\n",
    "tools/lib/bpf/Makefile": "not our rules\n",
    "tools/lib/bpf/subdir/nested.c": "not a libbpf source\n",
    "tools/include/uapi/linux/bpf.h": "uapi bpf\n",
    "tools/include/linux/err.h": "err\n",
    "scripts/bpf_doc.py": "generator\n",
    "scripts/checkpatch.pl": "not needed\n",
    "kernel/bpf/verifier.c": "the kernel itself\n",
}
KEPT = {rel for rel in TREE if source.kept_path(f"{TOP}/{rel}", TOP) is not None}


def test_kept_members_are_the_samples_libbpf_and_headers() -> None:
    assert {
        "samples/bpf/sockex1_kern.c",
        "samples/bpf/sockex1_user.c",
        "samples/bpf/sock_example.h",
        "tools/testing/selftests/bpf/bpf_legacy.h",
        "tools/testing/selftests/bpf/gnu/stubs.h",
        "tools/arch/x86/include/uapi/asm/errno.h",
        "tools/lib/bpf/libbpf.c",
        "tools/lib/bpf/libbpf.h",
        "tools/include/uapi/linux/bpf.h",
        "tools/include/linux/err.h",
        "scripts/bpf_doc.py",
    } == KEPT


@pytest.mark.parametrize(
    "name",
    [
        "linux-source-6.12/samples/bpf/sockex1_kern.c",  # another tree's top
        "samples/bpf/sockex1_kern.c",  # no top directory
        f"{TOP}/../etc/passwd",
        f"/{TOP}/samples/bpf/sockex1_kern.c",
        f"{TOP}/tools/include/../../etc/x",
    ],
)
def test_members_outside_the_tree_are_never_kept(name: str) -> None:
    assert source.kept_path(name, TOP) is None


def test_a_leading_dot_slash_is_accepted() -> None:
    assert source.kept_path(f"./{TOP}/scripts/bpf_doc.py", TOP) == "scripts/bpf_doc.py"


def stanza(version: str, name: str = "linux-source-6.1") -> str:
    return (
        f"Package: {name}\nSource: linux\nVersion: {version}\nSize: 139330232\n"
        f"SHA256: {'ab' * 32}\nFilename: pool/main/l/linux/{name}_{version}_all.deb\n\n"
    )


def test_the_source_of_exactly_the_kernels_version_is_picked() -> None:
    shown = stanza("6.1.192-2") + stanza(VERSION) + stanza("6.1.190-1")
    picked = source.pick_package(shown, SERIES, VERSION)
    assert (picked.name, picked.version, picked.size) == ("linux-source-6.1", VERSION, 139330232)


def test_a_source_version_the_suites_lack_says_which_they_carry() -> None:
    with pytest.raises(source.SourceUnavailable) as caught:
        source.pick_package(stanza("6.1.193-1") + stanza("6.1.190-1"), SERIES, VERSION)
    message = str(caught.value)
    assert "6.1.190-1, 6.1.193-1" in message and f"not {VERSION}" in message
    assert "bookworm, bookworm-security" in message


def test_no_source_package_at_all_is_a_precise_reason() -> None:
    with pytest.raises(
        source.SourceUnavailable, match=re.escape("linux-source-6.1 is not in bookworm")
    ):
        source.pick_package("", SERIES, VERSION)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    """A Debian package is an ar archive: a global header, then each member padded to 2."""
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def fake_deb(path: Path, tree: dict[str, str], top: str = TOP) -> Path:
    inner = tar_bytes({f"{top}/{rel}": text.encode() for rel, text in tree.items()})
    data = tar_bytes({f"./usr/src/{top}.tar.xz": inner, "./usr/share/doc/x": b"doc"})
    path.write_bytes(
        ar_bytes({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data})
    )
    return path


def test_only_the_kept_members_are_written(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path / "src.deb", TREE)
    kept = source.extract(deb, tmp_path / "out", "6.1")
    assert set(kept) == KEPT
    written = {
        str(p.relative_to(tmp_path / "out" / TOP))
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    }
    assert written == KEPT
    assert (tmp_path / "out" / TOP / "scripts/bpf_doc.py").read_text() == "generator\n"


def test_a_damaged_package_is_reported(tmp_path: Path) -> None:
    deb = tmp_path / "src.deb"
    deb.write_bytes(b"!<arch>\nnot really")
    with pytest.raises(KernelError, match=re.escape("src.deb")):
        source.extract(deb, tmp_path / "out", "6.1")


def test_a_package_without_the_tarball_is_reported(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path / "src.deb", TREE, top="linux-source-6.12")
    with pytest.raises(KernelError, match=re.escape("holds no usr/src/linux-source-6.1.tar.xz")):
        source.extract(deb, tmp_path / "out", "6.1")


def entry(tmp_path: Path, packages: tuple[Package, ...] | None = None) -> KernelEntry:
    root = tmp_path / "kernels" / RELEASE
    (root / "boot").mkdir(parents=True, exist_ok=True)
    image = root / "boot" / f"vmlinux-{RELEASE}"
    image.write_bytes(b"vmlinux")
    if packages is None:
        packages = (
            Package(f"linux-image-{RELEASE}-unsigned", VERSION),
            Package("linux-libc-dev", VERSION),
        )
    kernel = Kernel("6.1", "6.1", RELEASE, "debian", packages)
    return KernelEntry(kernel, image, None, None, tmp_path / "include")


class Downloads:
    def __init__(self, tree: dict[str, str], *, fail: bool = False) -> None:
        self.tree = tree
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def __call__(self, package: object, dest: Path) -> Path:
        assert isinstance(package, apt.IndexPackage)
        self.calls.append((package.name, package.version))
        dest.mkdir(parents=True)
        deb = fake_deb(dest / f"{package.name}_{package.version}_all.deb", self.tree)
        if self.fail:
            raise OSError("connection reset")
        return deb


def test_the_tree_is_kept_once_and_found_again(tmp_path: Path) -> None:
    downloads = Downloads(TREE)
    kernel = entry(tmp_path)
    tree = source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=downloads)
    assert (tree.package, tree.version) == ("linux-source-6.1", VERSION)
    assert tree.path("samples/bpf/sockex1_user.c").read_text() == "user 1\n"
    assert tree.size == sum(len(TREE[rel]) for rel in KEPT)
    again = source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=downloads)
    assert again == tree
    assert downloads.calls == [("linux-source-6.1", VERSION)]
    leftovers = [
        p.name for p in (tmp_path / "kernels" / RELEASE).iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []


def test_an_altered_tree_is_fetched_again(tmp_path: Path) -> None:
    downloads = Downloads(TREE)
    kernel = entry(tmp_path)
    tree = source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=downloads)
    tree.path("tools/lib/bpf/libbpf.c").write_text("cut")
    source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=downloads)
    assert len(downloads.calls) == 2


def test_a_cut_off_download_leaves_nothing(tmp_path: Path) -> None:
    kernel = entry(tmp_path)
    with pytest.raises(CacheError, match=re.escape("connection reset")):
        source.ensure_tree(
            kernel, SERIES, tmp_path, runner=FakeRunner(), download=Downloads(TREE, fail=True)
        )
    assert sorted(p.name for p in (tmp_path / "kernels" / RELEASE).iterdir()) == ["boot"]


def test_a_tree_without_libbpf_is_a_precise_reason(tmp_path: Path) -> None:
    tree = {k: v for k, v in TREE.items() if not k.startswith("tools/lib/bpf/")}
    with pytest.raises(source.SourceUnavailable, match=re.escape("no tools/lib/bpf/libbpf.h")):
        source.ensure_tree(
            entry(tmp_path), SERIES, tmp_path, runner=FakeRunner(), download=Downloads(tree)
        )
    assert not (tmp_path / "kernels" / RELEASE / source.SOURCE_DIR).exists()


def test_a_kernel_without_headers_package_has_no_source_version(tmp_path: Path) -> None:
    kernel = entry(tmp_path, packages=())
    with pytest.raises(source.SourceUnavailable, match=re.escape("no Debian source package")):
        source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=Downloads(TREE))


def test_the_index_is_asked_for_the_package_through_the_series_apt(tmp_path: Path) -> None:
    runner = FakeRunner({"apt-cache": lambda call: stanza("6.1.192-2")})
    with pytest.raises(source.SourceUnavailable, match=re.escape("not 6.1.192-3")):
        source.ensure_tree(entry(tmp_path), SERIES, tmp_path, runner=runner)
    (call,) = runner.calls
    assert call.program == "apt-cache" and call.argv[-2:] == ("show", "linux-source-6.1")
    assert str(tmp_path / "apt" / "6.1") in " ".join(call.argv)


def test_the_manifest_names_every_kept_file(tmp_path: Path) -> None:
    source.ensure_tree(
        entry(tmp_path), SERIES, tmp_path, runner=FakeRunner(), download=Downloads(TREE)
    )
    manifest = json.loads((tmp_path / "kernels" / RELEASE / "source" / "manifest.json").read_text())
    assert set(manifest["files"]) == KEPT and manifest["version"] == VERSION


def test_what_an_interrupted_fetch_left_is_removed(tmp_path: Path) -> None:
    kernel = entry(tmp_path)
    stale = tmp_path / "kernels" / RELEASE / ".source-killed"
    (stale / "debs").mkdir(parents=True)
    source.ensure_tree(kernel, SERIES, tmp_path, runner=FakeRunner(), download=Downloads(TREE))
    assert not stale.exists()
