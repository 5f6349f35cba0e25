"""Hand-off latency: from a migration Job's completion to the operator's next action.

Two hand-offs per rollout, both measured by one watching client in this process (same clock):
- expand -> deploy: the expand Job's `Complete` condition is seen, until the Deployment carrying the new release
  is seen;
- deploy -> contract: the last pod of the old release is seen deleted, until the contract Job is seen created.
Baseline, in the same run and cluster: a controller that polls once a second (what a timer-based operator or a
`kubectl wait` loop in a pipeline does) making the same expand -> deploy hand-off. Target: p99 < 250 ms.

    .venv/bin/python -m bench.handoff [--rollouts 20]
"""

from __future__ import annotations

import argparse
import time

from divbase_operator import names
from divbase_operator.testing import Timeline
from kubernetes import client

from bench.common import job_complete, kwok_cluster, make_namespace, operator_with_ready_database
from bench.report import summary, svg_cdf, write


def operator_handoffs(api: client.ApiClient, kubeconfig: str, rollouts: int) -> tuple[list[float], list[float]]:
    ns = "bench-operator"
    with operator_with_ready_database(api, kubeconfig, ns) as kube:
        timeline = Timeline(api, ns, kinds=("Pod", "Job", "Deployment")).start()
        time.sleep(1)
        for version in range(2, rollouts + 2):
            kube.patch_db("db", {"spec": {"version": str(version)}})
            kube.wait_condition("db", names.COND_READY, timeout=120)
        timeline.stop()
    expand_to_deploy, deploy_to_contract = [], []
    for version in range(2, rollouts + 2):
        v, old = str(version), str(version - 1)

        def job(step: str, status_ok: bool, v: str = v):
            return lambda n, labels, status: (
                labels.get(names.LABEL_STEP) == step
                and labels.get(names.LABEL_VERSION) == v
                and (not status_ok or job_complete(status))
            )

        done = timeline.first("Job", "MODIFIED", job("expand", True))
        moved = timeline.first("Deployment", "MODIFIED", lambda n, labels, s, v=v: labels.get(names.LABEL_VERSION) == v)
        gone = timeline.last(
            "Pod",
            "DELETED",
            lambda n, labels, s, old=old: (
                bool(labels.get(names.LABEL_WORKLOAD)) and labels.get(names.LABEL_VERSION) == old
            ),
        )
        contract = timeline.first("Job", "ADDED", job("contract", False))
        expand_to_deploy.append(moved - done)
        deploy_to_contract.append(contract - gone)
    return expand_to_deploy, deploy_to_contract


def polling_baseline(api: client.ApiClient, rollouts: int, interval: float = 1.0) -> list[float]:
    """The same expand -> deploy hand-off made by a loop that polls the Job every `interval` seconds."""
    ns = "bench-polling"
    make_namespace(api, ns)
    batch, apps = client.BatchV1Api(api), client.AppsV1Api(api)
    from common import KWOK_PLACEMENT

    labels = {"app": "polled"}
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "polled", "labels": {**labels, names.LABEL_VERSION: "1"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {**KWOK_PLACEMENT, "containers": [{"name": "c", "image": "divbase:1"}]},
                },
            },
        },
    )
    timeline = Timeline(api, ns, kinds=("Job", "Deployment")).start()
    time.sleep(1)
    for version in range(2, rollouts + 2):
        job_name = f"expand-{version}"
        pod = {**KWOK_PLACEMENT, "restartPolicy": "Never", "containers": [{"name": "m", "image": f"divbase:{version}"}]}
        batch.create_namespaced_job(ns, {"metadata": {"name": job_name}, "spec": {"template": {"spec": pod}}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the polling controller under comparison
            job = batch.read_namespaced_job(job_name, ns)
            if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
                apps.patch_namespaced_deployment(
                    "polled",
                    ns,
                    {
                        "metadata": {"labels": {names.LABEL_VERSION: str(version)}},
                        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": f"divbase:{version}"}]}}},
                    },
                )
                break
            time.sleep(interval)
    timeline.stop()
    latencies = []
    for version in range(2, rollouts + 2):
        done = timeline.first("Job", "MODIFIED", lambda n, labels, s, v=version: n == f"expand-{v}" and job_complete(s))
        moved = timeline.first(
            "Deployment", "MODIFIED", lambda n, labels, s, v=version: labels.get(names.LABEL_VERSION) == str(v)
        )
        latencies.append(moved - done)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=20)
    args = parser.parse_args()
    with kwok_cluster() as (info, api):
        expand_deploy, deploy_contract = operator_handoffs(api, str(info.kubeconfig), args.rollouts)
        baseline = polling_baseline(api, args.rollouts)
    ms = {
        k: [round(v * 1000, 1) for v in vals]
        for k, vals in {
            "operator expand->deploy": expand_deploy,
            "operator deploy->contract": deploy_contract,
            "1 s polling expand->deploy (baseline)": baseline,
        }.items()
    }
    stats = {k: summary(v) for k, v in ms.items()}
    base = stats["1 s polling expand->deploy (baseline)"]
    lines = [
        "# Hand-off latency",
        "",
        f"{args.rollouts} rollouts on kwok nodes; milliseconds from a step's end "
        "(as seen by a watching client) to the next action.",
        "",
        "| hand-off | p50 ms | p99 ms | max ms | p50 vs baseline | p99 vs baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {s['p50']:.0f} | {s['p99']:.0f} | {s['max']:.0f} | "
            f"{s['p50'] / base['p50']:.3f} | {s['p99'] / base['p99']:.3f} |"
        )
    target = max(stats["operator expand->deploy"]["p99"], stats["operator deploy->contract"]["p99"])
    lines += [
        "",
        "kwok completes a Job within milliseconds of its creation, so the 1 s poller finds it done on "
        "its next poll: its figures sit near the interval.",
        "",
        f"Target p99 < 250 ms: {'met' if target < 250 else 'NOT met'} (worst operator p99 {target:.0f} ms).",
        "",
    ]
    write(
        "handoff",
        {"rollouts": args.rollouts, "milliseconds": ms, "stats": stats},
        "\n".join(lines),
        svg_cdf(ms, "milliseconds"),
    )


if __name__ == "__main__":
    main()
