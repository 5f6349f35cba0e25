"""What a node agent needs to carry on with a pod after it was SIGKILLed: `<pod dir>/state.json`.

Written atomically (write, rename) whenever it changes, removed when the worker ends normally (pod gone, agent
stopped gracefully). A restarted agent finds its pods' shims by pid *and* start time (node/shimproc.py), re-reserves
the IP, keeps the network namespace and resumes the containers' counters, states and probe results. The file holds
each container's environment as started (exec hooks and probes need it; it may carry Secret values), so it is 0600
like the pod's secret volumes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FILE = "state.json"
VERSION = 1


@dataclass
class ContainerState:
    """One container (spans restarts); `pid`/`ticks` of its shim while it runs, else 0."""

    name: str
    pid: int = 0
    ticks: int = 0  # /proc/<pid>/stat field 22 of the shim
    restart_count: int = 0
    running_since: str = ""  # startedAt of the current run
    ever_started: bool = False
    waiting: tuple[str, str] = ("ContainerCreating", "")
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    ready: bool = False
    started: bool = False
    backoff: float = 0.0
    image_id: str = ""
    env: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContainerState:
        known = {f.name for f in fields(cls)}
        c = cls(**{k: v for k, v in d.items() if k in known})
        c.waiting = (str(c.waiting[0]), str(c.waiting[1]))
        return c


@dataclass
class PodState:
    """One pod as this node runs it."""

    uid: str
    ip: str
    netns: str | None = None
    start_time: str = ""
    phase: str = "Pending"
    pod_reason: tuple[str, str] | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    has_token: bool = False  # a ServiceAccount token was set up (its files are in <pod dir>/serviceaccount)
    containers: list[ContainerState] = field(default_factory=list)  # init containers first
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PodState:
        d = json.loads(text)
        if d.get("version") != VERSION:
            raise ValueError(f"state version {d.get('version')!r}, not {VERSION}")
        known = {f.name for f in fields(cls)}
        s = cls(**{k: v for k, v in d.items() if k in known and k != "containers"})
        s.containers = [ContainerState.from_dict(c) for c in d.get("containers") or []]
        s.transitions = {k: (v[0], v[1]) for k, v in s.transitions.items()}
        if s.pod_reason is not None:
            s.pod_reason = (s.pod_reason[0], s.pod_reason[1])
        return s

    def live(self) -> list[ContainerState]:
        return [c for c in self.containers if c.pid]


def save(pod_dir: Path, text: str) -> None:
    """Atomically replace the pod's state with `text` (a PodState.to_json())."""
    tmp = pod_dir / f".{FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, pod_dir / FILE)


def load(pod_dir: Path) -> PodState | None:
    """The pod's saved state; None when there is none or it cannot be read (then nothing can be resumed)."""
    try:
        return PodState.from_json((pod_dir / FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None


def remove(pod_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (pod_dir / FILE).unlink()
