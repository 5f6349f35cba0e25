"""Scale: many DivBaseDatabase resources at once, pods simulated by kwok.

For each size N (default 200 and 1000), in one fresh cluster per size: create N resources at release 1 (each
rollout is an expand Job, a contract Job and a Deployment), wait until all are Ready, then move all of them to
release 2 and wait again. Reports the time until all are Ready, the operator's peak RSS and CPU seconds, its API
writes per rollout (from the apiserver's own request counters), and its CPU when idle. Baselines measured in the
same run: the operator idling with no resource (memory, idle CPU), and the smaller size (scaling ratios).

    .venv/bin/python bench/scale.py [--sizes 200 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import kwok_cluster, kwok_spec, make_namespace
from divbase_localcluster.cluster import ClusterInfo
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess, wait_for
from report import write

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Writes only the operator makes (controllers write the status subresources of Jobs and Deployments instead).
OPERATOR_WRITES = {("POST", "jobs", ""), ("PATCH", "deployments", ""), ("PATCH", "divbasedatabases", ""),
                   ("PATCH", "divbasedatabases", "status")}


def process_tree_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of the operator process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return cpu, hwm / 1024


def operator_writes(info: ClusterInfo) -> float:
    raw = info.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for family in text_string_to_metric_families(raw):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("verb"), labels.get("resource"), labels.get("subresource", ""))
            if sample.name == "apiserver_request_total" and key in OPERATOR_WRITES:
                total += sample.value
    return total


def count_ready(kube: Kube) -> int:
    items = kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace,
                                                      names.PLURAL)["items"]
    ready = 0
    for item in items:
        status = item.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conds.get(names.COND_READY) == "True" and status.get("observedGeneration") == item["metadata"]["generation"]:
            ready += 1
    return ready


def run_size(size: int, idle_seconds: float) -> dict[str, Any]:
    with kwok_cluster(kwok_nodes=4) as (info, api), tempfile.TemporaryDirectory() as tmp:
        ns = "bench-scale"
        make_namespace(api, ns)
        kube = Kube(api, ns)
        operator = OperatorProcess(str(info.kubeconfig), ns, Path(tmp) / "operator.log")
        operator.start()
        try:
            time.sleep(3)
            assert operator.proc is not None
            pid = operator.proc.pid
            cpu0, rss_empty = process_tree_stats(pid)
            time.sleep(idle_seconds)
            cpu1, _ = process_tree_stats(pid)
            idle_empty = (cpu1 - cpu0) / idle_seconds
            results: dict[str, Any] = {"size": size, "rss_mib_no_resources": rss_empty,
                                       "idle_cpu_no_resources": idle_empty}
            for phase, version in (("install", "1"), ("upgrade", "2")):
                writes0, (cpu_a, _), started = operator_writes(info), process_tree_stats(pid), time.monotonic()
                for i in range(size):
                    if version == "1":
                        kube.create_db(f"db-{i:04d}", kwok_spec("1", replicas=1))
                    else:
                        kube.patch_db(f"db-{i:04d}", {"spec": {"version": "2"}})
                wait_for(lambda: count_ready(kube) == size, 1800, f"{size} resources Ready", interval=2)
                elapsed = time.monotonic() - started
                cpu_b, rss = process_tree_stats(pid)
                results[phase] = {"seconds_to_all_ready": elapsed, "operator_cpu_seconds": cpu_b - cpu_a,
                                  "api_writes_per_rollout": (operator_writes(info) - writes0) / size}
                print(f"{size} {phase}: {elapsed:.1f}s, cpu {cpu_b - cpu_a:.1f}s, rss {rss:.0f} MiB", flush=True)
            cpu0, _ = process_tree_stats(pid)
            time.sleep(idle_seconds)
            cpu1, peak = process_tree_stats(pid)
            results["idle_cpu_with_resources"] = (cpu1 - cpu0) / idle_seconds
            results["peak_rss_mib"] = peak
            return results
        finally:
            operator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    runs = [run_size(size, args.idle_seconds) for size in args.sizes]
    base = runs[0]
    lines = ["# Scale", "", "Resources created at once on kwok nodes (pods simulated), then all moved to the next "
             "release. Figures for the operator process; ratios against the first size and against the operator "
             "idling with no resource, both measured in the same run.", "",
             "| resources | install: s to all Ready | upgrade: s to all Ready | upgrade s vs first size (per "
             "resource) | peak RSS MiB | RSS vs no resources | API writes / rollout | idle CPU % | idle CPU vs no "
             "resources |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        per_resource = (run["upgrade"]["seconds_to_all_ready"] / run["size"]) / (
            base["upgrade"]["seconds_to_all_ready"] / base["size"])
        idle_ratio = run["idle_cpu_with_resources"] / max(run["idle_cpu_no_resources"], 1e-4)
        lines.append(
            f"| {run['size']} | {run['install']['seconds_to_all_ready']:.1f} | "
            f"{run['upgrade']['seconds_to_all_ready']:.1f} | {per_resource:.2f} | {run['peak_rss_mib']:.0f} | "
            f"{run['peak_rss_mib'] / run['rss_mib_no_resources']:.2f} | "
            f"{run['upgrade']['api_writes_per_rollout']:.1f} | {100 * run['idle_cpu_with_resources']:.2f} | "
            f"{idle_ratio:.2f} |")
    biggest = runs[-1]
    lines += ["", f"Target peak RSS < 150 MiB at {biggest['size']}: "
              f"{'met' if biggest['peak_rss_mib'] < 150 else 'NOT met'} ({biggest['peak_rss_mib']:.0f} MiB).", ""]
    write("scale", {"runs": runs}, "\n".join(lines))


if __name__ == "__main__":
    main()
