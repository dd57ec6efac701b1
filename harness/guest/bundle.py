"""The guest's code in one file: a zip of compiled modules that ``python3 -S`` runs.

Built on the host, before the VM boots; run in the guest as
``python3 -S BUNDLE PLAN`` (see :func:`guest_argv`). Why: under TCG, with the host's
root shared over 9p without a page cache, ``python3 -m harness.guest`` spent most of
the guest's time importing (9.4 to 17 s on 6.1, in one boot with a loaded host):

* no bytecode cache: the checkout's ``__pycache__`` is often missing (bytecode writing
  turned off, a fresh clone) and the guest's root is read-only, so every module of the
  harness was compiled from source in the guest, on every boot;
* every import is several uncached 9p round trips (the directory, the file, its
  bytecode), each slow under emulation;
* ``site`` reads the ``.pth`` files of site-packages and imports what they name.

The bundle holds every module of the ``harness`` package and every pure-Python
module the guest's entry points import (the standard library's and pyelftools'),
compiled by the interpreter that will run them (the host's ``sys.executable``, which
the guest runs from the shared root) into unchecked hash-based ``.pyc`` files whose
code names the real source file, so tracebacks still show the source lines. The
guest reads the bundle once into memory (:mod:`harness.guest.zipmain`) and imports
from there; only extension modules (``.so``) still come from the 9p root. ``-S``
skips ``site``: nothing the guest imports lives outside the bundle but the
standard library.

A bundle is named by the hash of its content and rebuilt only when a file it was
built from changed (a manifest beside it records each file's size and time).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import py_compile
import site
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import files, paths
from harness.errors import HarnessError
from harness.proc import Runner, SubprocessRunner

log = logging.getLogger(__name__)

#: The modules the guest imports, directly or when a case needs them; the bundle
#: holds everything they import.
ENTRY_MODULES = ("harness.guest.__main__", "harness.bpf.loader", "harness.guest.crafted")
MANIFEST_NAME = "bundle.json"
#: Bundles not used for this long are removed when a new one is written.
KEEP_SECONDS = 24 * 3600
#: Seconds the host may take to list what the guest imports.
PROBE_TIMEOUT = 120.0

#: Run by the interpreter the guest will use: the import closure of ENTRY_MODULES,
#: as {module: source file}, with sys.path as the guest's (the bundle stands for the
#: checkout and site-packages; ``-S`` keeps site's own imports out of the list).
_PROBE = """\
import sys
started = set(sys.modules)  # built in, frozen or imported at start-up: never searched for
import json
sys.path[:0] = json.loads(sys.argv[1])
for name in json.loads(sys.argv[2]):
    __import__(name)
files = {
    name: getattr(module, "__file__", None)
    for name, module in sys.modules.items()
    if name not in started and getattr(module, "__spec__", None) and module.__spec__.name == name
}
print(json.dumps(files))
"""


def guest_argv(plan: Path, bundle: Path | None) -> list[str]:
    """The guest's command: the bundle run with ``-S``, or the package from the checkout.

    Both run under this interpreter, which the guest finds on the shared root.
    """
    if bundle is None:
        return [sys.executable, "-m", "harness.guest", str(plan)]
    return [sys.executable, "-S", str(bundle), str(plan)]


def ensure_bundle(directory: Path | None = None, runner: Runner | None = None) -> Path | None:
    """An up-to-date bundle in ``directory`` (default ``<build>/guest``); None if none can be made.

    Without a bundle the guest runs the package from the checkout, only slower.
    """
    directory = directory or paths.build_dir() / "guest"
    try:
        found = _current(directory)
        if found is not None:
            return found
        with files.locked(directory / ".lock"):
            return _current(directory) or _build(directory, runner or SubprocessRunner())
    except (OSError, ValueError, py_compile.PyCompileError, HarnessError) as exc:
        log.warning("could not bundle the guest's code in %s (%s); unbundled", directory, exc)
        return None


def module_files(runner: Runner | None = None) -> dict[str, Path]:
    """Every pure-Python module the guest needs, by name: the harness package, and the
    import closure of :data:`ENTRY_MODULES` as this interpreter resolves it."""
    search = [str(paths.PROJECT_ROOT), *_site_dirs()]
    done = (runner or SubprocessRunner()).run(
        [sys.executable, "-S", "-c", _PROBE, json.dumps(search), json.dumps(ENTRY_MODULES)],
        timeout=PROBE_TIMEOUT,
        cwd=Path("/"),
    )
    found: dict[str, Path] = {}
    for name, file in json.loads(done.stdout).items():
        if file and file.endswith(".py"):
            found[name] = Path(file)
    package = paths.PROJECT_ROOT / "harness"
    for source in package.rglob("*.py"):
        parts = source.relative_to(paths.PROJECT_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.setdefault(".".join(parts), source)
    return found


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


def _stamp(file: Path) -> list[int]:
    info = file.stat()
    return [info.st_size, info.st_mtime_ns]


def _sources_stamp() -> dict[str, list[int]]:
    """The harness package's sources: a new module changes what the bundle must hold."""
    return {str(f): _stamp(f) for f in sorted((paths.PROJECT_ROOT / "harness").rglob("*.py"))}


