"""A kernel release's own user programs on the host kernel, through the guest's own path.

The release's ``sockex1`` and ``sockex2`` are built from a source tree already kept in
the kernel cache (``invoke test --sample kernel:all`` keeps one; without one the test
is skipped: host tests do not download), then run as the guest runs them (the guest
bundle in ``unshare -n``, so ``lo`` carries only their own ping), and their output is
judged by :func:`harness.upstream.check_output`. Needs root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness import paths, run, upstream
from harness.guest import bundle
from harness.guest.plan import PLAN_NAME, write_plan
from harness.guest.result import load_result
from harness.kernels import cache, source
from harness.kernels.model import KernelEntry
from harness.paths import PROJECT_ROOT
from harness.proc import SubprocessRunner

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (iputils-ping)"),
]

NAMES = ("sockex1", "sockex2")
GUEST_TIMEOUT = 300.0


def kept() -> tuple[KernelEntry, source.SourceTree] | None:
    """A cached kernel whose release's source is kept, newest series first."""
    for path, manifest in reversed(cache.cached_entries(paths.cache_dir())):
        tree = source.read_tree(path, manifest.release)
        if tree is not None:
            return cache.entry_of(path, manifest, cache.kernel_of(manifest)), tree
    return None


def test_the_releases_own_programs_count_their_ping(tmp_path: Path) -> None:
    found = kept()
    if found is None:
        pytest.skip("no release's source is kept in the kernel cache (run --sample kernel:all)")
    entry, tree = found
    built = upstream.build_release(tree, entry, NAMES, build_root=tmp_path / "build")
    assert not built.broken, built.broken
    available = upstream.available()
    chosen = [upstream.variant(available[upstream.PREFIX + n], tree) for n in NAMES]
    builds = {s.name: built.sample_build(s, entry.release, entry.headers) for s in chosen}
    prepared = run.PreparedKernel("host", entry, builds, {}, {})
    cases = [run.Case(s, upstream.OWN) for s in chosen]
    results = tmp_path / "results"
    plan = run.guest_plan(prepared, cases, results)
    assert [c.command for c in plan.cases] == [(str(built.programs[n]),) for n in NAMES]
    write_plan(results / PLAN_NAME, plan)
    made = bundle.ensure_bundle()
    assert made is not None
    done = SubprocessRunner().run(
        ["unshare", "-n", *bundle.guest_argv(results / PLAN_NAME, made)],
        check=False,
        cwd=PROJECT_ROOT,
        timeout=GUEST_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    for sample, case in zip(chosen, cases, strict=True):
        result = load_result(run.case_result_path(results, case))
        assert upstream.check_output(sample, result) == [], result.details
        assert result.details["stdout"].count("\n") >= 1
