"""`kubectl divbase`: read and steer DivBaseDatabase rollouts without remembering annotation names.

    kubectl divbase status NAME [-o json|yaml] [--watch]
                                           phase, versions, steps with durations and Jobs, last failure, conditions
    kubectl divbase history NAME           recent rollouts with step durations (an unfinished one first)
    kubectl divbase wait NAME [--for ready] [--timeout 10m]
                                           exit 0 once Ready at the current generation, 3 at once when Stalled,
                                           4 on timeout (for CI: a failed rollout fails the pipeline at once)
    kubectl divbase approve-contract NAME  lets a Manual contract run (annotation divbase.io/approve-contract)
    kubectl divbase retry NAME             retries the failed step (annotation divbase.io/retry, a new value)

Installed as the console script `kubectl-divbase`, which kubectl finds on PATH. Uses the current kubeconfig
context and its namespace unless `--context` / `-n` say otherwise. The formatting and verdict functions are pure
(they take the resource as a dict) so they are tested without a cluster; errors are one line on stderr with exit
code 1."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from divbase_migrations.contract import plan_digest
from divbase_migrations.release_version import same_release

from . import names
from .conditions import get_condition
from .status import Attempt, DatabaseStatus, HistoryEntry, HistoryStep, Rollout, StepRecord, StepState

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
STEP_ORDER = (names.STEP_EXPAND, names.STEP_DEPLOY, names.STEP_CONTRACT)
UNFINISHED = "Running"  # `history`: the result shown for the rollout in progress (the operator records none)

# Exit codes. 2 is argparse's (bad command line).
EXIT_OK = 0
EXIT_ERROR = 1  # not found, forbidden, deleted, refused, unreachable
EXIT_FAILED = 3  # wait: the rollout is Stalled (a step failed, the spec was refused): no point waiting longer
EXIT_TIMEOUT = 4  # wait: --timeout passed before the resource was Ready
# Stalled reasons a retry annotation re-arms; while a new retry token waits for the operator, Stalled is stale.
RETRYABLE_REASONS = frozenset({names.REASON_JOB_FAILED, names.REASON_ROLLED_BACK, names.REASON_PROGRESS_DEADLINE})
WATCH_CHUNK_SECONDS = 60  # a watch is re-opened (after a fresh read) this often, so a silent connection cannot hang
FIXED_NOW = datetime(1970, 1, 1, tzinfo=UTC)  # renders a status without its clock-dependent durations


class PluginError(Exception):
    """An error the user can act on; printed as one line, exit code 1."""


# --- pure helpers -------------------------------------------------------------------------------------------------
def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_timeout(text: str) -> float:
    """`10m`, `90s`, `1h30m`, `45` (seconds), `0` (look once): what `kubectl wait --timeout` takes."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90s, 10m, 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def format_duration(seconds: float | None) -> str:
    """`45s`, `3m05s`, `2h04m`: short enough for a table column."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


def step_duration(rec: StepRecord | Rollout | HistoryEntry, now: datetime) -> float | None:
    """Finished steps: start to end. A running step: start to now, so a stuck step shows how long it is stuck."""
    start, end = parse_time(rec.started_at), parse_time(rec.finished_at)
    if start is None:
        return None
    return ((end or now) - start).total_seconds()


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return get_condition(_conditions(obj), kind)


def _status(obj: dict[str, Any]) -> DatabaseStatus:
    """The resource's status in the operator's own model (status.py), so the plugin reads what the planner wrote."""
    return DatabaseStatus.from_dict(obj.get("status"))


def awaiting_approval(obj: dict[str, Any]) -> str | None:
    """The version whose contract waits for a manual approval, or None."""
    status = _status(obj)
    rollout = status.rollout
    contract = rollout.steps.get(names.STEP_CONTRACT) if rollout is not None else None
    ready = _condition(obj, names.COND_READY) or {}
    manual = ready.get("reason") == names.REASON_AWAITING_APPROVAL
    waiting = contract is not None and contract.state == StepState.WAITING
    if manual and (status.phase == names.PHASE_AWAITING_CONTRACT or waiting):
        return (rollout.to_version if rollout is not None else None) or status.target_version
    return None


def is_stalled(obj: dict[str, Any]) -> bool:
    cond = _condition(obj, names.COND_STALLED)
    return bool(cond and cond.get("status") == "True")


def _stalled_at(obj: dict[str, Any]) -> datetime | None:
    """When the rollout stopped: the recorded failure's time, else when Stalled turned True."""
    failure = _status(obj).last_failure
    cond = _condition(obj, names.COND_STALLED) or {}
    return parse_time(failure.time if failure else None) or parse_time(cond.get("lastTransitionTime"))


