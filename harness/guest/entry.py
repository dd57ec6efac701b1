"""The guest bundle's entry: ``python3 -S ENTRY.pyc BUNDLE PLAN`` runs :mod:`harness.guest`.

:mod:`harness.guest.bundle` compiles this file beside the bundle it builds. The
bundle is one file: every module the guest imports, compiled on the host, in one
marshalled table (:func:`read`). It is read whole, in one ``read``: the guest's 9p
root has no page cache, and every request is a round trip to the host. Its modules
are imported from the table by :class:`BundleFinder`, a ``sys.path`` hook for the
bundle's path: each is unmarshalled once, when it is imported, and its code names
its real source file, so tracebacks still show the source lines.

Why not ``zipimport`` of a zip, as before: CPython's ``zipimport`` is Python code
run for every import (the archive's directory parsed, every module's code
unmarshalled twice: once to name its file, once to run it), and running a zip
imports ``runpy`` first. A whole guest run of two cases (a classic sample, callgrind)
took 459 M instructions from the zip and 379 M from the table, and under TCG
instructions are time.

When the guest's command unpacked the interpreter's shared objects into memory first
(:mod:`harness.guest.runtime`), :data:`RUNTIME_VARIABLE` names where: its ``ext/``
goes on ``sys.path`` right after the bundle, and the variable and ``LD_LIBRARY_PATH``
leave the environment, so the programs the guest starts load their libraries as they
would without it.

The dataclasses' methods come compiled from the bundle (:func:`precompiled_methods`).

Only built-in and frozen modules are imported before the switch, and only names
that are in the bundle are served from it: anything else (extension modules,
another checkout's zip on ``sys.path``) is found as it would be without it.
"""

import marshal
import os
import sys
from _frozen_importlib import ModuleSpec

#: Names the directory the interpreter's shared objects were unpacked into.
RUNTIME_VARIABLE = "HARNESS_GUEST_RUNTIME"
#: The bundle's keys: ``{module: (is_package, source file, .pyc bytes)}``,
#: ``{source text: code}`` of the dataclasses' methods, and the interpreter's own
#: ``sys.path`` (under ``-S``) and prefixes.
MODULES = "modules"
METHODS = "methods"
INTERPRETER = "interpreter"
ABSENT = "absent"
#: The ``sys`` attributes a start from the runtime tar's home changes.
PREFIXES = ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix")
#: A .pyc file's header (magic, flags, hash) before its marshalled code.
PYC_HEADER = 16
#: Modules the bundle imports lazily (:class:`Deferred`): their body runs when an
#: attribute they lack is first asked for, not when they are imported. Each is
#: imported by the guest's modules or pyelftools and used only when something fails or
#: is debugged (``-X importtime`` under TCG, cumulative):
#:
#: * ``inspect`` (with ``ast`` and ``dis``, 0.1 s): by ``dataclasses``, to write the
#:   docstring of a dataclass that has none (every guest dataclass has one), and by
#:   pyelftools' ``construct.debug``, for its ``Probe``;
#: * ``pdb`` (with ``bdb``, ``cmd``, ``code`` and ``glob``, 0.15 s): by
#:   ``construct.debug``, for its ``Debugger``;
#: * ``traceback`` (with ``linecache``, ``tokenize`` and ``textwrap``, 0.05 s): by
#:   ``logging`` and the guest's forked children, to print an exception;
#: * ``locale`` (11 ms): by ``subprocess``, for the encoding of a text-mode pipe;
#: * ``ipaddress`` (14 ms): by ``urllib.parse`` (which ``pathlib`` imports), for
#:   bracketed URL hosts;
#: * the modules of :data:`DEFERRED_CALLABLES`.
#:
#: Names of deferred modules that may be taken from them before their body runs: a
#: from-import of one gets a :class:`Later`, which runs the body when it is called.
#: pyelftools' ``ELFFile`` module imports its DWARF reader (with the DWARF constants,
#: line programs, location lists, call frames, ...: 0.18 s under TCG, ``-X importtime``)
#: and its ARM unwinding reader (16 ms) by name at its top, and calls these names only
#: when asked for DWARF or unwinding tables, which the Python loader never asks for.
DEFERRED_CALLABLES = {
    "elftools.dwarf.dwarfinfo": frozenset({"DWARFInfo", "DebugSectionDescriptor", "DwarfConfig"}),
    "elftools.ehabi.ehabiinfo": frozenset({"EHABIInfo"}),
}
DEFERRED = frozenset({"inspect", "pdb", "traceback", "locale", "ipaddress", *DEFERRED_CALLABLES})

