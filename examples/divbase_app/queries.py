"""What differs between releases, and nothing else: each function is one release's code path."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, text


def name_column(release: int) -> str:
    return "name" if release < 2 else "display_name"


def create_user(conn: Connection, release: int, name: str) -> int:
    column = name_column(release)
    return int(conn.execute(text(
        f'INSERT INTO "user" (email, {column}, hashed_password) VALUES (:e, :n, \'!\') RETURNING id'),
        {"e": f"{uuid.uuid4().hex}@example.org", "n": name}).scalar_one())


def get_user(conn: Connection, release: int, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(f'SELECT id, email, {name_column(release)} FROM "user" WHERE id = :i'),
                       {"i": user_id}).first()
    return None if row is None else {"id": row[0], "email": row[1], "name": row[2]}


def add_vcf(conn: Connection, release: int, samples: int) -> int:
    key = uuid.uuid4().hex
    project = conn.execute(text("INSERT INTO project (name, bucket_name) VALUES (:n, :b) RETURNING id"),
                           {"n": f"p-{key}", "b": f"b-{key}"}).scalar_one()
    if release >= 3:
        sql = ("INSERT INTO vcf_metadata (project_id, vcf_file_s3_key, file_size_bytes, sample_count) "
               "VALUES (:p, :k, 1, :s) RETURNING id")
    else:
        sql = "INSERT INTO vcf_metadata (project_id, vcf_file_s3_key, file_size_bytes) VALUES (:p, :k, 1) RETURNING id"
    return int(conn.execute(text(sql), {"p": project, "k": f"{key}.vcf.gz", "s": samples}).scalar_one())


def announce(conn: Connection, release: int, title: str) -> str:
    level = "CAUTION" if release >= 4 else "WARNING"
    conn.execute(text("INSERT INTO announcement (title, message, level, target) VALUES (:t, '', :l, 'ALL')"),
                 {"t": title, "l": level})
    return level


def announcements(conn: Connection, release: int) -> list[dict[str, str]]:
    rows = conn.execute(text("SELECT title, level::text FROM announcement ORDER BY id DESC LIMIT 20")).all()
    if release >= 4:  # rows written by release 3 pods during the rollout say WARNING until the contract
        return [{"title": t, "level": "CAUTION" if lv == "WARNING" else lv} for t, lv in rows]
    return [{"title": t, "level": lv} for t, lv in rows if lv != "CAUTION"]  # release 3 knows no CAUTION


def submit_task(conn: Connection, user_id: int | None) -> str:
    task_id = uuid.uuid4().hex
    conn.execute(text("INSERT INTO task_history (task_id, task_name, status, user_id) "
                      "VALUES (:t, 'bcftools_query', 'PENDING', :u)"), {"t": task_id, "u": user_id})
    return task_id


def claim_task(conn: Connection) -> str | None:
    """One pending task, claimed the way Celery workers sharing a table would: SKIP LOCKED, no double work."""
    row = conn.execute(text(
        "UPDATE task_history SET status = 'STARTED', updated_at = now() WHERE id = ("
        "SELECT id FROM task_history WHERE status = 'PENDING' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) "
        "RETURNING task_id")).first()
    if row is None:
        return None
    conn.execute(text("INSERT INTO task_started_at (task_id, started_at) VALUES (:t, now())"), {"t": row[0]})
    return str(row[0])


def finish_task(conn: Connection, task_id: str) -> None:
    conn.execute(text("UPDATE task_history SET status = 'SUCCESS', updated_at = now() WHERE task_id = :t"),
                 {"t": task_id})
