"""A loader of the user's own, tried once on the host before any kernel is booted.

A ``--loader-cmd`` that never says ``ready``, prints something other than the
protocol's JSON or hangs would fail each of its cases on every kernel, each after the
guest's wait (:data:`harness.guest.scenario.LOADER_TIMEOUT`), and a hang could take
the whole VM past its time limit. So ``invoke test`` runs each command loader once on
the host first, as the guest would (``unshare -n python3 -m harness.guest PLAN``: a
network namespace of its own, where ``lo`` carries only the case's traffic), with the
first chosen sample it applies to, built for the host.

Only a breach of the protocol stops the run here. A loader that runs and fails (the
host's kernel is not the kernels under test, and may refuse what they accept) is left
to the VMs. Without root or ``unshare`` nothing is tried.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import upstream
from harness.build import build_sample
from harness.errors import HarnessError, LoaderProtocolError
from harness.guest.plan import PLAN_NAME, write_plan
from harness.guest.result import load_result
from harness.guest.scenario import LOADER_TIMEOUT
from harness.kernels.model import Kernel, KernelEntry
from harness.loaders import Loader
from harness.paths import PROJECT_ROOT
from harness.proc import Runner, SubprocessRunner
from harness.run import Case, PreparedKernel, case_result_path, guest_plan
from harness.samples import Sample

log = logging.getLogger(__name__)

#: What the guest's error says when a loader broke the protocol rather than failed.
BREACHES = (
    "broke the loader protocol",
    "did not load and attach the sample within",
    "did not report its maps within",
    "exited with status 0 before",
)


def can_try() -> bool:
    """Whether this host can run a loader as the guest does (root, ``unshare``)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def try_on_host(
    loaders: Sequence[Loader],
    chosen: Sequence[Sample],
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
) -> None:
    """Run each command loader of ``loaders`` once on the host; raise on a protocol breach."""
    commands = [loader for loader in loaders if loader.command]
    if not commands:
        return
    if not can_try():
        log.info("not root or no unshare: the loaders of --loader-cmd are first tried in the VMs")
        return
    runner = runner or SubprocessRunner()
    release = os.uname().release
    kernel = Kernel(spec="host", series=None, release=release, origin="local")
    entry = KernelEntry(kernel, image=Path("/"), modules=None, config=None, headers=None)
    for loader in commands:
        # One of the harness's own samples: the kernel's (kernel:NAME) need its sources.
        sample = next(
            (s for s in chosen if loader.applies_to(s.format) and not upstream.is_kernel_sample(s)),
            None,
        )
        if sample is None:
            continue
        build = build_sample(sample, release, None, build_root=build_root, runner=runner)
        case = Case(sample, loader)
        prepared = PreparedKernel("host", entry, {sample.name: build}, {}, {})
        with tempfile.TemporaryDirectory(prefix="harness-preflight-") as tmp:
            results = Path(tmp)
            write_plan(results / PLAN_NAME, guest_plan(prepared, [case], results))
            runner.run(
                ["unshare", "-n", sys.executable, "-m", "harness.guest", str(results / PLAN_NAME)],
                check=False,
                cwd=PROJECT_ROOT,
                timeout=3 * LOADER_TIMEOUT,
            )
            try:
                error = load_result(case_result_path(results, case)).error
            except HarnessError as exc:
                log.info("the host run of loader %s left no result: %s", loader.name, exc)
                continue
        if error and any(breach in error for breach in BREACHES):
            first = error.strip().splitlines()[0]
            raise LoaderProtocolError(
                f"loader {loader.name}, tried on the host with {sample.name} before any boot: "
                f"{first}"
            )
        log.info("loader %s on the host with %s: %s", loader.name, sample.name, error or "ok")
