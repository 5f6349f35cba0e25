"""The kubelet's HTTPS endpoint: container logs, so `kubectl logs` (with -f, --previous, --tail, --limit-bytes)
works on the local node, and `/exec` (execserver), so `kubectl exec` does.

The apiserver serves `pods/log` by proxying to `https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>
/containerLogs/<namespace>/<pod>/<container>`, authenticating with its kubelet client certificate and checking the
node's serving certificate against --kubelet-certificate-authority. This server is that endpoint: TLS with a
certificate for 127.0.0.1, and only a client certificate from the cluster's CA whose CN is the apiserver's kubelet
client is served (anyone else on the machine gets the TLS handshake refused or a 403), exec included.

Logs are the files the pod worker writes, `<pods>/<ns>_<pod>_<uid>/logs/<container>/<restart>.log` (stdout and
stderr together, as a container runtime keeps them). Not served: `--timestamps` and `--since` (the files hold no
per-line times), attach and port-forward: those are refused with a message saying so."""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..certs import APISERVER_KUBELET_CLIENT_CN

log = logging.getLogger(__name__)

FOLLOW_POLL = 0.2  # s between reads of a followed log
CHUNK = 64 * 1024
# what the apiserver lets through is a DNS subdomain (namespace: label) already; checked again, so no path can name
# a file outside the pods' directories
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
IDLE_TIMEOUT = 60  # s a socket read or write may block (a handshake never finished, a client that stopped reading)
UNSUPPORTED_PARAMS = {"timestamps": "--timestamps", "sinceSeconds": "--since", "sinceTime": "--since-time"}


class LogRequestError(Exception):
    """What the kubelet answers with a 4xx: the apiserver passes the text on to kubectl."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    pod: str
    container: str
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    if name not in query:
        return None
    raw = query[name][-1]
    try:
        value = int(raw)
    except ValueError:
        raise LogRequestError(400, f"{name}: must be an integer, got {raw[:40]!r}") from None
    if value < 0:
        raise LogRequestError(400, f"{name}: must not be negative, got {value}")
    return value


def parse_request(target: str) -> LogRequest:
    """`/containerLogs/<ns>/<pod>/<container>?follow=true&previous=true&tailLines=N&limitBytes=N`."""
    url = urlsplit(target)
    parts = [unquote(p) for p in url.path.strip("/").split("/")]
    if parts[:1] != ["containerLogs"]:
        what = parts[0] if parts and parts[0] else "/"
        raise LogRequestError(
            404, f"{what}: the local node serves only containerLogs and exec (no attach or port-forward)"
        )
    if len(parts) != 4 or not all(parts[1:]):
        raise LogRequestError(400, "expected /containerLogs/<namespace>/<pod>/<container>")
    for what, value in zip(("namespace", "pod", "container"), parts[1:], strict=True):
        if not NAME.fullmatch(value) or ".." in value:
            raise LogRequestError(400, f"{what}: not a valid name: {value[:64]!r}")
    query = parse_qs(url.query)
    for param, flag in UNSUPPORTED_PARAMS.items():
        if param in query:
            raise LogRequestError(
                400, f"{flag} is not supported on the local node: its log files hold no per-line times"
            )
    truthy = ("true", "1")
    return LogRequest(
        parts[1],
        parts[2],
        parts[3],
        follow=query.get("follow", [""])[-1] in truthy,
        previous=query.get("previous", [""])[-1] in truthy,
        tail_lines=_int_param(query, "tailLines"),
        limit_bytes=_int_param(query, "limitBytes"),
    )


def container_logs(pods_dir: Path, req: LogRequest) -> list[Path]:
    """The container's log files of the pod's newest directory (a pod recreated under its name has a new uid), oldest
    restart first."""
    pod_dirs = sorted(pods_dir.glob(f"{req.namespace}_{req.pod}_*"), key=lambda p: p.stat().st_mtime)
    if not pod_dirs:
        raise LogRequestError(404, f'pod "{req.pod}" in namespace "{req.namespace}" has not run on this node')
    directory = pod_dirs[-1] / "logs" / req.container
    files = [p for p in directory.glob("*.log") if p.stem.isdigit()]
    if not files:
        raise LogRequestError(
            400, f'container "{req.container}" in pod "{req.pod}" is waiting to start or does not exist'
        )
    return sorted(files, key=lambda p: int(p.stem))


def choose(files: list[Path], req: LogRequest) -> Path:
    if not req.previous:
        return files[-1]
    if len(files) < 2:
        raise LogRequestError(400, f'previous terminated container "{req.container}" in pod "{req.pod}" not found')
    return files[-2]


def tail(data: bytes, lines: int | None) -> bytes:
    """The last `lines` lines of `data` (a last line without newline counts), as the kubelet's tailLines."""
    if lines is None:
        return data
    if lines == 0:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]


