"""Building samples and loaders: commands, the stamp, compiler errors, the object check.

Most tests build a small sample of their own, written into ``tmp_path`` as a folder
with its kern C and its ``sample.py`` (as a user would add one), with the host's
clang. Only the tests about a command's shape answer the compiler with a fake.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from fakes import Call, FakeRunner, really_run

from harness import build, loaders, samples
from harness.bpf import elf
from harness.errors import BpfObjectError, BuildError, CommandError
from harness.proc import Completed
from harness.samples import Sample

RELEASE = "6.1.0-test-amd64"

#: The kern C of the throwaway sample: one array map, one socket filter adding skb->len.
KERN = """\
#include <linux/bpf.h>
#include "tiny.h"
#include "../include/shared.h"

#define SEC(name) __attribute__((section(name), used))

struct bpf_map_def {
	unsigned int type, key_size, value_size, max_entries, map_flags;
};

struct bpf_map_def SEC("maps") counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(unsigned int),
	.value_size = VALUE_SIZE,
	.max_entries = 4,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
	(void *)BPF_FUNC_map_lookup_elem;

SEC("socket1")
int count(struct __sk_buff *skb)
{
	unsigned int key = 0;
	long *value = bpf_map_lookup_elem(&counts, &key);

	if (value)
		__sync_fetch_and_add(value, skb->len);
	return 0;
}

char _license[] SEC("license") = "GPL";
"""

HEADER = "#define VALUE_SIZE 8\n"

#: Its descriptor; the format, program section and value layout are filled in per test.
DESCRIPTOR = """\
from harness.packets import Tcp
from harness.samples import Column, Layout, MapCheck, Program, Sample


def oracle(frames):
    return {{"counts": {{(0,): (sum(f.length for f in frames),)}}}}


SAMPLE = Sample(
    name="{name}",
    title="a throwaway sample of the build tests",
    format="{format}",
    kern="tiny_kern.c",
    programs=(Program("{section}"),),
    maps=(MapCheck("counts", "array", Layout("<I", ("index",)), Layout("{value}", ("bytes",))),),
    traffic=(Tcp(1024),),
    oracle=oracle,
    columns=(Column("bytes", "counts", (0,), "bytes"),),
)
"""


def write_sample(
    root: Path,
    name: str = "tiny",
    *,
    format: str = "classic",
    section: str = "socket1",
    value: str = "<q",
    kern: str = KERN,
) -> Path:
    """A sample folder under ``root``, as a user would add one under samples/."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "tiny_kern.c").write_text(kern)
    (folder / "tiny.h").write_text(HEADER)
    shared = root / "include"  # the headers the samples of this tree share
    shared.mkdir(exist_ok=True)
    (shared / "shared.h").write_text("#define SHARED 1\n")
    (folder / samples.DESCRIPTOR).write_text(
        DESCRIPTOR.format(name=name, format=format, section=section, value=value)
    )
    return folder


def tiny(tmp_path: Path, **changes: str) -> Sample:
    return samples.load(write_sample(tmp_path / "samples", **changes))


def recording() -> FakeRunner:
    """Runs every command for real and remembers it."""
    return FakeRunner(otherwise=really_run)


def refusing(call: Call) -> str:
    """A compiler that fails at once: for tests that only look at the command."""
    raise CommandError("compiler refused", argv=call.argv, returncode=1, output="refused")


def fake_headers(tmp_path: Path) -> Path:
    """An include directory shaped like the kernel cache's: linux/, asm/, asm-generic/."""
    headers = tmp_path / "include"
    for sub in ("linux", "asm-generic"):
        shutil.copytree(build.HOST_INCLUDE / sub, headers / sub)
    shutil.copytree(build.HOST_INCLUDE / build.HOST_MULTIARCH / "asm", headers / "asm")
    return headers


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# --- commands -----------------------------------------------------------------------