def _current(directory: Path) -> Path | None:
    """The bundle the manifest names, if nothing it was built from has changed."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        bundle = directory / str(manifest["bundle"])
        if manifest["python"] != [sys.executable, sys.version] or not bundle.is_file():
            return None
        if manifest["sources"] != _sources_stamp():
            return None
        for file, stamp in manifest["files"].items():
            if _stamp(Path(file)) != stamp:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    os.utime(bundle)  # in use: kept from pruning
    return bundle


def _build(directory: Path, runner: Runner) -> Path:
    started = time.monotonic()
    modules = module_files(runner)
    stamps = {str(f): _stamp(f) for f in sorted(set(modules.values()))}
    data = bundle_bytes(modules)
    bundle = directory / f"guest-{hashlib.sha256(data).hexdigest()[:16]}.pyz"
    directory.mkdir(parents=True, exist_ok=True)
    if not bundle.is_file():
        files.write_atomic(bundle, data)
    manifest = {
        "bundle": bundle.name,
        "python": [sys.executable, sys.version],
        "sources": _sources_stamp(),
        "files": stamps,
    }
    files.write_atomic(directory / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    _prune(directory, keep=bundle)
    log.info(
        "bundled %d modules of the guest into %s (%d KB, %.1f s)",
        len(modules),
        bundle,
        len(data) // 1024,
        time.monotonic() - started,
    )
    return bundle


def bundle_bytes(modules: Mapping[str, Path]) -> bytes:
    """The zip: each module compiled to ``name/parts.pyc``, and the entry ``__main__``.

    Entries are stored, not compressed: decompressing would import ``zlib`` (an
    extension module, read over 9p) before anything else.
    """
    out = io.BytesIO()
    with (
        tempfile.TemporaryDirectory(prefix="harness-bundle-") as tmp,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive,
    ):
        compiled = Path(tmp) / "module.pyc"
        main = paths.PROJECT_ROOT / "harness" / "guest" / "zipmain.py"
        for name, source in [("__main__", main), *sorted(modules.items())]:
            py_compile.compile(
                str(source),
                cfile=str(compiled),
                dfile=str(source),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            # A fixed date keeps the zip, and so its name, a function of its content.
            entry = zipfile.ZipInfo(_archive_name(name, source), date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(entry, compiled.read_bytes())
    return out.getvalue()


def _archive_name(name: str, source: Path) -> str:
    parts: Sequence[str] = name.split(".")
    if source.name == "__init__.py":
        parts = [*parts, "__init__"]
    return "/".join(parts) + ".pyc"


def _prune(directory: Path, *, keep: Path) -> None:
    cutoff = time.time() - KEEP_SECONDS
    for old in directory.glob("guest-*.pyz"):
        try:
            if old != keep and old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            continue
