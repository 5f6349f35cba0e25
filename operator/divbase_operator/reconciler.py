"""Runs the planner for one DivBaseDatabase whenever anything it depends on changes, and carries out its actions.

Wake-ups come from watch events (the resource, its Jobs, Deployments and pods), never from polling. Triggers
for a resource that is already being reconciled are coalesced into one more pass, so each resource has at most
one reconcile in flight. The only timers are the contract delay the planner asks for, backoff after an API error,
and the lock-wait probe: a pod's log sends no event, so while the planner names running migration pods
(`Decision.log_pods`) their log tails are read every LOCK_WAIT_PROBE_SECONDS for the runner contract's lock-wait
line, and a change wakes a reconcile. It is ours, not a Kopf timer: a Kopf timer puts Kopf's finalizer on the
object it runs for, and would run on standby replicas too.

With several replicas only the leader acts (`may_act`, see leader.py): every write is preceded by that check, a
standby drops its triggers, and a new leader reconciles every resource once (`reconcile_all`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from divbase_migrations.contract import LockWait, read_lock_wait
from kubernetes.client.exceptions import ApiException

from . import names
from .kube import Conflict, KubeApi, status_patch
from .observed import (
    ConfigMapObs,
    DeploymentObs,
    ForeignChild,
    ForeignDeployment,
    JobObs,
    PodObs,
    ReplicaSetObs,
    foreign_child,
    foreign_deployment,
    replicaset_from_body,
)
from .planner import (
    ApplyConfigMap,
    ApplyDeployment,
    CreateJob,
    Decision,
    DeleteDeployment,
    EmitEvent,
    Observed,
    apply_conflict,
    conflict_lookups,
    decide,
    foreign_lookup_needed,
    owned_jobs,
    plan_deletion,
    rejected,
    terminating_status,
    workload_chain_lookup,
)
from .policy import Policy

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
FINALIZER_GRACE_SECONDS = 120  # after this, deletion proceeds even if cleanup keeps failing
LOG_READ_CONCURRENCY = 4  # log tails read at once, over every resource (kube.API_CONCURRENCY threads in all)
INVALID_INPUT = (400, 422)  # the apiserver refused what the spec describes: a retry would be refused again


def api_message(exc: ApiException) -> str:
    """The apiserver's own explanation (it names the field), not the HTTP dump."""
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _describe(action: Any) -> str:
    body = getattr(action, "body", None) or {}
    return f"{body.get('kind', type(action).__name__)} {body.get('metadata', {}).get('name', '')}".strip()


