"""divbase-migrate pieces that need no database: lint, offline plan, URL handling and masking, help."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from divbase_migrations import cli, revisions
from divbase_migrations.database import ConfigError, Redactor, database_url_from_env, mask_url, parse_url
from divbase_migrations.lint import lint
from divbase_migrations.logs import JsonFormatter
from divbase_migrations.plan import plan_sql
from divbase_migrations.releases import Applied

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
VENV_BIN = Path(sys.executable).parent  # console scripts of the interpreter under test


def test_our_revisions_pass_lint() -> None:
    assert lint() == []


EXPECTED_FINDINGS = {
    "2026-09-01_drop_column.py": "op.drop_column: expand revisions must not drop",
    "2026-09-01_drop_table.py": "op.drop_table: expand revisions must not drop",
    "2026-09-01_rename_column.py": "op.alter_column: renames a column",
    "2026-09-01_change_type.py": "op.alter_column: changes a column type",
    "2026-09-01_set_not_null.py": "op.alter_column: makes a column NOT NULL",
    "2026-09-01_not_null_without_default.py": "adds a NOT NULL column without a server default to existing table",
    "2026-09-01_blocking_index.py": "op.create_index: builds an index on existing table 'project' without",
    "2026-09-01_raw_sql_drop.py": "op.execute: SQL drops COLUMN",
    "2026-09-01_raw_sql_blocking_index.py": "SQL builds an index without CONCURRENTLY",
    "2026-09-01_allow_without_reason.py": "an allow marker needs a reason",
    "2026-09-01_on_no_branch.py": "is on neither branch",
    "2026-09-01_contract_like_id_on_expand.py": "op.drop_column: expand revisions must not drop",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FINDINGS))
def test_lint_rejects_each_forbidden_expand_operation(name: str) -> None:
    findings = lint([FIXTURES / "bad_revisions" / name])
    assert len(findings) == 1, findings
    text = str(findings[0])
    assert text.startswith(f"{name}:"), text  # names the file (and line)
    assert EXPECTED_FINDINGS[name] in text


def test_lint_accepts_additive_expand_and_removals_in_contract() -> None:
    assert lint([FIXTURES / "good_revisions"]) == []


def test_lint_command_exit_code_names_file_and_op() -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "divbase-migrate"), "lint", str(FIXTURES / "bad_revisions")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == cli.EXIT_LINT
    assert "2026-09-01_drop_column.py:12: op.drop_column" in proc.stdout


def test_help_lists_subcommands_and_exit_codes() -> None:
    proc = subprocess.run([str(VENV_BIN / "divbase-migrate"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("expand", "contract", "status", "check", "plan", "lint", "exit codes", "DIVBASE_DATABASE_URL"):
        assert word in proc.stdout


def test_plan_is_offline_and_shows_the_contract_sql() -> None:
    manifest = revisions.load()
    r2 = manifest.release("2")
    todo, sql = plan_sql(manifest, "contract", r2, Applied(r2.expand, manifest.chains.contract[0]))
    assert todo == ("c0002_user_display_name",)
    assert 'ALTER TABLE "user" DROP COLUMN name' in sql
    assert "VALIDATE CONSTRAINT ck_user_display_name_not_null" in sql
    assert "e0002" not in sql.split("\n", 1)[1]  # the expand it depends on is not planned again
    todo, sql = plan_sql(manifest, "expand", manifest.release("3"), Applied(r2.expand, r2.contract))
    assert "CREATE INDEX CONCURRENTLY" in sql and "NOT VALID" in sql
    assert plan_sql(manifest, "expand", r2, Applied(r2.expand, r2.contract)) == ((), "")


def test_url_from_parts_and_errors_name_the_variable() -> None:
    url = database_url_from_env(
        {
            "DIVBASE_DB_HOST": "db",
            "DIVBASE_DB_PORT": "5433",
            "DIVBASE_DB_NAME": "divbase",
            "DIVBASE_DB_USER": "app",
            "DIVBASE_DB_PASSWORD": "s3cr3t-pw",
        }
    )
    assert url is not None and url.drivername == "postgresql+psycopg" and url.port == 5433
    assert mask_url(url) == "postgresql+psycopg://app:***@db:5433/divbase"
    with pytest.raises(ConfigError, match="DIVBASE_DB_PORT: must be a port number"):
        database_url_from_env(
            {"DIVBASE_DB_HOST": "db", "DIVBASE_DB_NAME": "d", "DIVBASE_DB_USER": "u", "DIVBASE_DB_PORT": "x"}
        )
    with pytest.raises(ConfigError, match="DIVBASE_DB_NAME not set"):
        database_url_from_env({"DIVBASE_DB_HOST": "db", "DIVBASE_DB_USER": "u"})
    with pytest.raises(ConfigError, match="no database configured"):
        database_url_from_env({})
    with pytest.raises(ConfigError, match="is not PostgreSQL"):
        parse_url("mysql://u:pw@h/d")
    assert parse_url("postgres://u:pw@h/d").drivername == "postgresql+psycopg"


def test_a_bad_url_error_does_not_repeat_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("postgresql://u:hunter2-secret@h:notaport/d")
    assert "hunter2-secret" not in str(info.value)


def test_redactor_masks_known_secrets_and_dsn_passwords() -> None:
    redact = Redactor(["hunter2-secret"])
    assert redact("failed for hunter2-secret") == "failed for ***"
    assert redact("host=h password=other-secret user=u") == "host=h password=*** user=u"
    assert redact("postgresql://u:another-one@h/d") == "postgresql://u:***@h/d"


def test_json_log_lines_are_masked() -> None:
    formatter = JsonFormatter(Redactor(["hunter2-secret"]))
    record = logging.makeLogRecord(
        {
            "msg": "connect %s",
            "args": ("hunter2-secret",),
            "levelname": "ERROR",
            "name": "t",
            "url": "postgresql://u:hunter2-secret@h/d",
        }
    )
    line = formatter.format(record)
    assert "hunter2-secret" not in line
    assert json.loads(line)["msg"] == "connect ***"


@pytest.mark.parametrize(("text", "ms"), [("5s", 5000), ("500ms", 500), ("2m", 120_000), ("3", 3000), ("0.5s", 500)])
def test_durations(text: str, ms: int) -> None:
    assert cli.duration_ms(text) == ms


def test_unknown_release_is_a_usage_error_before_connecting(tmp_path: Path) -> None:
    term = tmp_path / "term"
    env = {"PATH": "/usr/bin:/bin", "DIVBASE_DATABASE_URL": "postgresql://u:pw-not-used@127.0.0.1:1/d"}
    proc = subprocess.run(
        [str(VENV_BIN / "divbase-migrate"), "expand", "--release", "99", "--termination-log", str(term)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == cli.EXIT_USAGE
    summary = json.loads(term.read_text())
    assert summary["outcome"] == "failed" and "release '99' is not in the manifest" in summary["error"]
    assert "pw-not-used" not in proc.stdout + proc.stderr + term.read_text()
