"""Scale: many DivBaseDatabase resources at once, pods simulated by kwok.

For each size N (default 200 and 1000), in one fresh cluster per size: create N resources at release 1 (each
rollout is an expand Job, a contract Job and a Deployment), wait until all are Ready, then move all of them to
release 2 and wait again. Reports the time until all are Ready, the operator's peak RSS and CPU seconds, its API
writes per rollout (from the apiserver's own request counters, plus the Events it posts), and its CPU when idle.
Baselines measured in the same run: the operator idling with no resource (memory, idle CPU), and the first size
(per-resource scaling ratios). Every wait is bounded (`--phase-timeout`); a phase that does not finish is recorded
with how many resources it reached, and the size's remaining phases are skipped.

Also recorded per phase, to tell who limits throughput: CPU seconds of every control-plane component and of the
operator, and the count of client-side throttling waits in each component's log.

    .venv/bin/python -m bench.scale [--sizes 200 1000] [--phase-timeout 600]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from divbase_localcluster.cluster import ClusterInfo
from divbase_operator import names
from divbase_operator.testing import Kube, OperatorProcess
from prometheus_client.parser import text_string_to_metric_families

from bench.common import kwok_cluster, kwok_spec, make_namespace
from bench.report import svg_cdf, write

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Writes only the operator makes (controllers write the status subresources of Jobs and Deployments instead).
OPERATOR_WRITES = {
    ("POST", "jobs", ""),
    ("PATCH", "deployments", ""),
    ("PATCH", "divbasedatabases", ""),
    ("PATCH", "divbasedatabases", "status"),
}
THROTTLED = "client-side throttling"  # "Waited before sending request ... reason=client-side throttling"
PODS_PER_NODE = 110  # kwok.node_body's capacity
POLL_SECONDS = 2.0


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_stats(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, current RSS MiB, peak RSS MiB) of the operator process."""
    with open(f"/proc/{pid}/status") as f:
        fields = {line.split(":")[0]: line.split()[1] for line in f if line.startswith(("VmHWM", "VmRSS"))}
    return proc_cpu(pid), int(fields["VmRSS"]) / 1024, int(fields["VmHWM"]) / 1024


def component_cpu(info: ClusterInfo, operator_pid: int) -> dict[str, float]:
    """CPU seconds so far of each control-plane process recorded in the cluster's pids.json, and the operator's."""
    pids = json.loads((info.state_dir / "pids.json").read_text())
    return {**{name: proc_cpu(int(pid)) for name, pid in pids.items()}, "operator": proc_cpu(operator_pid)}


def throttle_counts(info: ClusterInfo) -> dict[str, int]:
    """Client-side throttling waits ("Waited for ... due to client-side throttling") logged by each component."""
    counts = {}
    for log in sorted(info.log_dir.glob("*.log")):
        with log.open(errors="replace") as f:
            counts[log.stem] = sum(THROTTLED in line for line in f)
    return counts


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


def operator_events(kube: Kube) -> int:
    """Events about DivBaseDatabases: only the operator posts them (one POST each; `count` > 1 if aggregated)."""
    events = kube.core.list_namespaced_event(kube.namespace, field_selector=f"involvedObject.kind={names.KIND}")
    return sum(e.count or 1 for e in events.items)


def operator_metric(operator: OperatorProcess, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def ready_names(kube: Kube) -> set[str]:
    items = kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, kube.namespace, names.PLURAL)["items"]
    ready = set()
    for item in items:
        status = item.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conds.get(names.COND_READY) == "True" and status.get("observedGeneration") == item["metadata"]["generation"]:
            ready.add(item["metadata"]["name"])
    return ready


