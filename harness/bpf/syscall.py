"""The bpf(2) system call through ctypes.

One ctypes structure per member of the kernel's ``union bpf_attr`` that is used,
named after it; every call goes through :func:`bpf`, which turns errno into a typed
error. Only the fields this harness needs are declared: the kernel accepts a shorter
attribute than its own as long as what it does not know is absent.
"""

from __future__ import annotations

import ctypes
import errno
import os

from harness.errors import BpfPermissionError, LoaderError, VerifierError

#: bpf(2) per machine (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h).
NR_BPF = {"x86_64": 321, "aarch64": 280}

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_BTF_LOAD = 18

# enum bpf_map_type
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13

# enum bpf_prog_type
BPF_PROG_TYPE_SOCKET_FILTER = 1

# Flags of BPF_MAP_UPDATE_ELEM: create or replace, create only, replace only.
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_OBJ_NAME_LEN = 16
#: ``struct bpf_func_info`` (insn_off, type_id) and ``struct bpf_line_info`` (insn_off,
#: file_name_off, line_off, line_col), the record sizes BPF_PROG_LOAD is told.
FUNC_INFO_SIZE = 8
LINE_INFO_SIZE = 16

#: The kernel's own errno for "not supported here" (include/linux/errno.h), which
#: bpf(2) returns as is; Python's errno module does not know it.
ENOTSUPP = 524

#: Verifier log sizes: start small, grow on ENOSPC up to the kernel's own limit.
LOG_SIZE_FIRST = 64 * 1024
LOG_SIZE_MAX = 16 * 1024 * 1024 - 1

_COMMAND_NAMES = {
    BPF_MAP_CREATE: "BPF_MAP_CREATE",
    BPF_MAP_LOOKUP_ELEM: "BPF_MAP_LOOKUP_ELEM",
    BPF_MAP_UPDATE_ELEM: "BPF_MAP_UPDATE_ELEM",
    BPF_MAP_GET_NEXT_KEY: "BPF_MAP_GET_NEXT_KEY",
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_BTF_LOAD: "BPF_BTF_LOAD",
}


class MapCreateAttr(ctypes.Structure):
    """The anonymous struct of ``union bpf_attr`` used by BPF_MAP_CREATE, up to ``map_extra``.

    ``map_extra`` came in 5.16; an older kernel takes the longer attribute as long as
    what it does not know is zero.
    """

    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", ctypes.c_uint32),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class MapElemAttr(ctypes.Structure):
    """The struct used by the BPF_MAP_*_ELEM commands (``__aligned_u64`` pointers)."""

    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class MapNextKeyAttr(ctypes.Structure):
    """The same struct as BPF_MAP_GET_NEXT_KEY reads it: ``next_key`` shares ``value``'s place."""

    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("next_key", ctypes.c_uint64),
    ]


