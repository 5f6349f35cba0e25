"""The operator <-> runner contract (divbase_migrations.contract), checked against both real sides: the Jobs the
operator builds and the `divbase-migrate` that runs in them (its own argparse parser, its own env reader, its own
summary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from divbase_migrations import cli, contract, database, releases, runner
from divbase_operator import names
from divbase_operator.builders import Owner, build_job
from divbase_operator.spec import parse_spec
from planner_world import base_spec

MIGRATE = Path(sys.executable).parent / "divbase-migrate"  # the console script of the interpreter under test
OWNER = Owner("db", "prod", "uid-1")
TIMEOUTS = {"lockTimeoutSeconds": 7, "statementTimeoutSeconds": 30}


def _container(step: str, version: str = "v0.1.0a9", **migration_job: object) -> dict:
    spec, errors = parse_spec(base_spec(version, migrationJob=migration_job))
    assert not errors and spec is not None
    [container] = build_job(OWNER, spec, step, version, "")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("settings", [{}, TIMEOUTS, {"lockTimeoutSeconds": 3}], ids=["defaults", "timeouts", "lock"])
@pytest.mark.parametrize("step", [names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_PLAN])
def test_every_jobs_arguments_are_accepted_by_divbase_migrate(step: str, settings: dict) -> None:
    """The test that would have caught issue 13's plan Job (`unrecognized arguments: --lock-timeout 5s`, exit 2):
    each step's Job, as built, parsed by the runner's real parser."""
    container = _container(step, **settings)
    assert container["command"] == list(contract.DEFAULT_COMMAND) == ["divbase-migrate"]
    try:
        args = cli.parser().parse_args(container["args"])
    except SystemExit as exc:
        pytest.fail(f"divbase-migrate refuses the {step} Job's arguments {container['args']} (exit {exc.code})")
    assert args.release == "v0.1.0a9"
    if step == names.STEP_PLAN:
        assert (args.command, args.step, args.sql) == ("plan", names.STEP_CONTRACT, True)
        assert not any(a.startswith("--") and "timeout" in a for a in container["args"]), (
            "the read-only plan gets no timeouts: an older image's runner would refuse them"
        )
    else:
        assert args.command == step
        assert args.lock_timeout == (
            settings["lockTimeoutSeconds"] * 1000 if "lockTimeoutSeconds" in settings else 5000
        )  # the runner's own default
        assert args.statement_timeout == settings.get("statementTimeoutSeconds", 0) * 1000


@pytest.mark.parametrize("step", [names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_PLAN])
def test_any_runner_command_with_fixed_args_then_the_steps(step: str) -> None:
    """migrationJob.command replaces `divbase-migrate`; migrationJob.args come before the step's arguments, which
    `divbase-migrate`'s parser still accepts (a wrapper passes them on)."""
    container = _container(
        step,
        command=["python", "-m", "divbase_migrations.cli"],
        args=["--manifest", "/etc/divbase/releases.toml"],
        **TIMEOUTS,
    )
    assert container["command"] == ["python", "-m", "divbase_migrations.cli"]
    assert container["args"][:2] == ["--manifest", "/etc/divbase/releases.toml"]
    assert container["args"][2:] == contract.step_args(step, "v0.1.0a9", 7, 30)
    parsed = cli.parser().parse_args(container["args"])
    assert str(parsed.manifest) == "/etc/divbase/releases.toml" and parsed.release == "v0.1.0a9"


@pytest.mark.parametrize(
    ("migration_job", "field", "says"),
    [
        ({"command": []}, "spec.migrationJob.command", "at least 1"),
        ({"command": "divbase-migrate"}, "spec.migrationJob.command", "must be a list of strings, not a str"),
        ({"command": [""]}, "spec.migrationJob.command", "must name a program"),
        ({"args": ["--token", 12345]}, "spec.migrationJob.args", "must be a list of strings: item 1 is of type int"),
    ],
)
def test_bad_command_or_args_name_the_field_and_never_quote_them(migration_job: dict, field: str, says: str) -> None:
    spec, errors = parse_spec(base_spec("2", migrationJob=migration_job))
    assert spec is None
    [error] = errors
    assert str(error).startswith(f"{field}: ") and says in str(error)
    assert "12345" not in str(error)


def test_step_args_are_the_contracts() -> None:
    assert contract.step_args("expand", "2") == ["expand", "--release", "2"]
    assert contract.step_args("contract", "2", 5, 0) == [
        "contract",
        "--release",
        "2",
        "--lock-timeout",
        "5s",
        "--statement-timeout",
        "0s",
    ]
    assert contract.step_args("plan", "2", 5, 60) == ["plan", "contract", "--release", "2", "--sql"]
    with pytest.raises(ValueError, match="unknown step 'deploy'"):
        contract.step_args("deploy", "2")


def test_step_names_are_the_runners_commands_and_branches() -> None:
    assert (names.STEP_EXPAND, names.STEP_CONTRACT, names.STEP_PLAN) == contract.STEPS
    assert (releases.EXPAND, releases.CONTRACT) == contract.MIGRATION_STEPS
    commands = cli.parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(contract.STEPS) <= set(commands)