def retry_pending(obj: dict[str, Any]) -> bool:
    """A retry annotation the operator has not acted on yet: the Stalled condition is about to go away."""
    meta, rollout = obj.get("metadata") or {}, _status(obj).rollout
    token = (meta.get("annotations") or {}).get(names.ANNOTATION_RETRY, "")
    reason = (_condition(obj, names.COND_STALLED) or {}).get("reason")
    return bool(
        token
        and rollout is not None
        and not rollout.finished_at
        and token != rollout.retry_token
        and reason in RETRYABLE_REASONS
    )


def next_command(obj: dict[str, Any]) -> str | None:
    """What the user runs next, if anything: approve a waiting contract, or retry after fixing a failure."""
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name", "?"), meta.get("namespace", "?")
    if awaiting_approval(obj):
        return f"kubectl divbase approve-contract {name} -n {namespace}"
    if is_stalled(obj):
        return f"kubectl divbase retry {name} -n {namespace}"
    return None


def _failure_lines(status: DatabaseStatus) -> list[str]:
    failure = status.last_failure
    if failure is None:
        return []
    details = ", ".join(
        part
        for part in (
            f"Job {failure.job}" if failure.job else "",
            f"exit code {failure.exit_code}" if failure.exit_code is not None else "",
            failure.reason or "",
        )
        if part
    )
    return [
        f"Last failure: {failure.step or '?'} of release {failure.version or '?'}"
        f"{f' ({details})' if details else ''} at {failure.time or '?'}",
        f"  {_one_line(failure.message or '')}",
    ]


def _rollout_progress(obj: dict[str, Any], now: datetime) -> str:
    """`running for 1m03s`, or what stopped it: a failed rollout is not running."""
    status = _status(obj)
    rollout = status.rollout or Rollout()
    span = step_duration(rollout, now)
    if rollout.finished_at:
        return f"{rollout.result or 'finished'} after {format_duration(span)}"
    if is_stalled(obj):
        start, stopped = parse_time(rollout.started_at), _stalled_at(obj)
        took = format_duration((stopped - start).total_seconds()) if start and stopped else "-"
        when = stopped.strftime(TIME_FORMAT) if stopped else "?"
        return f"failed after {took} (at {when}); waiting for a retry or a new spec.version"
    if status.phase == names.PHASE_PAUSED:
        return f"paused (spec.paused), {format_duration(span)} since it started"
    if awaiting_approval(obj):
        return f"waiting for contract approval, {format_duration(span)} since it started"
    return f"running for {format_duration(span)}"


def format_status(obj: dict[str, Any], now: datetime | None = None) -> str:
    """Everything `kubectl describe` would make you dig for: where the rollout is, how long each step took,
    which Job ran it and, after a failure, the Job's own error message."""
    now = now or datetime.now(UTC)
    status = _status(obj)
    lines = _identity_lines(obj, status)
    if status.rollout is not None:
        lines += _rollout_lines(obj, status.rollout, now)
    lines += _failure_lines(status)
    lines += _schema_lines(status)
    lines += _condition_lines(obj)
    lines += _next_lines(obj, status)
    return "\n".join(lines)


