"""What every test, benchmark and local-cluster helper shares: one bounded wait and one free port.

It lives in a package of its own, at the bottom of the import graph, because everything above uses it:
divbase_localcluster (ports for its control plane), divbase_operator.testing, divbase_migrations.testing, the tests
and bench/. It imports nothing but the standard library, so none of them imports "up" or gains a dependency through it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

NOT_FOUND = 404


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Call `check` every `interval` seconds until it returns something truthy, and return that; after `timeout`
    seconds fail (AssertionError) naming `what` and the last value seen. Tests and benchmarks wait; the operator
    itself never polls.

    An API error with status 404 (kubernetes' ApiException, the operator's KubeApi) counts as "not yet": the object
    waited for may not exist yet. Any other exception propagates at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except Exception as exc:
            if getattr(exc, "status", None) != NOT_FOUND:
                raise
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it). Another process may take it before the caller binds
    it; callers that start servers retry on a bind failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