def run_phase(
    info: ClusterInfo, kube: Kube, operator: OperatorProcess, size: int, version: str, timeout: float
) -> dict[str, Any]:
    """Create (version 1) or move (later versions) all `size` resources, then wait (bounded) until all are Ready."""
    pid = operator.proc.pid  # type: ignore[union-attr]
    writes0, events0 = operator_writes(info), operator_events(kube)
    reconciles0 = operator_metric(operator, "divbase_reconcile_duration_seconds_count")
    errors0 = operator_metric(operator, "divbase_reconcile_errors_total")
    cpu0, throttled0 = component_cpu(info, pid), throttle_counts(info)
    started = time.monotonic()
    for i in range(size):
        if version == "1":
            kube.create_db(f"db-{i:04d}", kwok_spec("1", replicas=1))
        else:
            kube.patch_db(f"db-{i:04d}", {"spec": {"version": version}})
    submitted = time.monotonic() - started
    ready_at: dict[str, float] = {}
    progress: list[tuple[float, int]] = []
    deadline = started + timeout
    while True:
        now = time.monotonic()
        for name in ready_names(kube) - ready_at.keys():
            ready_at[name] = now - started
        progress.append((round(now - started, 1), len(ready_at)))
        if len(ready_at) == size or now > deadline:
            break
        time.sleep(POLL_SECONDS)
    elapsed = time.monotonic() - started
    cpu1, throttled1 = component_cpu(info, pid), throttle_counts(info)
    _, rss, peak = process_stats(pid)
    done = len(ready_at) == size
    cpu = {name: round(cpu1[name] - cpu0.get(name, 0.0), 1) for name in cpu1}
    result = {
        "completed": done,
        "ready": len(ready_at),
        "seconds_to_all_ready": elapsed if done else None,
        "seconds_waited": elapsed,
        "seconds_to_submit": submitted,
        "operator_cpu_seconds": cpu["operator"],
        "operator_cores": cpu["operator"] / elapsed,
        "operator_cpu_ms_per_rollout": 1000 * cpu["operator"] / max(len(ready_at), 1),
        "rss_mib_after": rss,
        "peak_rss_mib_so_far": peak,
        "api_writes_per_rollout": (operator_writes(info) - writes0) / size,
        "events_per_rollout": (operator_events(kube) - events0) / size,
        "reconciles_per_rollout": (operator_metric(operator, "divbase_reconcile_duration_seconds_count") - reconciles0)
        / size,
        "reconcile_errors": operator_metric(operator, "divbase_reconcile_errors_total") - errors0,
        "component_cpu_seconds": cpu,
        "component_cores": {name: round(seconds / elapsed, 3) for name, seconds in cpu.items()},
        "throttled_waits": {name: n - throttled0.get(name, 0) for name, n in throttled1.items()},
        "seconds_to_ready_each": sorted(ready_at.values()),
        "progress": progress,
    }
    state = f"{elapsed:.1f}s" if done else f"NOT all Ready after {elapsed:.0f}s: {len(ready_at)}/{size}"
    print(
        f"{size} v{version}: {state}, operator cpu {cpu['operator']:.1f}s ({result['operator_cores']:.2f} "
        f"cores), peak rss {peak:.0f} MiB, {result['api_writes_per_rollout']:.1f} writes + "
        f"{result['events_per_rollout']:.1f} events / rollout, cores {result['component_cores']}, "
        f"throttled {result['throttled_waits']}",
        flush=True,
    )
    return result


