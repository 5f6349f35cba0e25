"""`make demo`: DivBase rolled from release 1 to 2 on the local control plane, under load through the API's
Service (kube-proxy on the pod network), by the operator with the API pods' preStop sleep and without it, then the
same change the way DivBase does it today and the way a chart with a Helm pre-upgrade hook would, and a table
comparing the four. Everything it starts, it stops."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from divbase_localcluster import build
from divbase_localcluster.cluster import ClusterInfo, LocalCluster
from divbase_migrations.testing.postgres import PostgresServer
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, install_crd
from kubernetes import client

from . import rollout

NAME = "divbase"


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", flush=True)


def _namespace(api: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def _by_release(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        "| | requests | failed | failed on pods of release | unavailable s | longest gap s | rollout s | restarts "
        "| served by release |"
    )
    lines = [head, "|---|---:|---:|---|---:|---:|---:|---:|---|"]  # figures right-aligned, as README shows them
    for label, f in rows.items():
        lines.append(
            f"| {label} | {f['requests']} | {f['failed']} | {_by_release(f['failed_by_release'])} | "
            f"{f['unavailable_s']:.2f} | {f['longest_gap_s']:.2f} | {f['rollout_s']:.1f} | {f['restarts']} | "
            f"{_by_release(f['served_by_release'])} |"
        )
    return "\n".join(lines)


def _database_secret(api: client.ApiClient, info: ClusterInfo, pg: PostgresServer, namespace: str) -> None:
    """A namespace and its Secret: a database of its own, at the address pods dial (the pod network's gateway)."""
    _namespace(api, namespace)
    url = pg.create_database(namespace.replace("-", "_")).render_as_string(hide_password=False)
    Kube(api, namespace).create_secret(rollout.SECRET, {"url": info.for_pods(url)})


def _operator_rollout(
    clock: Clock, kube: Kube, info: ClusterInfo, from_version: str, to_version: str, replicas: int, prestop_sleep: int
) -> dict[str, Any]:
    kube.create_db(NAME, rollout.database_spec(from_version, replicas, prestop_sleep))
    clock.say(
        f"DivBaseDatabase {kube.namespace}/{NAME} created at release {from_version}: expand, contract, then "
        f"workloads (API preStop sleep: {prestop_sleep or 'none'})"
    )
    kube.wait_condition(NAME, names.COND_READY, timeout=300)
    clock.say(f"release {from_version} Ready; API pods serving. Rolling to {to_version} under load:")
    figures = rollout.gated_rollout(kube, NAME, to_version, lambda line: clock.say("  " + line), info.node_netns or "")
    for step, step_info in kube.get_db(NAME)["status"]["history"][0]["steps"].items():
        job = f" (Job {step_info['job']})" if step_info.get("job") else ""
        clock.say(f"  {step}: {step_info.get('seconds')} s{job}")
    return figures


def run(
    clock: Clock,
    api: client.ApiClient,
    info: ClusterInfo,
    pg: PostgresServer,
    work: Path,
    from_version: str,
    to_version: str,
    replicas: int,
) -> dict[str, dict[str, Any]]:
    install_crd(api)
    for namespace in ("divbase", "divbase-noprestop"):
        _database_secret(api, info, pg, namespace)
    operator = OperatorProcess(
        str(info.kubeconfig), "divbase", work / "operator.log", extra_args=("-n", "divbase-noprestop")
    )
    operator.start()
    try:
        clock.say("operator started (log: %s)" % (work / "operator.log"))
        gated = _operator_rollout(
            clock, Kube(api, "divbase"), info, from_version, to_version, replicas, rollout.PRESTOP_SLEEP
        )
        clock.say("the same with API pods that have no preStop sleep (what it is there for):")
        bare = _operator_rollout(clock, Kube(api, "divbase-noprestop"), info, from_version, to_version, replicas, 0)
    finally:
        operator.stop()

    def say(line: str) -> None:
        clock.say("  " + line)

    clock.say(f"now today's way (scale to 0, migrate to head, scale up), release {from_version} -> {to_version}:")
    _database_secret(api, info, pg, "divbase-legacy")
    rollout.deploy_legacy(api, "divbase-legacy", from_version, replicas)
    baseline = rollout.stop_the_world(api, "divbase-legacy", to_version, say, info.node_netns or "", replicas)

    clock.say(
        f"and a chart's Helm pre-upgrade hook (migrate to head, then a rolling update), release {from_version} "
        f"-> {to_version}:"
    )
    _database_secret(api, info, pg, "divbase-hook")
    rollout.deploy_legacy(api, "divbase-hook", from_version, replicas, name=rollout.HOOK)
    hook = rollout.helm_hook(api, "divbase-hook", to_version, say, info.node_netns or "", replicas)
    return {
        "operator (expand, deploy, contract)": gated,
        "operator, API pods without preStop sleep": bare,
        "stop the world (today)": baseline,
        "Helm pre-upgrade hook (migrate, then rolling update)": hook,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="divbase-demo", description=__doc__)
    parser.add_argument("--from-version", default="1")
    parser.add_argument("--to-version", default="2")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the cluster and PostgreSQL running")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    clock = Clock()
    clock.say("building or reusing the local control plane (the first build takes ~10 minutes)")
    build.build(verbose=False)
    work = Path(tempfile.mkdtemp(prefix="divbase-demo-"))
    cluster = LocalCluster(work / "cluster")
    pg = PostgresServer().start()
    clock.say(f"PostgreSQL on 127.0.0.1:{pg.port}")
    try:
        info = cluster.up(node=True, pod_network=True)  # the load goes through a Service: kube-proxy
        clock.say(
            f"control plane up with node {info.node_name}, pod network in {info.node_netns} "
            f"(KUBECONFIG={info.kubeconfig})"
        )
        api = info.api_client()
        results = run(clock, api, info, pg, work, args.from_version, args.to_version, args.replicas)
    except BaseException as exc:
        clock.say(f"demo failed: {exc!r}")
        clock.say(f"kept for a look: {work} (operator.log, the cluster's logs under cluster/logs) and {pg.log_file}")
        if not args.keep:
            cluster.down(remove_state=False)
            pg.stop(remove=False)
        raise SystemExit(1) from None
    if not args.keep:
        cluster.down()
        pg.stop()
    print()
    print(table(results))
    gated, bare, baseline, hook = results.values()
    print(
        f"\nFailed requests: {gated['failed']} with the operator ({bare['failed']} if the API pods have no preStop "
        f"sleep), {baseline['failed']} stopping the world "
        f"({baseline['unavailable_s']:.1f} s without service), {hook['failed']} with a Helm pre-upgrade hook "
        f"({hook['failed_by_release'].get(args.from_version, 0)} on release {args.from_version} pods, whose schema "
        f"the hook contracted under them)."
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if gated["failed"]:
        clock.say(f"requests failed under the operator; kept for a look: {work}")
        return 1
    if args.keep:
        clock.say(f"left running (--keep): {work}, PostgreSQL on 127.0.0.1:{pg.port}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # nothing left behind
    return 0


if __name__ == "__main__":
    sys.exit(main())
