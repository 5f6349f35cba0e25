"""A private PostgreSQL server for tests and the demo: initdb in a temporary directory, a free port on 127.0.0.1.

Uses Debian's server binaries (`/usr/lib/postgresql/<major>/bin`, the newest installed, or `$PG_BINDIR`). Passwords
are checked (scram-sha-256 over TCP), so tests can prove that a wrong password fails cleanly. initdb refuses to run
as root: under root the server runs as the `postgres` system user that Debian's package creates, from a copy of the
server's installation when that user cannot reach the binaries where they are (a checkout in a 0700 directory, such
as `mktemp -d` makes, holding the PostgreSQL 18 wheel in its .venv)."""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from divbase_testsupport import free_port
from sqlalchemy.engine import URL

SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The server could not be set up (the message says which step, with its output)."""


def find_bindir() -> Path:
    configured = os.environ.get("PG_BINDIR")
    candidates = (
        [Path(configured)]
        if configured
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresError("no PostgreSQL server binaries found (install Debian's `postgresql` or set PG_BINDIR)")


def reachable_bindir(bindir: Path, demote: Callable[[], None]) -> Path:
    """`bindir`, or a copy of its installation (bin/, lib/, share/) that the demoted user can execute.

    The copy (with a wheel's `<package>.libs`, which its binaries find by a relative RPATH) goes to a root-owned
    0755 directory in the temporary directory, named after the installation's path and initdb's size and time, so
    the runs of one checkout share it; it is made under another name and renamed, so two runs starting together
    both find a whole copy."""
    try:
        subprocess.run(
            [str(bindir / "initdb"), "--version"], capture_output=True, preexec_fn=demote, timeout=60, check=True
        )
        return bindir
    except PermissionError:
        pass
    install = bindir.parent
    base, pieces = install, [install]
    libs = install.parent.parent / f"{install.parent.name}.libs"  # a wheel's libraries, its RPATH relative to bin/
    if libs.is_dir():
        base, pieces = install.parent.parent, [install, libs]
    stat = (bindir / "initdb").stat()
    key = hashlib.sha256(f"{install.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"divbase-pginstall-{key}"
    if not (target / bindir.relative_to(base) / "initdb").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        for piece in pieces:
            shutil.copytree(piece, staging / "copy" / piece.relative_to(base), symlinks=True)
        for directory in [staging / "copy", *(staging / "copy").rglob("*")]:
            if directory.is_dir():
                directory.chmod(0o755)
        try:
            os.rename(staging / "copy", target)
        except OSError:  # another run renamed its copy first
            shutil.rmtree(staging / "copy", ignore_errors=True)
        staging.rmdir()
    return target / bindir.relative_to(base)


class PostgresServer:
    """`with PostgresServer() as pg: url = pg.create_database("x")`; everything is removed on exit."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(16)
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="divbase-pg-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self._demote: Callable[[], None] | None = None
        self._uid: int | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresError("running as root needs the `postgres` system user (Debian's package)") from exc
            self._uid, gid = entry.pw_uid, entry.pw_gid

            def demote() -> None:
                os.setgid(gid)
                os.setgroups([])
                os.setuid(entry.pw_uid)

            self._demote = demote
            self.bindir = reachable_bindir(self.bindir, demote)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._uid is not None:
            os.chown(self.base_dir, self._uid, -1)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._uid is not None:
            os.chown(pwfile, self._uid, -1)
        pwfile.chmod(0o600)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_line_prefix": "'%m [%p] %u@%d '",
        }
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
        return self

    def stop(self, remove: bool = True) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop", check=False)
        if remove and self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port (fault injection: connections are cut)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------------------------
    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=user,
            password=password or self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private unix socket (no password needed there)."""
        out = self._run(
            "psql",
            "-h",
            str(self.base_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-X",
            "-q",
            "-A",
            "-t",
            "-c",
            sql,
        )
        return out.strip()

    def create_database(self, name: str) -> URL:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, tool: str, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            preexec_fn=self._demote,
            timeout=120,
        )
        if check and proc.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise PostgresError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{log}"
            )
        return proc.stdout