def test_the_kernel_headers_come_first_and_the_host_headers_not_at_all(tmp_path: Path) -> None:
    headers = fake_headers(tmp_path)
    sample = tiny(tmp_path)
    runner = FakeRunner(otherwise=refusing)

    with pytest.raises(BuildError):
        build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)

    (call,) = runner.calls
    argv = list(call.argv)
    includes = [a for a in argv if a.startswith("-I")]
    assert includes == [f"-I{headers}"]
    assert argv.index(f"-I{headers}") < argv.index("-c")
    assert argv[argv.index("-c") + 1] == str(sample.directory / "tiny_kern.c")
    assert argv[-2:] == ["-o", "tiny_kern.o"]
    assert call.cwd is not None and call.cwd.parent == tmp_path / "b" / RELEASE / "samples/tiny"


def test_a_loader_sees_the_kernel_headers_before_its_own(tmp_path: Path) -> None:
    headers = tmp_path / "include"
    argv = build.program_argv(
        "cc", headers, [Path("loader.c")], Path("loader"), include=[Path("/src/classic")]
    )

    assert argv.index(f"-I{headers}") < argv.index("-I/src/classic") < argv.index("loader.c")
    assert argv[-2:] == ["-o", "loader"]


def test_the_host_headers_include_the_multiarch_directory() -> None:
    assert build.include_flags(None) == ("-I/usr/include", "-I/usr/include/x86_64-linux-gnu")


@pytest.mark.parametrize(("format", "debug"), [("classic", False), ("btf", True)])
def test_only_btf_samples_are_compiled_with_debug_info(
    tmp_path: Path, format: str, debug: bool
) -> None:
    # BTF-defined maps need the object's BTF, which clang writes only with -g.
    runner = FakeRunner(otherwise=refusing)

    with pytest.raises(BuildError):
        build.build_sample(
            tiny(tmp_path, format=format), RELEASE, None, build_root=tmp_path / "b", runner=runner
        )

    assert ("-g" in runner.calls[0].argv) is debug


# --- the stamp ----------------------------------------------------------------------


def test_a_second_build_rebuilds_nothing(tmp_path: Path) -> None:
    sample = tiny(tmp_path)
    runner = recording()
    first = build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)
    built = first.bpf_object.read_bytes()

    second = build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)

    assert first.output.rebuilt and len(runner.calls) == 1
    assert not second.output.rebuilt and second.output.commands == ()
    assert second.bpf_object == tmp_path / "b" / RELEASE / "samples" / "tiny" / "tiny_kern.o"
    assert second.bpf_object.read_bytes() == built
    assert second.user_program is None
    assert "-target bpf" in first.output.log_path.read_text()


@pytest.mark.parametrize("changed", ["tiny_kern.c", "tiny.h", "../include/shared.h"])
def test_a_changed_source_or_local_header_rebuilds(tmp_path: Path, changed: str) -> None:
    sample = tiny(tmp_path)
    runner = recording()
    build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)
    append(sample.directory / changed, "\n/* changed */\n")

    again = build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)

    assert again.output.rebuilt and len(runner.calls) == 2


def test_changed_kernel_headers_rebuild(tmp_path: Path) -> None:
    headers = fake_headers(tmp_path)
    sample = tiny(tmp_path)
    runner = recording()
    first = build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)
    append(headers / "linux" / "bpf.h", "\n/* a newer kernel */\n")

    again = build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)

    assert first.output.include_dir == headers
    assert again.output.rebuilt and len(runner.calls) == 2


def test_a_later_run_takes_the_header_trees_digest_from_the_build_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = fake_headers(tmp_path)
    sample = tiny(tmp_path)
    runner = recording()
    build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)
    (kept,) = (tmp_path / "b" / build.HEADER_DIGESTS).iterdir()
    # A later run (this process forgets what it read): the tree's files are not read
    # again while their paths, sizes and times are the ones the digest was kept for.
    monkeypatch.setattr(build, "_header_digests", {})
    header = headers / "linux" / "bpf.h"
    before = header.stat()
    text = header.read_text()
    end = text.rindex("*/")  # the comment after the last #endif: another word, same size
    header.write_text(text[: end - 4] + text[end - 4 : end].swapcase() + text[end:])
    assert header.stat().st_size == before.st_size and header.read_text() != text
    os.utime(header, ns=(before.st_atime_ns, before.st_mtime_ns))

    again = build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)

    assert not again.output.rebuilt and len(runner.calls) == 1
    assert kept.read_text().strip() in build._header_digests.values()
    # A header with another time is read again, and the sample rebuilt.
    os.utime(header, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    monkeypatch.setattr(build, "_header_digests", {})
    third = build.build_sample(sample, RELEASE, headers, build_root=tmp_path / "b", runner=runner)
    assert third.output.rebuilt and len(runner.calls) == 2


def test_changed_flags_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = tiny(tmp_path)
    runner = recording()
    build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)
    monkeypatch.setattr(build, "BPF_CFLAGS", (*build.BPF_CFLAGS, "-DCHANGED"))

    again = build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b", runner=runner)

    assert again.output.rebuilt and len(runner.calls) == 2
    assert "-DCHANGED" in runner.calls[1].argv


