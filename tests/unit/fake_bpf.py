"""A fake kernel behind the one seam of harness.bpf.syscall: the function ``bpf(cmd, attr)``.

It reads the attribute structures the way the kernel does (pointers into this
process's memory), keeps maps and programs in dictionaries, and answers with
real file descriptors (of /dev/null), so that a test can check the loader
closed every one of them. Failures are raised as :func:`syscall.error_for`
makes them from an errno, exactly as the real ``bpf`` does.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field

from harness.bpf import syscall

ARRAYS = (
    syscall.BPF_MAP_TYPE_ARRAY,
    syscall.BPF_MAP_TYPE_PROG_ARRAY,
    syscall.BPF_MAP_TYPE_ARRAY_OF_MAPS,
)
MAPS_OF_MAPS = (syscall.BPF_MAP_TYPE_ARRAY_OF_MAPS, syscall.BPF_MAP_TYPE_HASH_OF_MAPS)


@dataclass
class FakeMap:
    type: int
    key_size: int
    value_size: int
    max_entries: int
    name: str = ""
    flags: int = 0
    btf_fd: int = 0
    btf_ids: tuple[int, int] = (0, 0)  # key, value
    inner_map_fd: int = 0
    inner: FakeMap | None = None  # the template inner_map_fd named (its fd may be reused)
    id: int = 0
    entries: dict[bytes, bytes] = field(default_factory=dict)  # in insertion order

    def index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")


@dataclass
class FakeProgram:
    type: int
    name: str
    insns: bytes
    license: str
    id: int
    btf_fd: int = 0
    func_info: bytes = b""
    line_info: bytes = b""


class FakeKernel:
    """Maps and programs by fd; ``events`` is what was asked, in order."""

    def __init__(
        self,
        *,
        reject: dict[str, str] | None = None,
        refuse_btf: str | None = None,
        refuse_btf_ids: tuple[int, ...] = (),
        refuse_func_info: bool = False,
    ) -> None:
        self.reject = reject or {}  # program name -> verifier log
        self.refuse_btf = refuse_btf  # the BTF log's last line, as a kernel refusing it says
        self.refuse_btf_ids = refuse_btf_ids  # map types that take no BTF key/value types
        self.refuse_func_info = refuse_func_info  # as a kernel without BTF func info would
        self.btfs: dict[int, bytes] = {}
        self.maps: dict[int, FakeMap] = {}
        self.programs: dict[int, FakeProgram] = {}
        self.fds: list[int] = []
        self.events: list[tuple[str, ...]] = []
        self.next_key_calls: list[bytes | None] = []

    def __call__(self, cmd: int, attr: syscall.Attr) -> int:
        if cmd == syscall.BPF_MAP_CREATE:
            assert isinstance(attr, syscall.MapCreateAttr)
            return self.map_create(attr)
        if cmd == syscall.BPF_PROG_LOAD:
            assert isinstance(attr, syscall.ProgLoadAttr)
            return self.prog_load(attr)
        if cmd == syscall.BPF_MAP_UPDATE_ELEM:
            assert isinstance(attr, syscall.MapElemAttr)
            return self.map_update(attr)
        if cmd == syscall.BPF_MAP_LOOKUP_ELEM:
            assert isinstance(attr, syscall.MapElemAttr)
            return self.map_lookup(attr)
        if cmd == syscall.BPF_MAP_GET_NEXT_KEY:
            assert isinstance(attr, syscall.MapNextKeyAttr)
            return self.map_get_next_key(attr)
        if cmd == syscall.BPF_BTF_LOAD:
            assert isinstance(attr, syscall.BtfLoadAttr)
            return self.btf_load(attr)
        raise AssertionError(f"unexpected bpf command {cmd}")

    # --- what a test asks -----------------------------------------------------------

    def open_fds(self) -> list[int]:
        """The fds handed out that are still open in this process."""
        still = []
        for fd in self.fds:
            try:
                os.fstat(fd)
            except OSError:
                continue
            still.append(fd)
        return still

    def release(self) -> None:
        """Close whatever the code under test left open (a test's cleanup)."""
        for fd in self.open_fds():
            os.close(fd)

    # --- the commands ---------------------------------------------------------------

    def new_fd(self) -> int:
        fd = os.open(os.devnull, os.O_RDONLY)
        self.fds.append(fd)
        return fd

    def fail(self, cmd: int, code: int) -> Exception:
        return syscall.error_for(cmd, code)

    def btf_load(self, attr: syscall.BtfLoadAttr) -> int:
        data = ctypes.string_at(attr.btf, attr.btf_size)
        self.events.append(("btf_load", str(attr.btf_log_level)))
        if self.refuse_btf is not None:
            if attr.btf_log_level and attr.btf_log_buf:
                log = f"[1] INT int size=4\n{self.refuse_btf}\n".encode()
                ctypes.memmove(attr.btf_log_buf, log, min(len(log), attr.btf_log_size - 1))
            raise self.fail(syscall.BPF_BTF_LOAD, errno.EINVAL)
        fd = self.new_fd()
        self.btfs[fd] = data
        return fd

    def map_create(self, attr: syscall.MapCreateAttr) -> int:
        cmd = syscall.BPF_MAP_CREATE
        btf_ids = (attr.btf_key_type_id, attr.btf_value_type_id)
        if any(btf_ids):
            if attr.btf_fd not in self.btfs:
                raise self.fail(cmd, errno.EINVAL)
            if attr.map_type in self.refuse_btf_ids:
                raise self.fail(cmd, syscall.ENOTSUPP)
        if attr.map_type in MAPS_OF_MAPS and attr.inner_map_fd not in self.maps:
            raise self.fail(cmd, errno.EBADF)
        fd = self.new_fd()
        self.maps[fd] = FakeMap(
            attr.map_type,
            attr.key_size,
            attr.value_size,
            attr.max_entries,
            name=attr.map_name.decode(),
            flags=attr.map_flags,
            btf_fd=attr.btf_fd,
            btf_ids=btf_ids,
            inner_map_fd=attr.inner_map_fd,
            inner=self.maps.get(attr.inner_map_fd) if attr.map_type in MAPS_OF_MAPS else None,
            id=2000 + fd,
        )
        self.events.append(("map_create", str(attr.map_type)))
        return fd

    def prog_load(self, attr: syscall.ProgLoadAttr) -> int:
        name = attr.prog_name.decode()
        insns = ctypes.string_at(attr.insns, attr.insn_cnt * 8)
        license = ctypes.string_at(attr.license).decode()
        func_info = line_info = b""
        if attr.func_info_cnt or attr.line_info_cnt:
            if self.refuse_func_info or attr.prog_btf_fd not in self.btfs:
                log = b"invalid func info\n"
                ctypes.memmove(attr.log_buf, log, len(log))
                raise self.fail(syscall.BPF_PROG_LOAD, errno.EINVAL)
            func_info = ctypes.string_at(
                attr.func_info, attr.func_info_cnt * attr.func_info_rec_size
            )
            line_info = ctypes.string_at(
                attr.line_info, attr.line_info_cnt * attr.line_info_rec_size
            )
        if name in self.reject:
            log = self.reject[name].encode()[: attr.log_size - 1]
            ctypes.memmove(attr.log_buf, log, len(log))
            raise self.fail(syscall.BPF_PROG_LOAD, errno.EACCES)
        fd = self.new_fd()
        self.programs[fd] = FakeProgram(
            attr.prog_type,
            name,
            insns,
            license,
            1000 + fd,
            btf_fd=attr.prog_btf_fd,
            func_info=func_info,
            line_info=line_info,
        )
        self.events.append(("prog_load", name))
        return fd

    def map_update(self, attr: syscall.MapElemAttr) -> int:
        cmd = syscall.BPF_MAP_UPDATE_ELEM
        fake = self.maps.get(attr.map_fd)
        if fake is None:
            raise self.fail(cmd, errno.EBADF)
        key = ctypes.string_at(attr.key, fake.key_size)
        value = ctypes.string_at(attr.value, fake.value_size)
        if fake.type in ARRAYS and fake.index(key) >= fake.max_entries:
            raise self.fail(cmd, errno.E2BIG)
        if fake.type == syscall.BPF_MAP_TYPE_PROG_ARRAY:
            program = self.programs.get(int.from_bytes(value, "little"))
            if program is None:
                raise self.fail(cmd, errno.EINVAL)
            value = program.id.to_bytes(4, "little")
            self.events.append(("prog_array_update", str(fake.index(key)), program.name))
        elif fake.type in MAPS_OF_MAPS:
            inner = self.maps.get(int.from_bytes(value, "little"))
            if inner is None:
                raise self.fail(cmd, errno.EBADF)
            value = inner.id.to_bytes(4, "little")
            self.events.append(("map_of_maps_update", str(fake.index(key)), inner.name))
        else:
            self.events.append(("map_update", key.hex(), value.hex()))
        if attr.flags == syscall.BPF_NOEXIST and key in fake.entries:
            raise self.fail(cmd, errno.EEXIST)
        if attr.flags == syscall.BPF_EXIST and key not in fake.entries:
            raise self.fail(cmd, errno.ENOENT)
        fake.entries[key] = value
        return 0

    def map_lookup(self, attr: syscall.MapElemAttr) -> int:
        cmd = syscall.BPF_MAP_LOOKUP_ELEM
        fake = self.maps.get(attr.map_fd)
        if fake is None:
            raise self.fail(cmd, errno.EBADF)
        key = ctypes.string_at(attr.key, fake.key_size)
        value = fake.entries.get(key)
        in_array = fake.type == syscall.BPF_MAP_TYPE_ARRAY and fake.index(key) < fake.max_entries
        if value is None and in_array:
            value = bytes(fake.value_size)
        if value is None:
            raise self.fail(cmd, errno.ENOENT)
        ctypes.memmove(attr.value, value, len(value))
        return 0

    def map_get_next_key(self, attr: syscall.MapNextKeyAttr) -> int:
        cmd = syscall.BPF_MAP_GET_NEXT_KEY
        fake = self.maps.get(attr.map_fd)
        if fake is None:
            raise self.fail(cmd, errno.EBADF)
        keys = list(fake.entries)
        key = None if attr.key == 0 else ctypes.string_at(attr.key, fake.key_size)
        self.next_key_calls.append(key)
        # As a hash map does: no key, or a key not in the map, gives the first key.
        at = keys.index(key) + 1 if key in keys else 0
        if at >= len(keys):
            raise self.fail(cmd, errno.ENOENT)
        ctypes.memmove(attr.next_key, keys[at], fake.key_size)
        return 0
