"""One thread per pod: run its containers as local processes and report status the way a kubelet does.

The loop is level-based: every tick (or wake-up from the pod watch) it looks at the latest pod object and at its
processes, takes the next step (start, reap, restart after back-off, probe, kill), rebuilds the whole status and
patches it only when it changed. Each container runs under its shim (node/shim.py) in its own process group, so
signals reach its children and leftovers of an exited container are killed with it (a kubelet kills the container's
whole cgroup). What a restarted agent needs to carry on is saved in `<pod dir>/state.json` (node/podstate.py).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import build
from ..podnet import netns
from ..podnet import node as podnet_node
from . import hooks, podspec, podstate, serviceaccount, servicelinks
from .api import STRATEGIC, ApiError
from .execserver import ExecTarget
from .images import Resolved
from .serviceaccount import ServiceAccountToken
from .shimproc import ShimProcess, is_alive

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between steps of a live pod (processes are polled, not waited for)
KUBE_MINOR = ".".join(build.K8S_VERSION.lstrip("v").split(".")[:2])  # User-Agents: kube-probe/1.36
CONFIG_RETRY = 3.0  # seconds between attempts to resolve a missing Secret/ConfigMap
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 1.0, 10.0, 60.0  # restart back-off (kubelet: 10 s .. 5 min)
TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
UNSUPPORTED = "divbase.io/Unsupported"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(rfc3339: str) -> float:
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _tail(path: Path, lines: int, max_bytes: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class ProbeState:
    """Consecutive results of one probe and when it runs next (kubelet semantics and defaults)."""

    spec: dict[str, Any]
    next_at: float
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)


@dataclass
class Container:
    """Runtime state of one container of the pod (spans restarts)."""

    spec: dict[str, Any]
    init: bool
    proc: ShimProcess | None = None  # its shim while it runs (pid = the shim's = the process group's)
    pid: int = 0
    waiting: tuple[str, str] = ("ContainerCreating", "")
    running_since: str = ""
    started_mono: float = 0.0
    terminated: dict[str, Any] | None = None  # final state: will not run again
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    ever_started: bool = False
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    backoff: float = 0.0
    next_start: float = 0.0
    kill_deadline: float | None = None  # SIGTERM sent: SIGKILL at this time
    kill_reason: str = ""
    stop_started: float | None = None  # being stopped (preStop, then SIGTERM) since this time
    stop_end: float = 0.0  # the end of its grace period (preStop may not run past it)
    prestop: hooks.HookRun | None = None
    poststart: hooks.HookRun | None = None  # running: the container is reported Waiting until it is done
    proc_env: dict[str, str] = field(default_factory=dict)  # the environment it was started with (for hooks)
    links: dict[str, str] = field(default_factory=dict)  # its service links as created (exec probes see these)
    probes: dict[str, ProbeState] = field(default_factory=dict)
    image_id: str = ""  # imageID of the last run
    resolved: Resolved | None = None  # what the image of the last run resolved to (exec probes run in it)
    skip: bool = False  # a sidecar (init container with restartPolicy Always): reported, never run

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated["exitCode"] == 0


class PodWorker:
    """Drives one pod from binding to deletion; `update(pod)` / `vanish()` come from the agent's watch thread."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any], adopt: bool = False) -> None:
        self.agent = agent
        self.api = agent.api
        self._pod = pod
        self._vanished = False
        self.wake = threading.Event()
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key = f"{self.ns}/{self.name}"
        self.dir = agent.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.ip = ""
        self.netns: str | None = None  # the pod's network namespace (with a pod network, once made)
        self.net_retry_at = 0.0
        self.start_time = ""
        self.terminal = False
        self.pod_reason: tuple[str, str] | None = None  # (reason, message) of the pod itself
        self.phase = "Pending"
        self.unsupported: list[str] = []
        self.volumes_ready = False
        self.volume_retry_at = 0.0
        self.sa_token: ServiceAccountToken | None = None  # None: no API access (automount false) or not yet
        self.sa_ready = False
        self.sa_retry_at = 0.0
        self.sa_attempts = 0
        self.transitions: dict[str, tuple[str, str]] = {}  # condition type -> (status, lastTransitionTime)
        self.last_sent: dict[str, Any] | None = None
        self.adopted = adopt  # found bound at agent start: resumed from state.json, else not ours to run
        self.saved = ""  # the state.json last written
        self.record = podstate.load(self.dir) if adopt else None
        if self.record is not None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            # now, on the watch thread, before any new pod of the first list or the watch can take the address
            if not agent.ips.reserve(self.record.ip):
                log.warning("pod %s: its address %s is locked by someone else", self.key, self.record.ip)
            self.ip = self.record.ip
        spec = pod.get("spec", {})
        self.init_containers = [
            Container(c, True, skip=c.get("restartPolicy") == "Always") for c in spec.get("initContainers") or []
        ]
        self.containers = [Container(c, False) for c in spec.get("containers") or []]
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.key}", daemon=True)

    # -- inputs from the watch ------------------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        self._pod = pod
        self.wake.set()

    def vanish(self) -> None:
        self._vanished = True
        self.wake.set()

    @property
    def pod(self) -> dict[str, Any]:
        return self._pod

    def all_containers(self) -> list[Container]:
        return self.init_containers + self.containers

    # -- main loop --------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s: worker crashed; killing its processes", self.key)
            self._kill_all(0)
        finally:
            if self.sa_token is not None:
                self.sa_token.remove()
            self._release_address()
            podstate.remove(self.dir)  # ended normally: nothing to resume (a SIGKILLed agent never gets here)
            self.agent.worker_done(self)

    def _run(self) -> None:
        if self.adopted:
            self._adopt()
        elif self.pod["metadata"].get("deletionTimestamp"):
            self.terminal, self.last_sent = True, {}  # deleted before it ever ran here: nothing to report
        else:
            self._setup()
        while True:
            if self.agent.stopping.is_set():
                self._kill_all(min(3.0, self._grace()))
                return
            if self._vanished:
                log.info("pod %s: gone from the API; killing its processes", self.key)
                self._kill_all(0)
                return
            if self.pod["metadata"].get("deletionTimestamp"):
                self._terminate_and_delete()
                return
            if not self.terminal:
                try:
                    self._step()
                except Exception:
                    log.exception("pod %s: step failed; retrying", self.key)
                    time.sleep(1)
            self._save_state()
            self._sync_status()
            self.wake.wait(2.0 if self.terminal else TICK)
            self.wake.clear()

    def _adopt(self) -> None:
        """A pod bound here before this agent started: resume it from its state.json; without one its processes
        (if any) are not ours, fail it."""
        phase = self.pod.get("status", {}).get("phase")
        if self.record is not None and phase not in ("Succeeded", "Failed"):
            self._resume(self.record)
            return
        self.terminal = True
        if phase in ("Succeeded", "Failed"):
            self.last_sent = {}  # nothing to report
            return
        log.info("pod %s: bound before this agent started; marking it Failed (NodeAgentRestarted)", self.key)
        self.phase = "Failed"
        self.pod_reason = ("NodeAgentRestarted", "the node agent restarted and has no state of this pod to resume")
        for c in self.all_containers():
            c.terminated = {"exitCode": 137, "reason": "NodeAgentRestarted", "startedAt": None,
                            "finishedAt": now_rfc3339()}  # fmt: skip

    # -- state.json: carrying on after the agent was SIGKILLed (node/podstate.py) -------------------------------
    def _snapshot(self) -> podstate.PodState:
        return podstate.PodState(
            uid=self.uid, ip=self.ip, netns=self.netns, start_time=self.start_time, phase=self.phase,
            pod_reason=self.pod_reason, transitions=dict(self.transitions), has_token=self.sa_token is not None,
            containers=[podstate.ContainerState(
                name=c.name, pid=c.proc.pid if c.proc else 0, ticks=c.proc.ticks if c.proc else 0,
                restart_count=c.restart_count, running_since=c.running_since, ever_started=c.ever_started,
                waiting=c.waiting, terminated=c.terminated, last_terminated=c.last_terminated, ready=c.ready,
                started=c.started, backoff=c.backoff, image_id=c.image_id, env=c.proc_env, links=c.links,
            ) for c in self.all_containers()],
        )  # fmt: skip

    def _save_state(self) -> None:
        """Write state.json when it changed (only for a pod this agent runs; before that there is nothing)."""
        if not self.ip or self.last_sent == {}:
            return
        text = self._snapshot().to_json()
        if text != self.saved:
            try:
                podstate.save(self.dir, text)
            except OSError as e:
                log.warning("pod %s: cannot save its state: %s", self.key, e)
                return
            self.saved = text

    def _resume(self, record: podstate.PodState) -> None:
        """Carry on from state.json: the shims still running are watched through /proc, those that ended while
        no agent ran are reaped on the first step from their exit files (restart policy as usual)."""
        self.ip, self.netns, self.start_time = record.ip, record.netns, record.start_time
        self.phase, self.pod_reason, self.transitions = record.phase, record.pod_reason, dict(record.transitions)
        self.unsupported = podspec.unsupported_fields(self.pod)
        self.volumes_ready = self.sa_ready = True  # as they were: a Secret deleted since must not stop the pod
        if record.has_token:
            self.sa_token = ServiceAccountToken(self.api, self.pod, self.dir / "serviceaccount",
                                                self.agent.pod_api_server)  # fmt: skip
            self.sa_token.resume()
        self.terminal = self.phase in ("Succeeded", "Failed")
        saved = {s.name: s for s in record.containers}
        now, wall = time.monotonic(), time.time()
        live = 0
        for c in self.all_containers():
            st = saved.get(c.name)
            if st is None:
                continue
            c.restart_count, c.running_since, c.ever_started = st.restart_count, st.running_since, st.ever_started
            c.waiting, c.terminated, c.last_terminated = st.waiting, st.terminated, st.last_terminated
            c.backoff, c.image_id, c.proc_env, c.links = st.backoff, st.image_id, st.env, st.links
            if not st.pid:
                c.next_start = now + c.backoff if c.last_terminated else now
                continue
            c.proc, c.pid = ShimProcess(st.pid, st.ticks, self._exit_file(c)), st.pid
            if not is_alive(st.pid, st.ticks):
                continue  # ended while no agent ran: the next step reaps it
            live += 1
            self.agent.register_pgid(st.pid)
            c.ready, c.started = st.ready, st.started
            c.resolved = self.agent.images.pull(str(c.spec.get("image", ""))).resolved
            c.started_mono = now - max(0.0, wall - _parse_time(st.running_since)) if st.running_since else now
            c.probes = {
                kind: ProbeState(c.spec[kind], next_at=max(now, c.started_mono + float(
                    c.spec[kind].get("initialDelaySeconds", 0))))
                for kind in ("readinessProbe", "livenessProbe", "startupProbe")
                if c.spec.get(kind)
            }  # fmt: skip
            rp = c.probes.get("readinessProbe")
            if rp is not None and c.ready:
                rp.successes = rp.success_threshold
        log.info("pod %s: resumed after an agent restart (pod IP %s, %d of %d containers still running)",
                 self.key, self.ip, live, len(record.containers))  # fmt: skip

    def _setup(self) -> None:
        self.ip = self.agent.ips.allocate()
        self.start_time = now_rfc3339()
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.dir / "termination").mkdir(exist_ok=True)
        (self.dir / "volumes").mkdir(exist_ok=True)
        self.unsupported = podspec.unsupported_fields(self.pod)
        if self.unsupported:
            log.warning("pod %s: unsupported fields: %s", self.key, ", ".join(self.unsupported))
        for c in self.init_containers:
            c.waiting = ("SidecarNotSupported", "sidecar containers are not run") if c.skip else ("PodInitializing", "")
        for c in self.containers:
            c.waiting = ("PodInitializing", "") if self.init_containers else ("ContainerCreating", "")
        log.info("pod %s: accepted, pod IP %s, dir %s", self.key, self.ip, self.dir)

    def _make_sandbox(self) -> bool:
        """The pod's network namespace and address (the kubelet's pod sandbox); retried while it fails."""
        assert self.agent.network is not None
        try:
            self.netns = podnet_node.attach_pod(self.agent.network, self.ip)
            return True
        except netns.NetworkError as e:
            msg = f"Failed to create pod sandbox: {e}"
            log.warning("pod %s: %s", self.key, msg)
            self.agent.event(self.pod, "Warning", "FailedCreatePodSandBox", msg)
            self.net_retry_at = time.monotonic() + CONFIG_RETRY
            return False

    def _release_address(self) -> None:
        """Give the pod IP back, and with a pod network remove the pod's namespace (its processes are gone)."""
        if self.netns is not None and self.agent.network is not None:
            try:
                podnet_node.detach_pod(self.agent.network, self.ip)
            except netns.NetworkError as e:
                log.warning("pod %s: removing its network namespace: %s", self.key, e)
            self.netns = None
        if self.ip:
            self.agent.ips.release(self.ip)

    @contextlib.contextmanager
    def _in_pod_netns(self) -> Iterator[dict[str, Any]]:
        """Popen keyword arguments that start a process in the pod's network namespace (none without one)."""
        if self.netns is None:
            yield {}
            return
        enter, close = netns.preexec_entering(self.netns)
        try:
            yield {"preexec_fn": enter}
        finally:
            close()

    def exec_target(self, name: str) -> ExecTarget | None:
        """What `kubectl exec` runs a command with: the running container's environment (as it was started), the pod
        directory and network namespace; None unless the container runs now (the kubelet finds no container)."""
        c = next((c for c in self.all_containers() if c.name == name), None)
        proc = c.proc if c is not None else None
        if c is None or proc is None:
            return None
        return ExecTarget(env=dict(c.proc_env), cwd=self.dir, popen_kwargs=self._in_pod_netns,
                          alive=lambda: c.proc is proc, track=self.agent.register_pgid,
                          untrack=self.agent.unregister_pgid)  # fmt: skip

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod.get("spec", {})
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        return float(30 if grace is None else grace)

    # -- one step ---------------------------------------------------------------------------------------------
    def _step(self) -> None:
        now = time.monotonic()
        if self.agent.network is not None and self.netns is None and (
            now < self.net_retry_at or not self._make_sandbox()
        ):
            return
        if not self.sa_ready:
            if now < self.sa_retry_at:
                return
            if not self._setup_service_account():
                # the Node authorizer learns of a new binding from its own watch: the first refusals may be lag
                self.sa_attempts += 1
                self.sa_retry_at = now + (0.5 if self.sa_attempts <= 4 else CONFIG_RETRY)
                return
            self.sa_ready = True
        elif self.sa_token is not None:
            self.sa_token.maybe_refresh(now)
        if not self.volumes_ready:
            if now < self.volume_retry_at:
                return
            if not self._materialize_volumes():
                self.volume_retry_at = now + CONFIG_RETRY
                return
            self.volumes_ready = True
        deadline = self.pod.get("spec", {}).get("activeDeadlineSeconds")
        if deadline is not None and self._age() > float(deadline):
            self._kill_all(self._grace())
            self.pod_reason = ("DeadlineExceeded", f"Pod was active on the node longer than the specified "
                                                  f"deadline of {deadline} seconds")  # fmt: skip
            self.phase = "Failed"
            self._go_terminal()
            return
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        if not self._init_done():
            for c in self.init_containers:
                if c.succeeded or c.skip:
                    continue
                self._drive(c, "OnFailure" if policy == "Always" else policy, now)
                break
            if self._init_done():
                for c in self.containers:
                    c.waiting = ("ContainerCreating", "")
        if self._init_done():
            for c in self.containers:
                self._drive(c, policy, now)
            for c in self.containers:
                if c.running:
                    self._probe(c, time.monotonic())
        self.phase = self._phase(policy)
        if self.phase in ("Succeeded", "Failed"):
            self._go_terminal()

    def _age(self) -> float:
        start = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return (datetime.now(UTC) - start).total_seconds()

    def _go_terminal(self) -> None:
        self._kill_all(0)
        self.terminal = True
        if self.sa_token is not None:
            self.sa_token.remove()
        self._release_address()  # the status keeps showing it; no process uses it any more
        log.info("pod %s: %s", self.key, self.phase)

    def _init_done(self) -> bool:
        return all(c.succeeded or c.skip for c in self.init_containers)

    def _phase(self, policy: str) -> str:
        """kubelet's getPhase, on our container states."""
        for c in self.init_containers:
            if c.terminated is not None and not c.succeeded:
                return "Failed"
        if not self._init_done():
            return "Pending"
        waiting = running = stopped = succeeded = 0
        for c in self.containers:
            if c.running and c.poststart is not None:
                waiting += 1  # not running for the kubelet until its postStart hook returned
            elif c.running:
                running += 1
            elif c.terminated is not None:
                stopped += 1
                succeeded += c.succeeded
            elif c.last_terminated is not None:
                stopped += 1
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"

    # -- containers -------------------------------------------------------------------------------------------
    def _drive(self, c: Container, policy: str, now: float) -> None:
        """Reap an exited process, kill one past its kill deadline, start one that is due."""
        if c.running:
            self._reap(c, policy)
            if c.running:
                self._advance_hooks(c, now)
            return
        if c.terminated is not None or now < c.next_start:
            return
        self._start(c)

    def _start(self, c: Container) -> None:
        image = str(c.spec.get("image", ""))
        pulled = self.agent.images.pull(image)
        resolved = pulled.resolved
        if resolved is None:
            if c.waiting[0] != pulled.reason and pulled.reason == "ErrImagePull":
                self.agent.event(self.pod, "Warning", "Failed", pulled.message, c)
            c.waiting = (pulled.reason, pulled.message)
            c.next_start = time.monotonic() + 10  # the map is read again when it changes
            return
        links = self._service_links()
        try:
            env = podspec.container_env(self._pod_with_ips(), c.spec, self._lookup, base=self._base_env(links))
        except podspec.ConfigError as e:
            if c.waiting[0] != "CreateContainerConfigError":
                self.agent.event(self.pod, "Warning", "Failed", f"Error: {e}", c)
            c.waiting = ("CreateContainerConfigError", str(e))
            c.next_start = time.monotonic() + CONFIG_RETRY
            return
        command, args = c.spec.get("command"), c.spec.get("args")
        if command:
            argv = list(command) + list(args or [])
        elif args is not None:
            argv = list(resolved.entrypoint) + list(args)
        else:
            argv = list(resolved.entrypoint) + list(resolved.cmd)
        if not argv:
            msg = (f"no command specified: container {c.name!r} has no `command` and image map entry "
                   f"{resolved.entry!r} defines no entrypoint/cmd for {image}")  # fmt: skip
            if c.waiting[0] != "CreateContainerError":
                self.agent.event(self.pod, "Warning", "Failed", f"Error: {msg}", c)
            c.waiting = ("CreateContainerError", msg)
            c.next_start = time.monotonic() + 3600
            return
        term_file = self.dir / "termination" / c.name
        term_path = c.spec.get("terminationMessagePath") or podspec.DEFAULT_TERMINATION_PATH
        argv = [podspec.expand(a, env) for a in argv]
        argv = [str(term_file) if a == term_path else a for a in argv]  # `--termination-log /dev/termination-log`
        child_env = {
            "PATH": resolved.path,
            "HOME": str(self.dir),
            "HOSTNAME": self.name,
            "DIVBASE_TERMINATION_LOG": str(term_file),
            "DIVBASE_VOLUMES_DIR": str(self.dir / "volumes"),
            **resolved.env,
            **env,
        }
        term_file.write_bytes(b"")
        if c.last_terminated is not None:
            c.restart_count += 1  # like the kubelet: counted when the next container is created
        log_dir = self.dir / "logs" / c.name
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{c.restart_count}.log"
        started_at = now_rfc3339()
        try:
            with log_path.open("ab") as out, self._in_pod_netns() as in_netns:
                proc = ShimProcess.start(argv, self._exit_file(c), cwd=self.dir, env=child_env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         **in_netns)  # fmt: skip
        except OSError as e:
            # containerd reports this as a terminated container: StartError, exit code 128
            msg = f'failed to start container process: exec: "{argv[0]}": {e.strerror or e}'
            log.warning("pod %s: container %s: %s", self.key, c.name, msg)
            self.agent.event(self.pod, "Warning", "Failed", f"Error: {msg}", c)
            self._exited(c, {"exitCode": 128, "reason": "StartError", "message": msg, "startedAt": started_at,
                             "finishedAt": now_rfc3339()})  # fmt: skip
            return
        c.proc, c.pid, c.proc_env, c.links = proc, proc.pid, child_env, links
        c.image_id, c.resolved = pulled.image_id, resolved  # `repository@sha256:...` (see images.ImageResolver)
        self.agent.register_pgid(proc.pid)
        c.running_since, c.started_mono, c.ever_started = started_at, time.monotonic(), True
        c.kill_deadline, c.kill_reason = None, ""
        c.ready = False
        c.started = "startupProbe" not in c.spec
        c.probes = {
            kind: ProbeState(c.spec[kind], next_at=c.started_mono + float(c.spec[kind].get("initialDelaySeconds", 0)))
            for kind in ("readinessProbe", "livenessProbe", "startupProbe")
            if c.spec.get(kind)
        }
        log.info("pod %s: container %s started (pid %d, image map entry %s, log %s)",
                 self.key, c.name, proc.pid, resolved.entry, log_path)  # fmt: skip
        self.agent.event(self.pod, "Normal", "Started", f"Started container {c.name}", c)
        post = hooks.handler(c.spec, "postStart")
        if post is not None:  # like the kubelet: not Running (no probes) until postStart returns
            c.poststart = self._run_hook(c, "PostStart", post, timeout=None)

    def _exit_file(self, c: Container) -> Path:
        return self.dir / "termination" / f"{c.name}.exit"

    def _reap(self, c: Container, policy: str) -> None:
        """If the container's shim exited: kill what is left of its group, record the exit, decide."""
        assert c.proc is not None
        if not c.proc.exited():
            return
        ended = c.proc.finish()
        self.agent.unregister_pgid(c.pid)
        c.proc = None
        exit_code = ended.exit_code
        log.info("pod %s: container %s exited with code %d", self.key, c.name, exit_code)
        if ended.error:  # the command could not be started (containerd: StartError, exit code 128)
            log.warning("pod %s: container %s: %s", self.key, c.name, ended.error)
            self.agent.event(self.pod, "Warning", "Failed", f"Error: {ended.error}", c)
        term = {
            "exitCode": exit_code,
            "reason": "StartError" if ended.error else "Completed" if exit_code == 0 else "Error",
            "startedAt": c.running_since,
            "finishedAt": now_rfc3339(),
            "containerID": f"local://{c.pid}",
        }
        message = ended.error or self._termination_message(c, exit_code)
        if message:
            term["message"] = message
        restart = (exit_code != 0 and policy in ("Always", "OnFailure")) or (policy == "Always" and not c.init)
        if c.started_mono and time.monotonic() - c.started_mono > BACKOFF_RESET:
            c.backoff = 0.0
        self._exited(c, term, restart=restart)

    def _exited(self, c: Container, term: dict[str, Any], restart: bool | None = None) -> None:
        if restart is None:
            policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
            restart = policy in ("Always", "OnFailure")
        c.ready = c.started = False
        c.probes = {}
        c.kill_deadline = c.stop_started = None
        for run in (c.prestop, c.poststart):
            if run is not None:
                run.kill()
        c.prestop = c.poststart = None
        if not restart or self.pod["metadata"].get("deletionTimestamp") or self.agent.stopping.is_set():
            c.terminated = term
            return
        c.last_terminated = term
        c.backoff = BACKOFF_START if not c.backoff else min(BACKOFF_MAX, c.backoff * 2)
        c.next_start = time.monotonic() + c.backoff
        msg = (f"back-off {c.backoff:.0f}s restarting failed container={c.name} "
               f"pod={self.name}_{self.ns}({self.uid})")  # fmt: skip
        c.waiting = ("CrashLoopBackOff", msg)
        self.agent.event(self.pod, "Warning", "BackOff", "Back-off restarting failed container", c)

    def _termination_message(self, c: Container, exit_code: int) -> str:
        try:
            with (self.dir / "termination" / c.name).open("rb") as f:
                text = f.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
        except OSError:
            text = ""
        if not text and exit_code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            text = _tail(self.dir / "logs" / c.name / f"{c.restart_count}.log", FALLBACK_LINES, FALLBACK_BYTES)
        return text

    def _signal(self, c: Container, sig: signal.Signals) -> None:
        if c.proc is not None:
            c.proc.signal_group(sig)

    def kill_container(self, c: Container, grace: float, reason: str) -> None:
        """Start stopping a container as the kubelet's killContainer does: the Killing event, its preStop hook (if
        any, and only with a grace period above 0) for at most `grace` seconds, then SIGTERM, and SIGKILL once what
        is left of the grace period has passed (at least 2 s). `_advance_hooks` moves it along."""
        if c.proc is None or c.stop_started is not None:
            return
        self.agent.event(self.pod, "Normal", "Killing", f"Stopping container {c.name}" +
                         (f": {reason}" if reason else ""), c)  # fmt: skip
        now = time.monotonic()
        c.kill_reason = reason
        c.stop_started, c.stop_end = now, now + grace
        pre = hooks.handler(c.spec, "preStop")
        if pre is not None and grace > 0:
            log.info("pod %s: container %s: running its preStop hook (grace period %.0fs)", self.key, c.name, grace)
            c.prestop = self._run_hook(c, "PreStop", pre, timeout=grace)
            return
        self._sigterm(c, now)

    def _sigterm(self, c: Container, now: float) -> None:
        assert c.stop_started is not None
        elapsed = now - c.stop_started if c.prestop is not None else None
        window = hooks.stop_window(c.stop_end - c.stop_started, elapsed)
        self._signal(c, signal.SIGTERM)
        c.kill_deadline = now + window

    def _cut(self, c: Container, end: float, now: float) -> None:
        """A shorter grace period arrived (a later delete): the preStop hook may run only until `end`; a SIGTERM
        already sent is followed by SIGKILL at `end`, but not within 2 s of now (the kubelet stops it again)."""
        if c.stop_started is None or end >= c.stop_end:
            return
        c.stop_end = end
        if c.kill_deadline is not None:
            c.kill_deadline = min(c.kill_deadline, max(end, now + hooks.MIN_GRACE))

    def _advance_hooks(self, c: Container, now: float) -> None:
        """A running container: postStart finished (a failure kills the container)? preStop done or out of time
        (then SIGTERM)? Past the kill deadline (then SIGKILL)?"""
        post = c.poststart
        if post is not None and post.done.is_set():
            c.poststart = None
            if post.error and c.stop_started is None:
                log.warning("pod %s: container %s: postStart hook failed: %s", self.key, c.name, post.error)
                # like the kubelet: no details in the Event (they may carry secrets)
                self.agent.event(self.pod, "Warning", "FailedPostStartHook", "PostStartHook failed", c)
                self.kill_container(c, self._grace(), "FailedPostStartHook")
        pre = c.prestop
        if pre is not None and pre.done.is_set() and not pre.reported:
            pre.reported = True
            if pre.error:
                log.warning("pod %s: container %s: preStop hook failed: %s", self.key, c.name, pre.error)
                self.agent.event(self.pod, "Warning", "FailedPreStopHook", "PreStopHook failed", c)
        prestop_over = pre is None or pre.done.is_set() or now >= c.stop_end
        if c.stop_started is not None and c.kill_deadline is None and prestop_over:
            if pre is not None and not pre.done.is_set():
                log.info("pod %s: container %s: preStop hook not completed in the grace period", self.key, c.name)
            self._sigterm(c, now)
        if c.kill_deadline is not None and now >= c.kill_deadline:
            self._signal(c, signal.SIGKILL)

    def _run_hook(self, c: Container, kind: str, h: dict[str, Any], timeout: float | None) -> hooks.HookRun:
        """Run a lifecycle handler on its own thread: exec in the container's environment and directory (its own
        process group, killed with the container), httpGet to the pod IP, or sleep."""
        run = hooks.HookRun(kind)
        env, cwd, spec, ip = dict(c.proc_env), self.dir, c.spec, self.ip
        agent = self.agent
        in_pod_netns = self._in_pod_netns

        def work(r: hooks.HookRun) -> None:
            if "exec" in h:
                with in_pod_netns() as in_netns:
                    r.proc = subprocess.Popen(list(h["exec"].get("command") or []), cwd=cwd, env=env,
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True,
                                              **in_netns)  # fmt: skip
                agent.register_pgid(r.proc.pid)
                if r.cancel.is_set():  # the container ended while this was starting
                    r.kill()
                try:
                    code = r.proc.wait()
                finally:
                    agent.unregister_pgid(r.proc.pid)
                if code != 0:
                    raise OSError(f"exit code {code}")  # not the command line: it is never logged
            elif "httpGet" in h:
                hooks.do_http(hooks.http_request(h["httpGet"], spec, ip, KUBE_MINOR), timeout, agent.connect)
            elif "sleep" in h:
                r.sleep(float(h["sleep"].get("seconds") or 0))
            else:
                raise ValueError(f"invalid handler: {sorted(h)}")

        return run.start(work)

    def _kill_all(self, grace: float) -> None:
        """Stop every running container (preStop hooks, SIGTERM, SIGKILL when its grace is over), reap them all.

        A shorter deletionGracePeriodSeconds arriving meanwhile cuts the wait; the pod vanishing (a force delete)
        SIGKILLs at once.
        """
        live = [c for c in self.all_containers() if c.running]
        started = time.monotonic()
        for c in live:
            if grace > 0:
                self.kill_container(c, grace, "")
                self._cut(c, started + grace, started)  # one already stopping (liveness) gets no longer than this
            else:
                self._signal(c, signal.SIGKILL)
        while any(c.running for c in live):
            now = time.monotonic()
            new_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            for c in live:
                if new_grace is not None:
                    self._cut(c, started + float(new_grace), now)
                if self._vanished:
                    self._signal(c, signal.SIGKILL)
                if c.running:
                    self._reap(c, "Never")
                if c.running:
                    self._advance_hooks(c, now)
            if any(c.running for c in live):
                time.sleep(0.05)

    def _terminate_and_delete(self) -> None:
        """The kubelet's part of a graceful delete: stop the containers, report final status, remove the pod."""
        if not self.terminal:
            grace = self._grace()
            log.info("pod %s: deleting, grace period %.0fs", self.key, grace)
            self._kill_all(grace)
            for c in self.all_containers():
                if c.terminated is None:
                    c.terminated = c.last_terminated or {
                        "exitCode": 137 if c.ever_started else 0,
                        "reason": "ContainerStatusUnknown" if c.ever_started else "PodDeleted",
                        "startedAt": c.running_since or None, "finishedAt": now_rfc3339(),
                    }  # fmt: skip
            all_ok = all(c.succeeded for c in self.containers) and bool(self.containers)
            self.phase = "Succeeded" if all_ok else "Failed"
            self.terminal = True
            self._release_address()
            self._sync_status()
        try:
            self.api.retrying(
                "DELETE", f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": self.uid}},
            )  # fmt: skip
            log.info("pod %s: deleted", self.key)
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s: final delete failed: %s", self.key, e)

    # -- probes -----------------------------------------------------------------------------------------------
    def _probe(self, c: Container, now: float) -> None:
        if c.stop_started is not None or c.poststart is not None:
            return
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            st = c.probes.get(kind)
            if st is None or now < st.next_at:
                continue
            if kind == "startupProbe" and c.started:
                continue
            if kind != "startupProbe" and not c.started:
                continue
            st.next_at = now + st.period
            ok, detail = self._run_probe(c, st.spec)
            if ok:
                st.successes, st.failures = st.successes + 1, 0
            else:
                st.successes, st.failures = 0, st.failures + 1
                what = kind.removesuffix("Probe").capitalize()
                self.agent.event(self.pod, "Warning", "Unhealthy", f"{what} probe failed: {detail}", c)
            if kind == "readinessProbe":
                if ok and st.successes >= st.success_threshold:
                    c.ready = True
                elif not ok and st.failures >= st.failure_threshold:
                    c.ready = False
            elif kind == "startupProbe" and ok:
                c.started = True
            elif not ok and st.failures >= st.failure_threshold:
                what = "startup" if kind == "startupProbe" else "liveness"
                grace = st.spec.get("terminationGracePeriodSeconds")
                self.kill_container(c, float(self._grace() if grace is None else grace),
                                    f"failed {what} probe, will be restarted")  # fmt: skip
                return
        if "readinessProbe" not in c.probes:
            c.ready = c.started

    def _run_probe(self, c: Container, spec: dict[str, Any]) -> tuple[bool, str]:
        timeout = float(spec.get("timeoutSeconds") or 1)
        try:
            if "httpGet" in spec:
                return self._http_probe(c, spec["httpGet"], timeout)
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                address = (t.get("host") or self.ip, hooks.resolve_port(t["port"], c.spec))
                with self.agent.connect(address, timeout):
                    return True, ""
            if "exec" in spec:
                env = podspec.container_env(self._pod_with_ips(), c.spec, self._lookup, base=self._base_env(c.links))
                child_env = {"PATH": c.resolved.path if c.resolved else "/usr/bin:/bin", "HOME": str(self.dir), **env}
                with self._in_pod_netns() as in_netns:
                    r = subprocess.run(spec["exec"].get("command") or [], cwd=self.dir, env=child_env,
                                       capture_output=True, timeout=timeout, check=False, **in_netns)  # fmt: skip
                return r.returncode == 0, f"exit code {r.returncode}"
        except (OSError, subprocess.SubprocessError, podspec.ConfigError, http.client.HTTPException) as e:
            return False, f"{type(e).__name__}: {e}"
        return True, "probe type not supported"

    def _http_probe(self, c: Container, h: dict[str, Any], timeout: float) -> tuple[bool, str]:
        req = hooks.http_request(h, c.spec, self.ip, KUBE_MINOR, user_agent=hooks.PROBE_USER_AGENT)
        status = hooks.do_http(req, timeout, self.agent.connect)
        return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"

    # -- inputs: ServiceAccount token, Secrets, ConfigMaps, volumes ---------------------------------------------
    def _setup_service_account(self) -> bool:
        """API access unless automount is off (pod, then ServiceAccount); a refused TokenRequest keeps the
        containers in ContainerCreating with the kubelet's message, retried like a missing Secret."""
        spec = self.pod.get("spec", {})
        sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        account = None
        if spec.get("automountServiceAccountToken") is None:
            try:  # the Node authorizer lets a node read the ServiceAccounts of its pods
                account = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa_name}")
            except ApiError as e:
                log.info("pod %s: cannot read ServiceAccount %s (%s); going by its volumes", self.key, sa_name, e)
        if not serviceaccount.wants_token(self.pod, account):
            return True
        token = ServiceAccountToken(self.api, self.pod, self.dir / "serviceaccount", self.agent.pod_api_server)
        try:
            token.setup()
        except (ApiError, OSError) as e:
            detail = e.message if isinstance(e, ApiError) else str(e)
            volume = next((v["name"] for v in spec.get("volumes") or []
                           if v["name"].startswith("kube-api-access-")), "kube-api-access")  # fmt: skip
            msg = f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: {detail}'
            log.warning("pod %s: %s", self.key, msg)
            for c in self.all_containers():
                if not c.ever_started:
                    c.waiting = ("ContainerCreating", msg)
            return False
        self.sa_token = token
        log.info("pod %s: API access as ServiceAccount %s (%s)", self.key, sa_name, token.kubeconfig)
        return True

    def _sa_env(self) -> dict[str, str]:
        return self.sa_token.env() if self.sa_token is not None else {}

    def _service_links(self) -> dict[str, str]:
        """The service variables as of now (a kubelet, too, never updates them in a running container).

        The kubelet reads Services from its informer cache: before the first sync it refuses to create containers
        of API pods (CreateContainerConfigError "services have not yet been read at least once"), after it uses
        whatever the cache holds, however stale, and never fails. Here every creation lists afresh, so a failed
        list is the stale-cache case: logged, and the container starts without links; KUBERNETES_SERVICE_HOST/PORT
        still come from the ServiceAccount variables when the pod has a token.
        """
        enabled = servicelinks.links_enabled(self.pod)
        services: list[dict[str, Any]] = []
        try:
            for path, query in servicelinks.requests(self.ns, enabled):
                services += self.api.request("GET", path, query=query).get("items") or []
        except ApiError as e:
            log.warning("pod %s: cannot list Services for its environment variables (%s); starting without them",
                        self.key, e.message[:300])  # fmt: skip
            return {}
        return servicelinks.service_env(services, self.ns, enabled)

    def _base_env(self, links: dict[str, str]) -> dict[str, str]:
        """Service links and ServiceAccount variables; without a pod network KUBERNETES_SERVICE_* name the
        apiserver's loopback address (see servicelinks.base_env)."""
        apiserver = None if self.agent.network is not None else self.agent.pod_api_server
        return servicelinks.base_env(links, self._sa_env(), apiserver)

    # -- inputs: Secrets, ConfigMaps, volumes -----------------------------------------------------------------
    def _lookup(self, kind: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise podspec.ConfigError(f'cannot read {kind.lower()} "{name}": {e}') from None
        return podspec.secret_data(obj) if kind == "Secret" else podspec.configmap_data(obj)

    def _materialize_volumes(self) -> bool:
        """emptyDir: a directory; secret/configMap (and those sources of projected): their keys as files.

        Volume `<name>` lives at $DIVBASE_VOLUMES_DIR/<name>; volumeMounts' mountPath is not honoured. Projected
        serviceAccountToken sources are skipped (no token is written).
        """
        for vol in self.pod.get("spec", {}).get("volumes") or []:
            d = self.dir / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            sources: list[tuple[str, dict[str, Any]]] = []
            if "secret" in vol:
                sources.append(("Secret", {**vol["secret"], "name": vol["secret"].get("secretName", "")}))
            if "configMap" in vol:
                sources.append(("ConfigMap", vol["configMap"]))
            for src in (vol.get("projected") or {}).get("sources") or []:
                if "secret" in src:
                    sources.append(("Secret", src["secret"]))
                if "configMap" in src:
                    sources.append(("ConfigMap", src["configMap"]))
            for kind, ref in sources:
                try:
                    data = self._lookup(kind, ref.get("name", ""))
                except podspec.ConfigError as e:
                    data, err = None, str(e)
                else:
                    err = f'{kind.lower()} "{ref.get("name", "")}" not found'
                if data is None:
                    if ref.get("optional"):
                        continue
                    msg = f'MountVolume.SetUp failed for volume "{vol["name"]}" : {err}'
                    for c in self.all_containers():
                        if not c.ever_started:
                            c.waiting = ("ContainerCreating", msg)
                    return False
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] in data:
                        f = d / item["path"]
                        f.parent.mkdir(parents=True, exist_ok=True)
                        f.write_text(data[item["key"]])
                        f.chmod(0o600 if kind == "Secret" else 0o644)
        return True

    def _pod_with_ips(self) -> dict[str, Any]:
        """The pod as the downward API sees it: with the IPs this agent assigned (maybe not yet in the API)."""
        pod = dict(self.pod)
        pod["status"] = {**pod.get("status", {}), "podIP": self.ip, "podIPs": [{"ip": self.ip}],
                         "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}]}  # fmt: skip
        return pod

    # -- status -----------------------------------------------------------------------------------------------
    def _container_status(self, c: Container) -> dict[str, Any]:
        state: dict[str, Any]
        up = c.running and c.poststart is None  # the kubelet reports it running once postStart returned
        if up:
            state = {"running": {"startedAt": c.running_since}}
        elif c.running:
            reason, message = c.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        elif c.terminated is not None:
            state = {"terminated": c.terminated}
        else:
            reason, message = c.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        st: dict[str, Any] = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": c.image_id if c.ever_started else "",
            "ready": c.ready and up,
            "started": up and c.started,
            "restartCount": c.restart_count,
            "state": state,
            "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
        }
        if c.ever_started:
            st["containerID"] = f"local://{c.pid}"
        return st

    def _condition(self, ctype: str, status: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        value = "True" if status else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != value:
            self.transitions[ctype] = (value, now_rfc3339())
        cond = {"type": ctype, "status": value, "lastProbeTime": None,
                "lastTransitionTime": self.transitions[ctype][1]}  # fmt: skip
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def status(self) -> dict[str, Any]:
        init_done = self._init_done()
        unready = [c.name for c in self.containers if not (c.ready and c.running)]
        done = self.phase in ("Succeeded", "Failed")
        ready = init_done and not unready and not done
        if done:
            ready_reason = "PodCompleted"
        elif unready:
            ready_reason = "ContainersNotReady"
        else:
            ready_reason = ""
        ready_msg = f"containers with unready status: [{' '.join(unready)}]" if unready and not done else ""
        incomplete = [c.name for c in self.init_containers if not (c.succeeded or c.skip)]
        conditions = [
            self._condition("PodReadyToStartContainers", bool(self.ip) and not done),
            self._condition("Initialized", init_done, "" if init_done else "ContainersNotInitialized",
                            f"containers with incomplete status: [{' '.join(incomplete)}]" if incomplete else ""),
            self._condition("ContainersReady", ready, ready_reason, ready_msg),
            self._condition("Ready", ready, ready_reason, ready_msg),
        ]  # fmt: skip
        if self.unsupported:
            conditions.append(self._condition(
                UNSUPPORTED, True, "UnsupportedFields",
                "not supported by the local node agent (ignored): " + ", ".join(self.unsupported)))  # fmt: skip
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "initContainerStatuses": [self._container_status(c) for c in self.init_containers],
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }
        if self.ip:
            status |= {"podIP": self.ip, "podIPs": [{"ip": self.ip}]}
        if self.start_time:
            status["startTime"] = self.start_time
        if self.pod_reason:
            status["reason"], status["message"] = self.pod_reason
        return status

    def _sync_status(self) -> None:
        if self.last_sent == {}:  # a pod this agent never ran: its status is not ours to write
            return
        status = self.status()
        if status == self.last_sent:
            return
        try:
            self.api.retrying("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                              {"status": status}, content_type=STRATEGIC, attempts=3)  # fmt: skip
        except ApiError as e:
            if e.status == 404:
                self._vanished = True
                return
            log.warning("pod %s: status update failed (will retry): %s", self.key, e.message[:300])
            return
        self.last_sent = status
