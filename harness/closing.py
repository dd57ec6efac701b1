"""A resource that a ``with`` block closes."""

from __future__ import annotations

from typing import Self


class Closing:
    """Ends a ``with`` block by calling :meth:`close`, however the block ended."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
