"""No value of the database settings in the runner's words, and no log tail in the operator's status (issue 14,
item 3). The real CLI against a real PostgreSQL: tests/integration/test_no_value_leaks.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from divbase_migrations import cli, contract
from divbase_migrations.database import ConfigError, Redactor, database_url_from_env, parse_url
from divbase_migrations.logs import JsonFormatter
from divbase_migrations.runner import unavailable_reason
from divbase_operator import names
from divbase_operator.builders import Owner, build_job
from divbase_operator.spec import parse_spec
from planner_world import World, base_spec

MARK = "zq7marker"
PARTS = {
    "DIVBASE_DB_HOST": f"{MARK}-host",
    "DIVBASE_DB_NAME": f"{MARK}_db",
    "DIVBASE_DB_USER": f"{MARK}_user",
    "DIVBASE_DB_PASSWORD": f"{MARK}-pw",
}


@pytest.mark.parametrize(
    "env",
    [
        {**PARTS, "DIVBASE_DB_PORT": MARK},
        {**PARTS, "DIVBASE_DB_PORT": "99999"},
        {**PARTS, "DIVBASE_DB_PORT": "١٢٣"},  # Arabic-Indic digits: isdigit(), not a port
        {"DIVBASE_DB_HOST": MARK, "DIVBASE_DB_USER": MARK},
        {"DIVBASE_DATABASE_URL": MARK},
        {"DIVBASE_DATABASE_URL": f"{MARK}://{MARK}:{MARK}@{MARK}/{MARK}"},
        {"DIVBASE_DATABASE_URL": f"postgresql://{MARK}:{MARK}@{MARK}:{MARK}/{MARK}"},
        {"DIVBASE_DATABASE_URL": f"postgresql://{MARK}:{MARK}@{MARK}"},
    ],
    ids=["port-word", "port-range", "port-unicode", "incomplete", "url-word", "url-scheme", "url-port", "url-no-db"],
)
def test_config_errors_name_the_variable_never_the_value(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        database_url_from_env(env)
    message = str(info.value)
    assert MARK not in message.lower()
    assert message.startswith("DIVBASE_") or message.startswith("incomplete database settings: DIVBASE_")


@pytest.mark.parametrize(
    "text",
    [
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
        f'failed for user "{MARK}_user"',
        f'connection failed: connection to server at "10.0.0.9", port 5432 failed: FATAL:  database "{MARK}" does not '
        f"exist",
        f'FATAL:  role "{MARK}" does not exist',
        f"failed to resolve host '{MARK}.invalid': [Errno -2] Name or service not known",
        f'could not translate host name "{MARK}" to address: Name or service not known',
        f'connection to server at "{MARK}" (10.0.0.1), port 6543 failed: Connection refused',
        f'FATAL:  no pg_hba.conf entry for host "10.1.1.1", user "{MARK}", database "{MARK}", no encryption',
        f"some future message about {MARK}",
    ],
)
def test_connection_failures_are_described_without_the_settings(text: str) -> None:
    reason = unavailable_reason(Exception(text))
    assert MARK not in reason and "6543" not in reason and "10.0.0" not in reason
    assert reason


def test_the_redactor_masks_every_setting_as_a_word_and_the_password_anywhere() -> None:
    env = {
        "DIVBASE_DB_HOST": "db.internal",
        "DIVBASE_DB_PORT": "6543",
        "DIVBASE_DB_NAME": "divbase",
        "DIVBASE_DB_USER": "divbase",
        "DIVBASE_DB_PASSWORD": "pw-x",
    }
    url = database_url_from_env(env)
    redact = Redactor.for_url(url, env)
    text = (
        'user "divbase" at db.internal:6543 (db.internal.) in divbase_migrations by divbase-migrate, '
        "took 0.6543 s, password pw-xyz"
    )
    assert redact(text) == (
        'user "***" at ***:*** (***.) in divbase_migrations by divbase-migrate, took 0.6543 s, password ***yz'
    )
    # values that do not parse are masked too: the URL as given, whole
    raw = {"DIVBASE_DATABASE_URL": f"{MARK}://x"}
    assert Redactor.for_url(None, raw)(f"got {MARK}://x") == "got ***"


def test_a_secret_json_would_escape_is_masked_before_encoding(tmp_path: Path) -> None:
    """A password with a quote or a non-ASCII letter is escaped by json.dumps (`\\"`, `\\u00e4`): masking the encoded
    line found nothing. The summary and the log lines mask the values first."""
    password = 'pä"ss\\word'
    redact = Redactor([password])
    summary = cli.Summary("expand", "1", redact)
    summary.data["error"] = f"failed with {password}"
    term = tmp_path / "term"
    summary.write(term, 1)
    line = term.read_text()
    assert json.loads(line)["error"] == "failed with ***"
    assert "ä" not in line and "\\u00e4" not in line
    record = logging.makeLogRecord(
        {"msg": "connect %s", "args": (password,), "levelname": "ERROR", "name": "t", "detail": {"nested": [password]}}
    )
    formatted = JsonFormatter(redact).format(record)
    assert json.loads(formatted)["msg"] == "connect ***" and json.loads(formatted)["detail"] == {"nested": ["***"]}
    assert "\\u00e4" not in formatted


def test_parse_url_never_repeats_the_scheme_or_the_url() -> None:
    for raw in (f"{MARK}://u:p@h/d", f"{MARK}", f"postgresql://{MARK}@h"):
        with pytest.raises(ConfigError) as info:
            parse_url(raw)
        assert MARK not in str(info.value)


# --- the operator's side: the termination message comes from the file only -----------------------------------
def test_migration_jobs_read_their_termination_message_from_the_file_only() -> None:
    spec, errors = parse_spec(base_spec("2"))
    assert spec is not None and not errors
    for step in (names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_PLAN):
        [container] = build_job(Owner("db", "prod", "u"), spec, step, "2", "")["spec"]["template"]["spec"]["containers"]
        assert container["terminationMessagePolicy"] == "File"
        assert container["terminationMessagePath"] == contract.TERMINATION_LOG_PATH


LOG_TAIL = (
    '{"level":"info","msg":"database","url":"postgresql://app:tok-123@db/x"}\n'
    "Traceback (most recent call last):\nRuntimeError: DIVBASE_DB_PORT=tok-123"
)


@pytest.mark.parametrize("message", ["", LOG_TAIL, "usage: divbase-migrate [-h]\nerror: unrecognized arguments"])
def test_without_a_summary_the_failure_says_so_and_never_quotes_the_message(message: str) -> None:
    """Whatever the termination message holds when it is not a summary (a log tail a runtime copied, a half-written
    line), the failure is `exit code N, no summary`: the planner never shows it."""
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=7, message=message)
    decision = world.reconcile()
    failure = world.status["lastFailure"]["message"]
    assert failure.startswith("exit code 7, no summary")
    for text in [
        failure,
        world.condition(names.COND_STALLED)["message"],
        *(a.message for a in decision.actions if hasattr(a, "message")),
    ]:
        assert "tok-123" not in text and "Traceback" not in text and "unrecognized" not in text


def test_a_summary_error_is_still_shown() -> None:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=4, message='{"error":"a lock was not granted"}')
    world.reconcile()
    assert world.status["lastFailure"]["message"] == "a lock was not granted"


def test_a_refused_command_line_still_leaves_a_summary_without_the_values(tmp_path: Path) -> None:
    """Issue 13's failure (an image's runner that does not know an option) keeps its explanation now that no log
    tail reaches status: the runner writes a summary naming the option, with every value masked."""
    term = tmp_path / "term"
    code = cli.main(
        [
            "--config",
            f"/etc/{MARK}.ini",
            "plan",
            "contract",
            "--release",
            "2",
            "--sql",
            "--lock-timeout",
            f"{MARK}s",
            "--termination-log",
            str(term),
        ]
    )
    assert code == contract.EXIT_USAGE
    summary = contract.parse_summary(term.read_text())
    assert summary["error"] == "the command line was refused: unrecognized arguments: --lock-timeout ***"
    assert summary["command"] == "plan" and summary["exit_code"] == contract.EXIT_USAGE
    assert MARK not in term.read_text()
    code = cli.main(["plan", MARK, f"--termination-log={term}"])
    assert code == contract.EXIT_USAGE and MARK not in term.read_text()
    assert "invalid choice: '***'" in contract.parse_summary(term.read_text())["error"]
