"""harness.vm without a VM: the vng command, the console parser, outcomes, the KVM probe."""

from __future__ import annotations

import base64
import lzma
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import Answer, Call, FakeRunner

from harness import paths, proc, vm
from harness.errors import (
    CommandStalledError,
    CommandTimeoutError,
    ConfigError,
    GuestError,
    KernelPanicError,
    VmLostError,
    VmStalledError,
    VmTimeoutError,
)
from harness.kernels import cache as kernel_cache
from harness.kernels.model import Kernel, KernelEntry
from harness.proc import Completed

CONSOLE = Path(__file__).resolve().parent.parent / "data" / "console"
RELEASE = "6.1.0-56-amd64"


def entry(tmp_path: Path) -> KernelEntry:
    root = tmp_path / "kernel"
    image = root / "boot" / f"vmlinux-{RELEASE}"
    return KernelEntry(
        kernel=Kernel(spec="6.1", series="6.1", release=RELEASE, origin="debian"),
        image=image,
        modules=root / "lib" / "modules" / RELEASE,
        config=None,
        headers=None,
    )


def vm_exits(returncode: int, console: str, writes: Mapping[str, str] | None = None) -> Answer:
    """A VM run that leaves ``console`` in the log and ``writes`` in the results dir."""

    def answer(call: Call) -> Completed:
        argv, log_path = call.argv, call.log_path
        assert log_path is not None
        log_path.write_text(console)
        rwdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--rwdir="))
        for name, text in (writes or {}).items():
            (Path(rwdir) / name).write_text(text)
        return Completed(tuple(argv), returncode, "", "", log_path)

    return answer


def vm_hangs(console: str) -> Answer:
    def answer(call: Call) -> Completed:
        assert call.log_path is not None
        call.log_path.write_text(console)
        raise CommandTimeoutError("killed", argv=call.argv, log_path=call.log_path)

    return answer


def vm_stalls(console: str) -> Answer:
    def answer(call: Call) -> Completed:
        assert call.log_path is not None
        call.log_path.write_text(console)
        raise CommandStalledError("stalled", argv=call.argv, log_path=call.log_path)

    return answer


def recorded(name: str) -> str:
    return (CONSOLE / name).read_text()


# --- vng_argv -------------------------------------------------------------------------


