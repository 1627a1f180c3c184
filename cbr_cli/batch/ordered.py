"""Results handed back in item order while they arrive in any order (from the worker pool)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class InOrder(Generic[T]):
    """Releases ``(position, value)`` pairs in position order 0, 1, 2, ...

    The worker pool yields results in completion order; merging statistics or applying
    PyTorch's momentum updates must happen in image order, so that the numbers do not
    depend on ``--jobs`` or timing. Only the results that arrived early are held.
    """

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, T] = {}

    def add(self, position: int, value: T) -> list[tuple[int, T]]:
        """Take the result at ``position``; return every pair that is now next in order."""
        self._waiting[position] = value
        ready = []
        while self._next in self._waiting:
            ready.append((self._next, self._waiting.pop(self._next)))
            self._next += 1
        return ready