@dataclass
class Snapshot:
    """The parts of a DivBaseDatabase the reconciler needs, as the watch last delivered them."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    annotations: dict[str, str]
    finalizers: list[str]
    deleting_since: str | None
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def from_body(cls, body: Any) -> Snapshot:
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            generation=int(meta.get("generation") or 0),
            annotations=dict(meta.get("annotations") or {}),
            finalizers=list(meta.get("finalizers") or []),
            deleting_since=meta.get("deletionTimestamp"),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )


@dataclass
class Sources:
    """Where observed state comes from: Kopf indexes in production, plain dicts in tests."""

    databases: Callable[[Key], Snapshot | None]
    jobs: Callable[[Key], Iterable[JobObs]]
    deployments: Callable[[Key], Iterable[DeploymentObs]]
    pods: Callable[[Key], Iterable[PodObs]]
    keys: Callable[[], Iterable[Key]] = lambda: ()  # every resource known, for a new leader's first pass
    configmaps: Callable[[Key], Iterable[ConfigMapObs]] = lambda key: ()  # the plan ConfigMap
    replicasets: Callable[[Key], Iterable[ReplicaSetObs]] = lambda key: ()  # the workloads' ReplicaSets


class NotLeading(Exception):
    """This replica is (no longer) the leader: it must not write anything."""


@dataclass
class _State:
    running: bool = False
    dirty: bool = False
    errors: int = 0
    timer: asyncio.TimerHandle | None = None
    written: tuple[str, Snapshot] | None = None  # (resourceVersion we wrote over, what we wrote)
    log_pods: tuple[str, ...] = ()  # running migration pods whose log tails the probe reads (the last decision's)
    probe: asyncio.TimerHandle | None = None  # the next lock-wait probe
    lock_waits: dict[str, LockWait] = field(default_factory=dict)  # pod -> the wait its log tail last showed


class _LogsForbidden(Exception):
    """RBAC does not grant pods/log: the probe stops (lock waits are not shown)."""


@dataclass
class Reconciler:
    api: KubeApi
    sources: Sources
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_decision: Callable[[Key, Decision, float], None] | None = None
    on_error: Callable[[Key], None] | None = None
    on_forget: Callable[[Key], None] | None = None
    may_act: Callable[[], bool] = lambda: True
    post_event: Callable[[dict[str, Any], EmitEvent], None] = lambda ref, e: kopf.event(
        ref, type=e.type, reason=e.reason, message=e.message
    )  # queued; Kopf posts it as divbase-operator
    policy: Policy = field(default_factory=Policy)  # what the operator's flags allow a resource
    lock_wait_probe_seconds: float = names.LOCK_WAIT_PROBE_SECONDS
    _states: dict[Key, _State] = field(default_factory=dict)
    _logs_forbidden: bool = False  # pods/log was refused (403): lock waits are not shown, and not asked again
    _log_reads: asyncio.Semaphore | None = None  # at most LOG_READ_CONCURRENCY log tails read at once

    def trigger(self, key: Key) -> None:
        """Schedule a reconcile; cheap and safe to call from any watch event. A standby ignores it."""
        if not self.may_act():
            return
        state = self._states.setdefault(key, _State())
        if state.running:
            state.dirty = True
            return
        state.running = True
        asyncio.get_running_loop().create_task(self._run(key, state), name=f"reconcile {key[0]}/{key[1]}")

    def _schedule(self, key: Key, delay: float) -> None:
        state = self._states.setdefault(key, _State())
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(delay, self.trigger, key)

    async def _run(self, key: Key, state: _State) -> None:
        try:
            while True:
                state.dirty = False
                try:
                    await self.reconcile_once(key, state)
                    state.errors = 0
                except Conflict:
                    pass  # a newer version is on its way through the watch; it triggers us again
                except NotLeading:
                    log.info("not the leader any more: %s/%s left to the new leader", key[0], key[1])
                    break
                except Exception as exc:  # any API failure: back off and try again
                    delay = ERROR_BACKOFF[min(state.errors, len(ERROR_BACKOFF) - 1)]
                    state.errors += 1
                    if self.on_error:
                        self.on_error(key)
                    log.warning(
                        "reconcile of %s/%s failed (%s: %s); retrying in %.0fs",
                        key[0],
                        key[1],
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    self._schedule(key, delay)
                if not state.dirty:
                    break
        finally:
            state.running = False
        if self.sources.databases(key) is None:
            self._forget(key)

    def reconcile_all(self) -> None:
        """A new leader's first pass: what happened while it was a standby was dropped, not queued."""
        for key in list(self.sources.keys()):
            self.trigger(key)

    def _guard(self) -> None:
        if not self.may_act():
            raise NotLeading

    def _forget(self, key: Key) -> None:
        state = self._states.pop(key, None)
        if state and state.timer:
            state.timer.cancel()
        if state and state.probe:
            state.probe.cancel()
        if self.on_forget:
            self.on_forget(key)

    def _current(self, key: Key, state: _State) -> Snapshot | None:
        """The watch may lag behind our own last write; never decide on a status we already replaced."""
        seen = self.sources.databases(key)
        if seen is not None and state.written and seen.resource_version == state.written[0]:
            return state.written[1]
        if seen is not None:
            state.written = None
        return seen

    async def reconcile_once(self, key: Key, state: _State | None = None) -> None:
        state = state or self._states.setdefault(key, _State())
        snap = self._current(key, state)
        if snap is None:
            return
        if snap.deleting_since:
            self._probe_logs(key, state, ())
            await self._finalize(snap, key, state)
            return
        self._guard()
        if names.FINALIZER not in snap.finalizers:
            updated = await self.api.patch_finalizers(
                snap.namespace, snap.name, snap.resource_version, [*snap.finalizers, names.FINALIZER]
            )
            snap.finalizers.append(names.FINALIZER)
            snap.resource_version = updated["metadata"]["resourceVersion"]
        started = time.monotonic()
        observed = await self._observe(key, state, snap)
        now = self.clock()
        decision = decide(observed, now, self.policy)
        conflicts = await self._name_conflicts(snap, decision, observed)
        if conflicts:  # decided again knowing who holds those names: nothing is created over them
            observed = dataclasses.replace(observed, name_conflicts=conflicts)
            decision = decide(observed, now, self.policy)
        decision = await self._carry_out(snap, decision)
        patch = status_patch(snap.status, decision.status)
        if patch:
            self._guard()
            updated = await self.api.patch_status(snap.namespace, snap.name, snap.resource_version, patch)
            fresh = Snapshot.from_body(updated)
            state.written = (snap.resource_version, fresh)
        if decision.requeue_after is not None:
            self._schedule(key, decision.requeue_after + 0.5)
        self._probe_logs(key, state, decision.log_pods)
        if self.on_decision:
            self.on_decision(key, decision, time.monotonic() - started)

    async def _observe(self, key: Key, state: _State, snap: Snapshot) -> Observed:
        """What the planner is shown: the resource and its children from the watches, and what had to be read by
        name (foreign Deployments, ReplicaSets the watches cannot place) or from log tails (lock waits)."""
        deployments = tuple(self.sources.deployments(key))
        pods = tuple(self.sources.pods(key))
        return Observed(
            name=snap.name,
            namespace=snap.namespace,
            uid=snap.uid,
            generation=snap.generation,
            annotations=snap.annotations,
            spec=snap.spec,
            status=snap.status,
            jobs=tuple(self.sources.jobs(key)),
            deployments=deployments,
            pods=pods,
            configmaps=tuple(self.sources.configmaps(key)),
            foreign=await self._foreign(snap, deployments),
            lock_waits={pod: wait for pod, wait in state.lock_waits.items() if pod in state.log_pods},
            replicasets=await self._replicasets(snap, pods, tuple(self.sources.replicasets(key)), deployments),
        )

    async def _carry_out(self, snap: Snapshot, decision: Decision) -> Decision:
        """The decision's actions in order. An object the apiserver refuses (invalid, or owned by other field
        managers) stops the rest: the decision becomes the refusal's (Stalled), whose Events are emitted."""
        body_ref = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": snap.name, "namespace": snap.namespace, "uid": snap.uid},
        }
        for action in decision.actions:
            self._guard()
            try:
                await self._act(snap, body_ref, action)
            except ApiException as exc:
                if exc.status == 409 and isinstance(action, ApplyDeployment | ApplyConfigMap):
                    decision = apply_conflict(
                        decision, snap.status, _describe(action), api_message(exc), snap.generation, self.clock()
                    )
                elif exc.status in INVALID_INPUT:
                    decision = rejected(
                        decision, snap.status, _describe(action), api_message(exc), snap.generation, self.clock()
                    )
                else:
                    raise
                for event in decision.actions:
                    self._guard()
                    await self._act(snap, body_ref, event)
                break
        return decision

    # -- lock waits: a running migration pod's log tail ---------------------------------------------------------
    def _probe_logs(self, key: Key, state: _State, pods: tuple[str, ...]) -> None:
        """Read the log tails of `pods` (the planner's log_pods) in LOCK_WAIT_PROBE_SECONDS, and again after that
        while the last decision still names them; with none, stop and forget what was read."""
        state.log_pods = pods
        state.lock_waits = {pod: wait for pod, wait in state.lock_waits.items() if pod in pods}
        if not pods or self._logs_forbidden:
            if state.probe is not None:
                state.probe.cancel()
                state.probe = None
            return
        if state.probe is None:
            state.probe = asyncio.get_running_loop().call_later(
                self.lock_wait_probe_seconds, self._start_probe, key, state
            )

    def _start_probe(self, key: Key, state: _State) -> None:
        state.probe = None
        asyncio.get_running_loop().create_task(self._probe(key, state), name=f"lock-wait probe {key[0]}/{key[1]}")

    async def _probe(self, key: Key, state: _State) -> None:
        """One look at each pod's log tail; a wait that began, changed or ended wakes a reconcile (the planner
        decides what is shown). Only what contract.read_lock_wait keeps of the tail is remembered."""
        if not state.log_pods or not self.may_act() or self._states.get(key) is not state:
            return
        changed = False
        for pod in state.log_pods:
            try:
                read, tail = await self._read_tail(key[0], pod)
            except _LogsForbidden:
                return
            if read and self._remember_wait(state, pod, read_lock_wait(tail)):
                changed = True
        if changed:
            self.trigger(key)
        if state.log_pods and state.probe is None and self._states.get(key) is state:
            state.probe = asyncio.get_running_loop().call_later(
                self.lock_wait_probe_seconds, self._start_probe, key, state
            )

    async def _read_tail(self, namespace: str, pod: str) -> tuple[bool, str | None]:
        """(read, tail) of a migration pod's log; not read when a look again at the next probe may do better.
        Raises _LogsForbidden (after saying so once) when RBAC does not grant pods/log."""
        if self._log_reads is None:  # made on the running loop
            self._log_reads = asyncio.Semaphore(LOG_READ_CONCURRENCY)
        try:
            async with self._log_reads:  # the API calls' worker threads stay free for the reconciles
                tail: str | None = await self.api.read_pod_log(
                    namespace, pod, names.MIGRATION_CONTAINER, names.LOCK_WAIT_LOG_LINES, names.LOCK_WAIT_LOG_BYTES
                )
            return True, tail
        except ApiException as exc:
            if exc.status == 403:
                self._logs_forbidden = True
                log.warning(
                    "reading pod logs (pods/log get) is forbidden: lock waits of migration Jobs are not "
                    "shown (docs/install.md, RBAC)"
                )
                raise _LogsForbidden from None
            if exc.status not in (400, 404):  # not started yet, or gone: no wait to show
                log.debug("log tail of pod %s/%s not read (%s)", namespace, pod, exc.status)
                return False, None
            return True, None
        except Exception as exc:  # a timeout or a dropped connection: look again at the next probe
            log.debug("log tail of pod %s/%s not read (%s)", namespace, pod, type(exc).__name__)
            return False, None

    @staticmethod
    def _remember_wait(state: _State, pod: str, wait: LockWait | None) -> bool:
        """Keep what the pod's tail shows of a lock wait; whether that changed."""
        if state.lock_waits.get(pod) == wait:
            return False
        if wait is None:
            state.lock_waits.pop(pod, None)
        else:
            state.lock_waits[pod] = wait
        return True

    async def _foreign(self, snap: Snapshot, deployments: tuple[DeploymentObs, ...]) -> tuple[ForeignDeployment, ...]:
        """Deployments of our workloads' names that the label-selected watch cannot show: read by name, only when
        the planner is about to need them (foreign_lookup_needed)."""
        workloads = snap.spec.get("workloads")
        if not isinstance(workloads, list):
            return ()
        wanted = {
            names.deployment_name(snap.name, w["name"])
            for w in workloads
            if isinstance(w, dict) and isinstance(w.get("name"), str) and w["name"]
        }
        missing = sorted(wanted - {d.name for d in deployments})
        if not missing or not foreign_lookup_needed(snap.status, snap.spec.get("version")):
            return ()
        found = []
        for name in missing:
            body = await self.api.get_deployment(snap.namespace, name)
            verdict = foreign_deployment(body, snap.name, snap.uid) if body else None
            if verdict is not None:
                found.append(verdict)
        return tuple(found)

    async def _replicasets(
        self,
        snap: Snapshot,
        pods: tuple[PodObs, ...],
        watched: tuple[ReplicaSetObs, ...],
        deployments: tuple[DeploymentObs, ...],
    ) -> tuple[ReplicaSetObs, ...]:
        """The workload pods' ReplicaSets: the watched ones, and, for a pod whose chain of controllers the watches
        cannot place (workload_chain_lookup), its ReplicaSet or that ReplicaSet's Deployment read by name (a GET
        each, none while every pod is a watched ReplicaSet's of this resource's Deployments)."""
        known = {rs.uid: rs for rs in watched if rs.uid}
        ours = {d.uid for d in deployments if d.uid and d.owner_uid == snap.uid}
        seen = {d.uid for d in deployments if d.uid}
        for pod in pods:
            while (lookup := workload_chain_lookup(pod, known, ours, seen)) is not None:
                kind, name, uid = lookup
                body = await self.api.get(kind, snap.namespace, name)
                present = bool(body) and (body.get("metadata") or {}).get("uid") == uid
                if kind == "ReplicaSet":
                    known[uid] = replicaset_from_body(body) if present else ReplicaSetObs(name, uid, orphaned=True)
                elif present:
                    seen.add(uid)  # someone else's Deployment: its ReplicaSet's pods are not this resource's
                else:
                    rs = known[str(pod.replicaset_uid)]
                    known[str(rs.uid)] = dataclasses.replace(rs, orphaned=True)
        return tuple(known.values())

    async def _name_conflicts(self, snap: Snapshot, decision: Decision, observed: Observed) -> tuple[ForeignChild, ...]:
        """Objects `decision` would create that the label-selected watches do not show: read by name (a GET each,
        only when the planner is about to create one), and those this resource does not control returned."""
        found = []
        for kind, name in conflict_lookups(decision, observed):
            body = await self.api.get(kind, snap.namespace, name)
            verdict = foreign_child(body, kind, snap.name, snap.uid) if body else None
            if verdict is not None:
                found.append(verdict)
        return tuple(found)

    async def _act(self, snap: Snapshot, body_ref: dict[str, Any], action: Any) -> None:
        if isinstance(action, CreateJob):
            created = await self.api.create_job(action.body)
            log.info("job %s %s", action.body["metadata"]["name"], "created" if created else "already exists")
        elif isinstance(action, ApplyDeployment):
            await self.api.apply_deployment(action.body, action.force)
        elif isinstance(action, DeleteDeployment):
            await self.api.delete_deployment(snap.namespace, action.name, action.uid)
        elif isinstance(action, ApplyConfigMap):
            await self.api.apply_configmap(action.body, action.force)
        elif isinstance(action, EmitEvent):
            self.post_event(body_ref, action)

    async def _finalize(self, snap: Snapshot, key: Key, state: _State) -> None:
        """Phase Terminating; wait for a running migration Job to finish (bounded by its activeDeadlineSeconds,
        see plan_deletion); then delete our Jobs and workloads and let the resource go. A cleanup that keeps
        failing does not hold the deletion hostage: after a grace period the finalizer is removed anyway (owner
        references let the garbage collector finish the job)."""
        if names.FINALIZER not in snap.finalizers:
            return
        self._guard()
        jobs = owned_jobs(tuple(self.sources.jobs(key)), snap.uid)  # a Job of someone else is neither awaited
        deletion = plan_deletion(jobs, self.clock())
        new_status = terminating_status(snap.status, deletion.message, snap.generation, self.clock())
        patch = status_patch(snap.status, new_status)
        if patch:
            body_ref = {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": snap.name, "namespace": snap.namespace, "uid": snap.uid},
            }
            self.post_event(body_ref, EmitEvent("Normal", names.EVENT_DELETING, deletion.message))
            updated = await self.api.patch_status(snap.namespace, snap.name, snap.resource_version, patch)
            fresh = Snapshot.from_body(updated)
            state.written = (snap.resource_version, fresh)
            snap = fresh
        if deletion.waiting_for:
            if deletion.requeue_after is not None:
                self._schedule(key, deletion.requeue_after + 0.5)
            return
        try:
            deployments = [(d.name, d.uid) for d in self.sources.deployments(key) if d.owner_uid == snap.uid]
            await self.api.delete_children(snap.namespace, [(j.name, j.uid) for j in jobs], deployments)
        except Exception as exc:
            since = datetime.strptime(snap.deleting_since or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if (self.clock() - since).total_seconds() < FINALIZER_GRACE_SECONDS:
                raise
            log.warning("cleanup of %s/%s kept failing (%s); releasing the finalizer", snap.namespace, snap.name, exc)
        remaining = [f for f in snap.finalizers if f != names.FINALIZER]
        self._guard()
        await self.api.patch_finalizers(snap.namespace, snap.name, snap.resource_version, remaining)
