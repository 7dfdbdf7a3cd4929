"""publish.opened_in_background: the previous build's archive is opened (the store's
verified open: it hashes the whole archive) on a worker thread while the pack lists the
env. Whatever happens, the open is waited for and closed exactly when it was entered."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from nsls2_artifacts.errors import StoreError
from nsls2_artifacts.publish import opened_in_background


class Opening:
    """A context manager that records where it was entered and how it was exited."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.entered_on: str | None = None
        self.exits: list[type[BaseException] | None] = []
        self.release = threading.Event()

    @contextlib.contextmanager
    def open(self) -> Iterator[str]:
        self.release.wait(10)  # the caller goes on while this one is still "hashing"
        self.entered_on = threading.current_thread().name
        if self.fail:
            raise StoreError("artifact env.tar.zst: sha256 mismatch")
        try:
            yield "reader"
        except BaseException as exc:
            self.exits.append(type(exc))
            raise
        self.exits.append(None)


def test_the_body_runs_while_the_open_is_under_way_and_gets_its_result() -> None:
    opening = Opening()
    with opened_in_background(opening.open()) as reader:
        assert opening.entered_on is None  # not waited for until asked
        opening.release.set()
        assert reader() == "reader"
    assert opening.entered_on is not None and opening.entered_on.startswith("open-previous")
    assert opening.exits == [None]


def test_a_failed_open_raises_where_it_is_asked_for_and_is_not_exited() -> None:
    opening = Opening(fail=True)
    opening.release.set()
    with opened_in_background(opening.open()) as reader, pytest.raises(StoreError, match="sha256"):
        reader()
    assert opening.exits == []


def test_a_failing_body_still_waits_for_the_open_and_closes_it() -> None:
    opening = Opening()
    with pytest.raises(RuntimeError), opened_in_background(opening.open()):
        opening.release.set()
        raise RuntimeError("pack failed")
    assert opening.exits == [RuntimeError]


def test_a_body_that_never_asks_leaves_a_failed_open_unreported() -> None:
    """Nothing was read from it: the pack did not use the previous build."""
    opening = Opening(fail=True)
    opening.release.set()
    with opened_in_background(opening.open()):
        pass
    assert opening.exits == []
