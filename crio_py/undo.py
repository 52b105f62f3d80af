"""An undo stack: each step of a multi-step create registers how to take itself back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class UndoStack:
    """Run registered undo actions in reverse order when the operation fails.

    Use as a context manager: on an exception every action runs (failures are logged, not
    raised, so one stuck step does not keep the others from cleaning up), then the exception
    propagates. ``commit()`` drops the actions once the operation has succeeded.
    """

    def __init__(self, what: str, **context: Any):
        self._what = what
        self._context = context
        self._actions: list[tuple[str, Callable[[], object]]] = []

    def push(self, step: str, action: Callable[[], object]) -> None:
        self._actions.append((step, action))

    def commit(self) -> None:
        self._actions.clear()

    def rollback(self) -> None:
        while self._actions:
            step, action = self._actions.pop()
            try:
                action()
            except Exception as exc:
                log.error(
                    "rollback step failed",
                    extra={"operation": self._what, "step": step, "error": str(exc), **self._context},
                )

    def __enter__(self) -> UndoStack:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.rollback()