def _identity_lines(obj: dict[str, Any], status: DatabaseStatus) -> list[str]:
    """Name, phase, versions, generation, and whether anything holds the rollout (paused, a Job running)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    lines = [
        f"Name:        {meta.get('name', '?')}",
        f"Namespace:   {meta.get('namespace', '?')}",
        f"Phase:       {status.phase or 'Unknown (no status yet: is divbase-operator running?)'}",
        f"Version:     {spec.get('version', '-')} (spec)  current: {status.current_version or '-'}  "
        f"target: {status.target_version or '-'}",
    ]
    generation, observed = meta.get("generation"), status.observed_generation
    if generation is not None:
        note = "" if observed == generation else "  (the operator has not seen the latest spec yet)"
        lines.append(f"Generation:  {generation} (observed {observed if observed is not None else '-'}){note}")
    if spec.get("paused"):
        lines.append("Paused:      yes (spec.paused): no step starts until it is false")
    if status.active_job:
        lines.append(f"Active Job:  {status.active_job}")
    return lines


def _rollout_lines(obj: dict[str, Any], rollout: Rollout, now: datetime) -> list[str]:
    """The rollout's versions, image, progress, and a table of its steps."""
    lines = [
        f"Rollout:     {rollout_from(rollout)} -> {rollout.to_version}"
        f"  image {rollout.image if rollout.image is not None else '-'}",
        f"             started {rollout.started_at or '-'}, {_rollout_progress(obj, now)}",
    ]
    rows = [("STEP", "PHASE", "DURATION", "JOB", "MESSAGE")]
    for step in STEP_ORDER:
        rec = rollout.steps.get(step)
        if rec is not None:
            rows.append(
                (
                    step,
                    rec.state if rec.state is not None else "-",
                    format_duration(step_duration(rec, now)),
                    rec.job or "-",
                    _one_line(rec.message or _attempts_note(rec)),
                )
            )
    return [*lines, "Steps:", *table(rows)]


def _schema_lines(status: DatabaseStatus) -> list[str]:
    schema = status.schema
    if schema is None or not schema.to_dict():
        return []
    return [f"Schema:      expanded to {schema.expanded_to or '-'}, contracted to {schema.contracted_to or '-'}"]


def _condition_lines(obj: dict[str, Any]) -> list[str]:
    conditions = _conditions(obj)
    if not conditions:
        return []
    rows = [("TYPE", "STATUS", "REASON", "MESSAGE")]
    rows += [
        (c.get("type", ""), c.get("status", ""), c.get("reason", ""), _one_line(c.get("message") or ""))
        for c in conditions
    ]
    return ["Conditions:", *table(rows)]


def _next_lines(obj: dict[str, Any], status: DatabaseStatus) -> list[str]:
    """What to do next: review and approve a waiting contract's plan, or retry after fixing a failure."""
    waiting = awaiting_approval(obj)
    if waiting:
        lines = []
        plan = status.contract_plan
        if plan is not None and plan.version == waiting:
            namespace = (obj.get("metadata") or {}).get("namespace", "?")
            lines.append(
                f"Plan:        {plan.digest or None} ({len(plan.revisions or [])} revision(s)); the SQL: "
                f"kubectl get configmap {plan.config_map or None} -n {namespace} "
                f"-o jsonpath='{{.data.plan\\.sql}}'"
            )
        lines.append(f"Next:        {next_command(obj)}   (the contract of release {waiting} waits for approval)")
        return lines
    if is_stalled(obj):
        return [f"Next:        fix the cause, then: {next_command(obj)}"]
    return []


def _attempts_note(rec: StepRecord) -> str:
    """A running step's failed attempts: how many, and how the last one failed."""
    failed = rec.failed_attempts
    if not failed:
        return ""
    last = rec.attempts[-1] if rec.attempts else Attempt()
    return f"{failed} failed attempt(s); last: exit code {last.exit_code}: {last.message}"


def rollout_from(
    rollout: Rollout | HistoryEntry, empty: str = "(empty database)", found: str = "found in the database"
) -> str:
    """The release a rollout started from; a first install says what it found in the database, if anything."""
    if rollout.from_version:
        return str(rollout.from_version)
    if rollout.found_version:
        return f"{rollout.found_version} ({found})"
    return empty


