"""The per-container shim: the process-group leader of a container, so its exit code survives the node agent.

Run as ``python -I -S .../node/shim.py --exit-file <pod dir>/termination/<container>.exit -- <argv>`` (by path, with
nothing but the standard library: no site-packages scan and no PYTHON* variables of the container's environment, so
it starts fast and the container's env cannot break it). It starts the real command as its child in its own
process group (the agent signals the group), waits for it, writes ``{"exitCode", "signal", "finishedAt"}``
atomically to the exit file and SIGKILLs what is left of the group (a kubelet kills the container's cgroup when its
main process exits), itself included. An agent that was SIGKILLed and started again reads the file instead of a wait
status it can no longer get (the shim is no longer its child).

Signals: SIGTERM/SIGINT/SIGHUP/SIGQUIT sent to the group reach the command; the shim catches them with a handler
that does nothing, so it outlives them until the command has exited. The command gets default dispositions for
every signal (a caught one is reset by exec; SIGPIPE and SIGXFSZ, which Python ignores, are reset before it).
SIGKILL of the group kills both, and then no exit file is written (the agent knows: it sent the SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
START_ERROR_CODE = 128  # what containerd reports for a command that could not be started


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_exit(path: str, record: dict[str, object]) -> None:
    """Write + fsync + rename: a reader never sees half a record, a crash leaves the old file or the new one."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _spawn(argv: list[str]) -> tuple[int, str]:
    """fork + exec (posix_spawn would leave glibc's internal signals 32/33 ignored in the command): the caught
    signals are blocked across the fork so one arriving meanwhile is delivered after exec, with its default action
    in the command. An exec error comes back through a close-on-exec pipe; returns (pid, "") or (0, error)."""
    r, w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for sig in (*CAUGHT, signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores SIGPIPE and SIGXFSZ
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, CAUGHT)
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(w, (e.strerror or str(e)).encode())
        finally:
            os._exit(127)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CAUGHT)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        error = f.read().decode(errors="replace")
    if error:
        os.waitpid(pid, 0)
        return 0, error
    return pid, ""


def run(exit_file: str, argv: list[str]) -> int:
    """Start `argv`, wait for it, record how it ended; returns the shell-style exit code (128 + signal)."""
    for sig in CAUGHT:
        signal.signal(sig, lambda *_: None)  # survive the group's SIGTERM; never SIG_IGN (children inherit that)
    pid, error = _spawn(argv)
    if error:
        msg = f'failed to start container process: exec: "{argv[0]}": {error}'
        write_exit(
            exit_file, {"exitCode": START_ERROR_CODE, "signal": None, "finishedAt": _rfc3339(time.time()), "error": msg}
        )
        return START_ERROR_CODE
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after a caught signal
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = 128 + sig if sig is not None else os.waitstatus_to_exitcode(status)
    write_exit(exit_file, {"exitCode": code, "signal": sig, "finishedAt": _rfc3339(time.time())})
    return code


def main(args: list[str]) -> int:
    if len(args) < 4 or args[0] != "--exit-file" or args[2] != "--":
        print("usage: shim.py --exit-file FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    code = run(args[1], args[3:])
    sys.stdout.flush()
    if os.getpgrp() == os.getpid():  # leftovers of the container die with it (and so does the shim)
        os.killpg(0, signal.SIGKILL)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
