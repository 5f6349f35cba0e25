"""The DivBase API/worker stand-in against a real PostgreSQL: one code path per release, a startup check that
accepts any compatible schema (not "exactly at head") and refuses an incompatible one, and a graceful drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from divbase_app import queries
from divbase_app.api import create_app
from divbase_app.settings import Settings
from divbase_migrations.compat import IncompatibleSchema
from divbase_migrations.testing.postgres import free_port
from fastapi.testclient import TestClient
from migrate_helpers import REPO, engine, run
from sqlalchemy import Engine
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


def test_release_4_reads_warning_as_caution_and_release_3_ignores_caution(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "3"), ("contract", "3"))
    with client(database_url, "3") as r3:
        assert r3.post("/announcements", json={"title": "old"}).json()["level"] == "WARNING"
        migrate(database_url, tmp_path, ("expand", "4"))
        with client(database_url, "4") as r4:
            assert r4.post("/announcements", json={"title": "new"}).json()["level"] == "CAUTION"
            assert {a["level"] for a in r4.get("/announcements").json()} == {"CAUTION"}
        assert r3.get("/announcements").json() == [{"title": "old", "level": "WARNING"}]
        assert r3.post("/vcf", json={"samples": 4}).status_code == 200


def test_workers_claim_each_task_once(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"), ("contract", "1"))
    db = engine(database_url)
    with db.begin() as conn:
        submitted = {queries.submit_task(conn, None) for _ in range(5)}
    claimed: list[str] = []
    with db.begin() as a, db.begin() as b:  # two workers at once: SKIP LOCKED hands out different rows
        first, second = queries.claim_task(a), queries.claim_task(b)
        assert first and second and first != second
        claimed += [first, second]
    while (task := _claim(db)) is not None:
        claimed.append(task)
    assert sorted(claimed) == sorted(submitted)


def _claim(db: Engine) -> str | None:
    with db.begin() as conn:
        task = queries.claim_task(conn)
        if task:
            queries.finish_task(conn, task)
        return task


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _api(database_url: str, release: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVBASE_")}
    env.update(DIVBASE_DATABASE_URL=database_url, DIVBASE_RELEASE=release, POD_IP="127.0.0.1", PORT=str(port),
               DIVBASE_DRAIN_SECONDS="5")
    return subprocess.Popen([str(REPO / ".venv" / "bin" / "divbase-api")], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def test_api_refuses_to_start_on_an_incompatible_schema(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"))
    proc = _api(database_url, "3", free_port(), tmp_path / "api.log")
    assert proc.wait(timeout=60) != 0
    log = (tmp_path / "api.log").read_text()
    assert "refusing to start: release 3 needs expand revision e0004_task_history_user_index" in log
    assert make_url(database_url).password not in log


def test_api_drains_on_sigterm(database_url: str, tmp_path: Path) -> None:
    migrate(database_url, tmp_path, ("expand", "1"))
    port = free_port()
    proc = _api(database_url, "1", port, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "api.log").read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _get(f"{base}/readyz")[0] == 503  # out of rotation ...
        assert json.loads(_get(f"{base}/version")[1]) == {"release": "1"}  # ... yet still serving
        assert proc.wait(timeout=20) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
