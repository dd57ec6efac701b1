"""Whether a kernel's configuration lets virtme-ng boot it and the sample run in it.

Checked before any boot: a kernel without 9p (Debian's ``cloud-amd64`` flavour says
``# CONFIG_NET_9P is not set``) would otherwise get as far as the initramfs and then
fail to mount its root, with nothing on the console that says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import KernelConfigError
from harness.kernels.image import embedded_config
from harness.kernels.model import KernelEntry
from harness.kernels.modules import modules_in_tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requirement:
    """One option the boot or the sample needs.

    ``module`` names the module that provides the option when it is ``=m``; None
    means the option must be ``=y``. ``only_with_modules`` marks an option needed
    only when some other requirement is met by a module.
    """

    option: str
    purpose: str
    module: str | None = None
    only_with_modules: bool = False


REQUIREMENTS: tuple[Requirement, ...] = (
    # The sample.
    Requirement("CONFIG_BPF_SYSCALL", "the bpf() system call the loaders use"),
    Requirement(
        "CONFIG_PACKET", "packet sockets: the sample's socket and the capture", "af_packet"
    ),
    Requirement("CONFIG_INET", "IPv4, the loopback traffic the sample counts"),
    # virtme-ng's boot: the host's root over 9p on virtio-pci (q35 under TCG).
    Requirement("CONFIG_VIRTIO_PCI", "the PCI transport of the VM's virtio devices", "virtio_pci"),
    Requirement("CONFIG_NET_9P", "the 9p protocol that shares the host's root", "9pnet"),
    Requirement("CONFIG_NET_9P_VIRTIO", "the virtio transport of 9p", "9pnet_virtio"),
    Requirement("CONFIG_9P_FS", "the 9p filesystem mounted as the guest's root", "9p"),
    Requirement("CONFIG_VIRTIO_CONSOLE", "virtme-ng's console and command ports", "virtio_console"),
    Requirement("CONFIG_OVERLAY_FS", "the overlays vng mounts on /etc, /usr, /tmp ...", "overlay"),
    Requirement("CONFIG_DEVTMPFS", "/dev in the guest"),
    Requirement("CONFIG_TMPFS", "the guest's /run, /tmp and /dev/shm"),
    Requirement("CONFIG_UNIX", "UNIX sockets, which udev in the guest needs", "unix"),
    Requirement("CONFIG_BINFMT_SCRIPT", "running #! scripts in the guest", "binfmt_script"),
    Requirement(
        "CONFIG_BLK_DEV_INITRD",
        "the initramfs from which virtme-ng loads the boot's modules",
        only_with_modules=True,
    ),
)


def parse_config(text: str) -> dict[str, str]:
    """A kernel ``.config`` as a dict: ``CONFIG_X=y`` -> ``y``, ``# CONFIG_X is not set`` -> ``n``.

    String values keep their quotes, as in the file.
    """
    config: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("CONFIG_"):
            name, sep, value = line.partition("=")
            if sep:
                config[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2 : -len(" is not set")]] = "n"
    return config


def _problem(
    req: Requirement, config: Mapping[str, str], modules: set[str] | None
) -> tuple[str | None, bool]:
    """What is wrong with ``req`` (None if nothing) and whether a module meets it."""
    value = config.get(req.option)
    if value == "y":
        return None, False
    if value == "m" and req.module is not None:
        if modules is None or req.module in modules:
            return None, True
        return f"{req.option}=m, but its module {req.module} is not beside the kernel", False
    if value is None:
        return f"{req.option} is absent", False
    if value == "n":
        return f"# {req.option} is not set", False
    return f"{req.option}={value} (needs y)", False


def check_config(config: Mapping[str, str], *, modules: set[str] | None, what: str) -> None:
    """Raise :class:`KernelConfigError` naming every option ``config`` lacks.

    ``modules`` holds the module names present in the kernel's module tree (an
    empty set when it has none); None skips the check that ``=m`` options have
    their module.
    """
    problems: list[tuple[str, str]] = []
    modular = False
    for req in REQUIREMENTS:
        if req.only_with_modules:
            continue
        problem, by_module = _problem(req, config, modules)
        modular = modular or by_module
        if problem is not None:
            problems.append((problem, req.purpose))
    if modular:
        for req in REQUIREMENTS:
            if req.only_with_modules and config.get(req.option) != "y":
                value = config.get(req.option)
                state = f"# {req.option} is not set" if value in (None, "n") else req.option
                problems.append((state, req.purpose))
    if problems:
        listed = "\n".join(f"  {state}: {purpose}" for state, purpose in problems)
        raise KernelConfigError(
            f"kernel {what} cannot boot under virtme-ng or run the sample; its "
            f"configuration lacks:\n{listed}\n"
            "Use a kernel with these options =y (or =m with the module installed); "
            "of Debian's kernels, the generic amd64 flavour has them (cloud-amd64 has no 9p)."
        )


def check_entry(entry: KernelEntry) -> None:
    """Check the configuration of a kernel ready to boot, if it can be found."""
    what = f"{entry.release} ({entry.kernel.spec})"
    if entry.config is not None:
        try:
            text = entry.config.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise KernelConfigError(
                f"cannot read the configuration {entry.config} of kernel {what}: {exc.strerror}"
            ) from exc
    else:
        embedded = embedded_config(entry.image)
        if embedded is None:
            log.warning(
                "kernel %s: no configuration found (no config file, no CONFIG_IKCONFIG); "
                "booting it unchecked",
                what,
            )
            return
        text = embedded
    modules = set() if entry.modules is None else modules_in_tree(entry.modules)
    check_config(parse_config(text), modules=modules, what=what)
