"""The node agent's log endpoint, its pure parts: the request the apiserver forwards, which file, which bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from divbase_localcluster.node.logserver import LogRequest, LogRequestError, choose, container_logs, parse_request, tail


def test_the_apiservers_request_is_read_as_kubectl_sent_it() -> None:
    req = parse_request("/containerLogs/team-a/api-7d9f/api?follow=true&previous=false&tailLines=20&limitBytes=500")
    assert req == LogRequest("team-a", "api-7d9f", "api", follow=True, previous=False, tail_lines=20, limit_bytes=500)
    assert parse_request("/containerLogs/ns/p/c") == LogRequest("ns", "p", "c")


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        (
            "/attach/ns/p/c?output=1",
            404,
            "attach: the local node serves only containerLogs and exec (no attach or port",
        ),
        ("/containerLogs/ns/p", 400, "/containerLogs/<namespace>/<pod>/<container>"),
        ("/containerLogs/ns/p/c?tailLines=ten", 400, "tailLines: must be an integer, got 'ten'"),
        ("/containerLogs/ns/p/c?limitBytes=-1", 400, "limitBytes: must not be negative"),
        ("/containerLogs/ns/p/c?timestamps=true", 400, "--timestamps is not supported"),
        ("/containerLogs/ns/p/c?sinceSeconds=60", 400, "--since is not supported"),
        ("/containerLogs/ns/..%2F..%2Fetc/c", 400, "pod: not a valid name: '../../etc'"),
        ("/containerLogs/ns/p/..", 400, "container: not a valid name"),
        ("/containerLogs/NS/p/c", 400, "namespace: not a valid name"),
    ],
)
def test_what_the_local_node_cannot_serve_is_said(target: str, status: int, words: str) -> None:
    with pytest.raises(LogRequestError) as caught:
        parse_request(target)
    assert caught.value.status == status and words in str(caught.value)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (None, b"a\nb\nc\n"),
        (0, b""),
        (1, b"c\n"),
        (2, b"b\nc\n"),
        (3, b"a\nb\nc\n"),
        (10, b"a\nb\nc\n"),
    ],
)
def test_tail_counts_lines_as_the_kubelet(lines: int | None, expected: bytes) -> None:
    assert tail(b"a\nb\nc\n", lines) == expected


def test_tail_counts_a_last_line_without_newline() -> None:
    assert tail(b"a\nb\npartial", 1) == b"partial"
    assert tail(b"a\nb\npartial", 2) == b"b\npartial"


def _logs(pods: Path, pod_dir: str, container: str, *restarts: int) -> None:
    directory = pods / pod_dir / "logs" / container
    directory.mkdir(parents=True)
    for n in restarts:
        (directory / f"{n}.log").write_text(f"run {n}\n")


def test_current_and_previous_run_of_a_container(tmp_path: Path) -> None:
    _logs(tmp_path, "ns_api_uid1", "api", 0, 1, 2, 10)
    files = container_logs(tmp_path, LogRequest("ns", "api", "api"))
    assert [f.name for f in files] == ["0.log", "1.log", "2.log", "10.log"]  # restarts in number order, not text
    assert choose(files, LogRequest("ns", "api", "api")).name == "10.log"
    assert choose(files, LogRequest("ns", "api", "api", previous=True)).name == "2.log"
    with pytest.raises(LogRequestError, match='previous terminated container "api" in pod "api" not found'):
        choose(files[:1], LogRequest("ns", "api", "api", previous=True))


def test_unknown_pod_or_container_is_a_client_error_naming_it(tmp_path: Path) -> None:
    _logs(tmp_path, "ns_api_uid1", "api", 0)
    with pytest.raises(LogRequestError, match='pod "web" in namespace "ns" has not run on this node') as caught:
        container_logs(tmp_path, LogRequest("ns", "web", "api"))
    assert caught.value.status == 404
    with pytest.raises(LogRequestError, match='container "sidecar" in pod "api" is waiting to start or does not'):
        container_logs(tmp_path, LogRequest("ns", "api", "sidecar"))
    # a pod name that is a prefix of another's is not confused with it
    _logs(tmp_path, "ns_api-2_uid2", "api", 0, 1)
    assert len(container_logs(tmp_path, LogRequest("ns", "api", "api"))) == 1