class ProgLoadAttr(ctypes.Structure):
    """The struct used by BPF_PROG_LOAD, up to ``line_info_cnt`` (all there since 5.0)."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
    ]


class BtfLoadAttr(ctypes.Structure):
    """The struct used by BPF_BTF_LOAD (as of 5.0; ``btf_log_true_size`` of 6.4 left out)."""

    _fields_ = [
        ("btf", ctypes.c_uint64),
        ("btf_log_buf", ctypes.c_uint64),
        ("btf_size", ctypes.c_uint32),
        ("btf_log_size", ctypes.c_uint32),
        ("btf_log_level", ctypes.c_uint32),
    ]


Attr = MapCreateAttr | MapElemAttr | MapNextKeyAttr | ProgLoadAttr | BtfLoadAttr

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class BpfCallError(LoaderError):
    """bpf(2) failed with an errno that means neither a permission problem nor a rejection."""

    def __init__(self, message: str, *, errno_value: int) -> None:
        super().__init__(message)
        self.errno = errno_value


def bpf(cmd: int, attr: Attr) -> int:
    """Call bpf(2) with ``attr``; the result (an fd or 0), or a typed error."""
    # os.uname() rather than platform.machine(): the same answer on Linux, without
    # importing platform (a module of regexes) in the guest, where imports cost.
    machine = os.uname().machine
    number = NR_BPF.get(machine)
    if number is None:
        raise LoaderError(
            f"bpf(2) is not known on {machine}; the Python loader supports "
            f"{', '.join(NR_BPF)}; use the C loader (--loader c) there"
        )
    result = _syscall(
        ctypes.c_long(number),
        ctypes.c_int(cmd),
        ctypes.byref(attr),
        ctypes.c_uint(ctypes.sizeof(attr)),
    )
    if result >= 0:
        return int(result)
    raise error_for(cmd, ctypes.get_errno())


def error_for(cmd: int, code: int) -> LoaderError:
    """The typed error for bpf(2) command ``cmd`` failing with errno ``code``."""
    name = _COMMAND_NAMES.get(cmd, f"command {cmd}")
    if code in (errno.EPERM, errno.EACCES):
        return BpfPermissionError(
            f"bpf({name}) was refused ({errno.errorcode.get(code, code)}: "
            f"{os.strerror(code)}); run as root or with CAP_BPF"
        )
    return BpfCallError(
        f"bpf({name}) failed: {errno.errorcode.get(code, code)}: {os.strerror(code)}",
        errno_value=code,
    )


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int,
    *,
    name: str = "",
    inner_map_fd: int = 0,
    numa_node: int = 0,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    map_extra: int = 0,
) -> int:
    """A new map; its fd. The BTF ids are those of ``btf_fd``'s types (0: none)."""
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        numa_node=numa_node,
        map_name=_object_name(name),
        btf_fd=btf_fd,
        btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id,
        map_extra=map_extra,
    )
    try:
        return bpf(BPF_MAP_CREATE, attr)
    except BpfCallError as exc:
        with_btf = (
            f", BTF key/value type ids {btf_key_type_id}/{btf_value_type_id}" if btf_fd else ""
        )
        raise _in_context(
            exc,
            f"map {name or '?'}: type {map_type}, key {key_size} B, value {value_size} B, "
            f"{max_entries} entries, flags {flags:#x}{with_btf}",
        ) from exc


#: The BTF log size :func:`btf_load` asks for when the kernel refuses a BTF: the log
#: names every type before the one refused, and a kernel before 6.4 drops what does
#: not fit, the reason included.
BTF_LOG_SIZE = 4 * 1024 * 1024


def btf_load(data: bytes) -> int:
    """Load the bytes of a ``.BTF`` into the kernel; the BTF's fd.

    A refusal is a :class:`BpfCallError` whose message ends with the kernel's reason:
    the load is tried first without a log (the kernel then writes nothing) and, if it
    fails, once more with one, whose last line says what the kernel did not take.
    """
    data_buf = ctypes.create_string_buffer(data, len(data))
    attr = BtfLoadAttr(btf=ctypes.addressof(data_buf), btf_size=len(data))
    try:
        return bpf(BPF_BTF_LOAD, attr)
    except BpfCallError:
        pass  # asked again below, with a log that says why
    log_buf = ctypes.create_string_buffer(BTF_LOG_SIZE)
    attr.btf_log_buf = ctypes.addressof(log_buf)
    attr.btf_log_size = BTF_LOG_SIZE
    attr.btf_log_level = 1
    try:
        return bpf(BPF_BTF_LOAD, attr)
    except BpfCallError as exc:
        log = _text(log_buf)
        reason = verifier_reason(log) if log else "the kernel wrote no log"
        raise _in_context(exc, f"{len(data)} bytes of BTF: {reason}") from exc


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value stored under ``key``, or None when there is none."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value_size)
    attr = MapElemAttr(
        map_fd=fd,
        key=ctypes.addressof(key_buf),
        value=ctypes.addressof(value_buf),
    )
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except BpfCallError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return value_buf.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    """Store ``value`` under ``key`` (``flags``: BPF_ANY, BPF_NOEXIST or BPF_EXIST)."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value, len(value))
    attr = MapElemAttr(
        map_fd=fd,
        key=ctypes.addressof(key_buf),
        value=ctypes.addressof(value_buf),
        flags=flags,
    )
    try:
        bpf(BPF_MAP_UPDATE_ELEM, attr)
    except BpfCallError as exc:
        raise _in_context(exc, f"map fd {fd}, key {key.hex()}, value {value.hex()}") from exc


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after ``key`` (the first key when ``key`` is None), or None after the last.

    The first call passes a NULL key pointer, which every kernel since 4.12 takes to
    mean "the first key"; a key that is not in the map (deleted meanwhile) also
    makes the kernel start over from the first.
    """
    key_buf = None if key is None else ctypes.create_string_buffer(key, len(key))
    next_buf = ctypes.create_string_buffer(key_size)
    attr = MapNextKeyAttr(
        map_fd=fd,
        key=0 if key_buf is None else ctypes.addressof(key_buf),
        next_key=ctypes.addressof(next_buf),
    )
    try:
        bpf(BPF_MAP_GET_NEXT_KEY, attr)
    except BpfCallError as exc:
        if exc.errno == errno.ENOENT:
            return None
        after = "the first key" if key is None else f"the key after {key.hex()}"
        raise _in_context(exc, f"map fd {fd}, asking for {after}") from exc
    return next_buf.raw


