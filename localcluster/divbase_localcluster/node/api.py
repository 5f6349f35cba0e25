"""A thin HTTPS client for the kube-apiserver, authenticated with the node's client certificate.

Plain JSON dicts instead of the `kubernetes` models: pod specs are read field by field and status is sent as
strategic-merge patches, both easier on dicts. One urllib3 pool is shared by all threads (it is thread-safe).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
import yaml

log = logging.getLogger(__name__)

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
RETRY_STATUSES = (409, 429, 500, 502, 503, 504)


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code (0 when the server could not be reached)."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body or {}


def _materialize(entry: dict[str, Any], data_key: str, file_key: str, dest: Path) -> str:
    """Kubeconfig credentials may be inline (base64) or paths; TLS libraries want files, written 0600."""
    if entry.get(data_key):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(entry[data_key]))
        return str(dest)
    if entry.get(file_key):
        return str(entry[file_key])
    raise ValueError(f"kubeconfig lacks {data_key} / {file_key}")


class Api:
    """GET/POST/PATCH/DELETE/watch against one apiserver with a client certificate from a kubeconfig."""

    def __init__(self, kubeconfig: Path, cred_dir: Path) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"].rstrip("/")
        ca = _materialize(cluster, "certificate-authority-data", "certificate-authority", cred_dir / "ca.crt")
        self.ca_file = ca  # also the pods' ca.crt (serviceaccount.py)
        cert = _materialize(user, "client-certificate-data", "client-certificate", cred_dir / "client.crt")
        key = _materialize(user, "client-key-data", "client-key", cred_dir / "client.key")
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca,
            cert_file=cert,
            key_file=key,
            retries=False,
        )

    @classmethod
    def with_certificate(cls, server: str, ca: Path, cert: Path, key: Path) -> Api:
        """The same client from certificate files, no kubeconfig: LocalCluster's own calls as cluster admin."""
        api = cls.__new__(cls)
        api.server, api.ca_file = server.rstrip("/"), str(ca)
        api.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca),
            cert_file=str(cert),
            key_file=str(key),
            retries=False,
        )
        return api

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """One request; raises ApiError (status 0 for connection errors). Returns the decoded JSON body."""
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            resp = self.pool.request(method, url, body=data, headers=headers, timeout=timeout)
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, f"{method} {path}: {type(e).__name__}: {e}") from None
        try:
            decoded = json.loads(resp.data) if resp.data else {}
        except ValueError:
            decoded = {"message": resp.data[:200].decode(errors="replace")}
        if resp.status >= 300:
            raise ApiError(resp.status, str(decoded.get("message", "")), decoded)
        return decoded

    def retrying(self, method: str, path: str, body: Any = None, attempts: int = 5, **kw: Any) -> dict[str, Any]:
        """`request`, retried with back-off on conflicts, throttling, 5xx and connection errors."""
        for attempt in range(attempts):
            try:
                return self.request(method, path, body, **kw)
            except ApiError as e:
                if (e.status != 0 and e.status not in RETRY_STATUSES) or attempt == attempts - 1:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    def watch(self, path: str, query: dict[str, str], timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """Yield watch events ({type, object}) until the server closes the stream (after `timeout_seconds`)."""
        q = {**query, "watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        url = self.server + path + "?" + urllib.parse.urlencode(q)
        try:
            resp = self.pool.request(
                "GET", url, preload_content=False, timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 15)
            )
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, f"watch {path}: {type(e).__name__}: {e}") from None
        try:
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read()[:300].decode(errors="replace"))
            buf = b""
            for chunk in resp.stream(None):  # amt=None: each chunk as soon as it arrives
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except urllib3.exceptions.HTTPError as e:
            raise ApiError(0, f"watch {path}: {type(e).__name__}: {e}") from None
        finally:
            resp.release_conn()
