"""The guest's code in one file: a table of compiled modules that ``python3 -S`` runs.

Built on the host, before the VM boots; run in the guest as
``python3 -S ENTRY.pyc BUNDLE PLAN`` (see :func:`guest_argv`). Why: under TCG, with the host's
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
the guest runs from the shared root) into unchecked hash-based ``.pyc`` bytes whose
code names the real source file, so tracebacks still show the source lines, all in
one marshalled table. The guest reads the bundle whole, in one read, and imports from
it (:mod:`harness.guest.entry`, compiled beside the bundle as its entry: a script
given as source would be compiled in the guest on every boot); only extension
modules (``.so``) still come from the 9p root. ``-S`` skips ``site``: nothing the
guest imports lives outside the bundle but the standard library.

A bundle is named by the hash of its content and rebuilt only when a file it was
built from changed (a manifest beside it records each file's size and time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import os
import py_compile
import site
import sys
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

from elftools.common.exceptions import ELFError

from harness import files, paths
from harness.errors import HarnessError
from harness.guest import entry, runtime
from harness.proc import Runner, SubprocessRunner

log = logging.getLogger(__name__)

#: The modules the guest imports, directly or when a case needs them; the bundle
#: holds everything they import. ``runpy`` runs an A/B run's baseline loader in a
#: child forked from the guest (:mod:`harness.guest.forked`): with the bundle first
#: on ``sys.path``, the ``importlib`` package it imports is the bundle's copy, so every
#: submodule of it runpy needs (``importlib.util``, ``importlib._abc``) must be in the
#: bundle too.
ENTRY_MODULES = (
    "runpy",
    "harness.guest.__main__",
    "harness.bpf.loader",
    "harness.guest.crafted",
)
MANIFEST_NAME = "bundle.json"
BUNDLE_SUFFIX = ".bundle"
ENTRY_SUFFIX = ".pyc"
#: Bundles not used for this long are removed when a new one is written.
KEEP_SECONDS = 24 * 3600
#: Seconds the host may take to list what the guest imports.
PROBE_TIMEOUT = 120.0

#: Run by the interpreter the guest will use: the import closure of ENTRY_MODULES,
#: as {module: file}, with sys.path as the guest's (the bundle stands for the checkout
#: and site-packages; ``-S`` keeps site's own imports out of the list), and every file
#: the interpreter then maps (its shared objects, for :mod:`harness.guest.runtime`).
#: Its arguments: the search path and the modules (JSON), and the ``sys`` prefixes to
#: report (comma-separated: no module may be imported before ``started``).
_PROBE = """\
import sys
started = set(sys.modules)  # built in, frozen or imported at start-up: never searched for
interpreter = {
    "path": sys.path[1:],  # after "" (-c): the interpreter's own, as -S leaves them
    "prefixes": {name: getattr(sys, name) for name in sys.argv[3].split(",")},
    "stdlib": sys.modules["encodings"].__file__.rsplit("/", 2)[0],  # encodings/__init__.py
}
startup = {  # the codecs the start-up imported from the standard library
    name: module.__file__
    for name, module in sys.modules.items()
    if name.partition(".")[0] == "encodings" and getattr(module, "__file__", None)
}
class Absent:  # the last finder: it sees each name no other finder found
    names = set()
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        cls.names.add(name)
sys.meta_path.append(Absent)  # first: dataclasses' own imports try one (copy: org)
import builtins, dataclasses, json
sources = []
def recording(source, *args):
    if isinstance(source, str):
        sources.append(source)
    return builtins.exec(source, *args)
dataclasses.exec = recording  # the source of each method a dataclass compiles
sys.path[:0] = json.loads(sys.argv[1])
for name in json.loads(sys.argv[2]):
    __import__(name)
sys.meta_path.remove(Absent)
files = {
    name: getattr(module, "__file__", None)
    for name, module in sys.modules.items()
    if name not in started and getattr(module, "__spec__", None) and module.__spec__.name == name
}
try:
    with open("/proc/self/maps") as maps:
        mapped = sorted({line.split(None, 5)[5].strip() for line in maps if "/" in line})
except (OSError, IndexError):
    mapped = []
