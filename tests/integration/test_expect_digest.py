"""An approval binds what runs (issue 14, item 4): `contract --expect-digest` applies only the SQL of the approved
plan, against a real PostgreSQL. A plan is approved by its digest; the contract is refused (exit 5, nothing
applied) when the image behind the same tag renders other SQL, or the database moved since the plan was made."""

from __future__ import annotations

import shutil
from pathlib import Path

from divbase_data import assert_unchanged, state
from divbase_migrations import contract
from migrate_helpers import engine, run
from sqlalchemy import text

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "other_project"


def plan(url: str, release: str, term: Path, *config: str) -> str:
    result = run(url, *config, "plan", "contract", "--release", release, "--sql", term=term)
    assert result.code == contract.EXIT_OK, result.output
    return str(result.summary[contract.SUMMARY_DIGEST])


def test_the_approved_plan_runs(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "2", term=tmp_path / "e").code == 0
    digest = plan(database_url, "2", tmp_path / "p")
    result = run(database_url, "contract", "--release", "2", contract.ARG_EXPECT_DIGEST, digest, term=tmp_path / "c")
    assert result.code == contract.EXIT_OK, result.output
    assert result.summary["applied"] == ["c0002_user_display_name"]
    assert "the SQL is the approved plan" in result.stderr
    again = run(
        database_url,
        "contract",
        "--release",
        "2",
        contract.ARG_EXPECT_DIGEST,
        "sha256:" + "0" * 64,
        term=tmp_path / "again",
    )
    assert again.code == contract.EXIT_OK and again.summary["outcome"] == "noop", "nothing left to run: no check"


def test_another_digest_is_refused_and_nothing_is_applied(database_url: str, tmp_path: Path) -> None:
    assert run(database_url, "expand", "--release", "2", term=tmp_path / "e").code == 0
    digest = plan(database_url, "2", tmp_path / "p")
    with engine(database_url).begin() as conn:
        conn.execute(text("DROP TABLE divbase_migration_log"))  # a refusal must not create it again
    before = state(database_url)
    other = "sha256:" + "ab" * 32
    result = run(database_url, "contract", "--release", "2", contract.ARG_EXPECT_DIGEST, other, term=tmp_path / "c")
    assert result.code == contract.EXIT_PRECONDITION, result.output
    error = result.summary["error"]
    assert error == (
        f"the contract of release 2 would run SQL {digest[:19]}, not the approved plan {other[:19]}: "
        "the image or the database changed since the plan was reviewed. Nothing was applied; make a new "
        "plan and approve that one"
    )
    assert_unchanged(database_url, before)


def test_a_database_that_moved_since_the_plan_is_refused(database_url: str, tmp_path: Path) -> None:
    """Planned from release 1's schema, then someone contracts release 2 by hand: release 3's contract would now
    run less SQL than was approved, and is refused."""
    assert run(database_url, "expand", "--release", "3", term=tmp_path / "e").code == 0
    digest = plan(database_url, "3", tmp_path / "p")
    assert run(database_url, "contract", "--release", "2", term=tmp_path / "c2").code == 0
    before = state(database_url)
    result = run(database_url, "contract", "--release", "3", contract.ARG_EXPECT_DIGEST, digest, term=tmp_path / "c3")
    assert result.code == contract.EXIT_PRECONDITION, result.output
    assert "not the approved plan" in result.summary["error"]
    assert_unchanged(database_url, before)
    fresh = plan(database_url, "3", tmp_path / "p2")
    assert fresh != digest
    ok = run(database_url, "contract", "--release", "3", contract.ARG_EXPECT_DIGEST, fresh, term=tmp_path / "c4")
    assert ok.code == contract.EXIT_OK, ok.output


def test_an_image_repushed_with_other_sql_is_refused(database_url: str, tmp_path: Path) -> None:
    """The same release in another image (a re-pushed tag): the plan was made and approved with the first, the
    contract Job pulls the second, whose contract revision drops another column."""
    first = tmp_path / "first"
    second = tmp_path / "second"
    shutil.copytree(PROJECT, first)
    shutil.copytree(PROJECT, second)
    revision = second / "versions" / "2026-02-01_widget_title_contract.py"
    revision.write_text(revision.read_text().replace("DROP COLUMN label", "DROP COLUMN title"))
    for release in ("v1.0.0", "v1.1.0"):
        done = run(
            database_url,
            "--config",
            str(first / "alembic.ini"),
            "expand",
            "--release",
            release,
            term=tmp_path / f"e{release}",
        )
        assert done.code == 0, done.output
    approved = plan(database_url, "v1.1.0", tmp_path / "p", "--config", str(first / "alembic.ini"))
    before = state(database_url)
    result = run(
        database_url,
        "--config",
        str(second / "alembic.ini"),
        "contract",
        "--release",
        "v1.1.0",
        contract.ARG_EXPECT_DIGEST,
        approved,
        term=tmp_path / "c",
    )
    assert result.code == contract.EXIT_PRECONDITION, result.output
    assert "not the approved plan" in result.summary["error"]
    assert_unchanged(database_url, before)
    ok = run(
        database_url,
        "--config",
        str(first / "alembic.ini"),
        "contract",
        "--release",
        "v1.1.0",
        contract.ARG_EXPECT_DIGEST,
        approved,
        term=tmp_path / "ok",
    )
    assert ok.code == 0 and ok.summary["applied"] == ["d4"], ok.output


def test_a_malformed_digest_is_bad_input(tmp_path: Path) -> None:
    result = run(None, "contract", "--release", "2", contract.ARG_EXPECT_DIGEST, "sha256:abc", term=tmp_path / "c")
    assert result.code == contract.EXIT_USAGE
    assert "--expect-digest" in result.summary["error"]
