"""The contract between divbase-operator and a migration runner, written once and imported by both sides.

The operator runs a runner (`divbase-migrate`, or any program honouring this module) in a Job from the release's
image: it passes the arguments `step_args` builds, the database settings as the environment variables below,
judges the exit code (the non-retryable ones fail the Job at once) and reads the one-line JSON summary the runner
writes as the container's termination message. docs/runner-contract.md says the same for someone writing
another runner.

Standard library only: the operator imports this without SQLAlchemy, Alembic or psycopg (a test checks)."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from typing import Any, Final

# --- Steps and their arguments -----------------------------------------------------------------------------------
STEP_EXPAND: Final = "expand"  # apply the release's additive revisions (old code keeps working)
STEP_CONTRACT: Final = "contract"  # apply the release's destructive revisions (no old pod is left)
STEP_PLAN: Final = "plan"  # read-only: render the contract's SQL for review (a Manual contract)
MIGRATION_STEPS: Final = (STEP_EXPAND, STEP_CONTRACT)
STEPS: Final = (*MIGRATION_STEPS, STEP_PLAN)
DEFAULT_COMMAND: Final = ("divbase-migrate",)  # the container command unless the resource names another


def step_args(step: str, release: str, lock_timeout_seconds: int | None = None,
              statement_timeout_seconds: int | None = None) -> list[str]:
    """The argument vector of one step, after the command (and any fixed arguments the resource adds).

    Timeouts go to expand and contract only. The plan reads one row (`alembic_version`) and renders SQL offline,
    and the operator runs the runner of the release's image, which may predate any option added to `plan`: an
    argument the image's runner refuses fails the Job with exit 2, so the plan gets only what every runner takes."""
    if step == STEP_PLAN:
        return [STEP_PLAN, STEP_CONTRACT, "--release", release, "--sql"]
    if step not in MIGRATION_STEPS:
        raise ValueError(f"unknown step {step!r}: one of {', '.join(STEPS)}")
    args = [step, "--release", release]
    if lock_timeout_seconds is not None:
        args += ["--lock-timeout", f"{lock_timeout_seconds}s"]
    if statement_timeout_seconds is not None:
        args += ["--statement-timeout", f"{statement_timeout_seconds}s"]
    return args


# --- Exit codes --------------------------------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_TIMEOUT: Final = 4
EXIT_PRECONDITION: Final = 5
EXIT_LINT: Final = 6
EXIT_MEANINGS: Final = {
    EXIT_OK: "success (also: nothing to do)",
    EXIT_FAILED: "a migration failed (its transaction was rolled back) or an unexpected error",
    EXIT_USAGE: "bad input: unknown release, bad option, bad database settings, corrupt manifest",
    EXIT_UNAVAILABLE: "the database is unreachable, refused the credentials, or dropped the connection",
    EXIT_TIMEOUT: "timed out: a lock not granted after every retry, another runner's lock, or statement_timeout",
    EXIT_PRECONDITION: "the database cannot take this step or serve this release (e.g. contract before expand, "
                       "a downgrade past a contract); `check` exits with this when the release cannot run",
    EXIT_LINT: "lint found a forbidden operation in an expand revision",
}
# No retry can fix these (the same input meets the same refusal): the Job fails at once (podFailurePolicy).
# The others are retried by the Job up to its backoffLimit: a database back up, a lock released, a fixed bug.
NON_RETRYABLE_EXIT_CODES: Final = (EXIT_USAGE, EXIT_PRECONDITION, EXIT_LINT)

# --- Environment -------------------------------------------------------------------------------------------------
ENV_DATABASE_URL: Final = "DIVBASE_DATABASE_URL"  # postgresql://user:password@host:port/db
ENV_DB_HOST: Final = "DIVBASE_DB_HOST"
ENV_DB_PORT: Final = "DIVBASE_DB_PORT"
ENV_DB_NAME: Final = "DIVBASE_DB_NAME"
ENV_DB_USER: Final = "DIVBASE_DB_USER"
ENV_DB_PASSWORD: Final = "DIVBASE_DB_PASSWORD"
# The Secret's parts (spec.database.secretRef.keys) and the variable each one becomes, when there is no URL.
ENV_DB_PARTS: Final = {"host": ENV_DB_HOST, "port": ENV_DB_PORT, "database": ENV_DB_NAME, "user": ENV_DB_USER,
                       "password": ENV_DB_PASSWORD}
