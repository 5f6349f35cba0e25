"""The DivBase API/worker stand-in against a real PostgreSQL on DivBase's real schema: one code path per example
release, a startup check that accepts any compatible schema (not "exactly at head") and refuses an incompatible
one, workers that start each task once, and a graceful drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from divbase_app import queries
from divbase_app.api import create_app
from divbase_app.settings import Settings
from divbase_migrations.compat import IncompatibleSchema
from divbase_testsupport import free_port, wait_for
from fastapi.testclient import TestClient
from migrate_helpers import engine, run
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url


def migrate(url: str, tmp_path: Path, *steps: tuple[str, str]) -> None:
    for step, version in steps:
        result = run(url, step, "--release", version, term=tmp_path / f"{step}{version}")
        assert result.code == 0, result.output


def client(url: str, release: str) -> TestClient:
    return TestClient(create_app(Settings(release, make_url(url), "127.0.0.1", 0)))


def test_releases_share_data_across_an_expand(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"), ("contract", "1"))
    with client(database_url, "1") as old:
        created_by_old = old.post("/users", json={"name": "Ada"}).json()["id"]
        with pytest.raises(IncompatibleSchema, match="release 2 needs expand revision"), client(database_url, "2"):
            pass
        migrate(database_url, tmp_path, ("expand", "2"))
        with client(database_url, "2") as new:
            assert new.get("/readyz").json() == {"status": "ready", "release": "2"}
            assert new.get(f"/users/{created_by_old}").json()["name"] == "Ada"
            created_by_new = new.post("/users", json={"name": "Grace"}).json()["id"]
            assert old.get(f"/users/{created_by_new}").json()["name"] == "Grace"  # old pods see new writes
    migrate(database_url, tmp_path, ("contract", "2"))
    with pytest.raises(IncompatibleSchema, match="removed what release 1 uses"), client(database_url, "1"):
        pass


def test_every_answer_names_its_release_even_an_error(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a Service, the header is how a client tells which release answered, failures included."""
    migrate(database_url, tmp_path, ("expand", "1"), ("contract", "1"))
    app = create_app(Settings("1", make_url(database_url), "127.0.0.1", 0))
    with TestClient(app, raise_server_exceptions=False) as api:
        assert api.get("/version").headers["X-DivBase-Release"] == "1"
        assert api.get("/users/999999").headers["X-DivBase-Release"] == "1"  # a 404
        monkeypatch.setattr(queries, "get_user", lambda *a: (_ for _ in ()).throw(RuntimeError("column gone")))
        failed = api.get("/users/1")
        assert failed.status_code == 500 and failed.headers["X-DivBase-Release"] == "1"
        assert "column gone" not in failed.text


def test_release_4_reads_warning_as_caution_and_release_3_ignores_caution(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "3"), ("contract", "3"))
    with client(database_url, "3") as r3:
        assert r3.post("/announcements", json={"heading": "old"}).json()["level"] == "WARNING"
        migrate(database_url, tmp_path, ("expand", "4"))
        with client(database_url, "4") as r4:
            assert r4.post("/announcements", json={"heading": "new", "message": "m"}).json()["level"] == "CAUTION"
            assert r4.get("/announcements").json() == [
                {"heading": "new", "level": "CAUTION"},
                {"heading": "old", "level": "CAUTION"},
            ]
        assert r3.get("/announcements").json() == [{"heading": "old", "level": "WARNING"}]
        assert r3.post("/announcements", json={"heading": "x" * 201}).status_code == 422  # the column's length
    migrate(database_url, tmp_path, ("contract", "4"))
    with client(database_url, "4") as r4:  # the contract rewrote release 3's WARNING
        assert [a["level"] for a in r4.get("/announcements").json()] == ["CAUTION", "CAUTION"]
    with engine(database_url).connect() as conn:
        assert conn.execute(text("SELECT DISTINCT level::text FROM announcement")).scalars().all() == ["CAUTION"]


def skip_reasons(url: str) -> dict[str, str | None]:
    with engine(url).connect() as conn:
        return dict(conn.execute(text("SELECT vcf_file_s3_key, skip_reason FROM skipped_vcf_files")).all())


