"""The kernel's own samples: selection, descriptors per release, build commands, output checks."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from fakes import Call, FakeRunner
from frames_util import both_ways

from harness import frames, kernels, packets, run, upstream
from harness.build import bpf_argv
from harness.errors import ConfigError, SampleError
from harness.guest.result import GuestResult
from harness.kernels import KernelOptions
from harness.kernels.model import Kernel, KernelEntry
from harness.kernels.source import SourceTree, SourceUnavailable
from harness.loaders import builtin
from harness.packets import Frame
from harness.paths import PROJECT_ROOT
from harness.proc import Completed, SubprocessRunner, require
from harness.samples import ProgArray, select

#: What 6.1's own programs printed in a real guest (kernel 6.1.0-57-amd64, TCG).
SOCKEX1_OUT = (
    "TCP 0 UDP 0 ICMP 0 bytes\nTCP 0 UDP 0 ICMP 0 bytes\nTCP 0 UDP 0 ICMP 196 bytes\n"
    "TCP 0 UDP 0 ICMP 392 bytes\nTCP 0 UDP 0 ICMP 588 bytes\n"
)
SOCKEX2_OUT = (
    "ip 127.0.0.1 bytes 392 packets 4\nip 127.0.0.1 bytes 784 packets 8\n"
    "ip 127.0.0.1 bytes 1176 packets 12\nip 127.0.0.1 bytes 1568 packets 16\n"
)
SOCKEX3_HEADER = "IP     src.port -> dst.port               bytes      packets\n"


def echo(kind: int, sequence: int) -> bytes:
    """A ping echo (request 8, reply 0) of 56 data bytes on lo: a 98-byte frame."""
    body = struct.pack("!BBHHH", kind, 0, 0, 1, sequence) + bytes(56)
    body = body[:2] + struct.pack("!H", packets.checksum(body)) + body[4:]
    packet = frames.ipv4("127.0.0.1", "127.0.0.1", frames.IPPROTO_ICMP, body)
    return frames.ethernet(0x0800, packet)


def pings(count: int) -> tuple[Frame, ...]:
    """What the capture sees of ``count`` echoes: request and reply, each both ways."""
    captured: list[Frame] = []
    for n in range(count):
        captured += both_ways(echo(8, n)) + both_ways(echo(0, n))
    return tuple(captured)


def result(
    sample: str, stdout: str, *, status: str = "0", stderr: str = "", count: int = 5
) -> GuestResult:
    details = {"exit_status": status, "stdout": stdout, "stderr": stderr}
    return GuestResult(sample, "own", "6.1.0-57-amd64", frames=pings(count), details=details)


KERNEL = upstream.available()


def test_all_is_the_harness_samples_and_kernel_all_the_kernels() -> None:
    assert all(not s.name.startswith("kernel:") for s in select("all", KERNEL))
    assert [s.name for s in select("kernel:all", KERNEL)] == [
        "kernel:sockex1",
        "kernel:sockex2",
        "kernel:sockex3",
    ]
    assert [s.name for s in select("sockex1,kernel:sockex2", KERNEL)] == [
        "sockex1",
        "kernel:sockex2",
    ]
    with pytest.raises(ConfigError, match="kernel:all"):
        select("kernel:sockex9", KERNEL)


def test_each_kernel_sample_gets_its_loaders_and_its_own_program() -> None:
    cases = run.plan_cases(select("kernel:sockex1", KERNEL), builtin())
    assert [c.loader.name for c in cases] == ["python", "libbpf", "own"]


def test_upstream_sockex3_is_laid_out_as_upstream() -> None:
    sample = KERNEL["kernel:sockex3"]
    assert [p.section for p in sample.programs] == [f"socket/{n}" for n in range(5)]
    assert dict(sample.prog_arrays[0].entries) == {n: f"socket/{n}" for n in range(1, 5)}
    (check,) = sample.maps
    assert check.name == "hash_map" and check.key.fields[2:4] == ("dport", "sport")
    udp = both_ways(
        frames.ethernet(
            0x0800,
            frames.ipv4(
                "127.0.0.1",
                "127.0.0.3",
                17,
                frames.udp("127.0.0.1", "127.0.0.3", b"x" * 8, 1000, 2000),
            ),
        )
    )
    ((key, value),) = sample.oracle(udp)["hash_map"].items()
    assert key[2:4] == (2000, 1000) and value[0] == 2


def tree(tmp_path: Path, files: dict[str, str]) -> SourceTree:
    root = tmp_path / "linux-source-6.1"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return SourceTree("6.1.0-57-amd64", "linux-source-6.1", "6.1.192-3", root, 0)


def test_sockex1_is_judged_by_what_its_source_counts(tmp_path: Path) -> None:
    sample = KERNEL["kernel:sockex1"]
    captured = pings(1)
    outgoing = tree(
        tmp_path / "a", {"samples/bpf/sockex1_kern.c": "if (skb->pkt_type != PACKET_OUTGOING)"}
    )
    every = tree(tmp_path / "b", {"samples/bpf/sockex1_kern.c": "value = lookup(&my_map, &index);"})
    counted = {
        t: upstream.variant(sample, t).oracle(captured)["my_map"][(frames.IPPROTO_ICMP,)]
        for t in (outgoing, every)
    }
    assert counted[outgoing] == (2 * 98,) and counted[every] == (4 * 98,)


#: The form of sockex3 from 6.12, reduced to what the variant reads: programs that are
#: functions of one section, and a prog array with a static initialiser by #defined index.
ONE_SECTION = """
#define PARSE_A 1
#define PARSE_B 3
SEC("socket")
int parse_a(struct __sk_buff *skb)
SEC("socket")
int parse_b(struct __sk_buff *skb)
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__array(values, u32 (void *));
} jumps SEC(".maps") = {
	.values = {
		[PARSE_B] = (void *)&parse_b,
		[PARSE_A]   = (void *)&parse_a,
	},
};
SEC("socket")
int start(struct __sk_buff *skb)
"""


def test_sockex3_with_one_section_names_its_programs_by_function(tmp_path: Path) -> None:
    sample = KERNEL["kernel:sockex3"]
    new = tree(tmp_path, {"samples/bpf/sockex3_kern.c": ONE_SECTION})

    adapted = upstream.variant(sample, new)

    assert [(p.name, p.attach) for p in adapted.programs] == [
        ("socket#start", "socket:lo"),
        ("socket#parse_a", ""),
        ("socket#parse_b", ""),
    ]
    assert adapted.prog_arrays == (
        ProgArray("jumps", {3: "socket#parse_b", 1: "socket#parse_a"}, filled_by="object"),
    )
    assert adapted.maps == sample.maps
    old = tree(
        tmp_path / "old", {"samples/bpf/sockex3_kern.c": 'SEC("socket/0")\nint main_prog(void)'}
    )
    assert upstream.variant(sample, old).programs == sample.programs
    # Judged by the same model of its parse as the socket/N form (SOCKEX3_PARSE, below).
    both = {
        form: upstream.variant(
            sample, tree(tmp_path / str(n), {"samples/bpf/sockex3_kern.c": form + SOCKEX3_PARSE})
        )
        for n, form in enumerate((ONE_SECTION, 'SEC("socket/0")'))
    }
    one, socket_n = both.values()
    assert one.oracle(udp_then_ping()) == socket_n.oracle(udp_then_ping())
    assert upstream.defect_note(one, udp_then_ping()).startswith("upstream defect: 2 keys")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('SEC("socket")\nint main_prog(void)', "a form of sockex3 the harness does not know"),
        (
            ONE_SECTION.replace("[PARSE_A]", "[PARSE_C]"),
            r"prog array jumps puts parse_a at \[PARSE_C\], which is not a #defined index",
        ),
        (
            ONE_SECTION.replace("&parse_a", "&parse_z"),
            r"puts parse_z at \[PARSE_A\], which is not a program of SEC\(\"socket\"\) "
            r"\(parse_a, parse_b, start\)",
        ),
        (
            ONE_SECTION + 'SEC("socket")\nint other(void)',
            "that no slot of jumps names are start, other; the one attached must be one",
        ),
    ],
)
def test_sockex3_with_one_section_in_a_form_not_understood_says_why(
    tmp_path: Path, text: str, complaint: str
) -> None:
    new = tree(tmp_path, {"samples/bpf/sockex3_kern.c": text})

    with pytest.raises(SampleError, match=complaint):
        upstream.variant(KERNEL["kernel:sockex3"], new)


#: How 5.10 to 7.2's sockex3_kern.c parse and count (abridged): the flow record per CPU,
#: the GRE flags read with load_half and tested against <linux/if_tunnel.h>'s masks, ICMP
#: falling through after the ports' load.
SOCKEX3_PARSE = """
static struct globals *this_cpu_globals(void)
...
		__u32 gre_flags = load_half(skb,
						nhoff + offsetof(struct gre_hdr, flags));
