"""The guest interpreter's shared objects: what the tar holds, and that they are used.

Run on the host with the real interpreter and the host's busybox: the same command
the guest runs, unpacking into a temporary directory instead of the guest's /run.
"""

from __future__ import annotations

import io
import json
import marshal
import os
import shutil
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
from fakes import Call, FakeRunner, really_run

from harness.guest import bundle, entry, runtime
from harness.proc import Completed, SubprocessRunner

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="no busybox on this host")
#: Whether this interpreter loads its runtime from a shared libpython.
SHARED = bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))

#: Prints what the interpreter maps and the two variables, as JSON.
_MAPS = (
    "import json, os\n"
    "maps = [l.split(None, 5)[5].strip() for l in open('/proc/self/maps') if '/' in l]\n"
    "print(json.dumps({'maps': maps, 'ld': os.environ.get('LD_LIBRARY_PATH'),"
    " 'runtime': os.environ.get('HARNESS_GUEST_RUNTIME')}))\n"
)


def own_mapped() -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line.split(None, 5)[5].strip() for line in maps if "/" in line]


def extension_modules() -> dict[str, str]:
    return {
        name: str(module.__file__)
        for name, module in sys.modules.items()
        if str(getattr(module, "__file__", "") or "").endswith(".so")
    }


def test_the_tar_holds_libraries_by_soname_and_top_level_extensions_only() -> None:
    import _ctypes  # noqa: F401  (an extension module with a library of its own, libffi)

    contents = runtime.members(own_mapped(), extension_modules(), Path(sys.executable))

    loader = runtime.program_interpreter(Path(sys.executable))
    assert loader is not None and loader.resolve() not in contents.values()
    assert Path(sys.executable).resolve() not in contents.values()
    assert contents, "this interpreter maps no shared object the tar could hold"
    for name, file in contents.items():
        kind, _, base = name.partition("/")
        assert kind in {"lib", "ext"}, name
        if kind == "lib":
            assert base == runtime.soname(file)  # the name the dynamic loader looks for
        else:
            assert file.name == base and base.partition(".")[0] in sys.modules
    assert "lib/libc.so.6" in contents
    if SHARED:
        assert f"lib/{sysconfig.get_config_var('INSTSONAME')}" in contents
    assert any(n.startswith("ext/_ctypes.") for n in contents)
    # An extension module inside a package stays where it is (its package is in a zip),
    # even one with a soname: here libc stands for one.
    libc = contents["lib/libc.so.6"]
    named = {**extension_modules(), "pkg._fake": str(libc)}
    nested = runtime.members(own_mapped(), named, Path(sys.executable))
    assert libc not in nested.values()
    assert set(nested) == set(contents) - {"lib/libc.so.6"}


def test_a_file_the_stripper_refuses_goes_in_whole(tmp_path: Path) -> None:
    library = tmp_path / "libx.so.1"
    library.write_bytes(b"not an ELF file")

    def refuses(call: Call) -> Completed:
        return Completed(call.argv, 1, "", "strip: file format not recognized")

    data = runtime.archive_bytes({"lib/libx.so.1": library}, FakeRunner(otherwise=refuses), "strip")

    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.getmember("lib/libx.so.1")
        assert archive.extractfile(member).read() == b"not an ELF file"  # type: ignore[union-attr]
        assert member.mtime == 0 and member.mode == 0o755


@needs_busybox
@pytest.mark.skipif(runtime.stripper() is None, reason="no strip on this host")
def test_the_interpreter_runs_on_the_unpacked_and_stripped_libraries(tmp_path: Path) -> None:
    contents = runtime.members(own_mapped(), extension_modules(), Path(sys.executable))
    tar = tmp_path / "runtime.tar"
    tar.write_bytes(runtime.archive_bytes(contents, SubprocessRunner(), runtime.stripper()))
    unpacked = tmp_path / "unpacked"
    assert BUSYBOX is not None

    done = SubprocessRunner().run(
        runtime.command(tar, BUSYBOX, [sys.executable, "-S", "-c", _MAPS], str(unpacked))
    )

    seen = json.loads(done.stdout)
    assert seen["ld"] == f"{unpacked}/lib" and seen["runtime"] == str(unpacked)
    libc = [m for m in seen["maps"] if Path(m).name.startswith("libc.so")]
    assert libc and all(m.startswith(f"{unpacked}/lib/") for m in libc)
    if SHARED:
        libpython = [m for m in seen["maps"] if "libpython" in m]
        assert libpython and all(m.startswith(f"{unpacked}/lib/") for m in libpython)
        # stripped: the copy is smaller than what the interpreter maps on the host
        soname = sysconfig.get_config_var("INSTSONAME")
        assert (unpacked / "lib" / soname).stat().st_size <= Path(
            sysconfig.get_config_var("LIBDIR"), soname
        ).stat().st_size