def _in_context(exc: BpfCallError, context: str) -> BpfCallError:
    """``exc`` with what the call was about added to its message, errno kept."""
    return BpfCallError(f"{exc} ({context})", errno_value=exc.errno)


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str,
    *,
    name: str = "",
    kern_version: int = 0,
    btf_fd: int = 0,
    func_info: bytes = b"",
    line_info: bytes = b"",
) -> int:
    """Load a program; its fd. A rejection raises :class:`VerifierError` with the log.

    ``func_info`` and ``line_info`` are records of ``FUNC_INFO_SIZE`` and
    ``LINE_INFO_SIZE`` bytes (:mod:`harness.bpf.btf`) about the types of ``btf_fd``;
    the kernel takes them only with that fd. The verifier log goes into a buffer;
    when the kernel says the buffer is too small (ENOSPC), the load is tried again
    with a bigger one.
    """
    insns_buf = ctypes.create_string_buffer(insns, len(insns))
    license_buf = ctypes.create_string_buffer(license.encode("ascii", "replace"))
    func_buf = ctypes.create_string_buffer(func_info, len(func_info))
    line_buf = ctypes.create_string_buffer(line_info, len(line_info))
    log_size = LOG_SIZE_FIRST
    while True:
        log_buf = ctypes.create_string_buffer(log_size)
        attr = ProgLoadAttr(
            prog_type=prog_type,
            insn_cnt=len(insns) // 8,
            insns=ctypes.addressof(insns_buf),
            license=ctypes.addressof(license_buf),
            log_level=1,
            log_size=log_size,
            log_buf=ctypes.addressof(log_buf),
            kern_version=kern_version,
            prog_name=_object_name(name),
        )
        if btf_fd:
            attr.prog_btf_fd = btf_fd
        if btf_fd and func_info:
            attr.func_info_rec_size = FUNC_INFO_SIZE
            attr.func_info = ctypes.addressof(func_buf)
            attr.func_info_cnt = len(func_info) // FUNC_INFO_SIZE
        if btf_fd and line_info:
            attr.line_info_rec_size = LINE_INFO_SIZE
            attr.line_info = ctypes.addressof(line_buf)
            attr.line_info_cnt = len(line_info) // LINE_INFO_SIZE
        try:
            return bpf(BPF_PROG_LOAD, attr)
        except BpfCallError as exc:
            if exc.errno == errno.ENOSPC and log_size < LOG_SIZE_MAX:
                log_size = min(log_size * 4, LOG_SIZE_MAX)
                continue
            log = _text(log_buf)
            if log:
                raise _rejected(name, log) from exc
            raise
        except BpfPermissionError as exc:
            # Verifier rejections of pointer arithmetic and the like come back as
            # EACCES with a log; a missing privilege comes back without one.
            log = _text(log_buf)
            if log:
                raise _rejected(name, log) from exc
            raise


#: Summary lines the verifier appends after the reason it stopped.
_LOG_TRAILERS = ("processed ", "verification time", "stack depth", "max_states_per_insn")


def verifier_reason(log: str) -> str:
    """The line of a verifier log that says why it stopped (the last one before its summary)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(_LOG_TRAILERS):
            return line
    return lines[-1] if lines else "no reason given"


def _rejected(name: str, log: str) -> VerifierError:
    return VerifierError(
        f"the kernel's verifier rejected program {name or '?'}: {verifier_reason(log)}\n"
        f"verifier log:\n{log}",
        log=log,
    )


def _object_name(name: str) -> bytes:
    """A name the kernel accepts for an object: letters, digits, ``_`` and ``.``, 15 chars."""
    kept = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "_."))
    return kept[: BPF_OBJ_NAME_LEN - 1].encode("ascii")


def _text(buf: ctypes.Array[ctypes.c_char]) -> str:
    return buf.value.decode("utf-8", "replace").strip()