def test_vng_argv_under_tcg_boots_the_image_and_runs_the_guest_command(tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = vm.vng_argv(
        entry(tmp_path),
        ["/usr/bin/python3", "-m", "harness.guest", "--out", str(results)],
        accel="tcg",
        results_dir=results,
        memory="768M",
        cpus=1,
        cwd=Path("/src/harness"),
    )
    assert argv[0] == "vng"
    assert argv[argv.index("--run") + 1] == str(entry(tmp_path).image)
    assert "--disable-kvm" in argv
    assert "--force-9p" in argv
    assert "--verbose" in argv
    assert argv[argv.index("--memory") + 1] == "768M"
    assert argv[argv.index("--cpus") + 1] == "1"
    assert f"--rwdir={results}" in argv
    assert "--cwd=/src/harness" in argv
    assert shlex.split(argv[argv.index("--exec") + 1]) == [
        "/usr/bin/python3",
        "-m",
        "harness.guest",
        "--out",
        str(results),
    ]


def test_vng_argv_under_kvm_keeps_kvm_and_uses_virtiofs_when_present(tmp_path: Path) -> None:
    argv = vm.vng_argv(entry(tmp_path), ["true"], accel="kvm", results_dir=tmp_path, virtiofs=True)
    assert "--disable-kvm" not in argv
    assert "--force-9p" not in argv


def qemu_options(argv: list[str]) -> list[str]:
    """What vng is asked to hand qemu: each ``--qemu-opts`` split as vng splits it."""
    prefix = "--qemu-opts="
    return [word for arg in argv if arg.startswith(prefix) for word in arg[len(prefix) :].split()]


def test_vng_argv_switches_off_erms_of_tcgs_max_cpu_and_nothing_under_kvm(tmp_path: Path) -> None:
    tcg = vm.vng_argv(entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path)
    assert qemu_options(tcg) == ["-global", "max-x86_64-cpu.erms=off"]
    kvm = vm.vng_argv(entry(tmp_path), ["true"], accel="kvm", results_dir=tmp_path)
    assert qemu_options(kvm) == []


def test_vng_argv_appends_kernel_options_after_panic_reboot(tmp_path: Path) -> None:
    argv = vm.vng_argv(
        entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path, append=["oops=panic"]
    )
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert appended == [*vm.BASE_APPEND, "oops=panic"]
    assert appended[0] == "panic=-1"
    assert {"cryptomgr.notests", "initcall_blacklist=crypto_kdf108_init"} <= set(appended)


def test_with_the_init_stand_ins_the_kernel_boots_quietly_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    shims = tmp_path / "shims"
    argv = vm.vng_argv(
        entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path, shims=shims,
        append=["loglevel=7"],
    )  # fmt: skip
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    # the caller's own loglevel comes after the quiet one, and the kernel takes the last
    assert appended.index("loglevel=4") < appended.index("loglevel=7")
    assert "panic_print=0x20" in appended  # a panic still prints the whole log
    assert appended[-1] == vm.shims_path(shims)
    long_init = vm.vng_argv(entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path)
    assert "loglevel=4" not in long_init  # without the stand-in nothing would raise it again


def test_vng_argv_turns_off_zeroing_of_allocations_for_every_kernel(tmp_path: Path) -> None:
    # Zeroing the 9p client's per-request buffers makes 5.10 crawl under TCG.
    argv = vm.vng_argv(entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path)
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert "init_on_alloc=0" in appended


def test_vng_argv_keeps_an_argument_with_spaces_whole(tmp_path: Path) -> None:
    argv = vm.vng_argv(
        entry(tmp_path), ["sh", "-c", "echo a b; exit 3"], accel="tcg", results_dir=tmp_path
    )
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo a b; exit 3"]


def test_vng_argv_rejects_an_unknown_accelerator(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hvf"):
        vm.vng_argv(entry(tmp_path), ["true"], accel="hvf", results_dir=tmp_path)


def appended(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]


def test_vng_argv_puts_the_init_stand_ins_first_on_the_guests_path(tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    argv = vm.vng_argv(entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path, shims=shims)
    path = [o for o in appended(argv) if o.startswith("PATH=")]
    # The initramfs's script runs under this PATH too: it needs /bin for its busybox.
    assert path == [f"PATH={shims}:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert argv.index("--append") < argv.index("--exec")


def test_vng_argv_without_stand_ins_leaves_the_guests_path_alone(tmp_path: Path) -> None:
    argv = vm.vng_argv(entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path)
    assert not [o for o in appended(argv) if o.startswith("PATH=")]


# --- the guest's init stand-ins ---------------------------------------------------------


def fake_guest(root: Path, ports: Mapping[str, str]) -> None:
    """A guest's /sys/class/virtio-ports and /usr with udevd, under ``root``."""
    for port, name in ports.items():
        (root / "sys/class/virtio-ports" / port).mkdir(parents=True)
        (root / "sys/class/virtio-ports" / port / "name").write_text(name + "\n" if name else "")
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "usr/lib/systemd/systemd-udevd").write_text("")


def run_shim(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_SHIM_ROOT": str(root)}
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_the_tmpfiles_stand_in_links_the_ports_and_hides_udevd(tmp_path: Path) -> None:
    shims = vm.install_init_shims(tmp_path / "cache", None)
    assert shims is not None
    root = tmp_path / "guest"
    fake_guest(root, {"vport1p1": "virtme.stdin", "vport7p1": "virtme.ret", "vport0p0": ""})
    done = run_shim(shims / "systemd-tmpfiles", root, "--create", "--boot")
    assert done.returncode == 0, done.stderr
    links = root / "dev/virtio-ports"
    assert {p.name: os.readlink(p) for p in links.iterdir()} == {
        "virtme.stdin": "../vport1p1",
        "virtme.ret": "../vport7p1",
    }
    # virtme-ng-init looks for udevd after tmpfiles; without it, it skips udev.
    assert not (root / "usr/lib/systemd/systemd-udevd").exists()


# busybox's read takes a byte at a time, and a sysctl file gives nothing at a non-zero
# offset: what it reads from /proc/sys/kernel/printk is "4", then end of file.
@pytest.mark.parametrize(
    ("level", "after"), [("4\t4\t1\t7\n", "7"), ("4", "7"), ("6\t4\t1\t7\n", "6")]
)
def test_the_tmpfiles_stand_in_raises_only_the_quiet_boots_console_level(
    tmp_path: Path, level: str, after: str
) -> None:
    shims = vm.install_init_shims(tmp_path / "cache", None)
    assert shims is not None
    root = tmp_path / "guest"
    fake_guest(root, {})
    printk = root / "proc/sys/kernel/printk"
    printk.parent.mkdir(parents=True)
    printk.write_text(level)

    assert run_shim(shims / "systemd-tmpfiles", root).returncode == 0

    assert printk.read_text().split()[0] == after


def test_the_tmpfiles_stand_in_without_ports_still_succeeds(tmp_path: Path) -> None:
    shims = vm.install_init_shims(tmp_path / "cache", None)
    assert shims is not None
    root = tmp_path / "guest"
    fake_guest(root, {})
    assert run_shim(shims / "systemd-tmpfiles", root).returncode == 0
    assert list((root / "dev/virtio-ports").iterdir()) == []


def fake_busybox(tmp_path: Path) -> Path:
    """A busybox that runs ``sh`` as /bin/sh and records any other applet's arguments."""
    record = tmp_path / "busybox-calls"
    busybox = tmp_path / "busybox"
    busybox.write_text(
        f'#!/bin/sh\nif [ "$1" = sh ]; then shift; exec /bin/sh "$@"; fi\necho "$*" >> {record}\n'
    )
    busybox.chmod(0o755)
    return busybox


def test_the_ip_stand_in_brings_lo_up_with_busybox(tmp_path: Path) -> None:
    busybox = fake_busybox(tmp_path)
    shims = vm.install_init_shims(tmp_path / "cache", str(busybox))
    assert shims is not None
    assert (shims / "systemd-tmpfiles").read_text().startswith(f"#!{busybox} sh\n")
    done = run_shim(shims / "ip", tmp_path, "link", "set", "dev", "lo", "up")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "busybox-calls").read_text() == "ip link set dev lo up\n"


@pytest.mark.skipif(
    not any(os.access(p, os.X_OK) for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")),
    reason="iproute2 is not installed",
)
def test_the_ip_stand_in_hands_other_commands_to_the_real_ip(tmp_path: Path) -> None:
    busybox = fake_busybox(tmp_path)
    shims = vm.install_init_shims(tmp_path / "cache", str(busybox))
    assert shims is not None
    done = run_shim(shims / "ip", tmp_path, "-V")
    assert done.returncode == 0, done.stderr
    assert "iproute2" in done.stdout + done.stderr
    assert not (tmp_path / "busybox-calls").exists()


def test_without_busybox_only_tmpfiles_is_replaced_under_sh() -> None:
    scripts = vm.init_shims(None)
    assert list(scripts) == ["systemd-tmpfiles"]
    assert scripts["systemd-tmpfiles"].startswith("#!/bin/sh\n")


def test_install_init_shims_writes_once_per_content(tmp_path: Path) -> None:
    first = vm.install_init_shims(tmp_path, "/bin/busybox")
    assert first is not None
    assert sorted(p.name for p in first.iterdir()) == ["ip", "systemd-tmpfiles"]
    assert all(os.access(p, os.X_OK) for p in first.iterdir())
    assert vm.install_init_shims(tmp_path, "/bin/busybox") == first
    other = vm.install_init_shims(tmp_path, None)
    assert other is not None and other != first
    assert [p.name for p in first.parent.iterdir() if p.name.startswith(".")] == []


def test_install_init_shims_gives_up_on_a_path_the_kernel_command_line_would_split(
    tmp_path: Path,
) -> None:
    assert vm.install_init_shims(tmp_path / "my cache", None) is None


# --- the strings stand-in vng finds the release with -------------------------------------

#: How vng 1.42 reads a release from the output of ``strings IMAGE``.
VNG_RELEASE = re.compile(r"Linux version (\S{3,})")


def fake_image(path: Path, *banners: bytes) -> Path:
    """An image whose banners sit between binary data and lookalikes vng does not take."""
    junk = bytes(range(256)) * 64
    path.write_bytes(
        junk
        + b"Linux version %s (%s)\x00"  # a format string: no release after the blank
        + b"Linux version 6.\x00"  # too short a release
        + junk
        + b"\n".join(banners)
        + junk
    )
    return path


def fake_strings(tmp_path: Path) -> Path:
    """A ``strings`` that records its arguments and prints a line of its own."""
    script = tmp_path / "real-strings"
    script.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "strings-calls"}\necho real\n')
    script.chmod(0o755)
    return script


def run_strings(shims: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(shims / "strings"), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_strings_stand_in_prints_the_first_banner_only(tmp_path: Path) -> None:
    image = fake_image(
        tmp_path / "vmlinux",
        b"\x01Linux version 6.1.0-99-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00",
        b"Linux version 9.9.9-other\x00",
    )
    shims = vm.install_host_shims(tmp_path / "cache", str(fake_strings(tmp_path)))
    assert shims is not None
    done = run_strings(shims, str(image))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Linux version 6.1.0-99-amd64\n"
    assert not (tmp_path / "strings-calls").exists()


def test_the_strings_stand_in_ends_the_release_at_an_unprintable_byte(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "vmlinux", b"Linux version 6.12.1+deb13-amd64\x00\x7fELF")
    shims = vm.install_host_shims(tmp_path / "cache", str(fake_strings(tmp_path)))
    assert shims is not None
    assert run_strings(shims, str(image)).stdout == "Linux version 6.12.1+deb13-amd64\n"


@pytest.mark.skipif(shutil.which("strings") is None, reason="binutils is not installed")
def test_the_strings_stand_in_gives_vng_the_release_the_real_strings_gives(
    tmp_path: Path,
) -> None:
    image = fake_image(
        tmp_path / "vmlinux",
        b"\x00Linux version 5.10.0-46-amd64 (debian-kernel@lists.debian.org) (gcc) #1 SMP",
        b"Linux version 6.1.0-1-amd64\x00",
    )
    shims = vm.install_host_shims(tmp_path / "cache", shutil.which("strings"))
    assert shims is not None
    real = subprocess.run(["strings", str(image)], capture_output=True, text=True, check=True)
    ours = run_strings(shims, str(image))
    found = [VNG_RELEASE.search(out) for out in (real.stdout, ours.stdout)]
    assert [m.group(1) if m else None for m in found] == ["5.10.0-46-amd64"] * 2


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-a", "IMAGE"], id="an option"),
        pytest.param(["IMAGE", "IMAGE"], id="two files"),
        pytest.param(["NOBANNER"], id="no banner"),
        pytest.param(["MISSING"], id="no such file"),
        pytest.param([], id="no argument"),
    ],
)
def test_the_strings_stand_in_hands_anything_else_to_the_real_strings(
    tmp_path: Path, args: list[str]
) -> None:
    paths = {
        "IMAGE": fake_image(tmp_path / "vmlinux", b"Linux version 6.1.0-99-amd64\x00"),
        "NOBANNER": fake_image(tmp_path / "other"),
        "MISSING": tmp_path / "missing",
    }
    given = [str(paths.get(a, a)) for a in args]
    shims = vm.install_host_shims(tmp_path / "cache", str(fake_strings(tmp_path)))
    assert shims is not None
    done = run_strings(shims, *given)
    assert (done.returncode, done.stdout) == (0, "real\n")
    assert (tmp_path / "strings-calls").read_text() == " ".join(given) + "\n"


def test_the_strings_stand_in_without_binutils_says_what_to_install(tmp_path: Path) -> None:
    shims = vm.install_host_shims(tmp_path / "cache", None)
    assert shims is not None
    done = run_strings(shims, str(fake_image(tmp_path / "other")))
    assert done.returncode == 127
    assert "install binutils" in done.stderr
    image = fake_image(tmp_path / "vmlinux", b"Linux version 6.1.0-99-amd64\x00")
    assert run_strings(shims, str(image)).stdout == "Linux version 6.1.0-99-amd64\n"


def test_install_host_shims_writes_once_per_content(tmp_path: Path) -> None:
    first = vm.install_host_shims(tmp_path, "/usr/bin/strings")
    assert first is not None
    assert [p.name for p in first.iterdir()] == ["strings"]
    assert os.access(first / "strings", os.X_OK)
    assert vm.install_host_shims(tmp_path, "/usr/bin/strings") == first
    other = vm.install_host_shims(tmp_path, "/opt/binutils/bin/strings")
    assert other is not None and other != first


# --- the modprobe stand-in vng lists its initramfs's modules with -------------------------


def fake_modprobe(tmp_path: Path) -> Path:
    """A ``modprobe`` that records its arguments and names a module for any alias."""
    script = tmp_path / "real-modprobe"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path / "modprobe-calls"}\n'
        'for alias; do :; done\necho "insmod /lib/modules/x/$alias.ko "\n'
    )
    script.chmod(0o755)
    return script


