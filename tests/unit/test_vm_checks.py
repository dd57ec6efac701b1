"""harness.checks: how the VM tests judge one loader's result from the guest."""

from __future__ import annotations

from dataclasses import replace

from harness.checks import Expectation, problems
from harness.guest.result import ProtocolCount, SampleResult

RELEASE = "6.12.117+deb13-amd64"
PAYLOAD = 262144


def good() -> SampleResult:
    return SampleResult(
        release=RELEASE,
        loader="python",
        protocols={
            "tcp": ProtocolCount(
                map_bytes=560_112, capture_bytes=560_112, payload_bytes=PAYLOAD, packets=80, drops=0
            ),
            "udp": ProtocolCount(
                map_bytes=68_000, capture_bytes=68_000, payload_bytes=65536, packets=64, drops=0
            ),
            "icmp": ProtocolCount(
                map_bytes=3_136, capture_bytes=3_136, payload_bytes=1_792, packets=32, drops=0
            ),
        },
    )


EXPECTED = Expectation(release=RELEASE, tcp_bytes=PAYLOAD, udp_bytes=65536, icmp_count=16)


def with_tcp(result: SampleResult, **changes: int) -> SampleResult:
    protocols = dict(result.protocols)
    protocols["tcp"] = replace(protocols["tcp"], **changes)
    return replace(result, protocols=protocols)


def test_a_good_result_has_no_problem() -> None:
    assert problems(good(), EXPECTED) == []


def test_map_and_capture_that_differ_show_both_numbers() -> None:
    found = problems(with_tcp(good(), map_bytes=560_000), EXPECTED)
    assert found == [
        "TCP: the map counted 560000 bytes, the capture saw 560112 bytes (difference -112)"
    ]


def test_drops_in_the_capture_fail_the_case() -> None:
    found = problems(with_tcp(good(), drops=3), EXPECTED)
    assert len(found) == 1
    assert "dropped 3 packets" in found[0]


def test_tcp_bytes_below_twice_the_payload_fail_even_when_they_agree() -> None:
    # A filter that was never attached counts nothing, and neither would a capture
    # that saw the traffic only once; both agree and must still fail.
    found = problems(with_tcp(good(), map_bytes=PAYLOAD, capture_bytes=PAYLOAD), EXPECTED)
    assert found == [
        f"TCP: the map counted {PAYLOAD} bytes, less than twice the {PAYLOAD} payload "
        f"bytes sent ({2 * PAYLOAD})"
    ]


def test_less_payload_than_asked_for_fails() -> None:
    found = problems(with_tcp(good(), payload_bytes=1000), EXPECTED)
    assert any("sent 1000 payload bytes, 262144 were asked for" in p for p in found)


def test_another_release_than_the_one_booted_fails() -> None:
    found = problems(replace(good(), release="6.1.0-56-amd64"), EXPECTED)
    assert found == [f"the guest ran kernel 6.1.0-56-amd64, but {RELEASE} was resolved and booted"]


def test_a_loader_error_is_reported_as_such() -> None:
    failed = replace(good(), loader="c", protocols={}, error="bpf(BPF_PROG_LOAD): EACCES")
    assert problems(failed, EXPECTED) == [
        "the c loader failed in the guest: bpf(BPF_PROG_LOAD): EACCES"
    ]


def test_a_protocol_asked_for_but_missing_fails() -> None:
    protocols = {k: v for k, v in good().protocols.items() if k != "udp"}
    found = problems(replace(good(), protocols=protocols), EXPECTED)
    assert found == ["UDP: the guest reported no counts for this protocol"]


def test_a_protocol_not_asked_for_is_not_judged() -> None:
    protocols = {"tcp": good().protocols["tcp"]}
    expected = Expectation(release=RELEASE, tcp_bytes=PAYLOAD)
    assert expected.protocols == ("tcp",)
    assert problems(replace(good(), protocols=protocols), expected) == []


def test_a_protocol_with_no_traffic_at_all_fails() -> None:
    protocols = dict(good().protocols)
    protocols["icmp"] = ProtocolCount(0, 0, 0, 0, 0)
    found = problems(replace(good(), protocols=protocols), EXPECTED)
    assert found == ["ICMP: the capture saw no traffic (0 packets)"]
