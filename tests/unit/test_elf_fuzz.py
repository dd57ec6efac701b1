"""Property: however an object is corrupted, the reader raises only its own error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockex1_objects import build_host

from harness.bpf import elf, loader
from harness.errors import BpfObjectError

_SAMPLE: bytes | None = None


@pytest.fixture(scope="module", autouse=True)
def sample(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _SAMPLE
    _SAMPLE = build_host(tmp_path_factory.mktemp("build")).bpf_object.read_bytes()


def _corrupt(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    image = bytearray(data)
    for position, value in edits:
        image[position % len(image)] = value
    return bytes(image[:cut] if cut is not None else image)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=2000)),
)
def test_corrupted_object_raises_only_bpf_object_error(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    assert _SAMPLE is not None
    data = _corrupt(_SAMPLE, edits, cut)
    try:
        obj = elf.parse_object(data, Path("mutated_kern.o"))
        fds = {m.name: 3 + i for i, m in enumerate(obj.maps)}
        for program in obj.programs:
            loader.program_type(program.section)
            loader.relocate(program, fds)
    except BpfObjectError:
        pass
