"""sockex1 on the host kernel, each run in a private network namespace.

``unshare -n`` gives every run a ``lo`` of its own (the scenario brings it up),
so the only packets on it are the ones the scenario sends: the sample's map must
equal, byte for byte, what the independent capture counted. Needs root.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.bpf import elf, loader
from harness.build import BuildOutput, bpf_argv, build_sample
from harness.checks import Expectation, problems
from harness.errors import HarnessError, VerifierError
from harness.guest.result import PROTOCOLS, SampleResult, load_result
from harness.guest.scenario import LOADERS
from harness.guest.traffic import ICMP_DATA
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner, require

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), packet sockets, netns)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

DATA = PROJECT_ROOT / "tests" / "data" / "sockex1"
TCP_BYTES = 300_000
UDP_BYTES = 20_000
ICMP_COUNT = 10


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildOutput:
    return build_sample("host", None, build_root=tmp_path_factory.mktemp("build"))


def compile_data(name: str, out_dir: Path) -> Path:
    output = out_dir / f"{name}_kern.o"
    clang = require("clang", "clang")
    SubprocessRunner().run(bpf_argv(clang, None, DATA / f"{name}_kern.c", output))
    return output


def run_guest(loader_name: str, obj: Path, c_loader: Path, out: Path, *extra: str) -> Completed:
    """``python3 -m harness.guest`` in a network namespace of its own."""
    argv = [
        "unshare",
        "-n",
        sys.executable,
        "-m",
        "harness.guest",
        "--loader",
        loader_name,
        "--object",
        str(obj),
        "--c-loader",
        str(c_loader),
        "--out",
        str(out),
        *extra,
    ]
    return SubprocessRunner().run(argv, check=False, cwd=PROJECT_ROOT, timeout=180)


def corrupt(source: Path, target: Path) -> Path:
    """The object with its section header table cut off."""
    target.write_bytes(source.read_bytes()[:300])
    return target


def assert_counts_match(result: SampleResult, sent: dict[str, int]) -> None:
    # The VM tests' judgement, and then stricter checks that hold in a private netns.
    expected = Expectation(
        release=os.uname().release,
        tcp_bytes=sent["tcp"],
        udp_bytes=sent["udp"],
        icmp_count=sent["icmp"] // ICMP_DATA,
    )
    assert problems(result, expected) == []
    assert result.error is None
    assert result.other_frames == 0
    for name in PROTOCOLS:
        count = result.protocols[name]
        described = f"{name}: map {count.map_bytes} B, capture {count.capture_bytes} B"
        assert count.map_bytes == count.capture_bytes, described
        assert count.drops == 0, described
        assert count.payload_bytes == sent[name], described
        if sent[name]:
            # Each frame is seen leaving and arriving on lo, headers included.
            assert count.map_bytes >= 2 * count.payload_bytes, described
            assert count.packets % 2 == 0, described
        else:
            assert count.map_bytes == 0 and count.packets == 0, described


@pytest.mark.parametrize("loader_name", LOADERS)
def test_map_equals_capture_for_tcp_udp_icmp(
    built: BuildOutput, tmp_path: Path, loader_name: str
) -> None:
    done = run_guest(
        loader_name,
        built.bpf_object,
        built.c_loader,
        tmp_path,
        f"--tcp-bytes={TCP_BYTES}",
        f"--udp-bytes={UDP_BYTES}",
        f"--icmp-count={ICMP_COUNT}",
    )

    assert done.returncode == 0, done.stderr
    result = load_result(tmp_path / f"{loader_name}.json")
    assert result.loader == loader_name
    assert result.release == os.uname().release
    assert_counts_match(
        result, {"tcp": TCP_BYTES, "udp": UDP_BYTES, "icmp": ICMP_COUNT * ICMP_DATA}
    )


def test_both_loaders_with_tcp_only(built: BuildOutput, tmp_path: Path) -> None:
    done = run_guest("both", built.bpf_object, built.c_loader, tmp_path)

    assert done.returncode == 0, done.stderr
    for loader_name in LOADERS:
        result = load_result(tmp_path / f"{loader_name}.json")
        assert_counts_match(result, {"tcp": 256 * 1024, "udp": 0, "icmp": 0})


@pytest.mark.parametrize("loader_name", LOADERS)
def test_corrupted_object_is_one_line_of_error(
    built: BuildOutput, tmp_path: Path, loader_name: str
) -> None:
    bad = corrupt(built.bpf_object, tmp_path / "bad_kern.o")

    done = run_guest(loader_name, bad, built.c_loader, tmp_path / "out")

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {loader_name} loader: ")
    assert "bad_kern.o" in lines[0]
    assert load_result(tmp_path / "out" / f"{loader_name}.json").error


def test_c_program_on_a_corrupted_object_says_one_line(built: BuildOutput, tmp_path: Path) -> None:
    bad = corrupt(built.bpf_object, tmp_path / "bad_kern.o")

    done = SubprocessRunner().run([str(built.c_loader), "--harness", str(bad)], check=False)

    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(bad) in done.stderr


@pytest.mark.parametrize("loader_name", LOADERS)
def test_verifier_rejection_keeps_the_log(
    built: BuildOutput, tmp_path: Path, loader_name: str
) -> None:
    rejected = compile_data("rejected", tmp_path)

    done = run_guest(loader_name, rejected, built.c_loader, tmp_path / "out")

    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "verifier rejected" in done.stderr
    error = load_result(tmp_path / "out" / f"{loader_name}.json").error
    assert error is not None and "invalid mem access" in error


def test_python_loader_verifier_error_carries_the_log(tmp_path: Path) -> None:
    rejected = compile_data("rejected", tmp_path)

    with pytest.raises(VerifierError) as raised:
        loader.load(rejected)

    assert "invalid mem access" in raised.value.log
    assert "map_value_or_null" in raised.value.log


@pytest.mark.skipif(
    Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text().strip() == "0",
    reason="unprivileged bpf(2) is allowed on this host",
)
def test_without_privilege_the_loader_says_run_as_root(built: BuildOutput) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.bpf import loader\n"
        "from harness.errors import BpfPermissionError\n"
        "try:\n"
        f"    loader.load(Path({str(built.bpf_object)!r}))\n"
        "except BpfPermissionError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    done = SubprocessRunner().run(
        [
            require("setpriv", "util-linux"),
            "--bounding-set=-all",
            "--inh-caps=-all",
            sys.executable,
            "-c",
            script,
        ],
        check=False,
        cwd=PROJECT_ROOT,
    )

    assert done.returncode == 3, done.stdout + done.stderr
    assert "run as root or with CAP_BPF" in done.stdout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kernel_load_of_mutated_objects_raises_only_harness_errors(
    built: BuildOutput, data: st.DataObject
) -> None:
    """The whole Python loader (with the kernel) on corrupted objects."""
    image = bytearray(built.bpf_object.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(image) - 1))
        image[position] = data.draw(st.integers(0, 255))
    assume(_maps_are_small(bytes(image)))
    try:
        obj = elf.parse_object(bytes(image), Path("mutated_kern.o"))
        loader.load(obj).close()
    except HarnessError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_c_program_on_mutated_objects_fails_cleanly(
    built: BuildOutput, data: st.DataObject
) -> None:
    """The C loader on corrupted objects: a clean exit status, never a crash by a signal."""
    image = bytearray(built.bpf_object.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(image) - 1))
        image[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(image))))
    assume(_maps_are_small(bytes(image[:cut])))
    with tempfile.TemporaryDirectory() as scratch:
        mutated = Path(scratch) / "mutated_kern.o"
        mutated.write_bytes(bytes(image[:cut]))
        done = SubprocessRunner().run(
            ["unshare", "-n", str(built.c_loader), "--harness", str(mutated)],
            check=False,
            input="",
            timeout=60,
        )
    assert done.returncode in (0, 1), done.stderr
    if done.returncode == 1:
        assert done.stderr.strip(), "a failure must say why"


#: A mutated map definition may ask the kernel for gigabytes; such objects are not loaded.
_MAP_BYTES_LIMIT = 16 * 1024 * 1024


def _maps_are_small(image: bytes) -> bool:
    """Whether every map definition the image's ``maps`` section holds is small."""
    import io

    from elftools.elf.elffile import ELFFile

    try:
        section = ELFFile(io.BytesIO(image)).get_section_by_name("maps")
        raw = section.data() if section is not None else b""
    except Exception:
        return True  # unreadable: neither loader gets as far as creating a map
    for at in range(0, len(raw) - len(raw) % 20, 20):
        _, key_size, value_size, max_entries, _ = elf.MAP_DEF.unpack_from(raw, at)
        if (key_size + value_size) * max_entries > _MAP_BYTES_LIMIT:
            return False
    return True