def vng_modules(
    shims: Path, monkeypatch: pytest.MonkeyPatch, aliases: Sequence[str] | None = None
) -> list[str]:
    """The module files virtme-ng's own code puts in its initramfs for ``aliases`` (its
    own list by default), with ``shims`` first on PATH."""
    modfinder = pytest.importorskip("virtme.modfinder")
    virtmods = pytest.importorskip("virtme.virtmods")
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    listed = virtmods.MODALIASES if aliases is None else aliases
    return list(modfinder.find_modules_from_install(listed, root="/r", kver="6.1.0-99-amd64"))


@pytest.mark.parametrize(
    ("virtiofs", "unused"),
    [(False, {"virtio_mmio.ko", "fs-virtiofs.ko"}), (True, {"virtio_mmio.ko"})],
    ids=["9p root", "virtiofs root"],
)
def test_vng_puts_no_module_for_a_device_the_vm_lacks_in_its_initramfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, virtiofs: bool, unused: set[str]
) -> None:
    real = fake_modprobe(tmp_path)
    shims = vm.install_host_shims(tmp_path / "cache", None, str(real), virtiofs=virtiofs)
    assert shims is not None

    modules = {Path(m).name for m in vng_modules(shims, monkeypatch)}

    assert {"fs-9p.ko", "virtio_pci.ko"} <= modules and not unused & modules
    assert virtiofs == ("fs-virtiofs.ko" in modules)
    calls = (tmp_path / "modprobe-calls").read_text().splitlines()
    assert calls[0] == "--show-depends -C /var/empty -d /r -S 6.1.0-99-amd64 -- fs-9p"
    assert not [c for c in calls if c.endswith(tuple(m.removesuffix(".ko") for m in unused))]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-r", "virtio_mmio"], id="not --show-depends"),
        pytest.param(["--show-depends", "--", "fs-9p"], id="another alias"),
        pytest.param(["--show-depends", "--", "virtio_mmio", "x"], id="not the last"),
        pytest.param([], id="no argument"),
    ],
)
def test_the_modprobe_stand_in_hands_anything_else_to_the_real_modprobe(
    tmp_path: Path, args: list[str]
) -> None:
    shims = vm.install_host_shims(tmp_path / "cache", None, str(fake_modprobe(tmp_path)))
    assert shims is not None
    done = subprocess.run(
        [str(shims / "modprobe"), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "modprobe-calls").read_text() == " ".join(args) + "\n"


def xz_modprobe(tmp_path: Path, *modules: Path) -> Path:
    """A ``modprobe`` that lists ``modules`` for any alias, as ``--show-depends`` does."""
    script = tmp_path / "real-modprobe"
    lines = "".join(f"echo 'insmod {m} '\n" for m in modules)
    script.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "modprobe-calls"}\n{lines}')
    script.chmod(0o755)
    return script


