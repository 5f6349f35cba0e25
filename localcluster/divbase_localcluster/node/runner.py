"""Running the containers of one pod: start each under its shim, reap it, restart it after back-off, probe it.

What a container is started with comes from launch.py (command line, environment) and podinputs.py (Secrets,
ConfigMaps, service links); its stop sequence is stopping.py's. The runner keeps no state of its own: everything
lives on the `Container` objects and is read from the pod worker through `PodSide`.
"""

from __future__ import annotations

import logging
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from . import handlers, hooks, launch, podspec, probes
from .container import Container, fresh_probes
from .host import PodHost
from .podinputs import PodInputs
from .shimproc import ShimProcess
from .stopping import Stopper
from .timefmt import now_rfc3339

log = logging.getLogger(__name__)

CONFIG_RETRY = 3.0  # seconds between attempts to resolve a missing Secret/ConfigMap
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 1.0, 10.0, 60.0  # restart back-off (kubelet: 10 s .. 5 min)


class PodSide(Protocol):
    """What the runner uses of its pod worker."""

    key: str
    name: str
    ns: str
    uid: str
    dir: Path
    ip: str
    host: PodHost
    inputs: PodInputs
    stopper: Stopper

    @property
    def pod(self) -> dict[str, Any]: ...

    def event(self, etype: str, reason: str, message: str, c: Container | None = None) -> None: ...

    def in_pod_netns(self) -> AbstractContextManager[dict[str, Any]]: ...

    def in_pod(self) -> handlers.InPod: ...

    def grace(self) -> float: ...


