"""harness.checks: a case's result judged against its sample's oracle, for any sample."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

from harness.checks import judge
from harness.guest.result import GuestResult
from harness.packets import PACKET_HOST, PACKET_OUTGOING, Frame, Tcp
from harness.samples import Column, Expected, Layout, MapCheck, Program, Sample, load

RELEASE = "6.1.0-57-amd64"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def ipv4_frame(protocol: int, length: int, pkt_type: int = PACKET_OUTGOING) -> Frame:
    head = bytes(12) + b"\x08\x00" + b"\x45" + bytes(8) + bytes([protocol]) + bytes(10)
    return Frame(pkt_type, length, head)


def result(maps: dict[str, list[tuple[str, str]]], frames: tuple[Frame, ...]) -> GuestResult:
    return GuestResult("x", "python", RELEASE, maps=maps, frames=frames, offered=len(frames))


def array_entry(index: int, value: int) -> tuple[str, str]:
    return struct.pack("<I", index).hex(), struct.pack("<q", value).hex()


def test_sockex1_passes_when_every_protocol_entry_equals_the_capture() -> None:
    sample = load(SAMPLES / "sockex1")
    frames = (ipv4_frame(6, 100), ipv4_frame(6, 100, PACKET_HOST), ipv4_frame(17, 60))
    dump = [array_entry(i, 0) for i in range(256)]
    dump[6] = array_entry(6, 200)
    dump[17] = array_entry(17, 60)

    judgement = judge(sample, result({"my_map": dump}, frames), release=RELEASE)

    assert judgement.problems == []
    assert judgement.cells == {"TCP": "200 = 200", "UDP": "60 = 60", "ICMP": "0 = 0"}


def test_a_wrong_count_and_a_stray_array_entry_are_named() -> None:
    sample = load(SAMPLES / "sockex1")
    frames = (ipv4_frame(6, 100), ipv4_frame(6, 100, PACKET_HOST))
    dump = [array_entry(6, 150), array_entry(50, 7)]

    judgement = judge(sample, result({"my_map": dump}, frames), release=RELEASE)

    assert judgement.problems == [
        "my_map[6]: bytes 150 in the map, 200 in the capture (-50)",
        "my_map[50]: non-zero, the map holds 7",
    ]
    assert judgement.cells["TCP"] == "150 != 200"


def hash_sample(tmp_path: Path) -> Sample:
    """A throwaway sample: packets and bytes per IP protocol in a hash, outgoing frames only."""

    def oracle(frames: object) -> Expected:
        counts: dict[tuple[int | bytes, ...], tuple[int | bytes, ...]] = {}
        for frame in frames:  # type: ignore[attr-defined]
            if frame.pkt_type == PACKET_OUTGOING:
                packets, size = counts.get((frame.head[23],), (0, 0))
                assert isinstance(packets, int) and isinstance(size, int)
                counts[(frame.head[23],)] = (packets + 1, size + frame.length)
        return {"per_proto": counts}

    return Sample(
        name="demo",
        title="demo",
        format="classic",
        kern="demo_kern.c",
        programs=(Program("socket1"),),
        maps=(
            MapCheck(
                "per_proto", "hash", Layout("<I", ("proto",)), Layout("<QQ", ("packets", "bytes"))
            ),
        ),
        traffic=(Tcp(10),),
        oracle=oracle,
        columns=(Column("TCP packets", "per_proto", (6,), "packets"),),
        directory=tmp_path,
    )


def hash_entry(key: int, packets: int, size: int) -> tuple[str, str]:
    return struct.pack("<I", key).hex(), struct.pack("<QQ", packets, size).hex()


def test_a_hash_must_hold_exactly_the_oracles_keys(tmp_path: Path) -> None:
    sample = hash_sample(tmp_path)
    frames = (ipv4_frame(6, 100), ipv4_frame(6, 100, PACKET_HOST), ipv4_frame(1, 98))

    good = result({"per_proto": [hash_entry(6, 1, 100), hash_entry(1, 1, 98)]}, frames)
    missing = result({"per_proto": [hash_entry(6, 1, 100)]}, frames)
    extra = result(
        {"per_proto": [hash_entry(6, 1, 100), hash_entry(1, 1, 98), hash_entry(17, 0, 0)]}, frames
    )
    wrong = result({"per_proto": [hash_entry(6, 2, 200), hash_entry(1, 1, 98)]}, frames)

    assert judge(sample, good).problems == []
    assert judge(sample, missing).problems == [
        "per_proto[1]: missing from the map; the capture says {packets=1, bytes=98}"
    ]
    assert judge(sample, extra).problems == [
        "per_proto[17]: a key the capture never saw, the map holds {packets=0, bytes=0}"
    ]
    assert judge(sample, wrong).problems == [
        "per_proto[6]: packets 2 in the map, 1 in the capture (+1); "
        "bytes 200 in the map, 100 in the capture (+100)"
    ]


def test_drops_an_empty_capture_a_loader_error_and_another_kernel_fail(tmp_path: Path) -> None:
    sample = hash_sample(tmp_path)
    frames = (ipv4_frame(6, 100),)
    good = result({"per_proto": [hash_entry(6, 1, 100)]}, frames)

    assert judge(sample, replace(good, drops=3)).problems == [
        "the capture dropped 3 of 1 frames, so it is not a complete reference; "
        "run fewer VMs at once"
    ]
    assert "the capture saw no frames" in judge(sample, replace(good, frames=())).problems[-1]
    assert judge(sample, replace(good, error="verifier: no")).problems == [
        "the python loader failed in the guest: verifier: no"
    ]
    assert judge(sample, good, release="5.10.0-46-amd64").problems == [
        f"the guest ran kernel {RELEASE}, but 5.10.0-46-amd64 was booted"
    ]


def test_an_entry_of_the_wrong_size_says_the_object_and_descriptor_disagree(tmp_path: Path) -> None:
    sample = hash_sample(tmp_path)
    bad = result({"per_proto": [("0600", "00")]}, (ipv4_frame(6, 100),))

    (problem,) = judge(sample, bad).problems

    assert "2-byte key and a 1-byte value, the sample declares 4 and 16" in problem


def test_an_oracle_that_raises_is_reported_not_raised(tmp_path: Path) -> None:
    def broken(frames: object) -> Expected:
        raise IndexError("frame too short")

    sample = replace(hash_sample(tmp_path), oracle=broken)

    (problem,) = judge(sample, result({"per_proto": []}, (ipv4_frame(6, 1),))).problems

    assert problem == "the oracle of samples/demo/sample.py failed: IndexError: frame too short"


def test_an_empty_map_says_nothing_was_counted_before_listing_entries(tmp_path: Path) -> None:
    sample = hash_sample(tmp_path)
    frames = (ipv4_frame(6, 100), ipv4_frame(17, 60))

    problems = judge(sample, result({"per_proto": []}, frames)).problems

    assert problems[0].startswith("per_proto is empty, but the capture says it must hold 2 entries")
    assert problems[1:] == [
        "per_proto[6]: missing from the map; the capture says {packets=1, bytes=100}",
        "per_proto[17]: missing from the map; the capture says {packets=1, bytes=60}",
    ]
