"""`kubectl divbase`: read and steer DivBaseDatabase rollouts without remembering annotation names.

    kubectl divbase status NAME            phase, versions, steps with durations and Jobs, last failure, conditions
    kubectl divbase history NAME           recent rollouts with step durations
    kubectl divbase approve-contract NAME  lets a Manual contract run (annotation divbase.io/approve-contract)
    kubectl divbase retry NAME             retries the failed step (annotation divbase.io/retry, a new value)

Installed as the console script `kubectl-divbase`, which kubectl finds on PATH. Uses the current kubeconfig
context and its namespace unless `--context` / `-n` say otherwise. The formatting functions are pure (they take
the resource as a dict) so they are tested without a cluster; errors are one line on stderr with exit code 1."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from divbase_migrations.contract import plan_digest
from divbase_migrations.release_version import same_release

from . import names

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
STEP_ORDER = (names.STEP_EXPAND, names.STEP_DEPLOY, names.STEP_CONTRACT)


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


def step_duration(rec: dict[str, Any], now: datetime) -> float | None:
    """Finished steps: start to end. A running step: start to now, so a stuck step shows how long it is stuck."""
    start, end = parse_time(rec.get("startedAt")), parse_time(rec.get("finishedAt"))
    if start is None:
        return None
    return ((end or now) - start).total_seconds()


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(obj) if c.get("type") == kind), None)


def awaiting_approval(obj: dict[str, Any]) -> str | None:
    """The version whose contract waits for a manual approval, or None."""
    status = obj.get("status") or {}
    rollout = status.get("rollout") or {}
    contract = (rollout.get("steps") or {}).get(names.STEP_CONTRACT) or {}
    ready = _condition(obj, names.COND_READY) or {}
    manual = ready.get("reason") == names.REASON_AWAITING_APPROVAL
    if manual and (status.get("phase") == names.PHASE_AWAITING_CONTRACT or contract.get("phase") == "Waiting"):
        return rollout.get("toVersion") or status.get("targetVersion")
    return None


def is_stalled(obj: dict[str, Any]) -> bool:
    cond = _condition(obj, names.COND_STALLED)
    return bool(cond and cond.get("status") == "True")


def format_status(obj: dict[str, Any], now: datetime | None = None) -> str:
    """Everything `kubectl describe` would make you dig for: where the rollout is, how long each step took,
    which Job ran it and, after a failure, the Job's own error message."""
    now = now or datetime.now(UTC)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name, namespace = meta.get("name", "?"), meta.get("namespace", "?")
    lines = [
        f"Name:        {name}",
        f"Namespace:   {namespace}",
        f"Phase:       {status.get('phase') or 'Unknown (no status yet: is divbase-operator running?)'}",
        f"Version:     {spec.get('version', '-')} (spec)  current: {status.get('currentVersion') or '-'}  "
        f"target: {status.get('targetVersion') or '-'}",
    ]
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None:
        note = "" if observed == generation else "  (the operator has not seen the latest spec yet)"
        lines.append(f"Generation:  {generation} (observed {observed if observed is not None else '-'}){note}")
    if spec.get("paused"):
        lines.append("Paused:      yes (spec.paused): no step starts until it is false")
    if status.get("activeJob"):
        lines.append(f"Active Job:  {status['activeJob']}")
    rollout = status.get("rollout")
    if rollout:
        started = rollout.get("startedAt") or "-"
        span = step_duration(rollout, now)
        ended = f"{rollout.get('result', 'finished')} after {format_duration(span)}" if rollout.get("finishedAt") \
            else f"running for {format_duration(span)}"
        lines.append(f"Rollout:     {rollout.get('fromVersion') or '(empty database)'} -> {rollout.get('toVersion')}"
                     f"  image {rollout.get('image', '-')}")
        lines.append(f"             started {started}, {ended}")
        steps = rollout.get("steps") or {}
        rows = [("STEP", "PHASE", "DURATION", "JOB", "MESSAGE")]
        for step in STEP_ORDER:
            rec = steps.get(step)
            if rec is None:
                continue
            rows.append((step, rec.get("phase", "-"), format_duration(step_duration(rec, now)), rec.get("job") or "-",
                         _one_line(rec.get("message") or "")))
        lines.append("Steps:")
        lines.extend(table(rows))
    failure = status.get("lastFailure")
    if failure:
        details = ", ".join(part for part in (
            f"Job {failure['job']}" if failure.get("job") else "",
            f"exit code {failure['exitCode']}" if failure.get("exitCode") is not None else "",
            failure.get("reason") or "",
        ) if part)
        lines.append(f"Last failure: {failure.get('step', '?')} of release {failure.get('version', '?')}"
                     f"{f' ({details})' if details else ''} at {failure.get('time', '?')}")
        lines.append(f"  {_one_line(failure.get('message') or '')}")
    schema = status.get("schema") or {}
    if schema:
        lines.append(f"Schema:      expanded to {schema.get('expandedTo') or '-'}, contracted to "
                     f"{schema.get('contractedTo') or '-'}")
    conditions = _conditions(obj)
    if conditions:
        rows = [("TYPE", "STATUS", "REASON", "MESSAGE")]
        rows += [(c.get("type", ""), c.get("status", ""), c.get("reason", ""), _one_line(c.get("message") or ""))
                 for c in conditions]
        lines.append("Conditions:")
        lines.extend(table(rows))
    waiting = awaiting_approval(obj)
    if waiting:
        plan = (obj.get("status") or {}).get("contractPlan") or {}
        if plan.get("version") == waiting:
            count = len(plan.get("revisions") or [])
            lines.append(f"Plan:        {plan.get('digest')} ({count} revision(s)); the SQL: "
                         f"kubectl get configmap {plan.get('configMap')} -n {namespace} "
                         f"-o jsonpath='{{.data.plan\\.sql}}'")
        lines.append(f"Next:        kubectl divbase approve-contract {name} -n {namespace}   "
                     f"(the contract of release {waiting} waits for approval)")
    elif is_stalled(obj):
        lines.append(f"Next:        fix the cause, then: kubectl divbase retry {name} -n {namespace}")
    return "\n".join(lines)


