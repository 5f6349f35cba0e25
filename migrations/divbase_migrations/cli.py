"""`divbase-migrate`: the command a migration Job runs (and an operator runs by hand)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError

from . import logs
from .compat import read_applied
from .contract import (
    ARG_EXPECT_DIGEST,
    DIGEST_PATTERN,
    ENV_DATABASE_URL,
    ENV_DB_PARTS,
    ENV_MIGRATE_CONFIG,
    ENV_RELEASE,
    ENV_TERMINATION_LOG,
    EXIT_FAILED,
    EXIT_LINT,
    EXIT_MEANINGS,
    EXIT_OK,
    EXIT_PRECONDITION,
    EXIT_TIMEOUT,  # noqa: F401  (re-exported: callers and tests name the codes through the CLI)
    EXIT_UNAVAILABLE,  # noqa: F401
    EXIT_USAGE,
    MAX_ERROR_CHARS,
    MAX_TERMINATION_BYTES,
    SUMMARY_COMMAND,
    SUMMARY_DURATION,
    SUMMARY_ERROR,
    SUMMARY_EXIT_CODE,
    SUMMARY_OUTCOME,
    SUMMARY_RELEASE,
    TERMINATION_LOG_PATH,
    plan_payload,
)
from .database import ENV_PARTS, ENV_URL, ConfigError, Redactor, database_url_from_env
from .generate import GenerateError, generate
from .lint import lint
from .plan import plan_sql
from .releases import (
    BRANCHES,
    CONTRACT,
    EXPAND,
    Applied,
    Manifest,
    ManifestError,
    RevisionError,
    UnknownRelease,
    compatibility,
    servable,
)
from .releases import pending as pending_revisions
from .revisions import ENV_CONFIG, load
from .runner import Runner, Settings, StepError, classify, lock_holder, make_engine
from .splitter import TODO_MARKER, Placement, Rename, SplitError

log = logging.getLogger("divbase_migrations.cli")

EXIT_CODES = (
    "exit codes (docs/runner-contract.md):\n"
    + "".join(f"  {code}  {meaning}\n" for code, meaning in EXIT_MEANINGS.items())
    + f"""
environment:
  {ENV_DATABASE_URL}  postgresql://user:password@host:port/db (or the parts below)
  {", ".join(ENV_DB_PARTS.values())}
  {ENV_RELEASE}  default for --release
  {ENV_TERMINATION_LOG}  default for --termination-log (else {TERMINATION_LOG_PATH} when writable)
  {ENV_MIGRATE_CONFIG}  default for --config: another Alembic project's alembic.ini
"""
)
TERMINATION_HELP = "write a one-line JSON summary here (Kubernetes shows it in the pod status)"
CONFIG_HELP = (
    f"alembic.ini of the project to migrate (default: ${ENV_MIGRATE_CONFIG}, else DivBase's packaged "
    f"revisions); its env.py, expand/contract branches and releases.toml are used"
)
MANIFEST_HELP = "release manifest (default: releases.toml beside --config, else the packaged one)"
TERMINATION_DEFAULT = Path(TERMINATION_LOG_PATH)
_COMMANDS = ("expand", "contract", "status", "check", "plan", "lint", "releases", "revision")
_WORDS = (*_COMMANDS, *BRANCHES)  # what a refused command line may repeat: the rest are values


def duration_ms(text: str) -> int:
    """'5s', '500ms', '2m' or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 5s, 500ms or 2m")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return int(value * {"ms": 1, "s": 1000, "m": 60_000}[unit])


