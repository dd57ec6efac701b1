"""Read BTF (the BPF Type Format) from bytes: types, BTF-defined maps, what the kernel loads.

The caller hands over the bytes of an object's ``.BTF`` section (and ``.BTF.ext`` for
function and line information); nothing here reads ELF. The format is the kernel's
Documentation/bpf/btf.rst: a header, a type section of variable-length records (type
ids count from 1 in order, 0 is ``void``) and a string section of NUL-terminated names.

Three jobs:

* :func:`parse_btf` reads every kind up to ``ENUM64`` into frozen :class:`BtfType`
  records and checks what a later step would trip over: every type id and string
  offset in range, no loop in a chain of modifiers, typedefs, arrays and pointers.
* :func:`map_defs` defines each map of the ``.maps`` section the way BTF-defined maps
  encode it: ``__uint(name, N)`` is ``int (*name)[N]`` (the number is the length of
  the array pointed at), ``__type(name, T)`` is ``T *name``, and ``__array(values, X)``
  is ``X *values[]`` (the inner map of a map-in-map, or the programs of a prog array).
* :func:`kernel_btf` makes the bytes for ``BPF_BTF_LOAD``: ``DATASEC`` sizes and
  ``VAR`` offsets laid out from the ELF (:func:`with_layout`), kinds the kernel does
  not know rewritten into ones it does (:func:`sanitized`), encoded in one byte order
  (:func:`encode_btf`).

Every malformed input is a :class:`BpfObjectError` of one line naming the input (the
``source`` argument, e.g. ``"flows_kern.o .BTF"``) and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from harness.bpf.syscall import (
    BPF_MAP_TYPE_ARRAY_OF_MAPS,
    BPF_MAP_TYPE_HASH_OF_MAPS,
    BPF_MAP_TYPE_PROG_ARRAY,
    FUNC_INFO_SIZE,
    LINE_INFO_SIZE,
)
from harness.errors import BpfObjectError

ByteOrder = Literal["little", "big"]

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
#: The section BTF-defined maps live in, and the DATASEC that describes it.
BTF_MAPS_SECTION = ".maps"
#: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
_HEADER = "HBBIIIII"
HEADER_SIZE = struct.calcsize("<" + _HEADER)
#: Bits of ``btf_type.info`` that mean something: vlen (0-15), kind (24-28), kind_flag (31).
_INFO_MASK = 0x9F00FFFF
#: A pointer's size on BPF, whatever the host's.
POINTER_SIZE = 8
#: The value of a prog array or map-in-map: a program's or map's file descriptor.
FD_SIZE = 4

# enum bpf_map_type values a ``values`` array is allowed on.
_MAP_IN_MAP_TYPES = (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS)


class BtfKind(enum.IntEnum):
    """``BTF_KIND_*`` of include/uapi/linux/btf.h (0 is ``void``, never a record)."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


#: Kinds whose third word is a type id, followed to find what a name stands for.
_QUALIFIERS = frozenset(
    {BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG}
)
#: Kinds whose third word is a type id rather than a size.
_REFERRING = _QUALIFIERS | {
    BtfKind.PTR,
    BtfKind.FUNC,
    BtfKind.FUNC_PROTO,
    BtfKind.VAR,
    BtfKind.DECL_TAG,
}
#: Kinds with a size of their own in the third word.
_SIZED = frozenset(
    {
        BtfKind.INT,
        BtfKind.STRUCT,
        BtfKind.UNION,
        BtfKind.ENUM,
        BtfKind.DATASEC,
        BtfKind.FLOAT,
        BtfKind.ENUM64,
    }
)

#: The first kernel release that accepts each kind (kernel/bpf/btf.c in that release).
KIND_SINCE: Mapping[BtfKind, tuple[int, int]] = {
    **{
        kind: (4, 18)
        for kind in (
            BtfKind.INT,
            BtfKind.PTR,
            BtfKind.ARRAY,
            BtfKind.STRUCT,
            BtfKind.UNION,
            BtfKind.ENUM,
            BtfKind.FWD,
            BtfKind.TYPEDEF,
            BtfKind.VOLATILE,
            BtfKind.CONST,
            BtfKind.RESTRICT,
        )
    },
    BtfKind.FUNC: (5, 0),
    BtfKind.FUNC_PROTO: (5, 0),
    BtfKind.VAR: (5, 2),
    BtfKind.DATASEC: (5, 2),
    BtfKind.FLOAT: (5, 13),
    BtfKind.DECL_TAG: (5, 16),
    BtfKind.TYPE_TAG: (5, 17),
    BtfKind.ENUM64: (6, 0),
}


@dataclass(frozen=True)
class BtfArray:
    """``struct btf_array``: what an ARRAY holds."""

    type_id: int
    index_type_id: int
    nelems: int


@dataclass(frozen=True)
class BtfMember:
    """``struct btf_member`` of a STRUCT or UNION."""

    name: str
    name_off: int
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless the parent has kind_flag set and this is a bitfield


@dataclass(frozen=True)
class BtfParam:
    """``struct btf_param`` of a FUNC_PROTO (type 0 last: a variadic function)."""

    name: str
    name_off: int
    type_id: int


