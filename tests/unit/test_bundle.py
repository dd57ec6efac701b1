"""The guest bundle: what goes in, how it is named and reused, and that it runs."""

from __future__ import annotations

import json
import logging
import marshal
import os
import sys
import time
from pathlib import Path

import pytest
from fakes import Call, FakeRunner, really_run

from harness.errors import CommandError
from harness.guest import bundle, entry, runtime
from harness.paths import PROJECT_ROOT

#: A stand-in for the standard library, as the probe would name it.
STDLIB = Path(__file__).resolve().parent / "frames_util.py"


def probe_answer(call: Call) -> str:
    """The interpreter's answer: the real harness module, and one more module."""
    assert call.argv[:3] == (sys.executable, "-S", "-c")
    assert json.loads(call.argv[5]) == list(bundle.ENTRY_MODULES)
    guest_main = PROJECT_ROOT / "harness" / "guest" / "__main__.py"
    modules = {"harness.guest.__main__": str(guest_main), "stdlib_stand_in": str(STDLIB)}
    interpreter = {"path": [], "prefixes": {}, "stdlib": str(STDLIB.parent)}
    return json.dumps(
        {
            "modules": modules,
            "mapped": [],
            "methods": [],
            "interpreter": interpreter,
            "startup": {},
            "absent": [],
        }
    )


def test_the_bundle_holds_the_harness_and_what_the_guest_imports(tmp_path: Path) -> None:
    runner = FakeRunner(otherwise=probe_answer)

    made = bundle.ensure_bundle(tmp_path, runner)

    assert made is not None and made.code.parent == tmp_path
    assert made.code.suffix == bundle.BUNDLE_SUFFIX and made.entry.is_file()
    assert made.runtime is None  # the probe named no shared object
    modules = bundle.read_modules(made.code)
    assert {"harness", "harness.guest", "harness.guest.__main__", "stdlib_stand_in"} <= set(modules)
    assert modules["harness"][0] and not modules["harness.bpf.loader"][0]  # packages
    _, origin, pyc = modules["harness.bpf.loader"]
    code = marshal.loads(pyc[entry.PYC_HEADER :])
    # Tracebacks in the guest name the real source file, and nothing checks a source.
    source = str(PROJECT_ROOT / "harness" / "bpf" / "loader.py")
    assert origin == code.co_filename == source
    assert int.from_bytes(modules["stdlib_stand_in"][2][4:8], "little") == 0b01  # unchecked hash
    # The entry is the entry module, compiled.
    entry_code = marshal.loads(made.entry.read_bytes()[entry.PYC_HEADER :])
    assert entry_code.co_filename == str(PROJECT_ROOT / "harness" / "guest" / "entry.py")


def test_an_unchanged_bundle_is_reused_and_a_changed_file_rebuilds_it(tmp_path: Path) -> None:
    runner = FakeRunner(otherwise=probe_answer)
    first = bundle.ensure_bundle(tmp_path, runner)

    again = bundle.ensure_bundle(tmp_path, runner)

    assert again == first
    assert len(runner.calls) == 1
    manifest_path = tmp_path / bundle.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][str(STDLIB)] = [0, 0]  # as if the module had changed since
    manifest_path.write_text(json.dumps(manifest))

    rebuilt = bundle.ensure_bundle(tmp_path, runner)

    assert rebuilt == first  # same content, same name
    assert len(runner.calls) == 2


def test_without_a_bundle_the_guest_runs_the_package_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(call: Call) -> str:
        raise CommandError("python3: exit status 1", argv=call.argv)

    with caplog.at_level(logging.WARNING):
        made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=fails))

    assert made is None
    assert "could not bundle the guest's code" in caplog.text
    plan = tmp_path / "plan.json"
    assert bundle.guest_argv(plan, None) == [sys.executable, "-m", "harness.guest", str(plan)]
    code = bundle.Bundle(tmp_path / "b.bundle")
    unbundled = [
        sys.executable,
        "-S",
        "-X",
        "utf8",
        str(tmp_path / "b.pyc"),
        str(tmp_path / "b.bundle"),
        str(plan),
    ]
    assert bundle.guest_argv(plan, code) == unbundled
    # A runtime tar needs a busybox to unpack it; without one the command is the same.
    with_tar = bundle.Bundle(tmp_path / "b.bundle", tmp_path / "r.tar")
    assert bundle.guest_argv(plan, with_tar) == unbundled
    staged = bundle.guest_argv(plan, with_tar, "/bin/busybox", "/run/x")
    # The unpacking script is a file beside the tar: the command stays short, for it
    # goes on the kernel's command line (2048 bytes in all).
    script = Path(staged[2])
    assert staged[:2] == ["/bin/busybox", "sh"] and script.parent == tmp_path
    assert "tar -xf" in script.read_text()
    assert not [arg for arg in staged if "tar -xf" in arg]  # no script text in the argv
    assert staged[-10:] == ["/bin/busybox", "/run/x", str(tmp_path / "r.tar"), *unbundled]