def status_document(obj: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """`status -o json|yaml`: what `status` prints, as data a script can read (durations in seconds)."""
    now = now or datetime.now(UTC)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, _status(obj)
    ready = _condition(obj, names.COND_READY) or {}
    generation = meta.get("generation")
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": generation,
        "observedGeneration": status.observed_generation,
        "phase": status.phase,
        "ready": ready.get("status") == "True" and status.observed_generation == generation,
        "stalled": is_stalled(obj),
        "message": ready.get("message") or "",
        "version": spec.get("version"),
        "currentVersion": status.current_version,
        "targetVersion": status.target_version,
        "activeJob": status.active_job,
        "rollout": _rollout_document(obj, status.rollout, now) if status.rollout is not None else None,
        "lastFailure": status.last_failure.to_dict() if status.last_failure is not None else None,
        "schema": status.schema.to_dict() if status.schema is not None else {},
        "conditions": _conditions(obj),
        "awaitingApproval": awaiting_approval(obj),
        "next": next_command(obj),
    }


def _rollout_document(obj: dict[str, Any], rollout: Rollout, now: datetime) -> dict[str, Any]:
    return {
        "fromVersion": rollout.from_version,
        "foundVersion": rollout.found_version,
        "toVersion": rollout.to_version,
        "image": rollout.image,
        "startedAt": rollout.started_at,
        "finishedAt": rollout.finished_at,
        "result": rollout.result,
        "currentStep": rollout.current_step,
        "progress": _rollout_progress(obj, now),
        "seconds": step_duration(rollout, now),
        "steps": [
            {"step": step, **rollout.steps[step].to_dict(), "seconds": step_duration(rollout.steps[step], now)}
            for step in STEP_ORDER
            if step in rollout.steps
        ],
    }


def _unfinished(obj: dict[str, Any]) -> HistoryEntry | None:
    """The rollout in progress (or stopped by a failure) as a history entry: history only keeps finished ones."""
    status = _status(obj)
    rollout = status.rollout
    if rollout is None or rollout.finished_at:
        return None
    if is_stalled(obj):
        result = names.RESULT_FAILED
    elif status.phase == names.PHASE_PAUSED:
        result = names.PHASE_PAUSED
    else:
        result = UNFINISHED
    return HistoryEntry(
        from_version=rollout.from_version,
        found_version=rollout.found_version,
        to_version=rollout.to_version,
        result=result,
        started_at=rollout.started_at,
        steps={step: HistoryStep(rec.state, None) for step, rec in rollout.steps.items()},
    )


def format_history(obj: dict[str, Any]) -> str:
    unfinished = _unfinished(obj)
    history = ([unfinished] if unfinished else []) + list(_status(obj).history or [])
    meta = obj.get("metadata") or {}
    if not history:
        return f"No rollouts recorded for {meta.get('namespace', '?')}/{meta.get('name', '?')} yet."
    rows = [("FROM", "TO", "RESULT", "STARTED", "DURATION", *(s.upper() for s in STEP_ORDER))]
    rows += [_history_row(entry, datetime.now(UTC)) for entry in history]
    return "\n".join(table(rows, indent=""))


def _history_row(entry: HistoryEntry, now: datetime) -> tuple[str, ...]:
    duration = format_duration(step_duration(entry, now) if entry.finished_at else None)
    return (
        rollout_from(entry, "(empty)", "found"),
        entry.to_version or "?",
        entry.result or "?",
        entry.started_at or "-",
        duration,
        *(_history_cell(entry.steps.get(step)) for step in STEP_ORDER),
    )


def _history_cell(rec: HistoryStep | None) -> str:
    """A step's state, with its duration when it finished."""
    state = (rec.state if rec is not None else None) or "-"
    return state if rec is None or rec.seconds is None else f"{state} {format_duration(rec.seconds)}"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def approval_patch(obj: dict[str, Any], version: str | None) -> tuple[dict[str, Any], str]:
    """The merge patch approving a contract, and what to tell the user. Refuses when nothing waits, unless an
    explicit --version pre-approves the contract of the rollout in progress (so a pipeline can approve early)."""
    meta, status = obj.get("metadata") or {}, _status(obj)
    where = f"divbasedatabase {meta.get('name')!r} in namespace {meta.get('namespace')!r}"
    waiting = awaiting_approval(obj)
    if waiting is None:
        version = _pre_approvable(status, version, where)
        message = f"pre-approved the contract of release {version} on {where}"
    else:
        if version and not same_release(version, waiting):
            raise PluginError(f"the contract waiting on {where} is for release {waiting}, not {version}")
        version = waiting
        message = f"approved the contract of release {version} on {where}"
    value = version
    plan = status.contract_plan
    if waiting is not None and plan is not None and plan.version == version and plan.digest:
        # approve exactly the plan published for review: if it changes before the contract starts, the operator
        # refuses this approval instead of running SQL nobody saw
        digest = str(plan.digest).split(":", 1)[-1][:12]
        value = f"{version}@{digest}"
        message += f" (plan {digest}, ConfigMap {plan.config_map or None})"
    body = {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {names.ANNOTATION_APPROVE_CONTRACT: value},
        }
    }
    return body, message