def run_size(size: int, idle_seconds: float, phase_timeout: float) -> dict[str, Any]:
    # Deployment pods stay Running: with a surge of one during the upgrade up to 2 per resource, plus room.
    nodes = max(4, math.ceil(2 * size / PODS_PER_NODE) + 2)
    with kwok_cluster(kwok_nodes=nodes) as (info, api), tempfile.TemporaryDirectory() as tmp:
        ns = "bench-scale"
        make_namespace(api, ns)
        kube = Kube(api, ns)
        operator = OperatorProcess(str(info.kubeconfig), ns, Path(tmp) / "operator.log")
        operator.start()
        try:
            time.sleep(3)
            assert operator.proc is not None
            pid = operator.proc.pid
            cpu0, _, _ = process_stats(pid)
            time.sleep(idle_seconds)
            cpu1, rss_empty, _ = process_stats(pid)
            idle_empty = (cpu1 - cpu0) / idle_seconds
            results: dict[str, Any] = {
                "size": size,
                "kwok_nodes": nodes,
                "phase_timeout": phase_timeout,
                "rss_mib_no_resources": rss_empty,
                "idle_cpu_no_resources": idle_empty,
            }
            for phase, version in (("install", "1"), ("upgrade", "2")):
                results[phase] = run_phase(info, kube, operator, size, version, phase_timeout)
                if not results[phase]["completed"]:
                    break
            cpu0, _, _ = process_stats(pid)
            time.sleep(idle_seconds)
            cpu1, rss_idle, peak = process_stats(pid)
            results["idle_cpu_with_resources"] = (cpu1 - cpu0) / idle_seconds
            results["rss_mib_idle_with_resources"] = rss_idle
            results["peak_rss_mib"] = peak
            results["throttled_waits_total"] = throttle_counts(info)
            return results
        finally:
            operator.stop()


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def per_resource(run: dict[str, Any], phase: str) -> float | None:
    seconds = (run.get(phase) or {}).get("seconds_to_all_ready")
    return None if seconds is None else seconds / run["size"]


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def markdown(runs: list[dict[str, Any]]) -> str:
    base = runs[0]
    lines = [
        "# Scale",
        "",
        "Resources created at once on kwok nodes (pods simulated), then all moved to the next "
        f"release. Figures for the operator process; ratios (x) against the first size ({base['size']}: "
        "per resource) and against the operator idling with no resource, both measured in the same run.",
        "",
        "| resources | install: s to all Ready | upgrade: s to all Ready | s per resource vs "
        f"{base['size']} (install / upgrade) | peak RSS MiB | RSS vs no resources | operator CPU ms / rollout "
        f"(upgrade) | vs {base['size']} | operator cores busy (upgrade) | API writes / rollout (install / "
        "upgrade) | + Events / rollout | idle CPU % | idle CPU vs no resources |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        inst, upg = run.get("install") or {}, run.get("upgrade") or {}

        def seconds(phase: dict[str, Any], size: int = run["size"]) -> str:
            if not phase:
                return "not run"
            if phase["completed"]:
                return fmt(phase["seconds_to_all_ready"])
            return f"{phase['ready']}/{size} after {phase['seconds_waited']:.0f}"

        idle = run["idle_cpu_with_resources"]
        lines.append(
            f"| {run['size']} | {seconds(inst)} | {seconds(upg)} | "
            f"{fmt(ratio(per_resource(run, 'install'), per_resource(base, 'install')), '.2f')} / "
            f"{fmt(ratio(per_resource(run, 'upgrade'), per_resource(base, 'upgrade')), '.2f')} | "
            f"{run['peak_rss_mib']:.0f} | {run['peak_rss_mib'] / run['rss_mib_no_resources']:.2f} | "
            f"{fmt(upg.get('operator_cpu_ms_per_rollout'), '.0f')} | "
            f"{fmt(ratio(upg.get('operator_cpu_ms_per_rollout'), (base.get('upgrade') or {}).get('operator_cpu_ms_per_rollout')), '.2f')} | "  # noqa: E501
            f"{fmt(upg.get('operator_cores'), '.2f')} | {fmt(inst.get('api_writes_per_rollout'))} / "
            f"{fmt(upg.get('api_writes_per_rollout'))} | {fmt(inst.get('events_per_rollout'))} / "
            f"{fmt(upg.get('events_per_rollout'))} | {100 * idle:.2f} | "
            f"{idle / max(run['idle_cpu_no_resources'], 1e-4):.2f} |"
        )
    biggest = runs[-1]
    lines += [
        "",
        f"Target peak RSS < 150 MiB at {biggest['size']}: "
        f"{'met' if biggest['peak_rss_mib'] < 150 else 'NOT met'} ({biggest['peak_rss_mib']:.0f} MiB).",
        "",
        "Who was busy (cores, average over the phase; 2 means both cores of the machine) and client-side "
        "throttling waits logged during the phase (at default verbosity client-go logs only waits over 1 s):",
        "",
        "| resources | phase | operator | kube-apiserver | etcd | kube-controller-manager | kube-scheduler | "
        "kwok | throttling waits |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        for phase in ("install", "upgrade"):
            if phase not in run:
                continue
            cores = run[phase]["component_cores"]
            waits = ", ".join(f"{k} {v}" for k, v in run[phase]["throttled_waits"].items() if v) or "none"
            lines.append(
                f"| {run['size']} | {phase} | "
                + " | ".join(
                    fmt(cores.get(c), ".2f")
                    for c in ("operator", "kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")
                )
                + f" | {waits} |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--phase-timeout", type=float, default=600, help="bound on each wait for all Ready (s)")
    args = parser.parse_args()
    runs = [run_size(size, args.idle_seconds, args.phase_timeout) for size in args.sizes]
    series = {
        f"{run['size']} {phase}": run[phase]["seconds_to_ready_each"]
        for run in runs
        for phase in ("install", "upgrade")
        if run.get(phase, {}).get("seconds_to_ready_each")
    }
    svg = svg_cdf(series, "seconds from the first create / patch until the resource is Ready") if series else None
    tree = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    write("scale", {"runs": runs, "sizes": args.sizes, "source": tree}, markdown(runs), svg)


if __name__ == "__main__":
    main()
