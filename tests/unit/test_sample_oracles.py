"""The flow samples (sockex2, sockex3 and their -btf twins): oracles on crafted frames, build.

The expected entries are written out by hand in frames_util.py (addresses as
numbers, lengths as the frame layouts give them), not computed with
harness/frames.py, so that an oracle and the dissector it stands on are checked
against something else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from frames_util import (
    LOOPBACK,
    PER_DESTINATION,
    PER_FLOW,
    both_ways,
    crafted_flows,
    header_sets,
)

from harness import frames, packets, paths, samples
from harness.bpf import elf
from harness.build import bpf_argv, shared_headers
from harness.packets import PACKET_HOST, Frame, Frames
from harness.proc import SubprocessRunner, require
from harness.samples import Sample

FLOW_SAMPLES = ("sockex2", "sockex3")
#: Each classic flow sample and its BTF twin, which share its oracle and columns.
SOCKEX2_TWINS = ("sockex2", "sockex2-btf")
SOCKEX3_TWINS = ("sockex3", "sockex3-btf")
MAP_TYPE_HASH = 1
MAP_TYPE_PROG_ARRAY = 3


@pytest.fixture(scope="module")
def available() -> dict[str, Sample]:
    return samples.discover()


def crafted() -> list[Frame]:
    """A capture of: VLAN, QinQ, GRE, IPv6 in IP, fragment, ARP, a TCP ACK each way, a cut UDP."""
    captured = crafted_flows()
    # UDP without its UDP header: sockex2 (no ports read) counts it, sockex3 stops at the ports.
    cut = frames.ethernet(frames.ETH_P_IP, frames.ipv4("127.0.0.1", "127.0.0.25", 17, b""))
    captured.append(Frame(PACKET_HOST, len(cut), cut))
    return captured


def test_both_flow_samples_are_discovered(available: dict[str, Sample]) -> None:
    for name in FLOW_SAMPLES:
        sample = available[name]
        assert sample.directory == (paths.SAMPLES_DIR / name).resolve()
        assert sample.format == "classic"
        assert (sample.directory / "README.md").is_file()


@pytest.mark.parametrize("name", SOCKEX2_TWINS)
def test_sockex2_counts_per_innermost_destination(available: dict[str, Sample], name: str) -> None:
    expected = {**PER_DESTINATION, (0x7F000019,): (1, 14 + 20)}
    assert available[name].oracle(crafted()) == {"hash_map": expected}


@pytest.mark.parametrize("name", SOCKEX2_TWINS)
def test_sockex2_describes_keys_as_addresses(available: dict[str, Sample], name: str) -> None:
    describe = available[name].map_check("hash_map").describe_key
    assert describe is not None
    assert describe((0x7F000010,)) == "127.0.0.16"
    assert describe((0xFD000006,)) == "253.0.0.6"


@pytest.mark.parametrize("name", SOCKEX3_TWINS)
def test_sockex3_counts_per_flow(available: dict[str, Sample], name: str) -> None:
    assert available[name].oracle(crafted()) == {"flow_map": PER_FLOW}


@pytest.mark.parametrize("name", SOCKEX3_TWINS)
def test_sockex3_describes_keys_as_flows(available: dict[str, Sample], name: str) -> None:
    describe = available[name].map_check("flow_map").describe_key
    assert describe is not None
    key = (LOOPBACK, 0x7F000002, 50000, 80, 6)
    assert describe(key) == "127.0.0.1:50000 -> 127.0.0.2:80 tcp"


def test_oracles_of_an_empty_capture(available: dict[str, Sample]) -> None:
    assert available["sockex2"].oracle([]) == {"hash_map": {}}
    assert available["sockex3"].oracle([]) == {"flow_map": {}}


@pytest.mark.parametrize("name", SOCKEX2_TWINS + SOCKEX3_TWINS)
def test_columns_read_entries_the_declared_traffic_makes(
    available: dict[str, Sample], name: str
) -> None:
    """Each column's key is one the oracle gives for the sample's own traffic.

    The TCP, UDP and ICMP steps are stood in for by one frame each to their
    destination; the crafted frames are built as the guest builds them.
    """
    sample = available[name]
    captured: list[Frame] = []
    for step in sample.traffic:
        if isinstance(step, Frames):
            captured += both_ways(frames.build(step.kind, step.dst, payload=step.payload))
    expected = sample.oracle(captured)
    (check,) = sample.maps
    frame_columns = [c for c in sample.columns if c.header not in ("TCP", "UDP", "ICMP")]
    assert frame_columns
    for column in frame_columns:
        assert column.key in expected[check.name], column.header
    for step in sample.traffic:
        if isinstance(step, Frames):
            assert step.kind in packets.FRAME_KINDS
    assert {s.kind for s in sample.traffic if isinstance(s, Frames)} == set(packets.FRAME_KINDS)


@pytest.mark.parametrize("name", SOCKEX3_TWINS)
def test_sockex3_jump_slots_match_its_source(available: dict[str, Sample], name: str) -> None:
    sample = available[name]
    # The slots are #defined in the headers the twins share (samples/include/sockex3.h).
    files = [sample.directory / sample.kern, *shared_headers(sample.directory)]
    source = "".join(f.read_text() for f in files)
    slots = {
        int(index): name
        for name, index in re.findall(r"#define (PARSE_\w+|COUNT_FLOW) (\d+)", source)
    }
    (array,) = sample.prog_arrays
    assert array.map == "jmp_table"
    assert set(array.entries) == set(slots)
    for index, section in array.entries.items():
        assert section == f"socket/{index}", slots[index]
    attached = [p.section for p in sample.programs if p.attach]
    assert attached == ["socket/0"]


# --- the build: clang as harness/build.py runs it, against each set of headers ---------------


@pytest.mark.parametrize("headers", header_sets())
@pytest.mark.parametrize("name", FLOW_SAMPLES)
def test_kern_source_compiles_without_warnings(
    available: dict[str, Sample], name: str, headers: Path | None, tmp_path: Path
) -> None:
    sample = available[name]
    output = tmp_path / sample.object_name
    argv = bpf_argv(require("clang", "clang"), headers, sample.directory / sample.kern, output)

    done = SubprocessRunner().run(argv, check=False)

    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    obj = elf.read_object(output)
    assert obj.license == "GPL"
    assert {p.section for p in sample.programs} == {p.section for p in obj.programs}
    for check in sample.maps:
        definition = obj.map(check.name)
        assert definition.type == MAP_TYPE_HASH
        assert (definition.key_size, definition.value_size) == (check.key.size, check.value.size)
    for array in sample.prog_arrays:
        definition = obj.map(array.map)
        assert definition.type == MAP_TYPE_PROG_ARRAY
        assert max(array.entries) < definition.max_entries
