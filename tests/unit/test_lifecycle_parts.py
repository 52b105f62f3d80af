"""The lifecycle layer's parts: the pod read/write lock and the creations-in-flight store."""

from __future__ import annotations

import threading

import pytest

from crio_py.errors import DeadlineExceeded, Internal
from crio_py.lifecycle.creations import Creations
from crio_py.lifecycle.rwlock import RWLock


def test_shared_holders_exclude_the_exclusive_one_and_a_waiting_writer_goes_first() -> None:
    lock = RWLock()
    order: list[str] = []

    def writer() -> None:
        with lock.exclusive():
            order.append("writer")

    def late_reader() -> None:
        with lock.shared():
            order.append("late reader")

    with lock.shared(), lock.shared():  # shared holders do not exclude each other
        first = threading.Thread(target=writer)
        first.start()
        with lock._cond:
            assert lock._cond.wait_for(lambda: lock._writers_waiting == 1, 5)
        # Arrives while the writer waits: it must not get in before it.
        late = threading.Thread(target=late_reader)
        late.start()
        order.append("readers done")
    first.join(5)
    late.join(5)
    assert order == ["readers done", "writer", "late reader"]


def test_a_second_request_waits_for_the_first_and_gets_its_result() -> None:
    creations: Creations[str] = Creations("thing")
    started, release = threading.Event(), threading.Event()
    results: list[str] = []
    made = []

    def slow() -> str:
        made.append(1)
        started.set()
        release.wait(5)
        return "id-1"

    first = threading.Thread(target=lambda: results.append(creations.run("n", lambda: None, slow, None)))
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: results.append(creations.run("n", lambda: None, slow, None)))
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert results == ["id-1", "id-1"] and made == [1]


def test_a_finished_creation_answers_a_retry_and_a_failed_one_lets_it_try_again() -> None:
    creations: Creations[str] = Creations("thing")
    assert creations.run("n", lambda: "existing", lambda: "new", None) == "existing"

    def fail() -> str:
        raise Internal("boom")

    with pytest.raises(Internal):
        creations.run("n", lambda: None, fail, None)
    assert creations.run("n", lambda: None, lambda: "second try", None) == "second try"


def test_a_retry_that_waits_past_its_deadline_is_deadline_exceeded() -> None:
    creations: Creations[str] = Creations("thing")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "id"

    first = threading.Thread(target=lambda: creations.run("n", lambda: None, slow, None))
    first.start()
    started.wait(5)
    with pytest.raises(DeadlineExceeded, match="still being created"):
        creations.run("n", lambda: None, slow, 0.05)
    release.set()
    first.join(5)
