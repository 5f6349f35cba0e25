"""The reconciler's loop against an in-memory KubeApi, no cluster: triggers coalesce, API errors back off, only the
leader writes, and no write is based on a status the operator has already replaced.

FakeKubeApi keeps objects as the apiserver does, with a resourceVersion per write, and refuses a write guarded by
an old resourceVersion (Conflict, as KubeApi raises on a 409). Its `watch` is what the informers have delivered:
it follows every write unless a test holds it back (`watch_lags`), as a slow watch would."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from divbase_operator import names, reconciler
from divbase_operator.kube import Conflict, KubeApi
from divbase_operator.leader import LostRace
from divbase_operator.planner import Decision
from divbase_operator.reconciler import Key, NotLeading, Reconciler, Snapshot, Sources
from kubernetes.client.exceptions import ApiException
from planner_world import T0, base_spec

KEY: Key = ("prod", "db")
DATABASE = "DivBaseDatabase"
WRITES = {
    "create_job",
    "apply_deployment",
    "apply_configmap",
    "delete",
    "patch_status",
    "patch_finalizers",
    "create_lease",
    "replace_lease",
}


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), as the apiserver applies application/merge-patch+json."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeKubeApi:
    """KubeApi's methods over dicts. Hooks for a test: `hold` (patch_status waits for it), `fail_next` (that many
    calls raise a 500), `before_write` (runs before each guarded write: another client's edit) and `after_write`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.watch: dict[Key, dict[str, Any]] = {}  # the DivBaseDatabase as the watch last delivered it
        self.watch_lags = False
        self.history: list[dict[str, Any]] = []  # every version of the DivBaseDatabase, oldest first
        self.version = 0
        self.calls: list[str] = []  # every call, reads included
        self.reads = 0  # how often the reconciler looked at the watched DivBaseDatabase
        self.refused: list[tuple[str, str]] = []  # (method, the stale resourceVersion it carried)
        self.hold: asyncio.Event | None = None
        self.waiting = False  # a patch_status is waiting for `hold`
        self.in_flight = self.most_in_flight = 0
        self.fail_next = 0
        self.before_write: Callable[[], None] = lambda: None
        self.after_write: Callable[[], None] = lambda: None

    @property
    def writes(self) -> list[str]:
        return [call for call in self.calls if call in WRITES]

    # -- the store -------------------------------------------------------------------------------------------------
    def store(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.version)
        self.objects[(kind, meta["namespace"], meta["name"])] = body
        if kind == DATABASE:
            self.history.append(copy.deepcopy(body))
            if not self.watch_lags:
                self.watch[(meta["namespace"], meta["name"])] = copy.deepcopy(body)
        return copy.deepcopy(body)

    def database(self, key: Key = KEY) -> dict[str, Any]:
        return self.objects[(DATABASE, *key)]

    def edit(self, patch: dict[str, Any], key: Key = KEY) -> dict[str, Any]:
        """Another client's write (kubectl, another controller): a new resourceVersion."""
        return self.store(DATABASE, merge(copy.deepcopy(self.database(key)), patch))

    async def _enter(self, method: str) -> None:
        self.calls.append(method)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a real call yields to the event loop too
        finally:
            self.in_flight -= 1
        if self.fail_next:
            self.fail_next -= 1
            raise ApiException(status=500, reason="Internal Server Error")

    # -- KubeApi -------------------------------------------------------------------------------------------------
    async def read_pod_log(self, namespace: str, name: str, container: str, tail_lines: int, limit_bytes: int) -> str:
        await self._enter("read_pod_log")
        return ""

    async def create_job(self, body: dict[str, Any]) -> bool:
        await self._enter("create_job")
        meta = body["metadata"]
        if ("Job", meta["namespace"], meta["name"]) in self.objects:
            return False
        self.store("Job", body)
        self.after_write()
        return True

    async def apply_deployment(self, body: dict[str, Any], force: bool = False) -> None:
        await self._enter("apply_deployment")
        self.store("Deployment", body)
        self.after_write()

    async def apply_configmap(self, body: dict[str, Any], force: bool = False) -> None:
        await self._enter("apply_configmap")
        self.store("ConfigMap", body)
        self.after_write()

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        await self._enter("get")
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get("Deployment", namespace, name)

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        await self._enter("delete")
        found = self.objects.get((kind, namespace, name))
        if found and (uid is None or found["metadata"].get("uid") == uid):
            del self.objects[(kind, namespace, name)]
        self.after_write()

    async def delete_deployment(self, namespace: str, name: str, uid: str | None = None) -> None:
        await self.delete("Deployment", namespace, name, uid)

    async def delete_children(
        self, namespace: str, jobs: Iterable[tuple[str, str | None]], deployments: Iterable[tuple[str, str | None]]
    ) -> None:
        for name, uid in jobs:
            await self.delete("Job", namespace, name, uid)
        for name, uid in deployments:
            await self.delete("Deployment", namespace, name, uid)

    async def _patch_database(
        self, method: str, namespace: str, name: str, resource_version: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        await self._enter(method)
        self.before_write()
        current = self.objects.get((DATABASE, namespace, name))
        if current is None or (resource_version and resource_version != current["metadata"]["resourceVersion"]):
            self.refused.append((method, resource_version))
            raise Conflict("the object has been modified")
        updated = self.store(DATABASE, merge(copy.deepcopy(current), patch))
        self.after_write()
        return updated

    async def patch_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        if self.hold is not None:
            self.waiting = True
            await self.hold.wait()
            self.waiting = False
        return await self._patch_database("patch_status", namespace, name, resource_version, {"status": status})

    async def patch_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> dict[str, Any]:
        return await self._patch_database(
            "patch_finalizers", namespace, name, resource_version, {"metadata": {"finalizers": finalizers}}
        )

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get("Lease", namespace, name)

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        await self._enter("create_lease")
        if ("Lease", namespace, name) in self.objects:
            raise LostRace("exists")
        return self.store("Lease", {"metadata": {"namespace": namespace, "name": name}, "spec": spec})

    async def replace_lease(
        self, namespace: str, name: str, resource_version: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        await self._enter("replace_lease")
        current = self.objects.get(("Lease", namespace, name))
        if current is None or current["metadata"]["resourceVersion"] != resource_version:
            raise LostRace("modified")
        return self.store("Lease", {"metadata": {"namespace": namespace, "name": name}, "spec": spec})

    # -- what the informers show ----------------------------------------------------------------------------------
    def sources(self) -> Sources:
        def databases(key: Key) -> Snapshot | None:
            self.reads += 1
            body = self.watch.get(key)
            return Snapshot.from_body(copy.deepcopy(body)) if body else None

        return Sources(
            databases=databases,
            jobs=lambda key: (),
            deployments=lambda key: (),
            pods=lambda key: (),
            keys=lambda: list(self.watch),
        )


def world(**spec: Any) -> FakeKubeApi:
    api = FakeKubeApi()
    api.store(
        DATABASE,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"namespace": KEY[0], "name": KEY[1], "uid": "u", "generation": 1},
            "spec": base_spec("1", **spec),
            "status": {},
        },
    )
    return api


class Run:
    """A Reconciler on a FakeKubeApi, recording its decisions, errors and scheduled retries."""

    def __init__(self, api: FakeKubeApi, leading: list[bool] | None = None) -> None:
        self.api = api
        self.leading = leading if leading is not None else [True]
        self.decisions: list[Decision] = []
        self.errors: list[Key] = []
        self.delays: list[float] = []
        self.reconciler = Reconciler(
            api=api,
            sources=api.sources(),
            clock=lambda: T0,  # type: ignore[arg-type]
            on_decision=lambda key, decision, seconds: self.decisions.append(decision),
            on_error=self.errors.append,
            may_act=lambda: self.leading[0],
            post_event=lambda ref, event: None,
        )
        schedule = self.reconciler._schedule

        def spy(key: Key, delay: float) -> None:
            self.delays.append(delay)
            schedule(key, delay)

        self.reconciler._schedule = spy  # type: ignore[method-assign]

    def idle(self) -> bool:
        state = self.reconciler._states.get(KEY)
        return state is None or not state.running

    def stop(self) -> None:
        for state in self.reconciler._states.values():
            for handle in (state.timer, state.probe):
                if handle is not None:
                    handle.cancel()


async def until(what: str, check: Callable[[], object], timeout: float = 5) -> None:
    """The event loop's own bounded wait (the shared wait_for blocks, and would block the reconciler with it)."""

    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None


async def settle() -> None:
    """Let every task and callback that is ready run (the negative checks below come after it)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_fake_implements_every_method_of_kube_api() -> None:
    wanted = {
        name: inspect.signature(f)
        for name, f in vars(KubeApi).items()
        if inspect.iscoroutinefunction(f) and not name.startswith("_")
    }
    assert wanted, "KubeApi's calls"
    for name, signature in wanted.items():
        assert inspect.signature(getattr(FakeKubeApi, name)).parameters.keys() == signature.parameters.keys(), name


# -- coalescing -----------------------------------------------------------------------------------------------------
async def test_triggers_during_a_reconcile_coalesce_into_one_more_pass() -> None:
    api = world()
    api.hold = asyncio.Event()
    run = Run(api)
    run.reconciler.trigger(KEY)
    await until("the first reconcile writing its status", lambda: api.waiting)
    for _ in range(5):  # watch events of its own writes and of others, while it is in flight
        run.reconciler.trigger(KEY)
    api.hold.set()
    await until("a second pass", lambda: len(run.decisions) >= 2 and run.idle())
    await settle()
    assert len(run.decisions) == 2, "five triggers in flight make one more pass, not five"
    assert api.most_in_flight == 1, "one reconcile of a resource at a time"
    assert api.calls.count("patch_status") == 1, "the second pass found its status written"
    run.stop()


async def test_a_trigger_after_the_reconcile_ended_runs_again() -> None:
    run = Run(world())
    run.reconciler.trigger(KEY)
    await until("the first decision", lambda: run.decisions and run.idle())
    run.reconciler.trigger(KEY)
    await until("a second decision", lambda: len(run.decisions) == 2 and run.idle())
    run.stop()


# -- backoff --------------------------------------------------------------------------------------------------------
async def test_api_errors_back_off_longer_each_time_then_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "ERROR_BACKOFF", (0.01, 0.02, 0.03))
    api = world()
    api.fail_next = 4
    run = Run(api)
    run.reconciler.trigger(KEY)
    await until("a decision after four failures", lambda: run.decisions and run.idle())
    assert run.errors == [KEY] * 4
    assert run.delays[:4] == [0.01, 0.02, 0.03, 0.03], "longer each time, then the longest again"
    assert api.calls[:4] == ["patch_finalizers"] * 4, "each retry is the whole reconcile again"

    api.fail_next = 1  # a success resets the backoff
    del run.delays[:]
    run.reconciler.trigger(KEY)
    await until("the next decision", lambda: len(run.decisions) == 2 and run.idle())
    assert run.delays == [0.01]
    run.stop()


async def test_a_conflict_is_no_error_and_no_backoff() -> None:
    """Another client's write between our read and ours: the write carries the resourceVersion we decided on and
    is refused; the watch brings the new version (and a trigger), no retry timer."""
    api = world()
    run = Run(api)
    await run.reconciler.reconcile_once(KEY)  # the finalizer, the expand Job, the first status
    decided_on = api.edit(
        {"spec": {"workloads": api.database()["spec"]["workloads"][:1]}, "metadata": {"generation": 2}}
    )["metadata"]["resourceVersion"]
    api.watch_lags = True  # the watch shows generation 2, not the annotation written while we reconcile

    def another_client() -> None:
        if not api.refused:
            api.edit({"metadata": {"annotations": {"team": "payments"}}})

    api.before_write = another_client
    run.reconciler.trigger(KEY)
    await until("the refused status write", lambda: api.refused and run.idle())
    assert api.refused == [("patch_status", decided_on)], "guarded by the version it decided on"
    await settle()
    assert run.errors == [] and run.delays == []
    api.watch_lags = False
    api.watch[KEY] = copy.deepcopy(api.database())  # the watch delivers the annotation, and triggers
    run.reconciler.trigger(KEY)
    await until("the status written on the new version", lambda: api.calls.count("patch_status") == 3 and run.idle())
    assert api.database()["status"]["observedGeneration"] == 2
    run.stop()


# -- the leader gate ------------------------------------------------------------------------------------------------
async def test_a_standby_neither_reconciles_nor_writes() -> None:
    api = world()
    run = Run(api, leading=[False])
    run.reconciler.trigger(KEY)
    run.reconciler.reconcile_all()
    await settle()
    assert api.calls == [] and run.decisions == [] and api.reads == 0, "not even a look at the resource"
    with pytest.raises(NotLeading):  # a reconcile under way when leadership went stops at its first write
        await run.reconciler.reconcile_once(KEY)
    assert api.calls == []


async def test_leadership_lost_mid_reconcile_stops_before_the_next_write_and_does_not_retry() -> None:
    api = world()
    run = Run(api)
    api.after_write = lambda: run.leading.__setitem__(0, False)
    run.reconciler.trigger(KEY)
    await until("the reconcile ended", lambda: api.calls and run.idle())
    await settle()
    assert api.writes == ["patch_finalizers"], "the one write made while leading"
    assert run.errors == [] and run.delays == [] and run.decisions == []


async def test_a_new_leader_reconciles_every_resource_it_knows() -> None:
    api = world()
    run = Run(api, leading=[False])
    run.reconciler.trigger(KEY)  # dropped, not queued
    await settle()
    assert api.reads == 0
    run.leading[0] = True
    run.reconciler.reconcile_all()
    await until("a decision", lambda: run.decisions and run.idle())
    assert api.database()["status"], "written by the new leader"
    run.stop()


# -- the stale-write guard ------------------------------------------------------------------------------------------
async def test_a_watch_behind_our_own_write_is_not_decided_on() -> None:
    """The watch has delivered our finalizer but not yet our status: the next reconcile decides on the status we
    wrote, so it writes nothing (the status it would rebuild from the old one is already there)."""
    api = world()
    api.watch_lags = True
    run = Run(api)
    await run.reconciler.reconcile_once(KEY)
    _, with_finalizer, written = api.history
    assert with_finalizer["metadata"]["finalizers"] == [names.FINALIZER] and not with_finalizer.get("status")
    assert written["status"] and api.calls.count("patch_status") == 1
    api.watch[KEY] = with_finalizer  # what the watch had when our status write was made
    await run.reconciler.reconcile_once(KEY)
    assert api.refused == [], "no write guarded by a version we had already replaced"
    assert api.calls.count("patch_status") == 1
    assert run.decisions[-1].status == written["status"], "decided on the status it wrote"

    api.watch[KEY] = copy.deepcopy(api.edit({"status": None}))  # caught up, then someone cleared the status
    await run.reconciler.reconcile_once(KEY)
    assert api.calls.count("patch_status") == 2 and api.refused == [], "the newer version is decided on again"
    assert api.database()["status"] == written["status"]
    run.stop()