def _pre_approvable(status: DatabaseStatus, version: str | None, where: str) -> str:
    """The release whose contract `--version` may approve before it waits: the rollout in progress, its contract
    not started yet. Refused (PluginError) otherwise."""
    rollout = status.rollout
    contract = rollout.steps.get(names.STEP_CONTRACT) if rollout is not None else None
    pending = (
        rollout is not None
        and not rollout.finished_at
        and contract is not None
        and contract.state == StepState.PENDING
        and not contract.job
    )
    if rollout is None or not (version and pending and same_release(version, rollout.to_version or "")):
        raise PluginError(f"nothing waits for contract approval on {where} (phase {status.phase or '-'})")
    return rollout.to_version


def plan_to_approve(obj: dict[str, Any], version: str | None) -> dict[str, Any] | None:
    """status.contractPlan when `approve-contract` would approve exactly that plan (a contract waits for it)."""
    waiting = awaiting_approval(obj)
    plan = (obj.get("status") or {}).get("contractPlan") or {}
    if waiting is None or not plan.get("digest") or not same_release(plan.get("version") or "", waiting):
        return None
    if version and not same_release(version, waiting):
        return None
    return plan


def check_published_plan(plan: dict[str, Any], configmap: dict[str, Any] | None) -> str:
    """Refuses (PluginError) unless the SQL a reviewer reads in the plan's ConfigMap is the plan being approved:
    sha256(plan.sql) must be status.contractPlan.digest (status is written by the operator only; a ConfigMap by
    anyone who may edit ConfigMaps). Only status says the SQL was left out (`contractPlan.truncated`): the
    ConfigMap's own `truncated` key is anyone's to set. Returns a note for the user ("" when the SQL was checked)."""
    name, digest = plan.get("configMap") or "?", str(plan.get("digest"))
    short = digest[: len("sha256:") + 12]
    if configmap is None:
        raise PluginError(
            f"ConfigMap {name} with the plan's SQL is missing: nothing was reviewed, so nothing is "
            f"approved (the operator publishes it again; retry in a moment)"
        )
    data = configmap.get("data") or {}
    if plan.get("truncated") is True:
        return (
            f"; its SQL was too large to publish, so it was not checked here: render it with divbase-migrate "
            f"plan contract --release {plan.get('version')} --sql (the contract runs only SQL of digest {short})"
        )
    sql = data.get(names.PLAN_DATA_SQL)
    actual = plan_digest(sql) if isinstance(sql, str) else "none"
    if actual != digest:
        raise PluginError(
            f"the SQL in ConfigMap {name} is not the plan {short} (its sha256 is "
            f"{actual[: len('sha256:') + 12]}): it was changed after the operator published it. Not "
            f"approved; the operator publishes the plan again, review it then"
        )
    return ""


def retry_patch(obj: dict[str, Any], token: str | None = None) -> tuple[dict[str, Any], str]:
    """A fresh retry token. Refused unless a step failed: a token set while nothing failed would make the next
    failure of the same rollout retry itself once without anyone looking."""
    meta = obj.get("metadata") or {}
    where = f"divbasedatabase {meta.get('name')!r} in namespace {meta.get('namespace')!r}"
    if not is_stalled(obj):
        phase = (obj.get("status") or {}).get("phase", "-")
        raise PluginError(f"nothing to retry on {where}: no step failed (phase {phase})")
    token = token or f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
    body = {
        "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": {names.ANNOTATION_RETRY: token}}
    }
    failure = (obj.get("status") or {}).get("lastFailure") or {}
    step = failure.get("step", "the failed step")
    return body, f"retry requested for {step} on {where} ({names.ANNOTATION_RETRY}={token})"


