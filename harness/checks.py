"""Whether one case's result shows what its sample must hold: the judgement, pure.

The sample's oracle turns the frames the capture recorded into the map entries the
sample must hold; every map the sample checks is decoded with its layout and must
equal them, key by key and field by field. An array's indices the oracle does not
name must be zero; a hash must hold exactly the oracle's keys. The capture must
have dropped nothing and seen the traffic. Each problem is one sentence naming
both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.guest.result import GuestResult
from harness.packets import Fields
from harness.samples import Expected, MapCheck, Sample

#: How many differing entries a problem list names before it summarises the rest.
MAX_LISTED = 12


@dataclass(frozen=True)
class Judgement:
    """The problems of a case (none: it passed) and its report cells."""

    problems: list[str]
    cells: dict[str, str] = field(default_factory=dict)  # column header -> "map = capture"
    entries: int = 0  # map entries compared


def decode(sample: Sample, result: GuestResult) -> dict[str, dict[Fields, Fields]]:
    """The result's dumped maps decoded with the sample's layouts; zero array entries dropped."""
    decoded: dict[str, dict[Fields, Fields]] = {}
    raw = result.raw_maps()
    for check in sample.maps:
        entries: dict[Fields, Fields] = {}
        for key, value in raw.get(check.name, []):
            if len(key) != check.key.size or len(value) != check.value.size:
                raise HarnessError(
                    f"map {check.name}: an entry has a {len(key)}-byte key and a "
                    f"{len(value)}-byte value, the sample declares {check.key.size} and "
                    f"{check.value.size}; the object and samples/{sample.name}/sample.py disagree"
                )
            fields = check.value.decode(value)
            if check.kind == "array" and not any(fields):
                continue
            entries[check.key.decode(key)] = fields
        decoded[check.name] = entries
    return decoded


def judge(sample: Sample, result: GuestResult, *, release: str = "") -> Judgement:
    """Every way ``result`` falls short of what ``sample``'s oracle says it must hold."""
    problems: list[str] = []
    if release and result.release != release:
        problems.append(f"the guest ran kernel {result.release}, but {release} was booted")
    if result.error is not None:
        problems.append(f"the {result.loader} loader failed in the guest: {result.error}")
        return Judgement(problems)
    try:
        expected = sample.oracle(result.frames)
    except Exception as exc:  # the oracle is the sample's code: report, do not crash
        problems.append(
            f"the oracle of samples/{sample.name}/sample.py failed: {type(exc).__name__}: {exc}"
        )
        return Judgement(problems)
    try:
        actual = decode(sample, result)
    except HarnessError as exc:
        problems.append(str(exc))
        return Judgement(problems)
    compared = 0
    for check in sample.maps:
        want = _nonzero(check, expected.get(check.name, {}))
        have = actual.get(check.name, {})
        compared += len(want.keys() | have.keys())
        problems += _differences(check, want, have)
    if result.drops:
        problems.append(
            f"the capture dropped {result.drops} of {result.offered} frames, so it is not a "
            "complete reference; run fewer VMs at once"
        )
    if not result.frames:
        problems.append("the capture saw no frames: the traffic never reached lo")
    return Judgement(problems, cells(sample, expected, actual), compared)


def _nonzero(check: MapCheck, entries: dict[Fields, Fields]) -> dict[Fields, Fields]:
    if check.kind != "array":
        return entries
    return {key: value for key, value in entries.items() if any(value)}


def _differences(
    check: MapCheck, want: dict[Fields, Fields], have: dict[Fields, Fields]
) -> list[str]:
    def key_text(key: Fields) -> str:
        return check.describe_key(key) if check.describe_key else check.key.describe(key)

    found = []
    if want and not have:
        found.append(
            f"{check.name} is empty, but the capture says it must hold {len(want)} entries: "
            "the sample counted nothing (was its program attached, and every prog array "
            "it tail-calls through filled?)"
        )
    for key in sorted(want.keys() | have.keys(), key=_order):
        expected, actual = want.get(key), have.get(key)
        where = f"{check.name}[{key_text(key)}]"
        if expected == actual:
            continue
        if actual is None:
            assert expected is not None
            found.append(
                f"{where}: missing from the map; the capture says {check.value.describe(expected)}"
            )
        elif expected is None:
            what = "non-zero" if check.kind == "array" else "a key the capture never saw"
            found.append(f"{where}: {what}, the map holds {check.value.describe(actual)}")
        else:
            parts = [
                f"{name} {a} in the map, {e} in the capture ({a - e:+d})"
                if isinstance(a, int) and isinstance(e, int)
                else f"{name} {a!r} in the map, {e!r} in the capture"
                for name, a, e in zip(check.value.fields, actual, expected, strict=True)
                if a != e
            ]
            found.append(f"{where}: " + "; ".join(parts))
    if len(found) > MAX_LISTED:
        found = [*found[:MAX_LISTED], f"{check.name}: and {len(found) - MAX_LISTED} more entries"]
    return found


def _order(key: Fields) -> tuple[tuple[int, int | bytes], ...]:
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in key)


def cells(
    sample: Sample, expected: Expected, actual: dict[str, dict[Fields, Fields]]
) -> dict[str, str]:
    """The report's cells of the sample's columns: ``"map = capture"`` or ``"map != capture"``."""
    out = {}
    for column in sample.columns:
        check = sample.map_check(column.map)
        index = check.value.fields.index(column.field)
        zero = tuple(0 for _ in check.value.fields)
        want = expected.get(column.map, {}).get(column.key, zero)
        have = actual.get(column.map, {}).get(column.key, zero)
        sign = "=" if want[index] == have[index] else "!="
        out[column.header] = f"{have[index]!s} {sign} {want[index]!s}"
    return out
