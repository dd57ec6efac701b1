"""harness.vm without a VM: the vng command, the console parser, outcomes, the KVM probe."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import Answer, Call, FakeRunner

from harness import vm
from harness.errors import (
    CommandTimeoutError,
    ConfigError,
    GuestError,
    KernelPanicError,
    VmLostError,
    VmTimeoutError,
)
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


def test_vng_argv_appends_kernel_options_after_panic_reboot(tmp_path: Path) -> None:
    argv = vm.vng_argv(
        entry(tmp_path), ["true"], accel="tcg", results_dir=tmp_path, append=["oops=panic"]
    )
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert appended == ["panic=-1", "init_on_alloc=0", "oops=panic"]


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
