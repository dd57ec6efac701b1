"""bpf(2) attributes laid out as the kernel's union bpf_attr; reading a verifier log."""

from __future__ import annotations

import ctypes
import errno

import pytest

from harness.bpf import syscall
from harness.errors import BpfPermissionError, VerifierError

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
    # Offsets of include/uapi/linux/bpf.h (map_extra is an __u64 at 64 since 5.16).
    expected = {
        "map_flags": 16,
        "inner_map_fd": 20,
        "numa_node": 24,
        "map_name": 28,
        "map_ifindex": 44,
        "btf_fd": 48,
        "btf_key_type_id": 52,
        "btf_value_type_id": 56,
        "btf_vmlinux_value_type_id": 60,
        "map_extra": 64,
    }
    assert {name: offset(syscall.MapCreateAttr, name) for name in expected} == expected
    assert ctypes.sizeof(syscall.MapCreateAttr) == 72


def test_btf_load_attr_layout() -> None:
    expected = {"btf": 0, "btf_log_buf": 8, "btf_size": 16, "btf_log_size": 20, "btf_log_level": 24}
    assert {name: offset(syscall.BtfLoadAttr, name) for name in expected} == expected


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
        "prog_btf_fd": 72,
        "func_info_rec_size": 76,
        "func_info": 80,
        "func_info_cnt": 88,
        "line_info_rec_size": 92,
        "line_info": 96,
        "line_info_cnt": 104,
    }
    assert {name: offset(syscall.ProgLoadAttr, name) for name in expected} == expected
    assert ctypes.sizeof(syscall.ProgLoadAttr) == 112


def test_verifier_reason_is_the_line_before_the_summary() -> None:
    assert syscall.verifier_reason(REJECTED_LOG) == "R0 invalid mem access 'map_value_or_null'"
    assert syscall.verifier_reason(OLD_LOG) == "R1 type=inv expected=map_ptr"


def test_object_names_are_cut_to_what_the_kernel_accepts() -> None:
    assert syscall._object_name("count_by_protocol") == b"count_by_protoc"
    assert syscall._object_name("a-b c.d") == b"abc.d"


# --- map updates and iteration, against a recording bpf() -----------------------------


class Recorder:
    """A bpf() that records each call's command and what its pointers point at."""

    def __init__(self, *, errno_value: int | None = None, next_key: bytes = b"") -> None:
        self.errno_value = errno_value
        self.next_key = next_key
        self.calls: list[tuple[int, dict[str, object]]] = []

    def __call__(self, cmd: int, attr: syscall.Attr) -> int:
        seen: dict[str, object] = {"type": type(attr).__name__}
        if isinstance(attr, syscall.MapElemAttr):
            seen.update(
                fd=attr.map_fd,
                key=ctypes.string_at(attr.key, 8),
                value=ctypes.string_at(attr.value, 4),
                flags=attr.flags,
            )
        elif isinstance(attr, syscall.MapNextKeyAttr):
            seen.update(fd=attr.map_fd, key=attr.key and ctypes.string_at(attr.key, 8))
            ctypes.memmove(attr.next_key, self.next_key, len(self.next_key))
        self.calls.append((cmd, seen))
        if self.errno_value is not None:
            raise syscall.error_for(cmd, self.errno_value)
        return 0


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    fake = Recorder()
    monkeypatch.setattr(syscall, "bpf", fake)
    return fake


def test_map_next_key_attr_puts_next_key_where_value_is() -> None:
    assert offset(syscall.MapNextKeyAttr, "key") == offset(syscall.MapElemAttr, "key")
    assert offset(syscall.MapNextKeyAttr, "next_key") == offset(syscall.MapElemAttr, "value")
    assert ctypes.sizeof(syscall.MapNextKeyAttr) == 24


def test_map_update_passes_key_value_and_flags(recorder: Recorder) -> None:
    key = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    syscall.map_update(7, key, b"\xaa\xbb\xcc\xdd", syscall.BPF_EXIST)

    assert recorder.calls == [
        (
            syscall.BPF_MAP_UPDATE_ELEM,
            {
                "type": "MapElemAttr",
                "fd": 7,
                "key": key,
                "value": b"\xaa\xbb\xcc\xdd",
                "flags": syscall.BPF_EXIST,
            },
        )
    ]