class UsageError(SystemExit):
    """The argument parser refused the command line (exit 2, as argparse exits); `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, except that a refused command line raises UsageError instead of exiting: the runner still writes
    its summary, so the operator can say which option the image's runner does not know (issue 13's case)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def _usage_summary(message: str, argv: Sequence[str]) -> str:
    """argparse's complaint with the values of the command line masked (only option names and command words are
    kept): `migrationJob.args` may carry what belongs in a Secret, and the summary reaches the resource's status."""
    keep = set(_WORDS)
    values = {a.split("=", 1)[1] if a.startswith("-") else a for a in argv if not a.startswith("-") or "=" in a}
    for value in sorted(values - keep, key=len, reverse=True):
        if value:
            message = re.sub(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", "***", message)
    return f"the command line was refused: {message}"


def digest_arg(text: str) -> str:
    if not DIGEST_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError("expected sha256:<64 lowercase hex digits>, a plan's digest")
    return text


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="divbase-migrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Expand/contract schema migrations of DivBase, one release at a time. --config, --manifest and "
        "--termination-log may come before or after the command.",
        epilog=EXIT_CODES,
    )
    p.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    p.add_argument("--manifest", type=Path, default=None, help=MANIFEST_HELP)
    p.add_argument("--termination-log", type=Path, default=None, help=TERMINATION_HELP)
    # the same options after the subcommand (as Jobs pass --termination-log, as a developer types `revision
    # --config ...`); given in both places, the one after the subcommand wins
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    common.add_argument("--manifest", type=Path, default=argparse.SUPPRESS, help=MANIFEST_HELP)
    common.add_argument("--termination-log", type=Path, default=argparse.SUPPRESS, help=TERMINATION_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    codes: dict[str, Any] = {"epilog": EXIT_CODES, "formatter_class": argparse.RawDescriptionHelpFormatter}

    def release_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--release",
            "--version",
            dest="release",
            default=os.environ.get(ENV_RELEASE),
            help="DivBase release (default: $DIVBASE_RELEASE)",
        )

    for step, text in (
        (EXPAND, "apply the release's expand revisions (additive; old code keeps working)"),
        (CONTRACT, "apply the release's contract revisions (removals; after the rollout)"),
    ):
        sp = sub.add_parser(step, help=text, description=text, parents=[common], **codes)
        release_arg(sp)
        sp.add_argument("--lock-timeout", type=duration_ms, default=5_000, help="per statement (default 5s)")
        sp.add_argument("--statement-timeout", type=duration_ms, default=0, help="per statement (default: none)")
        sp.add_argument(
            "--lock-retries", type=int, default=8, help="retries of a revision after a lock timeout or a deadlock"
        )
        sp.add_argument(
            "--wait-timeout",
            type=duration_ms,
            default=600_000,
            help="how long to wait for another runner (default 10m)",
        )
        if step == CONTRACT:
            sp.add_argument(
                ARG_EXPECT_DIGEST,
                dest="expect_digest",
                type=digest_arg,
                default=None,
                metavar="sha256:HEX",
                help="apply only if the SQL about to run is this approved plan (the digest `plan "
                "contract --sql` reports); otherwise exit 5 and apply nothing",
            )
    sp = sub.add_parser(
        "status",
        parents=[common],
        **codes,
        help="JSON: applied revisions, pending revisions, releases the database serves",
    )
    release_arg(sp)
    sp = sub.add_parser(
        "check", parents=[common], **codes, help="exit 0 if code of the release can run against the database (else 5)"
    )
    release_arg(sp)
    sp = sub.add_parser("plan", parents=[common], **codes, help="print the SQL a step would run, without running it")
    sp.add_argument("step", choices=BRANCHES)
    release_arg(sp)
    sp.add_argument("--sql", action="store_true", help="print SQL (the only format so far)")
    sp.add_argument("--from-release", help="plan from where this release left the schema, not from the database")
    sp = sub.add_parser(
        "lint", parents=[common], **codes, help="refuse expand revisions that drop, rename, retype or block writes"
    )
    sp.add_argument("paths", nargs="*", type=Path, help="revision files or directories (default: ours)")
    sub.add_parser(
        "releases", parents=[common], **codes, help="JSON: the releases this image knows and their revisions"
    )
    text = (
        "generate an expand revision and a contract revision from the models' differences with the schema at "
        "the head of both branches, and point the release at them in the manifest"
    )
    sp = sub.add_parser(
        "revision",
        parents=[common],
        help=text,
        **codes,
        description=text + ". A scratch database is created on the server of $DIVBASE_DATABASE_URL (or the "
        "DIVBASE_DB_* parts; the user needs CREATEDB), upgraded to both heads, compared by Alembic's autogenerate "
        "through the project's env.py, and dropped. What cannot be placed safely is written as a `# DIVBASE-TODO` "
        "line that `divbase-migrate lint` refuses. See docs/migrations.md.",
    )
    sp.add_argument(
        "-m",
        "--message",
        required=True,
        help="what the change does; its slug names the files (YYYY-MM-DD_<slug>_expand.py, "
        "..._contract.py) and the revision ids (e<NNNN>_<slug>, c<NNNN>_<slug>)",
    )
    release_arg(sp)
    sp.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="TABLE.OLD:NEW",
        type=_rename_arg,
        help="a column renamed in the models (repeatable): generated as a new column kept in sync by a "
        "trigger and backfilled in batches (expand), the old column dropped in the contract; "
        "without it a dropped-and-added pair is left as a TODO",
    )
    sp.add_argument(
        "--models",
        metavar="MODULE:ATTRIBUTE",
        default=None,
        help="the target models: a MetaData, a declarative base or a function returning one (default: "
        "the target_metadata of the project's env.py)",
    )
    return p