# --- wait ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    code: int  # EXIT_OK, EXIT_FAILED or EXIT_ERROR
    message: str


def wait_verdict(obj: dict[str, Any]) -> Verdict | None:
    """Ready at the current generation: done. Stalled at the current generation: failed, no point waiting. Anything
    else (the operator has not seen the latest spec, a step runs, a retry was just requested): keep waiting.

    Conditions of an older generation say nothing about the spec now: after `kubectl apply` of a fix, the old
    Stalled condition stays until the operator has looked, so it is not a failure yet; likewise a Ready of the
    previous release is not Ready."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    where = f"divbasedatabase/{meta.get('name', '?')}"
    if meta.get("deletionTimestamp"):
        return Verdict(EXIT_ERROR, f"{where} is being deleted")
    generation = meta.get("generation")
    if generation is None or status.get("observedGeneration") != generation:
        return None
    if _true_now(obj, names.COND_READY, generation):
        return Verdict(EXIT_OK, f"{where} condition met: Ready (release {status.get('currentVersion') or '?'})")
    if _true_now(obj, names.COND_STALLED, generation) and not retry_pending(obj):
        return Verdict(EXIT_FAILED, _stalled_report(obj, where))
    return None


def _true_now(obj: dict[str, Any], kind: str, generation: int) -> bool:
    """Condition `kind` is True for `generation` (a condition without observedGeneration counts as current)."""
    cond = _condition(obj, kind) or {}
    return cond.get("status") == "True" and cond.get("observedGeneration", generation) == generation


def _stalled_report(obj: dict[str, Any], where: str) -> str:
    """Why the wait failed: the Stalled condition, the last failure, and what to run after fixing the cause."""
    stalled = _condition(obj, names.COND_STALLED) or {}
    lines = [
        f"{where} failed ({stalled.get('reason') or 'Stalled'}): {_one_line(stalled.get('message') or '')}",
        *_failure_lines(_status(obj)),
    ]
    command = next_command(obj)
    if command:
        lines.append(f"Next: fix the cause, then: {command}")
    return "\n".join(lines)


def progress_line(obj: dict[str, Any]) -> str:
    """One line per change while waiting: phase and the Ready condition's message."""
    status = obj.get("status") or {}
    ready = _condition(obj, names.COND_READY) or {}
    meta = obj.get("metadata") or {}
    note = "" if status.get("observedGeneration") == meta.get("generation") else " (not yet observed)"
    message = _one_line(ready.get("message") or "")
    return f"{status.get('phase') or 'Unknown'}{note}{': ' + message if message else ''}"


def versions(client: Any, name: str, deadline: float, clock: Callable[[], float]) -> Iterator[dict[str, Any] | None]:
    """The resource now, then each new version until the deadline; None once it is deleted. A watch is re-opened
    from a fresh read at least every WATCH_CHUNK_SECONDS, so a connection that went silent cannot hang us."""
    obj: dict[str, Any] | None = client.get(name)
    yield obj
    while clock() < deadline:
        assert obj is not None
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        for obj in client.watch(name, rv, min(deadline - clock(), WATCH_CHUNK_SECONDS)):
            yield obj
            if obj is None:
                return
        if clock() < deadline:
            obj = client.get(name)  # gone by now: "not found", exit 1
            yield obj


