"""The one bounded wait and free port every test shares (divbase_testsupport)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from divbase_testsupport import free_port, wait_for


class NotFound(Exception):
    status = 404


class Forbidden(Exception):
    status = 403


def raising(exc: Exception) -> Callable[[], object]:
    def read() -> object:
        raise exc

    return read


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, [], {"ready": True}])
    assert wait_for("a ready object", lambda: next(values), timeout=5, interval=0) == {"ready": True}


def test_wait_for_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.2s waiting for the Job complete \(last: \[\]\)"):
        wait_for("the Job complete", list, timeout=0.2, interval=0.05)


def test_a_404_is_not_yet_and_another_error_fails_at_once() -> None:
    calls = iter([NotFound(), NotFound(), "there"])

    def read() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for("the object created", read, timeout=5, interval=0) == "there"
    with pytest.raises(AssertionError, match="last: NotFound"):
        wait_for("the object created", raising(NotFound()), timeout=0.1, interval=0.02)
    with pytest.raises(Forbidden):
        wait_for("the object readable", raising(Forbidden()), timeout=30)


def test_free_port_is_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