ENV_RELEASE: Final = "DIVBASE_RELEASE"  # the release, as in --release (the operator sets both)
ENV_TERMINATION_LOG: Final = "DIVBASE_TERMINATION_LOG"  # where to write the summary, if set (else the path below)

# --- The summary: one line of JSON in the termination-message file --------------------------------------------
TERMINATION_LOG_PATH: Final = "/dev/termination-log"  # the container's terminationMessagePath
MAX_TERMINATION_BYTES: Final = 4096  # what the kubelet keeps of a termination message
MAX_ERROR_CHARS: Final = 1500  # `error` is cut to this, so the rest of the summary still fits

SUMMARY_COMMAND: Final = "command"  # the step (expand, contract, plan, ...)
SUMMARY_RELEASE: Final = "release"  # the release as given
SUMMARY_OUTCOME: Final = "outcome"  # one of OUTCOMES
SUMMARY_EXIT_CODE: Final = "exit_code"
SUMMARY_DURATION: Final = "duration_s"
SUMMARY_ERROR: Final = "error"  # what went wrong, for people: status.lastFailure and the Warning Event show it
SUMMARY_FROM: Final = "from"  # {"expand": revision|null, "contract": revision|null} before the step
SUMMARY_TO: Final = "to"  # the same after it: the operator records it in status.schema.revisions
SUMMARY_FOUND: Final = "found"  # expand/contract: the newest release the database served before the step, or null
SUMMARY_APPLIED: Final = "applied"  # revisions applied by this run, in order
SUMMARY_RETRIES: Final = "retries"  # lock-timeout retries it took
SUMMARY_STEP: Final = "step"  # plan: the step planned
SUMMARY_REVISIONS: Final = "revisions"  # plan: the revisions the step would apply
SUMMARY_DIGEST: Final = "digest"  # plan: "sha256:<hex>" of the SQL; an approval names its prefix
SUMMARY_SQL_Z: Final = "sql_z"  # plan: the SQL, zlib-compressed and base64-encoded, when it fits
SUMMARY_SQL_TRUNCATED: Final = "sql_truncated"  # plan: true when the SQL did not fit (only the digest is there)
SUMMARY_FINDINGS: Final = "findings"  # lint
SUMMARY_KEYS: Final = (
    SUMMARY_COMMAND, SUMMARY_RELEASE, SUMMARY_OUTCOME, SUMMARY_EXIT_CODE, SUMMARY_DURATION, SUMMARY_ERROR,
    SUMMARY_FROM, SUMMARY_TO, SUMMARY_FOUND, SUMMARY_APPLIED, SUMMARY_RETRIES, SUMMARY_STEP, SUMMARY_REVISIONS,
    SUMMARY_DIGEST, SUMMARY_SQL_Z, SUMMARY_SQL_TRUNCATED, SUMMARY_FINDINGS,
)
OUTCOMES: Final = ("ok", "applied", "noop", "failed", "incompatible")
PLAN_INLINE_BYTES: Final = 3000  # compressed plan SQL carried in the summary (leaves room for the rest of it)


def parse_summary(message: str | None) -> dict[str, Any]:
    """The summary in a termination message: its last line, a JSON object; {} when there is none (a runner that
    died before writing it leaves its last log lines there instead, with FallbackToLogsOnError)."""
    if not message:
        return {}
    try:
        parsed = json.loads(message.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def plan_digest(sql: str) -> str:
    return "sha256:" + hashlib.sha256(sql.encode()).hexdigest()


def plan_payload(sql: str) -> dict[str, Any]:
    """The plan inside the summary, so the operator can publish it without reading pod logs: its digest (what an
    approval names) and the SQL compressed, when it fits the kubelet's 4 KiB."""
    payload: dict[str, Any] = {SUMMARY_DIGEST: plan_digest(sql)}
    packed = base64.b64encode(zlib.compress(sql.encode(), 9)).decode()
    if len(packed) <= PLAN_INLINE_BYTES:
        payload[SUMMARY_SQL_Z] = packed
    else:
        payload[SUMMARY_SQL_TRUNCATED] = True
    return payload


def plan_sql(summary: dict[str, Any]) -> str | None:
    """The SQL a plan summary carries, or None (too large, or not a plan)."""
    packed = summary.get(SUMMARY_SQL_Z)
    if not isinstance(packed, str):
        return None
    try:
        return zlib.decompress(base64.b64decode(packed)).decode()
    except (ValueError, zlib.error, UnicodeDecodeError):
        return None