def test_the_bundle_runs_the_guest_from_its_table_without_site(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    argv = (sys.executable, "-S", "-v", str(made.entry), str(made.code))

    # -v: each import says what loaded it; the plan is missing, so main() stops there.
    done = really_run(Call((*argv, str(tmp_path / "missing-plan.json")), check=False, cwd=tmp_path))

    assert done.returncode == 2
    assert "error: cannot read the guest plan" in done.stderr
    imported = [line for line in done.stderr.splitlines() if line.startswith("import '")]
    from_bundle = [line for line in imported if "BundleFinder" in line]
    # The harness, pyelftools' and the standard library's modules come from the table.
    assert any(line.startswith("import 'harness.guest.__main__'") for line in from_bundle)
    assert any(line.startswith("import 'json'") for line in from_bundle)
    assert all("BundleFinder" in line for line in imported if "'harness" in line), imported
    assert "import 'site'" not in done.stderr and "import 'runpy'" not in done.stderr
    assert {"elftools.elf.elffile", "json", "dataclasses"} <= set(bundle.read_modules(made.code))


def test_a_bundle_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(made.code.read_bytes()[:1000])

    for broken in (cut, tmp_path / "missing.bundle"):
        done = really_run(
            Call((sys.executable, "-S", str(made.entry), str(broken), "plan.json"), check=False)
        )

        assert done.returncode == 2
        assert done.stderr.startswith(f"error: cannot read the guest bundle {broken}: ")
        assert "run again" in done.stderr  # and what to do
        assert len(done.stderr.splitlines()) == 1


def test_the_bundle_holds_the_dataclasses_methods_compiled(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    codes = marshal.loads(made.code.read_bytes())[entry.METHODS]
    # The guest's dataclasses (the loader's among them) compile these texts; each code
    # is what compiling it gives.
    assert len(codes) > 50
    source, code = next(iter(codes.items()))
    assert code.co_code == compile(source, "<string>", "exec", dont_inherit=True).co_code
    assert any("__create_fn__" in s and "__init__" in s for s in codes)


def test_dataclasses_take_their_methods_from_the_bundle_and_compile_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    recorded: list[str] = []

    def recording(source: object, *namespaces: object) -> None:
        if isinstance(source, str):
            recorded.append(source)
        exec(source, *namespaces)  # type: ignore[arg-type]

    monkeypatch.setattr(dataclasses, "exec", recording, raising=False)

    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0

    init = next(s for s in recorded if "def __init__" in s)
    # A bundle whose __init__ for this text sets y to 99 whatever it is given: if the
    # guest's hook uses the bundle's code, the next class shows it.
    swapped = init.replace("'y',y)", "'y',99)")
    assert swapped != init
    monkeypatch.setattr(dataclasses, "exec", exec, raising=False)

    entry.precompiled_methods({init: compile(swapped, "<string>", "exec")})

    @dataclasses.dataclass(frozen=True)
    class Point2:  # the same fields: the same __init__ text
        x: int
        y: int = 0

    @dataclasses.dataclass(frozen=True)
    class Other:  # texts the bundle lacks: compiled as before
        name: str

    assert Point2(1, 2).y == 99
    assert Other("a") == Other("a") and hash(Other("a")) == hash(Other("a"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Other("a").name = "b"  # type: ignore[misc]


def test_a_rebuilt_bundle_keeps_its_runtime_tar_while_the_interpreters_files_stay(
    tmp_path: Path,
) -> None:
    runner = FakeRunner(otherwise=really_run)
    first = bundle.ensure_bundle(tmp_path, runner)
    assert first is not None and first.runtime is not None
    strips = len([c for c in runner.calls if c.program != Path(sys.executable).name])
    manifest_path = tmp_path / bundle.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["sources"] = {}  # as if a module of the harness had changed
    manifest_path.write_text(json.dumps(manifest))

    again = bundle.ensure_bundle(tmp_path, runner)

    assert again is not None and again.runtime == first.runtime
    assert strips > 0  # the first build stripped the shared objects
    programs = [c.program for c in runner.calls]
    assert len(programs) - programs.count(Path(sys.executable).name) == strips  # no strip since
    # The first build probed and tried the tar's home; the second only probed again.
    assert programs.count(Path(sys.executable).name) == 3


def test_the_modules_the_guest_looks_for_and_no_path_holds_are_not_searched_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    with made.code.open("rb") as table:
        absent = marshal.load(table)[entry.ABSENT]
    # Windows' own modules, which the standard library tries on every platform, and
    # Jython's, which ``copy`` tries while dataclasses is imported.
    assert "nt" in absent and "msvcrt" in absent and "org" in absent
    assert not {"os", "json", "harness", "elftools"} & set(absent)

    finder = entry.Absent(absent)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "nt", raising=False)
    with pytest.raises(ModuleNotFoundError) as missing:
        import nt  # noqa: F401

    assert missing.value.name == "nt"
    finder.find_spec("json")  # anything else: no error, the other finders decide


def test_the_entry_answers_for_absent_modules_before_the_first_import_that_tries_one(
    tmp_path: Path,
) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    # -vv: each import says what loaded it, and the file system's finder each file it tries.
    argv = (sys.executable, "-S", "-vv", str(made.entry), str(made.code))

    done = really_run(Call((*argv, str(tmp_path / "missing-plan.json")), check=False, cwd=tmp_path))

    assert done.returncode == 2
    assert "import 'copy'" in done.stderr and "import 'dataclasses'" in done.stderr
    # ``copy`` (imported by dataclasses, for the precompiled methods) tries Jython's
    # ``org``: it is answered before any finder searches a directory for it.
    tried = [line for line in done.stderr.splitlines() if line.startswith("# trying ")]
    assert tried  # the finder's messages are on
    assert not [line for line in tried if "/org" in line]


def test_the_guest_imports_inspect_for_dataclasses_without_running_it(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    argv = (sys.executable, "-S", "-X", "importtime", str(made.entry), str(made.code))

    done = really_run(Call((*argv, str(tmp_path / "missing-plan.json")), check=False, cwd=tmp_path))

    assert done.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert {"dataclasses", "inspect", "harness.guest.plan"} <= imported
    # What only inspect's body imports: it never ran (every guest dataclass has a
    # docstring, so dataclasses did not ask inspect for a signature to write one).
    assert not {"ast", "dis"} & imported


#: Run with the entry's code in ``entry`` and the bundle's path in argv[1].
_LAZY_INSPECT = """\
import sys
entry.read(sys.argv[1])
sys.path.insert(0, sys.argv[1])
import harness.guest.__main__
import harness.bpf.loader  # pyelftools imports inspect again, and pdb
for name in entry.DEFERRED:  # imported by the guest, and not run: type() asks nothing of it
    assert type(sys.modules[name]).__name__ == "Deferred", name
assert not {"bdb", "linecache", "tokenize"} & set(sys.modules)
import dataclasses
assert "ast" not in sys.modules

@dataclasses.dataclass
class Undocumented:
    size: int

assert Undocumented.__doc__ == "Undocumented(size: int)", Undocumented.__doc__
assert "ast" in sys.modules  # inspect ran, when dataclasses first used it
import inspect
assert inspect.signature(Undocumented).parameters["size"].annotation is int
from traceback import format_exception_only  # a from-import runs it too

assert format_exception_only(ValueError("x")) == ["ValueError: x\\n"]
# pyelftools' ELFFile took its DWARF reader's names without running the reader's module.
from elftools.elf import elffile
assert "not yet imported" in repr(elffile.DwarfConfig)
assert not {"elftools.dwarf.constants", "elftools.dwarf.lineprogram"} & set(sys.modules)
config = elffile.DwarfConfig(little_endian=True, machine_arch="x64", default_address_size=8)
dwarfinfo = sys.modules["elftools.dwarf.dwarfinfo"]
assert type(dwarfinfo).__name__ == "module" and type(config) is dwarfinfo.DwarfConfig
assert config.default_address_size == 8 and "elftools.dwarf.constants" in sys.modules
assert type(dwarfinfo.DWARFInfo) is type  # the module's own names, now that it ran
print("ok")
"""


def test_a_deferred_module_runs_when_it_is_first_used(tmp_path: Path) -> None:
    made = bundle.ensure_bundle(tmp_path, FakeRunner(otherwise=really_run))
    assert made is not None
    code = (
        "import marshal, sys\n"
        f"entry = type(sys)('harness_entry')\n"
        f"exec(marshal.loads(open({str(made.entry)!r}, 'rb').read()[16:]), entry.__dict__)\n"
        f"exec({_LAZY_INSPECT!r})\n"
    )

    done = really_run(Call((sys.executable, "-S", "-c", code, str(made.code)), check=False))

    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_a_rebuild_prunes_old_unpacking_scripts_and_keeps_the_one_in_use(tmp_path: Path) -> None:
    runner = FakeRunner(otherwise=probe_answer)
    bundle.ensure_bundle(tmp_path, runner)
    tar = tmp_path / "runtime-0.tar"
    in_use = runtime.unpack_script(tmp_path)
    stale = tmp_path / "unpack-0000000000000000.sh"
    stale.write_text("")
    old = time.time() - bundle.KEEP_SECONDS - 60
    for path in (in_use, stale):
        os.utime(path, (old, old))
    assert runtime.command(tar, "/bin/busybox", ["true"])[2] == str(in_use)  # used again
    manifest_path = tmp_path / bundle.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][str(STDLIB)] = [0, 0]  # a rebuild, which prunes
    manifest_path.write_text(json.dumps(manifest))

    bundle.ensure_bundle(tmp_path, runner)

    assert in_use.is_file()
    assert not stale.exists()
