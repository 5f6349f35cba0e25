"""One thread per pod: run its containers as local processes and report status the way a kubelet does.

The loop is level-based: every tick (or wake-up from the pod watch) it looks at the latest pod object and at its
processes, takes the next step (start, reap, restart after back-off, probe, kill), rebuilds the whole status and
patches it only when it changed. Each container runs under its shim (node/shim.py) in its own process group, so
signals reach its children and leftovers of an exited container are killed with it (a kubelet kills the container's
whole cgroup). What a restarted agent needs to carry on is saved in `<pod dir>/state.json` (node/podstate.py).

The worker reaches its node only through `PodHost` (node/host.py). The pieces without pod state live elsewhere:
command line and environment (launch.py), volumes (volumes.py), probe and hook I/O (handlers.py), probe verdicts
(probes.py), the status (podstatus.py), the stop sequence (stopping.py), what the API gives the pod (podinputs.py).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..podnet import netns
from ..podnet import node as podnet_node
from . import handlers, podspec, podstate, podstatus, stopping
from .api import STRATEGIC, ApiError
from .container import Container, fresh_probes
from .execserver import ExecTarget
from .host import PodHost
from .podinputs import PodInputs
from .runner import CONFIG_RETRY, ContainerRunner
from .shimproc import ShimProcess, is_alive
from .timefmt import now_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between steps of a live pod (processes are polled, not waited for)
TERMINAL = ("Succeeded", "Failed")


class PodWorker:
    """Drives one pod from binding to deletion; `update(pod)` / `vanish()` come from the agent's watch thread."""

    def __init__(
        self,
        host: PodHost,
        pod: dict[str, Any],
        adopt: bool = False,
        on_done: Callable[[PodWorker], None] | None = None,
    ) -> None:
        self.host = host
        self.api = host.api
        self.on_done = on_done
        self._pod = pod
        self._vanished = False
        self.wake = threading.Event()
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key = f"{self.ns}/{self.name}"
        self.dir = host.pods_dir / f"{self.ns}_{self.name}_{self.uid}"
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
        self.inputs = PodInputs(host, self.ns, self.key, self.dir)  # the ServiceAccount token, Secrets, ConfigMaps
        self.sa_ready = False
        self.sa_retry_at = 0.0
        self.sa_attempts = 0
        self.transitions: podstatus.Transitions = {}  # condition type -> (status, lastTransitionTime)
        self.last_sent: dict[str, Any] | None = None
        self.adopted = adopt  # found bound at agent start: resumed from state.json, else not ours to run
        self.saved = ""  # the state.json last written
        self.record = podstate.load(self.dir) if adopt else None
        if self.record is not None and pod.get("status", {}).get("phase") not in TERMINAL:
            # now, on the watch thread, before any new pod of the first list or the watch can take the address
            if not host.ips.reserve(self.record.ip):
                log.warning("pod %s: its address %s is locked by someone else", self.key, self.record.ip)
            self.ip = self.record.ip
        spec = pod.get("spec", {})
        self.init_containers = [
            Container(c, True, skip=c.get("restartPolicy") == "Always") for c in spec.get("initContainers") or []
        ]
        self.containers = [Container(c, False) for c in spec.get("containers") or []]
        self.stopper = stopping.Stopper(self.key, self.event, self.in_pod, self.grace)
        self.runner = ContainerRunner(self)
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

    def container(self, name: str) -> Container | None:
        return next((c for c in self.all_containers() if c.name == name), None)

    def event(self, etype: str, reason: str, message: str, c: Container | None = None) -> None:
        self.host.events(self.pod, etype, reason, message, c)

    # -- main loop --------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s: worker crashed; killing its processes", self.key)
            self._kill_all(0)
        finally:
            self.inputs.remove_token()
            self._release_address()
            podstate.remove(self.dir)  # ended normally: nothing to resume (a SIGKILLed agent never gets here)
            if self.on_done is not None:
                self.on_done(self)

    def _run(self) -> None:
        if self.adopted:
            self._adopt()
        elif self.pod["metadata"].get("deletionTimestamp"):
            self.terminal, self.last_sent = True, {}  # deleted before it ever ran here: nothing to report
        else:
            self._setup()
        while not self._ended():
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

    def _ended(self) -> bool:
        """The agent stops, the pod vanished or is being deleted: stop its processes (and delete it); True then."""
        if self.host.stopping.is_set():
            self._kill_all(min(3.0, self.grace()))
        elif self._vanished:
            log.info("pod %s: gone from the API; killing its processes", self.key)
            self._kill_all(0)
        elif self.pod["metadata"].get("deletionTimestamp"):
            self._terminate_and_delete()
        else:
            return False
        return True

    def _adopt(self) -> None:
        """A pod bound here before this agent started: resume it from its state.json; without one its processes
        (if any) are not ours, fail it."""
        phase = self.pod.get("status", {}).get("phase")
        if self.record is not None and phase not in TERMINAL:
            self._resume(self.record)
            return
        self.terminal = True
        if phase in TERMINAL:
            self.last_sent = {}  # nothing to report
            return
        log.info("pod %s: bound before this agent started; marking it Failed (NodeAgentRestarted)", self.key)
        self.phase = "Failed"
        self.pod_reason = ("NodeAgentRestarted", "the node agent restarted and has no state of this pod to resume")
        for c in self.all_containers():
            c.terminated = {
                "exitCode": 137,
                "reason": "NodeAgentRestarted",
                "startedAt": None,
                "finishedAt": now_rfc3339(),
            }

    # -- state.json: carrying on after the agent was SIGKILLed (node/podstate.py) -------------------------------
    def _snapshot(self) -> podstate.PodState:
        return podstate.PodState(
            uid=self.uid,
            ip=self.ip,
            netns=self.netns,
            start_time=self.start_time,
            phase=self.phase,
            pod_reason=self.pod_reason,
            transitions=dict(self.transitions),
            has_token=self.inputs.token is not None,
            containers=[
                podstate.ContainerState(
                    name=c.name,
                    pid=c.proc.pid if c.proc else 0,
                    ticks=c.proc.ticks if c.proc else 0,
                    restart_count=c.restart_count,
                    running_since=c.running_since,
                    ever_started=c.ever_started,
                    waiting=c.waiting,
                    terminated=c.terminated,
                    last_terminated=c.last_terminated,
                    ready=c.ready,
                    started=c.started,
                    backoff=c.backoff,
                    image_id=c.image_id,
                    env=c.proc_env,
                    links=c.links,
                )
                for c in self.all_containers()
            ],
        )

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
            self.inputs.resume_token(self.pod)
        self.terminal = self.phase in TERMINAL
        saved = {s.name: s for s in record.containers}
        now, wall = time.monotonic(), time.time()
        live = sum(
            self._resume_container(c, saved[c.name], now, wall) for c in self.all_containers() if c.name in saved
        )
        log.info(
            "pod %s: resumed after an agent restart (pod IP %s, %d of %d containers still running)",
            self.key,
            self.ip,
            live,
            len(record.containers),
        )

    def _resume_container(self, c: Container, st: podstate.ContainerState, now: float, wall: float) -> bool:
        """One container from state.json; True when its shim still runs."""
        c.restart_count, c.running_since, c.ever_started = st.restart_count, st.running_since, st.ever_started
        c.waiting, c.terminated, c.last_terminated = st.waiting, st.terminated, st.last_terminated
        c.backoff, c.image_id, c.proc_env, c.links = st.backoff, st.image_id, st.env, st.links
        if not st.pid:
            c.next_start = now + c.backoff if c.last_terminated else now
            return False
        c.proc, c.pid = ShimProcess(st.pid, st.ticks, self.runner.exit_file(c)), st.pid
        if not is_alive(st.pid, st.ticks):
            return False  # ended while no agent ran: the next step reaps it
        self.host.processes.register(st.pid)
        c.ready, c.started = st.ready, st.started
        c.resolved = self.host.images.pull(str(c.spec.get("image", ""))).resolved
        c.started_mono = now - max(0.0, wall - parse_rfc3339(st.running_since)) if st.running_since else now
        c.probes = fresh_probes(c.spec, c.started_mono, now)
        rp = c.probes.get("readinessProbe")
        if rp is not None and c.ready:
            rp.successes = rp.success_threshold
        return True

    def _setup(self) -> None:
        self.ip = self.host.ips.allocate()
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
        assert self.host.network is not None
        try:
            self.netns = podnet_node.attach_pod(self.host.network, self.ip)
            return True
        except netns.NetworkError as e:
            msg = f"Failed to create pod sandbox: {e}"
            log.warning("pod %s: %s", self.key, msg)
            self.event("Warning", "FailedCreatePodSandBox", msg)
            self.net_retry_at = time.monotonic() + CONFIG_RETRY
            return False

    def _release_address(self) -> None:
        """Give the pod IP back, and with a pod network remove the pod's namespace (its processes are gone)."""
        if self.netns is not None and self.host.network is not None:
            try:
                podnet_node.detach_pod(self.host.network, self.ip)
            except netns.NetworkError as e:
                log.warning("pod %s: removing its network namespace: %s", self.key, e)
            self.netns = None
        if self.ip:
            self.host.ips.release(self.ip)

    @contextlib.contextmanager
    def in_pod_netns(self) -> Iterator[dict[str, Any]]:
        """Popen keyword arguments that start a process in the pod's network namespace (none without one)."""
        if self.netns is None:
            yield {}
            return
        enter, close = netns.preexec_entering(self.netns)
        try:
            yield {"preexec_fn": enter}
        finally:
            close()

    def in_pod(self) -> handlers.InPod:
        return handlers.InPod(self.ip, self.dir, self.in_pod_netns, self.host.connect, self.host.processes)

    def exec_target(self, name: str) -> ExecTarget | None:
        """What `kubectl exec` runs a command with: the running container's environment (as it was started), the pod
        directory and network namespace; None unless the container runs now (the kubelet finds no container)."""
        c = self.container(name)
        proc = c.proc if c is not None else None
        if c is None or proc is None:
            return None
        return ExecTarget(
            env=dict(c.proc_env),
            cwd=self.dir,
            popen_kwargs=self.in_pod_netns,
            alive=lambda: c.proc is proc,
            track=self.host.processes.register,
            untrack=self.host.processes.unregister,
        )

    def container_running(self, name: str) -> bool:
        """Whether the container's process runs now (a followed log may still grow)."""
        c = self.container(name)
        return c is not None and c.proc is not None and not c.proc.exited()

    def grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod.get("spec", {})
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        return float(30 if grace is None else grace)

    # -- one step ---------------------------------------------------------------------------------------------
    def _step(self) -> None:
        now = time.monotonic()
        if not self._prerequisites(now):
            return
        deadline = self.pod.get("spec", {}).get("activeDeadlineSeconds")
        if deadline is not None and self._age() > float(deadline):
            self._kill_all(self.grace())
            self.pod_reason = (
                "DeadlineExceeded",
                f"Pod was active on the node longer than the specified deadline of {deadline} seconds",
            )
            self.phase = "Failed"
            self._go_terminal()
            return
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        if not self._init_done():
            self._drive_init(policy, now)
        if self._init_done():
            for c in self.containers:
                self.runner.drive(c, policy, now)
            for c in self.containers:
                if c.running:
                    self.runner.probe(c, time.monotonic())
        self.phase = podstatus.phase(self.init_containers, self.containers, policy)
        if self.phase in TERMINAL:
            self._go_terminal()

    def _prerequisites(self, now: float) -> bool:
        """The pod sandbox, API access and volumes, each retried (not before its retry time) until it is there."""
        if (
            self.host.network is not None
            and self.netns is None
            and (now < self.net_retry_at or not self._make_sandbox())
        ):
            return False
        if not self.sa_ready:
            if now < self.sa_retry_at:
                return False
            error = self.inputs.setup_token(self.pod)
            if error:
                self._not_created(error)
                # the Node authorizer learns of a new binding from its own watch: the first refusals may be lag
                self.sa_attempts += 1
                self.sa_retry_at = now + (0.5 if self.sa_attempts <= 4 else CONFIG_RETRY)
                return False
            self.sa_ready = True
        else:
            self.inputs.refresh_token(now)
        if not self.volumes_ready:
            if now < self.volume_retry_at:
                return False
            error = self.inputs.materialize_volumes(self.pod)
            if error:
                self._not_created(error)
                self.volume_retry_at = now + CONFIG_RETRY
                return False
            self.volumes_ready = True
        return True

    def _drive_init(self, policy: str, now: float) -> None:
        """The first init container not done yet (they run one after another); once all are, the app containers
        become ContainerCreating."""
        c = next((c for c in self.init_containers if not (c.succeeded or c.skip)), None)
        if c is not None:
            self.runner.drive(c, "OnFailure" if policy == "Always" else policy, now)
        if self._init_done():
            for c in self.containers:
                c.waiting = ("ContainerCreating", "")

    def _age(self) -> float:
        return time.time() - parse_rfc3339(self.start_time)

    def _go_terminal(self) -> None:
        self._kill_all(0)
        self.terminal = True
        self.inputs.remove_token()
        self._release_address()  # the status keeps showing it; no process uses it any more
        log.info("pod %s: %s", self.key, self.phase)

    def _init_done(self) -> bool:
        return podstatus.init_done(self.init_containers)

    # -- stopping (the sequence is in stopping.py) --------------------------------------------------------------
    def _kill_all(self, grace: float) -> None:
        """Stop every running container (preStop hooks, SIGTERM, SIGKILL when its grace is over), reap them all.

        A shorter deletionGracePeriodSeconds arriving meanwhile cuts the wait; the pod vanishing (a force delete)
        SIGKILLs at once.
        """
        live = [c for c in self.all_containers() if c.running]
        started = time.monotonic()
        for c in live:
            if grace > 0:
                self.stopper.kill(c, grace, "")
                # one already stopping (liveness) gets no longer than this
                self.stopper.cut(c, started + grace, started)
            else:
                stopping.send(c, signal.SIGKILL)
        while any(c.running for c in live):
            now = time.monotonic()
            new_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            for c in live:
                self._stop_tick(c, None if new_grace is None else started + float(new_grace), now)
            if any(c.running for c in live):
                time.sleep(0.05)

    def _stop_tick(self, c: Container, end: float | None, now: float) -> None:
        """One pass of `_kill_all` over a container: a new grace period's `end`, a force delete, its exit, hooks."""
        if end is not None:
            self.stopper.cut(c, end, now)
        if self._vanished:
            stopping.send(c, signal.SIGKILL)
        if c.running:
            self.runner.reap(c, "Never")
        if c.running:
            self.stopper.advance(c, now)

    def _terminate_and_delete(self) -> None:
        """The kubelet's part of a graceful delete: stop the containers, report final status, remove the pod."""
        if not self.terminal:
            grace = self.grace()
            log.info("pod %s: deleting, grace period %.0fs", self.key, grace)
            self._kill_all(grace)
            for c in self.all_containers():
                if c.terminated is None:
                    c.terminated = c.last_terminated or {
                        "exitCode": 137 if c.ever_started else 0,
                        "reason": "ContainerStatusUnknown" if c.ever_started else "PodDeleted",
                        "startedAt": c.running_since or None,
                        "finishedAt": now_rfc3339(),
                    }
            all_ok = all(c.succeeded for c in self.containers) and bool(self.containers)
            self.phase = "Succeeded" if all_ok else "Failed"
            self.terminal = True
            self._release_address()
            self._sync_status()
        try:
            self.api.retrying(
                "DELETE",
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )
            log.info("pod %s: deleted", self.key)
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s: final delete failed: %s", self.key, e)

    # -- inputs from the API (podinputs.py) --------------------------------------------------------------------
    def _not_created(self, message: str) -> None:
        """A pod-level input is missing: containers that never started wait in ContainerCreating with `message`."""
        for c in self.all_containers():
            if not c.ever_started:
                c.waiting = ("ContainerCreating", message)

    # -- status (rendered by podstatus.py) --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        facts = podstatus.PodFacts(
            phase=self.phase,
            ip=self.ip,
            start_time=self.start_time,
            init_containers=self.init_containers,
            containers=self.containers,
            pod_reason=self.pod_reason,
            unsupported=self.unsupported,
        )
        status, self.transitions = podstatus.render(facts, self.transitions, now_rfc3339())
        return status

    def _sync_status(self) -> None:
        if self.last_sent == {}:  # a pod this agent never ran: its status is not ours to write
            return
        status = self.status()
        if status == self.last_sent:
            return
        try:
            self.api.retrying(
                "PATCH",
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                {"status": status},
                content_type=STRATEGIC,
                attempts=3,
            )
        except ApiError as e:
            if e.status == 404:
                self._vanished = True
                return
            log.warning("pod %s: status update failed (will retry): %s", self.key, e.message[:300])
            return
        self.last_sent = status