def test_vng_gets_a_decompressed_copy_of_each_xz_module_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "kernels" / "lib" / "modules" / "7.2.0-1-amd64" / "kernel"
    tree.mkdir(parents=True)
    packed = tree / "9p.ko.xz"
    packed.write_bytes(lzma.compress(b"\x7fELF 9p module", format=lzma.FORMAT_XZ))
    plain = tree / "virtio.ko"
    plain.write_bytes(b"\x7fELF virtio")
    linked = tmp_path / "compat"  # vng's temporary root, a link to the module tree
    linked.symlink_to(tree)
    cache = tmp_path / "cache"
    real = xz_modprobe(tmp_path, linked / "9p.ko.xz", linked / "virtio.ko")
    shims = vm.install_host_shims(cache, None, str(real), xz=shutil.which("xz"))
    assert shims is not None

    first = vng_modules(shims, monkeypatch, ["fs-9p"])
    # Where kernels.prune looks for a kernel's copies.
    made = kernel_cache.module_copies(cache, tmp_path / "kernels") / packed.relative_to(
        tmp_path / "kernels"
    ).with_suffix("")
    assert first == [str(made), str(linked / "virtio.ko")]
    assert made.read_bytes() == b"\x7fELF 9p module"
    stamp = made.stat().st_mtime_ns

    assert vng_modules(shims, monkeypatch, ["fs-9p"]) == first
    assert made.stat().st_mtime_ns == stamp  # not decompressed again


def test_a_module_that_does_not_decompress_is_named_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "9p.ko.xz"
    broken.write_bytes(b"not xz")
    cache = tmp_path / "cache"
    shims = vm.install_host_shims(
        cache, None, str(xz_modprobe(tmp_path, broken)), xz=shutil.which("xz")
    )
    assert shims is not None

    assert vng_modules(shims, monkeypatch, ["fs-9p"]) == [str(broken)]
    assert [p for p in (cache / paths.MODULE_COPIES).rglob("*") if p.is_file()] == []


def test_without_a_real_modprobe_there_is_no_stand_in(tmp_path: Path) -> None:
    shims = vm.install_host_shims(tmp_path / "cache", None, None)
    assert shims is not None
    assert not (shims / "modprobe").exists()  # vng says itself that it found none


