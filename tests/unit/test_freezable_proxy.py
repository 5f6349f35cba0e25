"""FreezableProxy (divbase_localcluster.testing), the fault-injection proxy of the silent-watch tests, on its own:
frozen connections stay open but carry nothing, new ones pass, and with TLS it can freeze watches alone."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from divbase_localcluster.certs import LocalPKI
from divbase_localcluster.testing import FreezableProxy, apiserver_tls


@contextlib.contextmanager
def echo_server(tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, int]]:
    """Echoes every read back, over TLS if asked; bounded loops that end with the block."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(0.2)
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def roundtrip(sock: socket.socket, data: bytes, timeout: float = 2.0) -> bytes:
    """Send, then read what comes back within `timeout` (b"" if nothing)."""
    sock.sendall(data)
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""


def test_frozen_connection_stays_open_and_silent_new_ones_pass() -> None:
    with echo_server() as upstream, FreezableProxy(upstream) as proxy:
        first = socket.create_connection(("127.0.0.1", proxy.port))
        assert roundtrip(first, b"hello") == b"hello"
        assert proxy.freeze() == 1
        assert roundtrip(first, b"anyone?", timeout=1.0) == b""  # no answer, no end of stream either
        second = socket.create_connection(("127.0.0.1", proxy.port))
        assert roundtrip(second, b"new") == b"new"
        assert proxy.accepted == 2
        with pytest.raises(ValueError, match="terminates TLS"):
            proxy.freeze(watches_only=True)
        first.close()
        second.close()
    assert not any(t.is_alive() for t in proxy._threads)


def test_tls_proxy_freezes_watches_only(tmp_path: Path) -> None:
    """Through TLS on both legs (verified against the CA, the client cert upstream), only the connection whose
    latest request is a watch goes silent."""
    pki = LocalPKI(tmp_path)
    pki.issue("apiserver", "kube-apiserver", server=True, client=False, ips=("127.0.0.1",))
    pki.issue("admin", "divbase-admin", ("system:masters",))
    upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_tls.load_cert_chain(tmp_path / "apiserver.crt", tmp_path / "apiserver.key")
    upstream_tls.load_verify_locations(tmp_path / "ca.crt")
    upstream_tls.verify_mode = ssl.CERT_REQUIRED  # the proxy must present the admin certificate
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with echo_server(upstream_tls) as upstream, FreezableProxy(upstream, tls=apiserver_tls(tmp_path)) as proxy:
        conns = [
            client_tls.wrap_socket(socket.create_connection(("127.0.0.1", proxy.port)), server_hostname="127.0.0.1")
            for _ in range(2)
        ]
        watch, get = conns
        watch_request = b"GET /api/v1/namespaces/x/pods?watch=true&timeoutSeconds=10 HTTP/1.1\r\nHost: x\r\n\r\n"
        get_request = b"GET /api/v1/namespaces/x/pods HTTP/1.1\r\nHost: x\r\n\r\n"
        assert roundtrip(watch, watch_request) == watch_request
        assert roundtrip(get, get_request) == get_request
        assert proxy.freeze(watches_only=True) == 1
        assert roundtrip(watch, b"more", timeout=1.0) == b""
        assert roundtrip(get, get_request) == get_request
        for conn in conns:
            conn.close()
