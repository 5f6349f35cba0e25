"""The per-container shim and the state a restarted node agent resumes from (no cluster needed)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from divbase_localcluster.node import podstate
from divbase_localcluster.node.shimproc import ShimProcess, is_alive, read_exit, start_ticks
from divbase_testsupport import wait_for


def _run(tmp_path: Path, argv: list[str]) -> tuple[ShimProcess, Path]:
    log = tmp_path / "log"
    with log.open("ab") as out:
        proc = ShimProcess.start(
            argv, tmp_path / "c.exit", cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return proc, log


def _commands(pgid: int) -> list[str]:
    """The command names (/proc comm) of the live members of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(name)
    return found


def _wait_exited(proc: ShimProcess, timeout: float = 10) -> None:
    wait_for("the shim exited", proc.exited, timeout, interval=0.02)


def test_exit_code_output_and_exit_file(tmp_path: Path) -> None:
    proc, log = _run(tmp_path, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    _wait_exited(proc)
    assert proc.finish().exit_code == 3
    assert log.read_text() == "out\nerr\n"
    record = read_exit(tmp_path / "c.exit")
    assert record is not None and record["exitCode"] == 3 and record["signal"] is None and record["finishedAt"]


def test_sigterm_to_the_group_reaches_the_command_and_the_shim_records_it(tmp_path: Path) -> None:
    """The command gets default dispositions (nothing ignored, SIGTERM kills it); the shim outlives the SIGTERM,
    writes 143 and kills the leftovers of the group."""
    script = "grep -E '^Sig(Ign|Blk)' /proc/self/status; sleep 300 & echo $! > bg; sleep 300"
    proc, log = _run(tmp_path, ["sh", "-c", script])
    background = int(
        wait_for(
            "the background sleep's pid",
            lambda: (tmp_path / "bg").exists() and (tmp_path / "bg").read_text().strip(),
            10,
            interval=0.02,
        )
    )
    wait_for(
        "both sleeps running (the shell waits on the second)",
        lambda: sorted(_commands(proc.pid)).count("sleep") >= 2,
        10,
        interval=0.02,
    )
    os.killpg(proc.pid, signal.SIGTERM)
    _wait_exited(proc)
    ended = proc.finish()
    assert ended.exit_code == 143 and not ended.error
    assert read_exit(tmp_path / "c.exit")["signal"] == signal.SIGTERM  # type: ignore[index]
    masks = dict(line.split(":\t") for line in log.read_text().splitlines())
    # glibc's own signals 32 and 33 (SIGCANCEL, SIGSETXID) may come ignored from whatever started the test (make
    # spawns recipes with posix_spawn, which leaves them so); libc refuses to reset them and installs its own
    # handlers when it needs them. Every other signal is at its default in the command.
    glibc_internal = (1 << 31) | (1 << 32)
    assert int(masks["SigIgn"], 16) & ~glibc_internal == 0 and int(masks["SigBlk"], 16) == 0, masks
    assert start_ticks(background) is None  # the `sleep 300 &` died with the group


def test_start_error(tmp_path: Path) -> None:
    proc, _ = _run(tmp_path, ["no-such-command-xyz"])
    _wait_exited(proc)
    ended = proc.finish()
    assert ended.exit_code == 128
    assert ended.error == 'failed to start container process: exec: "no-such-command-xyz": No such file or directory'


def test_adopted_shim_is_watched_through_proc(tmp_path: Path) -> None:
    """What a restarted agent does: no Popen, pid + start time; the exit file says how the command ended."""
    proc, _ = _run(tmp_path, ["sh", "-c", "sleep 0.5; exit 7"])
    assert proc.ticks and is_alive(proc.pid, proc.ticks)
    assert not is_alive(proc.pid, proc.ticks + 1)  # a recycled pid has another start time
    adopted = ShimProcess(proc.pid, proc.ticks, proc.exit_file)
    assert adopted.adopted and not adopted.exited()
    assert proc.popen is not None
    proc.popen.wait()  # what init does for a re-parented shim
    assert adopted.exited() and adopted.finish().exit_code == 7
    (tmp_path / "c.exit").unlink()
    assert adopted.finish().exit_code == 137  # no exit file: the shim was SIGKILLed


def test_pod_state_round_trip(tmp_path: Path) -> None:
    state = podstate.PodState(
        uid="u1",
        ip="10.244.0.5",
        netns="dbn1-p4",
        start_time="2026-01-01T00:00:00Z",
        phase="Running",
        pod_reason=None,
        transitions={"Ready": ("True", "2026-01-01T00:00:01Z")},
        has_token=True,
        containers=[
            podstate.ContainerState(
                name="main",
                pid=42,
                ticks=1234,
                restart_count=2,
                ready=True,
                waiting=("CrashLoopBackOff", "back-off"),
                env={"A": "b"},
                last_terminated={"exitCode": 1, "reason": "Error"},
            )
        ],
    )
    podstate.save(tmp_path, state.to_json())
    assert (tmp_path / podstate.FILE).stat().st_mode & 0o777 == 0o600
    loaded = podstate.load(tmp_path)
    assert loaded == state
    assert [c.name for c in loaded.live()] == ["main"]
    (tmp_path / podstate.FILE).write_text('{"version": 99}')
    assert podstate.load(tmp_path) is None
    podstate.remove(tmp_path)
    podstate.remove(tmp_path)
    assert podstate.load(tmp_path) is None
