"""Leader election over a coordination.k8s.io Lease, so that of several replicas exactly one acts.

Every replica keeps watching (its indexes stay warm, so a take-over acts on fresh state); only the holder of the
Lease reconciles. The rules are client-go's: the holder renews every `retry_period`; it stops acting once it has
not renewed for `renew_deadline`; another replica takes over only after the record stayed unchanged for
`lease_duration` by *its own* clock (no clock comparison across machines), and the gap between the two deadlines
is the fence: the old leader has stopped before anyone else may start. A replica that stops gracefully releases
the Lease, so the next one takes over within one retry period.

Kopf's peering is not used for this: it pauses watch streams asynchronously (a paused replica kept acting on
events already in flight) and a newcomer with a higher priority starts before the old replica has stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """client-go's defaults; renew_deadline < lease_duration is what keeps two leaders apart."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the election reads."""

    holder: str
    lease_duration: float
    transitions: int
    acquire_time: str | None
    resource_version: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
            resource_version=(body.get("metadata") or {}).get("resourceVersion", ""),
        )


def may_take(record: LeaseRecord | None, me: str, unchanged_for: float) -> bool:
    """Whether `me` may write itself into the Lease: it is free, ours, or its holder stopped renewing it for
    longer than the duration the holder itself declared."""
    if record is None or not record.holder or record.holder == me:
        return True
    return unchanged_for >= record.lease_duration


def lease_spec(record: LeaseRecord | None, me: str, now: datetime, timing: Timing) -> dict[str, Any]:
    """The spec that makes `me` the holder (a renewal keeps acquireTime; a take-over counts a transition)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if record is None:
        acquired, transitions = stamp, 0
    elif record.holder == me:
        acquired, transitions = record.acquire_time or stamp, record.transitions
    else:
        acquired, transitions = stamp, record.transitions + 1
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": int(timing.lease_duration),
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord) -> dict[str, Any]:
    """What a leader leaves behind when it stops: no holder, so the next replica need not wait out the lease."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": record.transitions,
        "acquireTime": None,
        "renewTime": None,
    }


def pod_owner_references(lease_namespace: str, environ: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """The operator's own pod as the Lease's owner (from the downward API: POD_NAME, POD_UID, POD_NAMESPACE), so the
    garbage collector removes the Lease once the pod that last wrote it is gone: `helm uninstall` deletes the RBAC
    before the pod has stopped, and the release on SIGTERM is then forbidden. Only within the pod's own namespace
    (an owner in another namespace counts as absent: the Lease would be deleted at once); None outside a pod."""
    name, uid, namespace = environ.get("POD_NAME"), environ.get("POD_UID"), environ.get("POD_NAMESPACE")
    if not (name and uid and namespace == lease_namespace):
        return None
    return [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}]


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """The pod's name (the chart sets POD_NAME; a pod's hostname is not always its name, e.g. on a node sharing the
    host's network), then a suffix unique per process: a restarted pod with the same name must not believe it
    still holds the lease."""
    name = (os.environ if env is None else env).get("POD_NAME") or socket.gethostname()
    return f"{name}_{uuid.uuid4().hex[:8]}"


class LeaseApi(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, resource_version: str, spec: dict[str, Any]
    ) -> dict[str, Any]: ...


class LostRace(Exception):
    """Someone else wrote the Lease between our read and our write (409); we are not the leader this round."""


class LeaderElector:
    """Holds or waits for the Lease; `is_leader()` is the gate every write of the operator passes."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str | None = None,
        timing: Timing = Timing(),
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.identity = identity or default_identity()
        self.timing = timing
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._monotonic, self._wall_clock = monotonic, wall_clock
        self._renewed_at: float | None = None  # monotonic time our last successful write was *sent*
        self._observed: tuple[str, float] | None = None  # (resourceVersion, when we first saw it)
        self._leading = False  # what the callbacks were last told

    def is_leader(self) -> bool:
        return self._renewed_at is not None and self._monotonic() - self._renewed_at < self.timing.renew_deadline

    async def try_once(self) -> bool:
        """One round: read the Lease, take or renew it if the rules allow. Returns whether we lead now."""
        sent = self._monotonic()
        try:
            body = await self.api.read_lease(self.namespace, self.name)
            record = LeaseRecord.from_body(body) if body is not None else None
            unchanged_for = self._observe(record, sent)
            if record is not None and record.holder not in ("", self.identity):
                self._renewed_at = None  # someone else holds it: stop at once, whatever our deadline says
            if may_take(record, self.identity, unchanged_for):
                spec = lease_spec(record, self.identity, self._wall_clock(), self.timing)
                if record is None:
                    written = await self.api.create_lease(self.namespace, self.name, spec)
                else:
                    written = await self.api.replace_lease(self.namespace, self.name, record.resource_version, spec)
                self._renewed_at = sent
                self._observe(LeaseRecord.from_body(written), sent)
        except LostRace:
            pass
        except Exception as exc:  # an apiserver hiccup: keep leading until the renew deadline says otherwise
            log.warning("leader election: %s: %s", type(exc).__name__, exc)
        self._notify()
        return self.is_leader()

    def _observe(self, record: LeaseRecord | None, now: float) -> float:
        """Seconds the record has been unchanged, measured by our own clock from when we first saw it."""
        version = record.resource_version if record else ""
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
        return now - self._observed[1]

    def _notify(self) -> None:
        leading = self.is_leader()
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leader election: %s now leads (Lease %s/%s)", self.identity, self.namespace, self.name)
            if self.on_started_leading:
                self.on_started_leading()
        else:
            log.warning("leader election: %s stopped leading (Lease %s/%s)", self.identity, self.namespace, self.name)
            if self.on_stopped_leading:
                self.on_stopped_leading()

    async def run(self) -> None:
        """Forever: a round every retry period (standbys jitter theirs so they do not all ask at once)."""
        while True:
            leading = await self.try_once()
            jitter = 0.0 if leading else random.uniform(0, 0.2) * self.timing.retry_period
            await asyncio.sleep(self.timing.retry_period + jitter)

    async def release(self) -> None:
        """Give the Lease up on a graceful stop; stop acting first, so no write follows the release."""
        if not self.is_leader():
            return
        self._renewed_at = None
        self._notify()
        try:
            body = await self.api.read_lease(self.namespace, self.name)
            if body is None:
                return
            record = LeaseRecord.from_body(body)
            if record.holder == self.identity:
                await self.api.replace_lease(self.namespace, self.name, record.resource_version, released_spec(record))
                log.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:  # the others will take over when the lease expires
            log.warning("leader election: could not release the Lease: %s: %s", type(exc).__name__, exc)