@dataclass(frozen=True)
class BtfEnumerator:
    """``struct btf_enum`` or ``struct btf_enum64``; ``value`` holds the raw bits, unsigned."""

    name: str
    name_off: int
    value: int


@dataclass(frozen=True)
class BtfVarSecinfo:
    """``struct btf_var_secinfo``: one variable of a DATASEC, at a byte offset."""

    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class BtfType:
    """One type record. Which of the kind-specific fields is filled depends on ``kind``."""

    id: int
    kind: BtfKind
    name: str
    name_off: int
    kind_flag: bool
    vlen: int  # number of members, params, enumerators, variables; a FUNC's linkage
    size_or_type: int  # ``btf_type.size`` or ``btf_type.type``, see ``size``/``type_id``
    #: INT: the encoding word; VAR: its linkage; DECL_TAG: ``component_idx`` (raw 32 bits).
    extra: int = 0
    array: BtfArray | None = None
    members: tuple[BtfMember, ...] = ()  # STRUCT, UNION
    params: tuple[BtfParam, ...] = ()  # FUNC_PROTO
    enumerators: tuple[BtfEnumerator, ...] = ()  # ENUM, ENUM64
    secinfos: tuple[BtfVarSecinfo, ...] = ()  # DATASEC

    @property
    def size(self) -> int:
        """The size in bytes of INT, STRUCT, UNION, ENUM, DATASEC, FLOAT, ENUM64."""
        return self.size_or_type if self.kind in _SIZED else 0

    @property
    def type_id(self) -> int:
        """What a PTR, qualifier, typedef, FUNC, VAR, DECL_TAG refers to; a FUNC_PROTO's return."""
        return self.size_or_type if self.kind in _REFERRING else 0

    @property
    def int_bits(self) -> int:
        """An INT's number of bits (``BTF_INT_BITS``)."""
        return self.extra & 0xFF

    @property
    def component_idx(self) -> int:
        """A DECL_TAG's member or parameter index; -1 for the whole type."""
        return self.extra - (1 << 32) if self.extra & 0x80000000 else self.extra

    def describe(self) -> str:
        """``#5 STRUCT 'flow_key'``, for messages."""
        named = f" {self.name!r}" if self.name else ""
        return f"#{self.id} {self.kind.name}{named}"


_VOID = BtfType(0, BtfKind.VOID, "void", 0, False, 0, 0)


