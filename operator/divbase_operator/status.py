"""The typed shape of a DivBaseDatabase's `.status`: what the planner writes and the plugin, metrics and tests read.

The wire format (camelCase keys, which keys are always written and which only when set) is the contract with
existing resources, the kubectl plugin, Argo CD's Lua health check and kstatus, so each record converts to and
from exactly the dict the operator always wrote (`to_dict(from_dict(d)) == d` for what it writes). A key the
model does not know is kept in `extra` and written back: an older or newer operator's field survives a round trip.

One word per meaning: `StepState` is a step record's state (wire key `phase` inside `rollout.steps.<step>`),
`names.PHASE_*` the resource's phase (`status.phase`), `observed.JobState` a Job's state; they are never mixed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import names


class StepState(StrEnum):
    """Where one step of a rollout is (`status.rollout.steps.<step>.phase` and `status.history[].steps`)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    WAITING = "Waiting"  # a contract held by its policy: a delay, or an approval
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


DONE_STATES = (StepState.SUCCEEDED, StepState.SKIPPED)
FAILED_STATES = (StepState.FAILED, StepState.ROLLING_BACK, StepState.ROLLED_BACK)


def _wire(key: str, *, always: bool = False) -> dict[str, Any]:
    """A field's metadata: written as `key`; `always`: written even when None (the operator has always done so)."""
    return {"wire": key, "always": always}


def _out(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, list):
        return [_out(v) for v in value]
    if isinstance(value, dict):
        return {k: _out(v) for k, v in value.items()}
    return value


def _state(value: Any) -> StepState | Any:
    """A step state read back; a value this operator does not know is kept as it is (shown, never rewritten)."""
    try:
        return StepState(value)
    except ValueError:
        return value


_BOOKKEEPING = ("extra", "nulls")