print(json.dumps({
    "modules": files,
    "mapped": mapped,
    "methods": sorted(set(sources)),
    "interpreter": interpreter,
    "startup": startup,
    "absent": sorted(name for name in Absent.names if name not in sys.modules),
}))
"""


@dataclass(frozen=True)
class Bundle:
    """What the guest runs: the table of its code (and the entry compiled beside it)
    and, when one could be made, the tar of its interpreter's shared objects
    (:mod:`harness.guest.runtime`)."""

    code: Path
    runtime: Path | None = None

    @property
    def entry(self) -> Path:
        """The compiled :mod:`harness.guest.entry` that runs :attr:`code`."""
        return self.code.with_suffix(ENTRY_SUFFIX)


@dataclass(frozen=True)
class _Probed:
    modules: dict[str, str]  # module name -> file, pure Python or extension
    mapped: list[str]  # files the interpreter maps
    methods: list[str]  # the source of each method the dataclasses compiled
    interpreter: dict[str, Any]  # its sys.path under -S and its prefixes (entry.INTERPRETER)
    startup: dict[str, str]  # the encodings modules its start-up imports -> their source
    absent: list[str]  # what the imports looked for and did not find (entry.ABSENT)


def guest_argv(
    plan: Path,
    bundle: Bundle | None,
    busybox: str | None = None,
    unpack_in: str = runtime.GUEST_DIR,
) -> list[str]:
    """The guest's command: the bundle run with ``-S``, or the package from the checkout.

    Both run under this interpreter, which the guest finds on the shared root. With
    the bundle's runtime tar and a ``busybox``, the interpreter's shared objects are
    unpacked into guest memory (``unpack_in``) first.
    """
    if bundle is None:
        return [sys.executable, "-m", "harness.guest", str(plan)]
    # UTF-8 mode: the start-up then needs no codec but UTF-8's, whatever the guest's
    # locale (the runtime tar's home holds only what the start-up imports).
    argv = [sys.executable, "-S", "-X", "utf8", str(bundle.entry), str(bundle.code), str(plan)]
    if bundle.runtime is None or busybox is None:
        return argv
    return runtime.command(bundle.runtime, busybox, argv, unpack_in)


def ensure_bundle(directory: Path | None = None, runner: Runner | None = None) -> Bundle | None:
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
    except (OSError, ValueError, KeyError, py_compile.PyCompileError, HarnessError) as exc:
        log.warning("could not bundle the guest's code in %s (%s); unbundled", directory, exc)
        return None


def module_files(runner: Runner | None = None) -> dict[str, Path]:
    """Every pure-Python module the guest needs, by name: the harness package, and the
    import closure of :data:`ENTRY_MODULES` as this interpreter resolves it."""
    return _module_files(_probe(runner or SubprocessRunner()))


def _probe(runner: Runner) -> _Probed:
    search = [str(paths.PROJECT_ROOT), *_site_dirs()]
    done = runner.run(
        [
            sys.executable,
            "-S",
            "-c",
            _PROBE,
            json.dumps(search),
            json.dumps(ENTRY_MODULES),
            ",".join(entry.PREFIXES),
        ],
        timeout=PROBE_TIMEOUT,
        cwd=Path("/"),
    )
    answer = json.loads(done.stdout)
    modules = {str(n): str(f) for n, f in answer["modules"].items() if f}
    return _Probed(
        modules,
        [str(m) for m in answer["mapped"]],
        [str(m) for m in answer["methods"]],
        dict(answer["interpreter"]),
        {str(n): str(f) for n, f in answer["startup"].items()},
        [str(n) for n in answer["absent"]],
    )


def _module_files(probed: _Probed) -> dict[str, Path]:
    found = {n: Path(f) for n, f in probed.modules.items() if f.endswith(".py")}
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


def _current(directory: Path) -> Bundle | None:
    """The bundle the manifest names, if nothing it was built from has changed."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        code = directory / str(manifest["bundle"])
        tar = directory / str(manifest["runtime"]) if manifest["runtime"] else None
        found = Bundle(code, tar)
        if manifest["python"] != [sys.executable, sys.version]:
            return None
        if not (code.is_file() and found.entry.is_file()):
            return None
        if tar is not None and not tar.is_file():
            return None
        if manifest["sources"] != _sources_stamp():
            return None
        for file, stamp in (manifest["files"] | manifest["runtime_files"]).items():
            if _stamp(Path(file)) != stamp:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for used in (code, found.entry, tar):
        if used is not None:
            os.utime(used)  # in use: kept from pruning
    return found