def test_exit_codes_are_the_contracts_on_both_sides() -> None:
    assert (
        {
            cli.EXIT_OK,
            cli.EXIT_FAILED,
            cli.EXIT_USAGE,
            cli.EXIT_UNAVAILABLE,
            cli.EXIT_TIMEOUT,
            cli.EXIT_PRECONDITION,
            cli.EXIT_LINT,
        }
        == set(contract.EXIT_MEANINGS)
        == set(range(7))
    )
    step_errors = {
        runner.StepError,
        runner.PreconditionFailed,
        runner.LockTimeout,
        runner.StatementTimeout,
        runner.DatabaseUnavailable,
        runner.MigrationFailed,
    }
    assert {e.exit_code for e in step_errors} <= set(contract.EXIT_MEANINGS)
    # the manifest's refusals of what alembic_version holds (releases.py keeps its own literals: checked here)
    assert releases.RevisionError.exit_code == releases.UnknownRevision.exit_code == contract.EXIT_USAGE
    assert releases.BehindBaseline.exit_code == contract.EXIT_PRECONDITION
    assert runner.PreconditionFailed.exit_code in contract.NON_RETRYABLE_EXIT_CODES
    assert runner.DatabaseUnavailable.exit_code not in contract.NON_RETRYABLE_EXIT_CODES
    for code, meaning in contract.EXIT_MEANINGS.items():
        assert f"  {code}  {meaning}" in cli.EXIT_CODES  # the runner's --help says what the contract says
    rules = _job_rules()
    assert rules[0]["onExitCodes"]["values"] == list(contract.NON_RETRYABLE_EXIT_CODES) == [2, 5, 6]


def _job_rules() -> list[dict]:
    spec, _ = parse_spec(base_spec("2"))
    assert spec is not None
    return build_job(OWNER, spec, "expand", "2", "")["spec"]["podFailurePolicy"]["rules"]


def test_the_runner_reads_the_database_from_the_env_the_job_gets() -> None:
    """The Job passes Secret keys as the contract's variables; the runner's reader finds them under those names."""
    keys = {"host": "h", "port": "p", "database": "d", "user": "u", "password": "pw"}
    spec, errors = parse_spec(base_spec("2", database={"secretRef": {"name": "pg", "keys": keys}}))
    assert not errors and spec is not None
    container = build_job(OWNER, spec, "expand", "2", "")["spec"]["template"]["spec"]["containers"][0]
    secret = {"h": "db.example", "p": "5433", "d": "divbase", "u": "divbase", "pw": "s3cret"}
    environ = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in container["env"] if "valueFrom" in e}
    url = database.database_url_from_env(environ)
    assert url is not None
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db.example",
        5433,
        "divbase",
        "divbase",
        "s3cret",
    )
    assert {"name": contract.ENV_RELEASE, "value": "2"} in container["env"]
    assert database.ENV_URL == contract.ENV_DATABASE_URL
    assert sorted(database.ENV_PARTS.values()) == sorted(contract.ENV_DB_PARTS.values())
    assert container["terminationMessagePath"] == contract.TERMINATION_LOG_PATH == str(cli.TERMINATION_DEFAULT)


def _run_migrate(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict]:
    term = tmp_path / "term"
    proc = subprocess.run(
        [str(MIGRATE), *args, "--termination-log", str(term)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    summary = contract.parse_summary(term.read_text())
    assert summary, proc.stderr
    return proc.returncode, summary


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["releases"], {}, contract.EXIT_OK),
        (["plan", "contract", "--release", "v2", "--sql"], {}, contract.EXIT_OK),  # no database: plans from nothing
        (
            ["expand", "--release", "99"],
            {"DIVBASE_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/d"},
            contract.EXIT_USAGE,
        ),
        (["contract", "--release", "2"], {}, contract.EXIT_USAGE),  # no database configured
    ],
)
def test_the_runners_summary_uses_the_contracts_keys(tmp_path: Path, args: list[str], env: dict, code: int) -> None:
    exit_code, summary = _run_migrate(tmp_path, *args, **env)
    assert exit_code == code == summary[contract.SUMMARY_EXIT_CODE]
    assert set(summary) <= set(contract.SUMMARY_KEYS), set(summary) - set(contract.SUMMARY_KEYS)
    assert summary[contract.SUMMARY_OUTCOME] in contract.OUTCOMES
    assert summary[contract.SUMMARY_COMMAND] == args[0]
    if code != contract.EXIT_OK:
        assert summary[contract.SUMMARY_ERROR]
    if args[0] == "plan":
        sql = contract.plan_sql(summary)
        assert sql and "ALTER TABLE" in sql
        assert summary[contract.SUMMARY_DIGEST] == contract.plan_digest(sql)
        assert summary[contract.SUMMARY_REVISIONS]


def test_plan_payload_round_trip_and_overflow() -> None:
    sql = 'ALTER TABLE "user" DROP COLUMN name;\n'
    payload = contract.plan_payload(sql)
    assert contract.plan_sql(payload) == sql and payload[contract.SUMMARY_DIGEST].startswith("sha256:")
    big = "".join(f"-- {os.urandom(16).hex()}\n" for _ in range(400))
    payload = contract.plan_payload(big)
    assert payload[contract.SUMMARY_SQL_TRUNCATED] is True and contract.plan_sql(payload) is None
    assert contract.plan_sql({contract.SUMMARY_SQL_Z: "not base64!"}) is None


