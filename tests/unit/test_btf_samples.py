"""The BTF samples (sockex1-btf, sockex2-btf, sockex3-btf): discovery, oracles, build.

The expected entries are written out by hand, here and in frames_util.py (protocol
numbers, addresses as numbers, lengths as the frame layouts give them), not computed
with harness/frames.py, so that an oracle is checked against something else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from frames_util import (
    TCP,
    TCP_ACK_LENGTH,
    UDP,
    both_ways,
    header_sets,
    tcp_ack,
)

from harness import frames, paths, samples
from harness.bpf import btf, elf
from harness.build import bpf_argv
from harness.packets import PACKET_HOST, PACKET_OUTGOING, Frame
from harness.proc import SubprocessRunner, require
from harness.samples import Sample

#: Each BTF sample and the classic sample whose programs it carries over.
BTF_SAMPLES = {"sockex1-btf": "sockex1", "sockex2-btf": "sockex2", "sockex3-btf": "sockex3"}
#: The oldest kernel the harness runs; a sample without min_kernel must load there.
OLDEST_KERNEL = (5, 10)
# From include/uapi/linux/bpf.h and if_packet.h.
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PROG_ARRAY = 3
PACKET_BROADCAST = 1
PACKET_OTHERHOST = 3
ICMP = 1
ICMP_ECHO_LENGTH = 14 + 20 + 8 + 56
UDP_LENGTH = 14 + 20 + 8 + 64


@pytest.fixture(scope="module")
def available() -> dict[str, Sample]:
    return samples.discover()


def icmp_echo(src: str, dst: str) -> bytes:
    """An ICMP echo request with ping's 56 bytes of data (its checksum is not checked)."""
    message = b"\x08\x00" + bytes(6) + bytes(56)
    return frames.ethernet(frames.ETH_P_IP, frames.ipv4(src, dst, frames.IPPROTO_ICMP, message))


def udp4(src: str, dst: str) -> bytes:
    payload = bytes(64)
    return frames.ethernet(
        frames.ETH_P_IP, frames.ipv4(src, dst, frames.IPPROTO_UDP, frames.udp(src, dst, payload))
    )


# --- discovery ---------------------------------------------------------------------------------


def test_the_btf_samples_are_discovered_as_btf(available: dict[str, Sample]) -> None:
    for name in BTF_SAMPLES:
        sample = available[name]
        assert sample.directory == (paths.SAMPLES_DIR / name).resolve()
        assert sample.format == "btf"
        assert (sample.directory / "README.md").is_file()
        assert sample.user == ()


def test_no_btf_sample_claims_a_kernel_limit(available: dict[str, Sample]) -> None:
    """Nothing they use is newer than 5.10 (see test_btf_kinds_are_known_to_the_oldest_kernel)."""
    for name in BTF_SAMPLES:
        assert available[name].min_kernel is None
        assert available[name].min_kernel_reason == ""


@pytest.mark.parametrize("name", BTF_SAMPLES)
def test_a_btf_sample_keeps_its_classic_twins_traffic_maps_and_columns(
    available: dict[str, Sample], name: str
) -> None:
    """So that the two report tables read alike: only the format (and sockex1's filter) differ."""
    sample, classic = available[name], available[BTF_SAMPLES[name]]
    assert sample.traffic == classic.traffic
    assert sample.columns == classic.columns
    assert sample.programs == classic.programs
    assert sample.prog_arrays == classic.prog_arrays
    strip = [dataclasses.replace(m, describe_key=None) for m in sample.maps]
    assert strip == [dataclasses.replace(m, describe_key=None) for m in classic.maps]


# --- sockex1-btf: outgoing frames only ----------------------------------------------------------


def test_sockex1_btf_counts_outgoing_ipv4_bytes_per_protocol(
    available: dict[str, Sample],
) -> None:
    captured = [
        *both_ways(tcp_ack("127.0.0.1", "127.0.0.1", 50000, 80)),
        *both_ways(tcp_ack("127.0.0.1", "127.0.0.1", 80, 50000)),
        *both_ways(udp4("127.0.0.1", "127.0.0.1")),
        *both_ways(icmp_echo("127.0.0.1", "127.0.0.1")),
    ]
    expected = {
        (TCP,): (2 * TCP_ACK_LENGTH,),
        (UDP,): (UDP_LENGTH,),
        (ICMP,): (ICMP_ECHO_LENGTH,),
    }
    assert available["sockex1-btf"].oracle(captured) == {"my_map": expected}


