"""The agent's handle on one running container: its shim (node/shim.py), whether the agent started it or found it.

A shim the agent started is its child (waited for as usual); one a previous agent started is not (that agent was
SIGKILLed, the shim was re-parented), so it is watched through /proc: its pid together with its start time (field 22
of /proc/<pid>/stat, clock ticks since boot), so a recycled pid is never mistaken for it. How the command ended comes
from the exit file the shim writes in both cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import shim

SIGKILLED = 128 + signal.SIGKILL


def shim_argv(exit_file: Path, argv: list[str]) -> list[str]:
    """The container's command line under the shim (by path, isolated: see node/shim.py)."""
    return [sys.executable, "-I", "-S", shim.__file__, "--exit-file", str(exit_file), "--", *argv]


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when there is no such live process (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # fields[0] is field 3 (state); field 22 is fields[19]
        return None
    return int(fields[19])


def is_alive(pid: int, ticks: int) -> bool:
    """Whether `pid` is still the very process recorded with `ticks`."""
    return pid > 0 and start_ticks(pid) == ticks


def kill_group(pid: int, ticks: int, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group led by `pid`, only if its leader is still the recorded process."""
    if not is_alive(pid, ticks):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    return True


def read_exit(exit_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(exit_file.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Ended:
    """How a container's command ended: `error` set when it could not be started (StartError)."""

    exit_code: int
    error: str = ""


class ShimProcess:
    """One container's shim: `exited()` polls without reaping, `finish()` cleans up and says how it ended."""

    def __init__(self, pid: int, ticks: int, exit_file: Path, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.ticks, self.exit_file, self.popen = pid, ticks, exit_file, popen

    @classmethod
    def start(cls, argv: list[str], exit_file: Path, **popen_kwargs: Any) -> ShimProcess:
        """Popen the shim as the leader of a new session (and so of its own process group)."""
        with contextlib.suppress(FileNotFoundError):
            exit_file.unlink()  # the last run's
        proc = subprocess.Popen(shim_argv(exit_file, argv), start_new_session=True, **popen_kwargs)
        return cls(proc.pid, start_ticks(proc.pid) or 0, exit_file, proc)

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def exited(self) -> bool:
        if self.popen is None:
            return not is_alive(self.pid, self.ticks)
        try:  # peek without reaping: the pid (= pgid) stays taken until leftovers of the group are killed
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.poll() is not None
        return info is not None and info.si_pid != 0

    def signal_group(self, sig: int) -> None:
        if self.popen is not None or is_alive(self.pid, self.ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def finish(self) -> Ended:
        """After `exited()`: kill what is left of the group, reap our child, read the exit file. No exit file: the
        shim was SIGKILLed with its command (the agent's SIGKILL), so 137; a shim that died otherwise is reported
        by its own wait status.

        An adopted shim's group is not signalled: the shim SIGKILLs its group itself when the command ends, and
        once it is reaped (by init) its pid may be recycled."""
        code = SIGKILLED
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)  # before reaping: until then the pgid cannot be recycled
            rc = self.popen.wait()
            code = rc if rc >= 0 else 128 - rc
        record = read_exit(self.exit_file)
        if record is not None:
            return Ended(int(record.get("exitCode", code)), str(record.get("error") or ""))
        return Ended(code)