def test_parse_summary_reads_the_last_line() -> None:
    assert contract.parse_summary('log line\n{"error":"locked"}\n') == {"error": "locked"}
    assert contract.parse_summary("usage: divbase-migrate ...\nerror: unrecognized arguments") == {}
    assert contract.parse_summary("[1, 2]") == {} and contract.parse_summary(None) == {}


def test_the_contract_and_the_operator_import_nothing_heavy() -> None:
    """The operator's memory budget (bench/scale.py) has no room for SQLAlchemy, Alembic or psycopg."""
    code = (
        "import sys\n"
        "import divbase_migrations.contract\n"
        "light = {m for m in sys.modules if m.split('.')[0] in ('packaging',)}\n"
        "import divbase_operator.planner, divbase_operator.builders, divbase_operator.crd, "
        "divbase_operator.kubectl_plugin, divbase_migrations.release_version\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg'))\n"
        "print(sorted(light), heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[] []", proc.stdout


def _runner_log_line(message: str, **extra: object) -> str:
    """A log line as divbase-migrate writes it: its own JSON formatter, with the password masked."""
    import logging

    from divbase_migrations.logs import JsonFormatter

    record = logging.makeLogRecord(
        {"name": "divbase_migrations.runner", "levelno": logging.INFO, "levelname": "INFO", "msg": message, **extra}
    )
    return JsonFormatter(database.Redactor(["s3cret"])).format(record)


def test_the_runners_lock_wait_line_is_what_the_operator_reads() -> None:
    holder = {"pid": 4242, "application_name": "divbase-migrate", "client": "10.0.3.7", "since": "2026-11-25T12:00:03Z"}
    wait = _runner_log_line(
        "another divbase-migrate holds the lock; waiting", **contract.lock_wait_fields(holder, "2026-11-25T12:00:09Z")
    )
    tail = "\n".join(['{"msg": "starting up"}', "plain text", wait])
    assert contract.read_lock_wait(tail) == contract.LockWait(
        4242, "divbase-migrate", "2026-11-25T12:00:03Z", "2026-11-25T12:00:09Z"
    )
    acquired = _runner_log_line("got the migration lock", **{contract.LOG_EVENT: contract.EVENT_LOCK_ACQUIRED})
    assert contract.read_lock_wait(f"{tail}\n{acquired}\n" + '{"msg": "applied"}\n') is None
    # the holder changed: the last wait line is the one that counts
    other = _runner_log_line(
        "another divbase-migrate holds the lock; waiting",
        **contract.lock_wait_fields({**holder, "pid": 77}, "2026-11-25T12:00:09Z"),
    )
    assert contract.read_lock_wait(f"{tail}\n{other}").holder_pid == 77
    unknown = _runner_log_line("waiting", **contract.lock_wait_fields(None, "2026-11-25T12:00:09Z"))
    assert contract.read_lock_wait(unknown) == contract.LockWait(None, None, None, "2026-11-25T12:00:09Z")
    assert contract.read_lock_wait(None) is None and contract.read_lock_wait("") is None


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        ({"pid": "4242", "application_name": 5, "since": "yesterday"}, contract.LockWait(None, None, None, None)),
        ({"pid": True, "application_name": "a\x1b[31mb\u202ec\nd"}, contract.LockWait(None, "a[31mbc d")),
        ({"pid": 2**40, "application_name": "x" * 500}, contract.LockWait(None, "x" * 60 + "...")),
        ({"pid": 1, "since": "2026-11-25T12:00:03.5Z"}, contract.LockWait(1)),
    ],
    ids=["wrong-types", "controls", "too-long", "time-of-another-shape"],
)
def test_a_lock_wait_keeps_only_checked_fields(holder: dict, expected: contract.LockWait) -> None:
    """The log is written by the image the resource names: untrusted, like the termination message."""
    line = json.dumps({"event": "lock_wait", "holder": holder, "waiting_since": "now", "secret": "s3cret"})
    assert contract.read_lock_wait(line) == expected


def test_a_lock_wait_is_read_from_a_bounded_tail_and_never_raises() -> None:
    wait = json.dumps({"event": "lock_wait", "holder": {"pid": 9}})
    assert contract.read_lock_wait(wait + "\n" + "x" * contract.MAX_LOG_TAIL_CHARS) is None  # out of reach
    long_line = json.dumps({"event": "lock_wait", "holder": {"pid": 9}, "pad": "x" * contract.MAX_LOG_LINE_CHARS})
    assert contract.read_lock_wait(long_line) is None
    for nasty in (
        '{"event": "lock_wait", "holder": ' + "[" * 50_000,
        '{"event": NaN}',
        '{"event": "lock_wait"',
        '["event"]',
        '{"event": ["lock_wait"]}',
        '\ud800{"event": "lock_wait"}',
    ):
        assert contract.read_lock_wait(nasty) is None, nasty
