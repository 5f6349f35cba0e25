"""`kubectl exec` on the local node without a cluster: the kubelet's request and answers, and whole sessions
against a client scripted with the SPDY framing (tests/unit/test_node_spdy.py checks that against the apiserver)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path

import pytest
from divbase_localcluster.node import spdy
from divbase_localcluster.node.execserver import (
    ExecRequest,
    ExecRequestError,
    ExecSession,
    ExecTarget,
    exit_status,
    negotiate,
    parse_exec,
)
from divbase_testsupport import wait_for


def test_the_apiservers_request_is_read_with_the_kubelets_names() -> None:
    req = parse_exec(
        "/exec/team-a/api-7d9f/api?command=sh&command=-c&command=echo+a%3B+exit+3&error=1&input=1&output=1"
    )
    assert req == ExecRequest(
        "team-a", "api-7d9f", "api", ("sh", "-c", "echo a; exit 3"), stdin=True, stdout=True, stderr=True
    )
    assert req.streams() == {"error", "stdin", "stdout", "stderr"}
    with_uid = parse_exec("/exec/ns/p/0b9c-uid/c?command=ls&output=1&error=1&tty=1")
    assert (with_uid.container, with_uid.stderr, with_uid.tty) == ("c", False, True)  # no stderr with a TTY
    assert with_uid.streams() == {"error", "stdout", "resize"}


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("/exec/ns/p/c?command=ls", 400, "you must specify at least 1 of stdin, stdout, stderr"),
        ("/exec/ns/p/c?output=1", 400, "you must specify at least one command"),
        ("/exec/ns/p?command=ls&output=1", 400, "expected /exec/<namespace>/<pod>/<container>"),
        ("/exec/ns/..%2F..%2Fetc/c?command=ls&output=1", 400, "pod: not a valid name"),
    ],
)
def test_requests_the_kubelet_refuses(target: str, status: int, words: str) -> None:
    with pytest.raises(ExecRequestError) as caught:
        parse_exec(target)
    assert caught.value.status == status and words in str(caught.value)


def test_protocol_negotiation_picks_v4_as_the_kubelet() -> None:
    offered = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
    assert negotiate(offered) == "v4.channel.k8s.io"
    assert negotiate(["v5.channel.k8s.io, v4.channel.k8s.io"]) == "v4.channel.k8s.io"
    with pytest.raises(ExecRequestError) as caught:
        negotiate(["v5.channel.k8s.io"])
    assert caught.value.status == 403 and "unable to negotiate protocol" in str(caught.value)
    assert caught.value.headers == {"X-Accepted-Stream-Protocol-Versions": "v4.channel.k8s.io"}
    with pytest.raises(ExecRequestError, match="X-Stream-Protocol-Version does not exist"):
        negotiate([])


def test_exit_status_as_client_go_reads_it() -> None:
    assert exit_status(0) == {"metadata": {}, "status": "Success"}
    failed = exit_status(3)
    assert (failed["status"], failed["reason"]) == ("Failure", "NonZeroExitCode")
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert exit_status(-9)["details"]["causes"][0]["message"] == "137"  # SIGKILL, as a runtime reports it


class ScriptedClient:
    """Plays the apiserver's side of a session: sends `script`, collects what the server sends and closes the
    connection once the server says GOAWAY (or when told to)."""

    def __init__(self, script: bytes) -> None:
        self.incoming: queue.Queue[bytes] = queue.Queue()
        self.incoming.put(script)
        self.reader = spdy.FrameReader()
        self.frames: list[spdy.Frame] = []

    def recv(self) -> bytes:
        return self.incoming.get(timeout=30)

    def send(self, data: bytes) -> None:
        for frame in self.reader.feed(data):
            self.frames.append(frame)
            if frame.kind == spdy.GOAWAY:
                self.incoming.put(b"")

    def close(self) -> None:
        self.incoming.put(b"")

    def output(self, stream_id: int) -> bytes:
        return b"".join(f.data for f in self.frames if f.kind == spdy.DATA and f.stream_id == stream_id)

    def finished(self, stream_id: int) -> bool:
        return any(f.fin for f in self.frames if f.kind == spdy.DATA and f.stream_id == stream_id)


def _target(cwd: Path, tracked: set[int], alive: threading.Event | None = None) -> ExecTarget:
    return ExecTarget(
        env={"PATH": os.environ["PATH"], "GREETING": "hello"},
        cwd=cwd,
        popen_kwargs=lambda: contextlib.nullcontext({}),
        alive=lambda: alive is None or alive.is_set(),
        track=tracked.add,
        untrack=tracked.discard,
    )


def _live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an orphan may wait a moment for init to reap it)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[-1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                live.append(int(stat.parent.name))
    return live


def _open(client: spdy.FrameWriter, *kinds: str) -> bytes:
    return b"".join(client.syn_stream(2 * i + 1, {"streamType": [kind]}) for i, kind in enumerate(kinds))


def test_a_session_runs_the_command_as_the_container(tmp_path: Path) -> None:
    """Its environment and directory, stdin until FIN, stdout and stderr apart and ended, the exit code last."""
    w = spdy.FrameWriter()
    client = ScriptedClient(
        _open(w, "error", "stdin", "stdout", "stderr") + w.data(3, b"from stdin\n") + w.data(3, fin=True)
    )
    req = ExecRequest(
        "ns",
        "p",
        "c",
        ("sh", "-c", 'cat; echo "$GREETING from $PWD"; echo oops >&2; exit 3'),
        stdin=True,
        stdout=True,
        stderr=True,
    )
    tracked: set[int] = set()
    ExecSession(client, req, _target(tmp_path, tracked), threading.Event()).run()  # type: ignore[arg-type]
    assert [f.stream_id for f in client.frames if f.kind == spdy.SYN_REPLY] == [1, 3, 5, 7]
    assert client.output(5) == f"from stdin\nhello from {tmp_path}\n".encode()
    assert client.output(7) == b"oops\n"
    assert client.finished(5) and client.finished(7) and client.finished(1)
    status = json.loads(client.output(1))
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "3"
    assert client.frames[-1].kind == spdy.GOAWAY
    assert not tracked  # the process group was handed back


def test_the_command_dies_with_the_session(tmp_path: Path) -> None:
    w = spdy.FrameWriter()
    client = ScriptedClient(_open(w, "error", "stdout"))
    req = ExecRequest("ns", "p", "c", ("sh", "-c", "echo $$ > pid; sleep 60 & wait"), stdout=True)
    tracked: set[int] = set()
    session = threading.Thread(
        target=ExecSession(
            client,
            req,
            _target(tmp_path, tracked),  # type: ignore[arg-type]
            threading.Event(),
        ).run
    )
    session.start()
    pid = int(
        wait_for(
            "the command's pid",
            lambda: (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text().strip(),
            10,
            interval=0.05,
        )
    )
    client.close()  # the apiserver hung up
    session.join(timeout=10)
    assert not session.is_alive()
    assert _live_members(pid) == []  # the shell and its sleep: the whole group is gone (zombies aside)
    assert not client.output(1)  # nobody to tell


def test_a_stopped_container_ends_its_commands(tmp_path: Path) -> None:
    w = spdy.FrameWriter()
    client = ScriptedClient(_open(w, "error", "stdout"))
    alive = threading.Event()
    alive.set()
    req = ExecRequest("ns", "p", "c", ("sleep", "60"), stdout=True)
    tracked: set[int] = set()
    session = threading.Thread(
        target=ExecSession(
            client,
            req,
            _target(tmp_path, tracked, alive),  # type: ignore[arg-type]
            threading.Event(),
        ).run
    )
    session.start()
    # the command runs (its process group handed to the agent): then the container stops
    wait_for("the command started", lambda: tracked, 10, interval=0.02)
    alive.clear()
    session.join(timeout=10)
    assert json.loads(client.output(1))["details"]["causes"][0]["message"] == "137"


def test_a_tty_gets_the_clients_size(tmp_path: Path) -> None:
    w = spdy.FrameWriter()
    client = ScriptedClient(_open(w, "error", "stdout", "resize") + w.data(5, b'{"Width":91,"Height":27}\n'))
    req = ExecRequest(
        "ns", "p", "c", ("sh", "-c", "sleep 0.2; stty size; test -t 0 && echo tty"), stdout=True, tty=True
    )
    ExecSession(client, req, _target(tmp_path, set()), threading.Event()).run()  # type: ignore[arg-type]
    assert client.output(3).replace(b"\r\n", b"\n") == b"27 91\ntty\n"
    assert json.loads(client.output(1))["status"] == "Success"


def test_a_command_that_cannot_start_is_an_internal_error(tmp_path: Path) -> None:
    w = spdy.FrameWriter()
    client = ScriptedClient(_open(w, "error", "stdout"))
    req = ExecRequest("ns", "p", "c", ("no-such-command-here",), stdout=True)
    ExecSession(client, req, _target(tmp_path, set()), threading.Event()).run()  # type: ignore[arg-type]
    status = json.loads(client.output(1))
    assert (status["reason"], status["code"]) == ("InternalError", 500)
    assert 'exec: "no-such-command-here": executable file not found in $PATH' in status["message"]


def test_an_unexpected_stream_is_refused(tmp_path: Path) -> None:
    w = spdy.FrameWriter()
    client = ScriptedClient(_open(w, "error", "stdout", "stdin"))  # stdin was not asked for
    req = ExecRequest("ns", "p", "c", ("true",), stdout=True)
    ExecSession(client, req, _target(tmp_path, set()), threading.Event()).run()  # type: ignore[arg-type]
    assert [(f.stream_id, f.value) for f in client.frames if f.kind == spdy.RST_STREAM] == [(5, spdy.REFUSED_STREAM)]
    assert json.loads(client.output(1))["status"] == "Success"
