"""`kubectl exec` on the local node: the kubelet's `/exec` endpoint, remotecommand v4.channel.k8s.io over SPDY/3.1.

What reaches a node from the v1.36 apiserver (pkg/registry/core/pod/rest/subresources.go): kubectl speaks WebSocket
(v5.channel.k8s.io) to the apiserver. Unless the Node lists `ExtendWebSocketsToKubelet` in status.declaredFeatures
(this one declares nothing), the apiserver's stream translator (TranslateStreamCloseWebsocketRequests, on by
default) ends the WebSocket itself and dials the node as client-go's SPDY executor, with its kubelet client
certificate: `POST /exec/<ns>/<pod>/<container>?command=..&input=1&output=1&error=1&tty=1` (only the flags set),
`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: v5..., v4..., v3..., v2.channel.k8s.io, channel.k8s.io`. kubectl's
own SPDY fallback is proxied to the node as it is. v4 is chosen, as by the kubelet's streaming server; the client
then opens one stream per channel (header `streamType`: error, stdin, stdout, stderr unless a TTY, resize with a
TTY). The command starts when all are open; stdout and stderr end with FIN when its output ends, then the error
stream carries a metav1.Status: Success, or NonZeroExitCode with the code as cause ExitCode, which kubectl turns
into "command terminated with exit code N" and its own exit code.

The command runs as the container's process does (its environment, the pod directory, the pod's network
namespace) in a process group of its own, killed when the session ends, the container stops or the agent stops.
With a TTY it gets a pseudo-terminal as its controlling terminal, sized by the resize stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pty
import queue
import select
import signal
import ssl
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import spdy
from .logserver import NAME, send_text

log = logging.getLogger(__name__)

PROTOCOL = "v4.channel.k8s.io"  # the one version the kubelet's streaming server and client-go both still speak
STREAM_CREATION_TIMEOUT = 30.0  # s the client has to open all its streams (the kubelet's default)
CHUNK = 32 * 1024
POLL = 0.5  # s between looks at the container and the agent while a command runs
CLOSE_WAIT = 5.0  # s the client has to close the session after the status went out
SEND_TIMEOUT = 4 * 3600.0  # s a frame may wait for the client to take it (the kubelet's streaming idle timeout)
STDIN_QUEUE = 64  # chunks of stdin the command has not read yet; then the session waits for it


class ExecRequestError(Exception):
    """Refused before the upgrade: the status and text the kubelet answers, which the apiserver passes on."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class ExecRequest:
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    def streams(self) -> set[str]:
        """The stream types the client opens (client-go's remotecommand v4)."""
        wanted = {"error"}
        for kind in ("stdin", "stdout", "stderr"):
            if getattr(self, kind):
                wanted.add(kind)
        if self.tty:
            wanted.add("resize")
        return wanted


@dataclass(frozen=True)
class ExecTarget:
    """A running container, as a command started in it needs it."""

    env: dict[str, str]
    cwd: Path
    popen_kwargs: Callable[[], AbstractContextManager[dict[str, Any]]]  # e.g. preexec_fn into the pod's netns
    alive: Callable[[], bool]  # this run of the container still runs
    track: Callable[[int], None]  # process groups the agent kills when it stops
    untrack: Callable[[int], None]


def parse_exec(target: str) -> ExecRequest:
    """`/exec/<ns>/<pod>[/<uid>]/<container>?command=..&input=1&output=1&error=1&tty=1` as the apiserver forwards
    `pods/exec` (the kubelet's names for stdin, stdout, stderr; "1" is true)."""
    url = urlsplit(target)
    parts = [unquote(p) for p in url.path.strip("/").split("/")]
    if parts[:1] != ["exec"] or len(parts) not in (4, 5) or not all(parts[1:]):
        raise ExecRequestError(400, "expected /exec/<namespace>/<pod>/<container>")
    names = (parts[1], parts[2], parts[-1])
    for what, value in zip(("namespace", "pod", "container"), names, strict=True):
        if not NAME.fullmatch(value) or ".." in value:
            raise ExecRequestError(400, f"{what}: not a valid name: {value[:64]!r}")
    query = parse_qs(url.query, keep_blank_values=True)

    def flag(name: str) -> bool:
        return query.get(name, [""])[-1] == "1"

    tty = flag("tty")
    req = ExecRequest(
        *names,
        command=tuple(query.get("command", [])),
        stdin=flag("input"),
        stdout=flag("output"),
        stderr=flag("error") and not tty,
        tty=tty,
    )  # the kubelet drops stderr with a TTY
    if not (req.stdin or req.stdout or req.stderr):
        raise ExecRequestError(400, "you must specify at least 1 of stdin, stdout, stderr")
    if not req.command:
        raise ExecRequestError(400, "you must specify at least one command for the container")
    return req


