"""The guest bundle's ``__main__``: ``python3 -S BUNDLE PLAN`` runs :mod:`harness.guest`.

:mod:`harness.guest.bundle` copies this file into the bundle it builds. Python has
put the bundle's own path first on ``sys.path``; reading a module out of a zip
on the guest's 9p root costs an open, a seek and two reads, each a round trip to
the host (virtme-ng mounts the root without a page cache). So the bundle is read
once, whole, into an anonymous file in the guest's memory (``memfd_create``),
and modules are imported from there: ``/proc/self/fd/N`` names it for the
``zipimport`` machinery and leaves nothing behind on any file system. Where that
fails, the bundle is used where it is.

When the guest's command unpacked the interpreter's shared objects into memory first
(:mod:`harness.guest.runtime`), :data:`RUNTIME_VARIABLE` names where: its ``ext/``
goes on ``sys.path`` right after the bundle, and the variable and ``LD_LIBRARY_PATH``
leave the environment, so the programs the guest starts load their libraries as they
would without it.

The dataclasses' methods come compiled from the bundle (:func:`_precompiled_methods`).

Only the standard library's built-in modules are imported before the switch.
"""

import os
import sys

#: Names the directory the interpreter's shared objects were unpacked into.
RUNTIME_VARIABLE = "HARNESS_GUEST_RUNTIME"
#: The bundle's member with the dataclasses' methods compiled on the host.
METHODS_NAME = "harness-dataclass-methods.marshal"


def _in_memory(bundle: str) -> str:
    """A path to a copy of ``bundle`` in memory, or ``bundle`` itself."""
    try:
        with open(bundle, "rb") as source:
            data = source.read()
        fd = os.memfd_create("harness-guest")
    except (OSError, AttributeError):
        return bundle
    with open(fd, "wb", closefd=False) as copy:
        copy.write(data)
    path = f"/proc/self/fd/{fd}"
    return path if os.path.exists(path) else bundle


def _unpacked_runtime() -> None:
    """``ext/`` of the unpacked shared objects on ``sys.path``; their variables gone."""
    directory = os.environ.pop(RUNTIME_VARIABLE, None)
    if directory is not None:
        os.environ.pop("LD_LIBRARY_PATH", None)
        sys.path.insert(1, os.path.join(directory, "ext"))


def _precompiled_methods(bundle: str) -> None:
    """``dataclasses`` takes each method's code from the bundle instead of compiling it.

    ``dataclasses`` builds every method of a dataclass from source text with ``exec``;
    the bundle holds that text's code, compiled on the host by this same interpreter
    (:func:`harness.guest.bundle.compiled_methods`). A text it lacks is compiled as
    before.
    """
    import marshal
    import zipimport

    try:
        codes = marshal.loads(zipimport.zipimporter(bundle).get_data(METHODS_NAME))
    except (OSError, ValueError, EOFError, TypeError, zipimport.ZipImportError):
        return
    import builtins
    import dataclasses

    def exec_precompiled(source: object, *namespaces: object) -> None:
        code = codes.get(source) if isinstance(source, str) else None
        builtins.exec(source if code is None else code, *namespaces)  # type: ignore[arg-type]

    dataclasses.exec = exec_precompiled  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.path[0] = _in_memory(sys.path[0])
    _unpacked_runtime()
    _precompiled_methods(sys.path[0])
    from harness.guest.__main__ import main

    status = main(sys.argv[1:])
    # Everything is written and closed, every thread and child ended: the VM powers off
    # next, so the interpreter's own teardown (every module's) is skipped.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
