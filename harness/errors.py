"""One exception tree for everything the harness can report to a user.

Every message says what failed, on what input, and what to do next. Library code
raises these; only ``tasks.py`` turns them into an exit status.
"""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """Base of every error the harness reports to its user."""


class ConfigError(HarnessError):
    """An option or environment variable has a value the harness cannot use."""


class ToolMissingError(HarnessError):
    """A program the harness needs is not installed on the host."""


class CommandError(HarnessError):
    """An external command failed; the message names it and where its output went."""

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...] = (),
        returncode: int | None = None,
        output: str = "",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.output = output
        self.log_path = log_path


class CommandTimeoutError(CommandError):
    """An external command ran past its time limit and was killed."""


class CommandStalledError(CommandTimeoutError):
    """An external command printed nothing for too long before it settled, and was killed."""


# Kernels: resolution, download, cache, configuration checks.
class KernelError(HarnessError):
    """A kernel could not be resolved, fetched, cached or used."""


class UnknownSeriesError(KernelError):
    """The user named a kernel series the catalog does not know."""


class MirrorError(KernelError):
    """A package mirror (or the snapshot archive) is not configured or not reachable."""


class NotAKernelError(KernelError):
    """A path given as ``--kernel PATH`` is not a kernel image or a built kernel tree."""


class KernelConfigError(KernelError):
    """A kernel lacks options the boot or the sample needs."""


class CacheError(KernelError):
    """The kernel cache could not be written or is in a state the harness cannot repair."""


# Samples: descriptors, build and load.
class SampleError(HarnessError):
    """A sample's folder or descriptor (``samples/<name>/sample.py``) is not usable."""


class BuildError(HarnessError):
    """The BPF object or the C loader failed to build."""


class BpfObjectError(HarnessError):
    """A BPF ELF object is malformed or uses something the loader does not support."""


class LoaderError(HarnessError):
    """A loader could not create maps, load or attach the program."""


class LoaderProtocolError(LoaderError):
    """A loader program did not speak the loader protocol (harness/loaders/protocol.py)."""


class BpfPermissionError(LoaderError):
    """The kernel refused bpf(2) for lack of privilege."""


class PacketSocketError(HarnessError):
    """A packet socket (the sample's or the capture's) could not be opened on its interface."""


class VerifierError(LoaderError):
    """The kernel's verifier rejected the program; the log says why."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(message)
        self.log = log


# The VM.
class VmError(HarnessError):
    """The VM did not produce a result; carries the console's last lines and the log's path."""

    def __init__(
        self,
        message: str,
        *,
        console_tail: str = "",
        log_path: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.console_tail = console_tail
        self.log_path = log_path


class VmTimeoutError(VmError):
    """The VM ran past its time limit and was killed."""


class VmStalledError(VmTimeoutError):
    """Every boot of the VM stalled (a silent console) before its init ran."""


class VmLostError(VmError):
    """The VM ended without the guest ever reporting a result."""


class KernelPanicError(VmError):
    """The guest kernel panicked (seen on the console)."""


class CaptureError(HarnessError):
    """The guest's independent capture on the interface could not be opened or read."""


class TrafficError(HarnessError):
    """The guest scenario's own traffic did not get through."""


class GuestError(VmError):
    """The guest scenario ran and reported a failure of its own."""


# Results and reports.
class ResultsError(HarnessError):
    """A results file (the JUnit XML of a run) is missing or cannot be read."""