def wait_for(
    client: Any, name: str, timeout: float, quiet: bool = False, clock: Callable[[], float] = time.monotonic
) -> int:
    """`kubectl divbase wait`: prints each change of phase or message, then the verdict; returns the exit code."""
    deadline = clock() + timeout
    last_line = None
    obj: dict[str, Any] | None = None
    for obj in versions(client, name, deadline, clock):
        if obj is None:
            print(f"error: divbasedatabase/{name} was deleted while waiting", file=sys.stderr)
            return EXIT_ERROR
        line = progress_line(obj)
        if not quiet and line != last_line:
            print(f"{datetime.now(UTC).strftime('%H:%M:%S')} {line}", flush=True)
            last_line = line
        verdict = wait_verdict(obj)
        if verdict is not None:
            if verdict.code == EXIT_OK:
                print(verdict.message)
            else:
                print(f"error: {verdict.message}", file=sys.stderr)
            return verdict.code
    last = progress_line(obj) if obj is not None else "-"
    print(
        f"error: timed out after {format_duration(timeout)} waiting for divbasedatabase/{name} to be Ready "
        f"(last seen: {last})",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT


def watch_status(
    client: Any, name: str, output: str | None, clock: Callable[[], float] = time.monotonic, until: float = float("inf")
) -> int:
    """`status --watch`: the status again whenever it changes (not on every write: durations are left out of the
    comparison), until interrupted."""
    last = None
    try:
        for obj in versions(client, name, until, clock):
            if obj is None:
                print(f"divbasedatabase/{name} was deleted")
                return EXIT_OK
            key = render_status(obj, output, FIXED_NOW, compact=True)
            if key == last:
                continue
            last = key
            if output is None:
                print(f"--- {datetime.now(UTC).strftime(TIME_FORMAT)}")
            print(render_status(obj, output, compact=True), flush=True)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def render_status(obj: dict[str, Any], output: str | None, now: datetime | None = None, compact: bool = False) -> str:
    if output == "json":
        return json.dumps(status_document(obj, now), indent=None if compact else 2)
    if output == "yaml":
        import yaml

        text = yaml.safe_dump(status_document(obj, now), sort_keys=False, width=120).rstrip("\n")
        return f"---\n{text}" if compact else text
    return format_status(obj, now)


# --- cluster access -----------------------------------------------------------------------------------------------
def describe_api_error(exc: Any, verb: str, name: str, namespace: str) -> str:
    """One line naming the resource and namespace, whatever the apiserver said."""
    resource = f"divbasedatabase {name!r} in namespace {namespace!r}"
    status = getattr(exc, "status", None)
    if status == 404:
        return f"{resource} not found (is the name right, and the DivBaseDatabase CRD installed?)"
    if status == 403:
        return f"forbidden: you may not {verb} {resource} (ask for RBAC on divbasedatabases.{names.GROUP})"
    if status == 409:
        return f"{resource} changed while this command ran; run it again"
    if status == 401:
        return "unauthorized: the kubeconfig credentials were rejected"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"{verb} {resource} failed: {status or ''} {reason}".replace("  ", " ")


class Client:
    """The plugin's API calls on one DivBaseDatabase, through the operator's own client (KubeApi: plain JSON
    requests on kubernetes' ApiClient, which keeps the kubeconfig's auth and TLS)."""

    def __init__(self, context: str | None, namespace: str | None, kubeconfig: str | None) -> None:
        from kubernetes import config

        from .kube import KubeApi

        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if context and chosen is None:
                raise PluginError(f"context {context!r} not found in the kubeconfig")
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot load kubeconfig: {_one_line(str(exc))}") from None
        self.namespace = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.api = KubeApi(api_client)
        self.databases = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{self.namespace}/{names.PLURAL}"

    def get(self, name: str) -> dict[str, Any]:
        return self._call("get", name, lambda: self.api.call("GET", f"{self.databases}/{name}"))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "patch",
            name,
            lambda: self.api.call(
                "PATCH", f"{self.databases}/{name}", body=body, content_type="application/merge-patch+json"
            ),
        )

    def watch(self, name: str, resource_version: str | None, timeout: float) -> Iterator[dict[str, Any] | None]:
        """New versions of the resource after `resource_version` for up to `timeout` seconds; None when it is
        deleted. Ends early when the apiserver ends the watch (or the version is too old): the caller reads
        again."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        seconds = max(1, int(timeout))
        query = {
            "fieldSelector": f"metadata.name={name}",
            "timeoutSeconds": str(seconds),
            **({"resourceVersion": resource_version} if resource_version else {}),
        }
        try:
            for event in self.api.stream(self.databases, query, timeout=seconds + 10):
                if event.get("type") == "DELETED":
                    yield None
                    return
                if event.get("type") in ("ADDED", "MODIFIED") and isinstance(event.get("object"), dict):
                    yield event["object"]
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the version is too old, the caller reads a fresh one
                raise PluginError(describe_api_error(exc, "watch", name, self.namespace)) from None
        except HTTPError:
            return  # a dropped or timed-out connection: the caller reads again and re-opens the watch

    def get_configmap(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap's data, or None when there is none by that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.api.call("GET", f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PluginError(
                    f"forbidden: you may not get configmap {name!r} in namespace {self.namespace!r}, "
                    f"which holds the SQL you are approving"
                ) from None
            raise PluginError(f"get configmap {name!r} failed: {exc.status} {exc.reason}") from None
        return {"data": dict(found.get("data") or {})}

    def _call(self, verb: str, name: str, fn: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            raise PluginError(describe_api_error(exc, verb, name, self.namespace)) from None
        except HTTPError as exc:
            raise PluginError(f"cannot reach the API server: {_one_line(str(exc))}") from None


# --- command line -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    # Global flags work before or after the subcommand (`kubectl divbase -n ns status x` and `... status x -n ns`):
    # the subparsers' copies default to SUPPRESS so they never overwrite a value given before the subcommand.
    def common(defaults: bool) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(add_help=False)
        default = None if defaults else argparse.SUPPRESS
        p.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")
        p.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
        p.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        return p

    parser = argparse.ArgumentParser(
        prog="kubectl divbase",
        parents=[common(True)],
        description="Inspect and steer DivBaseDatabase rollouts (expand -> deploy -> "
        "contract) run by divbase-operator.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", parents=[common(False)], help="where the rollout is, step by step")
    status.add_argument("name")
    status.add_argument("-o", "--output", choices=["json", "yaml"], help="print the status as JSON or YAML")
    status.add_argument("-w", "--watch", action="store_true", help="print it again whenever it changes")
    wait = sub.add_parser(
        "wait",
        parents=[common(False)],
        help="wait until Ready (exit 0); exit 3 at once when the rollout fails, 4 on timeout",
    )
    wait.add_argument("name")
    wait.add_argument(
        "--for",
        dest="condition",
        choices=["ready"],
        default="ready",
        help="what to wait for (default: ready: Ready at the current generation)",
    )
    wait.add_argument(
        "--timeout",
        type=parse_timeout,
        default=parse_timeout("10m"),
        help="how long to wait, e.g. 90s, 10m, 1h (default 10m; 0: look once)",
    )
    wait.add_argument("-q", "--quiet", action="store_true", help="print only the outcome, not each change")
    history = sub.add_parser("history", parents=[common(False)], help="recent rollouts with step durations")
    history.add_argument("name")
    approve = sub.add_parser(
        "approve-contract", parents=[common(False)], help="let a Manual contract (destructive migrations) run"
    )
    approve.add_argument("name")
    approve.add_argument("--version", help="the release to approve (default: the one waiting, status.targetVersion)")
    retry = sub.add_parser("retry", parents=[common(False)], help="retry the failed step")
    retry.add_argument("name")
    return parser


def run(argv: Sequence[str] | None = None, client: Any = None, clock: Callable[[], float] = time.monotonic) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = client or Client(args.context, args.namespace, args.kubeconfig)
        if args.command == "wait":
            return wait_for(client, args.name, args.timeout, quiet=args.quiet, clock=clock)
        if args.command == "status" and args.watch:
            return watch_status(client, args.name, args.output, clock=clock)
        obj = client.get(args.name)
        if args.command == "status":
            print(render_status(obj, args.output))
        elif args.command == "history":
            print(format_history(obj))
        elif args.command == "approve-contract":
            body, message = approval_patch(obj, args.version)
            plan = plan_to_approve(obj, args.version)
            if plan is not None:  # approving a published plan: what the reviewer reads must be that plan
                message += check_published_plan(plan, client.get_configmap(plan.get("configMap") or ""))
            client.patch(args.name, body)
            print(message)
        elif args.command == "retry":
            body, message = retry_patch(obj)
            client.patch(args.name, body)
            print(message)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
