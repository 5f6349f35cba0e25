"""Progress inside a step: each failed pod of a running migration Job is reported as it happens (status and a
Warning Event: exit code, the runner's own message, attempts left), once per pod; Events come from
divbase-operator, not kopf."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta

import kopf
import pytest
from divbase_migrations.contract import LockWait, lock_wait_fields
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from divbase_operator.handlers import configure_events
from divbase_operator.observed import JobObs, PodObs, job_from_body
from divbase_operator.planner import EmitEvent
from divbase_operator.reconciler import Reconciler, Snapshot, Sources
from kubernetes.client.exceptions import ApiException
from planner_world import World, base_spec
from test_kstatus import as_object

PASSWORD_ERROR = json.dumps(
    {
        "command": "expand",
        "outcome": "failed",
        "exit_code": 3,
        "error": 'database unavailable: password authentication failed for user "divbase"',
    }
)


def expanding(**spec: object) -> tuple[World, JobObs]:
    world = World(spec=base_spec("1", **spec))
    world.install("1")
    world.set_spec(version="2")
    world.reconcile()
    job = world.active_job("expand")
    world.pods.append(
        PodObs(
            name=f"{job.name}-a",
            job_name=job.name,
            workload=None,
            version="2",
            phase="Running",
            created_at="2026-11-25T12:00:40Z",
            owner_uid=job.uid,
        )
    )
    return world, job


def fail_attempt(
    world: World,
    job: JobObs,
    suffix: str,
    exit_code: int = 3,
    message: str = PASSWORD_ERROR,
    next_pod: str | None = None,
) -> None:
    """The Job controller saw pod `<job>-<suffix>` fail and (unless it was the last) started another."""
    name = f"{job.name}-{suffix}"
    ts = world.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.pods = [
        dataclasses.replace(p, phase="Failed", exit_code=exit_code, termination_message=message, finished_at=ts)
        if p.name == name
        else p
        for p in world.pods
    ]
    current = world.jobs[job.name]
    world.jobs[job.name] = dataclasses.replace(current, failed=current.failed + 1, backoff_limit=2)
    if next_pod:
        world.pods.append(
            PodObs(
                name=f"{job.name}-{next_pod}",
                job_name=job.name,
                workload=None,
                version="2",
                phase="Pending",
                created_at=ts,
                owner_uid=job.uid,
            )
        )


def events(world: World, reason: str) -> list[EmitEvent]:
    return [a for a in world.log[-1].actions if isinstance(a, EmitEvent) and a.reason == reason]


def test_each_failed_attempt_is_an_event_and_in_the_status_once() -> None:
    world, job = expanding()
    fail_attempt(world, job, "a", next_pod="b")
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert event.type == "Warning"
    assert event.message == (
        f"expand Job {job.name} for release 2: attempt 1 of 3 failed (pod {job.name}-a, exit "
        f'code 3): database unavailable: password authentication failed for user "divbase"; '
        f"2 attempts left"
    )
    ready = world.condition(names.COND_READY)
    assert ready["reason"] == names.REASON_JOB_RUNNING
    assert ready["message"].startswith(
        f"expand Job {job.name}: attempt 2 of 3 running (pod {job.name}-b pending since "
    )
    assert "attempt 1 failed (exit code 3): database unavailable: password authentication failed" in ready["message"]
    assert ready["message"].endswith("2 attempts left")
    record = world.status["rollout"]["steps"]["expand"]
    assert record["failedAttempts"] == 1
    assert record["attempts"] == [
        {
            "pod": f"{job.name}-a",
            "exitCode": 3,
            "finishedAt": "2026-11-25T12:00:25Z",
            "message": 'database unavailable: password authentication failed for user "divbase"',
        }
    ]

    text = plugin.format_status(as_object(world), now=world.now)
    expand_row = next(line for line in text.splitlines() if line.startswith("  expand "))
    assert "1 failed attempt(s); last: exit code 3: database unavailable: password authentication" in expand_row

    world.reconcile()  # nothing new: no second Event, and the same message (no clock in it: no status churn)
    assert events(world, names.EVENT_ATTEMPT_FAILED) == []
    world.now += timedelta(minutes=5)
    before = copy.deepcopy(world.status)
    world.reconcile()
    assert world.condition(names.COND_READY)["message"] == ready["message"]
    assert world.status["rollout"] == before["rollout"]

    fail_attempt(
        world,
        job,
        "b",
        exit_code=4,
        message='{"error": "another divbase-migrate held the migration lock for more than 600000 ms"}',
        next_pod="c",
    )
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert "attempt 2 of 3 failed" in event.message and "exit code 4" in event.message
    assert "held the migration lock" in event.message and event.message.endswith("1 attempt left")
    assert "attempt 3 of 3 running" in world.condition(names.COND_READY)["message"]
    assert world.status["rollout"]["steps"]["expand"]["failedAttempts"] == 2

    # the last attempt fails: the Job fails, lastFailure quotes the runner and counts the attempts
    fail_attempt(world, job, "c")
    world.jobs[job.name] = dataclasses.replace(
        world.jobs[job.name],
        state="Failed",
        reason="BackoffLimitExceeded",
        finished_at=world.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    world.reconcile()
    failure = world.status["lastFailure"]
    assert failure["attempts"] == 3 and failure["exitCode"] == 3
    assert failure["message"].startswith("database unavailable: password authentication failed")
    assert world.status["phase"] == names.PHASE_FAILED
    assert events(world, names.EVENT_ATTEMPT_FAILED) == [], "the last attempt is the Job's failure, reported once"


def test_a_restarted_operator_does_not_repeat_attempt_events() -> None:
    world, job = expanding()
    fail_attempt(world, job, "a", next_pod="b")
    world.reconcile()
    assert len(events(world, names.EVENT_ATTEMPT_FAILED)) == 1
    restarted = World(
        spec=world.spec,
        status=copy.deepcopy(world.status),
        generation=world.generation,
        jobs=dict(world.jobs),
        pods=list(world.pods),
        deployments=dict(world.deployments),
        now=world.now,
    )
    restarted.reconcile()
    assert events(restarted, names.EVENT_ATTEMPT_FAILED) == []


def test_a_pod_that_died_before_its_summary_reports_its_exit_code_without_quoting_it() -> None:
    """A termination message without a summary is untrusted text (docs/security.md): named, never repeated."""
    world, job = expanding()
    fail_attempt(world, job, "a", exit_code=137, message="Killed\nout of memory", next_pod="b")
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert "exit code 137): exit code 137, no summary" in event.message
    assert "Killed" not in event.message and "out of memory" not in event.message


def test_attempts_follow_the_jobs_own_backoff_limit() -> None:
    world, job = expanding(migrationJob={"backoffLimit": 0})
    assert world.job_bodies[job.name]["spec"]["backoffLimit"] == 0
    observed = job_from_body({"metadata": {"name": job.name}, "spec": {"backoffLimit": 5}, "status": {"failed": 2}})
    assert (observed.backoff_limit, observed.failed) == (5, 2)
    world.jobs[job.name] = dataclasses.replace(world.jobs[job.name], failed=0, backoff_limit=5)
    fail_attempt(world, job, "a", next_pod="b")
    world.jobs[job.name] = dataclasses.replace(world.jobs[job.name], backoff_limit=5)
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert "attempt 1 of 6 failed" in event.message and event.message.endswith("5 attempts left")


def test_a_running_job_without_failures_names_its_pod() -> None:
    world, job = expanding()
    world.reconcile()
    assert world.condition(names.COND_READY)["message"] == (
        f"expand Job {job.name} is running (pod {job.name}-a running since 2026-11-25T12:00:40Z)"
    )


@pytest.mark.parametrize("instance", ["divbase-operator-7d9c-x2x", None])
def test_events_come_from_divbase_operator(instance: str | None) -> None:
    settings = kopf.OperatorSettings()
    configure_events(settings, instance)
    assert settings.posting.reporting_component == "divbase-operator"
    assert settings.posting.event_name_prefix == "divbase-operator-"
    assert settings.posting.reporting_instance and settings.posting.reporting_instance != "dev"
    if instance:
        assert settings.posting.reporting_instance == instance
    fields = {f.name for f in dataclasses.fields(type(settings.posting))}
    assert {"reporting_component", "reporting_instance", "event_name_prefix"} <= fields, "Kopf too old"


# -- lock waits: what a running pod's log tail shows (read by the reconciler, decided here) ----------------------------
HOLDER = LockWait(4242, "divbase-migrate", "2026-11-25T12:00:03Z", "2026-11-25T12:00:41Z")


def test_a_lock_wait_is_shown_with_its_holder_and_one_event() -> None:
    world, job = expanding()
    pod = f"{job.name}-a"
    decision = world.reconcile()
    assert decision.log_pods == (pod,), "the running pod's log is read"
    assert world.condition(names.COND_READY)["reason"] == names.REASON_JOB_RUNNING

    world.lock_waits = {pod: HOLDER}
    world.reconcile()
    [event] = events(world, names.EVENT_LOCK_WAIT)
    waiting = (
        f"is waiting for the migration lock held by pid 4242 (application divbase-migrate, connected since "
        f"2026-11-25T12:00:03Z) since 2026-11-25T12:00:41Z (pod {pod})"
    )
    assert event.type == "Normal" and event.message == f"expand Job {job.name} for release 2 {waiting}"
    for kind in (names.COND_READY, names.COND_RECONCILING):
        condition = world.condition(kind)
        assert (condition["reason"], condition["message"]) == (
            names.REASON_LOCK_WAIT,
            f"expand Job {job.name} {waiting}",
        ), kind
    assert world.condition(names.COND_SCHEMA_EXPANDED)["message"] == f"expand Job {job.name} {waiting}"
    assert world.status["rollout"]["steps"]["expand"]["lockWait"] == {
        "pod": pod,
        "holderPid": 4242,
        "holderApplication": "divbase-migrate",
        "holderSince": "2026-11-25T12:00:03Z",
        "since": "2026-11-25T12:00:41Z",
    }
    text = plugin.format_status(as_object(world), now=world.now)
    assert "waiting for the migration lock held by pid 4242" in text, text

    before = copy.deepcopy(world.status)
    world.reconcile()  # the same wait: no second Event, no status change
    assert events(world, names.EVENT_LOCK_WAIT) == [] and world.status["rollout"] == before["rollout"]

    world.lock_waits = {pod: dataclasses.replace(HOLDER, holder_pid=77, holder_application=None, holder_since=None)}
    world.reconcile()  # another holder: another Event
    [event] = events(world, names.EVENT_LOCK_WAIT)
    assert "held by pid 77 since 2026-11-25T12:00:41Z" in event.message

    world.lock_waits = {}  # the runner got the lock
    world.reconcile()
    assert world.condition(names.COND_READY)["reason"] == names.REASON_JOB_RUNNING
    assert "lockWait" not in world.status["rollout"]["steps"]["expand"]
    assert events(world, names.EVENT_LOCK_WAIT) == []


def test_only_running_pods_of_a_running_job_have_their_logs_read() -> None:
    world, job = expanding()
    world.pods = [dataclasses.replace(p, phase="Pending") for p in world.pods]
    assert world.reconcile().log_pods == ()
    world.pods = [dataclasses.replace(p, phase="Running") for p in world.pods]
    world.lock_waits = {f"{job.name}-a": HOLDER}
    assert world.reconcile().log_pods == (f"{job.name}-a",)
    world.finish_job("expand")
    world.lock_waits = {f"{job.name}-a": HOLDER}  # a stale observation of a pod whose Job is done shows nothing
    decision = world.reconcile()
    assert decision.log_pods == () and "lockWait" not in world.status["rollout"]["steps"]["expand"]
    assert not [e for e in decision.actions if isinstance(e, EmitEvent) and e.reason == names.EVENT_LOCK_WAIT]


def test_a_wait_whose_holder_could_not_be_read_says_so() -> None:
    world, job = expanding()
    world.lock_waits = {f"{job.name}-a": LockWait(None, since="2026-11-25T12:00:41Z")}
    world.reconcile()
    assert world.condition(names.COND_READY)["message"] == (
        f"expand Job {job.name} is waiting for the migration lock held by another session since "
        f"2026-11-25T12:00:41Z (pod {job.name}-a)"
    )


class _LogApi:
    """The KubeApi calls of a reconcile while a Job runs, and pod logs served from `logs` (or refused)."""

    def __init__(self, world: World, logs: dict[str, str], refuse: int | None = None) -> None:
        self.spec, self.status = world.spec, copy.deepcopy(world.status)
        self.logs, self.refuse = logs, refuse
        self.read: list[tuple[str, str, str, int, int]] = []
        self.patched = asyncio.Event()

    async def get(self, kind: str, namespace: str, name: str) -> None:
        return None

    async def read_pod_log(self, namespace: str, name: str, container: str, tail_lines: int, limit_bytes: int) -> str:
        self.read.append((namespace, name, container, tail_lines, limit_bytes))
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Forbidden")
        return self.logs.get(name, "")

    async def patch_status(self, namespace: str, name: str, rv: str, patch: dict) -> dict:
        self.status = _merged(self.status, patch)
        if any(c.get("reason") == names.REASON_LOCK_WAIT for c in self.status.get("conditions") or []):
            self.patched.set()
        return {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": "uid-1",
                "resourceVersion": str(int(rv) + 1),
                "generation": 1,
                "finalizers": [names.FINALIZER],
            },
            "spec": self.spec,
            "status": copy.deepcopy(self.status),
        }


def _merged(old: dict, patch: dict) -> dict:
    """A JSON merge patch applied, as the apiserver does."""
    out = copy.deepcopy(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _reconciler(world: World, api: _LogApi, posted: list[EmitEvent]) -> Reconciler:
    snap = Snapshot.from_body(
        {
            "metadata": {
                "namespace": "prod",
                "name": "db",
                "uid": "uid-1",
                "resourceVersion": "1",
                "generation": world.generation,
                "finalizers": [names.FINALIZER],
            },
            "spec": world.spec,
            "status": world.status,
        }
    )
    sources = Sources(
        databases=lambda key: snap,
        jobs=lambda key: tuple(world.jobs.values()),
        deployments=lambda key: tuple(world.deployments.values()),
        pods=lambda key: tuple(world.pods),
    )
    return Reconciler(
        api=api,
        sources=sources,
        post_event=lambda ref, e: posted.append(e),  # type: ignore[arg-type]
        clock=lambda: world.now,
        lock_wait_probe_seconds=0.01,
    )


async def test_the_reconciler_reads_a_running_pods_log_tail_and_shows_the_wait() -> None:
    world, job = expanding()
    pod = f"{job.name}-a"
    line = json.dumps(
        {
            "msg": "another divbase-migrate holds the lock; waiting",
            "password": "s3cret",
            **lock_wait_fields(
                {"pid": 4242, "application_name": "psql", "client": "10.0.0.9", "since": "2026-11-25T12:00:03Z"},
                "2026-11-25T12:00:41Z",
            ),
        }
    )
    api = _LogApi(world, {pod: f"starting\n{line}\n"})
    posted: list[EmitEvent] = []
    reconciler = _reconciler(world, api, posted)
    await reconciler.reconcile_once(("prod", "db"))
    await asyncio.wait_for(api.patched.wait(), 10)  # the probe read the tail and woke a reconcile
    assert api.read[0] == ("prod", pod, "migrate", names.LOCK_WAIT_LOG_LINES, names.LOCK_WAIT_LOG_BYTES)
    ready = next(c for c in api.status["conditions"] if c["type"] == names.COND_READY)
    assert "held by pid 4242 (application psql, connected since 2026-11-25T12:00:03Z)" in ready["message"]
    [event] = [e for e in posted if e.reason == names.EVENT_LOCK_WAIT]
    shown = json.dumps(api.status) + event.message
    assert "s3cret" not in shown and "10.0.0.9" not in shown, "nothing of the log but the contract's fields"
    state = reconciler._states[("prod", "db")]
    assert state.probe is not None, "probing goes on while the pod runs"
    reconciler._probe_logs(("prod", "db"), state, ())  # the Job is done: no pod to read
    assert state.probe is None and state.lock_waits == {}


async def test_a_forbidden_log_read_stops_probing_and_shows_the_running_job(caplog: pytest.LogCaptureFixture) -> None:
    world, _ = expanding()
    api = _LogApi(world, {}, refuse=403)
    reconciler = _reconciler(world, api, [])
    await reconciler.reconcile_once(("prod", "db"))
    state = reconciler._states[("prod", "db")]
    await asyncio.wait_for(_until(lambda: bool(api.read) and state.probe is None), 10)
    assert len(api.read) == 1 and reconciler._logs_forbidden
    assert "pods/log get) is forbidden" in caplog.text
    await reconciler.reconcile_once(("prod", "db"))
    assert state.probe is None, "not asked again"


async def _until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until `predicate` holds (the caller bounds it with wait_for)."""
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_log_tail_is_asked_for_bounded() -> None:
    from divbase_operator.kube import KubeApi

    asked: list[tuple[str, dict, int]] = []

    def call_text(path: str, query: dict, limit: int) -> str:
        asked.append((path, query, limit))
        return "tail"

    api = KubeApi(api_client=object())  # type: ignore[arg-type]
    api._call_text = call_text  # type: ignore[method-assign]
    assert await api.read_pod_log("prod", "db-expand-1-x", "migrate", 10, 32768) == "tail"
    assert asked == [
        (
            "/api/v1/namespaces/prod/pods/db-expand-1-x/log",
            {"container": "migrate", "tailLines": "10", "limitBytes": "32768"},
            32768,
        )
    ]