def send_text(
    handler: BaseHTTPRequestHandler, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """An answer as the kubelet gives it before any stream: a status and a text the apiserver passes on."""
    body = message.encode()
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LogServer:
    """HTTPS server of the container logs; `is_running(ns, pod, container)` says whether a followed log may grow;
    `exec_handler` serves `/exec/...` (execserver.ExecServer.serve)."""

    def __init__(
        self,
        pods_dir: Path,
        cert: Path,
        key: Path,
        client_ca: Path,
        is_running: Callable[[str, str, str], bool],
        stopping: threading.Event,
        host: str = "127.0.0.1",
        exec_handler: Callable[[BaseHTTPRequestHandler], None] | None = None,
    ) -> None:
        self.pods_dir = pods_dir
        self.is_running = is_running
        self.stopping = stopping
        self.exec_handler = exec_handler
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate from the cluster's CA: no handshake
        self.httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self.httpd.daemon_threads = True
        # the handshake runs in the request's thread, so a client that never completes it blocks nobody else
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(self.httpd.server_address[1])

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.httpd.serve_forever, name="log server", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def stream(self, req: LogRequest, path: Path, write: Callable[[bytes], Any]) -> None:
        """`path` (chosen before the 200 went out): its tail, then, when following, what the container adds."""
        whole = path.read_bytes()
        offset = len(whole)  # following goes on from exactly what was read
        data = tail(whole, req.tail_lines)
        budget = req.limit_bytes
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        write(data)
        if not req.follow or req.previous:
            return
        with path.open("rb") as f:
            while budget is None or budget > 0:
                f.seek(offset)
                chunk = f.read(CHUNK if budget is None else min(CHUNK, budget))
                if chunk:
                    offset += len(chunk)
                    if budget is not None:
                        budget -= len(chunk)
                    write(chunk)
                    continue
                # nothing new: the log grows only while this container runs (a restart writes the next file)
                if (
                    self.stopping.is_set()
                    or not self.is_running(req.namespace, req.pod, req.container)
                    or path != container_logs(self.pods_dir, req)[-1]
                ):
                    if f.seek(0, 2) <= offset:
                        return
                    continue
                time.sleep(FOLLOW_POLL)


def _handler(server: LogServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "divbase-node-agent"
        timeout = IDLE_TIMEOUT

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("log server: " + format, *args)

        def _peer_cn(self) -> str:
            try:
                self.connection.do_handshake()  # type: ignore[attr-defined]
                cert = self.connection.getpeercert()  # type: ignore[attr-defined]
            except (ssl.SSLError, OSError):
                return ""
            for rdn in (cert or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
            return ""

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:  # the apiserver's exec upgrade is a POST (a GET works too, as at the kubelet)
            self._serve()

        def _serve(self) -> None:
            if self._peer_cn() != APISERVER_KUBELET_CLIENT_CN:
                send_text(self, 403, f"only the apiserver ({APISERVER_KUBELET_CLIENT_CN}) may use this node's API")
                return
            if server.exec_handler is not None and urlsplit(self.path).path.startswith("/exec/"):
                server.exec_handler(self)
                return
            if self.command != "GET":
                send_text(self, 405, f"{self.command} is not allowed here")
                return
            try:
                req = parse_request(self.path)
                path = choose(container_logs(server.pods_dir, req), req)  # a missing log: a 4xx, not a cut-off 200
            except LogRequestError as e:
                send_text(self, e.status, str(e))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()

            def write(data: bytes) -> None:
                if data:
                    self.wfile.write(data)
                    self.wfile.flush()

            try:
                server.stream(req, path, write)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # kubectl went away (Ctrl-C on `logs -f`)
            except LogRequestError:
                pass  # the pod's directory went away mid-stream

    return Handler
