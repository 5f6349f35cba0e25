"""`kubectl divbase wait` and the wide printer columns against the real apiserver: its watch (field selector,
resourceVersion), generations bumped by real spec patches, statuses written as the planner writes them (the
planner drives an in-memory world; no operator runs here, so the test controls each step's timing)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from divbase_operator import names
from divbase_operator.kube import status_patch
from divbase_operator.kubectl_plugin import WATCH_CHUNK_SECONDS
from divbase_operator.testing import OutputLines
from kubernetes import client
from planner_world import World, base_spec


def _plugin(kubeconfig: Path, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "divbase_operator.kubectl_plugin",
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Resource:
    """One DivBaseDatabase on the apiserver whose status follows a planner World."""

    def __init__(self, api_client: Any, namespace: str, world: World) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace, self.world = namespace, world
        self.written: dict[str, Any] = {}
        body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "db"}, "spec": world.spec}
        created = self.custom.create_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, body)
        assert created["metadata"]["generation"] == world.generation == 1

    def set_spec(self, **changes: Any) -> None:
        self.world.set_spec(**changes)
        updated = self.custom.patch_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL, "db", {"spec": changes}
        )
        assert updated["metadata"]["generation"] == self.world.generation

    def publish(self) -> None:
        """What the operator's status write would be after the world's last reconcile."""
        patch = status_patch(self.written, self.world.status)
        self.custom.patch_namespaced_custom_object_status(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL, "db", {"status": patch}
        )
        self.written = dict(self.world.status)

    def step(self, action: Any = None) -> None:
        if action is not None:
            action()
        self.world.reconcile()
        self.publish()


# The bound on a wait that the watch must end: under the plugin's re-read interval, so only the watch can deliver
# the change in time (a later poll would come too late), and far under every --timeout below but the last.
DELIVERED = WATCH_CHUNK_SECONDS / 2


def test_kubectl_divbase_wait(crd: None, cluster: Any, namespace: str, api_client: Any) -> None:
    from divbase_localcluster import build

    kubectl = str((cluster.bin_dir or build.binaries().bin_dir) / "kubectl")
    world = World(spec=base_spec("1"))
    db = Resource(api_client, namespace, world)
    for action in (
        None,
        lambda: world.finish_job("expand"),
        lambda: world.finish_job("contract"),
        world.complete_rollouts,
    ):
        db.step(action)
    assert world.status["phase"] == names.PHASE_READY

    ready = _plugin(cluster.kubeconfig, namespace, "wait", "db", "--timeout", "30s")
    out, err = ready.communicate(timeout=60)
    assert ready.returncode == 0 and "condition met: Ready (release 1)" in out, err

    # an upgrade: the old Ready is of the previous generation, so the wait waits for the new one. Its progress lines
    # are the signals: each says what it saw and that it had not ended there (a verdict is its last line)
    db.set_spec(version="2")
    waiting = _plugin(cluster.kubeconfig, namespace, "wait", "db", "--timeout", "2m")
    progress = OutputLines(waiting.stdout)
    progress.expect("Ready (not yet observed)", DELIVERED)  # the Ready of generation 1, not taken for generation 2
    db.step()
    progress.expect("Expanding", DELIVERED)  # still waiting: it saw the expand start
    wide = subprocess.run(
        [kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "get", "dbdb", "db", "-o", "wide"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    header, row = wide.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "VERSION", "CURRENT", "PHASE", "READY"], wide.stdout
    assert "STEP" in header and "ACTIVE JOB" in header and "MESSAGE" in header
    assert world.status["activeJob"] in row and " expand " in row and "expand Job" in row, wide.stdout
    narrow = subprocess.run(
        [kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "get", "dbdb"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "MESSAGE" not in narrow.stdout and "STEP" not in narrow.stdout, narrow.stdout
    db.step(lambda: world.finish_job("expand"))
    db.step(world.complete_rollouts)
    db.step(lambda: world.finish_job("contract"))
    lines = progress.ended(DELIVERED)  # the watch delivered the change (the bound is under the re-read interval)
    assert waiting.wait(DELIVERED) == 0, (lines, waiting.stderr.read() if waiting.stderr else "")
    assert lines[-1] == "divbasedatabase/db condition met: Ready (release 2)", lines  # its one verdict, last

    # a refused downgrade is Stalled: the wait fails at once with the reason, not at its timeout (--timeout 1h: had
    # it waited for that, the bound on its output's end would fail the test)
    db.set_spec(version="1")
    failing = _plugin(cluster.kubeconfig, namespace, "wait", "db", "--timeout", "1h")
    progress = OutputLines(failing.stdout)
    progress.expect("Ready (not yet observed)", DELIVERED)  # the new generation is seen, still waiting
    db.step()
    progress.ended(DELIVERED)
    assert failing.wait(DELIVERED) == 3, progress.lines
    err = failing.stderr.read() if failing.stderr else ""
    assert "failed (DowngradeRefused)" in err and "spec.version 1 is older than the running release 2" in err

    # nothing reports on a new generation: the wait gives up at its timeout with exit code 4, having seen that the
    # operator has not observed it (how long it waits is judged on a fake clock: tests/unit/test_kubectl_wait_cli.py)
    db.set_spec(version="3")
    timing_out = _plugin(cluster.kubeconfig, namespace, "wait", "db", "--timeout", "3s")
    out, err = timing_out.communicate(timeout=DELIVERED)
    assert timing_out.returncode == 4 and "timed out after 3s" in err, (out, err)
    assert "(last seen: Failed (not yet observed)" in err, err


def _read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_status_watch_prints_one_json_document_per_change(
    crd: None, cluster: Any, namespace: str, api_client: Any
) -> None:
    """`status --watch -o json`: one JSON document a line, the resource as it is first, then one per change a person
    would see; a write that changes nothing shown (an annotation, a new resourceVersion) prints nothing."""
    world = World(spec=base_spec("1"))
    db = Resource(api_client, namespace, world)
    watching = _plugin(cluster.kubeconfig, namespace, "status", "db", "--watch", "-o", "json")
    lines: queue.Queue[str] = queue.Queue()
    assert watching.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(watching.stdout, lines), daemon=True)
    reader.start()
    try:
        seen = [json.loads(lines.get(timeout=30))]
        assert seen[0]["name"] == "db" and seen[0]["phase"] is None  # no status yet
        for action in (
            None,
            lambda: world.finish_job("expand"),
            lambda: world.finish_job("contract"),
            world.complete_rollouts,
        ):
            db.step(action)
            seen.append(json.loads(lines.get(timeout=30)))
            assert seen[-1] != seen[-2]
        assert [d["phase"] for d in seen] == [
            None,
            names.PHASE_EXPANDING,
            names.PHASE_CONTRACTING,
            names.PHASE_DEPLOYING,
            names.PHASE_READY,
        ]
        db.custom.patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            "db",
            {"metadata": {"annotations": {"test/nudge": "1"}}},
        )
        db.set_spec(version="2")  # a change: the next line is this one, not a copy of the last
        after = json.loads(lines.get(timeout=30))
        assert (after["generation"], after["version"], after["ready"]) == (2, "2", False), after
    finally:
        watching.terminate()
        watching.wait(timeout=30)
        reader.join(timeout=30)
    assert lines.empty(), [lines.get() for _ in range(lines.qsize())]