def format_history(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    history = status.get("history") or []
    meta = obj.get("metadata") or {}
    if not history:
        return f"No rollouts recorded for {meta.get('namespace', '?')}/{meta.get('name', '?')} yet."
    rows = [("FROM", "TO", "RESULT", "STARTED", "DURATION", *(s.upper() for s in STEP_ORDER))]
    for entry in history:
        steps = entry.get("steps") or {}
        cells = []
        for step in STEP_ORDER:
            rec = steps.get(step) or {}
            phase = rec.get("phase") or "-"
            cells.append(phase if rec.get("seconds") is None else f"{phase} {format_duration(rec['seconds'])}")
        rows.append((entry.get("fromVersion") or "(empty)", entry.get("toVersion") or "?", entry.get("result") or "?",
                     entry.get("startedAt") or "-", format_duration(step_duration(entry, datetime.now(UTC))
                                                                    if entry.get("finishedAt") else None), *cells))
    return "\n".join(table(rows, indent=""))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def approval_patch(obj: dict[str, Any], version: str | None) -> tuple[dict[str, Any], str]:
    """The merge patch approving a contract, and what to tell the user. Refuses when nothing waits, unless an
    explicit --version pre-approves the contract of the rollout in progress (so a pipeline can approve early)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    where = f"divbasedatabase {meta.get('name')!r} in namespace {meta.get('namespace')!r}"
    waiting = awaiting_approval(obj)
    rollout = status.get("rollout") or {}
    contract = (rollout.get("steps") or {}).get(names.STEP_CONTRACT) or {}
    if waiting is None:
        pending = not rollout.get("finishedAt") and contract.get("phase") == "Pending" and not contract.get("job")
        if not (version and pending and same_release(version, rollout.get("toVersion") or "")):
            raise PluginError(f"nothing waits for contract approval on {where} (phase {status.get('phase', '-')})")
        version = rollout["toVersion"]
        message = f"pre-approved the contract of release {version} on {where}"
    else:
        if version and not same_release(version, waiting):
            raise PluginError(f"the contract waiting on {where} is for release {waiting}, not {version}")
        version = waiting
        message = f"approved the contract of release {version} on {where}"
    value = version
    plan = status.get("contractPlan") or {}
    if waiting is not None and plan.get("version") == version and plan.get("digest"):
        # approve exactly the plan published for review: if it changes before the contract starts, the operator
        # refuses this approval instead of running SQL nobody saw
        digest = str(plan["digest"]).split(":", 1)[-1][:12]
        value = f"{version}@{digest}"
        message += f" (plan {digest}, ConfigMap {plan.get('configMap')})"
    body = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                         "annotations": {names.ANNOTATION_APPROVE_CONTRACT: value}}}
    return body, message


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
    anyone who may edit ConfigMaps). Returns a note for the user ("" when the SQL was checked)."""
    name, digest = plan.get("configMap") or "?", str(plan.get("digest"))
    short = digest[: len("sha256:") + 12]
    if configmap is None:
        raise PluginError(f"ConfigMap {name} with the plan's SQL is missing: nothing was reviewed, so nothing is "
                          f"approved (the operator publishes it again; retry in a moment)")
    data = configmap.get("data") or {}
    if data.get(names.PLAN_DATA_TRUNCATED) == "true" and data.get("digest") == digest:
        return (f"; its SQL was too large to publish, so it was not checked here: render it with divbase-migrate "
                f"plan contract --release {plan.get('version')} --sql (the contract runs only SQL of digest {short})")
    sql = data.get(names.PLAN_DATA_SQL)
    actual = plan_digest(sql) if isinstance(sql, str) else "none"
    if actual != digest:
        raise PluginError(f"the SQL in ConfigMap {name} is not the plan {short} (its sha256 is "
                          f"{actual[: len('sha256:') + 12]}): it was changed after the operator published it. Not "
                          f"approved; the operator publishes the plan again, review it then")
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
    body = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                         "annotations": {names.ANNOTATION_RETRY: token}}}
    failure = (obj.get("status") or {}).get("lastFailure") or {}
    step = failure.get("step", "the failed step")
    return body, f"retry requested for {step} on {where} ({names.ANNOTATION_RETRY}={token})"


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
    """The three API calls the plugin makes, on one DivBaseDatabase."""

    def __init__(self, context: str | None, namespace: str | None, kubeconfig: str | None) -> None:
        from kubernetes import client, config

        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if context and chosen is None:
                raise PluginError(f"context {context!r} not found in the kubeconfig")
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot load kubeconfig: {_one_line(str(exc))}") from None
        self.namespace = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def get(self, name: str) -> dict[str, Any]:
        return self._call("get", name, lambda: self.custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL, name))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", name, lambda: self.custom.patch_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL, name, body))

    def get_configmap(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap's data, or None when there is none by that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PluginError(f"forbidden: you may not get configmap {name!r} in namespace {self.namespace!r}, "
                                  f"which holds the SQL you are approving") from None
            raise PluginError(f"get configmap {name!r} failed: {exc.status} {exc.reason}") from None
        return {"data": dict(found.data or {})}

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

    parser = argparse.ArgumentParser(prog="kubectl divbase", parents=[common(True)],
                                     description="Inspect and steer DivBaseDatabase rollouts (expand -> deploy -> "
                                                 "contract) run by divbase-operator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", parents=[common(False)], help="where the rollout is, step by step")
    status.add_argument("name")
    history = sub.add_parser("history", parents=[common(False)], help="recent rollouts with step durations")
    history.add_argument("name")
    approve = sub.add_parser("approve-contract", parents=[common(False)],
                             help="let a Manual contract (destructive migrations) run")
    approve.add_argument("name")
    approve.add_argument("--version", help="the release to approve (default: the one waiting, status.targetVersion)")
    retry = sub.add_parser("retry", parents=[common(False)], help="retry the failed step")
    retry.add_argument("name")
    return parser


def run(argv: Sequence[str] | None = None, client: Any = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = client or Client(args.context, args.namespace, args.kubeconfig)
        obj = client.get(args.name)
        if args.command == "status":
            print(format_status(obj))
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
        return 1
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
