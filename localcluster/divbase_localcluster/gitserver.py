"""Git repositories served over smart HTTP on a loopback port, the way a Git host serves them to Flux.

Flux's source-controller clones with go-git, which speaks the smart HTTP protocol only (no dumb HTTP, no git://),
so the server is git's own `git http-backend` (CGI) behind a small threaded HTTP server: every request is one run
of git's code, nothing of the protocol is re-implemented here. Read-only: pushes are refused (the test commits to
the bare repository through the file system, as a developer's push would land).

    with GitServer(root) as git:
        repo = git.create("divbase")         # a bare repository under root, and a work tree to commit in
        repo.commit({"deploy/db.yaml": ...}, "release 1")
        git.url("divbase")                   # http://127.0.0.1:<port>/divbase.git
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

BACKEND = "/usr/lib/git-core/git-http-backend"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "divbase-localcluster",
    "GIT_AUTHOR_EMAIL": "localcluster@divbase.invalid",
    "GIT_COMMITTER_NAME": "divbase-localcluster",
    "GIT_COMMITTER_EMAIL": "localcluster@divbase.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Repository:
    """A bare repository served by the server, and a work tree whose commits are pushed to it."""

    def __init__(self, bare: Path, work: Path, branch: str = "main") -> None:
        self.bare, self.work, self.branch = bare, work, branch
        _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare), cwd=bare.parent)
        _git("init", "--quiet", f"--initial-branch={branch}", str(work), cwd=work.parent)
        _git("remote", "add", "origin", str(bare), cwd=work)

    def commit(self, files: dict[str, str], message: str) -> str:
        """Write (or, for an empty string, remove) each file, commit, push; returns the commit's sha."""
        for rel, text in files.items():
            path = self.work / rel
            if text == "":
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        _git("add", "--all", cwd=self.work)
        _git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        with self.server.log_lock, self.server.log.open("a") as f:
            f.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        if "git-receive-pack" in path or "git-receive-pack" in query:
            self.send_error(403, "read-only: this server does not accept pushes")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        proc = subprocess.run([BACKEND], input=body, env=env, capture_output=True, timeout=60, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        headers = [line.split(":", 1) for line in head.decode("latin-1").splitlines() if ":" in line]
        status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, log: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.log, self.log_lock = root, log, threading.Lock()


class GitServer:
    """Serves every bare repository under `root` at http://127.0.0.1:<port>/<name>.git until closed."""

    def __init__(self, root: Path) -> None:
        if not Path(BACKEND).is_file() or shutil.which("git") is None:
            raise RuntimeError(f"git and {BACKEND} are needed (Debian package `git`)")
        self.root = root
        (root / "served").mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(parents=True, exist_ok=True)
        self._server = _Server(root / "served", root / "access.log")
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def create(self, name: str) -> Repository:
        return Repository(self.root / "served" / f"{name}.git", self.root / "work" / name)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