class ContainerRunner:
    """Drives each container of one pod through start, run and exit (restart policy, back-off, probes)."""

    def __init__(self, p: PodSide) -> None:
        self.p = p

    def drive(self, c: Container, policy: str, now: float) -> None:
        """Reap an exited process, kill one past its kill deadline, start one that is due."""
        if c.running:
            self.reap(c, policy)
            if c.running:
                self.p.stopper.advance(c, now)
            return
        if c.terminated is not None or now < c.next_start:
            return
        self.start(c)

    def _wait(self, c: Container, reason: str, message: str, retry: float, event: str | None = None) -> None:
        """The container cannot start yet: report it Waiting, try again in `retry` seconds; `event` is posted as a
        Warning the first time the reason appears."""
        if event is not None and c.waiting[0] != reason:
            self.p.event("Warning", "Failed", event, c)
        c.waiting = (reason, message)
        c.next_start = time.monotonic() + retry

    def start(self, c: Container) -> None:
        image = str(c.spec.get("image", ""))
        pulled = self.p.host.images.pull(image)
        resolved = pulled.resolved
        if resolved is None:
            event = pulled.message if pulled.reason == "ErrImagePull" else None
            self._wait(c, pulled.reason, pulled.message, 10, event)  # the map is read again when it changes
            return
        links = self.p.inputs.service_links(self.p.pod)
        try:
            env = self.p.inputs.container_env(self.p.pod, self.p.ip, c.spec, links)
        except podspec.ConfigError as e:
            self._wait(c, "CreateContainerConfigError", str(e), CONFIG_RETRY, f"Error: {e}")
            return
        term_file = self.p.dir / "termination" / c.name
        argv = launch.command_line(c.spec, resolved, env, term_file)
        if not argv:
            msg = (
                f"no command specified: container {c.name!r} has no `command` and image map entry "
                f"{resolved.entry!r} defines no entrypoint/cmd for {image}"
            )
            self._wait(c, "CreateContainerError", msg, 3600, f"Error: {msg}")
            return
        child_env = launch.process_env(resolved, env, self.p.dir, self.p.name, term_file)
        term_file.write_bytes(b"")
        if c.last_terminated is not None:
            c.restart_count += 1  # like the kubelet: counted when the next container is created
        log_path = self._spawn(c, argv, child_env)
        if log_path is not None:
            c.image_id, c.resolved, c.links = pulled.image_id, resolved, links  # imageID: `repository@sha256:...`
            log.info(
                "pod %s: container %s started (pid %d, image map entry %s, log %s)",
                self.p.key,
                c.name,
                c.pid,
                resolved.entry,
                log_path,
            )
            self._started(c)

    def _spawn(self, c: Container, argv: list[str], child_env: dict[str, str]) -> Path | None:
        """Start the container's shim, its output appended to the returned logs/<container>/<restart count>.log; a
        command that cannot be started ends the container at once (containerd: StartError, exit code 128): None."""
        log_dir = self.p.dir / "logs" / c.name
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{c.restart_count}.log"
        started_at = now_rfc3339()
        try:
            with log_path.open("ab") as out, self.p.in_pod_netns() as in_netns:
                proc = ShimProcess.start(
                    argv,
                    self.exit_file(c),
                    cwd=self.p.dir,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    **in_netns,
                )
        except OSError as e:
            msg = f'failed to start container process: exec: "{argv[0]}": {e.strerror or e}'
            log.warning("pod %s: container %s: %s", self.p.key, c.name, msg)
            self.p.event("Warning", "Failed", f"Error: {msg}", c)
            self.exited(
                c,
                {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": msg,
                    "startedAt": started_at,
                    "finishedAt": now_rfc3339(),
                },
            )
            return None
        c.proc, c.pid, c.proc_env = proc, proc.pid, child_env
        self.p.host.processes.register(proc.pid)
        c.running_since, c.started_mono, c.ever_started = started_at, time.monotonic(), True
        return log_path

    def _started(self, c: Container) -> None:
        """A fresh run: no kill pending, not ready, probes from their initial delays, postStart (if any) running."""
        c.kill_deadline, c.kill_reason = None, ""
        c.ready = False
        c.started = "startupProbe" not in c.spec
        c.probes = fresh_probes(c.spec, c.started_mono, c.started_mono)
        self.p.event("Normal", "Started", f"Started container {c.name}", c)
        post = hooks.handler(c.spec, "postStart")
        if post is not None:  # like the kubelet: not Running (no probes) until postStart returns
            c.poststart = handlers.start_hook(self.p.in_pod(), "PostStart", post, c.spec, c.proc_env, timeout=None)

    def exit_file(self, c: Container) -> Path:
        return self.p.dir / "termination" / f"{c.name}.exit"

    def reap(self, c: Container, policy: str) -> None:
        """If the container's shim exited: kill what is left of its group, record the exit, decide."""
        assert c.proc is not None
        if not c.proc.exited():
            return
        ended = c.proc.finish()
        self.p.host.processes.unregister(c.pid)
        c.proc = None
        exit_code = ended.exit_code
        log.info("pod %s: container %s exited with code %d", self.p.key, c.name, exit_code)
        if ended.error:  # the command could not be started (containerd: StartError, exit code 128)
            log.warning("pod %s: container %s: %s", self.p.key, c.name, ended.error)
            self.p.event("Warning", "Failed", f"Error: {ended.error}", c)
        term = {
            "exitCode": exit_code,
            "reason": "StartError" if ended.error else "Completed" if exit_code == 0 else "Error",
            "startedAt": c.running_since,
            "finishedAt": now_rfc3339(),
            "containerID": f"local://{c.pid}",
        }
        message = ended.error or launch.termination_message(
            self.p.dir / "termination" / c.name,
            self.p.dir / "logs" / c.name / f"{c.restart_count}.log",
            exit_code,
            c.spec.get("terminationMessagePolicy"),
        )
        if message:
            term["message"] = message
        restart = (exit_code != 0 and policy in ("Always", "OnFailure")) or (policy == "Always" and not c.init)
        if c.started_mono and time.monotonic() - c.started_mono > BACKOFF_RESET:
            c.backoff = 0.0
        self.exited(c, term, restart=restart)

    def exited(self, c: Container, term: dict[str, Any], restart: bool | None = None) -> None:
        if restart is None:
            policy = self.p.pod.get("spec", {}).get("restartPolicy", "Always")
            restart = policy in ("Always", "OnFailure")
        c.ready = c.started = False
        c.probes = {}
        c.kill_deadline = c.stop_started = None
        for run in (c.prestop, c.poststart):
            if run is not None:
                run.kill()
        c.prestop = c.poststart = None
        if not restart or self.p.pod["metadata"].get("deletionTimestamp") or self.p.host.stopping.is_set():
            c.terminated = term
            return
        c.last_terminated = term
        c.backoff = BACKOFF_START if not c.backoff else min(BACKOFF_MAX, c.backoff * 2)
        c.next_start = time.monotonic() + c.backoff
        msg = (
            f"back-off {c.backoff:.0f}s restarting failed container={c.name} "
            f"pod={self.p.name}_{self.p.ns}({self.p.uid})"
        )
        c.waiting = ("CrashLoopBackOff", msg)
        self.p.event("Warning", "BackOff", "Back-off restarting failed container", c)

    # -- probes (verdicts in probes.py, I/O in handlers.py) -----------------------------------------------------
    def probe(self, c: Container, now: float) -> None:
        if c.stop_started is not None or c.poststart is not None:
            return
        for kind in probes.ORDER:
            st = c.probes.get(kind)
            if st is None or not probes.due(kind, st, c.started, now):
                continue
            st.next_at = now + st.period
            ok, detail = handlers.probe(self.p.in_pod(), st.spec, c.spec, lambda: self._probe_env(c))
            verdict = probes.judge(kind, st, ok, detail)
            st.successes, st.failures = verdict.successes, verdict.failures
            if verdict.event:
                self.p.event("Warning", "Unhealthy", verdict.event, c)
            if verdict.ready is not None:
                c.ready = verdict.ready
            if verdict.started:
                c.started = True
            if verdict.kill:
                self.p.stopper.kill(c, probes.kill_grace(st, self.p.grace()), verdict.kill)
                return
        if "readinessProbe" not in c.probes:
            c.ready = c.started

    def _probe_env(self, c: Container) -> dict[str, str]:
        """An exec probe's environment: the container's variables resolved now, with its service links as created."""
        env = self.p.inputs.container_env(self.p.pod, self.p.ip, c.spec, c.links)
        return {"PATH": c.resolved.path if c.resolved else "/usr/bin:/bin", "HOME": str(self.p.dir), **env}