@needs_busybox
def test_a_tar_that_cannot_be_unpacked_is_said_and_the_command_runs_anyway(
    tmp_path: Path,
) -> None:
    assert BUSYBOX is not None
    missing = tmp_path / "missing.tar"

    done = SubprocessRunner().run(
        runtime.command(missing, BUSYBOX, [sys.executable, "-S", "-c", _MAPS], str(tmp_path / "u")),
    )

    assert f"could not unpack {missing}" in done.stderr
    seen = json.loads(done.stdout)
    assert seen["ld"] is None and seen["runtime"] is None


@needs_busybox
def test_the_bundle_imports_extensions_from_the_unpacked_runtime(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path / "bundle", FakeRunner(otherwise=really_run))
    assert made is not None and made.runtime is not None
    plan = tmp_path / "missing-plan.json"
    argv = bundle.guest_argv(plan, made, BUSYBOX, str(tmp_path / "u"))
    argv.insert(argv.index("-S") + 1, "-v")  # each import says where it came from

    done = SubprocessRunner().run(argv, check=False, cwd=tmp_path)

    assert done.returncode == 2 and "cannot read the guest plan" in done.stderr
    loaded = [line for line in done.stderr.splitlines() if "extension module" in line]
    assert loaded
    top_level = [line for line in loaded if "." not in line.split("'")[1]]
    assert top_level and all(f"{tmp_path}/u/ext/" in line for line in top_level), top_level


def test_the_bundle_entry_drops_the_variables_for_the_programs_the_guest_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(entry.RUNTIME_VARIABLE, "/run/unpacked")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/run/unpacked/lib")
    monkeypatch.setattr(sys, "path", ["guest.bundle", "stdlib"])

    entry.unpacked_runtime({})

    assert sys.path == ["guest.bundle", "/run/unpacked/ext", "stdlib"]
    assert entry.RUNTIME_VARIABLE not in os.environ and "LD_LIBRARY_PATH" not in os.environ


@needs_busybox
def test_the_guest_starts_from_the_tars_home_and_gets_its_own_paths_back(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path / "bundle", FakeRunner(otherwise=really_run))
    assert made is not None and made.runtime is not None and BUSYBOX is not None
    with tarfile.open(made.runtime) as archive:
        home = sorted(n for n in archive.getnames() if n.startswith(f"{runtime.HOME}/"))
    assert home and all(n.endswith(".pyc") and "/encodings/" in n for n in home)
    with made.code.open("rb") as table:
        interpreter = marshal.load(table)[entry.INTERPRETER]
    unpacked = tmp_path / "u"
    # What the entry does before it imports the guest, then what the guest sees.
    # Only built-in and frozen modules before the switch, as in the entry.
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(entry.__file__).parent)!r})\n"
        "import encodings, entry\n"
        "started = {'encodings': encodings.__file__, 'home': os.environ['PYTHONHOME']}\n"
        "entry.unpacked_runtime(eval(sys.argv[1]))\n"
        "import encodings.latin_1, json\n"
        "print(json.dumps(dict(started, path=sys.path[2:], prefix=sys.prefix,\n"
        "    base=sys.base_prefix, latin=encodings.latin_1.__file__,\n"
        "    left=os.environ.get('PYTHONHOME'))))\n"
    )
    argv = [sys.executable, "-S", "-X", "utf8", "-c", code, repr(interpreter)]

    done = SubprocessRunner().run(runtime.command(made.runtime, BUSYBOX, argv, str(unpacked)))

    seen = json.loads(done.stdout)
    assert seen["home"] == f"{unpacked}/{runtime.HOME}"
    assert seen["encodings"].startswith(f"{unpacked}/{runtime.HOME}/")
    assert seen["left"] is None  # the programs the guest starts do not inherit it
    assert (seen["prefix"], seen["base"]) == (sys.prefix, sys.base_prefix)
    assert seen["path"] == interpreter["path"] and interpreter["stdlib"] in seen["path"]
    # A codec the home lacks comes from the interpreter's own directory, as before.
    assert seen["latin"].startswith(f"{interpreter['stdlib']}/encodings/")


def test_a_home_outside_the_interpreters_prefix_is_left_out() -> None:
    startup = {"encodings": "/usr/lib/python3.11/encodings/__init__.py"}

    assert runtime.home_members(startup, "/usr") == {
        "home/lib/python3.11/encodings/__init__.pyc": Path(startup["encodings"])
    }
    assert runtime.home_members(startup, "/opt/python") == {}


def test_an_interpreter_that_does_not_start_from_the_home_gets_a_tar_without_one(
    tmp_path: Path,
) -> None:
    def elsewhere(call: Call) -> str | Completed:
        if "PYTHONHOME" in (call.env or {}):  # the check of the home: it looks elsewhere
            message = "Fatal Python error: init_fs_encoding: failed to get the Python codec"
            return Completed(call.argv, 1, "", message, None)
        return really_run(call)

    made = bundle.ensure_bundle(tmp_path / "bundle", FakeRunner(otherwise=elsewhere))

    assert made is not None and made.runtime is not None
    with tarfile.open(made.runtime) as archive:
        names = archive.getnames()
    assert names and not [n for n in names if n.startswith(f"{runtime.HOME}/")]
    assert any(n.startswith("lib/") for n in names)  # the shared objects are there still
