"""Representative queries of each DivBase release, written the way that release's code talks to the database.

They are the zero-downtime promise made executable: release N's queries must keep working after release N+1's
expand (old pods serve while the new schema is being prepared and while new pods roll out), and must stop working
only after N+1's contract, which runs when no pod of N remains. Each function runs in the caller's transaction and
returns what it read, so tests can also check the two releases see each other's writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _project(conn: Connection) -> int:
    key = _uid()
    return int(conn.execute(text("INSERT INTO project (name, bucket_name) VALUES (:n, :b) RETURNING id"),
                            {"n": f"p-{key}", "b": f"b-{key}"}).scalar_one())


def _vcf_without_count(conn: Connection, project_id: int) -> int:
    return int(conn.execute(text(
        "INSERT INTO vcf_metadata (project_id, vcf_file_s3_key, file_size_bytes) VALUES (:p, :k, 10) RETURNING id"),
        {"p": project_id, "k": f"{_uid()}.vcf.gz"}).scalar_one())


def _announce(conn: Connection, level: str) -> list[str]:
    conn.execute(text("INSERT INTO announcement (title, message, level, target) VALUES ('t', 'm', :l, 'ALL')"),
                 {"l": level})
    return [str(r[0]) for r in conn.execute(text("SELECT DISTINCT level FROM announcement"))]


def release_1(conn: Connection) -> dict[str, Any]:
    user_id = conn.execute(text(
        'INSERT INTO "user" (email, name, hashed_password) VALUES (:e, :n, \'x\') RETURNING id'),
        {"e": f"{_uid()}@r1.example", "n": "Ada r1"}).scalar_one()
    names = [r[0] for r in conn.execute(text('SELECT name FROM "user" ORDER BY id'))]
    project_id = _project(conn)
    conn.execute(text("INSERT INTO project_membership (project_id, user_id, role) VALUES (:p, :u, 'MANAGE')"),
                 {"p": project_id, "u": user_id})
    _vcf_without_count(conn, project_id)
    conn.execute(text("INSERT INTO task_history (task_id, task_name, status, user_id) VALUES (:t, 'q', 'OK', :u)"),
                 {"t": _uid(), "u": user_id})
    levels = _announce(conn, "WARNING")
    return {"user_id": user_id, "names": names, "levels": levels}


def _users_by_display_name(conn: Connection, release: str) -> dict[str, Any]:
    user_id = conn.execute(text(
        'INSERT INTO "user" (email, display_name, hashed_password) VALUES (:e, :n, \'x\') RETURNING id'),
        {"e": f"{_uid()}@r{release}.example", "n": f"Grace r{release}"}).scalar_one()
    conn.execute(text('UPDATE "user" SET display_name = display_name || \'!\' WHERE id = :u'), {"u": user_id})
    names = [r[0] for r in conn.execute(text('SELECT display_name FROM "user" ORDER BY id'))]
    return {"user_id": user_id, "names": names}


def _vcf_with_count_and_tasks(conn: Connection, user_id: int) -> dict[str, Any]:
    project_id = _project(conn)
    conn.execute(text("INSERT INTO vcf_metadata (project_id, vcf_file_s3_key, file_size_bytes, sample_count) "
                      "VALUES (:p, :k, 10, 3)"), {"p": project_id, "k": f"{_uid()}.vcf.gz"})
    counts = [r[0] for r in conn.execute(text("SELECT sample_count FROM vcf_metadata ORDER BY id"))]
    recent = conn.execute(text(
        "SELECT count(*) FROM task_history WHERE user_id = :u AND created_at > now() - interval '1 day'"),
        {"u": user_id}).scalar_one()
    return {"sample_counts": counts, "recent_tasks": recent}


def release_2(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "2")
    _vcf_without_count(conn, _project(conn))
    out["levels"] = _announce(conn, "WARNING")
    return out


def release_3(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "3")
    out.update(_vcf_with_count_and_tasks(conn, out["user_id"]))
    out["levels"] = _announce(conn, "WARNING")
    return out


def release_4(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "4")
    out.update(_vcf_with_count_and_tasks(conn, out["user_id"]))
    _announce(conn, "CAUTION")
    # release 4 reads WARNING (written by release 3 pods until the contract rewrites it) as CAUTION
    out["levels"] = sorted({("CAUTION" if str(r[0]) == "WARNING" else str(r[0])) for r in conn.execute(
        text("SELECT level FROM announcement"))})
    return out


QUERIES: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "1": release_1, "2": release_2, "3": release_3, "4": release_4,
}
