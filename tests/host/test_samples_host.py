"""Every sample with every loader on the host kernel, each case in a network namespace of its own.

The same path as a VM run, without the VM: each sample and program loader is built
for the host's release against the host's headers, :func:`harness.run.guest_plan`
writes the plan, ``unshare -n python3 -S BUNDLE PLAN`` runs it with the guest bundle
a VM runs (:mod:`harness.guest.bundle`; the guest brings up a ``lo`` that carries only
the case's own traffic) and
:func:`harness.checks.judge` judges each case. Broken objects, from
``tests/data/sockex1`` or made by cutting or patching the built sockex1 object, must
end as one line of error in the case's result and fail the judgement. Needs root.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from harness import checks, loaders, run, samples
from harness.build import SampleBuild, bpf_argv, build_loader, build_sample
from harness.guest import bundle, kernel_log
from harness.guest.plan import PLAN_NAME, write_plan
from harness.guest.result import GuestResult, load_result
from harness.kernels.model import Kernel, KernelEntry
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner, require

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

RELEASE = os.uname().release
SAMPLES = samples.discover()
LOADERS = loaders.builtin()
CASES = run.plan_cases(list(SAMPLES.values()), LOADERS)
#: The broken objects are variations of sockex1, loaded by every loader it applies to.
SOCKEX1 = [case for case in CASES if case.sample.name == "sockex1"]
DATA = PROJECT_ROOT / "tests" / "data" / "sockex1"
#: How long one guest run may take before the test gives up on it (a hang, not a speed).
GUEST_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> run.PreparedKernel:
    """Every sample and program loader built for the host kernel, as a prepared kernel."""
    root = tmp_path_factory.mktemp("build")
    builds = {name: build_sample(s, RELEASE, None, build_root=root) for name, s in SAMPLES.items()}
    programs = {
        loader.name: build_loader(loader, RELEASE, None, build_root=root).outputs["program"]
        for loader in LOADERS
        if loader.sources
    }
    kernel = Kernel(spec="host", series=None, release=RELEASE, origin="local")
    entry = KernelEntry(kernel, image=Path("/"), modules=None, config=None, headers=None)
    return run.PreparedKernel("host", entry, builds, programs, skipped={})


def run_guest(
    prepared: run.PreparedKernel, cases: Sequence[run.Case], results: Path
) -> tuple[Completed, list[GuestResult]]:
    """The guest bundle on the plan of ``cases``, in a network namespace of its own."""
    plan = run.guest_plan(prepared, cases, results)
    assert len(plan.cases) == len(cases)
    write_plan(results / PLAN_NAME, plan)
    made = bundle.ensure_bundle()
    assert made is not None, "the guest bundle could not be built (see the log)"
    # As the VM runs it: the interpreter's shared objects unpacked first (here beside
    # the results, not in the guest's /run), when a busybox can unpack them.
    unpack_in = str(results / "runtime")
    guest = bundle.guest_argv(results / PLAN_NAME, made, shutil.which("busybox"), unpack_in)
    done = SubprocessRunner().run(
        ["unshare", "-n", *guest],
        check=False,
        cwd=PROJECT_ROOT,
        timeout=GUEST_TIMEOUT,
    )
    return done, [load_result(run.case_result_path(results, case)) for case in cases]


def with_object(prepared: run.PreparedKernel, sample: str, obj: Path) -> run.PreparedKernel:
    """``prepared`` with ``sample``'s built object replaced by ``obj``."""
    build = prepared.builds[sample]
    output = dataclasses.replace(build.output, outputs={**build.output.outputs, "object": obj})
    builds = {**prepared.builds, sample: SampleBuild(build.sample, output)}
    return dataclasses.replace(prepared, builds=builds)


# --- every sample passes --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_maps_hold_what_the_capture_saw(
    host: run.PreparedKernel, case: run.Case, tmp_path: Path
) -> None:
    done, (result,) = run_guest(host, [case], tmp_path)

    assert done.returncode == 0, done.stderr
    assert not (tmp_path / kernel_log.NAME).exists()  # not asked: the host's log stays there
    assert (result.sample, result.loader, result.error) == (
        case.sample.name,
        case.loader.name,
        None,
    )
    judgement = checks.judge(case.sample, result, release=RELEASE)
    assert judgement.problems == []
    assert judgement.entries > 0
    assert set(judgement.cells) == {column.header for column in case.sample.columns}


def test_the_discovered_samples_and_loaders_make_the_cases() -> None:
    # The parametrization above is only as wide as this: a sample that discovery
    # missed, or a loader that applies to nothing, would be a test never run.
    assert {"sockex1", "sockex2", "sockex3"} <= set(SAMPLES)
    assert {case.sample.name for case in CASES} == set(SAMPLES)
    assert {case.loader.name for case in SOCKEX1} >= {"python", "c"}


# --- broken objects ---------------------------------------------------------------------


