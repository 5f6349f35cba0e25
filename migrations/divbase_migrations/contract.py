"""The contract between divbase-operator and a migration runner, written once and imported by both sides.

The operator runs a runner (`divbase-migrate`, or any program honouring this module) in a Job from the release's
image: it passes the arguments `step_args` builds, the database settings as the environment variables below,
judges the exit code (the non-retryable ones fail the Job at once) and reads the one-line JSON summary the runner
writes as the container's termination message. While the runner waits for another runner's lock, one structured
log line says so (`read_lock_wait`): the operator shows it, and decides nothing on it. docs/runner-contract.md
says the same for someone writing another runner.

Standard library only: the operator imports this without SQLAlchemy, Alembic or psycopg (a test checks)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, Final

# --- Steps and their arguments -----------------------------------------------------------------------------------
STEP_EXPAND: Final = "expand"  # apply the release's additive revisions (old code keeps working)
STEP_CONTRACT: Final = "contract"  # apply the release's destructive revisions (no old pod is left)
STEP_PLAN: Final = "plan"  # read-only: render the contract's SQL for review (a Manual contract)
MIGRATION_STEPS: Final = (STEP_EXPAND, STEP_CONTRACT)
STEPS: Final = (*MIGRATION_STEPS, STEP_PLAN)
DEFAULT_COMMAND: Final = ("divbase-migrate",)  # the container command unless the resource names another
DIGEST_PATTERN: Final = re.compile(r"sha256:[0-9a-f]{64}")  # a plan's digest, as `plan_digest` writes it
ARG_EXPECT_DIGEST: Final = "--expect-digest"  # contract: run only the SQL of this approved plan (else exit 5)


def step_args(
    step: str,
    release: str,
    lock_timeout_seconds: int | None = None,
    statement_timeout_seconds: int | None = None,
    expect_digest: str | None = None,
) -> list[str]:
    """The argument vector of one step, after the command (and any fixed arguments the resource adds).

    Timeouts go to expand and contract only. The plan reads one row (`alembic_version`) and renders SQL offline,
    and the operator runs the runner of the release's image, which may predate any option added to `plan`: an
    argument the image's runner refuses fails the Job with exit 2, so the plan gets only what every runner takes.

    `expect_digest` (a Manual contract: the digest of the plan that was approved) goes to contract only: the runner
    renders the SQL it is about to run, under its lock, and refuses with EXIT_PRECONDITION when its digest is not
    this one (another image behind the same tag, or a database that moved since the plan), applying nothing."""
    if expect_digest is not None and step != STEP_CONTRACT:
        raise ValueError(f"{ARG_EXPECT_DIGEST} binds a contract to its approved plan, not {step!r}")
    if step == STEP_PLAN:
        return [STEP_PLAN, STEP_CONTRACT, "--release", release, "--sql"]
    if step not in MIGRATION_STEPS:
        raise ValueError(f"unknown step {step!r}: one of {', '.join(STEPS)}")
    args = [step, "--release", release]
    if lock_timeout_seconds is not None:
        args += ["--lock-timeout", f"{lock_timeout_seconds}s"]
    if statement_timeout_seconds is not None:
        args += ["--statement-timeout", f"{statement_timeout_seconds}s"]
    if expect_digest is not None:
        if not DIGEST_PATTERN.fullmatch(expect_digest):
            raise ValueError(f"{ARG_EXPECT_DIGEST} takes sha256:<64 lowercase hex digits>")
        args += [ARG_EXPECT_DIGEST, expect_digest]
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
    EXIT_USAGE: "bad input: unknown release (a version that is no release), bad option, bad database settings, "
    "corrupt manifest, an alembic_version revision neither in the revisions nor in the baseline's history",
    EXIT_UNAVAILABLE: "the database is unreachable, refused the credentials, or dropped the connection",
    EXIT_TIMEOUT: "timed out: a lock not granted (or a deadlock) after every retry, another runner's lock, or "
    "statement_timeout",
    EXIT_PRECONDITION: "the database cannot take this step or serve this release: contract before expand, a "
    "downgrade past a contract, a schema drifted from the baseline, a revision older than the "
    "baseline, SQL other than --expect-digest's; `check` exits with this when the release "
    "cannot run",
    EXIT_LINT: "lint found a forbidden operation in an expand revision, or a TODO `revision` left",
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
ENV_DB_PARTS: Final = {
    "host": ENV_DB_HOST,
    "port": ENV_DB_PORT,
    "database": ENV_DB_NAME,
    "user": ENV_DB_USER,
    "password": ENV_DB_PASSWORD,
}
ENV_RELEASE: Final = "DIVBASE_RELEASE"  # the release, as in --release (the operator sets both)
ENV_TERMINATION_LOG: Final = "DIVBASE_TERMINATION_LOG"  # where to write the summary, if set (else the path below)
ENV_MIGRATE_CONFIG: Final = "DIVBASE_MIGRATE_CONFIG"  # divbase-migrate: the project's alembic.ini, as --config

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
    SUMMARY_COMMAND,
    SUMMARY_RELEASE,
    SUMMARY_OUTCOME,
    SUMMARY_EXIT_CODE,
    SUMMARY_DURATION,
    SUMMARY_ERROR,
    SUMMARY_FROM,
    SUMMARY_TO,
    SUMMARY_FOUND,
    SUMMARY_APPLIED,
    SUMMARY_RETRIES,
    SUMMARY_STEP,
    SUMMARY_REVISIONS,
    SUMMARY_DIGEST,
    SUMMARY_SQL_Z,
    SUMMARY_SQL_TRUNCATED,
    SUMMARY_FINDINGS,
)
OUTCOMES: Final = ("ok", "applied", "noop", "failed", "incompatible")
PLAN_INLINE_BYTES: Final = 3000  # compressed plan SQL carried in the summary (leaves room for the rest of it)


# What the operator reads of a termination message, whatever wrote it: a pod's status is written by its image,
# which the resource names, so the operator treats it as untrusted input (bounded, typed, printable).
MAX_SUMMARY_CHARS: Final = 4 * MAX_TERMINATION_BYTES  # the tail of a termination message read at all
MAX_PLAN_SQL_BYTES: Final = 256 * 1024  # decompressed plan SQL accepted (bounded before it is decompressed)
MAX_REVISION_CHARS: Final = 128  # a revision id in `from`/`to`/`applied`/`revisions`
MAX_LIST_ITEMS: Final = 500  # revisions or findings in one summary
_STRING_KEYS: Final = (
    SUMMARY_COMMAND,
    SUMMARY_RELEASE,
    SUMMARY_OUTCOME,
    SUMMARY_ERROR,
    SUMMARY_STEP,
    SUMMARY_DIGEST,
    SUMMARY_SQL_Z,
)
_INT_KEYS: Final = (SUMMARY_EXIT_CODE, SUMMARY_RETRIES)
_LIST_KEYS: Final = (SUMMARY_APPLIED, SUMMARY_REVISIONS, SUMMARY_FINDINGS)
_REVISION_MAP_KEYS: Final = (SUMMARY_FROM, SUMMARY_TO)
MESSAGE_PROBLEM: Final = ""  # the key of a problem with the message as a whole (not one JSON object)


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
            type(value), type(value).__name__
        )
    )


def _revision(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_REVISION_CHARS and value.isprintable()


def _check_key(key: str, value: Any) -> str | None:
    """Why `value` is not what the contract says `key` holds (never quoting it), or None."""
    if key in _STRING_KEYS:
        return _check_string(key, value)
    if key in _INT_KEYS:
        return None if _is_int(value) else f"`{key}` is {_type_name(value)}, not an integer"
    if key == SUMMARY_DURATION:
        return None if _is_finite_number(value) else f"`{key}` is {_type_name(value)}, not a finite number"
    if key == SUMMARY_SQL_TRUNCATED:
        return None if isinstance(value, bool) else f"`{key}` is {_type_name(value)}, not a boolean"
    if key in _LIST_KEYS:
        return _check_list(key, value)
    if key in _REVISION_MAP_KEYS:
        return None if _is_revision_map(value) else f"`{key}` is not an object of branch -> revision id or null"
    return None


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON's true is no exit code)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_revision_map(value: Any) -> bool:
    """A small object of branch -> revision id or null (`from`, `to`)."""
    return (
        isinstance(value, dict)
        and len(value) <= 8
        and all(_revision(k) and (v is None or _revision(v)) for k, v in value.items())
    )


def _check_string(key: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"`{key}` is {_type_name(value)}, not a string"
    if key == SUMMARY_DIGEST and not DIGEST_PATTERN.fullmatch(value):
        return f"`{key}` is not sha256:<64 lowercase hex digits>"
    return None


def _check_list(key: str, value: Any) -> str | None:
    """A bounded array: of strings (findings) or of revision ids (the rest)."""
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        return f"`{key}` is not an array of at most {MAX_LIST_ITEMS} strings"
    if key == SUMMARY_FINDINGS:
        ok = all(isinstance(item, str) for item in value)
    else:
        ok = all(_revision(item) for item in value)
    return (
        None
        if ok
        else f"`{key}` holds an item that is not a revision id (a printable string of at most "
        f"{MAX_REVISION_CHARS} characters)"
    )


def read_summary(message: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """(summary, problems) of a termination message, without ever raising.

    The summary is its last line, a JSON object, reduced to the contract's keys, each of the type the contract
    says; a key of another type is left out and named in `problems` (key -> why, never quoting the value; the key
    `MESSAGE_PROBLEM` for the message as a whole). Only the last `MAX_SUMMARY_CHARS` characters are read, so a
    huge or deeply nested message costs a bounded parse. No message at all is ({}, {})."""
    if not isinstance(message, str) or not message.strip():
        return {}, {}
    lines = message[-MAX_SUMMARY_CHARS:].strip().splitlines()
    last = lines[-1].strip() if lines else ""
    try:
        parsed = json.loads(last, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return {}, {MESSAGE_PROBLEM: "its last line is not JSON"}
    if not isinstance(parsed, dict):
        return {}, {MESSAGE_PROBLEM: f"its last line is a JSON {_type_name(parsed)}, not an object"}
    summary: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key in SUMMARY_KEYS:
        if key not in parsed:
            continue
        problem = _check_key(key, parsed[key])
        if problem is None:
            summary[key] = parsed[key]
        else:
            problems[key] = problem
    return summary, problems


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_summary(message: str | None) -> dict[str, Any]:
    """The summary in a termination message (see `read_summary`): only the contract's keys, each of its type; {}
    when there is none."""
    return read_summary(message)[0]


def describe_problems(problems: dict[str, str]) -> str:
    return "; ".join(problems[key] for key in sorted(problems))


def printable(text: str | None, limit: int | None = None) -> str:
    """`text` as one printable line, for status, Events and logs: runs of spaces, line breaks and tabs become one
    space; every other control, format (bidi overrides, zero-width), surrogate, private-use or unassigned character
    is dropped; cut to `limit` characters with "..." when longer."""
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if limit is not None:
        text = text[: limit * 4]  # what is cut off is never scanned
    out: list[str] = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char.isspace():  # line breaks, tabs, non-ASCII spaces
            out.append(" ")
    cleaned = " ".join(part for part in "".join(out).split(" ") if part)
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: max(0, limit - 3)] + "..."
    return cleaned


# --- Lock waits: one structured log line ---------------------------------------------------------------------------
# While a runner waits for another runner's migration lock it writes one JSON object on a line of its log (stdout or
# stderr) with `"event": "lock_wait"`, and again when the holder changes; once it has the lock, a line with
# `"event": "lock_acquired"`. The operator reads only the tail of a running migration pod's log, keeps only the
# last of these lines, and takes from it only the fields below, typed and bounded (`read_lock_wait`): nothing else
# of the log reaches status or an Event.
LOG_EVENT: Final = "event"  # the key naming what a structured log line reports
EVENT_LOCK_WAIT: Final = "lock_wait"  # waiting for another runner's migration lock
EVENT_LOCK_ACQUIRED: Final = "lock_acquired"  # got it: the wait (if any) is over
LOCK_HOLDER: Final = "holder"  # {"pid": int, "application_name": str or null, "since": time or null}, or null
HOLDER_PID: Final = "pid"  # the holder's backend process id
HOLDER_APPLICATION: Final = "application_name"  # its application_name (null when the runner may not read it)
HOLDER_SINCE: Final = "since"  # when the holder's session connected (a runner takes the lock right after)
LOCK_WAIT_SINCE: Final = "waiting_since"  # when this runner started waiting
LOG_TIME_PATTERN: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # UTC, whole seconds
MAX_LOG_TAIL_CHARS: Final = 16 * 1024  # of a log tail, only the end is read
MAX_LOG_LINE_CHARS: Final = 4096  # a longer line is not one of ours
MAX_APPLICATION_CHARS: Final = 63  # PostgreSQL keeps at most NAMEDATALEN - 1 bytes of application_name


@dataclass(frozen=True)
class LockWait:
    """A runner waiting for the migration lock: who holds it (pid, application_name, connected since) and since
    when this runner waits. Every field is checked: an int pid, times as LOG_TIME_PATTERN, a printable name."""

    holder_pid: int | None
    holder_application: str | None = None
    holder_since: str | None = None
    since: str | None = None


def lock_wait_fields(holder: dict[str, Any] | None, waiting_since: str) -> dict[str, Any]:
    """The keys of a `lock_wait` log line (the runner adds its own message and timestamp). `holder` may carry more
    keys for people reading the log (divbase-migrate adds the client address): the operator ignores them."""
    return {LOG_EVENT: EVENT_LOCK_WAIT, LOCK_HOLDER: holder, LOCK_WAIT_SINCE: waiting_since}


def _log_time(value: Any) -> str | None:
    return value if isinstance(value, str) and LOG_TIME_PATTERN.fullmatch(value) else None


def read_lock_wait(log_tail: str | None) -> LockWait | None:
    """The lock wait a runner's log tail reports, or None (no wait, or the lock acquired since), without ever
    raising: the last `lock_wait` or `lock_acquired` line of the tail's last MAX_LOG_TAIL_CHARS decides; of a wait
    only the contract's fields are kept, each of its type (anything else is left out, never quoted)."""
    if not isinstance(log_tail, str):
        return None
    for line in reversed(log_tail[-MAX_LOG_TAIL_CHARS:].splitlines()):
        line = line.strip()
        if not line.startswith("{") or len(line) > MAX_LOG_LINE_CHARS or f'"{LOG_EVENT}"' not in line:
            continue
        try:
            entry = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            continue
        if not isinstance(entry, dict) or entry.get(LOG_EVENT) not in (EVENT_LOCK_WAIT, EVENT_LOCK_ACQUIRED):
            continue
        if entry[LOG_EVENT] == EVENT_LOCK_ACQUIRED:
            return None
        return _lock_wait(entry)
    return None


