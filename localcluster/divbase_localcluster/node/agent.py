"""The node agent: registers a Node, keeps its Lease and Ready condition fresh, and runs the pods bound to it.

Threads: the main thread waits for SIGTERM/SIGINT; `heartbeat` renews the Lease (every 10 s) and the Node status
(every 30 s); `watch` lists and watches pods with spec.nodeName=<node> and hands each pod to its own `PodWorker`
thread; `events` posts Kubernetes Events from a queue so no pod ever waits on one.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import platform
import queue
import secrets
import signal
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import build
from ..podnet import node as podnet_node
from ..podnet.layout import KUBERNETES_SERVICE_IP, Layout
from ..podnet.netns import NetworkError, Sockets
from . import podstate
from .api import STRATEGIC, Api, ApiError
from .container import Container
from .execserver import ExecRequestError, ExecServer, ExecTarget
from .host import PodHost, ProcessGroups
from .images import ImageResolver
from .logserver import LogServer
from .shimproc import kill_group
from .timefmt import now_rfc3339
from .worker import PodWorker

log = logging.getLogger(__name__)

LEASE_SECONDS = 40
LEASE_RENEW = 10.0
NODE_STATUS_EVERY = 30.0
WATCH_TIMEOUT = 60
WATCH_BACKOFF_MAX = 10.0
STOP_GRACE = 3.0  # seconds a container gets between SIGTERM and SIGKILL when the agent itself stops
DEFAULT_POD_CIDR = "127.1.0.0/16"
EVENT_REPEAT = 60.0


class IPAllocator:
    """Hands out pod IPs, round robin (a freed address is not reused at once).

    Each address in use is also flock()ed in a directory (for loopback addresses one shared by all agents on the
    machine, so two clusters' agents never hand out the same address); the lock dies with the agent.
    """

    def __init__(self, hosts: list[str], lock_dir: Path | None = None) -> None:
        self.hosts = hosts
        self.cursor = 0
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / "divbase-node-pod-ips"
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    def allocate(self) -> str:
        with self.lock:
            for _ in range(len(self.hosts)):
                ip = self.hosts[self.cursor]
                self.cursor = (self.cursor + 1) % len(self.hosts)
                if ip in self.held:
                    continue
                fd = os.open(self.lock_dir / ip, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self.held[ip] = fd
                return ip
        raise RuntimeError("no free pod IP left")

    def reserve(self, ip: str) -> bool:
        """Take `ip` again for a pod a previous agent ran (its lock died with that agent); False when another
        holder has it now (the pod keeps it anyway: its processes use it)."""
        with self.lock:
            if ip in self.held:
                return True
            fd = os.open(self.lock_dir / ip, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self.held[ip] = fd
            return True

    def release(self, ip: str) -> None:
        with self.lock:
            fd = self.held.pop(ip, None)
        if fd is not None:
            os.close(fd)


def loopback_hosts(cidr: str) -> list[str]:
    """Pod IPs without a pod network: loopback addresses, all but 127.0.0.1."""
    return [str(h) for h in ipaddress.ip_network(cidr).hosts() if str(h) != "127.0.0.1"]


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 4 * 1024 * 1024


class NodeAgent:
    """Owns the Node object, the pod watch and one PodWorker per pod bound to the node."""

    def __init__(
        self,
        api: Api,
        node_name: str,
        state_dir: Path,
        images: ImageResolver,
        pod_cidr: str = DEFAULT_POD_CIDR,
        log_tls: tuple[Path, Path, Path] | None = None,
        network: Layout | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.state_dir = state_dir
        self.images = images
        # with a pod network each pod gets a namespace and an address of the cluster's pod CIDR (podnet.node)
        self.network = network
        self.node_sockets = Sockets(network.node_netns) if network else None
        self.ips = (
            IPAllocator(network.pod_hosts(), state_dir / "pod-ips")
            if network
            else IPAllocator(loopback_hosts(pod_cidr))
        )
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self.finished: dict[str, float] = {}  # uid -> when its worker ended: later events about it are stale
        self.workers_lock = threading.Lock()
        self.processes = ProcessGroups()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        self.recent_events: dict[tuple[str, str, str, str], float] = {}  # repeats within a minute are dropped
        self.node_uid = ""
        self.ready_since = now_rfc3339()
        self.log_server: LogServer | None = None
        if log_tls is not None:  # before registering: the Node advertises its port
            cert, key, ca = log_tls
            self.log_server = LogServer(
                state_dir / "pods",
                cert,
                key,
                ca,
                self.container_running,
                self.stopping,
                exec_handler=ExecServer(self.exec_target, self.stopping).serve,
            )
        self.host = PodHost(
            api=api,
            pods_dir=state_dir / "pods",
            images=images,
            ips=self.ips,
            network=network,
            pod_api_server=self.pod_api_server,
            events=self.event,
            connect=self.connect,
            processes=self.processes,
            stopping=self.stopping,
        )

    def connect(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        """A TCP connection as the kubelet makes it for probes and httpGet hooks: from the node, so to a pod IP
        through the node namespace when there is a pod network."""
        if self.node_sockets is not None:
            return self.node_sockets.connect(address, timeout)
        return socket.create_connection(address, timeout)

    @property
    def pod_api_server(self) -> str:
        """Where pods find the apiserver: the `kubernetes` Service with a pod network, else the host's loopback."""
        return f"https://{KUBERNETES_SERVICE_IP}:443" if self.network else self.api.server

    def _worker(self, namespace: str, pod: str) -> PodWorker | None:
        with self.workers_lock:
            return next((w for w in self.workers.values() if w.key == f"{namespace}/{pod}"), None)

    def container_running(self, namespace: str, pod: str, container: str) -> bool:
        """Whether the container's process runs now (a followed log may still grow)."""
        worker = self._worker(namespace, pod)
        return worker is not None and worker.container_running(container)

    def exec_target(self, namespace: str, pod: str, container: str) -> ExecTarget:
        """Where `kubectl exec` runs, or the kubelet's refusal (pod unknown here: 404; container not running: 500)."""
        worker = self._worker(namespace, pod)
        if worker is None:
            raise ExecRequestError(404, "pod does not exist")
        target = worker.exec_target(container)
        if target is None:
            raise ExecRequestError(500, f'container not found ("{container}")')
        return target

    def worker_done(self, worker: PodWorker) -> None:
        with self.workers_lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]
            now = time.monotonic()
            self.finished[worker.uid] = now
            if len(self.finished) > 10000:  # uids never come back; forget the oldest
                self.finished = {u: t for u, t in self.finished.items() if now - t < 3600}

    # -- node and lease ---------------------------------------------------------------------------------------
    def resources(self) -> dict[str, str]:
        """Capacity (= allocatable: nothing is reserved) as a kubelet reports it: the machine's CPUs and memory, and
        the size of the filesystem the pods' directories are on as ephemeral-storage (a pod requesting some would
        otherwise never be scheduled here)."""
        fs = os.statvfs(self.state_dir)
        return {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "ephemeral-storage": f"{fs.f_blocks * fs.f_frsize // 1024}Ki",
            "pods": "110",
        }

    def node_body(self) -> dict[str, Any]:
        resources = self.resources()
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                        platform.machine(), platform.machine()
                    ),
                    "type": "local",
                },
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {},
            "status": {"capacity": resources, "allocatable": resources},
        }

    def node_status(self) -> dict[str, Any]:
        now = now_rfc3339()
        resources = self.resources()

        def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.ready_since,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure (not measured)"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure (not measured)"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure (not measured)"),
                cond("Ready", "True", "KubeletReady", "divbase node agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            # where the apiserver proxies `kubectl logs` to (0: no log endpoint, the apiserver then fails to dial)
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port if self.log_server else 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "divbase local node",
                "containerRuntimeVersion": "local://processes",
                "kubeletVersion": build.K8S_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self.node_body()["metadata"]["labels"]["kubernetes.io/arch"],
            },
        }

    def register(self) -> None:
        """Create the Node (or take over an existing one of the same name), then report it Ready."""
        try:
            node = self.api.retrying("POST", "/api/v1/nodes", self.node_body())
            log.info("registered node %s", self.node_name)
        except ApiError as e:
            if e.status != 409:
                raise
            labels = self.node_body()["metadata"]["labels"]
            node = self.api.retrying(
                "PATCH", f"/api/v1/nodes/{self.node_name}", {"metadata": {"labels": labels}}, content_type=STRATEGIC
            )
            log.info("node %s existed; updated its labels", self.node_name)
        self.node_uid = node["metadata"]["uid"]
        self.post_node_status()
        self.renew_lease()

    def post_node_status(self, ready: bool = True) -> None:
        status = self.node_status()
        if not ready:
            status["conditions"][-1] |= {
                "status": "False",
                "reason": "KubeletNotReady",
                "message": "divbase node agent stopped",
                "lastTransitionTime": now_rfc3339(),
            }
        self.api.retrying(
            "PATCH", f"/api/v1/nodes/{self.node_name}/status", {"status": status}, content_type=STRATEGIC, attempts=3
        )

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.api.request(
                "PATCH",
                path,
                {"spec": {"renewTime": renew, "holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_SECONDS}},
                content_type="application/merge-patch+json",
            )
        except ApiError as e:
            if e.status != 404:
                raise
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self.node_uid}]
            self.api.request(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node_name, "namespace": "kube-node-lease", "ownerReferences": owner},
                    "spec": {
                        "holderIdentity": self.node_name,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": renew,
                    },
                },
            )

    def heartbeat_loop(self) -> None:
        next_status = time.monotonic() + NODE_STATUS_EVERY
        while not self.stopping.wait(LEASE_RENEW):
            try:
                self.renew_lease()
                if time.monotonic() >= next_status:
                    self.post_node_status()
                    next_status = time.monotonic() + NODE_STATUS_EVERY
            except ApiError as e:
                log.warning("heartbeat failed (retrying in %.0fs): %s", LEASE_RENEW, e)
            except Exception:
                log.exception("heartbeat failed")

    # -- events -----------------------------------------------------------------------------------------------
    def event(self, pod: dict[str, Any], etype: str, reason: str, message: str, c: Container | None = None) -> None:
        """Queue a core/v1 Event about `pod` (best effort: dropped when the queue is full)."""
        meta = pod["metadata"]
        key = (meta["uid"], c.name if c else "", reason, message)
        mono = time.monotonic()
        if mono - self.recent_events.get(key, -EVENT_REPEAT) < EVENT_REPEAT:
            return  # a probe failing every second must not flood the API (the kubelet aggregates instead)
        if len(self.recent_events) > 5000:
            self.recent_events = {k: t for k, t in self.recent_events.items() if mono - t < EVENT_REPEAT}
        self.recent_events[key] = mono
        now = now_rfc3339()
        involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        if c is not None:
            involved["fieldPath"] = f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": etype,
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
        }
        with contextlib.suppress(queue.Full):
            self.events.put_nowait(body)

    def events_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                body = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.api.request("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body, timeout=5)
            except ApiError as e:
                if e.status not in (403, 404):  # a namespace being deleted refuses new events
                    log.debug("event not posted: %s", e)

    # -- pods -------------------------------------------------------------------------------------------------
    def _pods_query(self) -> dict[str, str]:
        return {"fieldSelector": f"spec.nodeName={self.node_name}"}

    def _dispatch(self, pod: dict[str, Any], adopt: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            if worker is None:
                if self.stopping.is_set() or uid in self.finished:
                    return
                worker = PodWorker(self.host, pod, adopt=adopt, on_done=self.worker_done)
                self.workers[uid] = worker
                worker.thread.start()
                return
        worker.update(pod)

    def _clean_orphans(self, listed: set[str]) -> None:
        """Pods deleted while no agent ran: kill what their state.json records as still running (pid and start
        time must match) and remove their network namespaces, so a SIGKILLed agent leaves nothing behind."""
        for d in sorted((self.state_dir / "pods").glob("*_*_*")):
            record = podstate.load(d)
            if record is None or record.uid in listed:
                continue
            killed = [c.name for c in record.live() if kill_group(c.pid, c.ticks)]
            if record.netns is not None and self.network is not None:
                try:
                    podnet_node.detach_pod(self.network, record.ip)
                except NetworkError as e:
                    log.warning("pod dir %s: removing its network namespace: %s", d.name, e)
            podstate.remove(d)
            log.info(
                "pod dir %s: pod deleted while the agent was down; killed %s, network namespace %s",
                d.name,
                ", ".join(killed) or "nothing",
                record.netns or "none",
            )

    def watch_loop(self) -> None:
        """List, then watch; on any error or expiry (410) list again, with bounded back-off."""
        first, backoff = True, 0.5
        while not self.stopping.is_set():
            try:
                rv = self._list_pods(adopt=first)
                first = False
                while not self.stopping.is_set():
                    rv = self._watch_pods(rv)
                    backoff = 0.5  # a clean server-side timeout: watch again from rv
            except ApiError as e:
                if e.status == 410:
                    log.info("pod watch expired; listing again")
                    continue
                log.warning("pod watch failed (retrying in %.1fs): %s", backoff, e)
            except Exception:
                log.exception("pod watch failed (retrying in %.1fs)", backoff)
            self.stopping.wait(backoff)
            backoff = min(WATCH_BACKOFF_MAX, backoff * 2)

    def _list_pods(self, adopt: bool) -> str:
        """List the node's pods and hand each to its worker; workers of pods not listed any more vanish. The first
        list adopts pods bound before this agent started and cleans up after those deleted meanwhile. Returns the
        list's resourceVersion."""
        listed = self.api.request("GET", "/api/v1/pods", query=self._pods_query(), timeout=30)
        seen = set()
        for pod in listed.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._dispatch(pod, adopt=adopt)
        if adopt:
            self._clean_orphans(seen)
        with self.workers_lock:
            gone = [w for uid, w in self.workers.items() if uid not in seen]
        for w in gone:
            w.vanish()
        return str(listed["metadata"]["resourceVersion"])

    def _watch_pods(self, rv: str) -> str:
        """One watch request from `rv` until the server ends it (or the agent stops); returns the last
        resourceVersion seen. An ERROR event raises (410: the caller lists again)."""
        for ev in self.api.watch(
            "/api/v1/pods", {**self._pods_query(), "resourceVersion": rv}, timeout_seconds=WATCH_TIMEOUT
        ):
            if self.stopping.is_set():
                break
            obj = ev.get("object") or {}
            if ev.get("type") == "ERROR":
                raise ApiError(int(obj.get("code") or 0), str(obj.get("message", "watch error")))
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            if ev["type"] in ("ADDED", "MODIFIED"):
                self._dispatch(obj)
            elif ev["type"] == "DELETED":
                with self.workers_lock:
                    w = self.workers.get(obj["metadata"]["uid"])
                if w is not None:
                    w.vanish()
        return rv

    # -- lifecycle --------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Register, start the loops, wait for a stop signal, then stop every pod process and exit."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        while not self.stopping.is_set():
            try:
                self.register()
                break
            except ApiError as e:
                log.warning("registering node %s failed (retrying): %s", self.node_name, e)
                self.stopping.wait(1.0)
        threads = [
            threading.Thread(target=t, name=t.__name__, daemon=True)
            for t in (self.heartbeat_loop, self.watch_loop, self.events_loop)
        ]
        for t in threads:
            t.start()
        if self.log_server is not None:
            self.log_server.serve_in_background()
            log.info("container logs served on https://127.0.0.1:%d (kubectl logs)", self.log_server.port)
        log.info("node %s ready; pods run under %s", self.node_name, self.state_dir / "pods")
        while not self.stopping.wait(1.0):
            pass
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("stopping: terminating every pod process")
        with self.workers_lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        deadline = time.monotonic() + STOP_GRACE + 2
        for w in workers:
            w.thread.join(timeout=max(0.1, deadline - time.monotonic()))
        left = self.processes.kill_all()  # a worker that did not finish in time: its processes must not outlive us
        if self.log_server is not None:
            self.log_server.close()
        with contextlib.suppress(ApiError):
            self.post_node_status(ready=False)
        log.info("stopped (%d pod workers, %d process groups killed late)", len(workers), left)