#: Each bundle :func:`read` has read, by path: its modules.
_bundles: dict[str, dict[str, tuple[bool, str, bytes]]] = {}


class BundleFinder:
    """``sys.path_hooks`` entry: imports the modules of a bundle :func:`read` has read.

    A path that is not such a bundle raises ImportError, so the next hook
    (``zipimport``, the file system's) gets it.
    """

    def __init__(self, path: str) -> None:
        modules = _bundles.get(path)
        if modules is None:
            raise ImportError(f"not a bundle: {path}", path=path)
        self.path = path
        self.modules = modules

    def find_spec(self, name: str, target: object = None) -> ModuleSpec | None:
        entry = self.modules.get(name)
        if entry is None:
            return None
        is_package, origin, _ = entry
        spec = ModuleSpec(name, self, origin=origin, is_package=is_package)  # type: ignore[arg-type]
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [self.path]
        return spec

    def invalidate_caches(self) -> None:
        pass

    def create_module(self, spec: ModuleSpec) -> object:
        return Deferred(spec.name) if spec.name in DEFERRED else None  # None: the default

    def exec_module(self, module: object) -> None:
        if type(module) is not Deferred:
            self.run_body(module)

    def run_body(self, module: object) -> None:
        _, _, pyc = self.modules[module.__spec__.name]  # type: ignore[attr-defined]
        exec(marshal.loads(memoryview(pyc)[PYC_HEADER:]), module.__dict__)

    def get_code(self, name: str) -> object:
        """The module's code (``runpy`` and ``pdb`` ask a loader for it)."""
        return marshal.loads(memoryview(self.modules[name][2])[PYC_HEADER:])

    def get_source(self, name: str) -> None:
        return None  # tracebacks read the source file the code names


class Deferred(type(sys)):  # type: ignore[misc]
    """A module of :data:`DEFERRED`: imported, its body not yet run.

    The import system sets its ``__spec__``, ``__loader__``, ``__file__``, ... as for
    any module, so importing it again (which asks for ``__spec__``) does not run it,
    unlike ``importlib.util.LazyLoader``'s modules, which run on any attribute. The
    first attribute it lacks (``inspect.signature``, ``from pdb import Pdb``) runs the
    body, by the loader's :meth:`BundleFinder.run_body`, and the module is then an
    ordinary one.
    """

    def __getattr__(self, name: str) -> object:
        # The import system asks for these with a default before it sets them; no
        # body of DEFERRED sets one.
        if type(self) is Deferred and name not in ("__file__", "__cached__", "__path__"):
            if name in DEFERRED_CALLABLES.get(str(self.__name__), frozenset()):
                return Later(self, name)
            _run_deferred(self)
            if name in self.__dict__:
                return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}", name=name)


def _run_deferred(module: Deferred) -> None:
    """Runs the body of ``module``, which is an ordinary module from then on."""
    module.__class__ = type(sys)  # type: ignore[assignment]
    finder: BundleFinder = module.__spec__.loader  # type: ignore[attr-defined]
    finder.run_body(module)


