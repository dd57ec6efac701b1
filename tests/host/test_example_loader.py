"""The example loader (``examples/stdlib_loader.py``) speaks the loader protocol.

It joins a run as a user's own does, through ``--loader-cmd``
(:func:`harness.loaders.parse_command`), and each classic sample, built for the host,
runs as in a VM: ``unshare -n python3 -m harness.guest PLAN``, judged by
:func:`harness.checks.judge`. A BTF object, which it does not load, must end as one
line of error. Needs root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from harness import checks, loaders, run, samples
from harness.build import build_sample
from harness.guest.plan import PLAN_NAME, write_plan
from harness.guest.result import GuestResult, load_result
from harness.kernels.model import Kernel, KernelEntry
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

RELEASE = os.uname().release
EXAMPLE = PROJECT_ROOT / "examples" / "stdlib_loader.py"
LOADER = loaders.parse_command(f"stdlib={EXAMPLE}")
SAMPLES = samples.discover()
CLASSIC = [s for s in SAMPLES.values() if s.format == "classic"]
BTF = [s for s in SAMPLES.values() if s.format == "btf"]
#: How long one guest run may take before the test gives up on it (a hang, not a speed).
GUEST_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> run.PreparedKernel:
    """Every sample built for the host kernel, as a prepared kernel."""
    root = tmp_path_factory.mktemp("build")
    builds = {name: build_sample(s, RELEASE, None, build_root=root) for name, s in SAMPLES.items()}
    kernel = Kernel(spec="host", series=None, release=RELEASE, origin="local")
    entry = KernelEntry(kernel, image=Path("/"), modules=None, config=None, headers=None)
    return run.PreparedKernel("host", entry, builds, programs={}, skipped={})


def run_guest(
    prepared: run.PreparedKernel, case: run.Case, results: Path
) -> tuple[Completed, GuestResult]:
    """``python3 -m harness.guest`` on the plan of ``case``, in a network namespace of its own."""
    plan = run.guest_plan(prepared, [case], results)
    assert [c.command for c in plan.cases] == [LOADER.command]
    write_plan(results / PLAN_NAME, plan)
    done = SubprocessRunner().run(
        ["unshare", "-n", sys.executable, "-m", "harness.guest", str(results / PLAN_NAME)],
        check=False,
        cwd=PROJECT_ROOT,
        timeout=GUEST_TIMEOUT,
    )
    return done, load_result(run.case_result_path(results, case))


@pytest.mark.parametrize("sample", CLASSIC, ids=lambda s: s.name)
def test_the_example_loader_passes_every_classic_sample(
    host: run.PreparedKernel, sample: samples.Sample, tmp_path: Path
) -> None:
    case = run.Case(sample, LOADER)

    done, result = run_guest(host, case, tmp_path)

    assert done.returncode == 0, done.stderr
    assert (result.sample, result.loader, result.error) == (sample.name, "stdlib", None)
    judgement = checks.judge(sample, result, release=RELEASE)
    assert judgement.problems == []
    assert judgement.entries > 0
    assert set(judgement.cells) == {column.header for column in sample.columns}


def test_every_classic_sample_is_tested() -> None:
    # The parametrization is only as wide as this: a classic sample discovery missed
    # would never be run through the example.
    assert {"sockex1", "sockex2", "sockex3"} <= {s.name for s in CLASSIC}
    assert BTF, "no BTF sample to show the example refusing one"


@pytest.mark.parametrize("sample", BTF[:1], ids=lambda s: s.name)
def test_a_btf_object_is_one_line_of_error(
    host: run.PreparedKernel, sample: samples.Sample, tmp_path: Path
) -> None:
    done, result = run_guest(host, run.Case(sample, LOADER), tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {sample.name}, stdlib loader: "), lines[0]
    assert 'only classic SEC("maps") objects' in lines[0]
    assert result.error is not None
    assert "Traceback" not in done.stderr + result.error
    assert result.error.count("\n") == 0, result.error


def test_bad_arguments_are_a_usage_error() -> None:
    done = SubprocessRunner().run(
        [*LOADER.command, "--object", "x.o", "--attach", "socket1:lo"], check=False
    )

    assert done.returncode == 2
    assert "--attach socket1:lo: not SECTION:socket:IFACE" in done.stderr