def test_install_host_shims_gives_none_where_it_cannot_write(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert vm.install_host_shims(blocked, "/usr/bin/strings") is None
    assert vm.vng_env(None) is None


# --- parse_console on recorded logs ------------------------------------------------------


def test_parse_console_of_a_good_boot() -> None:
    verdict = vm.parse_console(recorded("ok-6.1.log"))
    assert not verdict.panicked
    assert verdict.reached_init
    assert not verdict.root_mount_failed
    assert verdict.oopses == ()
    assert "Power down" in verdict.tail


def test_parse_console_of_a_cloud_kernel_without_9p() -> None:
    verdict = vm.parse_console(recorded("cloud-no-9p-6.1.log"))
    assert (
        verdict.panic == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    )
    assert verdict.root_mount_failed
    assert not verdict.reached_init


def test_parse_console_of_a_crash_in_the_guest() -> None:
    verdict = vm.parse_console(recorded("sysrq-crash-6.1.log"))
    assert verdict.panic.startswith("Kernel panic - not syncing: sysrq triggered crash")
    assert verdict.reached_init
    assert verdict.oopses == ()


def test_parse_console_collects_oopses_without_their_timestamps() -> None:
    text = (
        "[    3.100000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
        "[    3.100001] #PF: supervisor read access in kernel mode\n"
        "[    3.100002] Oops: 0000 [#1] PREEMPT SMP NOPTI\n"
    )
    verdict = vm.parse_console(text)
    assert verdict.oopses == (
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "Oops: 0000 [#1] PREEMPT SMP NOPTI",
    )
    assert not verdict.panicked


def test_parse_console_of_a_guest_killed_by_the_timeout() -> None:
    verdict = vm.parse_console(recorded("timeout-6.1.log"))
    assert not verdict.panicked
    assert verdict.reached_init
    assert "starting script" in verdict.tail


def test_parse_console_keeps_only_the_last_lines() -> None:
    text = "\n".join(f"line {n}" for n in range(100))
    assert vm.parse_console(text, tail_lines=3).tail == "line 97\nline 98\nline 99"


def test_parse_console_of_nothing() -> None:
    verdict = vm.parse_console("")
    assert (verdict.panic, verdict.reached_init, verdict.tail) == ("", False, "")


# --- parse_boot_phases ------------------------------------------------------------------


def test_parse_boot_phases_of_a_boot_with_udev() -> None:
    phases = {p.name: round(p.seconds, 6) for p in vm.parse_boot_phases(recorded("ok-6.1.log"))}
    assert phases == {
        "kernel to /init": 3.832743,
        "initramfs": 0.975326,
        "init mounts": 0.33667,
        "tmpfiles": 1.546982,
        "udev": 12.274434,
        "to command start": 0.010373,
        "command": 0.829806,
        "power-off": 0.001061,
    }


def test_parse_boot_phases_of_a_lean_boot_ends_udev_where_the_init_skips_it() -> None:
    phases = {p.name: p.seconds for p in vm.parse_boot_phases(recorded("lean-init-6.1.log"))}
    assert list(phases) == [name for name, _ in vm.BOOT_MARKS]
    assert phases["udev"] < 0.5  # 12.3 s with udev in ok-6.1.log
    assert "unable to find udevd" in recorded("lean-init-6.1.log")


def test_parse_boot_phases_leaves_out_what_the_console_does_not_show() -> None:
    text = (
        "[    2.000000] Run /init as init process\n"
        "[    2.500000] virtme initramfs: done; switching to real root\n"
        "[    9.000000] Kernel panic - not syncing: Attempted to kill init!\n"
    )
    phases = vm.parse_boot_phases(text)
    assert [(p.name, p.seconds) for p in phases] == [
        ("kernel to /init", 2.0),
        ("initramfs", 0.5),
    ]


# --- run_vm outcomes ------------------------------------------------------------------


def test_run_vm_returns_when_the_guest_wrote_its_result(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(0, recorded("ok-6.1.log"), {"python.json": "{}"})])
    got = vm.run_vm(
        entry(tmp_path),
        ["true"],
        results,
        accel="tcg",
        expect=["python.json"],
        runner=runner,
    )
    assert got.accel == "tcg"
    assert got.returncode == 0
    assert got.results_dir == results
    assert got.console_log == results / "console.log"
    assert "Power down" in got.console_log.read_text()
    assert [c.timeout for c in runner.calls] == [vm.DEFAULT_TIMEOUTS["tcg"]]


def test_run_vm_boots_with_the_init_stand_ins_unless_told_not_to(tmp_path: Path) -> None:
    results = tmp_path / "results"
    ok = recorded("ok-6.1.log")
    runner = FakeRunner(
        answers=[vm_exits(0, ok, {"r.json": "{}"}), vm_exits(0, ok, {"r.json": "{}"})]
    )
    kernel = entry(tmp_path)
    cache = tmp_path / "cache"
    vm.run_vm(kernel, ["true"], results, accel="tcg", expect=["r.json"], runner=runner, cache=cache)
    vm.run_vm(
        kernel,
        ["true"],
        results,
        accel="tcg",
        expect=["r.json"],
        runner=runner,
        cache=cache,
        lean_init=False,
    )
    lean, long = (appended(list(c.argv)) for c in runner.calls)
    path = [o for o in lean if o.startswith("PATH=")]
    assert len(path) == 1
    shims = Path(path[0].removeprefix("PATH=").split(":")[0])
    assert shims.parent.parent == cache
    assert (shims / "systemd-tmpfiles").is_file()
    assert not [o for o in long if o.startswith("PATH=")]


def test_run_vm_puts_the_strings_stand_in_first_on_vngs_path_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    runner = FakeRunner(answers=[vm_exits(0, recorded("ok-6.1.log"), {"r.json": "{}"})])
    cache = tmp_path / "cache"
    vm.run_vm(
        entry(tmp_path), ["true"], tmp_path / "r", accel="tcg", expect=["r.json"],
        runner=runner, cache=cache,
    )  # fmt: skip
    (call,) = runner.calls
    assert call.env is not None
    first, rest = call.env["PATH"].split(":", 1)
    assert rest == "/usr/bin:/bin"
    assert Path(first).parent == cache / "vng-host"
    assert (Path(first) / "strings").is_file()
    assert not [o for o in appended(list(call.argv)) if first in o]


def test_run_vm_removes_a_result_left_by_an_earlier_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "python.json").write_text("{}")
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, recorded("ok-6.1.log"))])
    with pytest.raises(VmLostError, match=r"vng --run \S+ --verbose"):
        vm.run_vm(
            entry(tmp_path), ["true"], results, accel="tcg", expect=["python.json"], runner=runner
        )


VNG_FAILED = vm.VNG_FAILED


def test_run_vm_reports_a_panic_with_its_line_and_the_log(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, recorded("cloud-no-9p-6.1.log"))])
    with pytest.raises(KernelPanicError) as caught:
        vm.run_vm(entry(tmp_path), ["true"], results, accel="tcg", expect=["c.json"], runner=runner)
    message = str(caught.value)
    assert "Attempted to kill init" in message
    assert "9p" in message
    assert str(results / "console.log") in message
    assert caught.value.log_path == results / "console.log"
    assert "Kernel panic" in caught.value.console_tail


