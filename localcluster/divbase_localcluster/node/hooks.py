"""Container lifecycle hooks (preStop, postStart) the way the kubelet runs them.

The kubelet's rules (pkg/kubelet/kuberuntime/kuberuntime_container.go, killContainer / executePreStopHook /
startContainer; pkg/kubelet/lifecycle/handlers.go):

- preStop runs before the stop signal and shares the grace period with it: the hook gets at most `grace` seconds
  (then it is abandoned, not waited for), the stop signal follows, and what is left of the grace period - in whole
  seconds, `grace - int(elapsed)` - is the time between SIGTERM and SIGKILL, but never less than 2 s
  (minimumGracePeriodInSeconds). No hook runs when the grace period is 0.
- A failing hook records a Warning Event (`FailedPreStopHook` / `FailedPostStartHook`, message "PreStopHook failed"
  / "PostStartHook failed": the kubelet keeps the details out of Events so no secret leaks) and termination goes
  on. A failing postStart kills the container (its preStop runs), which then restarts by restartPolicy.
- exec fails on a non-zero exit code (or a command that cannot run); httpGet only on a transport error (the
  response status is not looked at; TLS is not verified; User-Agent kube-lifecycle/<major>.<minor>); sleep never
  fails unless interrupted by the container exiting.

Pure helpers live here; `HookRun` runs one handler on a thread so the pod loop never blocks on it.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_GRACE = 2.0  # kubelet: minimumGracePeriodInSeconds, the least time between SIGTERM and SIGKILL
SUPPORTED_HANDLERS = ("exec", "httpGet", "sleep")
USER_AGENT = "kube-lifecycle/{version}"
PROBE_USER_AGENT = "kube-probe/{version}"  # what the kubelet's HTTP probes send
Connect = Callable[[tuple[str, int], "float | None"], socket.socket]  # socket.create_connection's shape


def handler(container: dict[str, Any], hook: str) -> dict[str, Any] | None:
    """The container's `lifecycle.<hook>` handler (hook: "preStop" | "postStart"), None when there is none."""
    h = (container.get("lifecycle") or {}).get(hook)
    return h if isinstance(h, dict) and h else None


def unsupported_handler_fields(lifecycle: dict[str, Any]) -> list[str]:
    """Paths (relative to `lifecycle`) the agent cannot run: unknown hooks and handler kinds (e.g. tcpSocket,
    which the API accepts only for backward compatibility and the kubelet rejects too)."""
    found = [k for k in sorted(lifecycle) if k not in ("preStop", "postStart", "stopSignal")]
    for hook in ("preStop", "postStart"):
        h = lifecycle.get(hook) or {}
        found += [f"{hook}.{k}" for k in sorted(h) if k not in SUPPORTED_HANDLERS]
    if lifecycle.get("stopSignal"):
        found.append("stopSignal")
    return found


def stop_window(grace: float, prestop_elapsed: float | None) -> float:
    """Seconds between SIGTERM and SIGKILL: the grace period minus the whole seconds preStop took, at least 2.

    `prestop_elapsed` is None when no preStop hook ran (then the grace period is the window, still at least 2).
    """
    remaining = grace - (math.floor(prestop_elapsed) if prestop_elapsed is not None else 0)
    return max(MIN_GRACE, remaining)


def resolve_port(port: int | str, container: dict[str, Any]) -> int:
    """A port number, or the containerPort of the container's port of that name (kubelet's ResolveContainerPort)."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise OSError(f"couldn't find port: {port} in container {container.get('name', '')}")


@dataclass(frozen=True)
class HttpRequest:
    scheme: str
    host: str
    port: int
    path: str
    headers: dict[str, str]


def http_request(
    http_get: dict[str, Any], container: dict[str, Any], pod_ip: str, version: str, user_agent: str = USER_AGENT
) -> HttpRequest:
    """The request an httpGet handler (or, with PROBE_USER_AGENT, probe) makes: host defaults to the pod IP,
    scheme HTTP, path as given (a leading slash added), httpHeaders as given (a `Host` header sets the host sent),
    the kubelet's User-Agent and `Accept: */*` unless given."""
    headers = {h["name"]: h.get("value", "") for h in http_get.get("httpHeaders") or []}
    lower = {k.lower() for k in headers}
    if "user-agent" not in lower:
        headers["User-Agent"] = user_agent.format(version=version)
    if "accept" not in lower:
        headers["Accept"] = "*/*"
    path = str(http_get.get("path") or "")
    if not path.startswith("/"):
        path = "/" + path
    return HttpRequest(
        scheme=str(http_get.get("scheme") or "HTTP").lower(),
        host=str(http_get.get("host") or pod_ip),
        port=resolve_port(http_get.get("port", 80), container),
        path=path,
        headers=headers,
    )


def do_http(req: HttpRequest, timeout: float | None, connect: Connect = socket.create_connection) -> int:
    """Send the GET over a connection `connect` makes (the pod network's node namespace, when there is one);
    returns the status, not judged (only a transport error fails a hook). TLS is not verified."""
    conn: http.client.HTTPConnection
    if req.scheme == "https":
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(req.host, req.port, timeout=timeout, context=context)
        conn.sock = context.wrap_socket(connect((req.host, req.port), timeout), server_hostname=req.host)
    else:
        conn = http.client.HTTPConnection(req.host, req.port, timeout=timeout)
        conn.sock = connect((req.host, req.port), timeout)
    try:
        conn.request("GET", req.path, headers=req.headers)
        resp = conn.getresponse()
        resp.read(10 * 1024)
        return resp.status
    finally:
        conn.close()


@dataclass
class HookRun:
    """One handler running on its own thread. `done` is set when it finished; `error` is "" on success."""

    kind: str  # "PreStop" | "PostStart"
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)  # the container exited: stop sleeping
    error: str = ""
    reported: bool = False  # its failure (if any) has been turned into an Event
    proc: subprocess.Popen[bytes] | None = None  # an exec handler's process (own process group)

    def kill(self) -> None:
        """The container is gone: end a sleep, kill an exec handler's processes (they lived "in" the container)."""
        self.cancel.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def start(self, work: Callable[[HookRun], None]) -> HookRun:
        def run() -> None:
            try:
                work(self)
            except (OSError, subprocess.SubprocessError, http.client.HTTPException, ValueError) as e:
                self.error = f"{type(e).__name__}: {e}"
            except Exception as e:  # never let a hook take the agent down
                self.error = f"{type(e).__name__}: {e}"
            finally:
                self.done.set()

        threading.Thread(target=run, name=f"hook-{self.kind}", daemon=True).start()
        return self

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def sleep(self, seconds: float) -> None:
        if self.cancel.wait(max(0.0, seconds)):
            raise OSError("container terminated before sleep hook finished")