def test_each_release_builds_into_its_own_directory(tmp_path: Path) -> None:
    sample = tiny(tmp_path)
    runner = recording()
    one = build.build_sample(sample, "5.10", None, build_root=tmp_path / "b", runner=runner)

    other = build.build_sample(sample, "6.12", None, build_root=tmp_path / "b", runner=runner)

    assert other.output.rebuilt and len(runner.calls) == 2
    assert one.bpf_object.parent != other.bpf_object.parent


# --- failures -----------------------------------------------------------------------


def test_a_compiler_error_names_the_log_which_keeps_the_output(tmp_path: Path) -> None:
    sample = tiny(tmp_path, kern="int broken(void) { return undeclared; }\n")
    log_path = tmp_path / "b" / RELEASE / "samples" / "tiny" / build.LOG_NAME

    with pytest.raises(BuildError) as raised:
        build.build_sample(sample, RELEASE, None, build_root=tmp_path / "b")

    message = str(raised.value)
    assert f"building samples/tiny for kernel {RELEASE} failed" in message
    assert f"log: {log_path}" in message
    assert "undeclared" in message
    logged = log_path.read_text()
    assert logged.startswith("$ ") and "-target bpf" in logged.splitlines()[0]
    assert "use of undeclared identifier 'undeclared'" in logged
    assert not (log_path.parent / build.STAMP_NAME).exists()
    assert not (log_path.parent / "tiny_kern.o").exists()


