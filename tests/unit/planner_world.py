"""A pure, in-memory stand-in for the cluster *around* the planner, for unit tests only.

It applies the planner's actions the way the apiserver and controllers would (a created Job becomes Active, an
applied Deployment gets a new generation) and lets a test finish Jobs, complete rollouts or expire progress
deadlines. Cluster tests run the same planner against the real thing."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from divbase_migrations.contract import LockWait
from divbase_operator import names
from divbase_operator.observed import (
    JOB_ACTIVE,
    JOB_FAILED,
    JOB_SUCCEEDED,
    DeploymentObs,
    ForeignChild,
    JobObs,
    PodObs,
    ReplicaSetObs,
    configmap_from_body,
)
from divbase_operator.planner import (
    ApplyConfigMap,
    ApplyDeployment,
    CreateJob,
    Decision,
    DeleteDeployment,
    EmitEvent,
    Observed,
    decide,
)

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def workload(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "name": name,
        "template": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": name, "command": ["divbase-api"]}]}},
        },
    }


def base_spec(version: str = "1", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": version,
        "image": "registry.example/divbase",
        "database": {"secretRef": {"name": "divbase-db"}},
        "workloads": [workload("api"), workload("worker", 1)],
    }
    spec.update(extra)
    return spec


@dataclasses.dataclass
class World:
    spec: dict[str, Any]
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    generation: int = 1
    jobs: dict[str, JobObs] = dataclasses.field(default_factory=dict)
    job_bodies: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    deployments: dict[str, DeploymentObs] = dataclasses.field(default_factory=dict)
    deployment_bodies: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    pods: list[PodObs] = dataclasses.field(default_factory=list)
    now: datetime = T0
    log: list[Decision] = dataclasses.field(default_factory=list)
    configmaps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    plan_sql: str = 'ALTER TABLE "user" DROP COLUMN name;\n'  # what a plan Job "renders"; None: the Job fails
    auto_plan: bool = True  # plan Jobs finish at once (they only read); False: a test finishes them
    finished: dict[str, JobObs] = dataclasses.field(default_factory=dict)  # every Job that finished, even deleted
    name_conflicts: list[ForeignChild] = dataclasses.field(default_factory=list)  # found by name outside the watch
    lock_waits: dict[str, LockWait] = dataclasses.field(default_factory=dict)  # what running pods' logs show
    replicasets: dict[str, ReplicaSetObs] = dataclasses.field(default_factory=dict)  # by uid: one per Deployment
    # and version, as the Deployment controller makes them; workload pods name theirs as their controller

    def observe(self) -> Observed:
        return Observed(
            name="db",
            namespace="prod",
            uid="uid-1",
            generation=self.generation,
            annotations=dict(self.annotations),
            spec=copy.deepcopy(self.spec),
            status=copy.deepcopy(self.status),
            jobs=tuple(self.jobs.values()),
            deployments=tuple(self.deployments.values()),
            pods=tuple(self.pods),
            configmaps=tuple(configmap_from_body(body) for body in self.configmaps.values()),
            name_conflicts=tuple(self.name_conflicts),
            lock_waits=dict(self.lock_waits),
            replicasets=tuple(self.replicasets.values()),
        )

    def reconcile(self, persist: bool = True) -> Decision:
        self.now += timedelta(seconds=5)
        decision = decide(self.observe(), self.now)
        self.log.append(decision)
        if persist:
            self.status = copy.deepcopy(decision.status)
        for action in decision.actions:
            self._apply(action)
        return decision

    def _apply(self, action: Any) -> None:
        if isinstance(action, CreateJob):
            meta = action.body["metadata"]
            if meta["name"] not in self.jobs:  # AlreadyExists is success for a deterministic name
                self.jobs[meta["name"]] = JobObs(
                    meta["name"],
                    meta["labels"][names.LABEL_STEP],
                    meta["labels"][names.LABEL_VERSION],
                    JOB_ACTIVE,
                    created_at=self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    uid=f"job-uid-{meta['name']}",
                    owner_uid=meta["ownerReferences"][0]["uid"],
                )
                self.job_bodies[meta["name"]] = action.body
                if meta["labels"][names.LABEL_STEP] == names.STEP_PLAN and self.auto_plan:
                    self.finish_plan()
        elif isinstance(action, ApplyConfigMap):
            current = self.configmaps.get(action.body["metadata"]["name"])
            assert (
                current is None
                or action.force
                or current["metadata"].get("ownerReferences") == action.body["metadata"]["ownerReferences"]
            ), "an unforced apply over someone else's ConfigMap would be refused (409), never merged here"
            self.configmaps[action.body["metadata"]["name"]] = action.body
        elif isinstance(action, ApplyDeployment):
            body = action.body
            name = body["metadata"]["name"]
            old = self.deployments.get(name)
            containers = body["spec"]["template"]["spec"]["containers"]
            self.deployments[name] = DeploymentObs(
                name=name,
                workload=body["metadata"]["labels"][names.LABEL_WORKLOAD],
                version=body["metadata"]["labels"][names.LABEL_VERSION],
                spec_hash=body["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH],
                images=tuple(c["image"] for c in containers),
                generation=(old.generation + 1) if old else 1,
                observed_generation=old.observed_generation if old else 0,
                replicas=body["spec"].get("replicas", 1),
                status_replicas=old.status_replicas if old else 0,
                updated_replicas=0,
                available_replicas=old.available_replicas if old else 0,
                owner_uid=body["metadata"]["ownerReferences"][0]["uid"],
                uid=f"deploy-uid-{name}",
            )
            self.deployment_bodies[name] = body
        elif isinstance(action, DeleteDeployment):
            self.deployments.pop(action.name, None)
            self.pods = [p for p in self.pods if not p.workload or action.name != f"db-{p.workload}"]
        else:
            assert isinstance(action, EmitEvent)

    # -- what controllers and pods would do -----------------------------------------------------------------------
    def active_job(self, step: str | None = None) -> JobObs:
        """The one running Job (of `step`) that is not being deleted."""
        active = [
            j
            for j in self.jobs.values()
            if j.state == JOB_ACTIVE and not j.deleting and (step is None or j.step == step)
        ]
        assert len(active) == 1, f"expected one active {step} job, found {active}"
        return active[0]

    def finish_job(
        self, step: str, ok: bool = True, exit_code: int = 0, message: str = "", name: str | None = None
    ) -> JobObs:
        """The running Job of `step` (or the one named `name`, e.g. one being deleted) ends."""
        job = self.jobs[name] if name is not None else self.active_job(step)
        assert job.state == JOB_ACTIVE, job
        ts = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        done = dataclasses.replace(
            job,
            state=JOB_SUCCEEDED if ok else JOB_FAILED,
            finished_at=ts,
            reason=None if ok else "BackoffLimitExceeded",
            message=None if ok else "Job has reached the specified backoff limit",
        )
        self.jobs[job.name] = done
        self.finished[job.name] = done
        self.pods.append(
            PodObs(
                name=f"{job.name}-x",
                job_name=job.name,
                workload=None,
                version=job.version,
                phase="Succeeded" if ok else "Failed",
                exit_code=0 if ok else exit_code,
                termination_message=message,
                finished_at=ts,
                owner_uid=job.uid,
            )
        )
        return done

    def finish_plan(self) -> JobObs:
        """The plan Job's runner writes the SQL's digest and the SQL itself into its termination summary."""
        from divbase_migrations.contract import plan_payload

        if self.plan_sql is None:
            return self.finish_job(
                names.STEP_PLAN,
                ok=False,
                exit_code=3,
                message='{"outcome":"failed","error":"database unavailable: refused"}',
            )
        summary = {
            "command": "plan",
            "outcome": "ok",
            "revisions": ["c0002_user_display_name"],
            **plan_payload(self.plan_sql),
        }
        return self.finish_job(names.STEP_PLAN, message=json.dumps(summary))

    def complete_rollouts(self, terminating: bool = False) -> None:
        """The Deployment controller finished: every pod runs the template's version.

        With `terminating`, the pods of other releases are still shutting down (deletionTimestamp set, still
        Running, maybe still serving): Deployment status no longer counts them, so every Deployment reports its
        rollout complete while they are there. `finish_terminating` lets them go."""
        current = {(d.workload, d.version) for d in self.deployments.values()}
        leaving = [
            dataclasses.replace(p, deleting=True)
            for p in self.pods
            if terminating and p.workload and (p.workload, p.version) not in current
        ]
        self.pods = [p for p in self.pods if not p.workload] + leaving
        for name, d in list(self.deployments.items()):
            self.deployments[name] = dataclasses.replace(
                d,
                observed_generation=d.generation,
                status_replicas=d.replicas,
                updated_replicas=d.replicas,
                available_replicas=d.replicas,
                progress_deadline_exceeded=False,
            )
            self.pods += [dataclasses.replace(self.workload_pod(d), name=f"{name}-{i}") for i in range(d.replicas)]

    def workload_pod(self, d: DeploymentObs) -> PodObs:
        """A Running pod of `d` at its version, controlled by the ReplicaSet of that version (made if new)."""
        rs = ReplicaSetObs(
            name=f"{d.name}-{d.version}", uid=f"rs-uid-{d.name}-{d.version}", deployment=d.name, deployment_uid=d.uid
        )
        self.replicasets.setdefault(str(rs.uid), rs)
        return PodObs(
            name=f"{d.name}-pod",
            job_name=None,
            workload=d.workload,
            version=d.version,
            phase="Running",
            replicaset=rs.name,
            replicaset_uid=rs.uid,
        )

    def finish_terminating(self) -> None:
        """Terminating workload pods are gone."""
        self.pods = [p for p in self.pods if not (p.workload and p.deleting)]

    def ttl_expire(self) -> None:
        """The TTL-after-finished controller deletes every finished Job, in the foreground: each stays visible,
        with a deletionTimestamp and its final status, until its pods are gone."""
        for name, job in list(self.jobs.items()):
            if job.state != JOB_ACTIVE:
                self.jobs[name] = dataclasses.replace(job, deleting=True)
        self.pods = [
            dataclasses.replace(p, deleting=True) if p.job_name and self.jobs[p.job_name].deleting else p
            for p in self.pods
        ]

    def delete_job(self, name: str, propagation: str = "Foreground") -> None:
        """Someone deletes a Job (`kubectl delete job`). Foreground: the Job stays visible, deletionTimestamp set and
        still active, while the garbage collector deletes its pods first (`ttl_gone` ends that). Background: the Job
        is gone at once and its pods are being deleted. Orphan: the Job is gone, its pods run on, owned by nobody."""
        job = self.jobs[name]
        if propagation == "Foreground":
            self.jobs[name] = dataclasses.replace(job, deleting=True)
        else:
            del self.jobs[name]
        self.pods = [
            p
            if p.job_name != name
            else dataclasses.replace(p, owner_uid=None)
            if propagation == "Orphan"
            else dataclasses.replace(p, deleting=True)
            for p in self.pods
        ]

    def ttl_gone(self) -> None:
        """Jobs being deleted, and their pods, are gone (whether or not a status write recorded their result): the
        TTL controller's deletions and any other foreground one."""
        gone = {name for name, job in self.jobs.items() if job.deleting}
        self.jobs = {name: job for name, job in self.jobs.items() if name not in gone}
        self.pods = [p for p in self.pods if p.job_name not in gone]

    def start_rollouts(self) -> None:
        """New pods come up but old ones are still there: the rollout is in flight."""
        for name, d in list(self.deployments.items()):
            self.deployments[name] = dataclasses.replace(d, observed_generation=d.generation, updated_replicas=1)
            self.pods.append(dataclasses.replace(self.workload_pod(d), name=f"{name}-new"))

    def expire_deadline(self) -> None:
        for name, d in list(self.deployments.items()):
            self.deployments[name] = dataclasses.replace(
                d, observed_generation=d.generation, progress_deadline_exceeded=True
            )

    def set_spec(self, **changes: Any) -> None:
        self.spec = {**self.spec, **changes}
        self.generation += 1

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == kind)

    def finish_upgrade(self) -> Decision:
        """From an upgrade's running expand Job to its end: expand succeeds, the workloads roll out, the contract
        succeeds. Returns the last decision."""
        self.finish_job("expand")
        self.reconcile()
        self.complete_rollouts()
        self.reconcile()
        self.finish_job("contract")
        return self.reconcile()

    def install(self, version: str = "1") -> None:
        """Drive a first install to Ready."""
        self.reconcile()
        self.finish_job("expand")
        self.reconcile()
        self.finish_job("contract")
        self.reconcile()
        self.complete_rollouts()
        self.reconcile()
        assert self.status["phase"] == names.PHASE_READY, self.status
