"""A user's own kernel, given as ``--kernel PATH``.

PATH is a bzImage, an ELF vmlinux, or a built kernel tree. For an image, the modules
are found the way virtme-ng finds them (``find_kernel_and_mods`` in its
``commands/run.py``): walking up from the image to the first directory holding
``lib/modules`` (or ``usr/lib/modules``, as in a ``.deb`` of Debian 13 and later),
then ``lib/modules/<release>`` there. An image under ``/boot`` of the host thus gets
the host's modules, like with ``vng -r /boot/vmlinuz-...``.

A built tree boots from its ``vmlinux`` when that has a PVH entry (no decompression),
else from ``arch/x86/boot/bzImage``. A tree's modules sit where they were built, where
virtme-ng would not find them beside the image: the ones the boot needs are copied
into a directory under the build directory, beside a link to the image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import NotAKernelError
from harness.kernels import image as image_mod, modules as modules_mod
from harness.kernels.model import Kernel, KernelEntry
from harness.paths import build_dir
from harness.proc import Runner

log = logging.getLogger(__name__)

_TREE_IMAGE = Path("arch/x86/boot/bzImage")
_EXPECTED = (
    "expected a bzImage (arch/x86/boot/bzImage, /boot/vmlinuz-*), an x86-64 ELF vmlinux "
    "with a PVH entry, or a built kernel tree (a directory with .config and "
    "arch/x86/boot/bzImage)"
)


def rootfs_of_image(image: Path) -> Path:
    """The directory virtme-ng takes as the root of an image's file system.

    Mirrors virtme-ng's ``get_rootfs_from_kernel_path``: the first directory up from
    the image that has ``lib/modules``, or its ``usr`` if that has ``usr/lib/modules``;
    ``/`` when none has. Symlinks in the path are kept, as there.
    """
    path = Path(os.path.abspath(image))
    while str(path) != "/" and not (path / "lib" / "modules").exists():
        if (path / "usr" / "lib" / "modules").exists():
            path = path / "usr"
            break
        path = path.parent
    if path.name == "usr" and (path.parent / "lib").is_symlink():
        path = path.parent
    return path


def modules_beside(image: Path, release: str) -> Path | None:
    """``<root>/lib/modules/<release>`` for an image, as virtme-ng finds it, if it exists."""
    moddir = rootfs_of_image(image) / "lib" / "modules" / release
    return moddir if moddir.is_dir() else None


def config_beside(image: Path, release: str) -> Path | None:
    """The configuration of an installed image: ``boot/config-<release>`` or ``config``."""
    root = rootfs_of_image(image)
    if root.name == "usr":
        root = root.parent
    candidates = [
        image.parent / f"config-{release}",
        root / "boot" / f"config-{release}",
        image.parent / "config",
    ]
    return next((c for c in candidates if c.is_file()), None)


def _check_image(path: Path) -> str:
    """The release of a kernel image file, or :class:`NotAKernelError`."""
    head = image_mod.read_head(path)
    if image_mod.is_bzimage(head):
        release = image_mod.image_release(path)
        if release is None:
            raise NotAKernelError(
                f"{path} is a bzImage that does not say its release (no kernel_version "
                "in its setup header); boot it with vng directly"
            )
        return release
    if image_mod.is_elf(head):
        release = image_mod.image_release(path)
        if release is None:
            raise NotAKernelError(
                f"{path} is an ELF file without a 'Linux version' banner, not a kernel; "
                + _EXPECTED
            )
        if not image_mod.has_pvh_entry(path):
            raise NotAKernelError(
                f"{path} is an ELF vmlinux without a PVH entry (CONFIG_PVH=y), which QEMU "
                "cannot boot directly; give the bzImage (arch/x86/boot/bzImage) instead"
            )
        return release
    raise NotAKernelError(f"{path} is a file but not a kernel image; {_EXPECTED}")


def _entry_from_image(path: Path) -> KernelEntry:
    release = _check_image(path)
    return KernelEntry(
        kernel=Kernel(spec=str(path), series=None, release=release, origin="local"),
        image=path,
        modules=modules_beside(path, release),
        config=config_beside(path, release),
        headers=None,
    )


def _tree_release(tree: Path, image: Path) -> str:
    recorded = tree / "include" / "config" / "kernel.release"
    if recorded.is_file():
        text = recorded.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    release = image_mod.image_release(image)
    if release is None:
        raise NotAKernelError(
            f"cannot tell the release of the kernel built in {tree}: neither "
            "include/config/kernel.release nor the image says it; finish the build "
            "in that tree (make writes include/config/kernel.release)"
        )
    return release


def _tree_image(tree: Path) -> Path:
    vmlinux = tree / "vmlinux"
    if vmlinux.is_file() and image_mod.is_elf(image_mod.read_head(vmlinux)):
        try:
            if image_mod.has_pvh_entry(vmlinux):
                return vmlinux
        except NotAKernelError as exc:
            log.warning("%s: not usable (%s); booting the bzImage", vmlinux, exc)
    return tree / _TREE_IMAGE


def _tree_has_modules(tree: Path) -> bool:
    order = tree / "modules.order"
    return order.is_file() and order.stat().st_size > 0


def stage_tree_modules(
    tree: Path, image: Path, release: str, staging: Path, *, runner: Runner
) -> Path:
    """Lay out ``<staging>/boot/<image>`` (a link) and the boot's modules beside it.

    Rebuilt on every call (it takes well under a second), so a rebuilt tree never
    boots with stale modules. Returns the path to give ``vng -r``.
    """
    staging.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{staging.name}.", dir=staging.parent))
    try:
        (fresh / "boot").mkdir()
        link = fresh / "boot" / image.name
        link.symlink_to(image.resolve())
        modules_mod.trim_modules(tree, fresh, release, runner=runner)
        old = staging.with_name(f".{staging.name}.old.{os.getpid()}")
        if staging.exists():
            staging.rename(old)
        fresh.rename(staging)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return staging / "boot" / image.name


def _entry_from_tree(tree: Path, runner: Runner, staging_root: Path | None) -> KernelEntry:
    image = _tree_image(tree)
    release = _tree_release(tree, image)
    headers = tree / "usr" / "include"
    modules: Path | None = None
    if _tree_has_modules(tree):
        key = hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:12]
        root = (staging_root or build_dir() / "local-kernels") / f"{release}-{key}"
        image = stage_tree_modules(tree, image, release, root, runner=runner)
        modules = root / "lib" / "modules" / release
    return KernelEntry(
        kernel=Kernel(spec=str(tree), series=None, release=release, origin="local"),
        image=image,
        modules=modules,
        config=tree / ".config",
        headers=headers if (headers / "linux").is_dir() else None,
    )


def entry_from_path(path: Path, runner: Runner, *, staging_root: Path | None = None) -> KernelEntry:
    """The :class:`KernelEntry` for a user's own kernel at ``path``.

    ``staging_root`` is where a built tree's boot modules are laid out (default: the
    build directory's ``local-kernels/``).
    """
    if not path.exists():
        raise NotAKernelError(f"{path} does not exist; {_EXPECTED}")
    if path.is_dir():
        has_config = (path / ".config").is_file()
        has_image = (path / _TREE_IMAGE).is_file()
        if has_config and has_image:
            return _entry_from_tree(path, runner, staging_root)
        found = (
            "a .config but no arch/x86/boot/bzImage (build it: make bzImage modules)"
            if has_config
            else "no .config"
        )
        raise NotAKernelError(f"{path} is a directory with {found}; {_EXPECTED}")
    return _entry_from_image(path)
