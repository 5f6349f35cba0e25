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
    return int(
        conn.execute(
            text(
                "INSERT INTO project (name, bucket_name, is_active, is_deleted, storage_quota_bytes, "
                "storage_used_bytes) VALUES (:n, :b, true, false, 10737418240, 0) RETURNING id"
            ),
            {"n": f"p-{key}", "b": f"b-{key}"},
        ).scalar_one()
    )


def _user(conn: Connection, column: str, release: str, name: str) -> int:
    """A user the way DivBase's code creates one (every NOT NULL column of the real table given)."""
    return int(
        conn.execute(
            text(
                f'INSERT INTO "user" (email, {column}, hashed_password, is_admin, is_active, is_deleted, '
                "email_verified, organisation, organisation_role) "
                "VALUES (:e, :n, 'x', false, true, false, true, 'SciLifeLab', 'tester') "
                "RETURNING id"
            ),
            {"e": f"{_uid()}@r{release}.example", "n": name},
        ).scalar_one()
    )


def _skip(conn: Connection, project_id: int, reason: str | None) -> None:
    params = {"p": project_id, "k": f"{_uid()}.vcf.gz", "r": reason}
    if reason is None:  # releases before 3 may give no reason: the column is left out
        conn.execute(
            text("INSERT INTO skipped_vcf_files (vcf_file_s3_key, project_id, s3_version_id) VALUES (:k, :p, 'v1')"),
            params,
        )
    else:
        conn.execute(
            text(
                "INSERT INTO skipped_vcf_files (vcf_file_s3_key, project_id, s3_version_id, skip_reason) "
                "VALUES (:k, :p, 'v1', :r)"
            ),
            params,
        )


def _announce(conn: Connection, level: str) -> list[str]:
    conn.execute(
        text("INSERT INTO announcement (heading, message, level, target) VALUES ('h', 'm', :l, 'BOTH')"), {"l": level}
    )
    return [str(r[0]) for r in conn.execute(text("SELECT DISTINCT level FROM announcement"))]


def release_1(conn: Connection) -> dict[str, Any]:
    """DivBase v0.1.0a9's schema: `user.name`, a skip without a reason, the WARNING level."""
    user_id = _user(conn, "name", "1", "Ada r1")
    names = [r[0] for r in conn.execute(text('SELECT name FROM "user" ORDER BY id'))]
    project_id = _project(conn)
    conn.execute(
        text("INSERT INTO project_membership (project_id, user_id, role) VALUES (:p, :u, 'MANAGE')"),
        {"p": project_id, "u": user_id},
    )
    _skip(conn, project_id, None)
    conn.execute(
        text("INSERT INTO task_history (task_id, user_id, project_id) VALUES (:t, :u, :p)"),
        {"t": _uid(), "u": user_id, "p": project_id},
    )
    levels = _announce(conn, "WARNING")
    return {"user_id": user_id, "names": names, "levels": levels}


def _users_by_display_name(conn: Connection, release: str) -> dict[str, Any]:
    user_id = _user(conn, "display_name", release, f"Grace r{release}")
    conn.execute(text("UPDATE \"user\" SET display_name = display_name || '!' WHERE id = :u"), {"u": user_id})
    names = [r[0] for r in conn.execute(text('SELECT display_name FROM "user" ORDER BY id'))]
    return {"user_id": user_id, "names": names}


def _skips_with_reason_and_tasks(conn: Connection, user_id: int) -> dict[str, Any]:
    project_id = _project(conn)
    _skip(conn, project_id, "no samples")
    reasons = [r[0] for r in conn.execute(text("SELECT skip_reason FROM skipped_vcf_files ORDER BY id"))]
    recent = conn.execute(
        text("SELECT count(*) FROM task_history WHERE user_id = :u AND created_at > now() - interval '1 day'"),
        {"u": user_id},
    ).scalar_one()
    return {"skip_reasons": reasons, "recent_tasks": recent}


def release_2(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "2")
    _skip(conn, _project(conn), None)
    out["levels"] = _announce(conn, "WARNING")
    return out


def release_3(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "3")
    out.update(_skips_with_reason_and_tasks(conn, out["user_id"]))
    out["levels"] = _announce(conn, "WARNING")
    return out


def release_4(conn: Connection) -> dict[str, Any]:
    out = _users_by_display_name(conn, "4")
    out.update(_skips_with_reason_and_tasks(conn, out["user_id"]))
    _announce(conn, "CAUTION")
    # release 4 reads WARNING (written by release 3 pods until the contract rewrites it) as CAUTION
    out["levels"] = sorted(
        {
            ("CAUTION" if str(r[0]) == "WARNING" else str(r[0]))
            for r in conn.execute(text("SELECT level FROM announcement"))
        }
    )
    return out


# DivBase's own releases at the baseline talk to the schema as example release 1 does.
QUERIES: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "0.1.0a6": release_1,
    "0.1.0a7": release_1,
    "0.1.0a8": release_1,
    "0.1.0a9": release_1,
    "1": release_1,
    "2": release_2,
    "3": release_3,
    "4": release_4,
}