def test_skipped_files_get_a_reason_across_release_3(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "2"), ("contract", "2"))
    with client(database_url, "2") as r2:
        before = r2.post("/skipped-files", json={}).json()  # release 2 may skip without a reason
        assert before["reason"] is None
        migrate(database_url, tmp_path, ("expand", "3"))
        assert skip_reasons(database_url)[before["file"]] == "unspecified"  # backfilled
        # release 2 pods keep inserting without a reason during the rollout: the default fills it in
        during = r2.post("/skipped-files", json={"project": "other"}).json()
        assert during["reason"] == "unspecified"
        with client(database_url, "3") as r3:
            assert r3.post("/skipped-files", json={}).status_code == 422  # release 3 always says why
            given = r3.post("/skipped-files", json={"reason": "no samples"}).json()
            assert given["reason"] == "no samples" and given["release"] == "3"
    migrate(database_url, tmp_path, ("contract", "3"))
    with pytest.raises(IncompatibleSchema, match="removed what release 2 uses"), client(database_url, "2"):
        pass
    assert set(skip_reasons(database_url).values()) == {"unspecified", "no samples"}
    with engine(database_url).connect() as conn:
        nullable = conn.execute(
            text(
                "SELECT is_nullable FROM information_schema.columns "
                "WHERE table_name = 'skipped_vcf_files' AND column_name = 'skip_reason'"
            )
        )
        assert nullable.scalar_one() == "NO"


def _claim(db: Engine) -> str | None:
    with db.begin() as conn:
        return queries.claim_task(conn)


def test_workers_claim_each_task_once(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"), ("contract", "1"))
    db = engine(database_url)
    with db.begin() as conn:
        user = queries.create_user(conn, 1, "Ada")
        submitted = [queries.submit_task(conn, user) for _ in range(5)]
    claimed: list[str] = []
    with db.begin() as a, db.begin() as b:  # two workers at once: SKIP LOCKED hands out different rows
        first, second = queries.claim_task(a), queries.claim_task(b)
        assert first and second and first != second
        claimed += [first, second]
    while (task := _claim(db)) is not None:
        claimed.append(task)
    assert sorted(claimed) == sorted(submitted)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM task_started_at")).scalar_one() == 5
        history = queries.user_tasks(conn, user)
    assert {t["task_id"] for t in history} == set(submitted) and all(t["started"] for t in history)


def test_a_claim_that_loses_the_race_takes_the_next_task(database_url: str, tmp_path: Path) -> None:
    """A rival's claim that commits after this worker's snapshot: SKIP LOCKED cannot see it (the history row is not
    locked by it), the unique task_started_at.task_id must, and the worker moves on to the next task."""
    migrate(database_url, tmp_path, ("expand", "1"), ("contract", "1"))
    db = engine(database_url)
    with db.begin() as conn:
        first, second = queries.submit_task(conn, None), queries.submit_task(conn, None)
    rival = db.connect()
    rival.execute(text("INSERT INTO task_started_at (task_id, started_at) VALUES (:t, now())"), {"t": first})
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(_claim(db)))
    worker.start()
    try:
        wait_for(
            "the worker waiting for the rival's claim of the same task",
            lambda: _waiting_on_a_lock(db) == 1,
            30,
            interval=0.05,
        )
    finally:
        rival.commit()
        rival.close()
    worker.join(timeout=30)
    assert got == [second]


def _waiting_on_a_lock(db: Engine) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _api(database_url: str, release: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVBASE_")}
    env.update(
        DIVBASE_DATABASE_URL=database_url,
        DIVBASE_RELEASE=release,
        POD_IP="127.0.0.1",
        PORT=str(port),
        DIVBASE_DRAIN_SECONDS="5",
    )
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "divbase-api")], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def test_api_refuses_to_start_on_an_incompatible_schema(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"))
    proc = _api(database_url, "3", free_port(), tmp_path / "api.log")
    assert proc.wait(timeout=60) != 0
    log = (tmp_path / "api.log").read_text()
    assert "refusing to start: release 3 needs expand revision e0004_task_history_user_index" in log
    assert make_url(database_url).password not in log


def test_the_stand_in_refuses_a_release_it_does_not_serve(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="serves the example releases 1, 2, 3, 4 only"):
        Settings("0.1.0a9", make_url(database_url), "127.0.0.1", 0)
    proc = _api(database_url, "5", free_port(), tmp_path / "api.log")
    assert proc.wait(timeout=60) != 0
    assert (
        "DIVBASE_RELEASE='5': this stand-in serves the example releases 1, 2, 3, 4 only"
        in (tmp_path / "api.log").read_text()
    )


def test_api_drains_on_sigterm(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"))
    port = free_port()
    proc = _api(database_url, "1", port, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        try:
            return _get(f"{base}/readyz")[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_for("the API ready", ready, 30, interval=0.05)
        proc.send_signal(signal.SIGTERM)
        wait_for("out of rotation after SIGTERM", lambda: _get(f"{base}/readyz")[0] == 503, 30, interval=0.05)
        assert json.loads(_get(f"{base}/version")[1]) == {"release": "1"}  # ... yet still serving
        # drained, shut down cleanly, then ended by the TERM it got (uvicorn re-raises it): not killed, not crashed
        assert proc.wait(timeout=20) == -signal.SIGTERM, (tmp_path / "api.log").read_text()
        assert "Application shutdown complete" in (tmp_path / "api.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
