"""bpf(2) attributes laid out as the kernel's union bpf_attr; reading a verifier log."""

from __future__ import annotations

import ctypes

from harness.bpf import syscall

# A log as the 6.18 verifier wrote it for a map value used without a NULL check.
REJECTED_LOG = """\
0: R1=ctx() R10=fp0
7: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,ks=4,vs=8)
9: (79) r2 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
processed 9 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""

# The 5.10 verifier ends with a summary of a different shape.
OLD_LOG = """\
0: (bf) r6 = r1
7: (85) call bpf_map_lookup_elem#1
R1 type=inv expected=map_ptr
processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


def offset(structure: type[ctypes.Structure], field: str) -> int:
    value: int = getattr(structure, field).offset
    return value


def test_map_create_attr_layout() -> None:
    assert ctypes.sizeof(syscall.MapCreateAttr) == 20
    assert offset(syscall.MapCreateAttr, "map_flags") == 16


def test_map_elem_attr_uses_aligned_u64_pointers() -> None:
    assert offset(syscall.MapElemAttr, "key") == 8
    assert offset(syscall.MapElemAttr, "value") == 16
    assert offset(syscall.MapElemAttr, "flags") == 24
    assert ctypes.sizeof(syscall.MapElemAttr) == 32


def test_prog_load_attr_layout() -> None:
    expected = {
        "prog_type": 0,
        "insn_cnt": 4,
        "insns": 8,
        "license": 16,
        "log_level": 24,
        "log_size": 28,
        "log_buf": 32,
        "kern_version": 40,
        "prog_flags": 44,
        "prog_name": 48,
        "prog_ifindex": 64,
        "expected_attach_type": 68,
    }
    assert {name: offset(syscall.ProgLoadAttr, name) for name in expected} == expected
    assert ctypes.sizeof(syscall.ProgLoadAttr) == 72


def test_verifier_reason_is_the_line_before_the_summary() -> None:
    assert syscall.verifier_reason(REJECTED_LOG) == "R0 invalid mem access 'map_value_or_null'"
    assert syscall.verifier_reason(OLD_LOG) == "R1 type=inv expected=map_ptr"


def test_object_names_are_cut_to_what_the_kernel_accepts() -> None:
    assert syscall._object_name("count_by_protocol") == b"count_by_protoc"
    assert syscall._object_name("a-b c.d") == b"abc.d"
