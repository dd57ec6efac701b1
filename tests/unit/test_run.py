"""harness.run without a VM: kernel choices, cases, skips, build failures, the guest's plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness import loaders, run, samples
from harness.errors import ConfigError, NotAKernelError, UnknownSeriesError
from harness.kernels import KernelOptions
from harness.kernels.model import Kernel, KernelEntry

SAMPLES = samples.discover()


def entry(release: str, config: Path | None = None) -> KernelEntry:
    return KernelEntry(Kernel("x", None, release, "debian"), Path("/k/vmlinux"), None, config, None)


def test_all_is_every_series_of_the_catalog_none_of_them_explicit() -> None:
    choices = run.kernel_choices("all", KernelOptions())

    assert [c.spec for c in choices] == ["5.10", "6.1", "6.6", "6.12", "7.2"]
    assert not any(c.explicit for c in choices)


def test_named_series_are_explicit_and_unknown_ones_refused_without_the_network() -> None:
    assert run.kernel_choices("6.12, 5.10,6.12", KernelOptions()) == [
        run.KernelChoice("6.12", True),
        run.KernelChoice("5.10", True),
    ]
    with pytest.raises(UnknownSeriesError, match=r"unknown kernel '9\.9': the catalog has 5\.10"):
        run.kernel_choices("6.1,9.9", KernelOptions())
    with pytest.raises(NotAKernelError, match="no such file"):
        run.kernel_choices("./no/such/bzImage", KernelOptions())
    with pytest.raises(ConfigError, match="names no kernel"):
        run.kernel_choices(",", KernelOptions())


def test_a_loader_runs_only_for_the_formats_it_loads() -> None:
    cases = run.plan_cases(list(SAMPLES.values()), loaders.builtin())
    pairs = {(c.sample.name, c.loader.name) for c in cases}

    assert ("sockex1", "c") in pairs and ("sockex1-btf", "libbpf") in pairs
    assert ("sockex1", "libbpf") not in pairs and ("sockex1-btf", "c") not in pairs
    assert ("sockex3-btf", "python") in pairs


def test_a_sample_newer_than_the_kernel_is_skipped_with_its_reason() -> None:
    sample = dataclasses.replace(
        SAMPLES["sockex1"], min_kernel="6.6", min_kernel_reason="it needs the frobnicator"
    )

    assert run.why_not(sample, entry("6.1.0-57-amd64")) == (
        "needs Linux 6.6 or later: it needs the frobnicator"
    )
    assert run.why_not(sample, entry("6.12.118+deb13-amd64")) is None
    assert run.why_not(sample, entry("7.2.13+deb14-amd64")) is None


def test_a_sample_whose_kernel_options_are_missing_is_skipped(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("CONFIG_BPF_SYSCALL=y\n# CONFIG_NET_CLS_BPF is not set\nCONFIG_BPF_JIT=m\n")
    sample = dataclasses.replace(
        SAMPLES["sockex1"], kconfig=("CONFIG_BPF_JIT", "CONFIG_NET_CLS_BPF")
    )

    assert run.why_not(sample, entry("6.1.0-57-amd64", config)) == (
        "the kernel lacks CONFIG_NET_CLS_BPF"
    )


def prepared(broken: dict[str, str] | None = None) -> run.PreparedKernel:
    from harness.build import BuildOutput, SampleBuild

    builds = {
        name: SampleBuild(
            SAMPLES[name],
            BuildOutput(
                name, "r", Path("/b"), {"object": Path(f"/b/{name}.o")}, None, Path("/b/l"), False
            ),
        )
        for name in ("sockex1", "sockex3")
    }
    return run.PreparedKernel(
        "6.1", entry("6.1.0-57-amd64"), builds, {"c": Path("/b/loader-c")}, {}, {}, broken or {}
    )


def test_the_guest_plan_carries_each_case_s_request_and_traffic(tmp_path: Path) -> None:
    cases = run.plan_cases(
        [SAMPLES["sockex1"], SAMPLES["sockex3"]], loaders.builtin(["python", "c"])
    )

    plan = run.guest_plan(prepared(), cases, tmp_path)

    by_id = {(c.sample, c.loader): c for c in plan.cases}
    assert set(by_id) == {
        ("sockex1", "python"),
        ("sockex1", "c"),
        ("sockex3", "python"),
        ("sockex3", "c"),
    }
    python3 = by_id[("sockex3", "python")]
    assert python3.command == ()
    assert python3.request.object == Path("/b/sockex3.o")
    assert python3.request.attach == (("socket/0", "socket:lo"),)
    assert ("jmp_table", 5, "socket/5") in python3.request.prog_arrays
    assert python3.request.dump == ("flow_map",)
    assert python3.traffic == SAMPLES["sockex3"].traffic
    assert python3.result == tmp_path / "sockex3" / "python.json"
    assert by_id[("sockex1", "c")].command == ("/b/loader-c",)


def test_cases_of_what_did_not_build_are_left_out_of_the_plan(tmp_path: Path) -> None:
    cases = run.plan_cases(
        [SAMPLES["sockex1"], SAMPLES["sockex3"]], loaders.builtin(["python", "c"])
    )
    broken = prepared({"sample sockex3": "clang failed", "loader c": "cc failed"})

    plan = run.guest_plan(broken, cases, tmp_path)

    assert [(c.sample, c.loader) for c in plan.cases] == [("sockex1", "python")]
    assert broken.problem(cases[-1]) == "clang failed"


def test_each_run_has_its_own_results_directory_and_latest_points_at_the_newest(
    tmp_path: Path,
) -> None:
    first = run.new_results_dir(tmp_path)
    (first / "junit.xml").write_text("first")
    second = run.new_results_dir(tmp_path)

    assert first != second and (first / "junit.xml").read_text() == "first"
    assert run.latest_results_dir(tmp_path).resolve() == second.resolve()


def test_a_loader_command_of_the_users_loads_the_formats_it_declares(tmp_path: Path) -> None:
    program = tmp_path / "my-loader"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)

    classic_only = loaders.parse_command(f"mine:classic={program} --verbose")
    every = loaders.parse_command(f"mine={program}")

    assert classic_only.formats == ("classic",)
    assert classic_only.command == (str(program), "--verbose")
    assert every.formats == ("classic", "btf")
    with pytest.raises(ConfigError, match="unknown format xdp"):
        loaders.parse_command(f"mine:xdp={program}")
    with pytest.raises(ConfigError, match="is not an executable file"):
        loaders.parse_command(f"mine={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="no -"):
        loaders.parse_command(f"my-loader={program}")
    with pytest.raises(ConfigError, match="exists already"):
        loaders.select("all", [f"c={program}"])