def test_run_vm_says_where_to_look_after_a_panic_of_another_cause(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, recorded("sysrq-crash-6.1.log"))])
    with pytest.raises(KernelPanicError, match="sysrq triggered crash") as caught:
        vm.run_vm(entry(tmp_path), ["true"], results, accel="tcg", expect=["c.json"], runner=runner)
    message = str(caught.value)
    assert "9p" not in message.split("--- last console lines ---")[0]
    assert "--vm-append" in message
    assert str(results / "console.log") in message


def test_run_vm_reports_a_guest_command_that_failed_before_writing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(3, recorded("guest-exit3-6.1.log"))])
    with pytest.raises(GuestError, match="exit status 3") as caught:
        vm.run_vm(
            entry(tmp_path), ["false"], results, accel="tcg", expect=["c.json"], runner=runner
        )
    assert "scenario failed" in caught.value.console_tail
    assert str(results / "console.log") in str(caught.value)


def test_run_vm_reports_a_lost_vm(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(
        answers=[vm_exits(VNG_FAILED, "qemu-system-x86_64: failed to set MSR 0x10a\n")]
    )
    with pytest.raises(VmLostError, match="never reached its init") as caught:
        vm.run_vm(entry(tmp_path), ["true"], results, accel="kvm", expect=["c.json"], runner=runner)
    assert "MSR 0x10a" in caught.value.console_tail
    assert "--accel tcg" in str(caught.value)
    assert str(results / "console.log") in str(caught.value)


def test_run_vm_quotes_what_qemu_said_when_it_would_not_start(tmp_path: Path) -> None:
    said = (
        "qemu-system-x86_64: can't apply global max-x86_64-cpu.nosuch=off: "
        "Property 'max-x86_64-cpu.nosuch' not found"
    )
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, said + "\n")])
    with pytest.raises(VmLostError) as caught:
        vm.run_vm(
            entry(tmp_path), ["true"], tmp_path / "results", accel="tcg", expect=[], runner=runner
        )
    assert f"never reached its init ({said})" in str(caught.value)


def test_parse_console_takes_qemus_first_line_not_the_guests_words() -> None:
    text = (
        "[    0.000000] Linux version 6.1.0-57-amd64\n"
        "[    1.500000] guest: qemu-system-x86_64: quoted by the guest\n"
        "qemu-system-x86_64: terminating on signal 15\n"
        "qemu-system-x86_64: a second line\n"
    )
    assert vm.parse_console(text).qemu_said == "qemu-system-x86_64: terminating on signal 15"
    assert vm.parse_console("[    0.1] booting\n").qemu_said == ""


def test_run_vm_reports_a_timeout_with_the_console_tail(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_hangs(recorded("timeout-6.1.log"))])
    with pytest.raises(VmTimeoutError, match="within 7 s") as caught:
        vm.run_vm(
            entry(tmp_path),
            ["sleep", "1000"],
            results,
            accel="tcg",
            expect=["c.json"],
            timeout=7,
            runner=runner,
        )
    assert "starting script" in caught.value.console_tail
    assert caught.value.log_path == results / "console.log"
    assert "--timeout" in str(caught.value)
    assert str(results / "console.log") in str(caught.value)


STALLED_BOOT = """\
[    1.062850] ACPI: PCI: Interrupt link LNKA configured for IRQ 10
[    1.110181] clocksource: Switched to clocksource hpet
"""


def test_run_vm_boots_again_after_a_boot_that_stalled_before_its_init(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(
        answers=[
            vm_stalls(STALLED_BOOT),
            vm_exits(0, recorded("ok-6.1.log"), {"python.json": "{}"}),
        ]
    )
    got = vm.run_vm(
        entry(tmp_path), ["true"], results, accel="tcg", expect=["python.json"], runner=runner
    )
    assert len(runner.calls) == 2
    for call in runner.calls:
        assert call.stall is not None
        assert call.stall.seconds == vm.STALL_SECONDS["tcg"]
        assert "virtme-ng-init:" in call.stall.until
    assert "Power down" in got.console_log.read_text()
    # The boot again prints the kernel's whole boot: should it stall too, its console
    # shows where the kernel was.
    first, again = (call.argv for call in runner.calls)
    assert f"loglevel={vm.QUIET_LEVEL}" in first and f"loglevel={vm.QUIET_LEVEL}" not in again
    (kept,) = got.stalled_logs
    assert kept.parent == results
    assert "Switched to clocksource hpet" in kept.read_text()


def test_run_vm_gives_up_when_every_boot_stalls(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_stalls(STALLED_BOOT)] * vm.BOOT_ATTEMPTS)
    with pytest.raises(VmStalledError, match="stalled on each of 2 boots") as caught:
        vm.run_vm(entry(tmp_path), ["true"], results, accel="tcg", expect=["c.json"], runner=runner)
    message = str(caught.value)
    assert "Switched to clocksource hpet" in message
    assert "-j 1" in message
    logs = sorted(results.glob("console.stalled-*.log"))
    assert len(logs) == vm.BOOT_ATTEMPTS
    assert all(str(path) in message for path in logs)


def test_a_short_time_limit_caps_the_stall_watch(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(0, recorded("ok-6.1.log"), {"r.json": "{}"})])
    vm.run_vm(
        entry(tmp_path), ["true"], results, accel="tcg", expect=["r.json"], timeout=9, runner=runner
    )
    assert runner.calls[0].stall == proc.Stall(9, vm._INIT_MARKERS)


# --- the accelerator probe --------------------------------------------------------------


def test_probe_bios_puts_the_exit_code_at_the_reset_vector() -> None:
    image = vm.probe_bios()
    assert len(image) == 0x10000
    # mov al, 0x10; out 0xf4, al
    assert image[0xFFF0:0xFFF4] == bytes([0xB0, 0x10, 0xE6, 0xF4])
    assert vm.PROBE_OK_STATUS == 33


