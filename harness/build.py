"""Build the sockex1 sample for one kernel: the BPF object and the C loader.

Both are compiled against that kernel's UAPI headers, first on the include path,
into ``<build root>/<release>/``. A stamp file records a hash of everything the
build read (sources, headers, compilers, flags); when it matches, nothing is
rebuilt. The finished object is read back with :mod:`harness.bpf.elf` and checked
for what the sample needs, so that a bad object fails here, before any VM boots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import files, paths
from harness.bpf import elf
from harness.errors import BpfObjectError, BuildError, CommandError
from harness.proc import Runner, SubprocessRunner, require, tail

log = logging.getLogger(__name__)

SAMPLE = "sockex1"
SAMPLE_DIR = paths.SAMPLES_DIR / SAMPLE
KERN_SOURCE = "sockex1_kern.c"
USER_SOURCES = ("sockex1_user.c", "bpf_load.c")
HEADERS = ("bpf_load.h",)
OBJECT_NAME = "sockex1_kern.o"
LOADER_NAME = "sockex1"
STAMP_NAME = ".stamp"
LOCK_NAME = ".lock"
LOG_NAME = "build.log"

#: What the object must contain for the sample to work.
PROGRAM_SECTION = "socket1"
MAP_NAME = "my_map"

#: The host's headers: Debian keeps asm/ in the multiarch directory.
HOST_INCLUDE = Path("/usr/include")
HOST_MULTIARCH = "x86_64-linux-gnu"
#: The parts of a UAPI include tree that the sample's sources reach.
UAPI_DIRS = ("linux", "asm", "asm-generic", HOST_MULTIARCH + "/asm")

BPF_CFLAGS = ("-O2", "-Wall", "-target", "bpf")
USER_CFLAGS = ("-O2", "-Wall")
USER_LIBS = ("-lelf",)


@dataclass(frozen=True)
class BuildOutput:
    """What :func:`build_sample` produced for one kernel release."""

    release: str
    directory: Path
    bpf_object: Path
    c_loader: Path
    include_dir: Path | None  # the kernel's UAPI include dir used; None: the host's
    log_path: Path  # the compiler transcript of the last build
    rebuilt: bool
    commands: tuple[str, ...] = ()  # the compiler commands run (empty when not rebuilt)


def include_flags(headers: Path | None) -> tuple[str, ...]:
    """``-I`` options putting the kernel's UAPI headers first (the host's when None)."""
    base = HOST_INCLUDE if headers is None else headers
    flags = [f"-I{base}"]
    multiarch = base / HOST_MULTIARCH
    if multiarch.is_dir():
        flags.append(f"-I{multiarch}")
    return tuple(flags)


def bpf_argv(clang: str, headers: Path | None, source: Path, output: Path) -> list[str]:
    """The clang command that compiles the BPF object."""
    return [clang, *BPF_CFLAGS, *include_flags(headers), "-c", str(source), "-o", str(output)]


def loader_argv(cc: str, headers: Path | None, sources: Iterable[Path], output: Path) -> list[str]:
    """The compiler command that builds the C loader against libelf."""
    return [
        cc,
        *USER_CFLAGS,
        *include_flags(headers),
        *(str(s) for s in sources),
        "-o",
        str(output),
        *USER_LIBS,
    ]


def check_object(path: Path) -> elf.BpfObject:
    """Read the built object and check what sockex1 needs; a :class:`BpfObjectError` if not."""
    obj = elf.read_object(path)
    program = obj.program(PROGRAM_SECTION)
    obj.map(MAP_NAME)
    if not any(r.type == elf.R_BPF_64_64 and r.symbol == MAP_NAME for r in program.relocations):
        raise BpfObjectError(
            f"{path}: program {PROGRAM_SECTION} has no R_BPF_64_64 relocation against "
            f"{MAP_NAME}; the filter must look its counters up in {MAP_NAME}"
        )
    if obj.license != "GPL":
        raise BpfObjectError(f"{path}: license is {obj.license!r}, the sample needs 'GPL'")
    return obj


def build_sample(
    release: str,
    headers: Path | None,
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
    source_dir: Path = SAMPLE_DIR,
) -> BuildOutput:
    """Build sockex1 for ``release`` against ``headers`` (None: the host's UAPI headers).

    ``headers`` is an include directory holding ``linux/``, ``asm/`` and
    ``asm-generic/``, as the kernel cache keeps them.
    """
    runner = runner or SubprocessRunner()
    if headers is not None and not (headers / "linux" / "bpf.h").is_file():
        raise BuildError(
            f"{headers} holds no linux/bpf.h: not the UAPI headers of kernel {release}; "
            "fetch the kernel again with `invoke kernels.fetch`"
        )
    clang = require("clang", "clang")
    cc = shutil.which("cc") or require("gcc", "gcc")
    directory = (build_root or paths.build_dir()) / release
    output = BuildOutput(
        release=release,
        directory=directory,
        bpf_object=directory / OBJECT_NAME,
        c_loader=directory / LOADER_NAME,
        include_dir=headers,
        log_path=directory / LOG_NAME,
        rebuilt=False,
    )

    kern = source_dir / KERN_SOURCE
    user = [source_dir / name for name in USER_SOURCES]
    stamp = _stamp(
        [kern, *user, *(source_dir / h for h in HEADERS)],
        headers,
        [
            bpf_argv(clang, headers, Path(KERN_SOURCE), Path(OBJECT_NAME)),
            loader_argv(cc, headers, [Path(n) for n in USER_SOURCES], Path(LOADER_NAME)),
            [_identity(clang), _identity(cc)],
        ],
    )
    directory.mkdir(parents=True, exist_ok=True)
    # Two runs building for the same kernel (invoke build beside invoke test) take turns.
    with files.locked(directory / LOCK_NAME):
        return _build_locked(output, stamp, kern, user, headers, clang, cc, runner)


def _build_locked(
    output: BuildOutput,
    stamp: str,
    kern: Path,
    user: list[Path],
    headers: Path | None,
    clang: str,
    cc: str,
    runner: Runner,
) -> BuildOutput:
    release, directory = output.release, output.directory
    stamp_path = directory / STAMP_NAME
    if _read(stamp_path) == stamp and output.bpf_object.is_file() and output.c_loader.is_file():
        log.info("%s for %s is up to date in %s", SAMPLE, release, directory)
        check_object(output.bpf_object)
        return output

    with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as tmp:
        work = Path(tmp)
        # Run in the scratch directory with bare output names, so the commands
        # logged are the ones a user can rerun in the build directory.
        commands = [
            bpf_argv(clang, headers, kern, Path(OBJECT_NAME)),
            loader_argv(cc, headers, user, Path(LOADER_NAME)),
        ]
        transcript = []
        for argv in commands:
            line = shlex.join(argv)
            log.info("build %s for %s: %s", SAMPLE, release, line)
            transcript.append(f"$ {line}\n")
            try:
                done = runner.run(argv, cwd=work)
            except CommandError as exc:
                files.write_atomic(output.log_path, "".join(transcript) + exc.output + "\n")
                raise BuildError(
                    f"building sample {SAMPLE} for kernel {release} failed "
                    f"(headers: {headers or 'host'}; log: {output.log_path}):\n"
                    f"$ {line}\n{tail(exc.output)}"
                ) from exc
            transcript.append(done.stdout + done.stderr)
        check_object(work / OBJECT_NAME)
        _stamp_path_remove(stamp_path)
        os.replace(work / OBJECT_NAME, output.bpf_object)
        os.replace(work / LOADER_NAME, output.c_loader)
        files.write_atomic(output.log_path, "".join(transcript))
        files.write_atomic(stamp_path, stamp)
    return dataclasses.replace(
        output, rebuilt=True, commands=tuple(shlex.join(c) for c in commands)
    )


def _stamp(sources: Iterable[Path], headers: Path | None, argvs: Iterable[list[str]]) -> str:
    """A hash of the sources, the header tree and the commands: equal means nothing changed."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise BuildError(f"cannot read the source {path}: {exc.strerror}") from exc
    for argv in argvs:
        digest.update(b"\0".join(a.encode() for a in argv) + b"\n")
    base = HOST_INCLUDE if headers is None else headers
    for sub in UAPI_DIRS:
        root = base / sub
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.h")):
            digest.update(str(path.relative_to(base)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest() + "\n"


def _identity(program: str) -> str:
    """The compiler as the stamp knows it: its real path, size and modification time."""
    real = Path(program).resolve()
    info = real.stat()
    return f"{real}:{info.st_size}:{info.st_mtime_ns}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _stamp_path_remove(path: Path) -> None:
    # The outputs are about to change: a crash between here and the new stamp
    # must leave no stamp claiming they are current.
    path.unlink(missing_ok=True)
