"""Network namespaces through iproute2 and setns(2): creating and deleting them, running a process inside one, and
making sockets inside one from a process that stays on the host."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
_libc = ctypes.CDLL(None, use_errno=True)


class NetworkError(RuntimeError):
    """A namespace or link operation failed; the message carries the command and its stderr."""


def missing_requirements(status: str | None = None, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """Why a pod network cannot be made here (empty when it can): capabilities and tools, each said plainly.
    `status` is /proc/self/status (read when not given)."""
    missing = []
    try:
        status = Path("/proc/self/status").read_text() if status is None else status
        eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        eff = 0
    for cap, bit, use in (
        ("CAP_NET_ADMIN", CAP_NET_ADMIN, "veth pairs, addresses, routes, nftables"),
        ("CAP_SYS_ADMIN", CAP_SYS_ADMIN, "named network namespaces (`ip netns add`)"),
    ):
        if not eff & (1 << bit):
            missing.append(f"capability {cap} ({use})")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if which(tool) is None:
            missing.append(f"`{tool}` (Debian package {package}; `make system-deps` installs it)")
    return missing


def run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"{' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit code {done.returncode}'}")
    return done.stdout


def ip(*args: str, netns: str | None = None) -> str:
    return run(["ip", *(("-n", netns) if netns else ()), *args])


def ip_batch(commands: list[str], netns: str | None = None) -> None:
    """Several `ip` commands in one process (each pod's setup would otherwise fork a dozen times)."""
    run(["ip", *(("-n", netns) if netns else ()), "-batch", "-"], stdin="\n".join(commands) + "\n")


def names() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def add(name: str) -> None:
    ip("netns", "add", name)


def delete(name: str) -> None:
    """Idempotent; the namespace itself lives on while a process still runs in it (its links go with it)."""
    if (NETNS_DIR / name).exists():
        ip("netns", "delete", name)


def setns(path: Path) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into the namespace at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def _setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def preexec_entering(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(preexec_fn for Popen that puts the child into namespace `name`, close to call in the parent afterwards).
    The descriptor is opened in the parent, so the child only makes one system call before exec."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    return (lambda: _setns_fd(fd)), (lambda: os.close(fd))


class Sockets:
    """Makes sockets inside a namespace for a process that stays on the host: a socket belongs to the namespace it
    was created in, whichever thread uses it later, so one worker thread lives in the namespace and creates them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = concurrent.futures.ThreadPoolExecutor(1, f"netns-{name}", setns, (NETNS_DIR / name,))

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self._pool.submit(socket.socket, family, kind).result(timeout=10)

    def connect(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        """socket.create_connection, from inside the namespace (IPv4)."""
        sock = self.socket()
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def listen(self, address: tuple[str, int], backlog: int = 128) -> socket.socket:
        sock = self.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        return sock

    def close(self) -> None:
        self._pool.shutdown(wait=False)