@dataclass(frozen=True)
class Btf:
    """The types and strings of one ``.BTF`` section."""

    types: tuple[BtfType, ...]  # id 1 first; ``type(0)`` is void
    strings: bytes
    byteorder: ByteOrder = "little"
    source: str = ".BTF"

    def fail(self, what: str) -> BpfObjectError:
        return BpfObjectError(f"{self.source}: {what}")

    def type(self, type_id: int) -> BtfType:
        """The type of id ``type_id`` (0 is void)."""
        if type_id == 0:
            return _VOID
        if not 0 < type_id <= len(self.types):
            raise self.fail(f"type id {type_id} is out of range (ids 1-{len(self.types)})")
        return self.types[type_id - 1]

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string section."""
        if not 0 <= offset < len(self.strings):
            raise self.fail(
                f"string offset {offset} is outside the string section ({len(self.strings)} bytes)"
            )
        end = self.strings.find(b"\0", offset)
        return self.strings[offset:end].decode("utf-8", errors="backslashreplace")

    def find(self, name: str, kind: BtfKind) -> BtfType | None:
        """The first type of ``kind`` named ``name``."""
        for btf_type in self.types:
            if btf_type.kind == kind and btf_type.name == name:
                return btf_type
        return None

    def resolve(self, type_id: int) -> BtfType:
        """The type behind ``type_id`` once typedefs and qualifiers are skipped."""
        btf_type = self.type(type_id)
        for _ in range(len(self.types) + 1):
            if btf_type.kind not in _QUALIFIERS:
                return btf_type
            btf_type = self.type(btf_type.type_id)
        raise self.fail(f"type {self.type(type_id).describe()} is in a loop of typedefs")

    def size_of(self, type_id: int) -> int:
        """The size in bytes of an object of type ``type_id``."""
        count = 1
        btf_type = self.type(type_id)
        for _ in range(len(self.types) + 1):
            if btf_type.kind in _SIZED:
                return count * btf_type.size
            if btf_type.kind == BtfKind.PTR:
                return count * POINTER_SIZE
            if btf_type.kind == BtfKind.ARRAY and btf_type.array is not None:
                count *= btf_type.array.nelems
                btf_type = self.type(btf_type.array.type_id)
            elif btf_type.kind in _QUALIFIERS or btf_type.kind == BtfKind.VAR:
                btf_type = self.type(btf_type.type_id)
            else:
                raise self.fail(
                    f"type {self.type(type_id).describe()} has no size "
                    f"(it is or contains a {btf_type.kind.name})"
                )
        raise self.fail(f"type {self.type(type_id).describe()} is in a loop of types")


# --- Reading ---------------------------------------------------------------------------


def parse_btf(data: bytes, source: str = ".BTF") -> Btf:
    """Read the bytes of a ``.BTF`` section; ``source`` names it in error messages."""
    btf = _Parser(data, source).parse()
    _check(btf)
    return btf


class _Parser:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.order = "<"

    def fail(self, what: str) -> BpfObjectError:
        return BpfObjectError(f"{self.source}: {what}")

    def parse(self) -> Btf:
        data = self.data
        if len(data) < HEADER_SIZE:
            raise self.fail(
                f"BTF header cut short ({len(data)} of {HEADER_SIZE} bytes); "
                "rebuild the object with clang -g"
            )
        if struct.unpack_from("<H", data)[0] == BTF_MAGIC:
            byteorder: ByteOrder = "little"
        elif struct.unpack_from(">H", data)[0] == BTF_MAGIC:
            byteorder = "big"
            self.order = ">"
        else:
            raise self.fail(
                f"wrong BTF magic {data[:2].hex()} (expected {BTF_MAGIC:#06x} in either byte "
                "order); this is not a .BTF section"
            )
        _, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            self.order + _HEADER, data
        )
        if version != BTF_VERSION:
            raise self.fail(f"BTF version {version}, this reader knows version {BTF_VERSION}")
        if flags:
            raise self.fail(f"BTF header flags {flags:#x}, expected 0")
        if not HEADER_SIZE <= hdr_len <= len(data):
            raise self.fail(
                f"BTF header length {hdr_len} is not between {HEADER_SIZE} and the "
                f"section's {len(data)} bytes"
            )
        body = data[hdr_len:]
        for what, offset, length in (("type", type_off, type_len), ("string", str_off, str_len)):
            if offset + length > len(body):
                raise self.fail(
                    f"{what} section ({length} bytes at {offset}) runs past the end of the "
                    f"BTF data ({len(body)} bytes after the header)"
                )
        if type_off % 4 or type_len % 4:
            raise self.fail(f"type section at {type_off}, {type_len} bytes, is not 4-aligned")
        strings = body[str_off : str_off + str_len]
        if not strings or strings[0] != 0 or strings[-1] != 0:
            raise self.fail("string section does not start with an empty string and end with a NUL")
        btf = Btf((), strings, byteorder, self.source)
        types = self.types(btf, body[type_off : type_off + type_len])
        return dataclasses.replace(btf, types=types)

    def types(self, btf: Btf, section: bytes) -> tuple[BtfType, ...]:
        result: list[BtfType] = []
        at = 0
        while at < len(section):
            reader = _Words(section, at, self.order, self.fail, len(result) + 1)
            result.append(self.one_type(btf, reader))
            at = reader.at
        return tuple(result)

    def one_type(self, btf: Btf, words: _Words) -> BtfType:
        type_id = words.type_id
        name_off, info, size_or_type = words.take(3)
        if info & ~_INFO_MASK:
            raise words.fail(f"has unknown bits set in its info word {info:#010x}")
        raw_kind = (info >> 24) & 0x1F
        if not BtfKind.INT <= raw_kind <= BtfKind.ENUM64:
            raise words.fail(
                f"has unknown kind {raw_kind} (this reader knows kinds 1-{int(BtfKind.ENUM64)})"
            )
        kind = BtfKind(raw_kind)
        kind_flag = bool(info >> 31)
        vlen = info & 0xFFFF
        name = words.name(btf, name_off)
        base = BtfType(type_id, kind, name, name_off, kind_flag, vlen, size_or_type)

        if kind in (BtfKind.INT, BtfKind.VAR, BtfKind.DECL_TAG):
            (extra,) = words.take(1)
            return dataclasses.replace(base, extra=extra)
        if kind == BtfKind.ARRAY:
            elem, index, nelems = words.take(3)
            return dataclasses.replace(base, array=BtfArray(elem, index, nelems))
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = []
            for _ in range(vlen):
                member_name, member_type, offset = words.take(3)
                # With kind_flag, the top 8 bits are a bitfield's size.
                bitfield_size = offset >> 24 if kind_flag else 0
                bit_offset = offset & 0xFFFFFF if kind_flag else offset
                members.append(
                    BtfMember(
                        words.name(btf, member_name),
                        member_name,
                        member_type,
                        bit_offset,
                        bitfield_size,
                    )
                )
            return dataclasses.replace(base, members=tuple(members))
        if kind == BtfKind.ENUM:
            values = []
            for _ in range(vlen):
                value_name, value = words.take(2)
                values.append(BtfEnumerator(words.name(btf, value_name), value_name, value))
            return dataclasses.replace(base, enumerators=tuple(values))
        if kind == BtfKind.ENUM64:
            values = []
            for _ in range(vlen):
                value_name, low, high = words.take(3)
                value = high << 32 | low
                values.append(BtfEnumerator(words.name(btf, value_name), value_name, value))
            return dataclasses.replace(base, enumerators=tuple(values))
        if kind == BtfKind.FUNC_PROTO:
            params = []
            for _ in range(vlen):
                param_name, param_type = words.take(2)
                params.append(BtfParam(words.name(btf, param_name), param_name, param_type))
            return dataclasses.replace(base, params=tuple(params))
        if kind == BtfKind.DATASEC:
            secinfos = [BtfVarSecinfo(*words.take(3)) for _ in range(vlen)]
            return dataclasses.replace(base, secinfos=tuple(secinfos))
        return base


class _Words:
    """A cursor over the 32-bit words of one type record."""

    def __init__(
        self,
        section: bytes,
        at: int,
        order: str,
        fail: Callable[[str], BpfObjectError],
        type_id: int,
    ) -> None:
        self.section = section
        self.at = at
        self.order = order
        self.outer_fail = fail
        self.type_id = type_id
        self.start = at

    def fail(self, what: str) -> BpfObjectError:
        return self.outer_fail(f"type #{self.type_id} (at byte {self.start} of the types) {what}")

    def name(self, btf: Btf, offset: int) -> str:
        if offset >= len(btf.strings):
            raise self.fail(
                f"has a name at string offset {offset}, outside the string section "
                f"({len(btf.strings)} bytes)"
            )
        return btf.string(offset)

    def take(self, count: int) -> tuple[int, ...]:
        end = self.at + 4 * count
        if end > len(self.section):
            raise self.fail(
                f"is cut short: the type section ends at byte {len(self.section)}, "
                f"the record needs {end}"
            )
        words: tuple[int, ...] = struct.unpack_from(f"{self.order}{count}I", self.section, self.at)
        self.at = end
        return words


def _references(btf_type: BtfType) -> list[tuple[str, int]]:
    """Every type id ``btf_type`` refers to, each with what the reference is."""
    refs: list[tuple[str, int]] = []
    if btf_type.kind in _REFERRING:
        what = "return type" if btf_type.kind == BtfKind.FUNC_PROTO else "type"
        refs.append((what, btf_type.type_id))
    if btf_type.array is not None:
        refs.append(("element type", btf_type.array.type_id))
        refs.append(("index type", btf_type.array.index_type_id))
    refs.extend((f"member {m.name!r}", m.type_id) for m in btf_type.members)
    refs.extend((f"parameter {p.name!r}", p.type_id) for p in btf_type.params)
    refs.extend((f"variable #{i}", s.type_id) for i, s in enumerate(btf_type.secinfos))
    return refs


def _chain_next(btf_type: BtfType) -> int | None:
    """The type a chain of pointers, qualifiers, arrays and variables goes on to."""
    if btf_type.kind in _QUALIFIERS or btf_type.kind in (BtfKind.PTR, BtfKind.VAR):
        return btf_type.type_id
    if btf_type.array is not None:
        return btf_type.array.type_id
    return None


def _check(btf: Btf) -> None:
    """Every reference in range and of a sensible kind; no loop in a chain of types."""
    count = len(btf.types)
    for btf_type in btf.types:
        for what, ref in _references(btf_type):
            if ref > count:
                raise btf.fail(
                    f"type {btf_type.describe()}: {what} is type id {ref}, out of range "
                    f"(ids 1-{count})"
                )
        if btf_type.kind == BtfKind.FUNC and btf.type(btf_type.type_id).kind != BtfKind.FUNC_PROTO:
            raise btf.fail(f"type {btf_type.describe()} is not of a FUNC_PROTO")
        for secinfo in btf_type.secinfos:
            if btf.type(secinfo.type_id).kind not in (BtfKind.VAR, BtfKind.FUNC):
                raise btf.fail(
                    f"section {btf_type.describe()} lists type "
                    f"{btf.type(secinfo.type_id).describe()}, not a VAR or FUNC"
                )

    # Colour the graph of chain edges: 1 on the current path, 2 known to end.
    state = [0] * (count + 1)
    for start in range(1, count + 1):
        path = []
        node: int | None = start
        while node and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = _chain_next(btf.types[node - 1])
        if node and state[node] == 1:
            raise btf.fail(
                f"type {btf.type(node).describe()} refers to itself through a chain of "
                "pointers, qualifiers, typedefs or arrays"
            )
        for visited in path:
            state[visited] = 2


# --- Maps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BtfMapDef:
    """One map of ``.maps``, as ``BPF_MAP_CREATE`` takes it.

    ``key_type_id``/``value_type_id`` are 0 when the map gives only sizes (``__uint(key_size,
    N)``), as prog arrays and perf event arrays must. An inner map (``inner``) is a template,
    not a variable: its ``offset`` and ``size`` are 0. ``values_offset`` is where in ``.maps``
    the ``values`` array starts: the ELF relocations of ``.maps`` at ``values_offset + 8 * i``
    name the program (prog array) or map (map-in-map) that slot ``i`` starts with; BTF itself
    does not record them, see :func:`map_slot`.
    """

    name: str
    offset: int  # of the map's variable in .maps
    size: int  # of the variable, including initialised ``values``
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_type_id: int = 0
    value_type_id: int = 0
    numa_node: int = 0
    pinning: int = 0
    map_extra: int = 0
    inner: BtfMapDef | None = None
    values_offset: int | None = None

    @property
    def btf_type_ids(self) -> tuple[int, int] | None:
        """``(btf_key_type_id, btf_value_type_id)`` for BPF_MAP_CREATE, or None: pass none.

        The kernel refuses a key type without a value type (EINVAL, seen on 6.18 for an
        array of maps declaring only its key), so ids go only with a map that declares both.
        """
        if self.key_type_id and self.value_type_id:
            return self.key_type_id, self.value_type_id
        return None

    @property
    def initial_slots(self) -> int:
        """How many ``values`` slots the variable has room for (its initialiser's length)."""
        if self.values_offset is None:
            return 0
        return max(0, (self.offset + self.size - self.values_offset) // POINTER_SIZE)


#: ``__uint`` members and the field of :class:`BtfMapDef` each one sets.
_NUMBER_MEMBERS = {
    "type": "type",
    "max_entries": "max_entries",
    "map_flags": "flags",
    "key_size": "key_size",
    "value_size": "value_size",
    "numa_node": "numa_node",
    "pinning": "pinning",
    "map_extra": "map_extra",
}
_KNOWN_MEMBERS = (*_NUMBER_MEMBERS, "key", "value", "values")


def map_defs(btf: Btf) -> tuple[BtfMapDef, ...]:
    """Each map of the ``.maps`` DATASEC, in the order the section lists them; () if none."""
    section = btf.find(BTF_MAPS_SECTION, BtfKind.DATASEC)
    if section is None:
        return ()
    if section.size == 0 and section.secinfos:
        raise btf.fail(
            f"section {BTF_MAPS_SECTION} is not laid out (size 0, as clang leaves it); "
            "give the BTF through with_layout() with the ELF's section sizes and symbols first"
        )
    result = []
    for secinfo in section.secinfos:
        var = btf.type(secinfo.type_id)
        if var.kind != BtfKind.VAR:
            raise btf.fail(
                f"section {BTF_MAPS_SECTION} lists {var.describe()}, not a variable; "
                f"only map definitions belong in {BTF_MAPS_SECTION}"
            )
        result.append(
            _map_def(btf, var.name, var.type_id, offset=secinfo.offset, size=secinfo.size)
        )
    return tuple(result)


def map_slot(maps: tuple[BtfMapDef, ...], offset: int) -> tuple[BtfMapDef, int]:
    """The map and the ``values`` slot that a relocation at ``offset`` of ``.maps`` fills."""
    for map_def in maps:
        if map_def.values_offset is None or not (
            map_def.values_offset <= offset < map_def.offset + map_def.size
        ):
            continue
        index, misaligned = divmod(offset - map_def.values_offset, POINTER_SIZE)
        if misaligned:
            break
        return map_def, index
    raise BpfObjectError(
        f"relocation at {BTF_MAPS_SECTION}+{offset:#x} is not at a slot of any map's values "
        f"(maps with values: "
        f"{', '.join(m.name for m in maps if m.values_offset is not None) or 'none'})"
    )


def _map_def(
    btf: Btf, name: str, type_id: int, *, offset: int, size: int, inner_of: str | None = None
) -> BtfMapDef:
    what = f"map {name!r}" if inner_of is None else f"inner map of {inner_of!r}"
    definition = btf.resolve(type_id)
    if definition.kind != BtfKind.STRUCT:
        raise btf.fail(
            f"{what} is a {definition.kind.name}, not a struct; declare it as "
            f'struct {{ __uint(type, ...); ... }} {name} SEC("{BTF_MAPS_SECTION}")'
        )
    numbers = dict.fromkeys(_NUMBER_MEMBERS.values(), 0)
    key_type_id = value_type_id = 0
    inner: BtfMapDef | None = None
    values_offset: int | None = None
    values: BtfMember | None = None
    for member in definition.members:
        if member.name in _NUMBER_MEMBERS:
            numbers[_NUMBER_MEMBERS[member.name]] = _uint_member(btf, what, member)
        elif member.name in ("key", "value"):
            pointer = btf.resolve(member.type_id)
            if pointer.kind != BtfKind.PTR:
                raise btf.fail(
                    f"{what}: member {member.name!r} is a {pointer.kind.name}, not declared "
                    f"with __type({member.name}, T) (a pointer to T)"
                )
            if member.name == "key":
                key_type_id = pointer.type_id
            else:
                value_type_id = pointer.type_id
        elif member.name == "values":
            values = member  # read once the map's type is known, wherever it is declared
        else:
            raise btf.fail(
                f"{what}: unknown member {member.name!r} (known: {', '.join(_KNOWN_MEMBERS)})"
            )
    if values is not None:
        if inner_of is not None:
            raise btf.fail(f"{what} declares values of its own; maps nest one level only")
        inner = _values(btf, what, name, values, numbers["type"])
        if values.bit_offset % 8 or values.bitfield_size:
            raise btf.fail(f"{what}: member 'values' is not at a whole byte")
        values_offset = offset + values.bit_offset // 8
    for field, type_field in (("key_size", key_type_id), ("value_size", value_type_id)):
        if not type_field:
            continue
        typed = btf.size_of(type_field)
        if numbers[field] and numbers[field] != typed:
            raise btf.fail(
                f"{what}: {field} is {numbers[field]} but its type "
                f"{btf.type(type_field).describe()} is {typed} bytes"
            )
        numbers[field] = typed
    if values_offset is not None:
        if numbers["value_size"] not in (0, FD_SIZE):
            raise btf.fail(
                f"{what}: value_size is {numbers['value_size']} but its values are "
                f"{FD_SIZE}-byte file descriptors"
            )
        numbers["value_size"] = FD_SIZE
    return BtfMapDef(
        name=name,
        offset=offset,
        size=size,
        key_type_id=key_type_id,
        value_type_id=value_type_id,
        inner=inner,
        values_offset=values_offset,
        **numbers,
    )


def _uint_member(btf: Btf, what: str, member: BtfMember) -> int:
    pointer = btf.resolve(member.type_id)
    array = btf.resolve(pointer.type_id) if pointer.kind == BtfKind.PTR else pointer
    if pointer.kind != BtfKind.PTR or array.array is None:
        raise btf.fail(
            f"{what}: member {member.name!r} is not declared with __uint({member.name}, N) "
            "(a pointer to an array of N elements)"
        )
    return array.array.nelems


def _values(btf: Btf, what: str, name: str, member: BtfMember, map_type: int) -> BtfMapDef | None:
    array = btf.resolve(member.type_id)
    pointer = btf.resolve(array.array.type_id) if array.array is not None else array
    if array.kind != BtfKind.ARRAY or pointer.kind != BtfKind.PTR:
        raise btf.fail(
            f"{what}: member 'values' is not declared with __array(values, T) "
            "(an array of pointers to T)"
        )
    target = btf.resolve(pointer.type_id)
    if target.kind == BtfKind.FUNC_PROTO:
        if map_type != BPF_MAP_TYPE_PROG_ARRAY:
            raise btf.fail(
                f"{what}: values are programs but the map is of type {map_type}, "
                f"not a prog array ({BPF_MAP_TYPE_PROG_ARRAY})"
            )
        return None
    if target.kind == BtfKind.STRUCT:
        if map_type not in _MAP_IN_MAP_TYPES:
            raise btf.fail(
                f"{what}: values are maps but the map is of type {map_type}, not an array or "
                f"hash of maps ({', '.join(map(str, _MAP_IN_MAP_TYPES))})"
            )
        return _map_def(btf, f"{name}.inner", pointer.type_id, offset=0, size=0, inner_of=name)
    raise btf.fail(
        f"{what}: values point to a {target.kind.name}, neither a map definition (struct) "
        "nor a program (function prototype)"
    )


# --- What the kernel loads ---------------------------------------------------------------


def encode_btf(btf: Btf, byteorder: ByteOrder | None = None) -> bytes:
    """The ``.BTF`` bytes of ``btf``: a 24-byte header, the types, then the strings.

    ``byteorder`` defaults to the one the section was read in; the kernel takes its own.
    """
    order = "<" if (byteorder or btf.byteorder) == "little" else ">"
    types = b"".join(_encode_type(t, order) for t in btf.types)
    header = struct.pack(
        order + _HEADER,
        BTF_MAGIC,
        BTF_VERSION,
        0,
        HEADER_SIZE,
        0,
        len(types),
        len(types),
        len(btf.strings),
    )
    return header + types + btf.strings


def _encode_type(t: BtfType, order: str) -> bytes:
    info = (t.kind_flag << 31) | (int(t.kind) << 24) | t.vlen
    words = [t.name_off, info, t.size_or_type]
    if t.kind in (BtfKind.INT, BtfKind.VAR, BtfKind.DECL_TAG):
        words.append(t.extra)
    if t.array is not None:
        words += [t.array.type_id, t.array.index_type_id, t.array.nelems]
    for member in t.members:
        offset = (
            member.bitfield_size << 24 | member.bit_offset if t.kind_flag else member.bit_offset
        )
        words += [member.name_off, member.type_id, offset]
    for value in t.enumerators:
        if t.kind == BtfKind.ENUM64:
            words += [value.name_off, value.value & 0xFFFFFFFF, value.value >> 32]
        else:
            words += [value.name_off, value.value]
    for param in t.params:
        words += [param.name_off, param.type_id]
    for secinfo in t.secinfos:
        words += [secinfo.type_id, secinfo.offset, secinfo.size]
    return struct.pack(f"{order}{len(words)}I", *words)


def with_layout(btf: Btf, section_sizes: Mapping[str, int], var_offsets: Mapping[str, int]) -> Btf:
    """``btf`` with DATASEC sizes and VAR offsets taken from the ELF object.

    clang leaves them for the loader (a section's size is only known once the object is
    laid out): give each section's size from the section headers (``sh_size``) and each
    variable's offset from the symbol table (``st_value``). A DATASEC named in
    ``section_sizes`` gets that size and every variable in it must be in ``var_offsets``;
    the variables are then sorted by offset, which the kernel requires. A DATASEC not named
    keeps what it has, but one of size 0 with variables would be refused by the kernel
    and is an error here.
    """
    types = list(btf.types)
    for index, section in enumerate(types):
        if section.kind != BtfKind.DATASEC:
            continue
        if section.name not in section_sizes:
            if section.size == 0 and section.secinfos:
                raise btf.fail(
                    f"section {section.name!r} has size 0 in BTF and no size was given from "
                    "the ELF section headers"
                )
            continue
        secinfos = []
        for secinfo in section.secinfos:
            var_name = btf.type(secinfo.type_id).name
            if var_name not in var_offsets:
                raise btf.fail(
                    f"variable {var_name!r} of section {section.name!r} has no symbol giving "
                    "its offset"
                )
            secinfos.append(dataclasses.replace(secinfo, offset=var_offsets[var_name]))
        types[index] = dataclasses.replace(
            section,
            size_or_type=section_sizes[section.name],
            secinfos=tuple(sorted(secinfos, key=lambda s: s.offset)),
        )
    return dataclasses.replace(btf, types=tuple(types))


def kinds_supported_by(release: tuple[int, int]) -> frozenset[BtfKind]:
    """The kinds a kernel of ``release`` (major, minor) accepts in ``BPF_BTF_LOAD``."""
    return frozenset(kind for kind, since in KIND_SINCE.items() if release >= since)


#: Kinds :func:`sanitized` can rewrite into older ones, and into what.
REWRITTEN_KINDS = frozenset({BtfKind.FLOAT, BtfKind.DECL_TAG, BtfKind.TYPE_TAG, BtfKind.ENUM64})


def sanitized(btf: Btf, supported: frozenset[BtfKind]) -> Btf:
    """``btf`` with each kind outside ``supported`` rewritten so an older kernel takes it.

    Every type keeps its id, so map and program BTF ids stay valid, and every type keeps
    its size, so map key and value checks still pass. The choices:

    * FLOAT (5.13) becomes a STRUCT without members, of the same name and size.
    * ENUM64 (6.0) becomes a UNION without members, of the same name and size; with it,
      a signed ENUM (kind_flag, also 6.0) loses its kind_flag.
    * TYPE_TAG (5.17) becomes a CONST of the same type: no name, a qualifier the
      kernel's size and map checks look through.
    * DECL_TAG (5.16) becomes ``const void``: nothing refers to a tag.

    Kinds older than 5.2 (FUNC, VAR, DATASEC ...) are not rewritten; a BTF using them on a
    kernel without them is an error here: load without BTF.
    """
    used = {t.kind for t in btf.types}
    missing = sorted(used - supported - REWRITTEN_KINDS)
    if missing:
        raise btf.fail(
            f"the kernel lacks BTF kinds {', '.join(k.name for k in missing)}, which cannot "
            "be rewritten; load the object without BTF"
        )
    return dataclasses.replace(btf, types=tuple(_sanitize(t, supported) for t in btf.types))


def _sanitize(t: BtfType, supported: frozenset[BtfKind]) -> BtfType:
    if t.kind in supported and not (
        t.kind == BtfKind.ENUM and t.kind_flag and BtfKind.ENUM64 not in supported
    ):
        return t
    bare = BtfType(t.id, t.kind, t.name, t.name_off, False, 0, t.size_or_type)
    if t.kind == BtfKind.ENUM:
        return dataclasses.replace(t, kind_flag=False)
    if t.kind == BtfKind.FLOAT:
        return dataclasses.replace(bare, kind=BtfKind.STRUCT)
    if t.kind == BtfKind.ENUM64:
        return dataclasses.replace(bare, kind=BtfKind.UNION)
    if t.kind == BtfKind.TYPE_TAG:
        return dataclasses.replace(bare, kind=BtfKind.CONST, name="", name_off=0)
    if t.kind == BtfKind.DECL_TAG:
        return dataclasses.replace(bare, kind=BtfKind.CONST, name="", name_off=0, size_or_type=0)
    return t  # sanitized() refused the rest


def kernel_btf(
    btf: Btf,
    *,
    section_sizes: Mapping[str, int],
    var_offsets: Mapping[str, int],
    release: tuple[int, int],
) -> bytes:
    """The bytes to give ``BPF_BTF_LOAD`` on a kernel of ``release``, little-endian."""
    laid_out = with_layout(btf, section_sizes, var_offsets)
    return encode_btf(sanitized(laid_out, kinds_supported_by(release)), "little")


# --- .BTF.ext: function and line information for BPF_PROG_LOAD --------------------------

#: magic, version, flags, hdr_len, func_info_off/len, line_info_off/len (core_relo_* optional).
_EXT_HEADER = "HBBIIIII"
EXT_HEADER_SIZE = struct.calcsize("<" + _EXT_HEADER)
INSN_SIZE = 8


@dataclass(frozen=True)
class FuncInfo:
    """A function's BTF id at an instruction (an index, not the byte offset of the ELF)."""

    insn: int
    type_id: int


@dataclass(frozen=True)
class LineInfo:
    """A source line at an instruction; the offsets are into the ``.BTF`` strings."""

    insn: int
    file_name_off: int
    line_off: int
    line_col: int  # line number << 10 | column

    @property
    def line(self) -> int:
        return self.line_col >> 10

    @property
    def column(self) -> int:
        return self.line_col & 0x3FF


@dataclass(frozen=True)
class BtfExt:
    """What ``.BTF.ext`` says of each program section (keyed by section name)."""

    func_info: Mapping[str, tuple[FuncInfo, ...]]
    line_info: Mapping[str, tuple[LineInfo, ...]]
    #: CO-RE relocations per section: counted, not applied (no sample here needs them).
    core_relocations: Mapping[str, int]


def parse_btf_ext(data: bytes, btf: Btf, source: str = ".BTF.ext") -> BtfExt:
    """Read ``.BTF.ext``; ``btf`` is the object's ``.BTF``, whose strings it refers to."""

    def fail(what: str) -> BpfObjectError:
        return BpfObjectError(f"{source}: {what}")

    order = "<" if btf.byteorder == "little" else ">"
    if len(data) < EXT_HEADER_SIZE:
        raise fail(f"header cut short ({len(data)} of {EXT_HEADER_SIZE} bytes)")
    magic, version, flags, hdr_len, *parts = struct.unpack_from(order + _EXT_HEADER, data)
    if magic != BTF_MAGIC:
        raise fail(
            f"wrong magic {data[:2].hex()} (expected {BTF_MAGIC:#06x} in the "
            f"{btf.byteorder}-endian order of .BTF)"
        )
    if version != BTF_VERSION or flags:
        raise fail(f"version {version} flags {flags:#x}, this reader knows version 1 flags 0")
    if not EXT_HEADER_SIZE <= hdr_len <= len(data):
        raise fail(f"header length {hdr_len} is not between {EXT_HEADER_SIZE} and {len(data)}")
    if hdr_len >= EXT_HEADER_SIZE + 8:
        parts += struct.unpack_from(order + "II", data, EXT_HEADER_SIZE)
    body = data[hdr_len:]

    def records(index: int, what: str, minimum: int) -> dict[str, list[tuple[int, ...]]]:
        if index >= len(parts):
            return {}
        offset, length = parts[index], parts[index + 1]
        if offset + length > len(body):
            raise fail(f"{what} ({length} bytes at {offset}) runs past the end of the section")
        chunk = body[offset : offset + length]
        if not chunk:
            return {}
        if len(chunk) < 4:
            raise fail(f"{what} is cut short before its record size")
        (rec_size,) = struct.unpack_from(order + "I", chunk)
        if rec_size < minimum or rec_size % 4:
            raise fail(f"{what} records are {rec_size} bytes, expected at least {minimum}")
        result: dict[str, list[tuple[int, ...]]] = {}
        at = 4
        while at < len(chunk):
            if at + 8 > len(chunk):
                raise fail(f"{what} is cut short in a section header at byte {at}")
            name_off, count = struct.unpack_from(order + "II", chunk, at)
            at += 8
            if at + count * rec_size > len(chunk):
                raise fail(f"{what} of section {btf.string(name_off)!r} is cut short")
            result.setdefault(btf.string(name_off), []).extend(
                struct.unpack_from(f"{order}{minimum // 4}I", chunk, at + i * rec_size)
                for i in range(count)
            )
            at += count * rec_size
        return result

    def insn(section: str, byte_offset: int) -> int:
        if byte_offset % INSN_SIZE:
            raise fail(f"{section}: offset {byte_offset} is not at an instruction")
        return byte_offset // INSN_SIZE

    func_info = {}
    for section, rows in records(0, "func_info", FUNC_INFO_SIZE).items():
        for _, type_id in rows:
            if btf.type(type_id).kind != BtfKind.FUNC:
                raise fail(f"{section}: func_info names {btf.type(type_id).describe()}, not a FUNC")
        func_info[section] = tuple(FuncInfo(insn(section, off), tid) for off, tid in rows)
    line_info = {}
    for section, rows in records(2, "line_info", LINE_INFO_SIZE).items():
        for _, file_name_off, line_off, _ in rows:
            btf.string(file_name_off)
            btf.string(line_off)
        line_info[section] = tuple(
            LineInfo(insn(section, row[0]), row[1], row[2], row[3]) for row in rows
        )
    # A CO-RE record (bpf_core_relo) is 16 bytes: insn_off, type_id, access_str_off, kind.
    core = {name: len(rows) for name, rows in records(4, "core_relo", 16).items()}
    return BtfExt(func_info, line_info, core)


_Info = TypeVar("_Info", FuncInfo, LineInfo)


def of_program(records: Sequence[_Info], first: int, count: int) -> tuple[_Info, ...]:
    """The records of the program whose ``count`` instructions start at instruction
    ``first`` of its section, counted from the program's start (as BPF_PROG_LOAD wants).

    ``.BTF.ext`` keeps one list per section; a section holding several programs has
    each one's records in it, at the program's place.
    """
    return tuple(
        dataclasses.replace(r, insn=r.insn - first)
        for r in records
        if first <= r.insn < first + count
    )


def func_info_bytes(records: tuple[FuncInfo, ...]) -> bytes:
    """``func_info`` for BPF_PROG_LOAD (``func_info_rec_size`` is :data:`FUNC_INFO_SIZE`)."""
    return b"".join(struct.pack("<II", r.insn, r.type_id) for r in records)


def line_info_bytes(records: tuple[LineInfo, ...]) -> bytes:
    """``line_info`` for BPF_PROG_LOAD (``line_info_rec_size`` is :data:`LINE_INFO_SIZE`)."""
    return b"".join(
        struct.pack("<IIII", r.insn, r.file_name_off, r.line_off, r.line_col) for r in records
    )
