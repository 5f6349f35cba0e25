"""How a container's process is set up, as the kubelet and the runtime would: its command line, environment and
termination message. Pure except for reading the termination file and log tail after the container exited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import podspec
from .images import Resolved

TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048


def command_line(spec: dict[str, Any], resolved: Resolved, env: dict[str, str], term_file: Path) -> list[str]:
    """argv as the runtime builds it: `command` replaces the image's entrypoint, `args` its cmd; $(VAR) expanded;
    the container's terminationMessagePath replaced by the pod's termination file. Empty: nothing to run."""
    command, args = spec.get("command"), spec.get("args")
    if command:
        argv = list(command) + list(args or [])
    elif args is not None:
        argv = list(resolved.entrypoint) + list(args)
    else:
        argv = list(resolved.entrypoint) + list(resolved.cmd)
    term_path = spec.get("terminationMessagePath") or podspec.DEFAULT_TERMINATION_PATH
    argv = [podspec.expand(a, env) for a in argv]
    return [str(term_file) if a == term_path else a for a in argv]  # `--termination-log /dev/termination-log`


def process_env(
    resolved: Resolved, env: dict[str, str], pod_dir: Path, hostname: str, term_file: Path
) -> dict[str, str]:
    """The process environment: the image map entry's PATH and env, then the container's own variables."""
    return {
        "PATH": resolved.path,
        "HOME": str(pod_dir),
        "HOSTNAME": hostname,
        "DIVBASE_TERMINATION_LOG": str(term_file),
        "DIVBASE_VOLUMES_DIR": str(pod_dir / "volumes"),
        **resolved.env,
        **env,
    }


def tail(path: Path, lines: int, max_bytes: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def termination_message(term_file: Path, log_file: Path, exit_code: int, policy: str | None) -> str:
    """What the container wrote to its termination file, or with FallbackToLogsOnError and a failure, its log's
    tail."""
    try:
        with term_file.open("rb") as f:
            text = f.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
    except OSError:
        text = ""
    if not text and exit_code != 0 and policy == "FallbackToLogsOnError":
        text = tail(log_file, FALLBACK_LINES, FALLBACK_BYTES)
    return text
