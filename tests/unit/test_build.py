"""Building sockex1: commands, the stamp, compiler errors, the object check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fakes import Call, FakeRunner, really_run
from sockex1_objects import build_host

from harness import build
from harness.errors import BpfObjectError, BuildError, CommandError


def recording() -> FakeRunner:
    """Runs commands for real and remembers them."""
    return FakeRunner(otherwise=really_run)


def compiler_error(call: Call) -> str:
    raise CommandError(
        "clang failed",
        argv=call.argv,
        returncode=1,
        output="sockex1_kern.c:3:10: fatal error: 'linux/bpf.h' file not found",
    )


def copy_sources(tmp_path: Path) -> Path:
    sources = tmp_path / "src"
    shutil.copytree(build.SAMPLE_DIR, sources)
    return sources


def fake_headers(tmp_path: Path) -> Path:
    """An include directory shaped like the kernel cache's: linux/, asm/, asm-generic/."""
    headers = tmp_path / "include"
    for sub in ("linux", "asm-generic"):
        shutil.copytree(Path("/usr/include") / sub, headers / sub)
    shutil.copytree(Path("/usr/include") / build.HOST_MULTIARCH / "asm", headers / "asm")
    return headers


def test_include_flags_put_the_kernel_headers_first(tmp_path: Path) -> None:
    headers = tmp_path / "include"
    headers.mkdir()
    argv = build.bpf_argv("clang", headers, Path("k.c"), Path("k.o"))

    assert argv[:4] == ["clang", "-O2", "-Wall", "-target"]
    assert argv.index(f"-I{headers}") < argv.index("-c")
    assert not any(a.startswith("-I/usr/include") for a in argv)


def test_host_headers_include_the_multiarch_directory() -> None:
    assert build.include_flags(None) == ("-I/usr/include", "-I/usr/include/x86_64-linux-gnu")


def test_second_build_rebuilds_nothing(tmp_path: Path) -> None:
    runner = recording()
    first = build.build_sample("6.1.0-test", None, build_root=tmp_path, runner=runner)
    compiled = len(runner.calls)

    second = build.build_sample("6.1.0-test", None, build_root=tmp_path, runner=runner)

    assert first.rebuilt and compiled == 2
    assert not second.rebuilt and len(runner.calls) == compiled
    assert second.bpf_object == tmp_path / "6.1.0-test" / "sockex1_kern.o"
    assert second.c_loader.is_file() and second.bpf_object.is_file()
    assert "-target bpf" in first.log_path.read_text()


def test_changed_source_rebuilds(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path)
    runner = recording()
    build.build_sample("r", None, build_root=tmp_path / "b", runner=runner, source_dir=sources)
    kern = sources / "sockex1_kern.c"
    kern.write_text(kern.read_text() + "\n/* changed */\n")

    again = build.build_sample(
        "r", None, build_root=tmp_path / "b", runner=runner, source_dir=sources
    )

    assert again.rebuilt and len(runner.calls) == 4


def test_changed_headers_rebuild(tmp_path: Path) -> None:
    headers = fake_headers(tmp_path)
    runner = recording()
    first = build.build_sample("r", headers, build_root=tmp_path / "b", runner=runner)
    (headers / "linux" / "bpf.h").write_text(
        (headers / "linux" / "bpf.h").read_text() + "\n/* a newer kernel */\n"
    )

    again = build.build_sample("r", headers, build_root=tmp_path / "b", runner=runner)

    assert first.include_dir == headers
    assert any(f"-I{headers}" in call.argv for call in runner.calls)
    assert again.rebuilt and len(runner.calls) == 4


def test_compiler_error_names_sample_kernel_and_message(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as raised:
        build.build_sample(
            "5.10.0-46-amd64",
            None,
            build_root=tmp_path,
            runner=FakeRunner(otherwise=compiler_error),
        )

    message = str(raised.value)
    assert "sample sockex1" in message
    assert "kernel 5.10.0-46-amd64" in message
    assert "'linux/bpf.h' file not found" in message
    assert not (tmp_path / "5.10.0-46-amd64" / "sockex1_kern.o").exists()


def test_real_compiler_error_in_the_source(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path)
    (sources / "sockex1_kern.c").write_text("int broken(void) { return undeclared; }\n")

    with pytest.raises(BuildError, match=r"(?s)sockex1 for kernel 6\.1-x.*undeclared"):
        build.build_sample("6.1-x", None, build_root=tmp_path / "b", source_dir=sources)
    assert not (tmp_path / "b" / "6.1-x" / build.STAMP_NAME).exists()


def test_headers_without_bpf_h_are_refused(tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()

    with pytest.raises(BuildError, match=r"no linux/bpf\.h.*kernel 6\.12"):
        build.build_sample("6.12", tmp_path / "include", build_root=tmp_path / "b")


def test_object_without_the_map_reference_fails_the_check(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path)
    kern = sources / "sockex1_kern.c"
    kern.write_text(
        kern.read_text().replace(
            "bytes = bpf_map_lookup_elem(&my_map, &protocol);", "bytes = (long *)0;"
        )
    )

    with pytest.raises(BpfObjectError, match="no R_BPF_64_64 relocation against my_map"):
        build.build_sample("r", None, build_root=tmp_path / "b", source_dir=sources)
    assert not (tmp_path / "b" / "r" / "sockex1_kern.o").exists()


def test_check_object_accepts_the_built_sample(tmp_path: Path) -> None:
    output = build_host(tmp_path)

    assert build.check_object(output.bpf_object).license == "GPL"
