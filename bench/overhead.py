"""The operator's own overhead per rollout: the rollout's wall time minus the floor Kubernetes itself needs, i.e.
the expand Job's run, the Deployment rollout and the contract Job's run.

On kwok nodes (Jobs complete and pods start within milliseconds, so the floor is mostly the controllers'), one
watching client in this process timestamps everything with one clock:
- rollout: `spec.version` patched, until the DivBaseDatabase is seen Ready at that version;
- expand and contract Job runs: the Job seen created, until it is seen Complete;
- Deployment rollout: the first Deployment seen carrying the new release, until the last pod of the old release
  is seen deleted (what the operator waits for before it contracts).
Overhead = rollout - (expand + deployment + contract): the operator's reaction at each hand-off, its status writes
and its own planning. Reported as p50/p99 over the rollouts, and as a ratio to the rollout in the same run.

    .venv/bin/python -m bench.overhead [--rollouts 12]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from divbase_operator import names
from divbase_operator.testing import Timeline
from kubernetes import client, watch

from bench.common import job_complete, kwok_cluster, operator_with_ready_database
from bench.report import summary, svg_cdf, write

NAMESPACE, DB = "bench-overhead", "db"


class ReadyWatch:
    """When the DivBaseDatabase was first seen Ready at each version (a watch, not a poll: no interval error)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.ready_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                self.custom.list_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                NAMESPACE,
                names.PLURAL,
                timeout_seconds=5,
            ):
                self._seen(event["object"], time.monotonic())
                if self._stop.is_set():
                    break

    def _seen(self, db: dict[str, Any], at: float) -> None:
        status = db.get("status") or {}
        ready = any(
            c.get("type") == names.COND_READY and c.get("status") == "True" for c in status.get("conditions") or []
        )
        current = status.get("observedGeneration") == db["metadata"]["generation"]
        if ready and current and status.get("currentVersion"):
            self.ready_at.setdefault(status["currentVersion"], at)


def measure(api: client.ApiClient, kubeconfig: str, rollouts: int) -> list[dict[str, float]]:
    with operator_with_ready_database(api, kubeconfig, NAMESPACE, DB) as kube:
        timeline = Timeline(api, NAMESPACE, kinds=("Pod", "Job", "Deployment")).start()
        ready = ReadyWatch(api).start()
        time.sleep(1)
        patched: dict[str, float] = {}
        for version in range(2, rollouts + 2):
            patched[str(version)] = time.monotonic()
            kube.patch_db(DB, {"spec": {"version": str(version)}})
            kube.wait_condition(DB, names.COND_READY, timeout=120)
            time.sleep(0.5)  # the watches have seen the end before the next rollout starts
        timeline.stop()
        ready.stop()
    return [_one(timeline, ready.ready_at[v], patched[v], v) for v in patched]


def _one(timeline: Timeline, ready_at: float, patched_at: float, v: str) -> dict[str, float]:
    old = str(int(v) - 1)

    def job(step: str, done: bool) -> Any:
        return lambda n, labels, status: (
            labels.get(names.LABEL_STEP) == step
            and labels.get(names.LABEL_VERSION) == v
            and (not done or job_complete(status))
        )

    runs = {
        step: timeline.first("Job", "MODIFIED", job(step, True)) - timeline.first("Job", "ADDED", job(step, False))
        for step in ("expand", "contract")
    }
    moved = timeline.first("Deployment", "MODIFIED", lambda n, labels, s: labels.get(names.LABEL_VERSION) == v)
    gone = timeline.last(
        "Pod",
        "DELETED",
        lambda n, labels, s: bool(labels.get(names.LABEL_WORKLOAD)) and labels.get(names.LABEL_VERSION) == old,
    )
    rollout = ready_at - patched_at
    floor = runs["expand"] + (gone - moved) + runs["contract"]
    return {
        "rollout": rollout,
        "expand_job": runs["expand"],
        "deployment": gone - moved,
        "contract_job": runs["contract"],
        "floor": floor,
        "overhead": rollout - floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=12)
    args = parser.parse_args()
    with kwok_cluster() as (info, api):
        rows = measure(api, str(info.kubeconfig), args.rollouts)
    ms = {k: [round(r[k] * 1000, 1) for r in rows] for k in rows[0]}
    stats = {k: summary(v) for k, v in ms.items()}
    share = summary([r["overhead"] / r["rollout"] for r in rows])
    lines = [
        "# Operator overhead per rollout",
        "",
        f"{args.rollouts} rollouts on kwok nodes (expand, deploy, contract each); milliseconds as seen by one "
        "watching client. Overhead = rollout - (expand Job run + Deployment rollout + contract Job run).",
        "",
        "| | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s in stats.items():
        lines.append(f"| {name.replace('_', ' ')} | {s['p50']:.0f} | {s['p99']:.0f} | {s['max']:.0f} |")
    lines += [
        "",
        f"Overhead as a share of the rollout (the baseline, same run): p50 {share['p50']:.2f}, p99 {share['p99']:.2f}.",
        "",
        "The operator acts on watch events, so its overhead is its four hand-offs (patch -> expand Job, "
        "expand done -> Deployments, old pods gone -> contract Job, contract done -> Ready) plus the status "
        "writes; bench/results/handoff.md measures two of those hand-offs alone.",
        "",
    ]
    write(
        "overhead",
        {"rollouts": args.rollouts, "milliseconds": ms, "stats": stats, "overhead_share": share},
        "\n".join(lines),
        svg_cdf({"overhead": ms["overhead"], "rollout": ms["rollout"]}, "milliseconds"),
    )


if __name__ == "__main__":
    main()