def test_map_update_failure_keeps_errno_and_names_the_entry(recorder: Recorder) -> None:
    recorder.errno_value = errno.E2BIG

    with pytest.raises(syscall.BpfCallError) as raised:
        syscall.map_update(5, bytes(4), b"\x09\x00\x00\x00")

    assert raised.value.errno == errno.E2BIG
    message = str(raised.value)
    assert message.startswith("bpf(BPF_MAP_UPDATE_ELEM) failed: E2BIG")
    assert "map fd 5, key 00000000, value 09000000" in message


def test_map_update_refused_is_a_permission_error(recorder: Recorder) -> None:
    recorder.errno_value = errno.EPERM

    with pytest.raises(BpfPermissionError, match="run as root or with CAP_BPF"):
        syscall.map_update(5, bytes(4), bytes(4))


def test_first_next_key_passes_a_null_key_pointer(recorder: Recorder) -> None:
    recorder.next_key = b"\x11" * 8

    first = syscall.map_get_next_key(3, None, 8)

    assert first == b"\x11" * 8
    assert recorder.calls == [
        (syscall.BPF_MAP_GET_NEXT_KEY, {"type": "MapNextKeyAttr", "fd": 3, "key": 0})
    ]


def test_next_key_passes_the_previous_key(recorder: Recorder) -> None:
    recorder.next_key = b"\x22" * 8

    after = syscall.map_get_next_key(3, b"\x11" * 8, 8)

    assert after == b"\x22" * 8
    assert recorder.calls[0][1]["key"] == b"\x11" * 8


def test_next_key_after_the_last_is_none(recorder: Recorder) -> None:
    recorder.errno_value = errno.ENOENT

    assert syscall.map_get_next_key(3, b"\x11" * 8, 8) is None


def test_next_key_failure_says_which_key(recorder: Recorder) -> None:
    recorder.errno_value = errno.EBADF

    with pytest.raises(syscall.BpfCallError, match=r"EBADF.*map fd 3, asking for the first key"):
        syscall.map_get_next_key(3, None, 8)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EPERM, BpfPermissionError),
        (errno.EACCES, BpfPermissionError),
        (errno.EINVAL, syscall.BpfCallError),
        (errno.ENOENT, syscall.BpfCallError),
    ],
)
def test_errno_becomes_a_typed_error(code: int, kind: type[Exception]) -> None:
    error = syscall.error_for(syscall.BPF_MAP_LOOKUP_ELEM, code)

    assert type(error) is kind
    assert "BPF_MAP_LOOKUP_ELEM" in str(error)
    if isinstance(error, syscall.BpfCallError):
        assert error.errno == code


def test_rejected_program_raises_verifier_error_with_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def rejecting(cmd: int, attr: syscall.Attr) -> int:
        assert isinstance(attr, syscall.ProgLoadAttr)
        log = REJECTED_LOG.encode()
        ctypes.memmove(attr.log_buf, log, len(log))
        raise syscall.error_for(cmd, errno.EACCES)

    monkeypatch.setattr(syscall, "bpf", rejecting)

    with pytest.raises(VerifierError) as raised:
        syscall.prog_load(syscall.BPF_PROG_TYPE_SOCKET_FILTER, bytes(16), "GPL", name="prog")

    assert raised.value.log == REJECTED_LOG.strip()
    assert "rejected program prog: R0 invalid mem access" in str(raised.value)


def test_a_log_too_small_is_grown_and_the_load_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []

    def short_of_log(cmd: int, attr: syscall.Attr) -> int:
        assert isinstance(attr, syscall.ProgLoadAttr)
        sizes.append(attr.log_size)
        if len(sizes) < 3:
            raise syscall.error_for(cmd, errno.ENOSPC)
        return 9

    monkeypatch.setattr(syscall, "bpf", short_of_log)

    assert syscall.prog_load(syscall.BPF_PROG_TYPE_SOCKET_FILTER, bytes(16), "GPL") == 9
    assert sizes == [
        syscall.LOG_SIZE_FIRST,
        4 * syscall.LOG_SIZE_FIRST,
        16 * syscall.LOG_SIZE_FIRST,
    ]
