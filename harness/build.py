"""Build, per kernel release, each sample's BPF object and user program, and each loader.

Everything is compiled against that kernel's UAPI headers, first on the include
path, into ``<build root>/<release>/samples/<sample>/`` and
``<build root>/<release>/loaders/<loader>/``. A stamp file records a hash of
everything a build read (sources, headers, compilers, flags); when it matches,
nothing is rebuilt. A finished object is read back with :mod:`harness.bpf.elf` and
checked against the sample's descriptor (its programs and maps), so that a bad
object fails here, before any VM boots.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import files, paths
from harness.bpf import elf
from harness.errors import BpfObjectError, BuildError, CommandError
from harness.loaders import LOADERS_DIR, PROTOCOL_SOURCE, Loader
from harness.proc import Completed, Runner, SubprocessRunner, require, tail
from harness.samples import Sample

log = logging.getLogger(__name__)

STAMP_NAME = ".stamp"
LOCK_NAME = ".lock"
LOG_NAME = "build.log"

#: The host's headers: Debian keeps asm/ in the multiarch directory.
HOST_INCLUDE = Path("/usr/include")
HOST_MULTIARCH = "x86_64-linux-gnu"
#: The parts of a UAPI include tree that the sources reach.
UAPI_DIRS = ("linux", "asm", "asm-generic", HOST_MULTIARCH + "/asm")

BPF_CFLAGS = ("-O2", "-Wall", "-target", "bpf")
#: BTF-defined maps need the object's BTF, which clang writes with -g.
BTF_CFLAGS = ("-g",)
USER_CFLAGS = ("-O2", "-Wall")
#: The classic user programs are built on the classic loader's bpf_load.c (and the
#: packet-socket code it shares with the loaders, in common/protocol.c).
CLASSIC_LIB = LOADERS_DIR / "classic"


@dataclass(frozen=True)
class BuildOutput:
    """What one build produced: its outputs by name, the transcript, whether it ran."""

    name: str  # "samples/<sample>" or "loaders/<loader>"
    release: str
    directory: Path
    outputs: dict[str, Path]
    include_dir: Path | None  # the kernel's UAPI include dir used; None: the host's
    log_path: Path
    rebuilt: bool
    commands: tuple[str, ...] = ()  # the compiler commands run (empty when not rebuilt)


@dataclass(frozen=True)
class SampleBuild:
    """A sample built for one release: its BPF object, and its own user program if it has one."""

    sample: Sample
    output: BuildOutput

    @property
    def bpf_object(self) -> Path:
        return self.output.outputs["object"]

    @property
    def user_program(self) -> Path | None:
        return self.output.outputs.get("user")


def include_flags(headers: Path | None) -> tuple[str, ...]:
    """``-I`` options putting the kernel's UAPI headers first (the host's when None)."""
    base = HOST_INCLUDE if headers is None else headers
    flags = [f"-I{base}"]
    multiarch = base / HOST_MULTIARCH
    if multiarch.is_dir():
        flags.append(f"-I{multiarch}")
    return tuple(flags)


def bpf_argv(
    clang: str, headers: Path | None, source: Path, output: Path, *, btf: bool = False
) -> list[str]:
    """The clang command that compiles a BPF object."""
    extra = BTF_CFLAGS if btf else ()
    return [
        clang,
        *BPF_CFLAGS,
        *extra,
        *include_flags(headers),
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def program_argv(
    cc: str,
    headers: Path | None,
    sources: Iterable[Path],
    output: Path,
    *,
    include: Sequence[Path] = (),
    libraries: Sequence[str] = (),
) -> list[str]:
    """The compiler command that builds a user-space program (a loader or a user program)."""
    return [
        cc,
        *USER_CFLAGS,
        *include_flags(headers),
        *(f"-I{path}" for path in include),
        *(str(s) for s in sources),
        "-o",
        str(output),
        *libraries,
    ]


#: pkg-config's answers in this process, by (pkg-config, static, package): the samples'
#: programs and the loaders of a run link the same few libraries, and each question
#: was a program started (with its watchdog, :class:`harness.proc.Watchdog`).
_pkg_config_answers: dict[tuple[str, bool, str], list[str]] = {}


def link_options(libraries: Sequence[str], runner: Runner, *, static: bool = False) -> list[str]:
    """``-l`` options, with ``pkg-config:NAME`` asked of pkg-config (``static``: with
    what the library's archive needs in turn, ``pkg-config --static``), once a process."""
    out: list[str] = []
    for library in libraries:
        if library.startswith("pkg-config:"):
            package = library.split(":", 1)[1]
            pkg_config = require("pkg-config", "pkg-config")
            key = (pkg_config, static, package)
            if key not in _pkg_config_answers:
                try:
                    done = runner.run(
                        [pkg_config, *(["--static"] if static else []), "--libs", package]
                    )
                except CommandError as exc:
                    raise BuildError(
                        f"pkg-config knows no {package}: install its development package "
                        f"(e.g. apt-get install {package}-dev)"
                    ) from exc
                _pkg_config_answers[key] = shlex.split(done.stdout)
            out += _pkg_config_answers[key]
        else:
            out.append(library)
    return out


def check_object(sample: Sample, path: Path) -> elf.BpfObject:
    """Read a built object and check it against ``sample``'s descriptor."""
    obj = elf.read_object(path)
    check_programs(sample, obj)
    if sample.format == "classic":
        for check in sample.maps:
            definition = obj.map(check.name)
            if (definition.key_size, definition.value_size) != (check.key.size, check.value.size):
                raise BpfObjectError(
                    f"{path}: map {check.name} has {definition.key_size}-byte keys and "
                    f"{definition.value_size}-byte values, but samples/{sample.name}/sample.py "
                    f"declares {check.key.size} and {check.value.size}"
                )
    if obj.license != "GPL":
        raise BpfObjectError(f"{path}: license is {obj.license!r}, the samples need 'GPL'")
    return obj


def check_programs(sample: Sample, obj: elf.BpfObject) -> None:
    """Every program the descriptor names is in the object, and each prog array the object
    fills itself (``filled_by="object"``) holds exactly the programs the descriptor says:
    a static initialiser that changed between releases is found here, not as a count
    that is wrong in a VM."""
    for program in sample.programs:
        obj.program(program.name)
    for array in sample.prog_arrays:
        if array.filled_by != "object":
            continue
        obj.map(array.map)
        holds = {s.index: s.target for s in obj.slots if s.map == array.map}
        says = {index: obj.program(name).key for index, name in array.entries.items()}
        if holds != says:
            raise BpfObjectError(
                f"{obj.path}: prog array {array.map} is filled by the object with "
                f"{_show_slots(holds)}, but sample {sample.name} says {_show_slots(says)}; "
                "make the descriptor's "
                "ProgArray(..., filled_by='object') name what the object's initialiser does"
            )


def _show_slots(slots: dict[int, str]) -> str:
    return ", ".join(f"[{i}] {slots[i]}" for i in sorted(slots)) or "nothing"


def build_sample(
    sample: Sample,
    release: str,
    headers: Path | None,
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
) -> SampleBuild:
    """Build ``sample`` for ``release`` against ``headers`` (None: the host's UAPI headers)."""
    runner = runner or SubprocessRunner()
    _check_headers(headers, release)
    clang = require("clang", "clang")
    btf = sample.format == "btf"
    kern = sample.directory / sample.kern
    steps: list[tuple[str, list[str]]] = [
        ("object", bpf_argv(clang, headers, kern, Path(sample.object_name), btf=btf))
    ]
    inputs = [kern, *_local_headers(sample.directory), *shared_headers(sample.directory)]
    if sample.user:
        cc = _cc()
        user = [sample.directory / name for name in sample.user]
        if btf:
            include: list[Path] = []
            libraries = guest_link_options(["pkg-config:libbpf"], runner)
        else:
            include = [CLASSIC_LIB]
            user += [CLASSIC_LIB / "bpf_load.c", PROTOCOL_SOURCE]
            inputs += [CLASSIC_LIB / "bpf_load.h", PROTOCOL_SOURCE.with_suffix(".h")]
            libraries = guest_link_options(["pkg-config:libelf"], runner)
        inputs += user
        program = Path(sample.user[0]).stem.removesuffix("_user") or sample.name
        steps.append(
            (
                "user",
                program_argv(
                    cc, headers, user, Path(program), include=include, libraries=libraries
                ),
            )
        )
    output = _build_unit(
        f"samples/{sample.name}",
        release,
        headers,
        inputs,
        steps,
        runner,
        build_root=build_root,
        check=lambda built: check_object(sample, built["object"]),
    )
    return SampleBuild(sample, output)


def build_loader(
    loader: Loader,
    release: str,
    headers: Path | None,
    *,
    build_root: Path | None = None,
    runner: Runner | None = None,
) -> BuildOutput:
    """Build a program loader for ``release``; its program is ``outputs["program"]``."""
    runner = runner or SubprocessRunner()
    if not loader.sources:
        raise BuildError(f"loader {loader.name} has nothing to build")
    _check_headers(headers, release)
    cc = _cc()
    directories = sorted({s.parent for s in loader.sources})
    inputs = [*loader.sources, *(h for d in directories for h in sorted(d.glob("*.h")))]
    argv = program_argv(
        cc,
        headers,
        loader.sources,
        Path(f"loader-{loader.name}"),
        include=directories,
        libraries=guest_link_options(loader.libraries, runner),
    )
    return _build_unit(
        f"loaders/{loader.name}", release, headers, inputs, [("program", argv)], runner,
        build_root=build_root,
    )  # fmt: skip


#: Links a program the guest runs statically (:func:`guest_link_options`).
STATIC = "-static"


def guest_link_options(libraries: Sequence[str], runner: Runner) -> list[str]:
    """How a program the guest runs is linked: statically, with what each library's
    archive needs in turn (``pkg-config --static``).

    The guest's root is the host's over 9p, without a page cache: a dynamically linked
    program's start reads the dynamic linker and each shared library through it and
    relocates them under emulation. Under TCG the classic loader took 0.09-0.16 s to
    print its usage linked against libelf, libz and libc, and 0.02-0.08 s linked
    statically (one 6.1 boot, four each). The libraries are the same, from the same
    packages (``libelf.a`` in ``libelf-dev``, ``libbpf.a`` in ``libbpf-dev``, ``libz.a`` in
    ``zlib1g-dev``, ``libc.a`` in ``libc6-dev``). A host without one of the archives
    links the program dynamically instead (:func:`run_step` retries without
    :data:`STATIC`, and the build's log says so).
    """
    return [STATIC, *link_options(libraries, runner, static=True)]


def run_step(runner: Runner, argv: list[str], cwd: Path, transcript: list[str]) -> Completed:
    """Run one build command in ``cwd``; a static link (:data:`STATIC`) that fails for
    want of a library's archive (the linker's "cannot find -lNAME") is run again
    without it, both in ``transcript``. Any other failure is the build's."""
    try:
        return runner.run(argv, cwd=cwd)
    except CommandError as exc:
        if STATIC not in argv or "cannot find -l" not in exc.output:
            raise
        dynamic = [a for a in argv if a != STATIC]
        log.info("no static link here (%s); linking dynamically: %s", exc, shlex.join(dynamic))
        transcript.append(f"{exc.output}\n$ {shlex.join(dynamic)}\n")
        return runner.run(dynamic, cwd=cwd)


def _cc() -> str:
    return shutil.which("cc") or require("gcc", "gcc")


def _check_headers(headers: Path | None, release: str) -> None:
    if headers is not None and not (headers / "linux" / "bpf.h").is_file():
        raise BuildError(
            f"{headers} holds no linux/bpf.h: not the UAPI headers of kernel {release}; "
            "fetch the kernel again with `invoke kernels.fetch`"
        )


def _local_headers(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.h"))


#: The folder beside the samples' own with the headers they share, which a sample's
#: source includes by a relative path ("../include/socket_filter.h").
SHARED_INCLUDE = "include"


def shared_headers(sample_directory: Path) -> list[Path]:
    """The headers every sample of ``sample_directory``'s tree may include.

    Each one is an input of every sample's build, so a change to any rebuilds them all
    (whether a sample includes it or not: simpler than following each object's
    includes, and the shared headers change rarely).
    """
    return sorted((sample_directory.parent / SHARED_INCLUDE).glob("*.h"))


def _build_unit(
    name: str,
    release: str,
    headers: Path | None,
    inputs: Sequence[Path],
    steps: Sequence[tuple[str, list[str]]],
    runner: Runner,
    *,
    build_root: Path | None,
    check: Callable[[dict[str, Path]], object] | None = None,
) -> BuildOutput:
    """Run ``steps`` (output name, argv ending in ``-o FILE``) unless the stamp says current.

    Each argv names its output by a bare file name, so the commands logged are the
    ones a user can rerun in the build directory.
    """
    root = build_root or paths.build_dir()
    directory = root / release / name
    outputs = {key: directory / argv[argv.index("-o") + 1] for key, argv in steps}
    output = BuildOutput(
        name=name,
        release=release,
        directory=directory,
        outputs=outputs,
        include_dir=headers,
        log_path=directory / LOG_NAME,
        rebuilt=False,
    )
    tools = sorted({argv[0] for _, argv in steps})
    argvs = [argv for _, argv in steps]
    stamp = _stamp(
        inputs, headers, argvs, [_identity(t) for t in tools], known=root / HEADER_DIGESTS
    )
    directory.mkdir(parents=True, exist_ok=True)
    # Two runs building for the same kernel (invoke build beside invoke test) take turns.
    with files.locked(directory / LOCK_NAME):
        stamp_path = directory / STAMP_NAME
        if _read(stamp_path) == stamp and all(p.is_file() for p in outputs.values()):
            log.info("%s for %s is up to date in %s", name, release, directory)
            if check is not None:
                check(outputs)
            return output
        with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as tmp:
            work = Path(tmp)
            transcript = []
            for _, argv in steps:
                line = shlex.join(argv)
                log.info("build %s for %s: %s", name, release, line)
                transcript.append(f"$ {line}\n")
                try:
                    done = run_step(runner, argv, work, transcript)
                except CommandError as exc:
                    files.write_atomic(output.log_path, "".join(transcript) + exc.output + "\n")
                    failed = shlex.join(exc.argv) if exc.argv else line  # a retry's, if one ran
                    raise BuildError(
                        f"building {name} for kernel {release} failed "
                        f"(headers: {headers or 'host'}; log: {output.log_path}):\n"
                        f"$ {failed}\n{tail(exc.output)}"
                    ) from exc
                transcript.append(done.stdout + done.stderr)
            built = {key: work / path.name for key, path in outputs.items()}
            if check is not None:
                try:
                    check(built)
                except BpfObjectError as exc:
                    # Name the object where it would have been, not the scratch directory.
                    raise BpfObjectError(str(exc).replace(str(work), str(directory))) from exc
            # The outputs are about to change: a crash before the new stamp must leave
            # no stamp claiming they are current.
            stamp_path.unlink(missing_ok=True)
            for key, path in outputs.items():
                os.replace(built[key], path)
            files.write_atomic(output.log_path, "".join(transcript))
            files.write_atomic(stamp_path, stamp)
    return BuildOutput(
        name=name,
        release=release,
        directory=directory,
        outputs=outputs,
        include_dir=headers,
        log_path=output.log_path,
        rebuilt=True,
        commands=tuple(shlex.join(argv) for _, argv in steps),
    )


def _stamp(
    sources: Iterable[Path],
    headers: Path | None,
    argvs: Iterable[list[str]],
    tools: Iterable[str],
    *,
    known: Path | None = None,
) -> str:
    """A hash of the sources, the header tree, the commands and the compilers (the header
    tree's digest kept in the directory ``known``, see :func:`_headers_digest`)."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise BuildError(f"cannot read the source {path}: {exc.strerror}") from exc
    for argv in argvs:
        digest.update(b"\0".join(a.encode() for a in argv) + b"\n")
    for tool in tools:
        digest.update(tool.encode() + b"\n")
    tree = HOST_INCLUDE if headers is None else headers
    digest.update(_headers_digest(tree, known).encode())
    return digest.hexdigest() + "\n"


#: Under the build directory: each header tree's digest, in a file named by what the
#: tree's files were when it was read (see :func:`_headers_digest`).
HEADER_DIGESTS = ".header-digests"

#: Each header tree's digest by what its files were when it was read: (relative path,
#: size, modification time) of each. A run stamps every sample and loader against the
#: same tree (some 900 headers); this process reads it once.
_header_digests: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _headers_digest(base: Path, known: Path | None = None) -> str:
    """A hash of the UAPI headers under ``base``: their paths and contents.

    Keyed, like a build's stamp, by each header's path, size and modification time:
    kept in this process, and in a file under ``known`` for later runs, which then walk
    the tree without reading its 900 files again (30-70 ms of every run's build check
    here). A file that cannot be read or written there only costs the reading.
    """
    found = []
    for sub in UAPI_DIRS:
        for directory, dirs, names in os.walk(base / sub):
            dirs.sort()
            for name in names:
                if name.endswith(".h"):
                    path = os.path.join(directory, name)
                    info = os.stat(path)
                    found.append((os.path.relpath(path, base), info.st_size, info.st_mtime_ns))
    key = (str(base), tuple(sorted(found)))
    remembered = _header_digests.get(key)
    if remembered is not None:
        return remembered
    kept = known / hashlib.sha256(repr(key).encode()).hexdigest() if known else None
    try:
        text = kept.read_bytes().strip() if kept is not None else b""
    except OSError:
        text = b""
    if len(text) == 64 and all(c in b"0123456789abcdef" for c in text):
        remembered = _header_digests[key] = text.decode()
        return remembered
    digest = hashlib.sha256()
    for relative, _, _ in key[1]:
        digest.update(relative.encode() + b"\0")
        with open(os.path.join(base, relative), "rb") as header:
            digest.update(header.read())
    remembered = _header_digests[key] = digest.hexdigest()
    if kept is not None:
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(kept, remembered + "\n")
        except OSError as exc:
            log.debug("could not keep the header digest in %s: %s", kept, exc)
    return remembered


def _identity(program: str) -> str:
    """A compiler as the stamp knows it: its real path, size and modification time."""
    real = Path(program).resolve()
    info = real.stat()
    return f"{real}:{info.st_size}:{info.st_mtime_ns}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
