"""Helpers for tests on the local control plane (bounded waits; 404 as "gone")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (returned), or fail naming what was awaited and the last
    value seen. Tests wait; the operator itself never polls."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def gone(read: Callable[[], object]) -> bool:
    """True when `read` gets a 404; other API errors propagate."""
    try:
        read()
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise
    return False