def _rename_arg(text: str) -> Rename:
    try:
        return Rename.parse(text)
    except SplitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Summary:
    """The one-line JSON written to the termination-message file, whatever happens."""

    def __init__(self, command: str, release: str | None, redact: Redactor) -> None:
        self.data: dict[str, Any] = {SUMMARY_COMMAND: command, SUMMARY_RELEASE: release, SUMMARY_OUTCOME: "failed"}
        self.redact = redact
        self.started = time.monotonic()

    def write(self, path: Path | None, exit_code: int) -> None:
        self.data[SUMMARY_EXIT_CODE] = exit_code
        self.data[SUMMARY_DURATION] = round(time.monotonic() - self.started, 3)
        if path is None:
            return
        error = self.data.get(SUMMARY_ERROR)
        if isinstance(error, str) and len(error) > MAX_ERROR_CHARS:
            self.data[SUMMARY_ERROR] = error[:MAX_ERROR_CHARS] + "..."
        line = json.dumps(self.redact.scrub(self.data), separators=(",", ":"))
        try:
            path.write_text(line.encode()[:MAX_TERMINATION_BYTES].decode(errors="ignore") + "\n")
        except OSError as exc:
            log.warning("cannot write the termination message", extra={"path": str(path), "error": str(exc)})


def termination_path(flag: Path | None) -> Path | None:
    if flag is not None:
        return flag
    if os.environ.get(ENV_TERMINATION_LOG):
        return Path(os.environ[ENV_TERMINATION_LOG])
    if TERMINATION_DEFAULT.exists() and os.access(TERMINATION_DEFAULT, os.W_OK):
        return TERMINATION_DEFAULT
    return None


def _termination_flag(argv: Sequence[str]) -> Path | None:
    """--termination-log from a command line the parser refused."""
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--termination-log="):
            return Path(arg.split("=", 1)[1])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and always write the summary (the exit code and the error are what the operator reads)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        summary = Summary(next((a for a in argv if a in _COMMANDS), "?"), None, Redactor.for_url(None))
        summary.data[SUMMARY_ERROR] = _usage_summary(exc.message, argv)
        summary.write(termination_path(_termination_flag(argv)), EXIT_USAGE)
        return EXIT_USAGE
    if args.config is not None:  # read by revisions.alembic_config(), also inside env.py's process
        os.environ[ENV_CONFIG] = str(args.config.resolve())
    try:
        url = database_url_from_env(required=False)
    except ConfigError as exc:
        url, config_error = None, exc
    else:
        config_error = None
    redact = Redactor.for_url(url)
    logs.configure(redact)
    summary = Summary(args.command, getattr(args, "release", None), redact)
    code = _run_caught(args, url, config_error, summary)
    if code != EXIT_OK and summary.data.get("error"):
        log.error(summary.data["error"], extra={"exit_code": code})
        if args.command in ("check",):
            print(redact(f"{summary.data['error']}"))
    summary.write(termination_path(args.termination_log), code)
    return code


def _run_caught(args: argparse.Namespace, url: Any, config_error: ConfigError | None, summary: Summary) -> int:
    """`run`, each error turned into its exit code and the summary's `error` (bad database settings only fail the
    commands that connect)."""
    try:
        if config_error is not None and args.command not in ("lint", "releases", "plan"):
            raise config_error
        return run(args, url, summary)
    except (ConfigError, ManifestError, UnknownRelease, GenerateError, SplitError) as exc:
        code, summary.data["error"] = EXIT_USAGE, str(exc)
    except RevisionError as exc:  # alembic_version holds an unknown revision (2) or one older than the baseline (5)
        code, summary.data["error"] = exc.exit_code, str(exc)
    except StepError as exc:
        code, summary.data["error"] = exc.exit_code, str(exc)
    except DBAPIError as exc:
        error = classify(exc)
        code, summary.data["error"] = error.exit_code, str(error)
    except Exception as exc:  # the summary must still be written; the traceback goes to the (masked) log
        log.exception("unexpected error")
        code, summary.data["error"] = EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    return code


def _require_release(args: argparse.Namespace) -> str:
    if not args.release:
        raise ConfigError("--release (or DIVBASE_RELEASE) is required")
    return str(args.release)


def _read_applied(url: Any, manifest: Manifest) -> Applied:
    with make_engine(url, Settings()).connect() as conn:  # the runner's connection settings, read only
        return read_applied(conn, manifest)


def _lock_holder(url: Any) -> dict[str, Any] | None:
    with make_engine(url, Settings()).connect() as conn:
        return lock_holder(conn)


