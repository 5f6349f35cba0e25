"""How the node agent sets a container up (divbase_localcluster.node.launch, .volumes), without a cluster."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from divbase_localcluster.node import launch, podspec, volumes
from divbase_localcluster.node.images import Resolved

IMAGE = Resolved(entry="py", path="/venv/bin", env={"A": "image"}, entrypoint=["python", "-m"], cmd=["app"])


@pytest.mark.parametrize(
    ("spec", "argv"),
    [
        ({}, ["python", "-m", "app"]),  # the image's entrypoint and cmd
        ({"args": ["other", "$(X)"]}, ["python", "-m", "other", "x"]),  # args replace cmd, $(VAR) expanded
        ({"command": ["sh", "-c"], "args": ["echo $$(X)"]}, ["sh", "-c", "echo $(X)"]),  # command replaces both
        ({"command": ["app", "--termination-log", "/dev/termination-log"]}, ["app", "--termination-log", "/p/term"]),
        ({"command": ["app", "/t"], "terminationMessagePath": "/t"}, ["app", "/p/term"]),
    ],
)
def test_command_line(spec: dict, argv: list[str]) -> None:
    assert launch.command_line(spec, IMAGE, {"X": "x"}, Path("/p/term")) == argv


def test_command_line_empty_when_nothing_to_run() -> None:
    assert launch.command_line({}, Resolved(entry="e", path="", env={}), {}, Path("/t")) == []


def test_process_env_container_variables_win(tmp_path: Path) -> None:
    env = launch.process_env(IMAGE, {"A": "container", "B": "b"}, tmp_path, "pod-0", tmp_path / "t")
    assert env["A"] == "container" and env["B"] == "b" and env["PATH"] == "/venv/bin"
    assert env["HOSTNAME"] == "pod-0" and env["DIVBASE_VOLUMES_DIR"] == str(tmp_path / "volumes")


def test_termination_message_falls_back_to_the_log_only_on_error(tmp_path: Path) -> None:
    term, logf = tmp_path / "term", tmp_path / "0.log"
    logf.write_text("".join(f"line {i}\n" for i in range(200)))
    term.write_text("")
    assert launch.termination_message(term, logf, 1, "File") == ""
    assert launch.termination_message(term, logf, 0, "FallbackToLogsOnError") == ""
    tail = launch.termination_message(term, logf, 1, "FallbackToLogsOnError")
    assert tail.splitlines()[-1] == "line 199" and len(tail.splitlines()) <= launch.FALLBACK_LINES
    term.write_text("x" * 5000)
    assert launch.termination_message(term, logf, 1, "FallbackToLogsOnError") == "x" * launch.TERMINATION_MESSAGE_MAX


def test_volumes_written_and_missing_sources(tmp_path: Path) -> None:
    data = {("Secret", "s"): {"k": "secret"}, ("ConfigMap", "c"): {"a": "1", "b": "2"}}

    def lookup(kind: str, name: str) -> dict[str, str] | None:
        if name == "broken":
            raise podspec.ConfigError('cannot read secret "broken": forbidden')
        return data.get((kind, name))

    vols = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "sec", "secret": {"secretName": "s"}},
        {
            "name": "proj",
            "projected": {
                "sources": [
                    {"configMap": {"name": "c", "items": [{"key": "b", "path": "d/b"}]}},
                    {"secret": {"name": "gone", "optional": True}},
                ]
            },
        },
    ]
    assert volumes.materialize(vols, tmp_path, lookup) == ""
    assert (tmp_path / "scratch").is_dir()
    assert (tmp_path / "sec" / "k").read_text() == "secret"
    assert stat.S_IMODE((tmp_path / "sec" / "k").stat().st_mode) == 0o600
    assert (tmp_path / "proj" / "d" / "b").read_text() == "2" and not (tmp_path / "proj" / "a").exists()
    missing = volumes.materialize([{"name": "v", "configMap": {"name": "nope"}}], tmp_path, lookup)
    assert missing == 'MountVolume.SetUp failed for volume "v" : configmap "nope" not found'
    broken = volumes.materialize([{"name": "w", "secret": {"secretName": "broken"}}], tmp_path, lookup)
    assert broken.endswith(': cannot read secret "broken": forbidden')
