"""The kubectl plugin's Client over the operator's KubeApi, against a stub apiserver on 127.0.0.1 (plain HTTP):
the requests it makes (paths, merge patch, watch query) and how it reads answers and errors. The cluster tests
(test_kubectl_wait.py, test_install.py) run it against the real apiserver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from divbase_operator import names
from divbase_operator.kubectl_plugin import Client, PluginError

DB = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/team/{names.PLURAL}"


class Stub(BaseHTTPRequestHandler):
    """Answers from `answers[(method, path)]`: (status, JSON body or a list of watch events)."""

    answers: ClassVar[dict[tuple[str, str], tuple[int, Any]]] = {}
    seen: ClassVar[list[tuple[str, str, str, Any]]] = []

    def _answer(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, path, query, (self.headers.get("Content-Type"), body)))
        status, payload = self.answers.get((self.command, path), (404, {"kind": "Status", "code": 404}))
        data = (
            b"".join(json.dumps(e).encode() + b"\n" for e in payload)
            if isinstance(payload, list)
            else json.dumps(payload).encode()
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Stub.answers, Stub.seen = {}, []
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "stub",
                "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
                "users": [{"name": "stub", "user": {"token": "t"}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "team"}}],
            }
        )
    )
    try:
        yield Client(None, None, str(kubeconfig))
    finally:
        server.shutdown()
        server.server_close()


def test_get_and_patch_the_resource(client: Client) -> None:
    obj = {"metadata": {"name": "db", "resourceVersion": "7"}, "spec": {"version": "2"}}
    Stub.answers = {("GET", f"{DB}/db"): (200, obj), ("PATCH", f"{DB}/db"): (200, obj)}
    assert client.namespace == "team", "the context's namespace"
    assert client.get("db") == obj
    patch = {"metadata": {"resourceVersion": "7", "annotations": {"a": "b"}}}
    assert client.patch("db", patch) == obj
    assert Stub.seen[-1][3] == ("application/merge-patch+json", patch)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (404, "not found"),
        (403, "forbidden: you may not get"),
        (409, "changed while this command ran"),
        (500, "failed: 500"),
    ],
)
def test_api_errors_are_one_line(client: Client, status: int, words: str) -> None:
    Stub.answers = {("GET", f"{DB}/db"): (status, {"kind": "Status", "code": status})}
    with pytest.raises(PluginError, match=words):
        client.get("db")


def test_watch_yields_versions_then_none_when_deleted(client: Client) -> None:
    one, two = ({"metadata": {"name": "db", "resourceVersion": v}} for v in ("8", "9"))
    Stub.answers = {
        ("GET", DB): (
            200,
            [
                {"type": "ADDED", "object": one},
                {"type": "BOOKMARK", "object": {}},
                {"type": "MODIFIED", "object": two},
                {"type": "DELETED", "object": two},
            ],
        )
    }
    assert list(client.watch("db", "7", timeout=5)) == [one, two, None]
    _, _, query, _ = Stub.seen[-1]
    assert sorted(query.split("&")) == [
        "fieldSelector=metadata.name%3Ddb",
        "resourceVersion=7",
        "timeoutSeconds=5",
        "watch=true",
    ]


def test_watch_ends_quietly_when_the_version_is_too_old_and_fails_on_other_errors(client: Client) -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    Stub.answers = {("GET", DB): (200, [gone])}
    assert list(client.watch("db", "1", timeout=5)) == []
    Stub.answers = {("GET", DB): (403, {"kind": "Status", "code": 403})}
    with pytest.raises(PluginError, match="forbidden: you may not watch"):
        list(client.watch("db", "1", timeout=5))


def test_the_plan_configmap(client: Client) -> None:
    path = "/api/v1/namespaces/team/configmaps/db-plan"
    Stub.answers = {("GET", path): (200, {"data": {"plan.sql": "SELECT 1"}})}
    assert client.get_configmap("db-plan") == {"data": {"plan.sql": "SELECT 1"}}
    Stub.answers = {}
    assert client.get_configmap("db-plan") is None
    Stub.answers = {("GET", path): (403, {"kind": "Status", "code": 403})}
    with pytest.raises(PluginError, match="which holds the SQL you are approving"):
        client.get_configmap("db-plan")
