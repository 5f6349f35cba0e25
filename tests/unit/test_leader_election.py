"""Leader election rules (leader.py) and the reconciler's gate, with an in-memory Lease store and a fake clock.

The store behaves like the apiserver for the one thing that matters here: a write guarded by a stale
resourceVersion is refused with a conflict. The real Lease is exercised by tests/cluster/test_two_replicas.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from divbase_operator import names
from divbase_operator.leader import (
    LeaderElector,
    LeaseRecord,
    LostRace,
    Timing,
    default_identity,
    lease_spec,
    may_take,
)
from divbase_operator.reconciler import NotLeading, Reconciler, Snapshot, Sources

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)


class LeaseStore:
    """One Lease, with resourceVersion checks; `down` makes every call fail like an unreachable apiserver."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.writes: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")

    def _store(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.body = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}
        self.writes.append(spec["holderIdentity"])
        return self.body

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return self.body

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.body is not None:
            raise LostRace("exists")
        return self._store(spec)

    async def replace_lease(
        self, namespace: str, name: str, resource_version: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        self._check()
        if self.body is None or self.body["metadata"]["resourceVersion"] != resource_version:
            raise LostRace("conflict")
        return self._store(spec)


def elector(store: LeaseStore, clock: Clock, identity: str, **callbacks: Any) -> LeaderElector:
    return LeaderElector(
        store, "ops", names.LEASE_NAME, identity, TIMING, monotonic=clock.monotonic, wall_clock=clock.wall, **callbacks
    )


def record(holder: str, duration: float = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(
        holder=holder, lease_duration=duration, transitions=transitions, acquire_time="t0", resource_version="7"
    )


# -- pure rules --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lease", "unchanged_for", "expected"),
    [
        (None, 0, True),  # no Lease yet
        (record(""), 0, True),  # released
        (record("me"), 0, True),  # ours: renew
        (record("other"), 14.9, False),  # held, still within its duration
        (record("other"), 15, True),  # its holder stopped renewing
        (record("other", duration=60), 30, False),  # the holder's own declared duration counts, not ours
    ],
)
def test_may_take(lease: LeaseRecord | None, unchanged_for: float, expected: bool) -> None:
    assert may_take(lease, "me", unchanged_for) is expected


def test_lease_spec_keeps_acquire_time_on_renewal_and_counts_take_overs() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    first = lease_spec(None, "me", now, TIMING)
    assert first["holderIdentity"] == "me" and first["leaseTransitions"] == 0
    assert first["acquireTime"] == first["renewTime"] and first["leaseDurationSeconds"] == 15
    renewed = lease_spec(record("me", transitions=3), "me", now, TIMING)
    assert renewed["acquireTime"] == "t0" and renewed["leaseTransitions"] == 3
    taken = lease_spec(record("other", transitions=3), "me", now, TIMING)
    assert taken["acquireTime"] != "t0" and taken["leaseTransitions"] == 4


def test_timing_must_leave_a_fence_between_the_deadlines() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


# -- the elector over time ---------------------------------------------------------------------------------------
async def test_only_one_of_two_replicas_leads_and_the_other_waits_out_the_lease() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_once() and not await b.try_once()
    for _ in range(20):  # a renews every retry period; b never gets in
        clock.now += TIMING.retry_period
        assert await a.try_once() and not await b.try_once()
    assert set(store.writes) == {"a"}

    # a freezes (killed, partitioned): it stops acting at its renew deadline, b starts only after the duration
    frozen_at = clock.now
    took_over_at = None
    while took_over_at is None:
        clock.now += 0.5
        assert not (a.is_leader() and b.is_leader())
        if clock.now - frozen_at >= TIMING.renew_deadline:
            assert not a.is_leader()
        if await b.try_once():
            took_over_at = clock.now
    assert took_over_at - frozen_at >= TIMING.lease_duration
    assert LeaseRecord.from_body(store.body or {}).transitions == 1
    # a comes back: it sees b's lease and stays a standby
    assert not await a.try_once()


async def test_a_leader_that_cannot_renew_stops_acting_at_the_renew_deadline() -> None:
    store, clock = LeaseStore(), Clock()
    stopped: list[str] = []
    a = elector(store, clock, "a", on_stopped_leading=lambda: stopped.append("a"))
    assert await a.try_once()
    store.down = True
    clock.now += TIMING.renew_deadline - 0.1
    assert await a.try_once() and not stopped  # the renewal failed, but the deadline has not passed yet
    clock.now += 0.2
    assert not await a.try_once()
    assert stopped == ["a"]


async def test_a_release_hands_over_at_once_and_stops_acting_first() -> None:
    store, clock = LeaseStore(), Clock()
    started: list[str] = []
    a, b = elector(store, clock, "a"), elector(store, clock, "b", on_started_leading=lambda: started.append("b"))
    assert await a.try_once() and not await b.try_once()
    await a.release()
    assert not a.is_leader()
    assert LeaseRecord.from_body(store.body or {}).holder == ""
    assert await b.try_once() and started == ["b"]


async def test_two_replicas_taking_over_at_once_only_one_wins() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    results = await asyncio.gather(a.try_once(), b.try_once())
    assert sorted(results) == [False, True]


# -- the reconciler's gate ---------------------------------------------------------------------------------------
class RecordingApi:
    """Records every write; `on_write` lets a test change the world in the middle of a reconcile."""

    def __init__(self, on_write: Any = None) -> None:
        self.writes: list[str] = []
        self.on_write = on_write

    def __getattr__(self, name: str) -> Any:
        async def write(*args: Any, **kwargs: Any) -> Any:
            self.writes.append(name)
            if self.on_write:
                self.on_write()
            return {"metadata": {"resourceVersion": "2"}}

        return write


def snapshot(key: tuple[str, str]) -> Snapshot:
    return Snapshot.from_body(
        {
            "metadata": {"namespace": key[0], "name": key[1], "uid": "u", "resourceVersion": "1", "generation": 1},
            "spec": {"version": "1"},
            "status": {},
        }
    )


def reconciler_with(api: RecordingApi, leading: list[bool], read: list[tuple[str, str]]) -> Reconciler:
    sources = Sources(
        databases=lambda key: read.append(key) or snapshot(key),
        jobs=lambda key: (),
        deployments=lambda key: (),
        pods=lambda key: (),
        keys=lambda: [("ns", "a"), ("ns", "b")],
    )
    return Reconciler(api=api, sources=sources, may_act=lambda: leading[0])  # type: ignore[arg-type]


async def test_a_standby_ignores_triggers_and_writes_nothing() -> None:
    api, read, leading = RecordingApi(), [], [False]
    reconciler = reconciler_with(api, leading, read)
    reconciler.trigger(("ns", "a"))
    # the positive signal before the negative check: once leading, a trigger of b runs a reconcile to its end (a
    # decision, or here an error: no Kopf settings in a unit test); one of a, had the standby scheduled it, would
    # have run first (tasks start in order)
    leading[0] = True
    ended: list[tuple[str, str]] = []
    done = asyncio.Event()
    reconciler.on_decision = lambda key, decision, seconds: (ended.append(key), done.set())
    reconciler.on_error = lambda key: (ended.append(key), done.set())
    reconciler.trigger(("ns", "b"))
    await asyncio.wait_for(done.wait(), timeout=10)
    leading[0] = False  # the retry timer of b now finds a standby
    assert ended == [("ns", "b")] and ("ns", "a") not in read and ("ns", "b") in read
    writes = list(api.writes)
    with pytest.raises(NotLeading):  # a reconcile already under way when leadership went
        await reconciler.reconcile_once(("ns", "a"))
    assert api.writes == writes


async def test_leadership_lost_mid_reconcile_stops_before_the_next_write() -> None:
    leading = [True]
    api = RecordingApi(on_write=lambda: leading.__setitem__(0, False))
    reconciler = reconciler_with(api, leading, [])
    with pytest.raises(NotLeading):
        await reconciler.reconcile_once(("ns", "a"))
    assert api.writes == ["patch_finalizers"]  # the one write made while still the leader


async def test_a_new_leader_reconciles_every_known_resource() -> None:
    reconciler = reconciler_with(RecordingApi(), [True], [])
    triggered: list[tuple[str, str]] = []
    reconciler.trigger = triggered.append  # type: ignore[method-assign]
    reconciler.reconcile_all()
    assert triggered == [("ns", "a"), ("ns", "b")]


# -- the command line --------------------------------------------------------------------------------------------
def test_leader_election_needs_to_know_where_the_lease_lives(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from divbase_operator import main

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(main, "SA_NAMESPACE_FILE", tmp_path / "absent")
    with pytest.raises(SystemExit):
        main.parse_args(["--leader-election"])
    assert "--leader-election needs --leader-election-namespace" in capsys.readouterr().err
    assert main.parse_args(["--leader-election", "-n", "team-a"]).leader_election_namespace == "team-a"
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    assert main.parse_args(["--leader-election", "-n", "team-a"]).leader_election_namespace == "ops"
    assert main.parse_args([]).leader_election is False


async def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert await a.try_once()
    store.body = {"metadata": {"resourceVersion": "99"}, "spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}}
    clock.now += 1  # well within a's renew deadline
    assert not await a.try_once() and not a.is_leader()


def test_the_holder_identity_starts_with_the_pod_name() -> None:
    """NOTES.txt tells users to find the acting pod from the Lease's holder: the pod's name, not the host's (on a
    node whose pods share the host's network the hostname is the machine's), unique per process."""
    first, second = default_identity({"POD_NAME": "divbase-operator-7d9f-x2"}), default_identity({"POD_NAME": "p"})
    assert first.startswith("divbase-operator-7d9f-x2_") and second.startswith("p_")
    assert default_identity({"POD_NAME": "p"}) != second
    assert default_identity({}).rsplit("_", 1)[0]  # outside a pod: the hostname