_RENAME_HINT = re.compile(r"--rename ([\w$]+\.[\w$]+:[\w$]+)")


def _rename_columns(hint: str) -> set[str]:
    """`t.old:new` -> {"t.old", "t.new"}."""
    old, new = hint.split(":")
    return {old, f"{old.split('.')[0]}.{new}"}


def _rerun_with_renames(args: argparse.Namespace, release: str, renames: Sequence[str]) -> str:
    """The command line that generates the pair again with `renames` declared (besides those given)."""
    words = ["divbase-migrate"]
    if args.config is not None:
        words += ["--config", str(args.config)]
    if args.manifest is not None:
        words += ["--manifest", str(args.manifest)]
    words += ["revision", "-m", args.message, "--release", release]
    if args.models:
        words += ["--models", args.models]
    for rename in [*(f"{r.table}.{r.old}:{r.new}" for r in args.rename), *renames]:
        words += ["--rename", rename]
    return shlex.join(words)


def _print_todos(placements: Sequence[Placement]) -> list[str]:
    """Print each TODO; return the --rename that each undeclared possible rename would take (one per column)."""
    renames: list[str] = []
    for placement in placements:
        if placement.branch != "todo":
            continue
        hints = _RENAME_HINT.findall(placement.note)
        if hints:
            options = " or ".join(f"--rename {h}" for h in hints)
            print(
                f"TODO      {placement.kind} {placement.target}: if it is a rename, pass {options}; "
                f"if not, delete its {TODO_MARKER} line"
            )
            taken = set().union(*(_rename_columns(r) for r in renames))
            free = [h for h in hints if not _rename_columns(h) & taken]
            if free:  # a column takes part in one rename: the first candidate no other hint took
                renames.append(free[0])
        else:
            print(f"TODO      {placement.kind} {placement.target}: see the {TODO_MARKER} line")
    return renames


def _revision(args: argparse.Namespace, url: Any, summary: Summary) -> int:
    release = _require_release(args)
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its per-revision info lines (the scratch upgrade) are noise here
    try:
        made = generate(url, args.message, release, args.rename, args.models, args.manifest)
    finally:
        alembic_log.setLevel(level)

    def shown(path: Path) -> Path:  # relative to the working directory when under it
        return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path

    for branch, path, revision in (
        (EXPAND, made.expand_path, made.expand_id),
        (CONTRACT, made.contract_path, made.contract_id),
    ):
        print(f"{branch:8}  {revision}  {shown(path)}")
        for placement in made.split.placements:
            if placement.branch == branch:
                note = f" ({placement.note})" if placement.note else ""
                print(f"          {placement.kind} {placement.target}{note}")
    renames = _print_todos(made.split.placements)
    print(
        f"manifest  release {release}: expand = {made.expand_id}, contract = {made.contract_id}  "
        f"({shown(made.manifest)})"
    )
    if renames:
        print(
            f"rename?   undo this run (delete {shown(made.expand_path)} and {shown(made.contract_path)}, restore "
            f"{shown(made.manifest)} as it was), then run:\n"
            f"          {_rerun_with_renames(args, release, renames)}"
        )
    summary.data.update(outcome="ok", expand=made.expand_id, contract=made.contract_id, todos=len(made.split.todos))
    if made.split.todos:
        print(
            f"{len(made.split.todos)} change(s) left as {TODO_MARKER}: `divbase-migrate lint` refuses the files "
            f"until they are written by hand"
        )
    return EXIT_OK


def run(args: argparse.Namespace, url: Any, summary: Summary) -> int:
    """Run one command. Lint needs neither manifest nor database; releases and plan need no database (plan reads
    one when it is configured); the others refuse to start without one."""
    if args.command == "lint":
        return _lint(args, summary)
    manifest = load(args.manifest)
    if args.command == "releases":
        return _releases(manifest, summary)
    if args.command == "plan":
        return _plan(args, url, manifest, summary)
    if url is None:
        raise ConfigError(f"no database configured: set {ENV_URL} or {', '.join(ENV_PARTS.values())}")
    # which variables were read, never their values (any of them may be a Secret's key: see database.py)
    log.info(
        "database",
        extra={
            "settings": [ENV_URL]
            if os.environ.get(ENV_URL)
            else sorted(name for name in ENV_PARTS.values() if os.environ.get(name))
        },
    )
    if args.command == "revision":
        return _revision(args, url, summary)
    if args.command == "status":
        return _status(args, url, manifest, summary)
    if args.command == "check":
        return _check(args, url, manifest, summary)
    return _migrate(args, url, manifest, summary)


