"""`divbase-migrate --config` drives another Alembic project (its own revisions, env.py and releases.toml), as
DivBase's image would install it as a library and keep its own revisions."""

from __future__ import annotations

from pathlib import Path

from migrate_helpers import engine, run
from sqlalchemy import inspect

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "other_project"


def test_another_project_rolls_out_expand_then_contract(database_url: str, tmp_path: Path) -> None:
    config = ["--config", str(PROJECT / "alembic.ini")]
    first = run(database_url, *config, "expand", "--release", "v1.0.0", term=tmp_path / "a.json")
    assert first.code == 0, first.output
    assert first.summary["applied"] == ["a1"]
    expand = run(database_url, *config, "expand", "--release", "v1.1.0", term=tmp_path / "b.json")
    assert expand.code == 0 and expand.summary["applied"] == ["b2"], expand.output
    with engine(database_url).connect() as conn:
        assert {c["name"] for c in inspect(conn).get_columns("widget")} == {"id", "label", "title"}
    contract = run(database_url, *config, "contract", "--release", "v1.1.0", term=tmp_path / "c.json")
    assert contract.code == 0 and contract.summary["applied"] == ["d4"], contract.output
    with engine(database_url).connect() as conn:
        assert {c["name"] for c in inspect(conn).get_columns("widget")} == {"id", "title"}
    # the environment variable does the same as --config, and the project's releases are the ones listed
    listed = run(None, "releases", term=tmp_path / "r.json", DIVBASE_MIGRATE_CONFIG=str(PROJECT / "alembic.ini"))
    assert listed.code == 0 and '"v1.1.0"' in listed.stdout and '"4"' not in listed.stdout, listed.output