def negotiate(offered: list[str]) -> str:
    """The protocol version, as httpstream.Handshake picks it (the client's order, among what the server speaks)."""
    versions = [v.strip() for value in offered for v in value.split(",") if v.strip()]
    if not versions:
        raise ExecRequestError(400, "unable to upgrade: header X-Stream-Protocol-Version does not exist in request")
    if PROTOCOL not in versions:
        raise ExecRequestError(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {versions}, server accepts [{PROTOCOL}]",
            {"X-Accepted-Stream-Protocol-Versions": PROTOCOL},
        )
    return PROTOCOL


def check_upgrade(headers: Any) -> None:
    """Only SPDY/3.1 is served: a WebSocket would come only from a client the apiserver does not translate."""
    connection = (headers.get("Connection") or "").lower()
    upgrade = (headers.get("Upgrade") or "").lower()
    if "upgrade" not in connection or not upgrade:
        raise ExecRequestError(400, "Upgrade request required")
    if "spdy/3.1" not in upgrade:
        raise ExecRequestError(400, f"unable to upgrade: the local node serves exec over SPDY/3.1, not {upgrade!r}")


def exit_status(returncode: int) -> dict[str, Any]:
    """The v4 error-stream payload for a finished command (a signal counts as 128 + its number, as in a shell)."""
    code = returncode if returncode >= 0 else 128 - returncode
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "InternalError",
        "code": 500,
        "message": f"Internal error occurred: {message}",
    }