def _lint(args: argparse.Namespace, summary: Summary) -> int:
    findings = lint(args.paths or None)
    for finding in findings:
        print(finding)
    summary.data.update(outcome="failed" if findings else "ok", findings=[str(f) for f in findings])
    if findings:
        summary.data["error"] = (
            f"{len(findings)} finding(s) (forbidden operations in expand revisions, TODOs "
            f"left by `revision`): {findings[0]}"
        )
        return EXIT_LINT
    print("lint: expand revisions only add or backfill")
    return EXIT_OK


def _releases(manifest: Manifest, summary: Summary) -> int:
    print(
        json.dumps(
            {
                "releases": [vars(r) for r in manifest.releases],
                "chains": {EXPAND: manifest.chains.expand, CONTRACT: manifest.chains.contract},
            },
            indent=2,
        )
    )
    summary.data["outcome"] = "ok"
    return EXIT_OK


def _plan(args: argparse.Namespace, url: Any, manifest: Manifest, summary: Summary) -> int:
    """The SQL of a step, from --from-release (offline), else from the database when one is configured, else from
    an empty database."""
    release = manifest.release(_require_release(args))
    if args.from_release:
        start = manifest.release(args.from_release)
        applied = Applied(start.expand if args.step == EXPAND else release.expand, start.contract)
    elif url is not None:
        applied = _read_applied(url, manifest)
    else:
        applied = Applied(None, None)
    todo, sql = plan_sql(manifest, args.step, release, applied)
    print(
        f"-- divbase-migrate plan {args.step} --release {release.version}: "
        f"{len(todo)} revision(s) from {applied.as_dict()}"
    )
    print(sql, end="")
    summary.data.update(outcome="ok", step=args.step, revisions=list(todo), **plan_payload(sql))
    return EXIT_OK


def _status(args: argparse.Namespace, url: Any, manifest: Manifest, summary: Summary) -> int:
    applied = _read_applied(url, manifest)
    status: dict[str, Any] = {
        "applied": applied.as_dict(),
        "servable_releases": servable(manifest, applied),
        "latest_release": manifest.latest().version,
        "lock_holder": _lock_holder(url),
    }  # a runner migrating now (or waited for)
    target = manifest.release(args.release) if args.release else manifest.latest()
    status["pending"] = {
        "release": target.version,
        EXPAND: list(pending_revisions(manifest.chains, EXPAND, applied.expand, target.expand)),
        CONTRACT: list(pending_revisions(manifest.chains, CONTRACT, applied.contract, target.contract)),
    }
    print(json.dumps(status, indent=2))
    summary.data.update(outcome="ok", to=applied.as_dict())
    return EXIT_OK


def _check(args: argparse.Namespace, url: Any, manifest: Manifest, summary: Summary) -> int:
    release = manifest.release(_require_release(args))
    applied = _read_applied(url, manifest)
    verdict = compatibility(manifest, release, applied)
    summary.data.update(to=applied.as_dict())
    if not verdict.ok:
        summary.data.update(outcome="incompatible", error=verdict.reason)
        return EXIT_PRECONDITION
    summary.data["outcome"] = "ok"
    print(verdict.reason)
    return EXIT_OK


def _migrate(args: argparse.Namespace, url: Any, manifest: Manifest, summary: Summary) -> int:
    """expand or contract: the Runner takes the lock, applies the step's revisions and says what it did."""
    step = args.command
    release_version = _require_release(args)
    manifest.release(release_version)  # unknown release: exit 2 before connecting
    if len(manifest.chains.expand) == len(manifest.chains.contract) == 1:  # a trunk-only project, before its pair
        log.info(
            "no expand/contract revisions yet: this step applies at most the trunk up to its head; "
            "`divbase-migrate revision -m MESSAGE --release V` writes the first pair",
            extra={"baseline": manifest.chains.baseline},
        )
    settings = Settings(
        lock_timeout_ms=args.lock_timeout,
        statement_timeout_ms=args.statement_timeout,
        lock_retries=args.lock_retries,
        wait_timeout_ms=args.wait_timeout,
    )
    outcome = Runner(url, manifest, settings).run(step, release_version, getattr(args, "expect_digest", None))
    found = servable(manifest, outcome.before)  # oldest first: the last is the newest release it served
    summary.data.update(
        outcome="applied" if outcome.changed else "noop",
        **{"from": outcome.before.as_dict()},
        to=outcome.after.as_dict(),
        found=found[-1] if found else None,
        applied=outcome.applied,
        retries=outcome.retries,
    )
    log.info(
        "done",
        extra={
            "step": step,
            "release": release_version,
            "outcome": summary.data["outcome"],
            "applied": outcome.applied,
            "to": outcome.after.as_dict(),
        },
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
