"""Kopf wiring: indexes keep what the planner needs in memory, event handlers wake the reconciler.

Every handler here is a thin adapter. Indexes are updated by Kopf before handlers run, so a reconcile triggered
by an event already sees that event's object. Children are found by label (`divbase.io/database`), which is
also how their events are routed to the owning resource; labels only route, they do not make a child the
resource's: the planner trusts a child only when its controller ownerReference is the resource (a migration pod,
its Job; a workload pod, its ReplicaSet, whose controller is the resource's Deployment)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import metrics, names
from .kube import KubeApi, load_config
from .leader import LeaderElector, pod_owner_references
from .observed import (
    ConfigMapObs,
    DeploymentObs,
    JobObs,
    PodObs,
    ReplicaSetObs,
    configmap_from_body,
    deployment_from_body,
    job_from_body,
    pod_from_body,
    replicaset_from_body,
)
from .policy import Policy
from .reconciler import Key, Reconciler, Snapshot, Sources

log = logging.getLogger(__name__)
OWNED = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_DATABASE: kopf.PRESENT}


@dataclass
class Options:
    """Set by `divbase-operator` from its command line before Kopf starts."""

    metrics_port: int = 9090
    metrics_address: str = "0.0.0.0"
    leader_election_namespace: str | None = None  # None: standalone, this replica always acts
    lease_name: str = names.LEASE_NAME
    watch_timeout: int = 300  # seconds; the apiserver takes whole seconds (timeoutSeconds)
    policy: Policy = field(default_factory=Policy)  # what a resource may ask for (main.py, from the flags)

    @property
    def watch_client_timeout(self) -> float:
        """The server ends a watch at `watch_timeout`; the client gives up a little later, when it went silent."""
        return self.watch_timeout + max(5.0, self.watch_timeout / 10)


OPTIONS = Options()
_reconciler: Reconciler | None = None
_elector: LeaderElector | None = None
# Kopf's Event poster finds its queue through context variables that Kopf sets while it processes a watch event;
# reconciles started from anywhere else (a new leader's first pass) run in a copy of such a context.
_event_context: contextvars.Context | None = None
_election: asyncio.Task[None] | None = None
_indexes: dict[str, kopf.Index[Key, Any]] = {}


def _values(index_name: str, key: Key) -> list[Any]:
    index = _indexes.get(index_name)
    if index is None or key not in index:
        return []
    return list(index[key])


def _database(key: Key) -> Snapshot | None:
    found = _values("databases_index", key)
    return found[0] if found else None


def _wake(kwargs: dict[str, Any], key: Key) -> None:
    global _event_context
    if _event_context is None:
        _event_context = contextvars.copy_context()
    for index_name in (
        "databases_index",
        "jobs_index",
        "deployments_index",
        "pods_index",
        "configmaps_index",
        "replicasets_index",
    ):
        if index_name in kwargs:
            _indexes[index_name] = kwargs[index_name]
    if _reconciler is not None:
        _reconciler.trigger(key)


def _database_keys() -> list[Key]:
    index = _indexes.get("databases_index")
    return list(index) if index is not None else []


def configure_events(settings: kopf.OperatorSettings, instance: str | None = None) -> None:
    """Our Events come from `divbase-operator` (the FROM column of `kubectl describe`, `reportingComponent`), one
    instance per pod, not from Kopf's defaults `kopf`/`dev`."""
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = names.EVENT_REPORTING_COMPONENT
    settings.posting.reporting_instance = (instance or os.environ.get("POD_NAME") or socket.gethostname())[:128]
    settings.posting.event_name_prefix = names.EVENT_NAME_PREFIX


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler, _elector, _election
    load_config()
    configure_events(settings)
    settings.watching.server_timeout = OPTIONS.watch_timeout
    settings.watching.client_timeout = OPTIONS.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # The resources are known (the chart installs the CRD); scanning CRDs and namespaces needs cluster-wide RBAC
    # that a namespaced install does not grant, and made it start ~55 s late retrying forbidden lists.
    settings.scanning.disabled = True
    # Kopf keeps a worker task per object for this long after its last event. Our handlers only wake the
    # reconciler, so a new worker per burst costs little, while 5 s (the default) kept thousands alive through a
    # mass rollout: 0.5 s took 10 MiB (a quarter of the growth) off the peak at 200 resources (bench/scale.py).
    settings.batching.idle_timeout = 0.5
    if OPTIONS.metrics_port:
        metrics.serve(OPTIONS.metrics_port, OPTIONS.metrics_address)
    api = KubeApi()
    reconciler = _reconciler = Reconciler(
        api=api,
        sources=Sources(
            databases=_database,
            jobs=lambda key: _values("jobs_index", key),
            deployments=lambda key: _values("deployments_index", key),
            pods=lambda key: _values("pods_index", key),
            keys=_database_keys,
            configmaps=lambda key: _values("configmaps_index", key),
            replicasets=lambda key: _values("replicasets_index", key),
        ),
        on_decision=lambda key, decision, seconds: metrics.record_decision(key, decision, seconds, time.time()),
        on_error=metrics.record_error,
        on_forget=metrics.forget,
        policy=OPTIONS.policy,
    )
    if OPTIONS.leader_election_namespace is None:
        metrics.LEADER.set(1)
        return

    def started() -> None:
        metrics.LEADER.set(1)
        if _event_context is not None:  # otherwise no event has arrived yet, and each one that does triggers
            _event_context.run(reconciler.reconcile_all)

    api.lease_owner = pod_owner_references(OPTIONS.leader_election_namespace, os.environ)
    _elector = LeaderElector(
        api,
        OPTIONS.leader_election_namespace,
        OPTIONS.lease_name,
        on_started_leading=started,
        on_stopped_leading=lambda: metrics.LEADER.set(0),
    )
    metrics.LEADER.set(0)
    reconciler.may_act = _elector.is_leader
    _election = asyncio.create_task(_elector.run(), name="leader election")


