"""Stopping a container the way the kubelet's killContainer does, one step per pod-loop tick.

The Killing event, the preStop hook (only with a grace period above 0) for at most the grace period, then SIGTERM,
then SIGKILL once what is left of the grace period has passed (at least 2 s; the rules are in hooks.py). A failed
postStart hook kills the container the same way. Nothing here waits: `advance` is called again on the next tick.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from . import handlers, hooks
from .container import Container

log = logging.getLogger(__name__)

Event = Callable[[str, str, str, "Container | None"], None]  # (type, reason, message, container)


def send(c: Container, sig: signal.Signals) -> None:
    """Signal the container's whole process group (if it runs)."""
    if c.proc is not None:
        c.proc.signal_group(sig)


class Stopper:
    """The stop sequence of one pod's containers; state lives on each `Container` (stop_started, kill_deadline...)."""

    def __init__(
        self, key: str, event: Event, in_pod: Callable[[], handlers.InPod], pod_grace: Callable[[], float]
    ) -> None:
        self.key = key  # namespace/name, for the log
        self.event = event
        self.in_pod = in_pod  # the pod as hooks see it (its IP may change before the first start)
        self.pod_grace = pod_grace  # the pod's grace period now (a failed postStart hook uses it)

    def kill(self, c: Container, grace: float, reason: str) -> None:
        """Start stopping a container: Killing event, its preStop hook for at most `grace` seconds (none with 0),
        else SIGTERM at once. `advance` moves it along."""
        if c.proc is None or c.stop_started is not None:
            return
        self.event("Normal", "Killing", f"Stopping container {c.name}" + (f": {reason}" if reason else ""), c)
        now = time.monotonic()
        c.kill_reason = reason
        c.stop_started, c.stop_end = now, now + grace
        pre = hooks.handler(c.spec, "preStop")
        if pre is not None and grace > 0:
            log.info("pod %s: container %s: running its preStop hook (grace period %.0fs)", self.key, c.name, grace)
            c.prestop = handlers.start_hook(self.in_pod(), "PreStop", pre, c.spec, c.proc_env, timeout=grace)
            return
        self._sigterm(c, now)

    def _sigterm(self, c: Container, now: float) -> None:
        assert c.stop_started is not None
        elapsed = now - c.stop_started if c.prestop is not None else None
        window = hooks.stop_window(c.stop_end - c.stop_started, elapsed)
        send(c, signal.SIGTERM)
        c.kill_deadline = now + window

    @staticmethod
    def cut(c: Container, end: float, now: float) -> None:
        """A shorter grace period arrived (a later delete): the preStop hook may run only until `end`; a SIGTERM
        already sent is followed by SIGKILL at `end`, but not within 2 s of now (the kubelet stops it again)."""
        if c.stop_started is None or end >= c.stop_end:
            return
        c.stop_end = end
        if c.kill_deadline is not None:
            c.kill_deadline = min(c.kill_deadline, max(end, now + hooks.MIN_GRACE))

    def advance(self, c: Container, now: float) -> None:
        """A running container: postStart finished (a failure kills the container)? preStop done or out of time
        (then SIGTERM)? Past the kill deadline (then SIGKILL)?"""
        self._poststart_done(c)
        self._prestop_done(c)
        pre = c.prestop
        prestop_over = pre is None or pre.done.is_set() or now >= c.stop_end
        if c.stop_started is not None and c.kill_deadline is None and prestop_over:
            if pre is not None and not pre.done.is_set():
                log.info("pod %s: container %s: preStop hook not completed in the grace period", self.key, c.name)
            self._sigterm(c, now)
        if c.kill_deadline is not None and now >= c.kill_deadline:
            send(c, signal.SIGKILL)

    def _poststart_done(self, c: Container) -> None:
        post = c.poststart
        if post is None or not post.done.is_set():
            return
        c.poststart = None
        if post.error and c.stop_started is None:
            log.warning("pod %s: container %s: postStart hook failed: %s", self.key, c.name, post.error)
            # like the kubelet: no details in the Event (they may carry secrets)
            self.event("Warning", "FailedPostStartHook", "PostStartHook failed", c)
            self.kill(c, self.pod_grace(), "FailedPostStartHook")

    def _prestop_done(self, c: Container) -> None:
        pre = c.prestop
        if pre is None or not pre.done.is_set() or pre.reported:
            return
        pre.reported = True
        if pre.error:
            log.warning("pod %s: container %s: preStop hook failed: %s", self.key, c.name, pre.error)
            self.event("Warning", "FailedPreStopHook", "PreStopHook failed", c)