def _build(directory: Path, runner: Runner) -> Bundle:
    started = time.monotonic()
    probed = _probe(runner)
    modules = _module_files(probed)
    stamps = {str(f): _stamp(f) for f in sorted(set(modules.values()))}
    data = bundle_bytes(modules, probed.methods, probed.interpreter, probed.absent)
    starter = entry_bytes()
    digest = hashlib.sha256(data + starter).hexdigest()[:16]
    made = Bundle(directory / f"guest-{digest}{BUNDLE_SUFFIX}")
    directory.mkdir(parents=True, exist_ok=True)
    for path, content in ((made.code, data), (made.entry, starter)):
        if not path.is_file():
            files.write_atomic(path, content)
    tar, tar_files = _build_runtime(directory, probed, runner)
    manifest = {
        "bundle": made.code.name,
        "runtime": tar.name if tar is not None else None,
        "python": [sys.executable, sys.version],
        "sources": _sources_stamp(),
        "files": stamps,
        "runtime_files": tar_files,
    }
    files.write_atomic(directory / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    _prune(directory, keep={made.code, made.entry, *([] if tar is None else [tar])})
    log.info(
        "bundled %d modules of the guest into %s (%d KB, %.1f s)",
        len(modules),
        made.code,
        len(data) // 1024,
        time.monotonic() - started,
    )
    return Bundle(made.code, tar)


def _build_runtime(
    directory: Path, probed: _Probed, runner: Runner
) -> tuple[Path | None, dict[str, list[int]]]:
    """The tar of the interpreter's shared objects, and what it was built from.

    None (the guest maps them over 9p, only slower) when the interpreter maps none
    the tar could hold or the tar cannot be made.
    """
    try:
        extensions = {n: f for n, f in probed.modules.items() if not f.endswith(".py")}
        contents = runtime.members(probed.mapped, extensions, Path(sys.executable))
        if not contents:
            return None, {}
        home = runtime.home_members(probed.startup, probed.interpreter["prefixes"]["prefix"])
        stamps = {str(f): _stamp(f) for f in sorted({*contents.values(), *home.values()})}
        built = _built_runtime(directory, stamps)
        if built is not None:  # the same files as last time: no strip again
            return built, stamps
        compiled = {name: pyc_bytes(source) for name, source in home.items()}
        if compiled and not _home_starts(compiled, runner):
            compiled = {}
        data = runtime.archive_bytes(contents, runner, runtime.stripper(), compiled)
    except (OSError, ELFError, HarnessError, py_compile.PyCompileError) as exc:
        log.warning("could not gather the guest interpreter's shared objects (%s)", exc)
        return None, {}
    tar = directory / f"runtime-{hashlib.sha256(data).hexdigest()[:16]}.tar"
    if not tar.is_file():
        files.write_atomic(tar, data)
    return tar, stamps


def _home_starts(compiled: Mapping[str, bytes], runner: Runner) -> bool:
    """Whether this interpreter starts from the tar's home as the guest will start it.

    A layout it does not look in (another library directory) would stop the guest's
    interpreter before it ran anything: the tar then goes without a home.
    """
    with tempfile.TemporaryDirectory(prefix="harness-home-") as tmp:
        for name, data in compiled.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        home = Path(tmp, runtime.HOME)
        where = "import encodings; print(encodings.__file__)"
        done = runner.run(
            [sys.executable, "-S", "-X", "utf8", "-c", where],
            check=False,
            timeout=PROBE_TIMEOUT,
            env={"PYTHONHOME": str(home)},
            cwd=Path("/"),
        )
        if done.returncode == 0 and done.stdout.strip().startswith(f"{home}/"):
            return True
    log.info(
        "the interpreter does not start from a home of its codecs (%s); the guest reads "
        "them over 9p",
        (done.stderr.strip().splitlines() or ["it looked elsewhere"])[-1],
    )
    return False


def _built_runtime(directory: Path, stamps: Mapping[str, list[int]]) -> Path | None:
    """The tar the manifest names, if it was built from exactly the files of ``stamps``.

    The bundle is rebuilt whenever a module of the harness changes; the tar depends
    only on the interpreter's files, and stripping them takes a second or two.
    """
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        tar = directory / str(manifest["runtime"])
        if manifest["runtime_files"] == stamps and tar.is_file():
            return tar
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def bundle_bytes(
    modules: Mapping[str, Path],
    methods: Sequence[str] = (),
    interpreter: Mapping[str, Any] | None = None,
    absent: Sequence[str] = (),
) -> bytes:
    """The table :func:`harness.guest.entry.read` reads: each module compiled, the
    dataclasses' methods, and the interpreter's own paths.

    ``{"modules": {name: (is_package, source file, .pyc bytes)}, "methods": {source:
    code}, "interpreter": {"path": [...], "prefixes": {...}}}``, marshalled: the guest
    reads it with nothing but built-in modules. ``methods``, the sources the guest's
    dataclasses compile their methods from, go in compiled (:func:`compiled_methods`);
    ``interpreter`` is what the entry restores after a start from the runtime tar's
    home (:func:`harness.guest.entry.unpacked_runtime`), ``absent`` the modules the
    guest's imports look for and no path holds (:class:`harness.guest.entry.Absent`).
    Sorted, so the same files give the same bytes.
    """
    table = {
        name: (source.name == "__init__.py", str(source), pyc_bytes(source))
        for name, source in sorted(modules.items())
    }
    return marshal.dumps(
        {
            entry.MODULES: table,
            entry.METHODS: compiled_methods(methods),
            entry.INTERPRETER: dict(interpreter or {}),
            entry.ABSENT: sorted(absent),
        }
    )


def read_modules(code: Path) -> dict[str, tuple[bool, str, bytes]]:
    """The modules of the bundle ``code``: ``{name: (is_package, source file, .pyc bytes)}``."""
    with code.open("rb") as table:
        modules: dict[str, tuple[bool, str, bytes]] = marshal.load(table)[entry.MODULES]
    return modules


def entry_bytes() -> bytes:
    """:mod:`harness.guest.entry` compiled, to run as the guest's script."""
    return pyc_bytes(paths.PROJECT_ROOT / "harness" / "guest" / "entry.py")


def pyc_bytes(source: Path) -> bytes:
    """``source`` compiled to an unchecked hash-based ``.pyc`` naming ``source`` itself."""
    with tempfile.TemporaryDirectory(prefix="harness-bundle-") as tmp:
        compiled = Path(tmp) / "module.pyc"
        py_compile.compile(
            str(source),
            cfile=str(compiled),
            dfile=str(source),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        return compiled.read_bytes()


def compiled_methods(sources: Sequence[str]) -> dict[str, CodeType]:
    """``{source: code}`` for each source, as ``dataclasses`` compiles them.

    Under TCG a dataclass's methods cost more to compile than anything else it does: a
    frozen one compiles six, each through the whole of CPython's compiler, about 3.8
    million instructions against 1.1 million with the code ready (callgrind, 20
    dataclasses), and the guest defines some 35 on its way to its first case. The
    bundle is built by the interpreter that runs it, so the code is what the guest's
    own compile would give: same source, the file name ``exec`` gives ("<string>"), no
    ``__future__`` flags (``dataclasses`` has none to pass on).
    """
    return {source: compile(source, "<string>", "exec", dont_inherit=True) for source in sources}


def _prune(directory: Path, *, keep: Collection[Path]) -> None:
    cutoff = time.time() - KEEP_SECONDS
    # An unpacking script pruned while still in use is written again by the next
    # command that names it (runtime.unpack_script).
    olds = ("guest-*", "runtime-*.tar", "unpack-*.sh")
    for old in [path for pattern in olds for path in directory.glob(pattern)]:
        try:
            if old not in keep and old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            continue
