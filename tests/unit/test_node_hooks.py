"""The node agent's lifecycle-hook rules (divbase_localcluster.node.hooks), without a cluster."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from divbase_localcluster.node import hooks, podspec


@pytest.mark.parametrize(
    ("grace", "elapsed", "window"),
    [
        (30, None, 30),  # no preStop: the whole grace period between SIGTERM and SIGKILL
        (1, None, 2),  # never less than 2 s (kubelet's minimumGracePeriodInSeconds)
        (10, 3.9, 7),  # preStop took 3.9 s: whole seconds are subtracted (int64 truncation), 7 s left
        (10, 4.0, 6),
        (5, 5.0, 2),  # preStop took the whole grace period: 2 s more
        (5, 9.0, 2),
    ],
)
def test_stop_window_is_the_rest_of_the_grace_period_at_least_two_seconds(
    grace: float, elapsed: float | None, window: float
) -> None:
    assert hooks.stop_window(grace, elapsed) == window


def test_handler_and_unsupported_parts() -> None:
    c = {"name": "a", "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}
    assert hooks.handler(c, "preStop") == {"sleep": {"seconds": 5}}
    assert hooks.handler(c, "postStart") is None
    assert hooks.handler({"name": "b"}, "preStop") is None
    assert hooks.unsupported_handler_fields(c["lifecycle"]) == []
    odd = {"preStop": {"tcpSocket": {"port": 80}}, "postStart": {"exec": {"command": ["true"]}}, "stopSignal": "SIGINT"}
    assert hooks.unsupported_handler_fields(odd) == ["preStop.tcpSocket", "stopSignal"]


def test_pod_condition_reports_only_what_is_not_run() -> None:
    supported = {"preStop": {"httpGet": {"port": 80}}, "postStart": {"exec": {"command": ["true"]}}}
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "lifecycle": supported},
                {"name": "b", "lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}},
            ]
        }
    }
    assert podspec.unsupported_fields(pod) == ["spec.containers[1].lifecycle.preStop.tcpSocket"]


def test_http_request_defaults_like_the_kubelet() -> None:
    container = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    req = hooks.http_request({"port": "http", "path": "drain"}, container, "127.1.0.9", "1.36")
    assert (req.scheme, req.host, req.port, req.path) == ("http", "127.1.0.9", 8080, "/drain")
    assert req.headers == {"User-Agent": "kube-lifecycle/1.36", "Accept": "*/*"}
    req = hooks.http_request(
        {
            "port": 9443,
            "scheme": "HTTPS",
            "host": "10.0.0.1",
            "path": "/x",
            "httpHeaders": [{"name": "user-agent", "value": "me"}],
        },
        container,
        "127.1.0.9",
        "1.36",
    )
    assert (req.scheme, req.host, req.port) == ("https", "10.0.0.1", 9443)
    assert req.headers == {"user-agent": "me", "Accept": "*/*"}
    with pytest.raises(OSError, match="couldn't find port: metrics"):
        hooks.http_request({"port": "metrics"}, container, "127.1.0.9", "1.36")


def test_http_status_is_not_judged() -> None:
    """Only a transport error fails an httpGet hook (kubelet: http.Client.Do's error), not a 500."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        req = hooks.http_request({"port": server.server_port}, {"name": "a"}, "127.0.0.1", "1.36")
        assert hooks.do_http(req, 5) == 500
        run = hooks.HookRun("PreStop").start(lambda r: hooks.do_http(req, 5) and None)
        assert run.done.wait(5) and run.error == ""
    finally:
        server.shutdown()
        server.server_close()


def test_hook_run_records_errors_and_a_sleep_ends_when_the_container_exits() -> None:
    def fail(r: hooks.HookRun) -> None:
        raise OSError("exit code 3")

    run = hooks.HookRun("PreStop").start(fail)
    assert run.done.wait(5) and run.error == "OSError: exit code 3"
    run = hooks.HookRun("PreStop").start(lambda r: r.sleep(30))
    run.kill()
    assert run.done.wait(5), "the 30 s sleep did not end with the container"
    assert "terminated before sleep hook finished" in run.error
    run = hooks.HookRun("PreStop").start(lambda r: r.sleep(0.1))
    assert run.done.wait(5) and run.error == ""