def compile_data(name: str, out_dir: Path) -> Path:
    """``tests/data/sockex1/<name>_kern.c`` compiled with the build's own clang command."""
    output = out_dir / f"{name}_kern.o"
    SubprocessRunner().run(
        bpf_argv(require("clang", "clang"), None, DATA / f"{name}_kern.c", output)
    )
    return output


def truncated(host: run.PreparedKernel, out_dir: Path) -> Path:
    """The built sockex1 object with its section header table cut off."""
    output = out_dir / "truncated_kern.o"
    output.write_bytes(host.builds["sockex1"].bpf_object.read_bytes()[:300])
    return output


def from_data(name: str) -> Callable[[run.PreparedKernel, Path], Path]:
    return lambda host, out_dir: compile_data(name, out_dir)


#: Each broken object, and what the first line of the case's error must say.
BROKEN: dict[str, tuple[Callable[[run.PreparedKernel, Path], Path], str]] = {
    "truncated": (truncated, "truncated_kern.o"),
    "bad_map_size": (from_data("bad_map_size"), "section maps holds 24 bytes"),
    "no_license": (from_data("no_license"), "no license section"),
    "unknown_symbol": (from_data("unknown_symbol"), "counter"),
    "rejected": (from_data("rejected"), "verifier rejected program"),
}


def assert_one_line_of_error(done: Completed, result: GuestResult, case: run.Case) -> str:
    """The guest said why in one line and kept the error in the result; that line."""
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: sockex1, {case.loader.name} loader: "), lines[0]
    assert "Traceback" not in done.stderr
    assert result.error and "Traceback" not in result.error
    judgement = checks.judge(case.sample, result, release=RELEASE)
    assert judgement.problems == [
        f"the {case.loader.name} loader failed in the guest: {result.error}"
    ]
    return lines[0]


@pytest.mark.parametrize("broken", BROKEN)
@pytest.mark.parametrize("case", SOCKEX1, ids=lambda case: case.loader.name)
def test_a_broken_object_is_one_line_of_error(
    host: run.PreparedKernel, case: run.Case, broken: str, tmp_path: Path
) -> None:
    make, says = BROKEN[broken]
    obj = make(host, tmp_path)

    done, (result,) = run_guest(with_object(host, "sockex1", obj), [case], tmp_path / "results")

    line = assert_one_line_of_error(done, result, case)
    assert says in line


def test_a_verifier_rejection_keeps_the_verifier_log(
    host: run.PreparedKernel, tmp_path: Path
) -> None:
    rejected = compile_data("rejected", tmp_path)

    done, results = run_guest(with_object(host, "sockex1", rejected), SOCKEX1, tmp_path / "out")

    assert done.returncode == 1
    for case, result in zip(SOCKEX1, results, strict=True):
        assert result.error is not None and "invalid mem access" in result.error, case.id


# --- relocations ------------------------------------------------------------------------

R_BPF_64_64 = 1
SHT_PROGBITS = 1
LD_IMM64 = 0x18


def relocations_of(image: bytes, program: str) -> tuple[int, int, int]:
    """The section header offset of ``program``'s relocation section, its data, and the code's."""
    elf = ELFFile(io.BytesIO(image))
    rel = elf.get_section_by_name(f".rel{program}")
    code = elf.get_section_by_name(program)
    assert rel is not None and code is not None
    index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == rel.name)
    header: int = elf["e_shoff"] + index * elf["e_shentsize"]
    return header, rel["sh_offset"], code["sh_offset"]


def skipped_relocation(image: bytes) -> bytes:
    """The map reference left unrelocated: the relocation section no longer is one."""
    header, _, _ = relocations_of(image, "socket1")
    return image[: header + 4] + struct.pack("<I", SHT_PROGBITS) + image[header + 8 :]


def retargeted_relocation(image: bytes) -> bytes:
    """The map reference's relocation moved onto the program's first instruction."""
    _, rel, code = relocations_of(image, "socket1")
    assert image[code] != LD_IMM64  # the first instruction is not the map's load
    return image[:rel] + struct.pack("<Q", 0) + image[rel + 8 :]


@pytest.mark.parametrize("mutate", [skipped_relocation, retargeted_relocation])
@pytest.mark.parametrize("case", SOCKEX1, ids=lambda case: case.loader.name)
def test_an_object_whose_map_reference_is_not_relocated_fails(
    host: run.PreparedKernel, case: run.Case, mutate: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    # Without its relocation the program's map pointer is a plain number: whatever the
    # loader makes of it, the case must not pass.
    mutated = tmp_path / "mutated_kern.o"
    mutated.write_bytes(mutate(host.builds["sockex1"].bpf_object.read_bytes()))

    done, (result,) = run_guest(with_object(host, "sockex1", mutated), [case], tmp_path / "out")

    if result.error is not None:
        assert_one_line_of_error(done, result, case)
    else:
        assert checks.judge(case.sample, result, release=RELEASE).problems != []