def test_headers_without_bpf_h_are_refused(tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()

    with pytest.raises(BuildError, match=r"no linux/bpf\.h.*kernel 6\.12"):
        build.build_sample(tiny(tmp_path), "6.12", tmp_path / "include", build_root=tmp_path / "b")


def rebuild_broken(tmp_path: Path, **changes: str) -> tuple[BpfObjectError, Path, bytes, str]:
    """Build the good sample, then its folder with a changed source and ``changes``.

    The failure, the object's path, and the object and stamp the good build left.
    """
    root = tmp_path / "samples"
    folder = write_sample(root)
    good = build.build_sample(samples.load(folder), RELEASE, None, build_root=tmp_path / "b")
    kept = good.bpf_object.read_bytes(), (good.output.directory / build.STAMP_NAME).read_text()
    shutil.rmtree(folder)
    write_sample(root, kern=KERN + "\n/* rebuilt */\n", **changes)
    with pytest.raises(BpfObjectError) as raised:
        build.build_sample(samples.load(folder), RELEASE, None, build_root=tmp_path / "b")
    return raised.value, good.bpf_object, *kept


def test_a_missing_program_section_fails_before_anything_is_replaced(tmp_path: Path) -> None:
    error, obj, old_object, old_stamp = rebuild_broken(tmp_path, section="socket9")

    assert "socket9" in str(error)
    assert obj.read_bytes() == old_object
    assert (obj.parent / build.STAMP_NAME).read_text() == old_stamp
    assert [p.name for p in obj.parent.iterdir() if p.name.startswith(".build-")] == []


def test_map_sizes_that_differ_from_the_layouts_fail_before_anything_is_replaced(
    tmp_path: Path,
) -> None:
    error, obj, old_object, old_stamp = rebuild_broken(tmp_path, value="<i")

    assert str(error).endswith(
        "tiny_kern.o: map counts has 4-byte keys and 8-byte values, "
        "but samples/tiny/sample.py declares 4 and 4"
    )
    assert obj.read_bytes() == old_object
    assert (obj.parent / build.STAMP_NAME).read_text() == old_stamp


def test_a_current_stamp_does_not_excuse_an_object_that_no_longer_matches(
    tmp_path: Path,
) -> None:
    # The descriptor is no input of the build: a changed layout alone rebuilds nothing,
    # but the object on disk is still checked against it.
    root = tmp_path / "samples"
    folder = write_sample(root)
    build.build_sample(samples.load(folder), RELEASE, None, build_root=tmp_path / "b")
    (folder / samples.DESCRIPTOR).write_text(
        (folder / samples.DESCRIPTOR).read_text().replace('Layout("<q"', 'Layout("<I"')
    )

    with pytest.raises(BpfObjectError, match=r"8-byte values, .* declares 4 and 4"):
        build.build_sample(samples.load(folder), RELEASE, None, build_root=tmp_path / "b")


# --- loaders ------------------------------------------------------------------------


def test_the_c_loader_builds_against_the_kernel_headers_once(tmp_path: Path) -> None:
    (loader,) = loaders.builtin(["c"])
    headers = fake_headers(tmp_path)
    runner = recording()

    first = build.build_loader(loader, RELEASE, headers, build_root=tmp_path, runner=runner)
    second = build.build_loader(loader, RELEASE, headers, build_root=tmp_path, runner=runner)

    program = first.outputs["program"]
    assert program == tmp_path / RELEASE / "loaders" / "c" / "loader-c"
    assert os.access(program, os.X_OK)
    assert first.rebuilt and not second.rebuilt
    (call,) = [c for c in runner.calls if c.program != "pkg-config"]
    assert call.argv[-3:] == ("-static", "-lelf", "-lz")  # pkg-config --static libelf
    assert next(a for a in call.argv if a.startswith("-I")) == f"-I{headers}"
    assert {str(s) for s in loader.sources} <= set(call.argv)
    # The program speaks the loader protocol: without --object it is a usage error.
    done = really_run(Call((str(program),), check=False))
    assert done.returncode == 2, done.stderr


def test_a_loader_the_guest_runs_is_linked_statically(tmp_path: Path) -> None:
    (loader,) = loaders.builtin(["c"])
    built = build.build_loader(loader, RELEASE, fake_headers(tmp_path), build_root=tmp_path)

    with built.outputs["program"].open("rb") as program:
        segments = [s.header.p_type for s in ELFFile(program).iter_segments()]

    # No program interpreter: the kernel maps it alone, no shared library is read.
    assert "PT_LOAD" in segments and "PT_INTERP" not in segments


def test_without_a_static_archive_a_loader_is_linked_dynamically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (loader,) = loaders.builtin(["c"])

    def no_archives(call: Call) -> str | Completed:
        if "-static" in call.argv:
            missing = "/usr/bin/ld: cannot find -lelf: No such file or directory"
            raise CommandError("cc failed", argv=call.argv, returncode=1, output=missing)
        return really_run(call)

    runner = FakeRunner(otherwise=no_archives)
    caplog.set_level(logging.INFO, logger="harness.build")

    built = build.build_loader(
        loader, RELEASE, fake_headers(tmp_path), build_root=tmp_path, runner=runner
    )

    compiles = [c.argv for c in runner.calls if c.program != "pkg-config"]
    assert [("-static" in argv) for argv in compiles] == [True, False]
    with built.outputs["program"].open("rb") as program:
        assert any(s.header.p_type == "PT_INTERP" for s in ELFFile(program).iter_segments())
    assert "linking dynamically" in caplog.text
    assert "$ " + shlex.join(compiles[1]) in built.log_path.read_text()


def test_a_failed_dynamic_retry_names_the_command_that_failed_last(tmp_path: Path) -> None:
    (loader,) = loaders.builtin(["c"])

    def no_libelf(call: Call) -> str:
        missing = "/usr/bin/ld: cannot find -lelf: No such file or directory"
        raise CommandError("cc failed", argv=call.argv, returncode=1, output=missing)

    runner = FakeRunner({"pkg-config": really_run}, otherwise=no_libelf)

    with pytest.raises(BuildError) as failed:
        build.build_loader(
            loader, RELEASE, fake_headers(tmp_path), build_root=tmp_path, runner=runner
        )

    dynamic = [c.argv for c in runner.calls if c.program != "pkg-config"][-1]
    assert "-static" not in dynamic
    assert f"$ {shlex.join(dynamic)}\n" in str(failed.value)
    assert "cannot find -lelf" in str(failed.value)


def test_a_loader_that_does_not_compile_is_built_once(tmp_path: Path) -> None:
    (loader,) = loaders.builtin(["c"])
    runner = FakeRunner(otherwise=refusing)
    runner.handlers["pkg-config"] = really_run

    with pytest.raises(BuildError, match="refused"):
        build.build_loader(
            loader, RELEASE, fake_headers(tmp_path), build_root=tmp_path, runner=runner
        )

    # Not a missing archive: the static link is not tried again as a dynamic one.
    assert [c.program for c in runner.calls if c.program != "pkg-config"] == ["cc"]


def test_the_in_process_loader_has_nothing_to_build(tmp_path: Path) -> None:
    (python,) = loaders.builtin(["python"])

    with pytest.raises(BuildError, match="loader python has nothing to build"):
        build.build_loader(python, RELEASE, None, build_root=tmp_path)


# --- a sample added by adding a folder ----------------------------------------------


def test_a_new_sample_folder_is_discovered_and_built_without_editing_the_harness(
    tmp_path: Path,
) -> None:
    root = tmp_path / "samples"
    write_sample(root, "newcomer")
    write_sample(root, "another")

    found = samples.discover(root)

    assert list(found) == ["another", "newcomer"]
    newcomer = found["newcomer"]
    built = build.build_sample(newcomer, RELEASE, None, build_root=tmp_path / "b")
    assert built.bpf_object == tmp_path / "b" / RELEASE / "samples" / "newcomer" / "tiny_kern.o"
    obj = build.check_object(newcomer, built.bpf_object)
    assert [p.section for p in obj.programs] == ["socket1"]
    assert [(m.name, m.key_size, m.value_size) for m in obj.maps] == [("counts", 4, 8)]
    assert obj.license == "GPL"
    assert obj == elf.read_object(built.bpf_object)


def test_a_descriptor_that_imports_its_traffic_from_harness_samples_still_loads(
    tmp_path: Path,
) -> None:
    # Descriptors written before harness.packets existed, an A/B baseline's among them
    # (read by this harness), import the traffic steps from harness.samples.
    folder = write_sample(tmp_path / "samples")
    descriptor = folder / samples.DESCRIPTOR
    older = descriptor.read_text().replace(
        "from harness.packets import Tcp\n"
        "from harness.samples import Column, Layout, MapCheck, Program, Sample\n",
        "from harness.samples import Column, Layout, MapCheck, Program, Sample, Tcp\n",
    )
    assert older != descriptor.read_text()
    descriptor.write_text(older)

    loaded = samples.load(folder)

    assert [type(step).__name__ for step in loaded.traffic] == ["Tcp"]


def test_pkg_config_is_asked_once_a_process_for_each_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(build, "_pkg_config_answers", {})
    runner = FakeRunner({"pkg-config": lambda call: f"-l{call.argv[-1]} -lz\n"})

    first = build.guest_link_options(["pkg-config:elf"], runner)
    again = build.guest_link_options(["pkg-config:elf", "-lm"], runner)
    dynamic = build.link_options(["pkg-config:elf"], runner)

    assert first == [build.STATIC, "-lelf", "-lz"]
    assert again == [build.STATIC, "-lelf", "-lz", "-lm"]
    assert dynamic == ["-lelf", "-lz"]
    assert [c.argv[1:] for c in runner.calls] == [("--static", "--libs", "elf"), ("--libs", "elf")]


def test_a_package_pkg_config_does_not_know_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(build, "_pkg_config_answers", {})
    runner = FakeRunner({"pkg-config": lambda call: Completed(call.argv, 1, "", "no", None)})

    for _ in range(2):
        with pytest.raises(BuildError, match="pkg-config knows no nosuch"):
            build.link_options(["pkg-config:nosuch"], runner)

    assert len(runner.calls) == 2
