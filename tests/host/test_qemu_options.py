"""The qemu options of a TCG boot (:data:`harness.vm.TCG_QEMU_OPTIONS`) reach qemu and work.

``vng --dry-run`` prints the qemu command it would run without booting: the harness's
options must be on it, and vng's CPU model must still be ``max``, the model whose
property they switch off (qemu ignores a ``-global`` for a model no CPU is, so a vng
that chose another model would make them do nothing without a word). qemu itself,
started paused and told to quit, refuses a CPU property it does not know, so a renamed
feature would fail here rather than in every boot.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import vm
from harness.kernels.model import Kernel, KernelEntry

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(shutil.which("vng") is None, reason="needs vng (virtme-ng)"),
    pytest.mark.skipif(shutil.which(vm.QEMU) is None, reason=f"needs {vm.QEMU}"),
]

RELEASE = "6.1.0-57-amd64"


def fake_entry(tmp_path: Path) -> KernelEntry:
    """An image vng can name a release for (``--dry-run`` reads no more of it)."""
    image = tmp_path / "boot" / f"vmlinux-{RELEASE}"
    image.parent.mkdir(parents=True)
    image.write_text(f"Linux version {RELEASE} (builder) #1 SMP\n")
    modules = tmp_path / "lib" / "modules" / RELEASE
    modules.mkdir(parents=True)
    kernel = Kernel(spec="6.1", series="6.1", release=RELEASE, origin="debian")
    return KernelEntry(kernel=kernel, image=image, modules=modules, config=None, headers=None)


def test_vng_hands_the_tcg_options_to_qemu_whose_cpu_is_max(tmp_path: Path) -> None:
    argv = vm.vng_argv(fake_entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path)
    argv.insert(1, "--dry-run")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    words = shlex.split(done.stdout.strip().splitlines()[-1])
    assert words[0].endswith(vm.QEMU)
    models = [words[i + 1] for i, word in enumerate(words) if word == "-cpu"]
    assert models == ["max"], f"vng's CPU model: {models}"
    options = list(vm.TCG_QEMU_OPTIONS)
    starts = [i for i in range(len(words)) if words[i : i + len(options)] == options]
    assert starts, f"{options} not in: {shlex.join(words)}"


def paused_qemu(*options: str) -> subprocess.CompletedProcess[str]:
    """qemu with vng's TCG machine and CPU model and ``options``, started paused and quit."""
    argv = [vm.QEMU, "-machine", "q35", "-accel", "tcg", "-cpu", "max", *options]
    argv += ["-display", "none", "-nodefaults", "-monitor", "stdio", "-S"]
    return subprocess.run(argv, input="quit\n", capture_output=True, text=True, timeout=60)


def test_qemu_accepts_the_tcg_options() -> None:
    done = paused_qemu(*vm.TCG_QEMU_OPTIONS)
    assert done.returncode == 0, done.stderr


def test_qemu_refuses_a_cpu_property_it_does_not_know() -> None:
    # What the test above relies on: a misspelt feature is an error, not ignored.
    assert paused_qemu("-global", "max-x86_64-cpu.no-such-feature=off").returncode != 0