class Later:
    """A name of :data:`DEFERRED_CALLABLES`, taken before its module's body ran.

    Calling it runs the body (unless something ran it since) and calls what the body
    bound to the name.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: Deferred, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: object, **kwargs: object) -> object:
        if type(self.module) is Deferred:
            _run_deferred(self.module)
        return self.module.__dict__[self.name](*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.module.__name__}.{self.name}, not yet imported>"


class Absent:
    """``sys.meta_path`` entry, first: the modules the host found nowhere are not searched for.

    The guest's imports try a few modules that do not exist on Linux (``nt``,
    ``msvcrt``, ``_winapi``, ``org`` for Jython) and catch the ImportError. Each try
    went through every directory of ``sys.path``, the standard library's over 9p, where
    the first one read the whole directory (30 ms under TCG, ``-X importtime``). The
    bundle's probe ran the same imports with the same interpreter on the same root, and
    recorded what no finder found (:func:`harness.guest.bundle._probe`).
    """

    def __init__(self, names: list[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    def invalidate_caches(self) -> None:
        pass


def read(path: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """The bundle at ``path``, its modules importable from ``path`` on ``sys.path``."""
    with open(path, "rb") as bundle:
        table = marshal.loads(bundle.read())
    _bundles[path] = table[MODULES]
    if BundleFinder not in sys.path_hooks:
        sys.path_hooks.insert(0, BundleFinder)
    sys.path_importer_cache.pop(path, None)
    return table  # type: ignore[no-any-return]


def unpacked_runtime(interpreter: dict) -> None:  # type: ignore[type-arg]
    """``ext/`` of the unpacked shared objects on ``sys.path``; their variables gone.

    Started from the tar's home (``PYTHONHOME``, which holds only the codecs the
    start-up imports), the interpreter gets its own paths and prefixes back from
    ``interpreter`` (the bundle's :data:`INTERPRETER`), behind the bundle, and its
    ``encodings`` package its own directory after the home's: whatever the bundle
    lacks is then found where it would be without the home.
    """
    directory = os.environ.pop(RUNTIME_VARIABLE, None)
    if directory is None:
        return
    os.environ.pop("LD_LIBRARY_PATH", None)
    if os.environ.pop("PYTHONHOME", None) is not None and interpreter:
        import encodings

        sys.path[1:] = interpreter["path"]
        for name, value in interpreter["prefixes"].items():
            setattr(sys, name, value)
        own = os.path.join(interpreter["stdlib"], "encodings")
        if own not in encodings.__path__:
            encodings.__path__.append(own)
    sys.path.insert(1, os.path.join(directory, "ext"))


def precompiled_methods(codes: dict[str, object]) -> None:
    """``dataclasses`` takes each method's code from ``codes`` instead of compiling it.

    ``dataclasses`` builds every method of a dataclass from source text with ``exec``;
    the bundle holds that text's code, compiled on the host by this same interpreter
    (:func:`harness.guest.bundle.compiled_methods`). A text it lacks is compiled as
    before.
    """
    import builtins
    import dataclasses

    def exec_precompiled(source: object, *namespaces: object) -> None:
        code = codes.get(source) if isinstance(source, str) else None
        builtins.exec(source if code is None else code, *namespaces)  # type: ignore[arg-type]

    dataclasses.exec = exec_precompiled  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: python3 -S ENTRY.pyc BUNDLE PLAN", file=sys.stderr)
        return 2
    bundle = argv[0]
    try:
        table = read(bundle)
    except (OSError, ValueError, EOFError, TypeError, KeyError) as exc:
        print(
            f"error: cannot read the guest bundle {bundle}: {exc}; the host writes it "
            "before each boot (harness.guest.bundle): run again, and if it persists "
            "remove the bundle's directory so that it is built anew",
            file=sys.stderr,
        )
        return 2
    sys.path[0] = bundle  # the entry's own directory is no place to import from
    unpacked_runtime(table.get(INTERPRETER, {}))
    # Before the first import that tries one of them (``copy``, which dataclasses
    # imports, tries ``org``).
    sys.meta_path.insert(0, Absent(list(table.get(ABSENT, ()))))
    precompiled_methods(table.get(METHODS, {}))
    from harness.guest.__main__ import main as run

    return run(argv[1:])


if __name__ == "__main__":
    status = main(sys.argv[1:])
    # Everything is written and closed, every thread and child ended: the VM powers off
    # next, so the interpreter's own teardown (every module's) is skipped.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
