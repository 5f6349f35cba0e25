"""Carries pods' TCP connections to the host's loopback: it listens inside the node namespace (the apiserver's port
and the redirect port) and connects on the host to 127.0.0.1:<the port the pod dialled>. That way pods reach the
apiserver, PostgreSQL and anything else listening on the host's loopback at GATEWAY:<port>, and the host needs no
address, route or rule of its own."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from .layout import FORWARD_PORT, Layout
from .netns import Sockets

log = logging.getLogger("divbase_localcluster.podnet.forwarder")
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
BUFFER = 64 * 1024


def original_port(conn: socket.socket) -> int:
    """The port the client dialled before the node namespace's DNAT sent it here."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
    return int(struct.unpack_from("!H", raw, 2)[0])


class Forwarder:
    def __init__(self, layout: Layout, api_port: int) -> None:
        self.layout, self.api_port = layout, api_port
        self.stopping = threading.Event()

    def serve(self) -> None:
        """Listen on GATEWAY:<apiserver port> and GATEWAY:FORWARD_PORT until stop() (or the process ends)."""
        sockets = Sockets(self.layout.node_netns)
        listeners = [
            (sockets.listen((self.layout.gateway, self.api_port)), lambda _c: self.api_port),
            (sockets.listen((self.layout.gateway, FORWARD_PORT)), original_port),
        ]
        sockets.close()
        log.info("forwarding %s:{%d, *} in %s to 127.0.0.1", self.layout.gateway, self.api_port, self.layout.node_netns)
        threads = [threading.Thread(target=self._accept, args=lst, daemon=True) for lst in listeners]
        for t in threads:
            t.start()
        self.stopping.wait()
        for lst, _ in listeners:
            lst.close()

    def stop(self) -> None:
        self.stopping.set()

    def _accept(self, listener: socket.socket, port_of: Callable[[socket.socket], int]) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(conn, port_of), daemon=True).start()

    def _connect(self, conn: socket.socket, port_of: Callable[[socket.socket], int]) -> None:
        try:
            port = port_of(conn)
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as e:
            log.debug("connection refused on the host side: %s", e)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset: the pod's client fails at once, much as when nothing listens
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
        back.start()
        _pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy one direction; at EOF pass the half-close on (the other direction may still be talking)."""
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:  # a reset on either side ends both directions
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
