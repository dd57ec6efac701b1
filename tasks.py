"""Front door of the harness: ``invoke --list`` shows what it can do.

Tasks are thin: they parse options, call the ``harness`` package and turn a
:class:`harness.errors.HarnessError` into a clear message and a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke import Collection, Context, Exit, task

from harness.errors import HarnessError

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a HarnessError into ``error: ...`` on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(
            level=logging.DEBUG if kwargs.get("verbose") else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        try:
            return func(*args, **kwargs)
        except HarnessError as exc:
            raise Exit(f"error: {exc}", code=1) from exc
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


ns = Collection()
kernels_ns = Collection("kernels")
ns.add_collection(kernels_ns)

# Each section below defines its tasks and registers them in ``ns`` or ``kernels_ns``.

# --- kernels: kernels.list, kernels.fetch -------------------------------------------

# --- build --------------------------------------------------------------------------

# --- test ---------------------------------------------------------------------------

# --- report -------------------------------------------------------------------------