class Record:
    """Wire conversion shared by the records: fields in declaration order, camelCase keys, `extra` kept."""

    extra: dict[str, Any]
    nulls: set[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in _BOOKKEEPING:
                continue
            value = getattr(self, f.name)
            if value is None and not f.metadata["always"] and f.metadata["wire"] not in self.nulls:
                continue
            out[f.metadata["wire"]] = _out(value)
        out.update(self.extra)
        return out

    @classmethod
    def _plain(cls, data: dict[str, Any], **converted: Any) -> dict[str, Any]:
        """The constructor's arguments from `data`: every declared key (those in `converted` as given), the rest
        as `extra`; a key written as null stays null (`nulls`)."""
        wires = {
            f.metadata["wire"]: f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name not in _BOOKKEEPING
        }
        kwargs: dict[str, Any] = {name: data.get(wire) for wire, name in wires.items() if wire in data}
        kwargs.update(converted)
        kwargs["extra"] = {k: v for k, v in data.items() if k not in wires}
        kwargs["nulls"] = {k for k, v in data.items() if k in wires and v is None}
        return kwargs


@dataclass
class Attempt(Record):
    """One failed pod of a running migration Job (the Job controller starts the next one)."""

    pod: str = field(default="", metadata=_wire("pod", always=True))
    exit_code: int | None = field(default=None, metadata=_wire("exitCode", always=True))
    finished_at: str | None = field(default=None, metadata=_wire("finishedAt", always=True))
    message: str = field(default="", metadata=_wire("message", always=True))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        return cls(**cls._plain(data))


@dataclass
class LockWaitRecord(Record):
    """A running migration pod waiting for another runner's migration lock: who holds it and since when."""

    pod: str | None = field(default=None, metadata=_wire("pod"))
    holder_pid: int | None = field(default=None, metadata=_wire("holderPid"))
    holder_application: str | None = field(default=None, metadata=_wire("holderApplication"))
    holder_since: str | None = field(default=None, metadata=_wire("holderSince"))
    since: str | None = field(default=None, metadata=_wire("since"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockWaitRecord:
        return cls(**cls._plain(data))


@dataclass
class StepRecord(Record):
    """One step of the rollout in progress (`status.rollout.steps.<step>`)."""

    state: StepState = field(default=StepState.PENDING, metadata=_wire("phase", always=True))
    job: str | None = field(default=None, metadata=_wire("job"))
    started_at: str | None = field(default=None, metadata=_wire("startedAt"))
    finished_at: str | None = field(default=None, metadata=_wire("finishedAt"))
    message: str | None = field(default=None, metadata=_wire("message"))
    attempts: list[Attempt] | None = field(default=None, metadata=_wire("attempts"))
    failed_attempts: int | None = field(default=None, metadata=_wire("failedAttempts"))
    lock_wait: LockWaitRecord | None = field(default=None, metadata=_wire("lockWait"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        attempts = data.get("attempts")
        lock_wait = data.get("lockWait")
        return cls(
            **cls._plain(
                data,
                state=_state(data.get("phase")),
                attempts=[Attempt.from_dict(a) for a in attempts] if isinstance(attempts, list) else None,
                lock_wait=LockWaitRecord.from_dict(lock_wait) if isinstance(lock_wait, dict) else None,
            )
        )

    def reset(self) -> None:
        """Re-armed by a retry: a Pending step with nothing of the failed attempt left."""
        fresh = StepRecord()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


@dataclass
class Rollout(Record):
    """The rollout in progress, or the last one (`status.rollout`)."""

    from_version: str | None = field(default=None, metadata=_wire("fromVersion", always=True))
    to_version: str = field(default="", metadata=_wire("toVersion", always=True))
    image: str | None = field(default=None, metadata=_wire("image", always=True))
    started_at: str | None = field(default=None, metadata=_wire("startedAt", always=True))
    retry_token: str = field(default="", metadata=_wire("retryToken", always=True))
    steps: dict[str, StepRecord] = field(default_factory=dict, metadata=_wire("steps", always=True))
    # a first rollout on a migrated database: what expand found
    found_version: str | None = field(default=None, metadata=_wire("foundVersion"))
    finished_at: str | None = field(default=None, metadata=_wire("finishedAt"))
    result: str | None = field(default=None, metadata=_wire("result"))
    current_step: str | None = field(default=None, metadata=_wire("currentStep"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        steps = data.get("steps") or {}
        return cls(
            **cls._plain(
                data,
                steps={step: StepRecord.from_dict(rec or {}) for step, rec in steps.items()},
                retry_token=data.get("retryToken", ""),
            )
        )

    def step(self, step: str) -> StepRecord:
        return self.steps[step]

    @property
    def first_install(self) -> bool:
        """No release ran before: no workloads of an older release, and the database was empty (its expand did
        not find a release it served). Then contract may run before the workloads exist, without a policy."""
        return self.from_version is None and not self.found_version

    @property
    def succeeded(self) -> bool:
        return bool(self.finished_at) and self.result == names.RESULT_SUCCEEDED


@dataclass
class Failure(Record):
    """The last failure (`status.lastFailure`): step, Job, exit code and the runner's own error."""

    step: str = field(default="", metadata=_wire("step", always=True))
    version: str = field(default="", metadata=_wire("version", always=True))
    job: str | None = field(default=None, metadata=_wire("job", always=True))
    reason: str = field(default="", metadata=_wire("reason", always=True))
    exit_code: int | None = field(default=None, metadata=_wire("exitCode", always=True))
    message: str = field(default="", metadata=_wire("message", always=True))
    time: str | None = field(default=None, metadata=_wire("time", always=True))
    attempts: int | None = field(default=None, metadata=_wire("attempts"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(**cls._plain(data))


@dataclass
class ContractPlan(Record):
    """The reviewed plan of a Manual contract (`status.contractPlan`)."""

    version: str = field(default="", metadata=_wire("version", always=True))
    job: str = field(default="", metadata=_wire("job", always=True))
    digest: str = field(default="", metadata=_wire("digest", always=True))
    revisions: list[Any] = field(default_factory=list, metadata=_wire("revisions", always=True))
    config_map: str = field(default="", metadata=_wire("configMap", always=True))
    # fingerprint of the ConfigMap data published (None: not recorded)
    published: str | None = field(default=None, metadata=_wire("published"))
    # the SQL was left out of the ConfigMap (None: not recorded)
    truncated: bool | None = field(default=None, metadata=_wire("truncated"))
    # the image the plan pod ran, by digest: the contract runs that one
    image: str | None = field(default=None, metadata=_wire("image"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContractPlan:
        return cls(**cls._plain(data))


@dataclass
class HistoryStep(Record):
    """A step of a finished rollout: its state, how long it took, and its Job."""

    state: StepState | None = field(default=None, metadata=_wire("phase", always=True))
    seconds: float | None = field(default=None, metadata=_wire("seconds", always=True))
    job: str | None = field(default=None, metadata=_wire("job"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryStep:
        return cls(**cls._plain(data, state=_state(data.get("phase")) if data.get("phase") is not None else None))


@dataclass
class HistoryEntry(Record):
    """A finished rollout (`status.history[]`, newest first)."""

    from_version: str | None = field(default=None, metadata=_wire("fromVersion", always=True))
    found_version: str | None = field(default=None, metadata=_wire("foundVersion"))
    to_version: str = field(default="", metadata=_wire("toVersion", always=True))
    result: str | None = field(default=None, metadata=_wire("result", always=True))
    started_at: str | None = field(default=None, metadata=_wire("startedAt", always=True))
    finished_at: str | None = field(default=None, metadata=_wire("finishedAt", always=True))
    steps: dict[str, HistoryStep] = field(default_factory=dict, metadata=_wire("steps", always=True))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        steps = data.get("steps") or {}
        return cls(**cls._plain(data, steps={step: HistoryStep.from_dict(rec or {}) for step, rec in steps.items()}))


@dataclass
class SchemaState(Record):
    """Releases whose expand and contract ran on the database, and the revisions the runner reported."""

    expanded_to: str | None = field(default=None, metadata=_wire("expandedTo"))
    contracted_to: str | None = field(default=None, metadata=_wire("contractedTo"))
    revisions: dict[str, Any] | None = field(default=None, metadata=_wire("revisions"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchemaState:
        return cls(**cls._plain(data))


@dataclass
class DatabaseStatus(Record):
    """The whole `.status`. Conditions stay in the metav1.Condition dict shape (conditions.py owns them); what
    is not the operator's (Kopf's bookkeeping) is carried in `extra`."""

    observed_generation: int | None = field(default=None, metadata=_wire("observedGeneration"))
    conditions: list[dict[str, Any]] | None = field(default=None, metadata=_wire("conditions"))
    target_version: str | None = field(default=None, metadata=_wire("targetVersion"))
    active_job: str | None = field(default=None, metadata=_wire("activeJob"))
    rollout: Rollout | None = field(default=None, metadata=_wire("rollout"))
    last_failure: Failure | None = field(default=None, metadata=_wire("lastFailure"))
    schema: SchemaState | None = field(default=None, metadata=_wire("schema"))
    current_version: str | None = field(default=None, metadata=_wire("currentVersion"))
    contract_plan: ContractPlan | None = field(default=None, metadata=_wire("contractPlan"))
    history: list[HistoryEntry] | None = field(default=None, metadata=_wire("history"))
    phase: str | None = field(default=None, metadata=_wire("phase"))
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DatabaseStatus:
        data = data or {}

        def record(key: str, kind: Any) -> Any:
            value = data.get(key)
            return kind.from_dict(value) if isinstance(value, dict) else value

        history = data.get("history")
        conditions = data.get("conditions")
        return cls(
            **cls._plain(
                data,
                rollout=record("rollout", Rollout),
                last_failure=record("lastFailure", Failure),
                schema=record("schema", SchemaState),
                contract_plan=record("contractPlan", ContractPlan),
                history=[HistoryEntry.from_dict(h) if isinstance(h, dict) else h for h in history]
                if isinstance(history, list)
                else history,
                conditions=[dict(c) for c in conditions] if isinstance(conditions, list) else conditions,
            )
        )
