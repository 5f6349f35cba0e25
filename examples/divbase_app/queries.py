"""What the stand-in writes and reads, on DivBase's real tables; each `release` branch is one release's code path.

Release 1 is DivBase v0.1.0a9's schema. Every NOT NULL column is given explicitly: DivBase's tables have no server
defaults for them (its SQLAlchemy models fill them in Python), so neither does a raw INSERT here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, text

# release 4 replaces the announcement level WARNING by CAUTION
WARNING_LEVEL = {1: "WARNING", 2: "WARNING", 3: "WARNING", 4: "CAUTION"}


def name_column(release: int) -> str:
    """Release 2 renamed `user.name` to `user.display_name`."""
    return "name" if release < 2 else "display_name"


def create_user(conn: Connection, release: int, name: str) -> int:
    column = name_column(release)
    return int(
        conn.execute(
            text(
                f'INSERT INTO "user" (email, {column}, hashed_password, is_admin, is_active, is_deleted, '
                "email_verified, organisation, organisation_role) "
                "VALUES (:e, :n, '!', false, true, false, false, 'stand-in', 'tester') "
                "RETURNING id"
            ),
            {"e": f"{uuid.uuid4().hex}@example.org", "n": name},
        ).scalar_one()
    )


def get_user(conn: Connection, release: int, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        text(f'SELECT id, email, {name_column(release)} FROM "user" WHERE id = :i'), {"i": user_id}
    ).first()
    return None if row is None else {"id": row[0], "email": row[1], "name": row[2]}


def project(conn: Connection, name: str) -> int:
    """The project of that name, created on first use (concurrent requests may race: the unique name decides)."""
    conn.execute(
        text(
            "INSERT INTO project (name, bucket_name, is_active, is_deleted, storage_quota_bytes, storage_used_bytes) "
            "VALUES (:n, :b, true, false, 10737418240, 0) ON CONFLICT (name) DO NOTHING"
        ),
        {"n": name, "b": f"divbase-{name}"},
    )
    return int(conn.execute(text("SELECT id FROM project WHERE name = :n"), {"n": name}).scalar_one())


class ReasonRequired(ValueError):
    """Release 3 made `skipped_vcf_files.skip_reason` NOT NULL: its code never skips a file without saying why."""


def skip_vcf(conn: Connection, release: int, project_id: int, reason: str | None) -> dict[str, Any]:
    """Record a VCF file the indexer skipped; returns the row as stored (the reason the database kept)."""
    if reason is None and release >= 3:
        raise ReasonRequired(f"release {release} records a reason for every skipped VCF file")
    params = {"k": f"{uuid.uuid4().hex}.vcf.gz", "p": project_id, "v": uuid.uuid4().hex, "r": reason}
    if reason is None:  # releases 1 and 2 leave the column out: NULL, or release 3's default once it expanded
        sql = (
            "INSERT INTO skipped_vcf_files (vcf_file_s3_key, project_id, s3_version_id) VALUES (:k, :p, :v) "
            "RETURNING id, vcf_file_s3_key, skip_reason"
        )
    else:
        sql = (
            "INSERT INTO skipped_vcf_files (vcf_file_s3_key, project_id, s3_version_id, skip_reason) "
            "VALUES (:k, :p, :v, :r) RETURNING id, vcf_file_s3_key, skip_reason"
        )
    row = conn.execute(text(sql), params).one()
    return {"id": row[0], "file": row[1], "reason": row[2]}


def announce(conn: Connection, release: int, heading: str, message: str | None) -> str:
    level = WARNING_LEVEL[release]
    conn.execute(
        text("INSERT INTO announcement (heading, message, level, target) VALUES (:h, :m, :l, 'BOTH')"),
        {"h": heading, "m": message, "l": level},
    )
    return level


def announcements(conn: Connection, release: int) -> list[dict[str, str]]:
    """The newest announcements as this release understands them.

    Release 4 reads WARNING (written by release 3 pods until its contract rewrites them) as CAUTION. Releases 1-3
    know no CAUTION: they skip such rows, comparing as text because their enum type may not have the label."""
    if release >= 4:
        rows = conn.execute(text("SELECT heading, level::text FROM announcement ORDER BY id DESC LIMIT 20")).all()
        return [{"heading": h, "level": "CAUTION" if lv == "WARNING" else lv} for h, lv in rows]
    rows = conn.execute(
        text("SELECT heading, level::text FROM announcement WHERE level::text <> 'CAUTION' ORDER BY id DESC LIMIT 20")
    ).all()
    return [{"heading": h, "level": lv} for h, lv in rows]


def submit_task(conn: Connection, user_id: int | None) -> str:
    """A task in DivBase's history; its state lives in Celery's result tables, so the row has none."""
    task_id = str(uuid.uuid4())
    conn.execute(text("INSERT INTO task_history (task_id, user_id) VALUES (:t, :u)"), {"t": task_id, "u": user_id})
    return task_id


# The oldest task without a start. SKIP LOCKED keeps workers off each other's candidates; it is no guarantee, as
# nothing in task_history changes when a task is claimed: a worker whose snapshot predates another's committed claim
# can still pick that task, and the unique task_started_at.task_id is what turns it away (ON CONFLICT below).
_UNSTARTED = """
SELECT th.task_id FROM task_history AS th
 WHERE th.task_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM task_started_at AS s WHERE s.task_id = th.task_id)
 ORDER BY th.id
 LIMIT 1
   FOR UPDATE OF th SKIP LOCKED"""
_START = """
INSERT INTO task_started_at (task_id, started_at) VALUES (:t, now())
    ON CONFLICT (task_id) DO NOTHING RETURNING task_id"""


def claim_task(conn: Connection) -> str | None:
    """Start one task no worker has started, or None: a task is started exactly once (no double work).

    Each lost race means another worker's claim committed, which the next statement's snapshot sees: the loop
    ends."""
    while True:
        task_id = conn.execute(text(_UNSTARTED)).scalar()
        if task_id is None:
            return None
        if conn.execute(text(_START), {"t": task_id}).scalar() is not None:
            return str(task_id)


def user_tasks(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    """A user's task history, newest first (release 3's index on (user_id, created_at) serves it without a sort)."""
    rows = conn.execute(
        text(
            "SELECT th.task_id, s.started_at IS NOT NULL FROM task_history AS th "
            "LEFT JOIN task_started_at AS s ON s.task_id = th.task_id "
            "WHERE th.user_id = :u ORDER BY th.created_at DESC LIMIT 50"
        ),
        {"u": user_id},
    ).all()
    return [{"task_id": t, "started": bool(started)} for t, started in rows]
