"""What a pod worker may use of its node: the narrow interface between `NodeAgent` and `PodWorker`.

The agent builds one `PodHost` and hands it to every worker; a worker reaches nothing else of the agent (not the
other pods, not the Node object), and neither module imports the other's internals, so there is no import cycle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..podnet.layout import Layout
from .api import Api
from .container import Container
from .hooks import Connect
from .images import ImageResolver


class EventSink(Protocol):
    """Queues a core/v1 Event about a pod (optionally one of its containers); never blocks."""

    def __call__(
        self, pod: dict[str, Any], etype: str, reason: str, message: str, c: Container | None = None
    ) -> None: ...


class AddressAllocator(Protocol):
    """Pod IPs: `allocate` a fresh one, `reserve` one a previous agent handed out, `release` it at the end."""

    def allocate(self) -> str: ...

    def reserve(self, ip: str) -> bool: ...

    def release(self, ip: str) -> None: ...


class ProcessGroups:
    """Every process group a pod runs (containers' shims, exec hooks, `kubectl exec`): the safety net at shutdown
    kills what a worker did not stop in time."""

    def __init__(self) -> None:
        self._pgids: set[int] = set()
        self._lock = threading.Lock()

    def register(self, pgid: int) -> None:
        with self._lock:
            self._pgids.add(pgid)

    def unregister(self, pgid: int) -> None:
        with self._lock:
            self._pgids.discard(pgid)

    def kill_all(self) -> int:
        """SIGKILL every group still registered; returns how many there were."""
        with self._lock:
            left = list(self._pgids)
        for pgid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        return len(left)


@dataclass(frozen=True)
class PodHost:
    """The collaborators a `PodWorker` gets from its node agent."""

    api: Api
    pods_dir: Path  # each pod's directory is created under it
    images: ImageResolver
    ips: AddressAllocator
    network: Layout | None  # the pod network (namespaces, cluster pod CIDR), None: loopback addresses
    pod_api_server: str  # where pods find the apiserver
    events: EventSink
    connect: Connect  # TCP from the node (probes, httpGet hooks)
    processes: ProcessGroups
    stopping: threading.Event  # the agent is stopping: stop the pod's processes and end
