"""The guest interpreter's shared objects, unpacked into guest memory before it starts.

The guest's root is the host's, shared over 9p without a page cache, so every page the
dynamic loader maps from it is a round trip to the host, and under TCG a slow one.
Measured in one 6.1 boot under TCG: ``python3 -I -S -c pass`` took 1.05 to 1.15 s with
its ``libpython`` (23 MB) mapped from the 9p root, 0.42 s from a copy in the guest's
``tmpfs``; the guest's start-up up to its ``main()``, unpacking (0.3 s) included, 0.81 x
the time (``benchmarks/bench_test.py``'s docstring has the run). Copying the files one by
one with the guest's ``cp`` took longer than the whole gain (the libraries are mostly
debugging symbols).

So, on the host, :mod:`harness.guest.bundle` writes one uncompressed tar of every shared object the
guest's interpreter maps once it has imported what the guest imports (the bundle's
probe reads them from ``/proc/self/maps``): ``lib/`` holds the libraries (libpython,
libc, libffi, ...) under their ``DT_SONAME``, the name the dynamic loader looks for;
``ext/`` holds the top-level extension modules. Both are stripped of what the dynamic
loader never reads (``llvm-strip``/``strip --strip-unneeded``, when there is one).
:func:`command` runs the guest under busybox's shell: it unpacks the tar into
:data:`GUEST_DIR` with busybox's ``tar`` (a static binary: nothing more read over 9p),
then runs the interpreter with ``LD_LIBRARY_PATH`` on ``lib/`` and
:data:`RUNTIME_VARIABLE` naming the directory; the bundle's entry puts ``ext/``
on ``sys.path`` and drops both variables, so the programs the guest starts load their
libraries as they would without it. Should unpacking fail, the interpreter runs as
before.

``home/`` is the interpreter's home (``PYTHONHOME``) for its start-up: the codecs it
imports before anything else can run (``encodings`` and UTF-8's, compiled; the guest
runs in UTF-8 mode, ``-X utf8``, so no locale asks for another), where the start-up
otherwise searched and read the standard library's directory over 9p. The entry then
gives the interpreter its own paths and prefixes back
(:func:`harness.guest.entry.unpacked_runtime`), so anything the bundle lacks is found
where it would be without the home. Measured in 6.1 boots under TCG (7 alternating
pairs of ``invoke test``): the guest's start-up and imports took 1.19-1.47 s (median
1.31) with the home, 1.27-2.06 s (median 1.53) without. The host first checks that
the interpreter does start from such a home (:func:`harness.guest.bundle._home_starts`);
an interpreter laid out otherwise gets a tar without one.

The dynamic loader itself and the interpreter's executable (17 KB) stay on the 9p
root: the kernel maps both before anything could point elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from harness import files
from harness.guest.entry import RUNTIME_VARIABLE
from harness.proc import Runner

log = logging.getLogger(__name__)

#: Where the guest unpacks the tar: its ``/run`` is a ``tmpfs``.
GUEST_DIR = "/run/harness-guest"
#: The interpreter's home in the tar (``PYTHONHOME``): what its start-up imports.
HOME = "home"
#: Seconds one strip may take.
STRIP_TIMEOUT = 120.0

#: Run by busybox's shell in the guest (from a file, :func:`unpack_script`): $1
#: busybox, $2 the directory, $3 the tar, then the interpreter's command.
_UNPACK = f"""\
busybox=$1 dir=$2 archive=$3
shift 3
if "$busybox" mkdir -p "$dir" && "$busybox" tar -xf "$archive" -C "$dir"; then
  export LD_LIBRARY_PATH="$dir/lib" {RUNTIME_VARIABLE}="$dir"
  if [ -d "$dir/{HOME}" ]; then export PYTHONHOME="$dir/{HOME}"; fi
else
  echo "harness: could not unpack $archive into $dir; the interpreter's libraries load over 9p" >&2
