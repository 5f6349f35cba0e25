"""Progress inside a step: each failed pod of a running migration Job is reported as it happens (status and a
Warning Event: exit code, the runner's own message, attempts left), once per pod; Events come from
divbase-operator, not kopf."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import timedelta

import kopf
import pytest
from divbase_operator import kubectl_plugin as plugin
from divbase_operator import names
from divbase_operator.handlers import configure_events
from divbase_operator.observed import JobObs, PodObs, job_from_body
from divbase_operator.planner import EmitEvent
from planner_world import World, base_spec
from test_kstatus import as_object

PASSWORD_ERROR = json.dumps({"command": "expand", "outcome": "failed", "exit_code": 3,
                             "error": "database unavailable: password authentication failed for user \"divbase\""})


def expanding(**spec: object) -> tuple[World, JobObs]:
    world = World(spec=base_spec("1", **spec))
    world.install("1")
    world.set_spec(version="2")
    world.reconcile()
    job = world.active_job("expand")
    world.pods.append(PodObs(name=f"{job.name}-a", job_name=job.name, workload=None, version="2", phase="Running",
                             created_at="2026-11-25T12:00:40Z", owner_uid=job.uid))
    return world, job


def fail_attempt(world: World, job: JobObs, suffix: str, exit_code: int = 3, message: str = PASSWORD_ERROR,
                 next_pod: str | None = None) -> None:
    """The Job controller saw pod `<job>-<suffix>` fail and (unless it was the last) started another."""
    name = f"{job.name}-{suffix}"
    ts = world.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.pods = [dataclasses.replace(p, phase="Failed", exit_code=exit_code, termination_message=message,
                                      finished_at=ts) if p.name == name else p for p in world.pods]
    current = world.jobs[job.name]
    world.jobs[job.name] = dataclasses.replace(current, failed=current.failed + 1, backoff_limit=2)
    if next_pod:
        world.pods.append(PodObs(name=f"{job.name}-{next_pod}", job_name=job.name, workload=None, version="2",
                                 phase="Pending", created_at=ts, owner_uid=job.uid))


def events(world: World, reason: str) -> list[EmitEvent]:
    return [a for a in world.log[-1].actions if isinstance(a, EmitEvent) and a.reason == reason]


def test_each_failed_attempt_is_an_event_and_in_the_status_once() -> None:
    world, job = expanding()
    fail_attempt(world, job, "a", next_pod="b")
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert event.type == "Warning"
    assert event.message == (f"expand Job {job.name} for release 2: attempt 1 of 3 failed (pod {job.name}-a, exit "
                             f"code 3): database unavailable: password authentication failed for user \"divbase\"; "
                             f"2 attempts left")
    ready = world.condition(names.COND_READY)
    assert ready["reason"] == names.REASON_JOB_RUNNING
    assert ready["message"].startswith(f"expand Job {job.name}: attempt 2 of 3 running (pod {job.name}-b pending "
                                       f"since ")
    assert "attempt 1 failed (exit code 3): database unavailable: password authentication failed" in ready["message"]
    assert ready["message"].endswith("2 attempts left")
    record = world.status["rollout"]["steps"]["expand"]
    assert record["failedAttempts"] == 1
    assert record["attempts"] == [{"pod": f"{job.name}-a", "exitCode": 3, "finishedAt": "2026-11-25T12:00:25Z",
                                   "message": "database unavailable: password authentication failed for user "
                                              "\"divbase\""}]

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

    fail_attempt(world, job, "b", exit_code=4, message='{"error": "another divbase-migrate held the migration lock '
                                                        'for more than 600000 ms"}', next_pod="c")
    world.reconcile()
    [event] = events(world, names.EVENT_ATTEMPT_FAILED)
    assert "attempt 2 of 3 failed" in event.message and "exit code 4" in event.message
    assert "held the migration lock" in event.message and event.message.endswith("1 attempt left")
    assert "attempt 3 of 3 running" in world.condition(names.COND_READY)["message"]
    assert world.status["rollout"]["steps"]["expand"]["failedAttempts"] == 2

    # the last attempt fails: the Job fails, lastFailure quotes the runner and counts the attempts
    fail_attempt(world, job, "c")
    world.jobs[job.name] = dataclasses.replace(world.jobs[job.name], state="Failed", reason="BackoffLimitExceeded",
                                               finished_at=world.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
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
    restarted = World(spec=world.spec, status=copy.deepcopy(world.status), generation=world.generation,
                      jobs=dict(world.jobs), pods=list(world.pods), deployments=dict(world.deployments),
                      now=world.now)
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
    assert world.condition(names.COND_READY)["message"] == (f"expand Job {job.name} is running (pod {job.name}-a "
                                                            f"running since 2026-11-25T12:00:40Z)")


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