@kopf.on.cleanup()
async def release_leadership(**_: Any) -> None:
    """On a graceful stop the next replica takes over at once instead of waiting for the lease to expire."""
    if _election is not None:
        _election.cancel()
    if _elector is not None:
        await _elector.release()


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def databases_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, Snapshot]:
    return {(namespace, name): Snapshot.from_body(body)}


@kopf.index("batch", "v1", "jobs", labels=OWNED)
def jobs_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, JobObs]:
    return {(namespace, labels[names.LABEL_DATABASE]): job_from_body(body)}


@kopf.index("apps", "v1", "deployments", labels=OWNED)
def deployments_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, DeploymentObs]:
    return {(namespace, labels[names.LABEL_DATABASE]): deployment_from_body(body)}


@kopf.index("", "v1", "pods", labels=OWNED)
def pods_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, PodObs]:
    return {(namespace, labels[names.LABEL_DATABASE]): pod_from_body(body)}


@kopf.index("apps", "v1", "replicasets", labels=OWNED)
def replicasets_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, ReplicaSetObs]:
    """The workloads' ReplicaSets (they carry the pod template's labels): a workload pod counts only through one
    whose controller is the resource's Deployment. Only indexed: the pods' own events wake the reconciler."""
    return {(namespace, labels[names.LABEL_DATABASE]): replicaset_from_body(body)}


@kopf.index("", "v1", "configmaps", labels=OWNED)
def configmaps_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Key, ConfigMapObs]:
    """The plan ConfigMap: watched so that a change by anyone else is undone at once (planner)."""
    return {(namespace, labels[names.LABEL_DATABASE]): configmap_from_body(body)}


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def database_changed(namespace: str, name: str, **kwargs: Any) -> None:
    _wake(kwargs, (namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
async def job_changed(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    _wake(kwargs, (namespace, labels[names.LABEL_DATABASE]))


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
async def deployment_changed(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    _wake(kwargs, (namespace, labels[names.LABEL_DATABASE]))


@kopf.on.event("", "v1", "pods", labels=OWNED)
async def pod_changed(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    _wake(kwargs, (namespace, labels[names.LABEL_DATABASE]))


@kopf.on.event("", "v1", "configmaps", labels=OWNED)
async def configmap_changed(namespace: str, labels: kopf.Labels, **kwargs: Any) -> None:
    _wake(kwargs, (namespace, labels[names.LABEL_DATABASE]))
