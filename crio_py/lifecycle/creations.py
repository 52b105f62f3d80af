"""Creations in flight, by reserved name: what makes kubelet's retries safe.

kubelet gives RunPodSandbox and CreateContainer a deadline (often 2-4 minutes, for pulls and
CNI) and, when it passes, asks again with the same name. The first request carries on in the
daemon. A retry whose name is held by a creation still in flight waits for it and answers with
its result; one held by a finished object answers with that object (CRI-O's resource store
idea). A retry after a failed first attempt creates afresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from crio_py.errors import CrioError, DeadlineExceeded

log = logging.getLogger(__name__)
T = TypeVar("T")


class Creations(Generic[T]):
    """One creation per name at a time; later requests for the name get the first one's result."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._pending: dict[str, Future[T]] = {}
        self._lock = threading.Lock()

    def run(self, name: str, existing: Callable[[], T | None], create: Callable[[], T], timeout: float | None) -> T:
        """``create()`` unless ``name`` is being created (then wait up to ``timeout`` seconds for it)
        or ``existing()`` finds it made already."""
        while True:
            with self._lock:
                pending = self._pending.get(name)
                if pending is None:
                    found = existing()
                    if found is not None:
                        log.info(f"{self.what} exists: answered with it", extra={"reserved_name": name})
                        return found
                    mine: Future[T] = Future()
                    self._pending[name] = mine
            if pending is None:
                break
            log.info(f"{self.what} being created by an earlier request: waiting for it", extra={"reserved_name": name})
            try:
                return pending.result(timeout)
            except FutureTimeout:
                raise DeadlineExceeded(
                    f"{self.what} {name} is still being created by an earlier request; ask again later"
                ) from None
            except CrioError:
                continue  # the earlier attempt failed (and undid itself): try ourselves
        try:
            result = create()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._pending.pop(name, None)
        mine.set_result(result)
        return result