def _lock_wait(entry: dict[str, Any]) -> LockWait:
    """The contract's fields of a `lock_wait` line, each of its type or None (written by an untrusted image)."""
    holder = entry.get(LOCK_HOLDER) if isinstance(entry.get(LOCK_HOLDER), dict) else {}
    pid = holder.get(HOLDER_PID)
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 else None
    application = holder.get(HOLDER_APPLICATION)
    application = printable(application, MAX_APPLICATION_CHARS) or None if isinstance(application, str) else None
    return LockWait(pid, application, _log_time(holder.get(HOLDER_SINCE)), _log_time(entry.get(LOCK_WAIT_SINCE)))


def plan_digest(sql: str) -> str:
    """`sha256:<hex>` of a plan's SQL: what the plan summary carries, an approval names and `--expect-digest`
    checks."""
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


def read_plan(summary: dict[str, Any]) -> tuple[str | None, str | None]:
    """(SQL, problem) of a plan summary, without ever raising: the SQL when it is carried (`sql_z`), decompresses
    within `MAX_PLAN_SQL_BYTES` (bounded before any of it is used), is UTF-8 and matches the summary's `digest`;
    (None, None) when it is not carried (too large, or not a plan); (None, why) when it is carried but unusable."""
    packed = summary.get(SUMMARY_SQL_Z)
    if not isinstance(packed, str):
        return None, None
    if len(packed) > MAX_SUMMARY_CHARS:
        return None, f"`{SUMMARY_SQL_Z}` is longer than {MAX_SUMMARY_CHARS} characters"
    try:
        compressed = base64.b64decode(packed, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(compressed, MAX_PLAN_SQL_BYTES + 1)
    except (ValueError, zlib.error):
        return None, f"`{SUMMARY_SQL_Z}` is not base64 of zlib data"
    if len(raw) > MAX_PLAN_SQL_BYTES or inflater.unconsumed_tail:
        return None, f"`{SUMMARY_SQL_Z}` inflates to more than {MAX_PLAN_SQL_BYTES} bytes"
    if not inflater.eof:
        return None, f"`{SUMMARY_SQL_Z}` is truncated zlib data"
    try:
        sql = raw.decode()
    except UnicodeDecodeError:
        return None, f"`{SUMMARY_SQL_Z}` is not UTF-8 text"
    digest = summary.get(SUMMARY_DIGEST)
    if not isinstance(digest, str) or plan_digest(sql) != digest:
        return None, f"the SQL in `{SUMMARY_SQL_Z}` does not match `{SUMMARY_DIGEST}`"
    return sql, None


def plan_sql(summary: dict[str, Any]) -> str | None:
    """The SQL a plan summary carries, or None (too large, not a plan, or unusable: see `read_plan`)."""
    return read_plan(summary)[0]
