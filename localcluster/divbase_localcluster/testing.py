"""Helpers for tests on the local control plane (bounded waits; 404 as "gone"; a proxy whose connections go silent)."""

from __future__ import annotations

import re
import selectors
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

if TYPE_CHECKING:
    from .cluster import ClusterInfo


def gone(read: Callable[[], object]) -> bool:
    """True when `read` gets a 404; other API errors propagate."""
    try:
        read()
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


WATCH_REQUEST = re.compile(rb"[?&]watch=(true|1)(&|$)")
REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


def apiserver_tls(pki_dir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """TLS for a FreezableProxy in front of a local apiserver: it serves the apiserver's own certificate (IP SAN
    127.0.0.1, so clients still verify it against the cluster CA) and goes on to the apiserver as the cluster
    admin, whoever the client is. Terminating TLS lets the proxy see each request, so it can freeze watches alone."""
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(pki_dir / "apiserver.crt", pki_dir / "apiserver.key")
    upstream = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    upstream.load_cert_chain(pki_dir / "admin.crt", pki_dir / "admin.key")
    return serving, upstream


class FreezableProxy:
    """A proxy on 127.0.0.1 whose current connections can be frozen: bytes stop flowing both ways but no connection
    is closed, as when a NAT entry or a proxy on the way dies silently. A client then sees neither data nor an error;
    only its own timeouts end such a request. Connections accepted after a freeze pass normally.

    Plain TCP by default (TLS passes through; `freeze()` takes every connection). With `tls=apiserver_tls(...)` it
    terminates TLS and notes each connection's latest request, so `freeze(watches_only=True)` can silence the watch
    streams (and idle connections whose last request was a watch) while other requests keep working.

    Every loop waits in steps of `TICK` seconds and ends by itself once `close()` is called (or the context ends);
    a connection either side closes ends at once, a frozen one when the proxy closes."""

    TICK = 0.2

    def __init__(self, upstream: tuple[str, int], tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> None:
        self.upstream = upstream
        self.tls = tls
        self.accepted = 0  # connections accepted so far (frozen or not)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(self.TICK)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._live: dict[int, tuple[socket.socket, ...]] = {}
        self._requests: dict[int, bytes] = {}  # the latest request target seen on each connection (with tls)
        self._frozen: set[int] = set()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> FreezableProxy:
        self._spawn(self._accept_loop)
        return self

    def freeze(self, watches_only: bool = False) -> int:
        """Freeze every connection open now (only those whose latest request is a watch, if asked); returns how
        many were frozen."""
        if watches_only and self.tls is None:
            raise ValueError("telling watches apart needs a proxy that terminates TLS (tls=apiserver_tls(...))")
        with self._lock:
            chosen = {c for c in self._live if not watches_only or WATCH_REQUEST.search(self._requests.get(c, b""))}
            self._frozen |= chosen
            return len(chosen)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for socks in self._live.values():
                for sock in socks:
                    sock.close()
            self._live.clear()

    def __enter__(self) -> FreezableProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="freezable-proxy")
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                conn = self.accepted
                self._live[conn] = (client,)
            self._spawn(self._serve, conn, client)

    def _serve(self, conn: int, client: socket.socket) -> None:
        """Connect upstream (TLS on both legs, if asked), then forward both ways until either side closes. Once
        frozen nothing more is forwarded, not even what was read in the instant before: a frozen connection never
        carries a byte again, so that is never seen."""
        socks: list[socket.socket] = [client]
        try:
            client.settimeout(5)  # bounds a handshake, a connect and a send to a peer that stopped reading
            upstream = socket.create_connection(self.upstream, timeout=5)
            socks.append(upstream)
            if self.tls is not None:
                client = self.tls[0].wrap_socket(client, server_side=True)
                upstream = self.tls[1].wrap_socket(upstream, server_hostname=self.upstream[0])
                socks = [client, upstream]
            with self._lock:
                self._live[conn] = (client, upstream)
            peer = {client.fileno(): upstream, upstream.fileno(): client}
            by_fd = {client.fileno(): client, upstream.fileno(): upstream}
            with selectors.DefaultSelector() as sel:
                for sock in by_fd.values():
                    sel.register(sock, selectors.EVENT_READ)
                while not self._stop.is_set():
                    if conn in self._frozen:
                        self._stop.wait(self.TICK)
                        continue
                    for event, _ in sel.select(self.TICK):
                        data = _recv(by_fd[event.fd])
                        if data is None:
                            continue  # TLS bookkeeping (a session ticket), no application data yet
                        if not data:
                            return
                        if event.fd == client.fileno() and self.tls is not None:
                            self._note_requests(conn, data)
                        if conn not in self._frozen:
                            peer[event.fd].sendall(data)
        except OSError:
            return  # either side went away, or TLS failed: the client sees its connection closed
        finally:
            with self._lock:
                self._live.pop(conn, None)
                self._requests.pop(conn, None)
                self._frozen.discard(conn)
            for sock in socks:
                sock.close()

    def _note_requests(self, conn: int, data: bytes) -> None:
        """Remember the target of the last request line in `data` (a request line split over two reads is missed:
        clients write their headers at once)."""
        targets = REQUEST_LINE.findall(data)
        if targets:
            with self._lock:
                self._requests[conn] = targets[-1]


def _recv(sock: socket.socket) -> bytes | None:
    """What is there to read now (b"" at end of stream); None when a TLS record carried no application data."""
    sock.settimeout(0)
    try:
        data = sock.recv(65536)
        while data and isinstance(sock, ssl.SSLSocket) and sock.pending():  # decrypted, so select cannot see it
            data += sock.recv(sock.pending())
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    finally:
        sock.settimeout(5)
    return data


def http_get_pod(info: ClusterInfo, ip: str, port: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    """GET a pod's server from the node, as a kubelet probe does: through the pod network's node namespace when the
    cluster has one, else straight to the pod's loopback address. (0, error) when it cannot connect."""
    try:
        if info.node_netns:
            return http_get_from_node(info.node_netns, ip, port, path, timeout)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{ip}:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def http_get_from_node(node_netns: str, host: str, port: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    """GET http://host:port/path from inside the pod network's node namespace, where ClusterIPs (kube-proxy's
    rules) and pod IPs are routed; returns (status, body). The test process itself stays on the host."""
    import http.client

    from .podnet.netns import Sockets

    sockets = Sockets(node_netns)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.sock = sockets.connect((host, port), timeout)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()
        sockets.close()
