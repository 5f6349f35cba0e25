"""Start and stop one local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
optionally the divbase node agent and kwok.

Everything binds 127.0.0.1 on ports chosen free at `up` time (or no port at all: controller-manager and scheduler
run with --secure-port=0), so several clusters can run side by side, each in its own state directory holding its
PKI, kubeconfigs, etcd data, logs (`logs/<component>.log`) and `pids.json`. `down` stops exactly the processes
recorded there (SIGTERM, SIGKILL after a bound) and removes the directory. `restart_component` stops one component
and starts it again with the same command line (fault injection: an apiserver restart, a node agent restart).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from divbase_testsupport import free_port

from . import build
from .certs import APISERVER_KUBELET_CLIENT_CN, CertPair, LocalPKI
from .node.api import Api, ApiError
from .podnet import kubeproxy, netns
from .podnet import node as podnet_node
from .podnet.layout import KUBERNETES_SERVICE_IP, SERVICE_CIDR, Layout

DEFAULT_NODE_NAME = "divbase-node-0"
MARKER = ".divbase-localcluster"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Client-side rate limit of controller-manager and scheduler (defaults 20/30 and 50/100 requests/s): at the
# defaults the Job controller alone throttled a 50-resource scale bench to 31 s (20 s with these). kwok has none.
CLIENT_RATE = ("--kube-api-qps=200", "--kube-api-burst=400")
STOP_ORDER = (
    "node-agent",
    "kube-proxy",
    "pod-network",
    "kwok",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


class ClusterError(RuntimeError):
    """The cluster did not come up (the message names the component and the tail of its log)."""


STATE_DIR_ENV = "DIVBASE_CLUSTER_STATE_DIR"


def default_state_dir() -> Path:
    """$DIVBASE_CLUSTER_STATE_DIR, else one cluster under the cache: a second cluster (a test of the docs' own
    commands beside a developer's) needs only the variable, not a flag on every command."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else build.cache_root() / "clusters" / "default"


def image_map_default() -> Path:
    """images.yaml ships next to this module (written by the node agent's author)."""
    return Path(__file__).resolve().parent / "images.yaml"


@dataclass
class ClusterInfo:
    """What a client (CLI user or pytest fixture) needs to talk to a running cluster."""

    state_dir: Path
    kubeconfig: Path
    server: str
    ca_file: Path
    log_dir: Path
    ports: dict[str, int]
    node_name: str | None = None  # set when the node agent runs (and its Node is Ready)
    node_kubeconfig: Path | None = None  # identity system:node:<DEFAULT_NODE_NAME>, written even with --no-node
    kwok_nodes: list[str] = field(default_factory=list)
    seconds_to_ready: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # seconds since start when each wait ended
    k8s_version: str = build.K8S_VERSION
    bin_dir: Path | None = None
    # pod network (docs/localcluster.md, "Pod network"): pods have their own network namespaces; the host's
    # loopback ports are at host_address for them (127.0.0.1 itself without a pod network)
    pod_network: bool = False
    host_address: str = "127.0.0.1"
    node_netns: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterInfo:
        paths = {"state_dir", "kubeconfig", "ca_file", "log_dir", "node_kubeconfig", "bin_dir"}
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()})

    def for_pods(self, url: str) -> str:
        """`url` of a server on this machine's loopback as pods dial it (the pod network's gateway)."""
        parts = urllib.parse.urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost") or self.host_address == "127.0.0.1":
            return url
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + self.host_address + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` authenticated as cluster admin (system:masters)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl as admin (handy in tests and for debugging)."""
        bin_dir = self.bin_dir or build.binaries().bin_dir
        return subprocess.run(
            [str(bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )


def write_kubeconfig(path: Path, server: str, ca: Path, client: CertPair, user: str) -> Path:
    """Kubeconfig with embedded credentials, so it stays valid wherever it is copied; written mode 0600."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "divbase-local", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)}}
        ],
        "contexts": [{"name": "divbase-local", "context": {"cluster": "divbase-local", "user": user}}],
        "current-context": "divbase-local",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


def _pid_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and is ours: its command line mentions our state dir (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    on_fail: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    extra = on_fail() if on_fail else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def _http_ok(url: str) -> bool:
    """Plain-HTTP probe of a 127.0.0.1 endpoint (etcd's /health)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _healthz_in(sockets: netns.Sockets, port: int) -> bool:
    """GET /healthz on 127.0.0.1:`port` inside a network namespace: 200 or not."""
    try:
        with sockets.connect(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def _clean_env() -> dict[str, str]:
    """Environment for components: no proxies (everything is 127.0.0.1) and no inherited KUBECONFIG."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.pop("KUBECONFIG", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


class LocalCluster:
    """One cluster rooted at `state_dir`; `up()` starts it, `down()` stops it and removes the directory.

    Usable from pytest: ``info = LocalCluster(tmp).up(node=False); ...; LocalCluster(tmp).down()``.
    """

    def __init__(self, state_dir: Path | str | None = None, node_name: str = DEFAULT_NODE_NAME) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        self.node_name = node_name
        self.log_dir = self.state_dir / "logs"
        self.pki_dir = self.state_dir / "pki"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, list[str]] = {}  # each component's command line, for restart_component

    # -- state files -------------------------------------------------------------------------------------------
    @property
    def pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    @property
    def info_file(self) -> Path:
        return self.state_dir / "cluster.json"

    def _read_pids(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.pids_file.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def _write_pids(self) -> None:
        pids = self._read_pids()
        pids.update({name: p.pid for name, p in self._procs.items()})
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids, indent=2) + "\n")
        tmp.replace(self.pids_file)

    def info(self) -> ClusterInfo:
        """The info written by the last successful `up` (raises if the cluster never came up)."""
        try:
            return ClusterInfo.from_json(json.loads(self.info_file.read_text()))
        except OSError as e:
            raise ClusterError(f"no cluster at {self.state_dir} (run `divbase-localcluster up`)") from e

    def log_files(self) -> dict[str, Path]:
        """Log file per component, for attaching to failing test reports."""
        if not self.log_dir.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.log_dir.glob("*.log"))}

    # -- process handling --------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=_clean_env(),
                start_new_session=True,  # own process group: down() signals the component and its children
            )
        finally:
            log.close()
        self._procs[name] = proc
        self._argv[name] = list(argv)
        self._write_pids()
        return proc

    def _log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"\n--- tail of {self.log_dir / (name + '.log')} ---\n" + "\n".join(text[-lines:])

    def _check_running(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{name} exited with code {proc.returncode}{self._log_tail(name)}")

    def alive(self) -> dict[str, bool]:
        marker = str(self.state_dir)
        return {name: _pid_alive(pid, marker) for name, pid in self._read_pids().items()}

    # -- HTTP against the apiserver: the node agent's client, as cluster admin ------------------------------------
    def _api(self, server: str) -> Api:
        return Api.with_certificate(
            server, self.pki_dir / "ca.crt", self.pki_dir / "admin.crt", self.pki_dir / "admin.key"
        )

    def _get(self, server: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """(status, body); (0, b"") when the apiserver cannot be reached."""
        try:
            return 200, json.dumps(self._api(server).request("GET", path, timeout=timeout)).encode()
        except ApiError as e:
            return e.status, json.dumps(e.body).encode() if e.status else b""

    def _post(self, server: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """(201, body) once created, else the apiserver's (status, body); one that cannot be reached raises
        ApiError."""
        try:
            return 201, json.dumps(self._api(server).request("POST", path, body, timeout=10)).encode()
        except ApiError as e:
            if not e.status:
                raise
            return e.status, json.dumps(e.body).encode()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def up(
        self,
        node: bool = True,
        kwok_nodes: int = 0,
        timeout: float = 120.0,
        image_map: Path | None = None,
        binaries: build.Binaries | None = None,
        pod_network: bool | None = None,
    ) -> ClusterInfo:
        """Start the control plane (and node agent / kwok) and wait until it serves; returns how to reach it.

        Refuses to start over a running cluster in the same state dir; a stale one (processes gone) is cleared.
        `pod_network`: True needs it (ClusterError naming what is missing), None (the default) uses it when this
        machine can, False never.
        """
        if any(self.alive().values()):
            raise ClusterError(f"a cluster is already running in {self.state_dir}; run `down` first")
        if (self.state_dir / MARKER).exists():
            self.down()  # stale cluster from a crashed run
        elif self.state_dir.is_dir() and any(self.state_dir.iterdir()):
            raise ClusterError(f"{self.state_dir} is not empty and not a local cluster directory")
        bins = binaries or build.build()
        network = self._pod_network_wanted(pod_network, node)
        node_agent_argv: list[str] | None = None
        if node:
            node_agent_argv = self._node_agent_argv(image_map)  # validated before anything starts
            if network:
                node_agent_argv += ["--pod-network-id", self.layout.cluster_id]
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / MARKER).write_text("state directory of a divbase local cluster; `down` deletes it\n")
        self.log_dir.mkdir(exist_ok=True)
        for attempt in range(3):
            try:
                info = self._start(bins, node_agent_argv, kwok_nodes, timeout, started, network)
                break
            except ClusterError as e:
                self._stop_all()
                # a port picked free was taken by someone else before our component bound it: pick new ports
                if "address already in use" not in str(e) or attempt == 2:
                    raise
                self._procs.clear()
                self.pids_file.unlink(missing_ok=True)
                shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)  # its member records the old peer URL
            except BaseException:
                self._stop_all()
                raise
        self.info_file.write_text(json.dumps(info.to_json(), indent=2) + "\n")
        build.record_timing(
            "up",
            {"seconds_to_ready": info.seconds_to_ready, "node": float(node), "kwok_nodes": float(kwok_nodes)}
            | info.phase_seconds,
        )
        return info

    @property
    def layout(self) -> Layout:
        return Layout.for_state_dir(self.state_dir)

    def _pod_network_wanted(self, wanted: bool | None, node: bool) -> bool:
        """Whether this `up` makes a pod network: only with the node agent, and only where it can be made."""
        if wanted is False:
            return False
        if not node:
            if wanted:
                raise ClusterError("a pod network needs the node agent (drop --no-node)")
            return False
        missing = netns.missing_requirements()
        if missing and wanted:
            raise ClusterError("cannot make a pod network here, missing: " + "; ".join(missing))
        if missing:
            print(
                "divbase-localcluster: no pod network (pods share the host's loopback instead), missing: "
                + "; ".join(missing),
                file=sys.stderr,
            )
        return not missing

    def _node_agent_argv(self, image_map: Path | None) -> list[str]:
        if importlib.util.find_spec("divbase_localcluster.node") is None:
            raise ClusterError("the node agent package divbase_localcluster.node is not installed; use --no-node")
        image_map = Path(image_map or image_map_default())
        if not image_map.is_file():
            raise ClusterError(f"image map {image_map} not found (needed by the node agent); use --no-node")
        return [
            sys.executable,
            "-m",
            "divbase_localcluster.node",
            "--kubeconfig",
            str(self.state_dir / f"node-{self.node_name}.kubeconfig"),
            "--node-name",
            self.node_name,
            "--state-dir",
            str(self.state_dir / "node"),
            "--image-map",
            str(image_map),
        ]

    def _start(
        self,
        bins: build.Binaries,
        node_agent_argv: list[str] | None,
        kwok_nodes: int,
        timeout: float,
        started: float,
        network: bool = False,
    ) -> ClusterInfo:
        ports = {"etcd": free_port(), "etcd-peer": free_port(), "apiserver": free_port()}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        layout = self.layout
        # pods reach the apiserver as the `kubernetes` Service, whose endpoint is the node address (the gateway)
        advertise = layout.gateway if network else "127.0.0.1"
        pki = LocalPKI(self.pki_dir)
        serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP, layout.gateway),
        )
        sa = pki.service_account_keypair()
        admin = pki.issue("admin", "divbase-admin", ("system:masters",))
        kcm = pki.issue("kube-controller-manager", "system:kube-controller-manager")
        sched = pki.issue("kube-scheduler", "system:kube-scheduler")
        node_cert = pki.issue(f"node-{self.node_name}", f"system:node:{self.node_name}", ("system:nodes",))
        kubeconfig = write_kubeconfig(self.state_dir / "admin.kubeconfig", server, pki.ca.cert, admin, "admin")
        kcm_kc = write_kubeconfig(
            self.state_dir / "kube-controller-manager.kubeconfig",
            server,
            pki.ca.cert,
            kcm,
            "system:kube-controller-manager",
        )
        sched_kc = write_kubeconfig(
            self.state_dir / "kube-scheduler.kubeconfig", server, pki.ca.cert, sched, "system:kube-scheduler"
        )
        node_kc = write_kubeconfig(
            self.state_dir / f"node-{self.node_name}.kubeconfig",
            server,
            pki.ca.cert,
            node_cert,
            f"system:node:{self.node_name}",
        )
        # `kubectl logs`: the apiserver dials the node agent's log endpoint with this client certificate and checks
        # the agent's serving certificate (127.0.0.1, its InternalIP) against the cluster's CA
        kubelet_client = pki.issue("apiserver-kubelet-client", APISERVER_KUBELET_CLIENT_CN)
        node_serving = pki.issue(
            f"node-{self.node_name}-serving",
            f"system:node:{self.node_name}",
            ("system:nodes",),
            server=True,
            client=False,
            ips=("127.0.0.1",),
        )
        if node_agent_argv is not None:
            node_agent_argv = [
                *node_agent_argv,
                "--tls-cert-file",
                str(node_serving.cert),
                "--tls-private-key-file",
                str(node_serving.key),
                "--client-ca-file",
                str(pki.ca.cert),
            ]

        etcd_url, peer_url = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # throwaway data: skip fsync, much faster writes
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        _wait(  # the apiserver would start anyway, but with a burst of dial errors in its log
            "etcd /health",
            lambda: self._check_all() or _http_ok(f"{etcd_url}/health"),
            timeout=30,
            interval=0.05,
            on_fail=lambda: self._log_tail("etcd"),
        )
        self._spawn(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--advertise-address={advertise}",
                f"--secure-port={ports['apiserver']}",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",  # in addition to the default plugin set
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--enable-priority-and-fairness=false",  # fewer moving parts; nothing here competes for seats
                "--allow-privileged=true",
                "--profiling=false",
                # without a pod network nothing could reach the `kubernetes` Service, and 127.0.0.1 is not a valid
                # endpoint address; with one, the lease reconciler publishes the gateway, as on any cluster
                f"--endpoint-reconciler-type={'lease' if network else 'none'}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )
        phases = {"etcd": round(time.monotonic() - started, 2)}
        if network:
            podnet_node.remove_all(layout)  # what a crashed run left
            podnet_node.create_node(layout, ports["apiserver"])
            self._spawn(
                "pod-network",
                [
                    sys.executable,
                    "-m",
                    "divbase_localcluster.podnet",
                    "forward",
                    "--state-dir",
                    str(self.state_dir),
                    "--api-port",
                    str(ports["apiserver"]),
                ],
            )
        self._wait_ready(server, timeout, started)
        phases["apiserver"] = round(time.monotonic() - started, 2)
        self._spawn(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kcm_kc}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                # default set minus what needs a cloud or node CIDRs (no cloud provider, no pod network here)
                "--controllers=*,-node-ipam-controller,-persistentvolume-attach-detach-controller",
                "--allocate-node-cidrs=false",
                "--configure-cloud-routes=false",
                "--profiling=false",
                *CLIENT_RATE,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={sched_kc}",
                "--secure-port=0",
                "--leader-elect=false",
                "--profiling=false",
                *CLIENT_RATE,
            ],
        )
        _wait(
            "the `default` ServiceAccount (controller-manager up)",
            lambda: (
                self._check_all() or self._get(server, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
            ),
            timeout=max(5.0, timeout - (time.monotonic() - started)),
            interval=0.2,
            on_fail=lambda: self._log_tail("kube-controller-manager"),
        )
        phases["controller-manager"] = round(time.monotonic() - started, 2)
        info = ClusterInfo(
            phase_seconds=phases,
            state_dir=self.state_dir,
            kubeconfig=kubeconfig,
            server=server,
            ca_file=pki.ca.cert,
            log_dir=self.log_dir,
            node_kubeconfig=node_kc,
            ports=ports,
            bin_dir=bins.bin_dir,
            pod_network=network,
            host_address=advertise,
            node_netns=layout.node_netns if network else None,
        )

        if node_agent_argv is not None:
            (self.state_dir / "node").mkdir(exist_ok=True)
            self._spawn("node-agent", node_agent_argv)
            _wait(
                f"Node {self.node_name} Ready",
                lambda: self._check_all() or self._node_ready(server, self.node_name),
                timeout=max(30.0, timeout - (time.monotonic() - started)),
                interval=0.2,
                on_fail=lambda: self._log_tail("node-agent"),
            )
            info.node_name = self.node_name
            phases["node"] = round(time.monotonic() - started, 2)
        if network:  # after the Node exists: kube-proxy waits for it (30 s) before it serves /healthz
            self._start_kube_proxy(bins, pki, layout, ports["apiserver"], timeout, started)
            phases["kube-proxy"] = round(time.monotonic() - started, 2)
        if kwok_nodes:
            from . import kwok

            self._spawn("kwok", kwok.argv(bins, kubeconfig))
            info.kwok_nodes = kwok.create_nodes(lambda body: self._post(server, "/api/v1/nodes", body), kwok_nodes)
            _wait(
                f"{kwok_nodes} kwok nodes Ready",
                lambda: self._check_all() or all(self._node_ready(server, n) for n in info.kwok_nodes),
                timeout=60,
                interval=0.2,
                on_fail=lambda: self._log_tail("kwok"),
            )
            phases["kwok"] = round(time.monotonic() - started, 2)
        info.seconds_to_ready = round(time.monotonic() - started, 2)
        return info

    def _start_kube_proxy(
        self, bins: build.Binaries, pki: LocalPKI, layout: Layout, api_port: int, timeout: float, started: float
    ) -> None:
        """kube-proxy in the node namespace, talking to the apiserver through the forwarder (the gateway's
        address is in the serving certificate); up waits until it has synced its rules (/healthz 200)."""
        cert = pki.issue("kube-proxy", "system:kube-proxy")  # bound to system:node-proxier by default
        kc = write_kubeconfig(
            self.state_dir / "kube-proxy.kubeconfig",
            f"https://{layout.gateway}:{api_port}",
            pki.ca.cert,
            cert,
            "system:kube-proxy",
        )
        cfg = self.state_dir / "kube-proxy.yaml"
        cfg.write_text(yaml.safe_dump(kubeproxy.config(layout, kc, self.node_name), sort_keys=False))
        self._spawn("kube-proxy", kubeproxy.argv(bins["kube-proxy"], layout, cfg))
        sockets = netns.Sockets(layout.node_netns)
        try:
            _wait(
                "kube-proxy /healthz (rules synced)",
                lambda: self._check_all() or _healthz_in(sockets, kubeproxy.HEALTHZ_PORT),
                timeout=max(10.0, timeout - (time.monotonic() - started)),
                interval=0.1,
                on_fail=lambda: self._log_tail("kube-proxy") + self._log_tail("pod-network"),
            )
        finally:
            sockets.close()

    def _check_all(self) -> bool:
        """Raise if any started component died (turns a wait into an immediate, explained failure)."""
        for name in list(self._procs):
            self._check_running(name)
        return False

    def _wait_ready(self, server: str, timeout: float, started: float) -> None:
        _wait(
            "kube-apiserver /readyz",
            lambda: self._check_all() or self._get(server, "/readyz")[0] == 200,
            timeout=max(5.0, timeout - (time.monotonic() - started)),
            interval=0.1,
            on_fail=lambda: self._log_tail("kube-apiserver") + self._log_tail("etcd"),
        )

    def _node_ready(self, server: str, name: str) -> bool:
        code, body = self._get(server, f"/api/v1/nodes/{name}")
        if code != 200:
            return False
        conds = json.loads(body).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def status(self) -> dict[str, Any]:
        """Whether each recorded process is alive, whether the apiserver answers /readyz, and the cluster's network
        namespaces (also after `down`, which must have removed them)."""
        alive = self.alive()
        netns_names = [n for n in netns.names() if self.layout.owns(n)]
        result: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "processes": alive,
            "readyz": False,
            "netns": netns_names,
        }
        if self.info_file.exists():
            info = self.info()
            result["kubeconfig"] = str(info.kubeconfig)
            result["server"] = info.server
            result["readyz"] = self._get(info.server, "/readyz")[0] == 200
        result["up"] = bool(alive) and all(alive.values()) and result["readyz"]
        return result

    def _stop_all(self) -> None:
        """After a failed start: the processes, then the network namespaces they used."""
        self.stop_processes()
        podnet_node.remove_all(self.layout)

    def stop_processes(self, grace: float = 10.0) -> dict[str, str]:
        """SIGTERM each recorded process group (node agent first, etcd last), SIGKILL after `grace` seconds."""
        pids = self._read_pids()
        order = [n for n in STOP_ORDER if n in pids] + [n for n in pids if n not in STOP_ORDER]
        return {name: self._stop_one(name, pids[name], grace) for name in order}

    def _stop_one(self, name: str, pid: int, grace: float) -> str:
        """SIGTERM the process group of `pid`, SIGKILL after `grace` seconds: "stopped", "killed" or "not running"."""
        marker = str(self.state_dir)
        if not _pid_alive(pid, marker):
            return "not running"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _pid_alive(pid, marker):
            self._reap(name)
            time.sleep(0.05)
        result = "stopped"
        if _pid_alive(pid, marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            result = "killed"
        self._reap(name)
        return result

    def restart_component(
        self,
        name: str,
        grace: float = 10.0,
        timeout: float = 60.0,
        sig: signal.Signals = signal.SIGTERM,
        while_down: Callable[[], None] | None = None,
    ) -> float:
        """Stop one component (SIGTERM, SIGKILL after `grace`) and start it again with the same command line, so
        tests can inject the faults a real cluster sees (an apiserver rolled, a node agent restarted) without
        tearing down the rest. Returns the seconds from the stop signal until the component is healthy again:
        etcd `/health`, apiserver `/readyz`, node agent Node Ready; controller-manager, scheduler and kwok listen
        on nothing, so for them "healthy" means still running a second after the start. Only components this
        object started can be restarted (their command line is kept in memory, not in the state directory).
        `sig=signal.SIGKILL` kills it at once instead, without its shutdown (a crash: the node agent's pods live on);
        `while_down` runs after it exited and before it starts again (what happens meanwhile is up to the test)."""
        if name not in self._argv:
            raise ClusterError(f"{name} was not started by this LocalCluster (known: {', '.join(self._argv)})")
        info = self.info()
        started = time.monotonic()
        pid = self._read_pids().get(name)
        if pid is not None:
            if sig == signal.SIGKILL and _pid_alive(pid, str(self.state_dir)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            else:
                self._stop_one(name, pid, grace)
            _wait(
                f"{name} (pid {pid}) to exit",
                lambda: not _pid_alive(pid, str(self.state_dir)),
                timeout=10,
                interval=0.05,
            )
            self._reap(name)
        if while_down is not None:
            while_down()
        with (self.log_dir / f"{name}.log").open("ab") as log:
            log.write(f"--- divbase-localcluster: {name} restarted ---\n".encode())
        self._spawn(name, self._argv[name])
        spawned = time.monotonic()
        _wait(
            f"{name} healthy after its restart",
            lambda: self._check_all() or self._healthy(name, info, time.monotonic() - spawned),
            timeout=timeout,
            interval=0.1,
            on_fail=lambda: self._log_tail(name),
        )
        return round(time.monotonic() - started, 2)

    def _healthy(self, name: str, info: ClusterInfo, running_for: float) -> bool:
        """Whether a restarted component serves again (see restart_component)."""
        if name == "etcd":
            return _http_ok(f"http://127.0.0.1:{info.ports['etcd']}/health")
        if name == "kube-apiserver":
            return self._get(info.server, "/readyz")[0] == 200
        if name == "node-agent":
            return self._node_ready(info.server, self.node_name)
        return running_for >= 1.0

    def _reap(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)

    def down(self, remove_state: bool = True) -> dict[str, str]:
        """Stop everything this state dir recorded, remove its network namespaces, then delete the directory
        (only if it carries our marker)."""
        result = self.stop_processes() if self.pids_file.exists() else {}
        for name in list(self._procs):
            self._reap(name)
        self._procs.clear()
        for name in podnet_node.remove_all(self.layout):
            result[f"netns {name}"] = "removed"
        if remove_state and self.state_dir.is_dir():
            if not (self.state_dir / MARKER).exists():
                raise ClusterError(f"refusing to delete {self.state_dir}: it is not a divbase local cluster directory")
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return result
