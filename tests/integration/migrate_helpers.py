"""Running `divbase-migrate` as a Job would: a subprocess with the URL in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, pool

MIGRATE = str(Path(sys.executable).parent / "divbase-migrate")  # the console script of the interpreter under test


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    summary: dict[str, Any]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr + json.dumps(self.summary)


def migrate_env(url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVBASE_")}
    if url is not None:
        env["DIVBASE_DATABASE_URL"] = url
    env.update(extra)
    return env


def start(url: str | None, *args: str, term: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MIGRATE, *args, "--termination-log", str(term)],
        env=migrate_env(url, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], term: Path, timeout: float = 120) -> Result:
    out, err = proc.communicate(timeout=timeout)
    summary = json.loads(term.read_text()) if term.exists() and term.read_text().strip() else {}
    return Result(proc.returncode, out, err, summary)


def run(url: str | None, *args: str, term: Path, timeout: float = 120, **extra: str) -> Result:
    return finish(start(url, *args, term=term, **extra), term, timeout)


def engine(url: str) -> Engine:
    """A connection per use, so a test never holds a pooled session the runner would wait for."""
    return create_engine(url, poolclass=pool.NullPool)
