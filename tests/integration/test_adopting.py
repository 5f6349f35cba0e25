"""docs/adopting.md walked on a project shaped like DivBase: its own Alembic history as the trunk (a stand-in of three
revisions with DivBase's real ids, c5a18386f0b6 -> 427a022ebccf -> 9885301b9073, tests/fixtures/divbase_like), driven
by `divbase-migrate --config`, on a database built by those revisions with plain `alembic upgrade` (as DivBase's
db-migrator builds it) holding Celery's tables and realistic rows. Before and after the first expand/contract pair,
with and without [baseline.history]; a database at an older real revision, or an unknown one, is refused with
nothing changed; pytest-alembic's built-in tests run on the env.py of adopting.md §2.2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from divbase_data import CELERY, ROWS, assert_unchanged, fingerprint, state
from divbase_migrations import compat, revisions
from divbase_migrations.testing.postgres import PostgresServer
from migrate_helpers import Result, engine, run
from pytest_alembic.tests import test_up_down_consistency, test_upgrade
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import make_url

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "divbase_like"
SNAPSHOT = revisions.PACKAGE_DIR / "baseline" / "9885301b9073.json"
ALEMBIC = str(Path(sys.executable).parent / "alembic")
BASELINE = "9885301b9073"
AT_BASELINE = {"expand": BASELINE, "contract": BASELINE}
PAIR = {"expand": "e0001_project_contact", "contract": "c0001_project_contact"}

__all__ = ["test_up_down_consistency", "test_upgrade"]  # pytest-alembic's, on the fixture's env.py (an Engine)


def project(root: Path, *, pair: bool, history: bool = True) -> Path:
    """The project as adopting.md §2 leaves it: the snapshot copied beside releases.toml (§2.4); with `pair`, the
    first expand/contract pair written (§2.3) and its release listed. Returns its alembic.ini."""
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("first_pair", "__pycache__"))
    (root / "baseline").mkdir()
    shutil.copy(SNAPSHOT, root / "baseline" / SNAPSHOT.name)
    manifest = (root / "releases.toml").read_text()
    if not history:
        manifest, count = re.subn(r"(?ms)^\[baseline\.history\].*?(?=^\[\[release\]\])", "", manifest)
        assert count == 1
    if pair:
        for revision in (FIXTURE / "first_pair").glob("*.py"):
            shutil.copy(revision, root / "versions" / revision.name)
        manifest += "\n" + (FIXTURE / "first_pair" / "releases.toml").read_text()
    (root / "releases.toml").write_text(manifest)
    return root / "alembic.ini"


def alembic_upgrade(url: str, ini: Path, target: str) -> None:
    """Plain Alembic through the project's env.py, as DivBase's db-migrator runs it (`alembic upgrade head`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVBASE_")}
    done = subprocess.run(
        [ALEMBIC, "-c", str(ini), "upgrade", target],
        env={**env, "SYNC_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def built_like_production(url: str, ini: Path, target: str = BASELINE) -> None:
    """A database its own revisions built up to `target`, Celery's tables beside it, and (at the baseline) rows."""
    alembic_upgrade(url, ini, target)
    with engine(url).begin() as conn:
        conn.execute(text(CELERY))
        if target == BASELINE:
            conn.execute(text(ROWS))


def migrate(url: str, ini: Path, tmp_path: Path, *args: str) -> Result:
    return run(url, "--config", str(ini), *args, term=tmp_path / f"{'-'.join(args)}.json")


def compatible(url: str, ini: Path, release: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`require_compatible` as DivBase's lifespan calls it (adopting.md §2.5): the reason, or the refusal's text."""
    monkeypatch.setenv(revisions.ENV_CONFIG, str(ini))
    try:
        return compat.require_compatible(url, release=release).reason
    except compat.IncompatibleSchema as exc:
        return f"refused: {exc}"


def test_adopting_md_step_by_step(
    database_url: str, postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§2 in the image of v0.1.0a9 (no pair yet), §3 once in production, then the first release with a pair."""
    today = project(tmp_path / "v0.1.0a9", pair=False)
    built_like_production(database_url, today)
    rows = fingerprint_of(database_url)
    # §3.1: a backup
    dump = tmp_path / "divbase-before-operator.dump"
    libpq_url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    backup = subprocess.run(
        [str(postgres_server.bindir / "pg_dump"), "--format=custom", f"--file={dump}", "--dbname", libpq_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert backup.returncode == 0 and dump.stat().st_size > 0, backup.stderr
    # §3.2: what the runner sees
    before = state(database_url)
    status = migrate(database_url, today, tmp_path, "status")
    assert status.code == 0, status.output
    seen = json.loads(status.stdout)
    assert seen["applied"] == AT_BASELINE and seen["servable_releases"] == ["0.1.0a8", "0.1.0a9"]
    check = migrate(database_url, today, tmp_path, "check", "--release", "v0.1.0a9")
    assert check.code == 0 and check.stdout.startswith("release 0.1.0a9 can run"), check.output
    # §2.5: the API's startup check accepts the database as it is
    assert compatible(database_url, today, "v0.1.0a9", monkeypatch).startswith("release 0.1.0a9 can run")
    # §3.3: the resource at v0.1.0a9 -- its expand Job has nothing to do, and leaves no trace
    takeover = migrate(database_url, today, tmp_path, "expand", "--release", "v0.1.0a9")
    assert takeover.code == 0 and takeover.summary["outcome"] == "noop", takeover.output
    assert "no expand/contract revisions yet" in takeover.stderr
    assert_unchanged(database_url, before)
    # the first release with a pair: an ordinary rollout, the schema compared with the baseline before it
    nxt = project(tmp_path / "v0.1.0a10", pair=True)
    expand = migrate(database_url, nxt, tmp_path, "expand", "--release", "v0.1.0a10")
    assert expand.code == 0 and expand.summary["applied"] == [PAIR["expand"]], expand.output
    assert expand.summary["found"] == "0.1.0a9"
    assert "adopting: the schema matches the baseline" in expand.stderr
    for release in ("v0.1.0a9", "v0.1.0a10"):  # old pods and new ones both start during the rollout
        assert compatible(database_url, nxt, release, monkeypatch).startswith("release 0.1.0a"), release
    contract = migrate(database_url, nxt, tmp_path, "contract", "--release", "v0.1.0a10")
    assert contract.code == 0 and contract.summary["applied"] == [PAIR["contract"]], contract.output
    assert contract.summary["to"] == PAIR
    assert compatible(database_url, nxt, "v0.1.0a9", monkeypatch).startswith(
        "refused: contract revision c0001_project_contact removed what release 0.1.0a9 uses"
    )
    assert fingerprint_of(database_url) == rows


def fingerprint_of(url: str) -> dict[str, str]:
    with engine(url).connect() as conn:
        return fingerprint(conn)


@pytest.mark.parametrize(
    ("pair", "history"),
    [(False, True), (True, True), (True, False)],
    ids=["trunk-only", "first-pair", "first-pair-no-history"],
)
def test_every_command_recognises_a_database_at_the_baseline(
    database_url: str, tmp_path: Path, pair: bool, history: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = project(tmp_path / "p", pair=pair, history=history)
    built_like_production(database_url, ini)
    latest = "v0.1.0a10" if pair else "v0.1.0a9"
    status = migrate(database_url, ini, tmp_path, "status")
    assert status.code == 0 and json.loads(status.stdout)["applied"] == AT_BASELINE, status.output
    check = migrate(database_url, ini, tmp_path, "check", "--release", "v0.1.0a9")
    assert check.code == 0, check.output
    assert compatible(database_url, ini, "v0.1.0a9", monkeypatch).startswith("release 0.1.0a9 can run")
    for step in ("expand", "contract"):
        result = migrate(database_url, ini, tmp_path, step, "--release", latest)
        assert result.code == 0, result.output
        assert result.summary["applied"] == ([PAIR[step]] if pair else []), result.output
    assert migrate(database_url, ini, tmp_path, "check", "--release", latest).code == 0
    assert compatible(database_url, ini, latest, monkeypatch).startswith("release 0.1.0a")


def test_a_release_that_names_a_pair_not_written_yet_says_how_to_write_it(tmp_path: Path) -> None:
    ini = project(tmp_path / "p", pair=False)
    manifest = ini.parent / "releases.toml"
    manifest.write_text(manifest.read_text() + (FIXTURE / "first_pair" / "releases.toml").read_text())
    result = run(None, "--config", str(ini), "releases", term=tmp_path / "r.json")
    assert result.code == 2, result.output
    assert (
        "`expand` = 'e0001_project_contact' is not a revision of the expand branch (the project has no "
        "expand/contract revisions yet: write the first pair with `divbase-migrate revision -m MESSAGE "
        "--release 0.1.0a10`"
    ) in result.summary["error"]


OLDER = "upgrade it with the project's own migrations first: `alembic upgrade 9885301b9073`; nothing was changed"


@pytest.mark.parametrize(
    ("pair", "built", "stamped", "history", "code", "message"),
    [
        (
            True,
            "427a022ebccf",
            None,
            True,
            5,
            "the database is at revision 427a022ebccf (2026-04-17 "
            "add_personal_access_token_table (releases v0.1.0a1 to v0.1.0a5)), older than the baseline "
            "9885301b9073 this image starts from: " + OLDER,
        ),
        (
            False,
            "427a022ebccf",
            None,
            False,
            5,
            "the database is at revision 427a022ebccf (Stand-in for DivBase's "
            "427a022ebccf (releases v0.1.0a1 to v0.1.0a5 ran on it): the personal access tokens.), older than the "
            "baseline 9885301b9073 this image starts from: " + OLDER,
        ),
        (
            True,
            "c5a18386f0b6",
            None,
            False,
            5,
            "the database is at revision c5a18386f0b6 (Stand-in for DivBase's first revision",
        ),
        (
            False,
            "c5a18386f0b6",
            "755a240de0ab",
            True,
            5,
            "at revision 755a240de0ab (2026-03-19 add_queue_status_db_model), older than the baseline",
        ),
        (
            True,
            "c5a18386f0b6",
            "755a240de0ab",
            False,
            2,
            "alembic_version holds '755a240de0ab': not a revision of this image's migrations",
        ),
        (
            False,
            BASELINE,
            "0badc0ffee00",
            True,
            2,
            "alembic_version holds '0badc0ffee00': not a revision of this image's migrations",
        ),
    ],
    ids=[
        "older-in-history",
        "older-in-the-script",
        "first-revision",
        "older-history-only",
        "older-unlisted-is-unknown",
        "unknown",
    ],
)
def test_a_database_at_an_older_or_unknown_revision_is_refused_unchanged(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built: str,
    stamped: str | None,
    history: bool,
    code: int,
    message: str,
    pair: bool,
) -> None:
    ini = project(tmp_path / "p", pair=pair, history=history)
    built_like_production(database_url, ini, built)
    if stamped:
        with engine(database_url).begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": stamped})
    before = state(database_url)
    release = "v0.1.0a10" if pair else "v0.1.0a9"
    for args in (
        ("status",),
        ("check", "--release", release),
        ("expand", "--release", release),
        ("contract", "--release", release),
    ):
        result = migrate(database_url, ini, tmp_path, *args)
        assert result.code == code and message in result.summary["error"], (args, result.output)
        assert_unchanged(database_url, before)
    assert compatible(database_url, ini, release, monkeypatch) == "refused: " + result.summary["error"]


def test_a_drifted_database_at_the_baseline_is_refused_unchanged(database_url: str, tmp_path: Path) -> None:
    ini = project(tmp_path / "p", pair=True)
    built_like_production(database_url, ini)
    with engine(database_url).begin() as conn:
        conn.execute(text('CREATE INDEX ix_user_organisation ON "user" (organisation)'))
    before = state(database_url)
    result = migrate(database_url, ini, tmp_path, "expand", "--release", "v0.1.0a10")
    assert result.code == 5, result.output
    assert 'table "user": index "ix_user_organisation": unexpected' in result.summary["error"]
    assert_unchanged(database_url, before)


# pytest-alembic's built-in tests on the fixture's env.py (adopting.md §2.2), handed an Engine as in DivBase's CI.
@pytest.fixture
def alembic_config(tmp_path: Path) -> Config:
    return Config(str(project(tmp_path / "alembic-project", pair=True)))


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[Engine]:
    db = create_engine(database_url, poolclass=pool.NullPool)
    yield db
    db.dispose()
