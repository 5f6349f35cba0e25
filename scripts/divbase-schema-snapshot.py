#!/usr/bin/env python3
"""Regenerate the reference snapshot of DivBase's real schema from DivBase's own Alembic revisions.

    scripts/divbase-schema-snapshot.py --divbase PATH [--commit 4438d792] [--out FILE]

PATH is a clone of https://github.com/ScilifelabDataCentre/divbase (a work tree or a bare mirror). The script
copies the revisions of `--commit` (default: 4438d792, head revision 9885301b9073, release v0.1.0a9) out of git,
runs them with plain Alembic (a minimal env.py of ours: their env.py imports the whole application) on a private
PostgreSQL, adds the result tables Celery creates in the same database, and writes the normalized snapshot
(divbase_migrations.schema_snapshot) to migrations/divbase_migrations/baseline/<head>.json. The committed file is
what the tests and the runner's drift check compare with; re-run this when DivBase adds a revision to adopt."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from divbase_migrations import schema_snapshot
from divbase_migrations.models import FOREIGN_TABLES
from divbase_migrations.testing.postgres import PostgresServer
from sqlalchemy import create_engine, pool, text

DEFAULT_COMMIT = "4438d7921b9dc2f71ec2279494f44988a3989358"
VERSIONS = "packages/divbase-api/src/divbase_api/migrations/versions"
OUT_DIR = Path(__file__).resolve().parents[1] / "migrations" / "divbase_migrations" / "baseline"
ENV_PY = """
from alembic import context
connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""
# What Celery's database result backend creates on its first task (DivBase's worker runs it).
CELERY_DDL = """
CREATE SEQUENCE IF NOT EXISTS task_id_sequence;
CREATE TABLE IF NOT EXISTS celery_taskmeta (id integer PRIMARY KEY DEFAULT nextval('task_id_sequence'),
    task_id varchar(155) UNIQUE, status varchar(50), result bytea, date_done timestamp, traceback text,
    name varchar(155), args bytea, kwargs bytea, worker varchar(155), retries integer, queue varchar(155));
CREATE SEQUENCE IF NOT EXISTS taskset_id_sequence;
CREATE TABLE IF NOT EXISTS celery_groupmeta (id integer PRIMARY KEY DEFAULT nextval('taskset_id_sequence'),
    taskset_id varchar(155) UNIQUE, result bytea, date_done timestamp);
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def export_revisions(repo: Path, commit: str, target: Path) -> None:
    (target / "versions").mkdir(parents=True)
    (target / "env.py").write_text(ENV_PY)
    for name in git(repo, "ls-tree", "--name-only", f"{commit}:{VERSIONS}").split():
        if name.endswith(".py"):
            (target / "versions" / name).write_text(git(repo, "show", f"{commit}:{VERSIONS}/{name}"))


def build(script_dir: Path, server: PostgresServer) -> tuple[str, dict]:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    engine = create_engine(server.create_database("divbase_real"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.execute(text(CELERY_DDL))
        conn.commit()
        return str(head), schema_snapshot.take(conn, exclude_tables=FOREIGN_TABLES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--divbase", type=Path, required=True, help="a clone of ScilifelabDataCentre/divbase")
    p.add_argument("--commit", default=DEFAULT_COMMIT)
    p.add_argument("--out", type=Path, help="default: migrations/divbase_migrations/baseline/<head>.json")
    args = p.parse_args(argv)
    commit = git(args.divbase, "rev-parse", args.commit).strip()
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as server:
        export_revisions(args.divbase, commit, Path(tmp) / "alembic")
        head, snapshot = build(Path(tmp) / "alembic", server)
    out = args.out or OUT_DIR / f"{head}.json"
    schema_snapshot.dump(
        snapshot,
        out,
        source={
            "repository": "ScilifelabDataCentre/divbase",
            "commit": commit,
            "alembic_head": head,
            "built_by": "scripts/divbase-schema-snapshot.py",
        },
    )
    print(
        f"{out}: {len(snapshot['tables'])} tables, {len(snapshot['enums'])} enums (DivBase {commit[:8]}, head {head})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