class TLSChannel:
    """One TLS connection used by a reading thread and several writing ones. OpenSSL allows no concurrent use of a
    connection, so every recv and send holds the lock; the socket is non-blocking and the reader waits for data
    (select) without holding it."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = threading.Event()
        sock.setblocking(False)

    def recv(self) -> bytes:
        """What arrived next; b"" once the peer closed, the connection broke or `close()` was called."""
        while not self.closed.is_set():
            with self.lock:
                try:
                    return self.sock.recv(CHUNK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except OSError:  # ssl.SSLError included
                    return b""
            select.select([self.sock], [], [], POLL)
        return b""

    def send(self, data: bytes) -> None:
        deadline = time.monotonic() + SEND_TIMEOUT
        view = memoryview(data)
        with self.lock:
            while view:
                if self.closed.is_set():
                    raise BrokenPipeError("session closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the client took nothing for {SEND_TIMEOUT:.0f} s")  # taken for gone
                try:
                    view = view[self.sock.send(view) :]
                except ssl.SSLWantWriteError:
                    select.select([], [self.sock], [], min(left, POLL))
                except ssl.SSLWantReadError:
                    select.select([self.sock], [], [], min(left, POLL))

    def close(self) -> None:
        self.closed.set()


class ExecSession:
    """One upgraded connection: the client's streams, the command, and the status at the end."""

    def __init__(self, chan: TLSChannel, req: ExecRequest, target: ExecTarget, stopping: threading.Event) -> None:
        self.chan = chan
        self.req = req
        self.target = target
        self.stopping = stopping
        self.writer = spdy.FrameWriter()
        self.out_lock = threading.Lock()  # frames go out in the order they were encoded (header compression)
        self.streams: dict[str, int] = {}  # stream type -> id
        self.reset: set[int] = set()  # streams the client aborted: nothing more goes there
        self.last_stream = 0
        self.ready = threading.Event()  # all expected streams are open
        self.gone = threading.Event()  # the client closed or aborted the session
        self.wake = threading.Event()  # something the main loop waits for happened
        self.stdin: queue.Queue[bytes | None] = queue.Queue(STDIN_QUEUE)
        self.size: tuple[int, int] | None = None  # (columns, rows) from the resize stream
        self.resize_buf = b""
        self.master: int | None = None  # the pseudo-terminal, with a TTY
        self.finished = threading.Event()

    # -- frames -----------------------------------------------------------------------------------------------
    def send(self, make: Callable[[spdy.FrameWriter], bytes]) -> bool:
        """Encode and send one frame; False when the client can no longer be reached."""
        try:
            with self.out_lock:
                self.chan.send(make(self.writer))
            return True
        except OSError as e:
            if not self.gone.is_set():
                log.debug("exec: sending failed: %s", e)
            self._gone()
            return False

    def _gone(self) -> None:
        self.gone.set()
        self.wake.set()

    def read_loop(self) -> None:
        reader = spdy.FrameReader()
        try:
            while data := self.chan.recv():
                for frame in reader.feed(data):
                    self.handle(frame)
        except spdy.ProtocolError as e:
            log.warning("exec: %s", e)
            self.send(lambda w: w.goaway(self.last_stream, spdy.GOAWAY_PROTOCOL_ERROR))
        finally:
            self._gone()
            self._stdin_put(None)

    def handle(self, frame: spdy.Frame) -> None:
        if frame.kind == spdy.SYN_STREAM:
            self._on_syn_stream(frame)
        elif frame.kind == spdy.DATA:
            self._on_data(frame)
        elif frame.kind == spdy.RST_STREAM:
            self._on_rst_stream(frame)
        elif frame.kind == spdy.PING:
            self.send(lambda w: w.ping(frame.value))
        elif frame.kind == spdy.GOAWAY:
            self._gone()

    def _kind_of(self, stream_id: int) -> str:
        return next((k for k, sid in self.streams.items() if sid == stream_id), "")

    def _on_syn_stream(self, frame: spdy.Frame) -> None:
        """The client opens one of the streams the request announced (each once); all open: the command may start."""
        self.last_stream = max(self.last_stream, frame.stream_id)
        kind = (frame.headers.get("streamtype") or [""])[0]
        if kind not in self.req.streams() or kind in self.streams:
            log.warning("exec: unexpected stream type %r", kind)
            self.send(lambda w: w.rst_stream(frame.stream_id, spdy.REFUSED_STREAM))
            return
        self.streams[kind] = frame.stream_id
        self.send(lambda w: w.syn_reply(frame.stream_id))
        if frame.fin:
            self._end_of(kind)
        if set(self.streams) == self.req.streams():
            self.ready.set()

    def _on_data(self, frame: spdy.Frame) -> None:
        kind = self._kind_of(frame.stream_id)
        if kind == "stdin" and frame.data:
            self._stdin_put(frame.data)
        elif kind == "resize":
            self._resize(frame.data)
        if frame.fin:
            self._end_of(kind)

    def _on_rst_stream(self, frame: spdy.Frame) -> None:
        self.reset.add(frame.stream_id)
        kind = self._kind_of(frame.stream_id)
        if kind == "stdin":
            self._stdin_put(None)
        elif kind == "error":  # the client cannot learn the outcome: it is going away
            self._gone()

    def _end_of(self, kind: str) -> None:
        if kind == "stdin":
            self._stdin_put(None)

    def _stdin_put(self, item: bytes | None) -> None:
        while not self.finished.is_set():
            try:
                self.stdin.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def _resize(self, data: bytes) -> None:
        """client-go writes one JSON object per line: {"Width": columns, "Height": rows}."""
        self.resize_buf += data
        *lines, self.resize_buf = self.resize_buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                size = json.loads(line)
                self.size = (int(size["Width"]), int(size["Height"]))
                if self.master is not None:
                    _set_size(self.master, self.size)

    def output(self, kind: str, data: bytes, fin: bool = False) -> None:
        sid = self.streams.get(kind)
        if sid is not None and sid not in self.reset:
            self.send(lambda w: w.data(sid, data, fin))

    # -- the command ------------------------------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self.read_loop, name="exec-read", daemon=True).start()
        deadline = time.monotonic() + STREAM_CREATION_TIMEOUT
        while not self.ready.wait(POLL):
            if self.gone.is_set() or time.monotonic() > deadline:
                log.warning(
                    "exec: the client did not open its streams (%s of %s)",
                    sorted(self.streams),
                    sorted(self.req.streams()),
                )
                self.close()
                return
        try:
            proc = self.start()
        except OSError as e:
            what = f'exec: "{self.req.command[0]}": {e.strerror or e}'
            if isinstance(e, FileNotFoundError) and "/" not in self.req.command[0]:
                what = f'exec: "{self.req.command[0]}": executable file not found in $PATH'
            log.info(
                "exec in %s/%s/%s: cannot start: %s",
                self.req.namespace,
                self.req.pod,
                self.req.container,
                e.strerror or e,
            )
            self.finish(internal_error(f"error executing command in container: {what}"))
            return
        self.target.track(proc.pid)
        try:
            self.supervise(proc)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # what it left behind ends with the session
            proc.wait()
            self.target.untrack(proc.pid)
            self.close()

    def start(self) -> subprocess.Popen[bytes]:
        req = self.req
        common: dict[str, Any] = {"cwd": self.target.cwd, "env": self.target.env, "start_new_session": True}
        with self.target.popen_kwargs() as extra:
            if not req.tty:
                pipe = {True: subprocess.PIPE, False: subprocess.DEVNULL}
                return subprocess.Popen(
                    list(req.command),
                    stdin=pipe[req.stdin],
                    stdout=pipe[req.stdout],
                    stderr=pipe[req.stderr],
                    **common,
                    **extra,
                )
            master, slave = pty.openpty()
            if self.size:
                _set_size(master, self.size)
            enter = extra.pop("preexec_fn", None)

            def preexec() -> None:
                if enter is not None:
                    enter()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # after setsid: the terminal becomes the session's

            try:
                proc = subprocess.Popen(
                    list(req.command), stdin=slave, stdout=slave, stderr=slave, preexec_fn=preexec, **common, **extra
                )
            except OSError:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self.master = master
            if self.size:  # a size that came while the command started
                _set_size(master, self.size)
            return proc

    def supervise(self, proc: subprocess.Popen[bytes]) -> None:
        """Pump until the command exited and its output ended; kill it if the client, the container or the agent
        goes first; then report how it ended."""
        pumps = self._start_io(proc)
        self._thread(lambda: (proc.wait(), self.wake.set()))
        killed = ""
        while proc.poll() is None or any(p.is_alive() for p in pumps):
            self.wake.wait(POLL)
            self.wake.clear()
            if killed:
                continue
            killed = self._kill_reason()
            if killed:
                log.info("exec in %s/%s/%s: killed: %s", self.req.namespace, self.req.pod, self.req.container, killed)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if not self.gone.is_set():
            self.finish(exit_status(proc.returncode))

    def _start_io(self, proc: subprocess.Popen[bytes]) -> list[threading.Thread]:
        """Threads pumping the command's output to the client (returned: the session waits for them) and the
        client's stdin to the command: through the terminal with a tty, else through the pipes."""
        if self.master is not None:
            pumps = [self._thread(self.pump, self.master, "stdout")]
            if self.req.stdin:
                self._thread(self.feed, self.master, False)
            return pumps
        pumps = [
            self._thread(self.pump, pipe.fileno(), kind)
            for kind, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
            if pipe is not None
        ]
        if proc.stdin is not None:
            self._thread(self.feed, proc.stdin.fileno(), True)
        return pumps

    def _kill_reason(self) -> str:
        """Why the command must die now ("": it may go on)."""
        if self.gone.is_set():
            return "the client went away"
        if self.stopping.is_set():
            return "the agent stops"
        return "" if self.target.alive() else "the container stopped"

    def _thread(self, target: Callable[..., Any], *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name="exec-io", daemon=True)
        t.start()
        return t

    def pump(self, fd: int, kind: str) -> None:
        try:
            while True:
                try:
                    data = os.read(fd, CHUNK)
                except OSError:  # EIO: the terminal's last user is gone
                    data = b""
                if not data:
                    break
                self.output(kind, data)
        finally:
            self.output(kind, b"", fin=True)
            self.wake.set()

    def feed(self, fd: int, close_at_end: bool) -> None:
        """stdin: the client's bytes to the command; its end closes the pipe (a terminal stays open, as in a
        runtime). A command that stopped reading gets nothing more; the rest is dropped."""
        broken = False
        while not self.finished.is_set():
            try:
                item = self.stdin.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is None:
                break
            while item and not broken:
                try:
                    item = item[os.write(fd, item) :]
                except OSError:
                    broken = True
        if close_at_end:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the end ----------------------------------------------------------------------------------------------
    def finish(self, status: dict[str, Any]) -> None:
        """The status on the error stream, our halves of every stream closed, GOAWAY; then the client closes."""
        error = self.streams["error"]
        if error not in self.reset:
            self.send(lambda w: w.data(error, json.dumps(status).encode(), fin=True))
        for kind in ("stdin", "resize"):
            if kind in self.streams:
                self.output(kind, b"", fin=True)
        self.send(lambda w: w.goaway(self.last_stream))
        self.gone.wait(CLOSE_WAIT)

    def close(self) -> None:
        self.finished.set()
        self.chan.close()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


def _set_size(fd: int, size: tuple[int, int]) -> None:
    columns, rows = size
    with contextlib.suppress(OSError, struct.error):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class ExecServer:
    """The `/exec` route of the node's HTTPS endpoint (the caller has already checked it is the apiserver)."""

    def __init__(self, lookup: Callable[[str, str, str], ExecTarget], stopping: threading.Event) -> None:
        self.lookup = lookup  # raises ExecRequestError: 404 pod, 500 container not running (kubelet's answers)
        self.stopping = stopping

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            req = parse_exec(handler.path)
            target = self.lookup(req.namespace, req.pod, req.container)
            check_upgrade(handler.headers)
            protocol = negotiate(handler.headers.get_all("X-Stream-Protocol-Version") or [])
        except ExecRequestError as e:
            send_text(handler, e.status, str(e), e.headers)
            return
        handler.close_connection = True
        handler.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: " + protocol.encode() + b"\r\n\r\n"
        )
        handler.wfile.flush()
        handler.log_request(101)
        log.info("exec in %s/%s/%s (stdin %s, tty %s)", req.namespace, req.pod, req.container, req.stdin, req.tty)
        ExecSession(TLSChannel(handler.connection), req, target, self.stopping).run()  # type: ignore[arg-type]
