"""What the guest is asked to run: one plan per VM boot, written by the host as JSON.

A plan lists the cases of one kernel: for each (sample, loader), the loader (the
in-process Python loader, or a command that speaks the loader protocol), the load
request (object, programs, attachments, prog arrays, maps to dump), the traffic to
send and where to write the result. The guest needs nothing else: it never reads
a sample's descriptor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import files
from harness.errors import ResultsError
from harness.loaders.protocol import LoadRequest
from harness.packets import Frames, Icmp, Tcp, TrafficStep, Udp

PLAN_NAME = "plan.json"
#: The loader that runs in the guest's own Python process.
IN_PROCESS = "python"

_STEPS: dict[str, type[Tcp] | type[Udp] | type[Icmp] | type[Frames]] = {
    "tcp": Tcp,
    "udp": Udp,
    "icmp": Icmp,
    "frames": Frames,
}


@dataclass(frozen=True)
class CasePlan:
    """One (sample, loader) case: ``command`` is empty for the in-process Python loader."""

    sample: str
    loader: str
    command: tuple[str, ...]
    request: LoadRequest
    traffic: tuple[TrafficStep, ...]
    result: Path
    #: Run ``command``'s Python loader in a forked child from these paths instead
    #: (harness/guest/forked.py); empty for every other loader.
    python_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What the guest runs: its cases, in order, and whether it saves the kernel's log."""

    cases: tuple[CasePlan, ...]
    #: Whether the guest writes the kernel's log beside its results (in a VM: the
    #: boot's phases; run on the host, the guest would copy the host's log).
    kernel_log: bool = False

    def to_json(self) -> str:
        data = {"cases": [_case_to_data(c) for c in self.cases], "kernel_log": self.kernel_log}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
            cases = tuple(_case_from_data(c) for c in data["cases"])
            return cls(cases, kernel_log=bool(data.get("kernel_log", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsError(f"not a guest plan: {type(exc).__name__}: {exc}") from exc


def step_to_data(step: TrafficStep) -> dict[str, Any]:
    kind = next(name for name, cls in _STEPS.items() if isinstance(step, cls))
    return {"step": kind, **step.__dict__}


def step_from_data(data: dict[str, Any]) -> TrafficStep:
    fields = dict(data)
    cls = _STEPS[fields.pop("step")]
    return cls(**fields)


def _case_to_data(case: CasePlan) -> dict[str, Any]:
    request = case.request
    return {
        "sample": case.sample,
        "loader": case.loader,
        "command": list(case.command),
        "object": str(request.object),
        "programs": [list(p) for p in request.programs],
        "attach": [list(a) for a in request.attach],
        "prog_arrays": [list(p) for p in request.prog_arrays],
        "dump": list(request.dump),
        "traffic": [step_to_data(s) for s in case.traffic],
        "result": str(case.result),
        "python_path": list(case.python_path),
    }


def _case_from_data(data: dict[str, Any]) -> CasePlan:
    request = LoadRequest(
        object=Path(data["object"]),
        programs=tuple((str(s), str(t)) for s, t in data["programs"]),
        attach=tuple((str(s), str(t)) for s, t in data["attach"]),
        prog_arrays=tuple((str(m), int(i), str(s)) for m, i, s in data["prog_arrays"]),
        dump=tuple(str(n) for n in data["dump"]),
    )
    return CasePlan(
        sample=str(data["sample"]),
        loader=str(data["loader"]),
        command=tuple(str(a) for a in data["command"]),
        request=request,
        traffic=tuple(step_from_data(s) for s in data["traffic"]),
        result=Path(data["result"]),
        python_path=tuple(str(p) for p in data.get("python_path", ())),
    )


def write_plan(path: Path, plan: Plan) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, plan.to_json())


def read_plan(path: Path) -> Plan:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsError(f"cannot read the guest plan {path}: {exc.strerror}") from exc
    return Plan.from_json(text)