...
		if (gre_flags & GRE_CSUM)
			nhoff += 4;
...
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		g->flow.ports = load_word(skb, nhoff);
	case IPPROTO_ICMP:
		g->flow.ip_proto = ip_proto;
"""
#: The same with both defects fixed: ICMP's own case, the flags tested in host order.
SOCKEX3_FIXED = SOCKEX3_PARSE.replace("case IPPROTO_ICMP:", "break;\n\tcase IPPROTO_ICMP:").replace(
    "gre_flags & GRE_CSUM", "gre_flags & bpf_ntohs(GRE_CSUM)"
)


def udp_then_ping() -> list[Frame]:
    """UDP 127.0.0.1:1000 -> 127.0.0.1:2000 (50 bytes) both ways, then one ping (98 bytes,
    request and reply, each both ways)."""
    datagram = frames.udp("127.0.0.1", "127.0.0.1", b"x" * 8, 1000, 2000)
    udp = frames.ethernet(0x0800, frames.ipv4("127.0.0.1", "127.0.0.1", 17, datagram))
    return [*both_ways(udp), *pings(1)]


def test_sockex3_is_judged_with_the_ports_the_packet_before_left(tmp_path: Path) -> None:
    sample = KERNEL["kernel:sockex3"]
    old = tree(tmp_path, {"samples/bpf/sockex3_kern.c": 'SEC("socket/0")' + SOCKEX3_PARSE})
    judged = upstream.variant(sample, old)
    # Keyed as upstream lays it out: (src, dst, dport, sport, ip_proto).
    lo = 0x7F000001
    assert judged.oracle(udp_then_ping()) == {
        "hash_map": {(lo, lo, 2000, 1000, 17): (2, 100), (lo, lo, 2000, 1000, 1): (4, 392)}
    }
    assert upstream.defect_note(judged, udp_then_ping()) == (
        "upstream defect: 2 keys of hash_map differ from a parse that counts ICMP under port "
        "0 and tests GRE flags in network order: "
        "127.0.0.1:0 -> 127.0.0.1:0 icmp absent (correct: {packets=4, bytes=392}), "
        "127.0.0.1:1000 -> 127.0.0.1:2000 icmp {packets=4, bytes=392} (correct: absent)"
    )
    # GRE frames with optional words: nothing counted, as sockex2's flag test on x86.
    gre = both_ways(frames.build("gre", "127.0.0.20"))
    assert judged.oracle(gre) == {"hash_map": {}}
    assert "127.0.0.1:40000 -> 127.0.0.20:9 udp absent" in upstream.defect_note(judged, gre)


def test_sockex3_fixed_would_be_judged_without_a_defect(tmp_path: Path) -> None:
    sample = KERNEL["kernel:sockex3"]
    fixed = tree(tmp_path, {"samples/bpf/sockex3_kern.c": 'SEC("socket/0")' + SOCKEX3_FIXED})
    judged = upstream.variant(sample, fixed)
    lo = 0x7F000001
    assert judged.oracle(udp_then_ping())["hash_map"][(lo, lo, 0, 0, 1)] == (4, 392)
    gre = both_ways(frames.build("gre", "127.0.0.20"))
    assert judged.oracle(gre) == {"hash_map": {(lo, 0x7F000014, 9, 40000, 17): (2, 284)}}
    assert upstream.defect_note(judged, [*udp_then_ping(), *gre]) == ""


def test_the_build_commands(tmp_path: Path) -> None:
    t = tree(tmp_path, {})
    headers, shim, include = Path("/k/include"), Path("/b/shim"), Path("/b/include")
    kern = upstream.kern_argv("clang", t, headers, shim, include, "sockex2", Path("sockex2_kern.o"))
    assert kern[:5] == ["clang", "-O2", "-Wall", "-target", "bpf"] and "-g" in kern
    assert kern[kern.index("-include") + 1] == str(upstream.PRELUDE)
    # <uapi/linux/...> through the shim, then the UAPI headers, libbpf's, bpf_legacy.h's; libc last
    order = [a for a in kern if a.startswith("-I")]
    assert order == [
        f"-I{shim}",
        f"-I{headers}",
        f"-I{include}",
        f"-I{t.root}/tools/testing/selftests/bpf",
    ]
    assert kern[-4:] == ["-c", f"{t.root}/samples/bpf/sockex2_kern.c", "-o", "sockex2_kern.o"]
    assert kern.index("-idirafter") > kern.index(order[-1])
    link = ["-static", "-lelf", "-lz"]
    user = upstream.user_argv(
        "cc", t, headers, include, "sockex2", Path("/b/libbpf.a"), Path("sockex2"), link
    )
    assert user[-7:] == [
        f"{t.root}/samples/bpf/sockex2_user.c",
        "-o",
        "sockex2",
        "/b/libbpf.a",
        *link,
    ]
    lib = upstream.libbpf_argv("cc", t, t.root / "tools/lib/bpf/btf.c", Path("btf.o"))
    assert (
        "-fPIC" not in lib
        and f"-I{t.root}/tools/include/uapi" in lib
        and lib[-2:] == ["-o", "btf.o"]
    )


def test_the_helper_generator_is_the_trees_own(tmp_path: Path) -> None:
    old = tree(tmp_path, {"scripts/bpf_helpers_doc.py": ""})
    assert upstream.helper_defs_argv(old)[1].endswith("scripts/bpf_helpers_doc.py")
    new = tree(tmp_path / "new", {"scripts/bpf_doc.py": ""})
    assert upstream.helper_defs_argv(new)[1].endswith("scripts/bpf_doc.py")


def test_sockex2_is_judged_by_its_own_gre_parse_and_the_defect_is_noted() -> None:
    # Counted as upstream's code counts them on x86: the GRE frame (checksum, key,
    # sequence; 142 bytes) under 0.0.0.0, the GRE frame with a key and a VLAN tag (138)
    # not at all; a VLAN frame (110 bytes leaving, 106 arriving untagged) as any parse.
    sample = KERNEL["kernel:sockex2"]
    gre, gre_vlan = frames.build("gre", "127.0.0.20"), frames.build("gre-vlan", "127.0.0.21")
    udp = frames.build("vlan", "127.0.0.16")
    captured = [*both_ways(gre), *both_ways(gre_vlan), *both_ways(udp)]
    assert sample.oracle(captured) == {
        "hash_map": {(0,): (2, 2 * 142), (0x7F000010,): (2, 110 + 106)}
    }
    assert upstream.defect_note(sample, captured) == (
        "upstream defect: 3 keys of hash_map differ from a correct GRE parse: "
        "0.0.0.0 {packets=2, bytes=284} (correct: absent), "
        "127.0.0.20 absent (correct: {packets=2, bytes=284}), "
        "127.0.0.21 absent (correct: {packets=2, bytes=276})"
    )
    assert upstream.defect_note(sample, both_ways(udp)) == ""
    assert upstream.defect_note(KERNEL["kernel:sockex1"], captured) == ""


def test_a_recorded_sockex1_run_passes() -> None:
    sample = KERNEL["kernel:sockex1"]
    assert upstream.check_output(sample, result("kernel:sockex1", SOCKEX1_OUT)) == []


def test_a_recorded_sockex2_run_passes() -> None:
    sample = KERNEL["kernel:sockex2"]
    assert upstream.check_output(sample, result("kernel:sockex2", SOCKEX2_OUT)) == []


def test_a_count_the_map_never_held_fails() -> None:
    sample = KERNEL["kernel:sockex1"]
    wrong = SOCKEX1_OUT.replace("ICMP 392", "ICMP 390")
    (problem,) = upstream.check_output(sample, result("kernel:sockex1", wrong))
    assert "line 4" in problem and "(390,)" in problem and "ICMP" in problem.upper()


def test_more_than_the_capture_saw_fails() -> None:
    sample = KERNEL["kernel:sockex2"]
    problems = upstream.check_output(sample, result("kernel:sockex2", SOCKEX2_OUT, count=3))
    assert any("(16, 1568)" in p for p in problems)


def test_a_short_run_a_stray_line_and_a_failure_are_each_named() -> None:
    sample = KERNEL["kernel:sockex1"]
    short = "\n".join(SOCKEX1_OUT.splitlines()[:3]) + "\nsomething else\n"
    problems = upstream.check_output(
        sample, result("kernel:sockex1", short, status="1", stderr="boom")
    )
    assert any("status 1" in p and "boom" in p for p in problems)
    assert any("'something else'" in p for p in problems)
    assert any("3 rounds" in p for p in problems)


def test_sockex3_errors_on_stderr_fail_even_with_status_0() -> None:
    sample = KERNEL["kernel:sockex3"]
    stderr = (
        "libbpf: prog 'bpf_func_PARSE_IP': failed to load: -22\n"
        "ERROR: loading BPF object file failed\n"
    )
    (problem,) = upstream.check_output(sample, result("kernel:sockex3", "", stderr=stderr))
    assert problem == (
        "sockex3 reported an error on stderr: libbpf: prog 'bpf_func_PARSE_IP': failed to "
        "load: -22 | ERROR: loading BPF object file failed"
    )


def test_a_section_name_libbpf_rejects_is_said_in_one_line() -> None:
    # What 6.1's own libbpf printed in a real guest (6.1.0-57-amd64, TCG).
    stderr = (
        "libbpf: prog 'bpf_func_PARSE_IP': missing BPF prog type, check ELF section name "
        "'socket/3'\nlibbpf: prog 'bpf_func_PARSE_IP': failed to load: -22\n"
        "libbpf: failed to load object '/build/sockex3_kern.o'\n"
        "ERROR: loading BPF object file failed\n"
    )
    sample = KERNEL["kernel:sockex3"]
    (problem,) = upstream.check_output(sample, result("kernel:sockex3", "", stderr=stderr))
    assert problem == (
        "sockex3 could not load its object: the release's own libbpf rejects its section "
        "name 'socket/3' (\"missing BPF prog type\"): from 1.0 libbpf matches a section "
        "name exactly, no longer by its prefix (socket)"
    )


def test_sockex3_lines_are_read_as_flows() -> None:
    sample = KERNEL["kernel:sockex3"]
    line = "127.0.0.1.00000 -> 127.0.0.1.00000          392            4\n"
    out = SOCKEX3_HEADER * 2 + (SOCKEX3_HEADER + line) * 3
    assert upstream.check_output(sample, result("kernel:sockex3", out)) == []
    bad = out.replace("392            4", "392            5")
    assert len(upstream.check_output(sample, result("kernel:sockex3", bad))) == 3  # each line


def test_no_ping_is_named() -> None:
    sample = KERNEL["kernel:sockex1"]
    quiet = "TCP 0 UDP 0 ICMP 0 bytes\n" * 5
    problems = upstream.check_output(sample, result("kernel:sockex1", quiet, count=0))
    assert any("ping" in p for p in problems)


def test_a_case_key_separates_the_two_kinds() -> None:
    sample = KERNEL["kernel:sockex3"]
    python, libbpf = (x for x in builtin() if x.name in ("python", "libbpf"))
    skipped = {"kernel:sockex3 loaders": "one section"}
    assert run.skip_reason(skipped, run.Case(sample, python)) == "one section"
    assert run.skip_reason(skipped, run.Case(sample, libbpf)) == "one section"
    assert run.skip_reason(skipped, run.Case(sample, upstream.OWN)) is None


def _entry(tmp_path: Path) -> KernelEntry:
    kernel = Kernel("6.1", "6.1", "6.1.0-57-amd64", "debian", ())
    return KernelEntry(kernel, tmp_path / "vmlinux", None, None, tmp_path / "include")


def test_a_release_without_its_source_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def unavailable(*args: object, **kwargs: object) -> SourceTree:
        raise SourceUnavailable("bookworm carry linux-source-6.1 6.1.193-1, not 6.1.192-3")

    monkeypatch.setattr(kernels, "source_tree", unavailable)
    chosen = select("kernel:all", KERNEL)
    prepared = upstream.prepare(_entry(tmp_path), chosen, KernelOptions(cache=tmp_path))
    assert prepared.builds == {} and prepared.broken == {}
    assert set(prepared.skipped) == {s.name for s in chosen}
    assert all("not 6.1.192-3" in r for r in prepared.skipped.values())


def release_sockex1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, built_from: str) -> Path:
    """A release tree with a sockex1 source, and an object for it compiled from one of ours."""
    t = tree(tmp_path, {"samples/bpf/sockex1_kern.c": "PACKET_OUTGOING"})
    monkeypatch.setattr(kernels, "source_tree", lambda *a, **k: t)
    obj = tmp_path / "sockex1_kern.o"
    source = PROJECT_ROOT / "samples" / built_from
    SubprocessRunner().run(bpf_argv(require("clang", "clang"), None, source, obj, btf=True))
    return obj


def test_what_did_not_build_fails_only_its_own_cases(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An object with sockex1's program section: the loaders' rows check it is there.
    obj = release_sockex1(monkeypatch, tmp_path, built_from="sockex1-btf/sockex1_kern.c")
    built = upstream.ReleaseBuild(
        tmp_path,
        {"sockex1": obj},
        {},
        {"sockex2": "compiling sockex2_kern.c failed (log: L)", "sockex1/own": "libbpf (log: L)"},
    )
    monkeypatch.setattr(upstream, "build_release", lambda *a, **k: built)
    chosen = select("kernel:sockex1,kernel:sockex2", KERNEL)
    prepared = upstream.prepare(_entry(tmp_path), chosen, KernelOptions(cache=tmp_path))
    assert list(prepared.builds) == ["kernel:sockex1"]
    sockex1, sockex2 = chosen
    python = builtin(["python"])[0]
    assert run.build_problem(prepared.broken, run.Case(sockex1, python)) is None
    assert run.build_problem(prepared.broken, run.Case(sockex1, upstream.OWN)) == "libbpf (log: L)"
    assert "log: L" in str(run.build_problem(prepared.broken, run.Case(sockex2, python)))


def test_an_object_without_the_programs_the_variant_names_fails_its_loaders_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # sockex2's object has no section socket1, which kernel:sockex1 is to load.
    obj = release_sockex1(monkeypatch, tmp_path, built_from="sockex2-btf/sockex2_kern.c")
    built = upstream.ReleaseBuild(tmp_path, {"sockex1": obj}, {}, {})
    monkeypatch.setattr(upstream, "build_release", lambda *a, **k: built)
    (sockex1,) = select("kernel:sockex1", KERNEL)

    prepared = upstream.prepare(_entry(tmp_path), [sockex1], KernelOptions(cache=tmp_path))

    python = builtin(["python"])[0]
    problem = run.build_problem(prepared.broken, run.Case(sockex1, python))
    assert problem is not None and "no program section 'socket1' (programs: socket2)" in problem
    assert run.build_problem(prepared.broken, run.Case(sockex1, upstream.OWN)) is None


def test_the_guest_plan_runs_the_release_programs_and_its_variant(tmp_path: Path) -> None:
    chosen = select("kernel:sockex1,kernel:sockex3", KERNEL)
    sockex1, sockex3 = chosen
    built = upstream.ReleaseBuild(
        Path("/b"),
        {"sockex1": Path("/b/sockex1_kern.o"), "sockex3": Path("/b/sockex3_kern.o")},
        {"sockex1": Path("/b/sockex1"), "sockex3": Path("/b/sockex3")},
    )
    counts_all = dataclasses.replace(sockex1, title="a variant")
    builds = {
        sockex1.name: built.sample_build(counts_all, "r", None),
        sockex3.name: built.sample_build(sockex3, "r", None),
    }
    skipped = {"kernel:sockex3 loaders": "one section"}
    kernel = _entry(tmp_path)
    prepared = run.PreparedKernel("6.12", kernel, builds, {}, skipped)
    cases = run.plan_cases(chosen, builtin(["python"]))

    plan = run.guest_plan(prepared, cases, tmp_path)

    by_case = {(c.sample, c.loader): c for c in plan.cases}
    assert set(by_case) == {
        ("kernel:sockex1", "python"),
        ("kernel:sockex1", "own"),
        ("kernel:sockex3", "own"),
    }
    assert by_case[("kernel:sockex1", "own")].command == ("/b/sockex1",)
    assert by_case[("kernel:sockex3", "own")].command == ("/b/sockex3", "ping")
    assert by_case[("kernel:sockex1", "python")].request.object == Path("/b/sockex1_kern.o")
    assert (
        by_case[("kernel:sockex1", "python")].result == tmp_path / "kernel:sockex1" / "python.json"
    )


def fake_toolchain(fail: dict[str, str] | None = None) -> FakeRunner:
    """Compilers that write their ``-o`` output, failing with ``fail[file]`` for a source."""
    fail = fail or {}

    def compile_(call: Call) -> str | Completed:
        for name, message in fail.items():
            if any(a.endswith(name) for a in call.argv):
                return Completed(call.argv, 1, "", message)
        assert call.cwd is not None
        (call.cwd / call.argv[call.argv.index("-o") + 1]).write_bytes(b"built")
        return ""

    def archive(call: Call) -> str:
        assert call.cwd is not None
        Path(call.argv[2]).write_bytes(b"!<arch>\n")
        return ""

    handlers = {"clang": compile_, "cc": compile_, "gcc": compile_, "ar": archive}
    return FakeRunner(handlers, otherwise=lambda call: "/* generated helper defs */\n")


def release_tree(tmp_path: Path) -> SourceTree:
    files = {
        f"samples/bpf/{n}_{kind}.c": ""
        for n in upstream.declared_names()
        for kind in ("kern", "user")
    }
    files |= {"tools/lib/bpf/bpf.c": "", "tools/lib/bpf/libbpf.c": "", "tools/lib/bpf/bpf.h": ""}
    files |= {"scripts/bpf_doc.py": "", "tools/include/uapi/linux/bpf.h": ""}
    made = tree(tmp_path, files)
    (made.root.parent / "manifest.json").write_text("{}")
    return made


def test_a_release_is_built_once(tmp_path: Path) -> None:
    t = release_tree(tmp_path / "src")
    runner = fake_toolchain()
    built = upstream.build_release(t, _entry(tmp_path), build_root=tmp_path / "b", runner=runner)
    assert sorted(built.objects) == sorted(built.programs) == sorted(upstream.declared_names())
    assert built.broken == {}
    assert (built.directory / "include" / "bpf" / "bpf_helper_defs.h").read_text().startswith("/*")
    assert (built.directory / "sockex1").read_bytes() == b"built"
    assert "$ " in (built.directory / "build.log").read_text()
    ran = len(runner.calls)
    again = upstream.build_release(t, _entry(tmp_path), build_root=tmp_path / "b", runner=runner)
    assert again == built and len(runner.calls) == ran


def test_a_libbpf_that_does_not_build_fails_only_the_user_programs(tmp_path: Path) -> None:
    t = release_tree(tmp_path / "src")
    runner = fake_toolchain({"libbpf.c": "libbpf.c:1: error: unknown type"})
    built = upstream.build_release(t, _entry(tmp_path), build_root=tmp_path / "b", runner=runner)
    assert sorted(built.objects) == sorted(upstream.declared_names()) and built.programs == {}
    reason = built.broken["sockex1/own"]
    assert "libbpf" in reason and "unknown type" in reason and str(built.log_path) in reason


def test_a_kernel_side_that_does_not_compile_fails_its_sample_only(tmp_path: Path) -> None:
    t = release_tree(tmp_path / "src")
    runner = fake_toolchain({"sockex2_kern.c": "sockex2_kern.c:3: error: no u32"})
    built = upstream.build_release(t, _entry(tmp_path), build_root=tmp_path / "b", runner=runner)
    assert sorted(built.objects) == ["sockex1", "sockex3"]
    assert "no u32" in built.broken["sockex2"] and "build.log" in built.broken["sockex2"]