fi
exec "$@"
"""


def command(
    runtime: Path, busybox: str, argv: Sequence[str], directory: str = GUEST_DIR
) -> list[str]:
    """``argv`` (the interpreter's command) run with ``runtime`` unpacked in ``directory``.

    The script that unpacks it is a file beside the tar (:func:`unpack_script`): vng
    puts the guest's command on the kernel's command line, which holds 2048 bytes in
    all (a longer one stops the kernel before its first line). Should the file not
    be writable, ``argv`` runs alone, its libraries loaded over 9p.
    """
    try:
        script = unpack_script(runtime.parent)
    except OSError as exc:
        log.warning("could not write the guest's unpack script beside %s: %s", runtime, exc)
        return list(argv)
    return [busybox, "sh", str(script), busybox, directory, str(runtime), *argv]


def unpack_script(directory: Path) -> Path:
    """The script that unpacks the tar in the guest, in ``directory``, written once per
    content; its time is renewed on each use, so a bundle's pruning keeps it."""
    path = directory / f"unpack-{hashlib.sha256(_UNPACK.encode()).hexdigest()[:16]}.sh"
    try:
        os.utime(path)
    except FileNotFoundError:
        files.write_atomic(path, _UNPACK)
    return path


def soname(path: Path) -> str | None:
    """The ``DT_SONAME`` of the shared object at ``path``; None without one."""
    with path.open("rb") as stream:
        for section in ELFFile(stream).iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags("DT_SONAME"):
                    return str(getattr(tag, "soname"))  # noqa: B009 (set per tag)
    return None


def program_interpreter(executable: Path) -> Path | None:
    """The dynamic loader ``executable`` names (``PT_INTERP``); None for a static one."""
    with executable.open("rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            if isinstance(segment, InterpSegment):
                return Path(segment.get_interp_name())
    return None


def members(
    mapped: Iterable[str], extensions: Mapping[str, str], executable: Path
) -> dict[str, Path]:
    """Where each file goes in the tar: ``lib/<soname>`` or ``ext/<file name>``.

    ``mapped`` are the files the interpreter maps, ``extensions`` its extension modules
    by module name. The executable and its dynamic loader are left out; so are
    extension modules inside packages (their package is in the bundle, which
    cannot hold them) and files that are not shared objects with a name to be found by.
    """
    leave = {executable.resolve()}
    loader = program_interpreter(executable)
    if loader is not None:
        leave.add(loader.resolve())
    top_level = {Path(file).resolve(): name for name, file in extensions.items() if "." not in name}
    nested = {Path(file).resolve() for name, file in extensions.items() if "." in name}
    found: dict[str, Path] = {}
    for file in sorted({Path(m).resolve() for m in mapped}):
        if file in leave or file in nested or not file.is_file():
            continue
        if file in top_level:
            found[f"ext/{file.name}"] = file
            continue
        try:
            name = soname(file)
        except (OSError, ELFError):
            continue
        if name is not None and "/" not in name:
            found.setdefault(f"lib/{name}", file)
    return found


def home_members(startup: Mapping[str, str], prefix: str) -> dict[str, Path]:
    """Where each module of ``startup`` (name -> source) goes in the tar's home, as a
    sourceless ``.pyc`` beside where its source sits under ``prefix``.

    Empty when one of them lies outside ``prefix`` (an interpreter laid out otherwise
    then starts as it would without the tar's home).
    """
    found: dict[str, Path] = {}
    for source in sorted(Path(file) for file in startup.values()):
        if source.suffix != ".py" or not source.is_relative_to(prefix):
            return {}
        relative = source.relative_to(prefix).with_suffix(".pyc")
        found[f"{HOME}/{relative.as_posix()}"] = source
    return found


def stripper() -> str | None:
    """A ``strip`` that can write a copy: LLVM's (installed with clang) or binutils'."""
    return shutil.which("llvm-strip") or shutil.which("strip")


def archive_bytes(
    contents: Mapping[str, Path],
    runner: Runner,
    strip: str | None,
    compiled: Mapping[str, bytes] | None = None,
) -> bytes:
    """The uncompressed tar of ``contents`` (member name -> file), each stripped if it can
    be, and of ``compiled`` (member name -> bytes) as they are.

    A file the stripper refuses goes in as it is.
    """
    out = io.BytesIO()
    with (
        tempfile.TemporaryDirectory(prefix="harness-runtime-") as tmp,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, source in sorted(contents.items()):
            data = source.read_bytes()
            if strip is not None:
                copy = Path(tmp) / "stripped"
                done = runner.run(
                    [strip, "--strip-unneeded", "-o", str(copy), str(source)],
                    check=False,
                    timeout=STRIP_TIMEOUT,
                )
                if done.returncode == 0 and copy.is_file():
                    data = copy.read_bytes()
                else:
                    log.info("could not strip %s (%s); taken whole", source, done.stderr.strip())
            _add(archive, name, data, 0o755)
        for name, data in sorted((compiled or {}).items()):
            _add(archive, name, data, 0o644)
    return out.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # a fixed time keeps the tar, and so its name, a function of content
    archive.addfile(info, io.BytesIO(data))
