"""Running what the kubelet runs against a container: probes (httpGet, tcpSocket, exec) and lifecycle handlers
(exec, httpGet, sleep). The I/O half; node/probes.py judges the results and node/hooks.py holds the hook rules.
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import build
from . import hooks, podspec
from .host import ProcessGroups

KUBE_MINOR = ".".join(build.K8S_VERSION.lstrip("v").split(".")[:2])  # User-Agents: kube-probe/1.36


@dataclass(frozen=True)
class InPod:
    """Where a handler runs: the pod's IP and directory, how to start a process in its network namespace, and the
    node's way to connect to it."""

    ip: str
    cwd: Path
    popen_kwargs: Callable[[], AbstractContextManager[dict[str, Any]]]
    connect: hooks.Connect
    processes: ProcessGroups


def probe(
    pod: InPod, spec: dict[str, Any], container: dict[str, Any], exec_env: Callable[[], dict[str, str]]
) -> tuple[bool, str]:
    """Run one probe: (passed, detail for the Unhealthy event). `exec_env` is called only for an exec probe (it
    may raise ConfigError: a Secret gone since the start fails the probe)."""
    timeout = float(spec.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in spec:
            req = hooks.http_request(spec["httpGet"], container, pod.ip, KUBE_MINOR, user_agent=hooks.PROBE_USER_AGENT)
            status = hooks.do_http(req, timeout, pod.connect)
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in spec:
            t = spec["tcpSocket"]
            with pod.connect((t.get("host") or pod.ip, hooks.resolve_port(t["port"], container)), timeout):
                return True, ""
        if "exec" in spec:
            env = exec_env()
            with pod.popen_kwargs() as in_netns:
                r = subprocess.run(
                    spec["exec"].get("command") or [],
                    cwd=pod.cwd,
                    env=env,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                    **in_netns,
                )
            return r.returncode == 0, f"exit code {r.returncode}"
    except (OSError, subprocess.SubprocessError, podspec.ConfigError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}"
    return True, "probe type not supported"


def start_hook(
    pod: InPod, kind: str, h: dict[str, Any], container: dict[str, Any], env: dict[str, str], timeout: float | None
) -> hooks.HookRun:
    """Run a lifecycle handler on its own thread: exec in the container's environment and directory (its own
    process group, killed with the container), httpGet to the pod IP, or sleep."""
    env = dict(env)

    def work(r: hooks.HookRun) -> None:
        if "exec" in h:
            _exec(pod, r, list(h["exec"].get("command") or []), env)
        elif "httpGet" in h:
            hooks.do_http(hooks.http_request(h["httpGet"], container, pod.ip, KUBE_MINOR), timeout, pod.connect)
        elif "sleep" in h:
            r.sleep(float(h["sleep"].get("seconds") or 0))
        else:
            raise ValueError(f"invalid handler: {sorted(h)}")

    return hooks.HookRun(kind).start(work)


def _exec(pod: InPod, r: hooks.HookRun, argv: list[str], env: dict[str, str]) -> None:
    with pod.popen_kwargs() as in_netns:
        r.proc = subprocess.Popen(
            argv,
            cwd=pod.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **in_netns,
        )
    pod.processes.register(r.proc.pid)
    if r.cancel.is_set():  # the container ended while this was starting
        r.kill()
    try:
        code = r.proc.wait()
    finally:
        pod.processes.unregister(r.proc.pid)
    if code != 0:
        raise OSError(f"exit code {code}")  # not the command line: it is never logged