def test_sockex1_btf_ignores_frames_that_are_not_outgoing(available: dict[str, Sample]) -> None:
    frame = udp4("127.0.0.1", "127.0.0.1")
    captured = [
        Frame(kind, len(frame), frame) for kind in (PACKET_HOST, PACKET_BROADCAST, PACKET_OTHERHOST)
    ]
    assert available["sockex1-btf"].oracle(captured) == {"my_map": {}}
    # The classic sample, which counts every frame, does count them: the filter is what differs.
    assert available["sockex1"].oracle(captured) == {"my_map": {(UDP,): (3 * UDP_LENGTH,)}}


def test_sockex1_btf_ignores_outgoing_frames_that_are_not_ipv4(
    available: dict[str, Sample],
) -> None:
    captured = [
        *both_ways(frames.build("ipv6", "fd00::1")),
        *both_ways(frames.build("arp", "127.0.0.2")),
        Frame(PACKET_OUTGOING, 20, bytes(12) + b"\x08\x00" + bytes(6)),  # ends before byte 23
    ]
    assert available["sockex1-btf"].oracle(captured) == {"my_map": {}}


def test_sockex1_btf_columns_read_the_protocols(available: dict[str, Sample]) -> None:
    sample = available["sockex1-btf"]
    assert {c.header: c.key for c in sample.columns} == {
        "TCP": (TCP,),
        "UDP": (UDP,),
        "ICMP": (ICMP,),
    }


# The flow twins' oracles, columns and jump slots are checked with their classic twins
# in test_sample_oracles.py.


@pytest.mark.parametrize("name", BTF_SAMPLES)
def test_oracles_of_an_empty_capture(available: dict[str, Sample], name: str) -> None:
    sample = available[name]
    (check,) = sample.maps
    assert sample.oracle([]) == {check.name: {}}


# --- the build: clang as harness/build.py runs it for a btf sample, against each set of headers ---


def compile_sample(sample: Sample, headers: Path | None, out_dir: Path) -> Path:
    """Build ``sample``'s object as the harness does (with -g); fail on any warning."""
    output = out_dir / sample.object_name
    argv = bpf_argv(
        require("clang", "clang"), headers, sample.directory / sample.kern, output, btf=True
    )
    done = SubprocessRunner().run(argv, check=False)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    return output


#: What each sample's maps must be in its object: name -> (type, key size, value size, entries).
MAP_DEFINITIONS = {
    "sockex1-btf": {"my_map": (MAP_TYPE_ARRAY, 4, 8, 256)},
    "sockex2-btf": {"hash_map": (MAP_TYPE_HASH, 4, 16, 1024)},
    "sockex3-btf": {
        "jmp_table": (MAP_TYPE_PROG_ARRAY, 4, 4, 8),
        "flow_map": (MAP_TYPE_HASH, 16, 16, 1024),
    },
}


@pytest.mark.parametrize("headers", header_sets())
@pytest.mark.parametrize("name", BTF_SAMPLES)
def test_kern_source_compiles_without_warnings_into_btf_maps(
    available: dict[str, Sample], name: str, headers: Path | None, tmp_path: Path
) -> None:
    sample = available[name]
    output = compile_sample(sample, headers, tmp_path)

    obj = elf.read_object(output)

    assert obj.license == "GPL"
    assert {p.section for p in sample.programs} == {p.section for p in obj.programs}
    found = {m.name: (m.type, m.key_size, m.value_size, m.max_entries) for m in obj.maps}
    assert found == MAP_DEFINITIONS[name]
    for check in sample.maps:
        assert found[check.name][1:3] == (check.key.size, check.value.size)
    for array in sample.prog_arrays:
        assert max(array.entries) < found[array.map][3]


@pytest.mark.parametrize("name", BTF_SAMPLES)
def test_maps_are_in_dot_maps_and_no_prog_array_is_initialised(
    available: dict[str, Sample], name: str, tmp_path: Path
) -> None:
    """No legacy "maps" section, and nothing relocated into .maps: the loader fills jmp_table."""
    output = compile_sample(available[name], None, tmp_path)
    with output.open("rb") as file:
        sections = {section.name for section in ELFFile(file).iter_sections()}
    assert ".maps" in sections
    assert "maps" not in sections
    assert ".rel.maps" not in sections


@pytest.mark.parametrize("name", BTF_SAMPLES)
def test_btf_kinds_are_known_to_the_oldest_kernel(
    available: dict[str, Sample], name: str, tmp_path: Path
) -> None:
    """Why no min_kernel: every BTF kind the object holds loads on 5.10 without sanitising."""
    output = compile_sample(available[name], None, tmp_path)
    with output.open("rb") as file:
        section = ELFFile(file).get_section_by_name(".BTF")
        assert section is not None
        types = btf.parse_btf(section.data())
    used = {t.kind for t in types.types}
    assert used <= btf.kinds_supported_by(OLDEST_KERNEL), used