def test_probe_accel_honours_an_explicit_choice(tmp_path: Path) -> None:
    runner = FakeRunner()
    assert vm.probe_accel("tcg", cache=tmp_path, runner=runner) == "tcg"
    assert vm.probe_accel("kvm", cache=tmp_path, runner=runner) == "kvm"
    assert runner.calls == []


def test_probe_accel_rejects_an_unknown_choice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kvm, tcg or auto"):
        vm.probe_accel("fast", cache=tmp_path, runner=FakeRunner())


def exits(returncode: int, stderr: str = "") -> Answer:
    def answer(call: Call) -> Completed:
        return Completed(call.argv, returncode, "", stderr)

    return answer


@dataclass
class Host:
    """The host facts the probe reads, pointed at files a test controls."""

    boot_id_path: Path
    kvm_device: Path
    cache: Path

    def probe(self, runner: FakeRunner, image: KernelEntry | None = None) -> str:
        return vm.probe_accel(
            image=image,
            cache=self.cache,
            runner=runner,
            boot_id_path=self.boot_id_path,
            kvm_device=self.kvm_device,
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0f3c-boot-1\n")
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    return Host(boot_id, kvm, tmp_path / "cache")


def test_probe_accel_falls_back_to_tcg_when_qemu_aborts_under_kvm(
    host: Host,
) -> None:
    runner = FakeRunner(answers=[exits(134, "kvm_buf_set_msrs: Assertion failed")])
    assert host.probe(runner) == "tcg"
    assert runner.calls[0].argv[0] == vm.QEMU
    assert "accel=kvm" in ",".join(runner.calls[0].argv)


def test_probe_accel_picks_kvm_when_the_probe_reaches_its_port(host: Host) -> None:
    runner = FakeRunner(answers=[exits(vm.PROBE_OK_STATUS)])
    assert host.probe(runner) == "kvm"


def test_probe_accel_falls_back_when_the_probe_guest_spins(host: Host) -> None:
    def spins(call: Call) -> Completed:
        raise CommandTimeoutError("killed", argv=call.argv)

    assert host.probe(FakeRunner(answers=[spins])) == "tcg"


def test_probe_accel_boots_the_kernel_under_kvm_when_given_one(tmp_path: Path, host: Host) -> None:
    def hangs(call: Call) -> Completed:
        raise CommandTimeoutError("killed", argv=call.argv)

    runner = FakeRunner(answers=[exits(vm.PROBE_OK_STATUS), hangs])
    assert host.probe(runner, entry(tmp_path)) == "tcg"
    assert runner.calls[1].argv[0] == "vng"
    assert "--disable-kvm" not in runner.calls[1].argv


def test_probe_accel_remembers_its_verdict_for_this_boot(host: Host, tmp_path: Path) -> None:
    kernel = entry(tmp_path)
    assert host.probe(FakeRunner(answers=[exits(vm.PROBE_OK_STATUS), exits(0)]), kernel) == "kvm"
    again = FakeRunner()
    assert host.probe(again) == "kvm"
    assert again.calls == []
    host.boot_id_path.write_text("0f3c-boot-2\n")
    after_reboot = FakeRunner(answers=[exits(1)])
    assert host.probe(after_reboot) == "tcg"
    assert len(after_reboot.calls) == 1


def test_probe_accel_remembers_kvm_only_after_a_kernel_booted_under_it(host: Host) -> None:
    # The real-mode probe alone says "kvm", but is asked again next time.
    assert host.probe(FakeRunner(answers=[exits(vm.PROBE_OK_STATUS)])) == "kvm"
    again = FakeRunner(answers=[exits(1)])
    assert host.probe(again) == "tcg"
    assert len(again.calls) == 1


def test_probe_accel_without_a_usable_kvm_device_runs_nothing(host: Host) -> None:
    host.kvm_device = host.kvm_device.with_name("absent")
    runner = FakeRunner()
    assert host.probe(runner) == "tcg"
    assert runner.calls == []


#: A 6.12 boot under TCG that oopsed while the kernel patched its own code (console
#: lines of a real boot, shortened).
PANICKED_BOOT = """\
[    1.508891]  cpu_latency_qos_init+0x16/0x40
[    1.508939]  do_one_initcall+0x5b/0x310
[    1.509402] ---[ end trace 0000000000000000 ]---
[    1.509402] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI
[    1.509462] RIP: 0010:sched_clock_cpu+0x9/0x1d0
[    1.509638] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_run_vm_boots_again_after_a_boot_that_panicked_before_its_init(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(
        answers=[
            vm_exits(VNG_FAILED, PANICKED_BOOT),
            vm_exits(0, recorded("ok-6.1.log"), {"python.json": "{}"}),
        ]
    )
    got = vm.run_vm(
        entry(tmp_path), ["true"], results, accel="tcg", expect=["python.json"], runner=runner
    )
    assert len(runner.calls) == 2
    assert "Power down" in got.console_log.read_text()
    (kept,) = got.stalled_logs
    assert kept == results / "console.panicked-1.log"
    assert "Oops: int3" in kept.read_text()


def test_run_vm_reports_a_kernel_that_panics_before_its_init_on_each_boot(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, PANICKED_BOOT)] * vm.BOOT_ATTEMPTS)
    with pytest.raises(KernelPanicError, match="Fatal exception in interrupt") as caught:
        vm.run_vm(entry(tmp_path), ["true"], results, accel="tcg", expect=["c.json"], runner=runner)
    assert len(runner.calls) == vm.BOOT_ATTEMPTS
    assert (results / "console.panicked-1.log").is_file()
    assert f"earlier boots: {results / 'console.panicked-1.log'}" in str(caught.value)


def test_run_vm_does_not_boot_again_after_a_panic_once_the_init_ran(tmp_path: Path) -> None:
    results = tmp_path / "results"
    runner = FakeRunner(answers=[vm_exits(VNG_FAILED, recorded("sysrq-crash-6.1.log"))])
    with pytest.raises(KernelPanicError):
        vm.run_vm(entry(tmp_path), ["true"], results, accel="tcg", expect=["c.json"], runner=runner)
    assert len(runner.calls) == 1  # a panic of the run's own: the verdict, not bad luck


# --- the TSC's rate, measured once per host boot ------------------------------------------

#: The lines of a 6.1 kernel log under TCG around its TSC's measurement.
_TSC_MEASURED = (
    "[    0.000000] tsc: Fast TSC calibration using PIT\n"
    "[    0.000000] tsc: Detected 2596.131 MHz processor\n"
)
_TSC_FELL_BACK = (
    "[    0.000000] tsc: Fast TSC calibration failed\n"
    "[    0.020000] tsc: Unable to calibrate against PIT\n"
    "[    0.020000] tsc: using HPET reference calibration\n"
    "[    0.020000] tsc: Detected 2594.352 MHz processor\n"
)


def test_tsc_khz_of_takes_only_a_quick_measurement_that_worked() -> None:
    assert vm.tsc_khz_of("[    0.000000] Linux version 6.1.0\n" + _TSC_MEASURED) == 2596131
    assert vm.tsc_khz_of(_TSC_FELL_BACK) is None  # measured the slow way: not kept
    assert vm.tsc_khz_of("[    0.000000] Linux version 6.1.0\n") is None


def test_vng_argv_gives_the_tsc_rate_under_tcg_only_and_before_the_callers_options(
    tmp_path: Path,
) -> None:
    kernel = entry(tmp_path)
    tcg = vm.vng_argv(
        kernel, ["true"], accel="tcg", results_dir=tmp_path, tsc_khz=2596131,
        append=["tsc_early_khz=1000000"],
    )  # fmt: skip
    kvm = vm.vng_argv(kernel, ["true"], accel="kvm", results_dir=tmp_path, tsc_khz=2596131)
    assert [o for o in appended(tcg) if o.startswith("tsc_early_khz=")] == [
        "tsc_early_khz=2596131",
        "tsc_early_khz=1000000",  # the caller's, later on the line, wins
    ]
    assert not [o for o in appended(kvm) if o.startswith("tsc_early_khz=")]


def test_run_vm_passes_on_the_tsc_rate_a_boot_of_this_host_boot_measured(tmp_path: Path) -> None:
    cache, boot_id = tmp_path / "cache", tmp_path / "boot_id"
    boot_id.write_text("0f3c-boot-1\n")
    ok = recorded("ok-6.1.log")
    writes = {"r.json": "{}", "kernel.log": "[    0.000000] Linux version 6.1.0\n" + _TSC_MEASURED}
    runner = FakeRunner(answers=[vm_exits(0, ok, writes) for _ in range(4)])

    def boot(accel: str = "tcg") -> list[str]:
        vm.run_vm(
            entry(tmp_path), ["true"], tmp_path / "r", accel=accel, expect=["r.json"],
            runner=runner, cache=cache, boot_id_path=boot_id,
        )  # fmt: skip
        return [o for o in appended(list(runner.calls[-1].argv)) if o.startswith("tsc_early")]

    assert boot() == []  # the first boot measures it
    assert (cache / "tsc" / "0f3c-boot-1").read_text() == "2596131\n"
    assert boot() == ["tsc_early_khz=2596131"]
    assert boot("kvm") == []
    boot_id.write_text("0f3c-boot-2\n")  # the host rebooted: measured again
    assert boot() == []


def test_run_vm_keeps_no_tsc_rate_the_kernel_measured_the_slow_way(tmp_path: Path) -> None:
    cache, boot_id = tmp_path / "cache", tmp_path / "boot_id"
    boot_id.write_text("0f3c-boot-1\n")
    writes = {"r.json": "{}", "kernel.log": _TSC_FELL_BACK}
    runner = FakeRunner(answers=[vm_exits(0, recorded("ok-6.1.log"), writes)])
    vm.run_vm(
        entry(tmp_path), ["true"], tmp_path / "r", accel="tcg", expect=["r.json"],
        runner=runner, cache=cache, boot_id_path=boot_id,
    )  # fmt: skip
    assert not (cache / "tsc").exists()


# --- the kernel's command line, kept whole -------------------------------------------------


def test_command_line_bytes_counts_what_the_harness_puts_on_the_line(tmp_path: Path) -> None:
    kernel = entry(tmp_path)
    short = vm.vng_argv(kernel, ["true"], accel="tcg", results_dir=tmp_path / "r")
    longer = vm.vng_argv(kernel, ["true", "x" * 300], accel="tcg", results_dir=tmp_path / "r")
    appended = vm.vng_argv(
        kernel, ["true"], accel="tcg", results_dir=tmp_path / "r", append=["loglevel=8"]
    )
    base = vm.command_line_bytes(short, kernel)
    assert base > vm.VNG_OWN_BYTES + len(" ".join(vm.BASE_APPEND))
    # The guest's command goes on the line base64-encoded.
    grown = len(base64.b64encode(shlex.join(["true", "x" * 300]).encode())) - len("dHJ1ZQ==")
    assert vm.command_line_bytes(longer, kernel) - base == grown
    assert vm.command_line_bytes(appended, kernel) - base == len(" loglevel=8")


def test_run_vm_refuses_a_boot_whose_command_line_the_kernel_would_cut(tmp_path: Path) -> None:
    runner = FakeRunner(answers=[vm_exits(0, recorded("ok-6.1.log"), {"r.json": "{}"})])
    with pytest.raises(ConfigError) as refused:
        vm.run_vm(
            entry(tmp_path), ["python3", "x" * 1500], tmp_path / "r", accel="tcg",
            expect=["r.json"], runner=runner, cache=tmp_path / "cache",
        )  # fmt: skip
    message = str(refused.value)
    assert f"more than the {vm.COMMAND_LINE_SIZE} a kernel keeps" in message
    assert "HARNESS_BUILD_DIR" in message and str(paths.PROJECT_ROOT) in message
    assert runner.calls == []  # nothing booted
